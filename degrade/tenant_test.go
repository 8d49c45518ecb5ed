package degrade

import (
	"fmt"
	"testing"
	"time"
)

// feed records outcomes at one-second steps from at: "+" a success, "x" a
// target-wide failure, any other letter a failure of that tenant. It returns
// the time after the last and whether the breaker refused a call on the way.
func feed(b *Breaker, at time.Time, outcomes string) (time.Time, bool) {
	for _, o := range outcomes {
		if b.allow(at) != nil {
			return at, true
		}
		switch o {
		case '+':
			b.recordFor(at, "", true, 0, "")
		case 'x':
			b.recordFor(at, "", false, 0, "upstream_500")
		default:
			b.recordFor(at, string(o), false, 0, "upstream_500")
		}
		at = at.Add(100 * time.Millisecond)
	}
	return at, b.allow(at) != nil
}

func TestBreakerTenantAttribution(t *testing.T) {
	tests := []struct {
		name     string
		outcomes string
		trips    bool
	}{
		{"one tenant in a row", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false},
		{"one tenant among successes", "a+a+a+a+a+a+a+a+a+a+a+a+a+a+a+", false},
		{"one tenant and a stray failure of another", "aaaaaaaaaaaaaaaaaaaab+++++++++", false},
		{"two tenants in a row", "abababababab", true},
		{"three tenants, the loudest left out: 4 in the run", "abcabc", false},
		{"three tenants, the loudest left out: 5 in the run", "abcabcbc", true},
		{"loudest left out, others meet the run", "aaaaaaaaaabcbcb", true},
		{"loudest left out, others do not meet the run", "aaaaaaaaaabcbc", false},
		{"target-wide failures count in full", "xxxxx", true},
		{"target-wide plus one tenant", "aaaaaaaaaaxxxx", false},
		{"target-wide plus one tenant meet the run", "aaaaaaaaaaxxxxx", true},
		{"ratio: two tenants", "ab+ab+ab+ab+ab+ab", true},
		{"ratio: one tenant", "a+a+a+a+a+a+a+a+a+a+a+a+a+a+a+a+a+a+a+a+", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := NewBreaker("a", noJitter())
			_, open := feed(b, t0, tt.outcomes)
			if open != tt.trips {
				t.Errorf("%q: open %v, want %v (%+v)", tt.outcomes, open, tt.trips, b.Status())
			}
		})
	}
}

// A flood of one tenant's failures, with the other tenants served, never
// opens the target, whatever its length.
func TestBreakerOneTenantFloodNeverTrips(t *testing.T) {
	clock := &stepClock{t: t0}
	cfg := noJitter()
	cfg.Clock = clock
	b := NewBreaker("a", cfg)
	at := t0
	for i := range 10_000 {
		tenant := "attacker"
		ok := false
		if i%10 == 0 {
			tenant, ok = fmt.Sprintf("victim-%d", i%7), true
		}
		if err := b.allow(at); err != nil {
			t.Fatalf("after %d calls: %v", i, err)
		}
		b.recordFor(at, tenant, ok, 20*time.Second, "upstream_500")
		at = at.Add(10 * time.Millisecond)
	}
	clock.t = at
	if s := b.Status(); s.State != "closed" || s.Counted != 0 || s.Failures == 0 {
		t.Errorf("status %+v, want closed with the attacker's failures seen but not counted", s)
	}
}

func TestBreakerHalfOpenTenantProbes(t *testing.T) {
	open := func() (*Breaker, time.Time) {
		b := NewBreaker("a", noJitter())
		feed(b, t0, "xxxxx")
		return b, t0.Add(31 * time.Second)
	}
	// One tenant's failed probes give the slot back; others close it.
	b, at := open()
	for i := range 3 {
		if err := b.allow(at); err != nil {
			t.Fatalf("probe %d refused: %v", i, err)
		}
		b.recordFor(at, "attacker", false, 0, "upstream_500")
	}
	for i := range 2 {
		if err := b.allow(at); err != nil {
			t.Fatalf("good probe %d refused: %v", i, err)
		}
		b.recordFor(at, "victim", true, 0, "")
	}
	if s := b.Status(); s.State != "closed" {
		t.Errorf("after one tenant's failed probes and two good ones: %s", s.State)
	}
	// Two tenants' failed probes reopen it.
	b, at = open()
	b.allow(at)
	b.recordFor(at, "a", false, 0, "upstream_500")
	b.allow(at)
	b.recordFor(at, "b", false, 0, "upstream_500")
	if b.allow(at) == nil {
		t.Error("failed probes of two tenants did not reopen the breaker")
	}
	// A target-wide failed probe reopens it at once.
	b, at = open()
	b.allow(at)
	b.recordFor(at, "", false, 0, "unreachable")
	if b.allow(at) == nil {
		t.Error("a target-wide failed probe did not reopen the breaker")
	}
}

func TestBreakerObserve(t *testing.T) {
	b := NewBreaker("primary", noJitter())
	var got []string
	b.Observe(func(tr Transition) { got = append(got, fmt.Sprintf("%s→%s %s", tr.From, tr.To, tr.Reason)) })
	feed(b, t0, "xxxxx")
	at := t0.Add(31 * time.Second)
	b.allow(at)
	b.record(at, true, 0, "")
	b.allow(at)
	b.record(at, true, 0, "")
	b.hold(at, 7*time.Second, "upstream_429")
	want := []string{"closed→open upstream_500", "open→half-open upstream_500", "half-open→closed upstream_500", "closed→open upstream_429"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("transitions %q, want %q", got, want)
	}
}

func TestHolds(t *testing.T) {
	var h Holds
	if h.Remaining("k") != 0 || h.Any() {
		t.Fatal("zero Holds holds something")
	}
	h.hold(t0, "k", 20*time.Second)
	h.hold(t0, "k", 5*time.Second) // never shortens
	if d := h.remaining(t0.Add(10*time.Second), "k"); d != 10*time.Second {
		t.Errorf("remaining %v, want 10s", d)
	}
	if d := h.remaining(t0.Add(10*time.Second), "other"); d != 0 {
		t.Errorf("another caller held for %v", d)
	}
	if d := h.remaining(t0.Add(20*time.Second), "k"); d != 0 || h.Any() {
		t.Errorf("expired hold: %v, any %v", d, h.Any())
	}
	// Bounded: full of live holds, a new one is dropped; expired ones make room.
	b := Holds{Max: 2}
	b.hold(t0, "a", time.Second)
	b.hold(t0, "b", time.Minute)
	b.hold(t0, "c", time.Minute)
	if b.remaining(t0, "c") != 0 {
		t.Error("a hold beyond Max was kept")
	}
	b.hold(t0.Add(2*time.Second), "c", time.Minute)
	if b.remaining(t0.Add(2*time.Second), "c") == 0 || b.remaining(t0.Add(2*time.Second), "b") == 0 {
		t.Error("an expired hold did not make room")
	}
	if _, dropped := b.Len(); dropped != 1 {
		t.Errorf("dropped %d, want 1", dropped)
	}
}

type stepClock struct{ t time.Time }

func (c *stepClock) Now() time.Time { return c.t }
