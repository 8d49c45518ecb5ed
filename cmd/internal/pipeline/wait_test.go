package pipeline

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/edgecache/edgecache/cmd/internal/config"
	"github.com/edgecache/edgecache/cmd/internal/llmsim"
	"github.com/edgecache/edgecache/cmd/internal/openai"
)

// An upstream Retry-After longer than the short wait is not waited out:
// one call, then the busy answer at once, its Retry-After the upstream's,
// and X-Should-Retry: false so the SDKs do not wait it out either.
func TestLongRetryAfterAnswersAtOnce(t *testing.T) {
	e := newEdge(t, edgeOpts{})
	e.sim.Server.SetFault(llmsim.Fault{Status: 503, Probability: 1, RetryAfter: 7})
	for _, stream := range []bool{false, true} {
		start := time.Now()
		r := e.post("/v1/chat/completions", chat(fmt.Sprintf("busy %v", stream), fmt.Sprintf(`"stream":%v`, stream)))
		took := time.Since(start)
		if r.status != 503 || r.header.Get("X-Edgecache-Degraded") != "busy" || r.header.Get("Retry-After") != "7" ||
			r.header.Get("X-Should-Retry") != "false" {
			t.Fatalf("stream %v: %d %q Retry-After %q X-Should-Retry %q", stream, r.status, r.header.Get("X-Edgecache-Degraded"),
				r.header.Get("Retry-After"), r.header.Get("X-Should-Retry"))
		}
		t.Logf("stream %v: busy answer after %v", stream, took.Round(100*time.Microsecond))
		if took > 1500*time.Millisecond {
			t.Errorf("stream %v: busy answer after %v, want ≤ 1.5 s", stream, took)
		}
	}
	if n := e.upstreamCalls("/v1/chat/completions"); n != 2 {
		t.Errorf("%d upstream calls for 2 requests: a 7 s Retry-After was retried", n)
	}
}

// A stale answer, when one exists, comes at once too.
func TestLongRetryAfterServesStaleAtOnce(t *testing.T) {
	e := newEdge(t, edgeOpts{routes: []config.Route{{Name: "chat", Path: "/v1/chat/completions",
		Cache: config.CachePolicy{TTL: config.Duration(time.Second), StaleIfError: config.Duration(time.Hour)}}}})
	body := chat("stale please")
	e.post("/v1/chat/completions", body)
	e.settle()
	req, err := openai.ParseRequest(openai.APIChat, []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	key := exactKey(&Route{Name: "chat"}, anonymous, "", req)
	waitFor(t, func() bool { _, err := e.tiered.Get(context.Background(), key); return err != nil }) // TTL passed
	e.sim.Server.SetFault(llmsim.Fault{Status: 503, Probability: 1, RetryAfter: 7})
	start := time.Now()
	r := e.post("/v1/chat/completions", body)
	took := time.Since(start)
	if r.status != 200 || r.header.Get("X-Edgecache-Degraded") != "stale" {
		t.Fatalf("%d %q %s", r.status, r.header.Get("X-Edgecache-Degraded"), r.body)
	}
	t.Logf("stale answer after %v", took.Round(100*time.Microsecond))
	if took > 1500*time.Millisecond {
		t.Errorf("stale answer after %v, want ≤ 1.5 s", took)
	}
}

// A long Retry-After with a backup: failover at once, the primary called
// once.
func TestLongRetryAfterFailsOverAtOnce(t *testing.T) {
	backup, err := llmsim.Start(context.Background(), "127.0.0.1:0", llmsim.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer backup.Close()
	e := newEdge(t, edgeOpts{backups: []string{backup.URL()}})
	e.sim.Server.SetFault(llmsim.Fault{Status: 503, RetryAfter: 7})
	r := e.post("/v1/chat/completions", chat("elsewhere"))
	if r.status != 200 || content(t, r.body) == "" {
		t.Fatalf("%d %s", r.status, r.body)
	}
	if p, b := e.upstreamCalls("/v1/chat/completions"), backup.Server.Stats()["/v1/chat/completions"]; p != 1 || b != 1 {
		t.Errorf("primary %d calls, backup %d; want 1 and 1", p, b)
	}
}

// A short Retry-After (≤ MaxRetryWait) is waited for, inside the deadline.
func TestShortRetryAfterIsWaitedWithinTheDeadline(t *testing.T) {
	e := newEdge(t, edgeOpts{})
	e.sim.Server.SetFault(llmsim.Fault{Status: 503, RetryAfter: 1})
	r := e.post("/v1/chat/completions", chat("short wait"))
	if r.status != 503 || r.header.Get("Retry-After") != "1" || r.header.Get("X-Should-Retry") != "" {
		t.Fatalf("%d Retry-After %q X-Should-Retry %q", r.status, r.header.Get("Retry-After"), r.header.Get("X-Should-Retry"))
	}
	if n := e.upstreamCalls("/v1/chat/completions"); n != 3 {
		t.Errorf("%d upstream calls, want 3 attempts with 1 s waits", n)
	}
	// The client's 1.2 s hint minus the 0.5 s margin leaves no room for a
	// 1 s wait: one attempt.
	e.sim.Server.ResetStats()
	e.post("/v1/chat/completions", chat("no room"), "X-Stainless-Timeout", "1.2")
	if n := e.upstreamCalls("/v1/chat/completions"); n != 1 {
		t.Errorf("%d upstream calls with a 0.7 s deadline, want 1", n)
	}
}
