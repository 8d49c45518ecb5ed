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
type gradient struct {
	limit, min, max      float64
	smoothing, tolerance float64
	dropBackoff          float64
	longFactor           float64 // 2 / (LongWindow + 1)
	long                 float64 // seconds
	warm                 int     // windows averaged into long during warm-up
}

const (
	gradientQueueSize = 4  // Gradient2's default headroom
	gradientWarmup    = 10 // windows averaged before the exponential average
)

// update folds one window: short is the window's TTFT percentile in seconds
// (≤ 0 when the window had no sample), peak its highest in-flight count,
// dropped whether it saw an overload failure. It reports the new limit.
func (g *gradient) update(short float64, peak int, dropped bool) float64 {
	if dropped {
		g.limit = max(g.min, g.limit*g.dropBackoff)
		return g.limit
	}
	if short <= 0 {
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
	if float64(peak) < g.limit/2 { // app-limited: the limit was not tested
		return g.limit
	}
	grad := max(0.5, min(1, g.tolerance*g.long/short))
	next := g.limit*grad + gradientQueueSize
	next = g.limit*(1-g.smoothing) + next*g.smoothing
	g.limit = max(g.min, min(g.max, next))
	return g.limit
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
