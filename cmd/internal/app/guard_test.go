package app

// The guard under hostile answers, end to end: edgecache with a real
// llmsim upstream, real clients (net/http as curl would, openai-go, the
// Node SDK with its default retries).

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"

	"github.com/edgecache/edgecache/cmd/internal/llmsim"
)

// plainAnswer is what a curl-like client got.
type plainAnswer struct {
	status int
	header http.Header
	body   string
	took   time.Duration
}

// postChat sends a chat request as curl would, with key as the bearer.
func postChat(t *testing.T, data, key, prompt string, stream bool) plainAnswer {
	t.Helper()
	a, err := tryPostChat(data, key, prompt, stream)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// tryPostChat is postChat for other goroutines than the test's.
func tryPostChat(data, key, prompt string, stream bool) (plainAnswer, error) {
	body := fmt.Sprintf(`{"model":"sim-1","stream":%v,"messages":[{"role":"user","content":%q}]}`, stream, prompt)
	req, err := http.NewRequest(http.MethodPost, data+"/v1/chat/completions", strings.NewReader(body))
	if err != nil {
		return plainAnswer{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+key)
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return plainAnswer{}, fmt.Errorf("%s: %w", prompt, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return plainAnswer{}, fmt.Errorf("%s: reading: %w", prompt, err)
	}
	return plainAnswer{resp.StatusCode, resp.Header, string(b), time.Since(start)}, nil
}

// maxDegradedWait is the bound of DEGRADATION.md rule 6 for a degraded
// answer when the upstream asks for a long Retry-After.
const maxDegradedWait = 1500 * time.Millisecond

// TestNoNeedlessWaiting: the upstream answers every request 503 with
// Retry-After: 7. The busy answer — or the stale one, where it exists —
// reaches curl, openai-go and the Node SDK (both with their default
// retries) within 1.5 s, and says honestly to come back in 7 s.
func TestNoNeedlessWaiting(t *testing.T) {
	sim, err := llmsim.Start(context.Background(), "127.0.0.1:0", llmsim.Config{AnswerTokens: sdkAnswerWords})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	cfg := filepath.Join(t.TempDir(), "edgecache.yaml")
	if err := os.WriteFile(cfg, []byte(`routes:
  - name: chat
    path: /v1/chat/completions
    cache: { ttl: 1s, stale_if_error: 1h, no_templates: true }
`), 0o600); err != nil {
		t.Fatal(err)
	}
	data, _ := startEdgecache(t, sim.URL(), "--config", cfg)
	const stalePrompt = "What did the upstream say before the outage?"
	if a := postChat(t, data, sdkAPIKey, stalePrompt, false); a.status != 200 {
		t.Fatalf("filling: %d %s", a.status, a.body)
	}
	time.Sleep(1100 * time.Millisecond) // the entry's 1 s TTL passes: only stale from now on
	sim.Server.SetFault(llmsim.Fault{Status: 503, Probability: 1, RetryAfter: 7})

	for _, stream := range []bool{false, true} {
		a := postChat(t, data, sdkAPIKey, fmt.Sprintf("busy, streamed %v", stream), stream)
		t.Logf("curl, stream %v: %d %s after %v", stream, a.status, a.header.Get("X-Edgecache-Degraded"), a.took.Round(time.Millisecond))
		if a.status != 503 || a.header.Get("X-Edgecache-Degraded") != "busy" || a.header.Get("Retry-After") != "7" || a.took > maxDegradedWait {
			t.Errorf("curl, stream %v: %d %q Retry-After %q after %v, want the busy answer, Retry-After 7, within %v",
				stream, a.status, a.header.Get("X-Edgecache-Degraded"), a.header.Get("Retry-After"), a.took, maxDegradedWait)
		}
		s := postChat(t, data, sdkAPIKey, stalePrompt, stream)
		t.Logf("curl, stream %v: %d %s after %v", stream, s.status, s.header.Get("X-Edgecache-Degraded"), s.took.Round(time.Millisecond))
		if s.status != 200 || s.header.Get("X-Edgecache-Degraded") != "stale" || s.took > maxDegradedWait {
			t.Errorf("curl, stream %v: %d %q after %v, want the stale answer within %v", stream, s.status, s.header.Get("X-Edgecache-Degraded"), s.took, maxDegradedWait)
		}
	}

	// openai-go, default retries.
	client := newGoSDKClient(data + "/v1")
	start := time.Now()
	_, err = client.Chat.Completions.New(t.Context(), chatParams("busy for openai-go"))
	took := time.Since(start)
	var apiErr *openai.Error
	t.Logf("openai-go: %v after %v", err, took.Round(time.Millisecond))
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 503 || apiErr.Response.Header.Get("Retry-After") != "7" || took > maxDegradedWait {
		t.Errorf("openai-go: %v after %v, want a 503 with Retry-After 7 within %v", err, took, maxDegradedWait)
	}
	start = time.Now()
	cc, err := client.Chat.Completions.New(t.Context(), openai.ChatCompletionNewParams{ // the body curl sent
		Model: "sim-1", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(stalePrompt)}})
	took = time.Since(start)
	if err != nil || len(cc.Choices) == 0 || cc.Choices[0].Message.Content == "" || took > maxDegradedWait {
		t.Errorf("openai-go, stale: %v after %v, want the stale answer within %v", err, took, maxDegradedWait)
	}

	// The Node SDK, default retries.
	node, dir := nodeSDK(t)
	got := nodeBusy(t, node, dir, data, map[string]string{"busy": "busy for node", "stale": stalePrompt})
	for name, a := range got {
		t.Logf("node %s: status %d Retry-After %q after %.0f ms", name, a.Status, a.RetryAfter, a.MS)
		if a.MS > float64(maxDegradedWait/time.Millisecond) {
			t.Errorf("node %s: answered after %.0f ms, want within %v", name, a.MS, maxDegradedWait)
		}
		switch wantStale := strings.HasPrefix(name, "stale"); {
		case wantStale && (a.Status != 200 || a.Text == ""):
			t.Errorf("node %s: %+v, want the stale answer", name, a)
		case !wantStale && (a.Status != 503 || a.RetryAfter != "7"):
			t.Errorf("node %s: %+v, want 503 with Retry-After 7", name, a)
		}
	}
}

// nodeAnswer is what testdata/sdk-node/busy.mjs reports for one call.
type nodeAnswer struct {
	MS         float64 `json:"ms"`
	Status     int     `json:"status"`
	RetryAfter string  `json:"retry_after"`
	Text       string  `json:"text"`
}

// nodeBusy runs testdata/sdk-node/busy.mjs with prompts.
func nodeBusy(t *testing.T, node, dir, data string, prompts map[string]string) map[string]nodeAnswer {
	t.Helper()
	p, _ := json.Marshal(prompts)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "busy.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "EDGECACHE_BASE_URL="+data+"/v1", "EDGECACHE_PROMPTS="+string(p))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node busy.mjs: %v\n%s%s", err, out, stderr.String())
	}
	var got map[string]nodeAnswer
	if err := json.Unmarshal(out, &got); err != nil || len(got) != 2*len(prompts) {
		t.Fatalf("node busy.mjs printed %s (%v), want %d answers", out, err, 2*len(prompts))
	}
	return got
}

// TestOneTenantCannotTakeTheModelAway: while victims send a steady load
// with their own keys, an attacker's key draws upstream 429s (Retry-After:
// 20) and then, with a second key, 500s. Every victim request is answered
// 200 throughout; the attacker gets the upstream's own 429 with its
// Retry-After; the target's breaker stays closed.
func TestOneTenantCannotTakeTheModelAway(t *testing.T) {
	sim, err := llmsim.Start(context.Background(), "127.0.0.1:0", llmsim.Config{AnswerTokens: 8})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	data, admin := startEdgecache(t, sim.URL())

	// Victims: 4 tenants, each a steady stream of misses (~100 req/s each).
	stop := make(chan struct{})
	type tally struct{ ok, other int }
	results := make(chan tally, 4)
	firstBad := make(chan string, 1)
	for v := range 4 {
		go func() {
			var n tally
			defer func() { results <- n }()
			key := fmt.Sprintf("sk-victim-%d", v)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				case <-time.After(10 * time.Millisecond):
				}
				a, err := tryPostChat(data, key, fmt.Sprintf("victim %d question %d", v, i), i%2 == 0)
				if err == nil && a.status == 200 && a.header.Get("X-Edgecache-Degraded") == "" {
					n.ok++
					continue
				}
				n.other++
				select {
				case firstBad <- fmt.Sprintf("%s request %d: %v %d %s %s", key, i, err, a.status, a.header.Get("X-Edgecache-Degraded-Reason"), a.body):
				default:
				}
			}
		}()
	}

	// Phase 1: the attacker's key is rate-limited upstream.
	sim.Server.SetFault(llmsim.Fault{Status: 429, RetryAfter: 20, Keys: []string{"sk-ratelimited"}})
	for i := range 20 {
		a := postChat(t, data, "sk-ratelimited", fmt.Sprintf("attack %d", i), i%2 == 1)
		ra := a.header.Get("Retry-After")
		if a.status != 429 || (ra != "20" && ra != "19") {
			t.Errorf("attacker request %d: %d Retry-After %q %s, want its 429 with Retry-After", i, a.status, ra, a.body)
		}
		if i == 0 && !strings.Contains(a.body, "llmsim: injected fault") {
			t.Errorf("the attacker's first 429 is not the upstream's own: %s", a.body)
		}
	}
	// Phase 2: another key of the attacker's draws 500s, from 8 connections.
	sim.Server.SetFault(llmsim.Fault{Status: 500, Keys: []string{"sk-broken"}})
	done := make(chan map[string]int, 8)
	for c := range 8 {
		go func() {
			seen := map[string]int{}
			for i := range 15 {
				a, err := tryPostChat(data, "sk-broken", fmt.Sprintf("break %d/%d", c, i), i%2 == 0)
				seen[fmt.Sprintf("%d %s", a.status, a.header.Get("X-Edgecache-Degraded-Reason"))]++
				if err != nil {
					seen[err.Error()]++
				}
			}
			done <- seen
		}()
	}
	attackerFailed, attacker := 0, map[string]int{}
	for range 8 {
		for k, n := range <-done {
			attacker[k] += n
			if !strings.HasPrefix(k, "200 ") {
				attackerFailed += n
			}
		}
	}
	close(stop)
	var victims tally
	for range 4 {
		n := <-results
		victims.ok += n.ok
		victims.other += n.other
	}
	t.Logf("victims: %d × 200, %d other; attacker: 20 × 429, then with 500s upstream %v; upstream calls %v",
		victims.ok, victims.other, attacker, sim.Server.Stats())
	if victims.other > 0 {
		t.Errorf("%d victim requests not answered 200 (first: %s)", victims.other, <-firstBad)
	}
	if victims.ok < 40 {
		t.Errorf("only %d victim requests were made", victims.ok)
	}
	if attackerFailed != 120 {
		t.Errorf("%d of the attacker's 120 requests failed, want all", attackerFailed)
	}
	resp, err := http.Get(admin + "/admin/upstreams")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var up struct {
		Upstreams []struct {
			Breaker struct {
				State    string `json:"state"`
				Failures int    `json:"window_failures"`
				Counted  int    `json:"window_failures_counted"`
			} `json:"breaker"`
		} `json:"upstreams"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&up); err != nil || len(up.Upstreams) != 1 {
		t.Fatalf("/admin/upstreams: %v %+v", err, up)
	}
	if b := up.Upstreams[0].Breaker; b.State != "closed" || b.Counted != 0 {
		t.Errorf("breaker %+v after one tenant's failures, want closed with none counted", b)
	}
}
