// Package degrade protects the upstream model and decides what to answer
// when it cannot: circuit breakers per upstream target, a retry budget with
// full-jitter backoff, and (in sub-packages) admission control and the
// degradation journal.
//
// Every decision is a pure function of an explicit time (the unexported
// methods taking now), so tests drive the state machines without sleeping;
// the exported methods read the injected Clock.
package degrade

import (
	"errors"
	"time"
)

// Clock tells the time. A nil Clock is the real clock.
type Clock interface{ Now() time.Time }

func now(c Clock) time.Time {
	if c == nil {
		return time.Now()
	}
	return c.Now()
}

// ErrOpen is returned (wrapped in *OpenError) when a breaker refuses a call.
var ErrOpen = errors.New("degrade: circuit open")

// OpenError says which breaker refused and until when.
type OpenError struct {
	Target string
	Until  time.Time
}

func (e *OpenError) Error() string {
	return "circuit open for " + e.Target + " until " + e.Until.UTC().Format(time.RFC3339)
}

// Unwrap makes errors.Is(err, ErrOpen) true.
func (e *OpenError) Unwrap() error { return ErrOpen }
