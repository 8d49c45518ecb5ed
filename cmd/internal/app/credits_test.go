package app

// Usage credits end to end: a key over its daily request credit gets 429
// insufficient_quota until 00:00 UTC, in each route's own error shape;
// two instances on one real redis-server share the count; the token
// credit counts the usage llmsim reports, and cache hits count requests
// but no tokens.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgecache/edgecache/cache/cachetest"
	"github.com/edgecache/edgecache/cmd/internal/llmsim"
)

// creditAnswer is one answer: status, headers, error code or type, and
// the usage it reported.
type creditAnswer struct {
	status  int
	header  http.Header
	code    string // OpenAI error.code
	typ     string // error.type (OpenAI and Anthropic)
	message string
	tokens  int64 // usage.total_tokens of a chat answer
}

func creditPost(t *testing.T, base, path, key, prompt string) creditAnswer {
	t.Helper()
	body := fmt.Sprintf(`{"model":"sim-1","messages":[{"role":"user","content":%q}]}`, prompt)
	if path == pathMessages {
		body = fmt.Sprintf(`{"model":"sim-1","max_tokens":64,"messages":[{"role":"user","content":%q}]}`, prompt)
	}
	req, _ := http.NewRequest(http.MethodPost, base+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var v struct {
		Error struct{ Code, Type, Message string }
		Usage struct {
			Total int64 `json:"total_tokens"`
		}
	}
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%s: %d %s", path, resp.StatusCode, b)
	}
	return creditAnswer{status: resp.StatusCode, header: resp.Header, code: v.Error.Code, typ: v.Error.Type,
		message: v.Error.Message, tokens: v.Usage.Total}
}

func writeConfig(t *testing.T, yaml string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "edgecache.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func startSim(t *testing.T, sc llmsim.Config) *llmsim.Running {
	t.Helper()
	sim, err := llmsim.Start(context.Background(), "127.0.0.1:0", sc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	return sim
}

// checkCreditRefusal checks the 429 of a spent daily credit: Retry-After
// is the time to the next 00:00 UTC, which the message names.
func checkCreditRefusal(t *testing.T, what string, a creditAnswer) {
	t.Helper()
	now := time.Now().UTC()
	reset := now.Truncate(24 * time.Hour).Add(24 * time.Hour)
	if a.status != http.StatusTooManyRequests {
		t.Fatalf("%s: %d, want 429", what, a.status)
	}
	ra, err := strconv.Atoi(a.header.Get("Retry-After"))
	if want := int(reset.Sub(now).Seconds()); err != nil || ra < want-5 || ra > want+5 {
		t.Errorf("%s: Retry-After %q, want about %d (until %v)", what, a.header.Get("Retry-After"), want, reset)
	}
	if a.header.Get("X-Should-Retry") != "false" {
		t.Errorf("%s: X-Should-Retry %q, want false (the SDK's retries cannot succeed before the reset)", what, a.header.Get("X-Should-Retry"))
	}
	if stamp := reset.Format("2006-01-02 15:04:05 UTC"); !strings.Contains(a.message, stamp) {
		t.Errorf("%s: message %q does not say the credits reset at %s", what, a.message, stamp)
	}
}

func TestCreditsKeyOverQuota(t *testing.T) {
	sim := startSim(t, llmsim.Config{})
	cfg := writeConfig(t, "semantic: {embedder: lexical}\nadmission:\n  credits:\n    - {scope: key, requests: 3}\n")
	data, _ := startEdgecache(t, sim.URL(), "--config", cfg)
	prompt := uniquePrompt(t, "credits")
	for i := range 3 {
		// The same prompt: the second and third are cache hits, and count.
		a := creditPost(t, data, pathChat, "sk-credit-a", prompt)
		if a.status != 200 || a.header.Get("x-ratelimit-limit-requests") != "3" ||
			a.header.Get("x-ratelimit-remaining-requests") != strconv.Itoa(2-i) || a.header.Get("x-ratelimit-reset-requests") == "" {
			t.Fatalf("request %d: %d %v", i, a.status, a.header)
		}
	}
	a := creditPost(t, data, pathChat, "sk-credit-a", prompt)
	checkCreditRefusal(t, "chat", a)
	if a.code != "insufficient_quota" || a.typ != "rate_limit_error" {
		t.Errorf("chat refusal code %q type %q, want insufficient_quota, rate_limit_error", a.code, a.typ)
	}
	m := creditPost(t, data, pathMessages, "sk-credit-a", prompt)
	checkCreditRefusal(t, "messages", m)
	if m.typ != "rate_limit_error" {
		t.Errorf("messages refusal type %q, want Anthropic's rate_limit_error", m.typ)
	}
	if b := creditPost(t, data, pathChat, "sk-credit-b", prompt); b.status != 200 {
		t.Errorf("another key: %d", b.status)
	}
}

// Two instances on one real redis-server: 6 requests of one key
// alternate between them; the key's credit of 4 admits 4 in all.
func TestCreditsSharedAcrossInstances(t *testing.T) {
	rds := cachetest.StartRedis(t)
	sim := startSim(t, llmsim.Config{})
	cfg := writeConfig(t, "semantic: {embedder: lexical}\nadmission:\n  replicas: 2\n  credits:\n    - {scope: key, requests: 4}\n")
	var bases []string
	for range 2 {
		data, _ := startEdgecache(t, sim.URL(), "--redis", rds.Addr(), "--config", cfg)
		bases = append(bases, data)
	}
	ok := 0
	for i := range 6 {
		a := creditPost(t, bases[i%2], pathChat, "sk-credit-shared", fmt.Sprintf("%s %d", uniquePrompt(t, "shared"), i))
		switch {
		case a.status == 200:
			ok++
			if l := a.header.Get("x-ratelimit-limit-requests"); l != "4" {
				t.Errorf("request %d: limit %q, want the region's 4 (not a share)", i, l)
			}
		case i < 4:
			t.Fatalf("request %d refused: %d %s", i, a.status, a.message)
		default:
			checkCreditRefusal(t, fmt.Sprintf("request %d on instance %d", i, i%2), a)
		}
	}
	if ok != 4 {
		t.Errorf("%d requests admitted by two instances, want the shared credit of 4", ok)
	}
}

// The token credit counts the usage llmsim reports: the second answer's
// remaining tokens are the credit minus the first's usage; a cache hit
// adds none; once spent, 429 until 00:00 UTC.
func TestCreditsTokensFromUsage(t *testing.T) {
	sim := startSim(t, llmsim.Config{AnswerTokens: 40})
	probe := creditPost(t, sim.URL(), pathChat, "sk-probe", "how many tokens")
	if probe.tokens <= 0 {
		t.Fatalf("llmsim reported no usage: %+v", probe)
	}
	credit := probe.tokens*2 - 1 // two answers like it spend it
	cfg := writeConfig(t, fmt.Sprintf("semantic: {embedder: lexical}\nadmission:\n  credits:\n    - {scope: key, tokens: %d}\n", credit))
	data, _ := startEdgecache(t, sim.URL(), "--config", cfg)
	one := uniquePrompt(t, "tokens one")
	first := creditPost(t, data, pathChat, "sk-credit-tok", one)
	if first.status != 200 || first.header.Get("x-ratelimit-remaining-tokens") != strconv.FormatInt(credit, 10) {
		t.Fatalf("first: %d remaining %q, want %d before any answer", first.status, first.header.Get("x-ratelimit-remaining-tokens"), credit)
	}
	want := strconv.FormatInt(credit-first.tokens, 10)
	var second creditAnswer
	deadline := time.Now().Add(5 * time.Second) // settled after the answer was written
	for time.Now().Before(deadline) {
		second = creditPost(t, data, pathChat, "sk-credit-tok", one) // a cache hit
		if second.header.Get("x-ratelimit-remaining-tokens") == want {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if second.status != 200 || second.header.Get("x-ratelimit-remaining-tokens") != want {
		t.Fatalf("after an answer of %d tokens: remaining %q, want %s", first.tokens, second.header.Get("x-ratelimit-remaining-tokens"), want)
	}
	third := creditPost(t, data, pathChat, "sk-credit-tok", uniquePrompt(t, "tokens two"))
	if third.status != 200 || third.header.Get("x-ratelimit-remaining-tokens") != want {
		t.Fatalf("after cache hits: %d remaining %q, want %s (hits spend no tokens)", third.status, third.header.Get("x-ratelimit-remaining-tokens"), want)
	}
	var refused creditAnswer
	for time.Now().Before(deadline.Add(5 * time.Second)) {
		if refused = creditPost(t, data, pathChat, "sk-credit-tok", uniquePrompt(t, "tokens three")); refused.status == 429 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	checkCreditRefusal(t, "tokens spent", refused)
	if !strings.Contains(refused.message, "tokens") {
		t.Errorf("message %q does not say tokens", refused.message)
	}
}

// A background job whose key has spent its credits fails at once with
// the 429 that says when they reset, instead of retrying for hours.
func TestCreditsBackgroundJobFails(t *testing.T) {
	sim := startSim(t, llmsim.Config{})
	cfg := writeConfig(t, `semantic: {embedder: lexical}
routes:
  - name: responses
    path: /v1/responses
    jobs: {enabled: true}
admission:
  credits:
    - {scope: key, requests: 1}
`)
	data, _ := startEdgecache(t, sim.URL(), "--config", cfg)
	var ids []string
	for _, what := range []string{"first", "second"} {
		// Not submitJob: the second may have run and failed already.
		st, v := jobCall(t, http.MethodPost, data+pathResponses, "sk-credit-jobs",
			fmt.Sprintf(`{"model":"sim-1","input":%q,"background":true}`, uniquePrompt(t, what)))
		if st != 200 || v.ID == "" {
			t.Fatalf("submit: %d %+v", st, v)
		}
		ids = append(ids, v.ID)
	}
	statuses := map[string]int{}
	deadline := time.Now().Add(20 * time.Second)
	for _, id := range ids {
		for time.Now().Before(deadline) {
			req, _ := http.NewRequest(http.MethodGet, data+pathResponses+"/"+id, nil)
			req.Header.Set("Authorization", "Bearer sk-credit-jobs")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var v struct {
				Status string
				Error  *struct{ Message string }
			}
			json.NewDecoder(resp.Body).Decode(&v)
			resp.Body.Close()
			if v.Status == "completed" || v.Status == "failed" {
				statuses[v.Status]++
				if v.Status == "failed" && (v.Error == nil || !strings.Contains(v.Error.Message, "Credits reset at")) {
					t.Errorf("failed job's error %+v, want the credits' message", v.Error)
				}
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if statuses["completed"] != 1 || statuses["failed"] != 1 {
		t.Errorf("jobs %v, want one completed and one failed on the spent credit", statuses)
	}
}
