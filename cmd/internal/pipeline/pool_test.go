package pipeline

import (
	"testing"
	"time"
)

// TestPoolRoundRobinWeights: smooth weighted round robin gives each target
// its exact share, interleaved; a target ramping up after recovery gets a
// share that grows with its slow start.
func TestPoolRoundRobinWeights(t *testing.T) {
	a, b, c := &Target{Name: "a", Weight: 1}, &Target{Name: "b", Weight: 2}, &Target{Name: "c", Weight: 3}
	pl := &Pool{Name: "p", Balance: BalanceRoundRobin, Targets: []*Target{a, b, c}}
	now := time.Now()
	counts := map[*Target]int{}
	run := 0
	var last *Target
	for range 600 {
		first := pl.order([]*Target{a, b, c}, now)[0]
		counts[first]++
		if first == last {
			run++
		}
		last = first
	}
	if counts[a] != 100 || counts[b] != 200 || counts[c] != 300 {
		t.Errorf("shares %d/%d/%d, want 100/200/300", counts[a], counts[b], counts[c])
	}
	if run > 100 { // smooth: c (half the weight) runs at most twice in a row
		t.Errorf("%d repeats in a row: not interleaved", run)
	}
	// Slow start: c came back a quarter of its slow start ago.
	c.SlowStart = 4 * time.Second
	c.st.upSince.Store(now.Add(-time.Second).UnixNano())
	if w := c.weight(now); w < 0.7 || w > 0.8 {
		t.Errorf("weight a quarter into slow start: %v, want 0.75", w)
	}
	if w := c.weight(now.Add(3 * time.Second)); w != 3 {
		t.Errorf("weight after slow start: %v, want 3", w)
	}
}

// TestPeakEWMA: a slower sample counts at once, faster ones pull the
// estimate down gradually, and an idle estimate decays.
func TestPeakEWMA(t *testing.T) {
	var s targetState
	now := time.Now()
	s.observe(now, 10*time.Millisecond)
	s.observe(now.Add(time.Millisecond), 500*time.Millisecond)
	if l := s.latency(now.Add(time.Millisecond)); l < 499*time.Millisecond {
		t.Errorf("after a slow sample: %v, want 500ms at once", l)
	}
	s.observe(now.Add(100*time.Millisecond), 10*time.Millisecond)
	if l := s.latency(now.Add(100 * time.Millisecond)); l < 400*time.Millisecond {
		t.Errorf("one fast sample 0.1s later: %v, want most of the peak kept", l)
	}
	if l := s.latency(now.Add(time.Minute)); l > 5*time.Millisecond {
		t.Errorf("idle for a minute: %v, want decayed", l)
	}
}

// TestPoolLeastLatencyOrder: the slow target comes last, an unhealthy one
// is not picked, and an unmeasured one is assumed average.
func TestPoolLeastLatencyOrder(t *testing.T) {
	now := time.Now()
	fast, slow, fresh := &Target{Name: "fast"}, &Target{Name: "slow"}, &Target{Name: "fresh"}
	fast.st.observe(now, 20*time.Millisecond)
	slow.st.observe(now, 520*time.Millisecond)
	pl := &Pool{Name: "p", Balance: BalanceLeastLatency, Targets: []*Target{fast, slow, fresh}}
	for range 20 {
		got := pl.order([]*Target{slow, fresh, fast}, now)
		if got[0] != fast || got[2] != slow {
			t.Fatalf("order %s %s %s, want fast first, slow last", got[0].Name, got[1].Name, got[2].Name)
		}
	}
	fast.st.inflight.Store(100) // busy: the unmeasured target (assumed 270ms) wins
	if got := pl.order([]*Target{slow, fresh, fast}, now); got[0] != fresh {
		t.Errorf("first %s with fast busy, want fresh", got[0].Name)
	}
	fast.st.down.Store(true)
	if fast.Healthy() {
		t.Error("a target taken out by its health check reports healthy")
	}
}

// TestPickableCapAndDrain: pick's passes offer a target below its cap
// first, a target at its cap only in the last pass (where any target left
// is offered, as one may have freed a slot meanwhile), and a drained,
// unhealthy or limiter-refused one never.
func TestPickableCapAndDrain(t *testing.T) {
	full := &Target{Name: "full", MaxConcurrency: 2}
	full.st.inflight.Store(2)
	free := &Target{Name: "free", MaxConcurrency: 2}
	free.st.inflight.Store(1)
	failedFree := &Target{Name: "failed"}
	drained := &Target{Name: "drained"}
	drained.SetOverride(Override{Drain: true})
	down := &Target{Name: "down"}
	down.st.down.Store(true)
	refused := &Target{Name: "refused"}
	failed := map[*Target]bool{failedFree: true}
	refusedBy := map[*Target]bool{refused: true}
	for _, tc := range []struct {
		t    *Target
		want [3]bool // pickFresh, pickFailed, pickFull
	}{
		{full, [3]bool{false, false, true}},
		{free, [3]bool{true, false, true}},
		{failedFree, [3]bool{false, true, true}},
		{drained, [3]bool{}},
		{down, [3]bool{}},
		{refused, [3]bool{}},
	} {
		for pass := pickFresh; pass <= pickFull; pass++ {
			if got := pickable(tc.t, pass, failed, refusedBy); got != tc.want[pass] {
				t.Errorf("%s in pass %d: %v, want %v", tc.t.Name, pass, got, tc.want[pass])
			}
		}
	}
	// An operator's weight replaces the configured one; zero restores it.
	w := &Target{Name: "w", Weight: 2}
	w.SetOverride(Override{Weight: 5})
	if got := w.weight(time.Now()); got != 5 {
		t.Errorf("run-time weight: %v, want 5", got)
	}
	w.SetOverride(Override{})
	if got := w.weight(time.Now()); got != 2 || w.Drained() {
		t.Errorf("after reset: weight %v, drained %v", got, w.Drained())
	}
}
