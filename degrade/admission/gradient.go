package admission

import (
	"math"
	"slices"
	"time"
)

// gradient is Netflix's Gradient2 limit, fed one window at a time with the
// window's p90 time to first token (short) instead of one RTT per request:
// TTFT measures queueing in the model server, total latency mostly measures
// answer length.
//
//	long      ← exponential average of short (warm-up: plain average)
//	gradient  = clamp(tolerance × long / short, 0.5, 1)
//	limit     ← limit × (1 − smoothing) + (limit × gradient + queueSize) × smoothing
//
// The limit grows by about smoothing × queueSize per window while TTFT stays
// within tolerance of its long-term value and the limit is actually used
// (peak in-flight ≥ limit / 2), and shrinks when TTFT rises. A window with
// an overload failure (timeout, 429/503 from the upstream) cuts the limit by
// dropBackoff instead, since such failures carry no TTFT.
//
// Before that regime comes slow start (TCP's, on first tokens instead of
// acknowledgements): while the limit is in use, every TTFT sample within
// tolerance × base + slack makes room for more calls, so that the limit
// about doubles per TTFT — a limit of 100 reaches 2,000 in four or five
// TTFTs, where the gradient would take minutes. A sample taken as a call
// ends adds one, like TCP's acknowledgement: the call's own slot is free
// again, so each finished call starts two. A sample taken at a stream's
// first token (Concurrency.FirstToken) adds two, since the stream keeps its
// slot: one sample adding one would let only as many calls start per TTFT
// as started in the one before, a linear growth.
//
// Samples are judged by groups of slowStartGroup consecutive ones, by the
// group's median, which the odd slow call does not move (Linux's HyStart
// likewise looks at a round's lowest RTTs, not its highest). The no-load
// estimate (base) is the lowest group median. Slow start ends for good at
// the first sign of congestion: group medians above tolerance × base +
// slack for slowStartPersist, every group in between too, while the limit
// is in use (the limit then falls to half the calls in flight, as TCP's
// window falls to half the flight size — RFC 5681 — and the gradient takes
// over), or an overload failure (the window cuts the limit by
// dropBackoff). Ten consecutive samples may arrive within milliseconds of
// each other under a burst, so one stall of the proxy's or the upstream's
// CPU makes a whole group slow; a second of slow groups is not a stall. It also ends when the limit reaches max. A slow
// group while calls in flight and waiting are under a quarter of the limit
// ends nothing: a few calls cannot have congested the upstream, and halving
// them would shed light traffic for an upstream that is merely slower. (A
// quarter, not the half that growth asks for: slow start stops growing at
// twice the demand, so a steady load sits right at the half.)
type gradient struct {
	limit, min, max      float64
	smoothing, tolerance float64
	dropBackoff          float64
	longFactor           float64 // 2 / (LongWindow + 1)
	long                 float64 // seconds
	warm                 int     // windows averaged into long during warm-up

	slow  bool                    // in slow start
	slack float64                 // seconds added to tolerance × base before slow start sees congestion
	base  float64                 // no-load TTFT estimate, seconds; 0 until the first group
	group [slowStartGroup]float64 // the current group of samples, seconds
	n     int                     // samples in group
	// congested is when the current run of slow groups began (Unix ns; 0:
	// the last group was not slow).
	congested int64

	restart bool // slow start may begin again (see update)
	healthy int  // consecutive windows that argue for a restart
}

const (
	gradientQueueSize = 4  // Gradient2's default headroom
	gradientWarmup    = 10 // windows averaged before the exponential average

	// slowStartGroup is the number of consecutive TTFT samples slow start
	// judges together.
	slowStartGroup = 10
	// slowStartPersist is how long groups must stay slow to end slow
	// start: the gradient's window.
	slowStartPersist = int64(time.Second)
	// slowStartRestart is how many windows in a row must be healthy and
	// full before slow start begins again.
	slowStartRestart = 3
)

// sample feeds slow start one TTFT (seconds) and grows the limit by grow
// when it is within the threshold and the limit is in use (calls in
// flight and queued ≥ limit / 2), so that an idle limit does not grow. It
// does nothing outside slow start, and reports whether the sample (taken at
// now, Unix ns) ended it.
func (g *gradient) sample(now int64, ttft, grow float64, inflight, queued int) (ended bool) {
	if !g.slow || ttft <= 0 {
		return false
	}
	load := float64(inflight + queued)
	used := load >= g.limit/2
	threshold := g.tolerance*g.base + g.slack
	if used && (g.base == 0 || ttft <= threshold) {
		g.limit = min(g.max, g.limit+grow)
		if g.limit == g.max { // nothing left to find: queues mean full now
			g.slow = false
			return true
		}
	}
	g.group[g.n] = ttft
	g.n++
	if g.n < slowStartGroup {
		return false
	}
	g.n = 0
	s := g.group[:]
	slices.Sort(s)
	med := s[slowStartGroup/2]
	if g.base > 0 && med > threshold {
		if load < g.limit/4 {
			g.congested = 0
			return false
		}
		if g.congested == 0 {
			g.congested = now
		}
		if now-g.congested < slowStartPersist {
			return false
		}
		g.slow = false
		g.limit = max(g.min, min(g.limit, float64(inflight))/2)
		return true
	}
	g.congested = 0
	if g.base == 0 || med < g.base {
		g.base = med
	}
	return false
}

// update folds one window: short is the window's TTFT percentile in seconds
// (≤ 0 when the window had no sample), peak its highest in-flight count,
// dropped whether it saw an overload failure. It reports the new limit.
// In slow start it only learns long: sample moves the limit.
func (g *gradient) update(short float64, peak int, dropped bool) float64 {
	if dropped {
		g.slow, g.healthy = false, 0
		g.limit = max(g.min, g.limit*g.dropBackoff)
		return g.limit
	}
	if short <= 0 {
		return g.limit
	}
	if g.restartSlowStart(short, peak) {
		return g.limit
	}
	if g.warm < gradientWarmup {
		g.long = (g.long*float64(g.warm) + short) / float64(g.warm+1)
		g.warm++
	} else {
		g.long += (short - g.long) * g.longFactor
	}
	// After a long overload the average lags far above the present: pull it
	// down faster (Gradient2 does the same).
	if g.long/short > 2 {
		g.long *= 0.95
	}
	if g.slow {
		return g.limit
	}
	if float64(peak) < g.limit/2 { // app-limited: the limit was not tested
		return g.limit
	}
	grad := max(0.5, min(1, g.tolerance*g.long/short))
	next := g.limit*grad + gradientQueueSize
	next = g.limit*(1-g.smoothing) + next*g.smoothing
	g.limit = max(g.min, min(g.max, next))
	return g.limit
}

// restartSlowStart begins slow start again, and reports so, after
// slowStartRestart windows in a row whose TTFT (short, seconds) was as
// healthy as slow start asks (within tolerance × base + slack) while the
// limit was full (peak in flight at the limit): the upstream answers as
// fast as when nothing loaded it, and callers want more than the limit
// lets through. That is the state after an incident: slow start ended at
// congestion (or a failure cut the limit), the upstream has recovered, and
// the gradient alone would take minutes to give the capacity back (it
// grows by about smoothing × queueSize per window) while callers are told
// "busy". Slow start finds the capacity in a few TTFTs and ends as before,
// at the first persisting sign of congestion, halving the limit. Against
// an upstream that is full at some limit X the result is TCP Reno's
// sawtooth: between X / 2 and X, each restart after slowStartRestart
// healthy windows. It never happens with NoSlowStart, a fixed limit, or
// before slow start measured the no-load TTFT (base).
func (g *gradient) restartSlowStart(short float64, peak int) bool {
	if g.slow || !g.restart || g.base <= 0 || g.limit >= g.max {
		return false
	}
	if float64(peak) < g.limit-1 || short > g.tolerance*g.base+g.slack {
		g.healthy = 0
		return false
	}
	if g.healthy++; g.healthy < slowStartRestart {
		return false
	}
	g.slow, g.healthy, g.congested, g.n = true, 0, 0, 0
	return true
}

// maxWindowSamples bounds a window's memory; a full window closes early.
const maxWindowSamples = 512

// window collects one sampling window.
type window struct {
	start   int64 // Unix ns
	samples []time.Duration
	drops   int
	peak    int // highest in-flight count seen
}

// percentile returns the p-th percentile (0 < p ≤ 1) of s, sorting s.
func percentile(s []time.Duration, p float64) time.Duration {
	if len(s) == 0 {
		return 0
	}
	slices.Sort(s)
	i := int(math.Ceil(p*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

// drainRate estimates how many slots free up per second: an average over
// one-second buckets, half weight to the newest.
type drainRate struct {
	start int64
	n     int
	rate  float64
}

func (d *drainRate) add(now int64) {
	if d.start == 0 { // the first event opens the first bucket
		d.start = now
		return
	}
	d.n++
	if el := now - d.start; el >= int64(time.Second) {
		r := float64(d.n) / (float64(el) / 1e9)
		if d.rate == 0 {
			d.rate = r
		} else {
			d.rate = (d.rate + r) / 2
		}
		d.start, d.n = now, 0
	}
}
