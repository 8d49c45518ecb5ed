package admission

import (
	"sync"
	"sync/atomic"
)

// breaker keeps Global off a Redis that does not answer. After threshold
// consecutive failures it opens for cooldown: every call decides locally
// without touching the network. Then one call is let through as a trial;
// its success closes the breaker, its failure opens it for another
// cooldown. Driven by explicit times (Unix nanoseconds).
//
// Why not one of the other breakers: it sits in front of a Redis call that
// every admitted request makes, so its closed path is one atomic load, and
// it needs no failure window, growing open times or tenant attribution
// (degrade.Breaker, for upstream targets). Unlike cache/shared's, it has
// no probe goroutine of its own: Global owns no background loop, and a
// request's trial call is the probe (its fallback buckets answer
// meanwhile).
type breaker struct {
	threshold int
	cooldown  int64

	open  atomic.Bool // fast path: closed breakers take no lock
	fails atomic.Int64

	mu        sync.Mutex
	openUntil int64
	trial     bool // a trial call is out
	opens     atomic.Uint64
}

func newBreaker(threshold int, cooldown int64) *breaker {
	return &breaker{threshold: max(threshold, 1), cooldown: cooldown}
}

// allow reports whether a call may go to Redis at now.
func (b *breaker) allow(now int64) bool {
	if !b.open.Load() {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.open.Load() {
		return true
	}
	if now < b.openUntil || b.trial {
		return false
	}
	b.trial = true
	return true
}

// success records an answer from Redis; it reports whether the breaker
// was open (the trial succeeded).
func (b *breaker) success() (closed bool) {
	if b.fails.Load() != 0 {
		b.fails.Store(0)
	}
	if !b.open.Load() {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.trial = false
	return b.open.Swap(false)
}

// failure records a call Redis did not answer at now; it reports whether
// this failure opened the breaker.
func (b *breaker) failure(now int64) (opened bool) {
	n := b.fails.Add(1)
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.open.Load() && b.trial: // the trial failed: another cooldown
		b.trial = false
		b.openUntil = now + b.cooldown
	case !b.open.Load() && n >= int64(b.threshold):
		b.openUntil = now + b.cooldown
		b.open.Store(true)
		b.opens.Add(1)
		return true
	}
	return false
}

// abort returns a trial that ended without a verdict (the caller gave up).
func (b *breaker) abort() {
	if !b.open.Load() {
		return
	}
	b.mu.Lock()
	b.trial = false
	b.mu.Unlock()
}

func (b *breaker) isOpen() bool { return b.open.Load() }
