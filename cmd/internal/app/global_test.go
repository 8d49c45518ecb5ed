package app

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgecache/edgecache/cache/cachetest"
	"github.com/edgecache/edgecache/cmd/internal/llmsim"
)

// The per-key quota of TestGlobalLimitsAcrossTwoInstances, shared by two
// instances (admission.replicas: 2). When Redis is down each instance
// enforces its share: rate / 2 and burst / 2.
const (
	globalRate     = 1.0 // requests per second
	globalBurst    = 10
	globalReplicas = 2
	globalShare    = globalBurst / globalReplicas
)

const globalConfig = `# TestGlobalLimitsAcrossTwoInstances
semantic:
  embedder: lexical
admission:
  replicas: 2
  limits:
    key: {requests_per_second: 1, request_burst: 10}
`

// globalAnswer is one request's outcome.
type globalAnswer struct {
	instance int // index of the edgecache instance that answered
	status   int
	header   http.Header
	code     string // error.code of an error body
	err      error
}

// globalPost sends a chat completion with a prompt of its own and
// Cache-Control: no-store, so that every admitted request reaches the
// model: quotas are checked before the cache, so a hit would count too,
// but here nothing can hit and llmsim's counter is a second witness of
// the admits.
func globalPost(client *http.Client, base, key, prompt string) globalAnswer {
	body := fmt.Sprintf(`{"model":"sim-1","messages":[{"role":"user","content":%q}]}`, prompt)
	req, err := http.NewRequest(http.MethodPost, base+"/v1/chat/completions", strings.NewReader(body))
	if err != nil {
		return globalAnswer{err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Cache-Control", "no-store")
	resp, err := client.Do(req)
	if err != nil {
		return globalAnswer{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	a := globalAnswer{status: resp.StatusCode, header: resp.Header, err: err}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error struct {
				Code string `json:"code"`
			} `json:"error"`
		}
		_ = json.Unmarshal(b, &e)
		a.code = e.Error.Code
	}
	return a
}

// globalBurstOf sends n requests, at most conc at a time, request i with
// keyOf(i) to instance i % len(bases), and returns the answers and how long
// the whole burst took.
func globalBurstOf(client *http.Client, bases []string, keyOf func(int) string, what string, n, conc int) ([]globalAnswer, time.Duration) {
	out := make([]globalAnswer, n)
	start := make(chan struct{})
	sem := make(chan struct{}, conc)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			sem <- struct{}{}
			defer func() { <-sem }()
			inst := i % len(bases)
			key := keyOf(i)
			out[i] = globalPost(client, bases[inst], key, fmt.Sprintf("%s %s request %d", what, key, i))
			out[i].instance = inst
		}()
	}
	t0 := time.Now()
	close(start)
	wg.Wait()
	return out, time.Since(t0)
}

// limitHeader is the request limit an answer reports: the global burst
// when Redis decided, the instance's share when it fell back.
func limitHeader(a globalAnswer) string { return a.header.Get("x-ratelimit-limit-requests") }

// checkRefusal checks that a quota refusal is honest: 429, code
// rate_limit_exceeded, Retry-After and the x-ratelimit headers of limit.
func checkRefusal(t *testing.T, what string, a globalAnswer, limit int) {
	t.Helper()
	h := a.header
	if a.code != "rate_limit_exceeded" {
		t.Errorf("%s: 429 with code %q, want rate_limit_exceeded", what, a.code)
	}
	if ra, err := strconv.Atoi(h.Get("Retry-After")); err != nil || ra < 1 {
		t.Errorf("%s: Retry-After %q, want whole seconds ≥ 1", what, h.Get("Retry-After"))
	}
	if ms, err := strconv.Atoi(h.Get("retry-after-ms")); err != nil || ms < 1 {
		t.Errorf("%s: retry-after-ms %q", what, h.Get("retry-after-ms"))
	}
	if got := h.Get("x-ratelimit-limit-requests"); got != strconv.Itoa(limit) {
		t.Errorf("%s: x-ratelimit-limit-requests %q, want %d", what, got, limit)
	}
	if got := h.Get("x-ratelimit-remaining-requests"); got != "0" {
		t.Errorf("%s: x-ratelimit-remaining-requests %q, want 0", what, got)
	}
	if d, err := time.ParseDuration(h.Get("x-ratelimit-reset-requests")); err != nil || d <= 0 {
		t.Errorf("%s: x-ratelimit-reset-requests %q", what, h.Get("x-ratelimit-reset-requests"))
	}
}

// globalPhase1 checks one attempt of phase 1 and reports whether it was
// conclusive: every decision made in Redis, or enough of them that the
// global burst was exhausted.
func globalPhase1(t *testing.T, attempt int, answers []globalAnswer, elapsed time.Duration, calls int64) bool {
	t.Helper()
	// A bucket starts full and refills at its rate while the burst runs.
	maxGlobal := globalBurst + int(math.Floor(globalRate*elapsed.Seconds()))
	maxShare := globalShare + int(math.Floor(globalRate/globalReplicas*elapsed.Seconds()))
	var inRedis, admitsRedis, admits int
	local, admitsLocal := make([]int, globalReplicas), make([]int, globalReplicas)
	perInstance := make([]int, globalReplicas)
	for i, a := range answers {
		what := fmt.Sprintf("phase 1, attempt %d, request %d (instance %d)", attempt, i, a.instance)
		if a.err != nil {
			t.Fatalf("%s: %v", what, a.err)
		}
		limit := globalBurst
		switch limitHeader(a) {
		case strconv.Itoa(globalBurst):
			inRedis++
		case strconv.Itoa(globalShare):
			limit = globalShare
			local[a.instance]++
		default:
			t.Errorf("%s: x-ratelimit-limit-requests %q, want %d (global) or %d (the instance's share)",
				what, limitHeader(a), globalBurst, globalShare)
		}
		switch a.status {
		case http.StatusOK:
			admits++
			perInstance[a.instance]++
			if limit == globalBurst {
				admitsRedis++
			} else {
				admitsLocal[a.instance]++
			}
			if r, err := strconv.Atoi(a.header.Get("x-ratelimit-remaining-requests")); err != nil || r < 0 || r >= limit {
				t.Errorf("%s: x-ratelimit-remaining-requests %q", what, a.header.Get("x-ratelimit-remaining-requests"))
			}
		case http.StatusTooManyRequests:
			checkRefusal(t, what, a, limit)
		default:
			t.Errorf("%s: status %d (%s), want 200 or 429", what, a.status, a.code)
		}
	}
	t.Logf("phase 1, attempt %d: %d of %d admitted in %v (instance admits %v); %d decided in Redis (%d admitted, allowed at most %d), "+
		"decided locally per instance %v (admitted %v, allowed at most %d each)", attempt, admits, len(answers),
		elapsed.Round(time.Millisecond), perInstance, inRedis, admitsRedis, maxGlobal, local, admitsLocal, maxShare)
	// A request decided locally because Redis answered late may still have
	// reserved its token in Redis (the script ran after the client gave
	// up): each local decision can take one token from the global burst.
	nLocal := 0
	for _, l := range local {
		nLocal += l
	}
	if admitsRedis < min(inRedis, globalBurst)-nLocal || admitsRedis > maxGlobal {
		t.Errorf("phase 1, attempt %d: Redis admitted %d of the %d requests it decided across %d instances, want the global burst %d "+
			"(at most %d with refill over %v); %d would be limit × replicas", attempt, admitsRedis, inRedis, globalReplicas,
			globalBurst, maxGlobal, elapsed.Round(time.Millisecond), globalBurst*globalReplicas)
	}
	for i := range local {
		if admitsLocal[i] < min(local[i], globalShare) || admitsLocal[i] > maxShare {
			t.Errorf("phase 1, attempt %d: instance %d admitted %d of the %d requests it decided alone, want its share %d (at most %d)",
				attempt, i, admitsLocal[i], local[i], globalShare, maxShare)
		}
	}
	if calls != int64(admits) {
		t.Errorf("phase 1, attempt %d: llmsim saw %d chat calls, want one per admitted request (%d)", attempt, calls, admits)
	}
	return inRedis == len(answers) || inRedis > maxGlobal
}

// TestGlobalLimitsAcrossTwoInstances: two edgecache processes sharing one
// Redis admit a key's global quota once, not once per instance; with Redis
// down each falls back to its share (limit / replicas), so the region
// stays near the limit rather than at limit × replicas.
func TestGlobalLimitsAcrossTwoInstances(t *testing.T) {
	rds := cachetest.StartRedis(t)
	sim, err := llmsim.Start(context.Background(), "127.0.0.1:0", llmsim.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	cfg := filepath.Join(t.TempDir(), "edgecache.yaml")
	if err := os.WriteFile(cfg, []byte(globalConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	// No tenant secret is configured: the second instance takes the one the
	// first stored in Redis, so a key has the same identity (and bucket) on
	// both — without that, each would count it apart.
	var bases []string
	for range globalReplicas {
		data, _ := startEdgecache(t, sim.URL(), "--redis", rds.Addr(), "--config", cfg)
		bases = append(bases, data)
	}
	client := &http.Client{Timeout: 30 * time.Second}
	chatCalls := func() int64 { return sim.Server.Stats()["/v1/chat/completions"] }

	// Warm-up, as concurrent as the test, with a key per request (a
	// bucket each): both instances open their Redis connections and load
	// the script, so that the measured decisions are not slowed by dialing.
	const n, conc = 40, 4
	warmKey := 0
	warm := func(what string, n int) []globalAnswer {
		base := warmKey
		warmKey += n
		answers, _ := globalBurstOf(client, bases, func(i int) string { return fmt.Sprintf("sk-warm-%d", base+i) }, what, n, conc)
		for _, a := range answers {
			if a.err != nil || a.status != http.StatusOK {
				t.Fatalf("%s on instance %d: status %d, %v", what, a.instance, a.status, a.err)
			}
		}
		return answers
	}
	warm("warm-up", n)
	// A decision Redis does not make within its 20 ms budget is made from
	// the local share (fail-open, by design), and 3 such in a row open the
	// instance's Redis breaker for 1 s. Wait until both instances decide
	// in Redis again.
	globalAgain := func() {
		deadline := time.Now().Add(15 * time.Second)
		for {
			ok := true
			for _, a := range warm("probe", globalReplicas) {
				ok = ok && limitHeader(a) == strconv.Itoa(globalBurst)
			}
			if ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatal("the instances did not decide in Redis again within 15 s")
			}
			time.Sleep(200 * time.Millisecond)
		}
	}

	// Phase 1: 40 requests with one key, 4 at a time, alternating
	// instances, so that the two processes race for the same bucket.
	//
	// Each answer says who decided it: x-ratelimit-limit-requests is 10
	// when Redis did, and 5 (the instance's share) when Redis was slower
	// than its 20 ms budget — fail-open by design, as happens on an
	// overloaded machine under -race. Every attempt checks both paths: the
	// Redis decisions admit at most the global burst (plus refill) however
	// the two instances interleave, the local ones at most each instance's
	// share. An attempt in which every decision was made by Redis (or at
	// least enough of them to exhaust the global burst) is conclusive;
	// otherwise it is repeated with a fresh key.
	const attempts = 5
	var key string
	for attempt := 1; ; attempt++ {
		globalAgain()
		key = fmt.Sprintf("sk-global-%d-%d", time.Now().UnixNano(), attempt)
		before := chatCalls()
		answers, elapsed := globalBurstOf(client, bases, func(int) string { return key }, "global", n, conc)
		calls := chatCalls() - before
		if globalPhase1(t, attempt, answers, elapsed, calls) {
			break
		}
		if attempt == attempts {
			t.Fatalf("%d attempts, none conclusive: Redis answered slower than its 20 ms budget "+
				"(admission.GlobalConfig.Timeout) too often for the global burst to be exhausted", attempts)
		}
	}

	// Phase 2: Redis stops. Each instance decides alone with its share,
	// burst 5 and rate 0.5/s, from a fresh local bucket: it still serves
	// (fail-open), and the two together stay at the global burst.
	rds.Stop()
	const perInst = 20
	before := chatCalls()
	answers, elapsed := globalBurstOf(client, bases, func(int) string { return key + "-fallback" }, "fallback", perInst*globalReplicas, conc)
	calls := chatCalls() - before
	maxShare := globalShare + int(math.Floor(globalRate/globalReplicas*elapsed.Seconds()))
	admits, perInstance := 0, make([]int, globalReplicas)
	for i, a := range answers {
		what := fmt.Sprintf("phase 2, request %d (instance %d)", i, a.instance)
		if a.err != nil {
			t.Fatalf("%s: %v", what, a.err)
		}
		if got := limitHeader(a); got != strconv.Itoa(globalShare) {
			t.Errorf("%s: x-ratelimit-limit-requests %q, want %d (this instance's share)", what, got, globalShare)
		}
		switch a.status {
		case http.StatusOK:
			admits++
			perInstance[a.instance]++
		case http.StatusTooManyRequests:
			checkRefusal(t, what, a, globalShare)
		default:
			t.Errorf("%s: status %d (%s), want 200 or 429", what, a.status, a.code)
		}
	}
	t.Logf("phase 2 (Redis down): instance admits %v of %d each in %v, allowed %d..%d each", perInstance, perInst,
		elapsed.Round(time.Millisecond), globalShare, maxShare)
	for i, got := range perInstance {
		if got < globalShare || got > maxShare {
			t.Errorf("phase 2: instance %d admitted %d of %d, want its share %d (at most %d with refill over %v)",
				i, got, perInst, globalShare, maxShare, elapsed.Round(time.Millisecond))
		}
	}
	if calls != int64(admits) {
		t.Errorf("phase 2: llmsim saw %d chat calls, want one per admitted request (%d)", calls, admits)
	}
}
