package degrade

import (
	"context"
	"math/rand/v2"
	"sync/atomic"
	"time"
)

// RetryBudget bounds retries per upstream so that a failure storm is not
// multiplied: at any moment, retries in flight may be at most Ratio of the
// requests in flight (at least Min). This is Envoy's retry budget.
type RetryBudget struct {
	Ratio float64 // zero → 0.2
	Min   int64   // zero → 3

	active  atomic.Int64 // requests in flight (first attempts and retries)
	retries atomic.Int64 // retries in flight
}

// Begin counts a request in flight; call the returned func when it ends.
func (b *RetryBudget) Begin() (end func()) {
	b.active.Add(1)
	return func() { b.active.Add(-1) }
}

// TryRetry takes a retry from the budget; ok false means the budget is
// spent. Call done when the retry ends.
func (b *RetryBudget) TryRetry() (done func(), ok bool) {
	ratio, minimum := b.Ratio, b.Min
	if ratio == 0 {
		ratio = 0.2
	}
	if minimum == 0 {
		minimum = 3
	}
	limit := max(int64(ratio*float64(b.active.Load())), minimum)
	if b.retries.Add(1) > limit {
		b.retries.Add(-1)
		return nil, false
	}
	return func() { b.retries.Add(-1) }, true
}

// InFlight returns the requests and retries in flight.
func (b *RetryBudget) InFlight() (requests, retries int64) {
	return b.active.Load(), b.retries.Load()
}

// Backoff returns the full-jitter delay before retry number attempt (1 for
// the first retry): uniform in [0, min(cap, base·2^(attempt−1))]. Zero base
// and cap → 100ms and 2s (DEGRADATION.md).
func Backoff(attempt int, base, cap time.Duration) time.Duration {
	if base <= 0 {
		base = 100 * time.Millisecond
	}
	if cap <= 0 {
		cap = 2 * time.Second
	}
	d := base << min(max(attempt-1, 0), 20)
	if d > cap || d <= 0 {
		d = cap
	}
	return time.Duration(rand.Int64N(int64(d) + 1))
}

// Sleep waits d or until ctx is done; it reports whether the full d passed.
func Sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
