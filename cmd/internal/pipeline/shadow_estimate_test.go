package pipeline

import (
	"math"
	"testing"
)

// TestWilson checks the interval against textbook values (5 of 10:
// 0.2366–0.7634; none of 189 is the first n whose upper bound is under 2 %).
func TestWilson(t *testing.T) {
	for _, c := range []struct {
		k, n   int
		lo, hi float64
	}{
		{0, 0, 0, 1},
		{0, 10, 0, 0.2775},
		{5, 10, 0.2366, 0.7634},
		{1, 100, 0.0018, 0.0545},
		{0, 189, 0, 0.0199},
		{2, 50, 0.0110, 0.1346},
		{10, 10, 0.7225, 1},
	} {
		lo, hi := wilson(c.k, c.n)
		if math.Abs(lo-c.lo) > 5e-5 || math.Abs(hi-c.hi) > 5e-5 {
			t.Errorf("wilson(%d, %d) = [%.4f, %.4f], want [%.4f, %.4f]", c.k, c.n, lo, hi, c.lo, c.hi)
		}
	}
}

// TestIntervalUnsure: unsure verdicts widen the interval on both sides of
// the estimate, which sets them aside.
func TestIntervalUnsure(t *testing.T) {
	est, lo, hi := shadowCounts{judged: 100, agreed: 80, disagreed: 10, unsure: 10}.interval()
	wlo, _ := wilson(10, 100)
	_, whi := wilson(20, 100)
	if math.Abs(est-10.0/90) > 1e-9 || lo != wlo || hi != whi || !(lo <= est && est <= hi) {
		t.Errorf("interval = %.4f [%.4f, %.4f], want %.4f [%.4f, %.4f]", est, lo, hi, 10.0/90, wlo, whi)
	}
}

// TestCountsAt: the estimate at a threshold uses the judged hits that are
// hits there and were sampled at that cutoff or a lower one; the band is
// every judgement one relaxation step under it.
func TestCountsAt(t *testing.T) {
	var r shadowRoute
	for _, j := range []judged{
		{score: 0.90, cutoff: 0.50, verdict: Agree},
		{score: 0.55, cutoff: 0.50, verdict: Disagree},             // not a hit at 0.6
		{score: 0.70, cutoff: 0.60, verdict: Disagree},             // sampled at 0.6
		{score: 0.95, cutoff: 0.70, verdict: Agree},                // sampled at a higher cutoff: left out at 0.6
		{score: 0.595, cutoff: 0.60, verdict: Unsure, near: true},  // in the band
		{score: 0.595, cutoff: 0.50, verdict: Agree},               // a hit then, in the band now
		{score: 0.50, cutoff: 0.55, verdict: Disagree, near: true}, // under the band
	} {
		r.record(j)
	}
	at, band := r.countsAt(0.6)
	if want := (shadowCounts{judged: 2, agreed: 1, disagreed: 1}); at != want {
		t.Errorf("at 0.6: %+v, want %+v", at, want)
	}
	if want := (shadowCounts{judged: 2, agreed: 1, unsure: 1}); band != want {
		t.Errorf("band under 0.6: %+v, want %+v", band, want)
	}
	if r.totals[0][Agree] != 3 || r.totals[1][Disagree] != 1 {
		t.Errorf("totals %v", r.totals)
	}
	// The ring keeps the last shadowWindow judgements only.
	for range shadowWindow {
		r.record(judged{score: 0.9, cutoff: 0.5, verdict: Agree})
	}
	if at, _ := r.countsAt(0.6); at.judged != shadowWindow || at.disagreed != 0 {
		t.Errorf("after a full window: %+v", at)
	}
}

func TestDecideSteer(t *testing.T) {
	counts := func(agreed, disagreed, unsure int) shadowCounts {
		return shadowCounts{judged: agreed + disagreed + unsure, agreed: agreed, disagreed: disagreed, unsure: unsure}
	}
	base := steerInput{threshold: 0.5, configured: 0.3, floor: 0.2, budget: 0.05}
	for _, c := range []struct {
		name string
		edit func(*steerInput)
		to   float32 // 0: stay
	}{
		{"over budget rises a step", func(in *steerInput) { in.at = counts(40, 10, 0) }, 0.52},
		{"unsure counts against", func(in *steerInput) { in.at = counts(40, 0, 10) }, 0.52},
		{"no budget, no steering", func(in *steerInput) { in.at, in.budget = counts(40, 10, 0), 0 }, 0},
		{"too few judged to rise", func(in *steerInput) { in.at = counts(5, 4, 0) }, 0},
		{"upper over budget but nothing against: stay", func(in *steerInput) { in.at = counts(20, 0, 0) }, 0},
		{"capped", func(in *steerInput) { in.threshold, in.at = 0.98, counts(40, 10, 0) }, 0.99},
		{"at the cap: stay", func(in *steerInput) { in.threshold, in.at = 0.99, counts(40, 10, 0) }, 0},
		{"comfortably under relaxes a step", func(in *steerInput) { in.at, in.band = counts(400, 0, 0), counts(20, 0, 0) }, 0.49},
		{"under but not comfortably: dead band", func(in *steerInput) { in.at, in.band = counts(100, 0, 0), counts(20, 0, 0) }, 0},
		{"band too thin to relax", func(in *steerInput) { in.at, in.band = counts(400, 0, 0), counts(5, 0, 0) }, 0},
		{"band over budget: stay", func(in *steerInput) { in.at, in.band = counts(400, 0, 0), counts(15, 5, 0) }, 0},
		{"never under the configured threshold", func(in *steerInput) {
			in.threshold, in.at, in.band = 0.305, counts(400, 0, 0), counts(20, 0, 0)
		}, 0.3},
		{"never under the floor", func(in *steerInput) {
			in.threshold, in.configured, in.floor, in.at, in.band = 0.305, 0.1, 0.3, counts(400, 0, 0), counts(20, 0, 0)
		}, 0.3},
		{"at the configured threshold: stay", func(in *steerInput) {
			in.threshold, in.at, in.band = 0.3, counts(400, 0, 0), counts(20, 0, 0)
		}, 0},
	} {
		in := base
		c.edit(&in)
		to, why, ok := decideSteer(in)
		if ok != (c.to != 0) || (ok && math.Abs(float64(to-c.to)) > 1e-6) {
			t.Errorf("%s: decideSteer = %v %v (%s), want %v", c.name, to, ok, why, c.to)
		}
		if ok && why == "" {
			t.Errorf("%s: no reason given", c.name)
		}
	}
}

// TestShadowBudget: shadow calls stay within the share of all upstream
// calls at every point, a refund gives the call back, and credit does not
// pile up beyond maxShadowCredit while nothing is sampled.
func TestShadowBudget(t *testing.T) {
	var b shadowBudget
	if b.take(0.2) {
		t.Fatal("a shadow call before any upstream call")
	}
	taken := 0
	for i := 0; i < 1000; i++ {
		b.client.Add(1)
		for b.take(0.2) {
			taken++
			if share := float64(taken) / float64(taken+i+1); share > 0.2+1e-9 {
				t.Fatalf("after %d client calls, %d shadow calls: share %.3f over 0.2", i+1, taken, share)
			}
		}
	}
	if taken != 250 { // 0.2 of 1,250
		t.Errorf("%d shadow calls for 1,000 client calls at 0.2, want 250", taken)
	}
	b.refund()
	if !b.take(0.2) || b.take(0.2) {
		t.Error("a refunded call is not available exactly once")
	}
	b.client.Add(100_000)
	n := 0
	for b.take(0.5) {
		n++
	}
	if n != maxShadowCredit {
		t.Errorf("after a long time without sampling, %d calls ahead, want %d", n, maxShadowCredit)
	}
	if b.take(1) || b.take(0) {
		t.Error("a share of 0 or 1 allowed a call")
	}
}
