package pipeline

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgecache/edgecache/cmd/internal/llmsim"
	"github.com/edgecache/edgecache/degrade/admission"
)

func TestOwnQuotaIsAnHonest429(t *testing.T) {
	e := newEdge(t, edgeOpts{})
	b, err := admission.NewBuckets(admission.BucketsConfig{Defaults: admission.Rules{Key: admission.Limits{RequestsPerSecond: 0.5, RequestBurst: 2}}})
	if err != nil {
		t.Fatal(err)
	}
	prot, _ := admission.NewProtector(admission.ProtectConfig{MaxInFlight: 100})
	e.p.cfg.Admission = &AdmissionConfig{Quota: bucketQuota{b}, Protector: prot, DefaultLane: admission.Free}
	auth := []string{"Authorization", "Bearer sk-quota"}
	for i := range 2 {
		r := e.post("/v1/chat/completions", chat("quota"), auth...)
		if r.status != 200 || r.header.Get("X-Ratelimit-Limit-Requests") != "2" {
			t.Fatalf("request %d: %d limit header %q", i, r.status, r.header.Get("X-Ratelimit-Limit-Requests"))
		}
	}
	r := e.post("/v1/chat/completions", chat("quota"), auth...)
	if r.status != 429 || !strings.Contains(string(r.body), `"rate_limit_exceeded"`) || r.header.Get("Retry-After") == "" ||
		r.header.Get("X-Ratelimit-Remaining-Requests") != "0" || r.header.Get("X-Ratelimit-Reset-Requests") == "" {
		t.Fatalf("over quota: %d Retry-After %q remaining %q %s", r.status, r.header.Get("Retry-After"),
			r.header.Get("X-Ratelimit-Remaining-Requests"), r.body)
	}
	if ra := r.header.Get("Retry-After"); ra != "2" && ra != "1" {
		t.Errorf("Retry-After %s, want the bucket's ~2 s", ra)
	}
	// Another key has its own bucket.
	if r := e.post("/v1/chat/completions", chat("quota"), "Authorization", "Bearer sk-other"); r.status != 200 {
		t.Errorf("other key: %d", r.status)
	}
	if rungs := e.journal.rungs(); rungs["shed"] != 1 {
		t.Errorf("journal %v, want one shed record", rungs)
	}
	if prot.Stats().InFlight != 0 {
		t.Errorf("self-protection still counts %d in flight", prot.Stats().InFlight)
	}
}

func TestSelfProtectionShedsLowestLaneFirst(t *testing.T) {
	e := newEdge(t, edgeOpts{})
	prot, _ := admission.NewProtector(admission.ProtectConfig{MaxInFlight: 10})
	e.p.cfg.Admission = &AdmissionConfig{Protector: prot, DefaultLane: admission.Batch,
		Tenants: map[string]TenantInfo{"sk-paid": {Name: "acme", Lane: admission.Paid}}}
	// Hold 8 slots: with the request, 90 % — batch (80 %) is shed, paid (95 %) is not.
	for range 8 {
		if err := prot.Enter(admission.Enterprise); err != nil {
			t.Fatal(err)
		}
	}
	defer func() {
		for range 8 {
			prot.Leave()
		}
	}()
	r := e.post("/v1/chat/completions", chat("lanes"))
	if r.status != 503 || r.header.Get("Retry-After") == "" || r.header.Get("X-Edgecache-Degraded-Reason") != "shed" {
		t.Errorf("batch lane at 90 %%: %d %q", r.status, r.header.Get("X-Edgecache-Degraded-Reason"))
	}
	r = e.post("/v1/chat/completions", chat("lanes"), "Authorization", "Bearer sk-paid")
	if r.status != 200 {
		t.Errorf("paid lane at 90 %%: %d %s", r.status, r.body)
	}
}

// An admitted answer carries no Retry-After: with self-protection alone
// (no quotas, no credits) the 200s, miss and hit, once carried
// "Retry-After: 1" and "Retry-After-Ms: 1" from a zero credit decision.
func TestAdmittedAnswerHasNoRetryAfter(t *testing.T) {
	e := newEdge(t, edgeOpts{})
	prot, _ := admission.NewProtector(admission.ProtectConfig{MaxInFlight: 100})
	e.p.cfg.Admission = &AdmissionConfig{Protector: prot, DefaultLane: admission.Free}
	for i, want := range []string{"miss", "hit"} {
		r := e.post("/v1/chat/completions", chat("no retry-after on a 200"))
		if r.status != 200 || !strings.Contains(r.header.Get("Cache-Status"), want) {
			t.Fatalf("request %d: %d %q, want a %s", i, r.status, r.header.Get("Cache-Status"), want)
		}
		for _, h := range []string{"Retry-After", "Retry-After-Ms", "X-Ratelimit-Limit-Requests"} {
			if v := r.header.Get(h); v != "" {
				t.Errorf("%s answer: %s: %s", want, h, v)
			}
		}
	}
}

// bucketQuota adapts local buckets to Quota.
type bucketQuota struct{ b *admission.Buckets }

func (q bucketQuota) Reserve(_ context.Context, tokens int64, s ...admission.Subject) admission.Decision {
	return q.b.Reserve(tokens, s...)
}

func (q bucketQuota) Settle(_ context.Context, est, act int64, s ...admission.Subject) {
	q.b.Settle(est, act, s...)
}

// A request the target's concurrency limiter refuses is answered by the
// ladder at once: no waiting out the queue estimate, no retry budget spent.
func TestConcurrencyRefusalIsNotRetried(t *testing.T) {
	e := newEdge(t, edgeOpts{})
	conc, err := admission.NewConcurrency(admission.ConcurrencyConfig{Name: "primary", InitialLimit: 1, MinLimit: 1, MaxLimit: 1})
	if err != nil {
		t.Fatal(err)
	}
	e.targets[0].Concurrency = conc
	prot, _ := admission.NewProtector(admission.ProtectConfig{})
	e.p.cfg.Admission = &AdmissionConfig{Protector: prot, DefaultLane: admission.Free}
	rel, err := conc.Acquire(context.Background(), admission.Enterprise, time.Now().Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	defer rel(0, true)
	start := time.Now()
	r := e.post("/v1/chat/completions", chat("no slot for me"))
	if r.status != 503 || r.header.Get("Retry-After") == "" || r.header.Get("X-Edgecache-Degraded-Reason") != "queued_timeout" {
		t.Errorf("refused by the limiter: %d %q %q", r.status, r.header.Get("Retry-After"), r.header.Get("X-Edgecache-Degraded-Reason"))
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("answered after %v: the free lane waits at most 500 ms", d)
	}
	if n := e.upstreamCalls("/v1/chat/completions"); n != 0 {
		t.Errorf("%d upstream calls", n)
	}
	if _, retries := e.targets[0].Budget.InFlight(); retries != 0 {
		t.Errorf("%d retries in flight", retries)
	}
}

// A stream feeds its time to first token to the adaptive limit when the
// first token arrives, not when the stream ends: slow start grows the
// limit (two slots per first token) while the stream is still open, and
// the stream's end adds no second sample.
func TestStreamFeedsLimiterAtFirstToken(t *testing.T) {
	e := newEdge(t, edgeOpts{sim: llmsim.Config{TTFT: 20 * time.Millisecond, TokensPerSec: 20, AnswerTokens: 10}})
	conc, err := admission.NewConcurrency(admission.ConcurrencyConfig{Name: "primary", InitialLimit: 1, MinLimit: 1, MaxLimit: 100})
	if err != nil {
		t.Fatal(err)
	}
	e.targets[0].Concurrency = conc
	req, err := http.NewRequest(http.MethodPost, e.url+"/v1/chat/completions",
		strings.NewReader(chat("a slow stream", `"stream":true`)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() && !strings.Contains(sc.Text(), `"content":"sim:`) {
	}
	// The first token is relayed after the limiter heard of it.
	if st := conc.Stats(); st.InFlight != 1 || st.Limit != 3 || !st.SlowStart {
		t.Fatalf("at the first token: in flight %d, limit %d, slow start %v; want 1, 3, true", st.InFlight, st.Limit, st.SlowStart)
	}
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for conc.Stats().InFlight != 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond) // the release follows the stream's last byte
	}
	if st := conc.Stats(); st.InFlight != 0 || st.Limit != 3 {
		t.Fatalf("after the stream: in flight %d, limit %d; want 0, 3 (no second sample)", st.InFlight, st.Limit)
	}
}

// With streams flowing against llmsim, a TTFT that rises from 20ms to 2s
// ends the limit's slow start and brings the limit down within seconds:
// the limiter hears each stream's TTFT at its first token.
func TestLimiterClampsWhenTTFTRises(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for about 6s")
	}
	e := newEdge(t, edgeOpts{sim: llmsim.Config{TTFT: 20 * time.Millisecond, TokensPerSec: 100, AnswerTokens: 10}})
	conc, err := admission.NewConcurrency(admission.ConcurrencyConfig{Name: "primary", InitialLimit: 100, MaxLimit: 4096})
	if err != nil {
		t.Fatal(err)
	}
	e.targets[0].Concurrency = conc
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	for w := range 40 { // 40 streams at a time: the limit of 100 is in use for slow start's judgement
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.url+"/v1/chat/completions",
					strings.NewReader(chat(fmt.Sprintf("stream %d.%d", w, i), `"stream":true`)))
				if err != nil {
					return
				}
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Cache-Control", "no-store")
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	time.Sleep(1500 * time.Millisecond) // a healthy phase: slow start learns the no-load TTFT
	st := conc.Stats()
	if !st.SlowStart || st.BaseTTFT <= 0 || st.BaseTTFT > 300*time.Millisecond {
		t.Fatalf("healthy phase: %+v", st)
	}
	healthy := st.Limit
	cfg := e.sim.Server.Config()
	cfg.TTFT = 2 * time.Second
	e.sim.Server.SetConfig(cfg)
	rose := time.Now()
	for conc.Stats().SlowStart && time.Since(rose) < 10*time.Second {
		time.Sleep(10 * time.Millisecond)
	}
	st = conc.Stats()
	took := time.Since(rose)
	t.Logf("limit %d with base TTFT %v; TTFT 2s: slow start ended after %v, limit %d, %d in flight", healthy, st.BaseTTFT, took, st.Limit, st.InFlight)
	if st.SlowStart || took > 7*time.Second {
		t.Fatalf("slow start still on %v after TTFT rose to 2s: %+v", took, st)
	}
	if st.Limit > 25 { // half the calls in flight: at most 40 streams, so at most 20 (or more queued)
		t.Fatalf("limit %d after TTFT rose, want ≤ 25 (half of ≤ 40 in flight)", st.Limit)
	}
}
