package admission

import "time"

// Clock is the time source of every limiter. A nil Clock in a config means
// the real time.
type Clock interface {
	Now() time.Time
	// AfterFunc calls f in its own goroutine after d, unless the returned
	// Timer is stopped first (time.AfterFunc semantics).
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a stoppable timer; *time.Timer satisfies it.
type Timer interface {
	Stop() bool
}

// realClock is the Clock used when a config leaves it nil.
type realClock struct{}

var (
	_ Clock = realClock{}
	_ Timer = (*time.Timer)(nil)
)

func (realClock) Now() time.Time                            { return time.Now() }
func (realClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

func clockOr(c Clock) Clock {
	if c == nil {
		return realClock{}
	}
	return c
}
