package shared

import "sync/atomic"

// breaker is the fail-open guard in front of Redis. It opens after threshold
// consecutive failures; while open every operation is refused without
// touching the network, so a dead Redis costs an atomic load per request
// instead of a timeout. Only the owner's probe (a PING that succeeded) closes
// it again.
//
// It is deliberately smaller than a general breaker (no windows, no
// half-open admission): the probe is the half-open state, run by one
// goroutine at a fixed interval, so recovery never depends on request
// traffic and never lets a burst of requests through to a sick server.
//
// It is L2's own although the region's Redis client is shared: global
// limits (degrade/admission) and the journal stream keep guards of their
// own because each judges Redis against its own budget (L2 50ms, global
// limits 20ms, a journal batch 1s) and falls back to something different
// (a miss, the instance's share of a limit, the local file). A Redis that
// answers in 30ms is healthy for L2 and too slow for the limits; one
// verdict for all would be wrong for some of them.
type breaker struct {
	threshold int64
	fails     atomic.Int64  // consecutive failures since the last success
	open      atomic.Bool   // refusing operations
	opens     atomic.Uint64 // closed → open transitions
}

func newBreaker(threshold int) *breaker {
	return &breaker{threshold: int64(max(threshold, 1))}
}

// allow reports whether an operation may reach Redis.
func (b *breaker) allow() bool { return !b.open.Load() }

// success records an operation that Redis answered (a miss is an answer).
func (b *breaker) success() {
	// Read first: on the hot path the counter is already zero and a store
	// would bounce the cache line between cores for nothing.
	if b.fails.Load() != 0 {
		b.fails.Store(0)
	}
}

// failure records an operation that Redis did not answer in time; it
// reports whether this failure opened the breaker.
func (b *breaker) failure() (opened bool) {
	if b.fails.Add(1) < b.threshold {
		return false
	}
	if b.open.CompareAndSwap(false, true) {
		b.opens.Add(1)
		return true
	}
	return false
}

// reset closes the breaker after a successful probe; it reports whether
// the breaker was open.
func (b *breaker) reset() (wasOpen bool) {
	b.fails.Store(0)
	return b.open.Swap(false)
}
