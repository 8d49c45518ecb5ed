package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/edgecache/edgecache/cmd/internal/config"
	"github.com/edgecache/edgecache/cmd/internal/llmsim"
	"github.com/edgecache/edgecache/cmd/internal/openai"
	"github.com/edgecache/edgecache/cmd/internal/upstream"
	"github.com/edgecache/edgecache/degrade"
)

// checkHonest asserts the answer is a rung of the ladder with a true
// status: never a 5xx other than 502/503/504, never an empty 200.
func checkHonest(t *testing.T, name string, r result) {
	t.Helper()
	switch {
	case r.status == 200:
		if r.header.Get("Content-Type") == "text/event-stream" {
			text, done, errEvent := sseText(t, r.body)
			if text == "" && !errEvent || !done && !errEvent {
				t.Errorf("%s: 200 stream without an answer or an error event: %s", name, r.body)
			}
			return
		}
		var resp openai.Response
		if json.Unmarshal(r.body, &resp) != nil || len(resp.Choices) == 0 || resp.Choices[0].Message == nil ||
			resp.Choices[0].Message.Content == nil || *resp.Choices[0].Message.Content == "" {
			t.Errorf("%s: empty or broken 200: %s", name, r.body)
		}
	case r.status == 502 || r.status == 503 || r.status == 504 || r.status == 429:
		var eb openai.ErrorBody
		if r.header.Get("Retry-After") == "" || json.Unmarshal(r.body, &eb) != nil || eb.Error.Message == "" {
			t.Errorf("%s: %d without Retry-After or an error body: %q %s", name, r.status, r.header.Get("Retry-After"), r.body)
		}
	default:
		t.Errorf("%s: status %d (%s)", name, r.status, r.body)
	}
}

func TestFullOutageEveryRequestGetsARung(t *testing.T) {
	faults := map[string]llmsim.Fault{
		"503":   {Status: 503},
		"hang":  {Hang: true},
		"empty": {Empty: true},
		"cut":   {CutAfter: 0, Reset: true},
		"reset": {Reset: true},
	}
	for name, fault := range faults {
		t.Run(name, func(t *testing.T) {
			e := newEdge(t, edgeOpts{})
			e.p.cfg.Timeout = 300 * time.Millisecond // hangs end in the ladder quickly
			e.p.cfg.Guard.TTFTTimeout = 300 * time.Millisecond
			// Something stale to serve for one of the prompts.
			e.post("/v1/chat/completions", chat("cached before the outage"))
			e.settle()
			e.sim.Server.SetFault(fault)
			degraded := 0
			for i := range 12 {
				body := chat(fmt.Sprintf("outage %d", i), `"stream":`+fmt.Sprint(i%2 == 0))
				if i == 5 {
					body = chat("cached before the outage", `"stream":true`) // a fresh hit: not degraded
				}
				r := e.post("/v1/chat/completions", body)
				checkHonest(t, fmt.Sprintf("request %d", i), r)
				if r.header.Get("X-Edgecache-Degraded") != "" {
					degraded++
				}
			}
			if got := len(e.journal.recs); got != degraded {
				t.Errorf("journal has %d records for %d degraded answers (%v)", got, degraded, e.journal.rungs())
			}
			if degraded != 11 {
				t.Errorf("%d degraded answers, want 11", degraded)
			}
		})
	}
}

func TestStaleServedWhenUpstreamFails(t *testing.T) {
	e := newEdge(t, edgeOpts{routes: []config.Route{{Name: "chat", Path: "/v1/chat/completions",
		Cache: config.CachePolicy{TTL: config.Duration(time.Second), StaleIfError: config.Duration(time.Hour)}}}})
	body := chat("old but gold")
	first := e.post("/v1/chat/completions", body)
	e.settle()
	req, err := openai.ParseRequest(openai.APIChat, []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	key := exactKey(&Route{Name: "chat"}, anonymous, "", req)
	waitFor(t, func() bool { _, err := e.tiered.Get(context.Background(), key); return err != nil }) // TTL passed
	e.sim.Server.SetFault(llmsim.Fault{Status: 503})
	r := e.post("/v1/chat/completions", body)
	if r.status != 200 || r.header.Get("X-Edgecache-Degraded") != "stale" || r.header.Get("X-Edgecache-Degraded-Reason") != "upstream_503" {
		t.Fatalf("stale rung: %d %q %q %s", r.status, r.header.Get("X-Edgecache-Degraded"), r.header.Get("X-Edgecache-Degraded-Reason"), r.body)
	}
	if content(t, r.body) != content(t, first.body) {
		t.Error("stale answer differs from the stored one")
	}
	if rungs := e.journal.rungs(); rungs["stale"] != 1 {
		t.Errorf("journal %v", rungs)
	}
}

func TestFailoverAndRetryAfter(t *testing.T) {
	backup, err := llmsim.Start(context.Background(), "127.0.0.1:0", llmsim.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer backup.Close()
	e := newEdge(t, edgeOpts{backups: []string{backup.URL()}})
	// The primary says 429, come back in 7 s: the request fails over, and
	// the primary is not called again while its Retry-After runs.
	e.sim.Server.SetFault(llmsim.Fault{Status: 429, RetryAfter: 7})
	for i := range 5 {
		r := e.post("/v1/chat/completions", chat(fmt.Sprintf("failover %d", i)))
		if r.status != 200 || !strings.HasPrefix(content(t, r.body), simPrefix(fmt.Sprintf("failover %d", i))) {
			t.Fatalf("request %d: %d %s", i, r.status, r.body)
		}
	}
	if n := e.upstreamCalls("/v1/chat/completions"); n != 1 {
		t.Errorf("primary called %d times within its Retry-After, want 1", n)
	}
	if n := backup.Server.Stats()["/v1/chat/completions"]; n != 5 {
		t.Errorf("backup called %d times, want 5", n)
	}
	st := e.targets[0].Breaker.Status()
	if st.State != "open" || time.Until(st.OpenUntil) < 5*time.Second {
		t.Errorf("primary breaker %+v, want held ~7 s", st)
	}
}

func TestRetryAfterWithoutBackupIsHonoured(t *testing.T) {
	e := newEdge(t, edgeOpts{})
	e.sim.Server.SetFault(llmsim.Fault{Status: 429, RetryAfter: 7})
	for i := range 5 {
		r := e.post("/v1/chat/completions", chat(fmt.Sprintf("ra %d", i)))
		if r.status != 503 || r.header.Get("Retry-After") == "" {
			t.Fatalf("request %d: %d Retry-After %q", i, r.status, r.header.Get("Retry-After"))
		}
		if ra := r.header.Get("Retry-After"); ra != "7" && ra != "6" {
			t.Errorf("request %d: Retry-After %s, want the upstream's 7 s counting down", i, ra)
		}
	}
	if n := e.upstreamCalls("/v1/chat/completions"); n != 1 {
		t.Errorf("upstream hammered: %d calls within Retry-After, want 1", n)
	}
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestBreakerOpensAnswersFromLadderAndCloses(t *testing.T) {
	e := newEdge(t, edgeOpts{})
	clock := &fakeClock{t: time.Now()}
	e.targets[0].Breaker = degrade.NewBreaker("primary", degrade.BreakerConfig{Clock: clock})
	e.sim.Server.SetFault(llmsim.Fault{Status: 500})
	calls := func() int64 { return e.upstreamCalls("/v1/chat/completions") }
	for i := 0; e.targets[0].Breaker.Status().State == "closed" && i < 20; i++ {
		checkHonest(t, "storm", e.post("/v1/chat/completions", chat(fmt.Sprintf("trip %d", i))))
	}
	if st := e.targets[0].Breaker.Status(); st.State != "open" {
		t.Fatalf("breaker %+v after a storm of 500s", st)
	}
	before := calls()
	for i := range 10 {
		r := e.post("/v1/chat/completions", chat(fmt.Sprintf("while open %d", i)))
		if r.status != 503 || r.header.Get("X-Edgecache-Degraded-Reason") != "breaker_open" {
			t.Fatalf("while open: %d %q", r.status, r.header.Get("X-Edgecache-Degraded-Reason"))
		}
		if ra := r.header.Get("Retry-After"); ra == "" || ra == "0" {
			t.Fatalf("no Retry-After while open")
		}
	}
	if calls() != before {
		t.Errorf("open breaker let %d calls through", calls()-before)
	}
	// The upstream recovers; after the open time, half-open probes close it.
	e.sim.Server.ClearFault()
	clock.advance(40 * time.Second)
	for i := range 3 {
		r := e.post("/v1/chat/completions", chat(fmt.Sprintf("probe %d", i)))
		if r.status != 200 {
			t.Fatalf("probe %d: %d %s", i, r.status, r.body)
		}
	}
	if st := e.targets[0].Breaker.Status(); st.State != "closed" {
		t.Errorf("breaker %+v after good probes", st)
	}
}

func TestRetryAmplificationBound(t *testing.T) {
	e := newEdge(t, edgeOpts{})
	e.sim.Server.SetFault(llmsim.Fault{Status: 503})
	const n = 200
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Post(e.url+"/v1/chat/completions", "application/json", strings.NewReader(chat(fmt.Sprintf("storm %d", i))))
			if err != nil {
				t.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 503 {
				t.Errorf("status %d", resp.StatusCode)
			}
		}()
	}
	wg.Wait()
	if calls := e.upstreamCalls("/v1/chat/completions"); float64(calls) > 1.2*n {
		t.Errorf("%d upstream calls for %d client requests (> 1.2×)", calls, n)
	} else {
		t.Logf("%d upstream calls for %d client requests", calls, n)
	}
}

func TestClientRetryingGetsOneAttempt(t *testing.T) {
	e := newEdge(t, edgeOpts{})
	e.sim.Server.SetFault(llmsim.Fault{Status: 502})
	r := e.post("/v1/chat/completions", chat("sdk retries"), "X-Stainless-Retry-Count", "1")
	if r.status != 503 {
		t.Fatalf("%d", r.status)
	}
	if n := e.upstreamCalls("/v1/chat/completions"); n != 1 {
		t.Errorf("%d upstream calls while the SDK retries, want 1", n)
	}
	r = e.post("/v1/chat/completions", chat("first try"))
	if n := e.upstreamCalls("/v1/chat/completions"); n != 4 {
		t.Errorf("%d upstream calls in all, want 1 + 3 attempts", n)
	}
}

// The edge out of file descriptors (EMFILE at the upstream dial, as at
// 10,000 open streams under a 20,000-descriptor limit) is the edge's
// trouble, not the target's: each such request gets an honest 503 with
// Retry-After at once, the breaker stays closed, and the first request
// after descriptors are back is served.
func TestEdgeOutOfDescriptorsKeepsBreakerClosed(t *testing.T) {
	e := newEdge(t, edgeOpts{})
	var exhausted atomic.Bool
	exhausted.Store(true)
	dialer := &net.Dialer{}
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		if exhausted.Load() {
			return nil, &net.OpError{Op: "dial", Net: network, Err: os.NewSyscallError("socket", syscall.EMFILE)}
		}
		return dialer.DialContext(ctx, network, addr)
	}}
	defer tr.CloseIdleConnections()
	up, err := upstream.New(upstream.Config{URL: e.sim.URL(), Transport: tr})
	if err != nil {
		t.Fatal(err)
	}
	e.targets[0].Client = up
	for i := range 20 {
		r := e.post("/v1/chat/completions", chat(fmt.Sprintf("no fds %d", i)))
		if r.status != 503 || r.header.Get("X-Edgecache-Degraded-Reason") != reasonEdgeResources || r.header.Get("Retry-After") == "" {
			t.Fatalf("request %d: %d %q Retry-After %q", i, r.status, r.header.Get("X-Edgecache-Degraded-Reason"), r.header.Get("Retry-After"))
		}
	}
	if st := e.targets[0].Breaker.Status(); st.State != "closed" {
		t.Fatalf("breaker %+v after the edge's own EMFILEs", st)
	}
	exhausted.Store(false)
	if r := e.post("/v1/chat/completions", chat("fds back")); r.status != 200 {
		t.Errorf("after descriptors came back: %d %s", r.status, r.body)
	}
}
