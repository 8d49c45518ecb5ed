package pipeline

// Estimates and steering: what the shadow judgements say about a route's
// semantic hits, and how the route's threshold follows its error budget.
//
// Each route keeps its last shadowWindow judgements, each with the
// verifier score of the candidate judged and the threshold the request was
// held to (its cutoff). The false-hit rate at a threshold t is estimated
// from the judged hits that would be hits at t and were sampled from a
// population that contains every hit at t: score ≥ t and cutoff ≤ t. A
// uniform sample of the hits at a lower cutoff, restricted to score ≥ t,
// is a uniform sample of the hits at t; hits sampled under a higher cutoff
// are not (they miss the band between t and their cutoff), so they are
// left out. Raising the threshold thus needs no new traffic to re-estimate:
// the samples above the new threshold already say how it does.
//
// The interval is Wilson's (95 %). Unsure verdicts widen it rather than
// being guessed at: the lower bound counts them as right, the upper bound
// as wrong, and the estimate sets them aside.
//
// Steering (decideSteer) uses the upper bound, so that a route is held
// under its budget with 95 % confidence rather than on average; it moves
// only on evidence: a raise needs at least one judgement against the hits,
// a relaxation needs the route comfortably under budget and the band just
// under the threshold (judged near-misses and older hits) under budget too.

import (
	"fmt"
	"math"
	"sync"
	"sync/atomic"
)

// shadowWindow is how many judgements a route keeps.
const shadowWindow = 4096

// Steering steps and evidence (see decideSteer).
const (
	raiseStep        = 0.02 // a threshold over budget rises by this much at a time
	relaxStep        = 0.01 // one comfortably under budget relaxes by this much at a time
	maxSteered       = 0.99 // steering never raises a threshold above this
	minJudgedToRaise = 10   // judged hits at the threshold before it may rise
	minBandToRelax   = 10   // judgements just under the threshold before it may fall
	steerEvery       = 5    // new judgements between two changes of one route
	// nearMissBand is how far under the threshold a candidate counts as a
	// near-miss: wider than relaxStep, so that the band a relaxation would
	// open is sampled.
	nearMissBand = 0.05
)

// wilsonZ is the normal quantile of a two-sided 95 % interval.
const wilsonZ = 1.959964

// wilson is the Wilson score interval of k successes in n trials.
func wilson(k, n int) (lo, hi float64) {
	if n <= 0 {
		return 0, 1
	}
	fn := float64(n)
	p := float64(k) / fn
	z2 := wilsonZ * wilsonZ
	denom := 1 + z2/fn
	center := (p + z2/(2*fn)) / denom
	half := wilsonZ * math.Sqrt(p*(1-p)/fn+z2/(4*fn*fn)) / denom
	return max(0, center-half), min(1, center+half)
}

// shadowCounts are verdicts of judged hits (or of a band of candidates).
type shadowCounts struct {
	judged, agreed, disagreed, unsure int
}

func (c *shadowCounts) add(v Verdict) {
	c.judged++
	switch v {
	case Agree:
		c.agreed++
	case Disagree:
		c.disagreed++
	default:
		c.unsure++
	}
}

// interval is the estimated false-hit rate and its 95 % interval (see the
// file comment for unsure verdicts). With nothing judged it is 0 in [0, 1].
func (c shadowCounts) interval() (estimate, lower, upper float64) {
	if c.judged == 0 {
		return 0, 0, 1
	}
	lower, _ = wilson(c.disagreed, c.judged)
	_, upper = wilson(c.disagreed+c.unsure, c.judged)
	if d := c.agreed + c.disagreed; d > 0 {
		estimate = float64(c.disagreed) / float64(d)
	}
	return estimate, lower, upper
}

// judged is one judgement as a route keeps it.
type judged struct {
	score   float32 // the verifier's score of the candidate judged
	cutoff  float32 // the threshold its request was held to
	verdict Verdict
	near    bool // a near-miss (not served), not a hit
}

// shadowRoute is the shadow state of one route.
type shadowRoute struct {
	mu      sync.Mutex
	ring    [shadowWindow]judged
	n       int // judgements recorded (the ring holds the last shadowWindow)
	changed int // n at the last steering change

	budget shadowBudget
	totals [2][numVerdicts]int64 // cumulative verdicts: [0] hits, [1] near-misses
}

// record adds a judgement.
func (r *shadowRoute) record(j judged) {
	r.mu.Lock()
	r.ring[r.n%shadowWindow] = j
	r.n++
	k := 0
	if j.near {
		k = 1
	}
	r.totals[k][j.verdict]++
	r.mu.Unlock()
}

// countsAt returns the judged hits that apply at threshold t, and every
// judgement whose score lies in [t − relaxStep, t): what a relaxation by one
// step would start serving.
func (r *shadowRoute) countsAt(t float32) (at, band shadowCounts) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range min(r.n, shadowWindow) {
		j := r.ring[i]
		switch {
		case !j.near && j.score >= t && j.cutoff <= t+1e-6:
			at.add(j.verdict)
		case j.score < t && j.score >= t-relaxStep:
			band.add(j.verdict)
		}
	}
	return at, band
}

// maxShadowCredit bounds the shadow calls a route may make ahead, after a
// time without any: its budget is a share of the upstream calls, not a
// reserve that builds up while nothing is sampled.
const maxShadowCredit = 64

// shadowBudget holds a route's shadow calls to a share of all its upstream
// calls: every call made for a client earns share/(1 − share) of a shadow
// call, so that shadow ≤ share × (client + shadow) at all times.
type shadowBudget struct {
	client atomic.Int64 // upstream attempts made for clients

	mu     sync.Mutex
	seen   int64 // client calls already turned into credit
	credit float64
	calls  int64 // shadow calls made
}

// take spends one shadow call of the budget at share, or reports false.
func (b *shadowBudget) take(share float64) bool {
	if share <= 0 || share >= 1 {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.client.Load()
	b.credit = min(b.credit+float64(c-b.seen)*share/(1-share), maxShadowCredit)
	b.seen = c
	if b.credit < 1 {
		return false
	}
	b.credit--
	b.calls++
	return true
}

// refund gives back a call taken but never made.
func (b *shadowBudget) refund() {
	b.mu.Lock()
	b.credit++
	b.calls--
	b.mu.Unlock()
}

// used returns the shadow calls made and the client calls counted.
func (b *shadowBudget) used() (shadow, client int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.calls, b.client.Load()
}

// steerInput is what a steering decision looks at.
type steerInput struct {
	threshold  float32 // in force
	configured float32 // the calibrated default relaxation returns to
	floor      float32 // never relaxed below
	budget     float64 // max_false_hit_rate; 0: no steering
	at, band   shadowCounts
}

// decideSteer returns the threshold to move to and why, or false to stay.
// Over budget (the upper bound above it) with at least one judgement
// against the hits, the threshold rises one step; comfortably under (the
// upper bound under half the budget) with the band a step lower within
// budget too, it relaxes one step toward the configured threshold, never
// under it or the floor. Between the two it stays: that is the dead band
// that keeps a route from oscillating.
func decideSteer(in steerInput) (float32, string, bool) {
	if in.budget <= 0 {
		return 0, "", false
	}
	_, _, upper := in.at.interval()
	against := in.at.disagreed + in.at.unsure
	if upper > in.budget && against > 0 && in.at.judged >= minJudgedToRaise && in.threshold < maxSteered {
		to := min(in.threshold+raiseStep, maxSteered)
		return to, fmt.Sprintf("false-hit rate upper bound %.4f over budget %.4f (%d of %d judged hits not agreed)",
			upper, in.budget, against, in.at.judged), true
	}
	low := max(in.configured, in.floor)
	if upper > in.budget/2 || in.threshold <= low || in.band.judged < minBandToRelax {
		return 0, "", false
	}
	// The band a step lower: its own share against (unsure counted as
	// wrong) must be within budget, and the route with it added still under
	// budget at 95 %. (The band's own upper bound would need some 70
	// judgements in a 0.01-wide band to bound a 5 % budget: a route would
	// never relax.)
	against = in.band.disagreed + in.band.unsure
	with := shadowCounts{judged: in.at.judged + in.band.judged, agreed: in.at.agreed + in.band.agreed,
		disagreed: in.at.disagreed + in.band.disagreed, unsure: in.at.unsure + in.band.unsure}
	_, _, withUpper := with.interval()
	if float64(against) > in.budget*float64(in.band.judged) || withUpper > in.budget {
		return 0, "", false
	}
	to := max(in.threshold-relaxStep, low)
	return to, fmt.Sprintf("false-hit rate upper bound %.4f comfortably under budget %.4f over %d judged hits; %d judged just under the threshold",
		upper, in.budget, in.at.judged, in.band.judged), true
}
