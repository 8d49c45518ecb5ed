package pipeline

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/edgecache/edgecache/cmd/internal/llmsim"
	"github.com/edgecache/edgecache/cmd/internal/upstream"
	"github.com/edgecache/edgecache/degrade"
)

func bearer(key string) []string { return []string{"Authorization", "Bearer " + key} }

// An upstream 429 about one tenant's key is that tenant's answer: passed on
// with its Retry-After, the key held, the target and every other tenant
// untouched — not even failed over to a backup.
func TestTenantRateLimitStaysWithTheTenant(t *testing.T) {
	backup, err := llmsim.Start(context.Background(), "127.0.0.1:0", llmsim.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer backup.Close()
	e := newEdge(t, edgeOpts{backups: []string{backup.URL()}})
	e.sim.Server.SetFault(llmsim.Fault{Status: 429, RetryAfter: 20, Keys: []string{"sk-ratelimited"}})

	r := e.post("/v1/chat/completions", chat("attacker 0"), bearer("sk-ratelimited")...)
	if r.status != 429 || r.header.Get("Retry-After") != "20" || !strings.Contains(string(r.body), "llmsim: injected fault") {
		t.Fatalf("attacker: %d Retry-After %q %s, want llmsim's own 429 with Retry-After 20", r.status, r.header.Get("Retry-After"), r.body)
	}
	// The key is held: its next requests get 429 without reaching the upstream.
	for i := 1; i < 5; i++ {
		r := e.post("/v1/chat/completions", chat(fmt.Sprintf("attacker %d", i)), bearer("sk-ratelimited")...)
		if ra := r.header.Get("Retry-After"); r.status != 429 || (ra != "20" && ra != "19") {
			t.Fatalf("attacker %d while held: %d Retry-After %q %s", i, r.status, ra, r.body)
		}
		if !strings.Contains(r.header.Get("Cache-Status"), "detail=key_rate_limited") {
			t.Errorf("held answer Cache-Status %q", r.header.Get("Cache-Status"))
		}
	}
	if n := e.upstreamCalls("/v1/chat/completions"); n != 1 {
		t.Errorf("upstream called %d times for the held key, want 1", n)
	}
	// Everyone else is served by the primary.
	for i := range 10 {
		key := fmt.Sprintf("sk-tenant-%d", i%3)
		r := e.post("/v1/chat/completions", chat(fmt.Sprintf("victim %d", i)), bearer(key)...)
		if r.status != 200 || r.header.Get("X-Edgecache-Degraded") != "" {
			t.Fatalf("victim %d (%s): %d %q %s", i, key, r.status, r.header.Get("X-Edgecache-Degraded"), r.body)
		}
	}
	if n := backup.Server.Stats()["/v1/chat/completions"]; n != 0 {
		t.Errorf("backup called %d times: a tenant's 429 is not a reason to fail over", n)
	}
	if st := e.targets[0].Breaker.Status(); st.State != "closed" {
		t.Errorf("primary breaker %+v after one tenant's 429", st)
	}
	if held, _ := e.targets[0].Holds.Len(); held != 1 {
		t.Errorf("%d keys held, want 1", held)
	}
	if len(e.journal.recs) != 0 {
		t.Errorf("journal %v: a tenant's own 429 is not a degradation", e.journal.rungs())
	}
}

// A tenant whose key draws 500s gets honest failures; the target stays
// closed for everyone else, however many requests it sends.
func TestTenantServerErrorsNeverOpenTheTarget(t *testing.T) {
	e := newEdge(t, edgeOpts{})
	e.sim.Server.SetFault(llmsim.Fault{Status: 500, Keys: []string{"sk-attacker"}})
	for i := range 30 {
		r := e.post("/v1/chat/completions", chat(fmt.Sprintf("attack %d", i)), bearer("sk-attacker")...)
		checkHonest(t, fmt.Sprintf("attacker %d", i), r)
		if r.status == 200 {
			t.Fatalf("attacker %d: 200", i)
		}
		v := e.post("/v1/chat/completions", chat(fmt.Sprintf("victim %d", i)), bearer("sk-victim")...)
		if v.status != 200 {
			t.Fatalf("victim %d: %d %q %s", i, v.status, v.header.Get("X-Edgecache-Degraded-Reason"), v.body)
		}
	}
	st := e.targets[0].Breaker.Status()
	if st.State != "closed" || st.Failures < 30 || st.Counted != 0 {
		t.Errorf("breaker %+v: want closed, the attacker's failures seen but not counted", st)
	}
}

// Failures that several tenants see are the target's: the breaker opens.
func TestSeveralTenantsFailuresOpenTheTarget(t *testing.T) {
	e := newEdge(t, edgeOpts{})
	e.sim.Server.SetFault(llmsim.Fault{Status: 500, Keys: []string{"sk-a", "sk-b", "sk-c"}})
	keys := []string{"sk-a", "sk-b", "sk-c"}
	for i := 0; e.targets[0].Breaker.Status().State == "closed"; i++ {
		if i == 30 {
			t.Fatalf("breaker still closed after 30 requests of three failing tenants: %+v", e.targets[0].Breaker.Status())
		}
		checkHonest(t, "storm", e.post("/v1/chat/completions", chat(fmt.Sprintf("storm %d", i)), bearer(keys[i%3])...))
	}
	r := e.post("/v1/chat/completions", chat("after"), bearer("sk-d")...)
	if r.status != 503 || r.header.Get("X-Edgecache-Degraded-Reason") != "breaker_open" {
		t.Errorf("after the trip: %d %q", r.status, r.header.Get("X-Edgecache-Degraded-Reason"))
	}
}

// With the edge's own upstream key every failure is the target's: one
// client's requests are enough to open the breaker, and a 429 holds the
// target, not the caller.
func TestEdgeKeyFailuresAreTheTargets(t *testing.T) {
	e := newEdge(t, edgeOpts{})
	own, err := upstream.New(upstream.Config{URL: e.sim.URL(), APIKey: "sk-edge"})
	if err != nil {
		t.Fatal(err)
	}
	e.targets[0].Client = own
	e.sim.Server.SetFault(llmsim.Fault{Status: 500, Keys: []string{"sk-edge"}})
	for i := 0; e.targets[0].Breaker.Status().State == "closed"; i++ {
		if i == 10 {
			t.Fatalf("breaker still closed after 10 requests failing with the edge's key: %+v", e.targets[0].Breaker.Status())
		}
		checkHonest(t, "storm", e.post("/v1/chat/completions", chat(fmt.Sprintf("own %d", i)), bearer("sk-client")...))
	}
	e.targets[0].Breaker = degrade.NewBreaker("primary", degrade.BreakerConfig{})
	e.sim.Server.SetFault(llmsim.Fault{Status: 429, RetryAfter: 9, Keys: []string{"sk-edge"}})
	r := e.post("/v1/chat/completions", chat("own 429"), bearer("sk-client")...)
	if r.status != 503 || r.header.Get("X-Edgecache-Degraded") != "busy" || r.header.Get("Retry-After") != "9" {
		t.Errorf("429 with the edge's key: %d %q Retry-After %q, want the busy answer", r.status, r.header.Get("X-Edgecache-Degraded"), r.header.Get("Retry-After"))
	}
	if st := e.targets[0].Breaker.Status(); st.State != "open" || st.LastReason != "upstream_429" {
		t.Errorf("breaker %+v: want held for the edge key's 429", st)
	}
	if held, _ := e.targets[0].Holds.Len(); held != 0 {
		t.Errorf("%d caller keys held for the edge key's 429", held)
	}
}
