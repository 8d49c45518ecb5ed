package admission

import "time"

// Clock tells the time; it has the shape of degrade.Clock, so one clock
// serves both packages. A nil Clock in a config means the real time.
type Clock interface {
	Now() time.Time
}

// TimerClock is a Clock that also makes timers. Concurrency times its
// queue waits with it when its Clock implements it, and with
// time.AfterFunc otherwise; a fake TimerClock lets tests expire waits
// without sleeping.
type TimerClock interface {
	Clock
	// AfterFunc calls f in its own goroutine after d, unless the returned
	// Timer is stopped first (time.AfterFunc semantics).
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a stoppable timer; *time.Timer satisfies it.
type Timer interface {
	Stop() bool
}

// realClock is the clock used when a config leaves it nil.
type realClock struct{}

var (
	_ TimerClock = realClock{}
	_ Timer      = (*time.Timer)(nil)
)

func (realClock) Now() time.Time                            { return time.Now() }
func (realClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

func clockOr(c Clock) Clock {
	if c == nil {
		return realClock{}
	}
	return c
}

// timerClockOr returns c's timers, or the real ones.
func timerClockOr(c Clock) func(time.Duration, func()) Timer {
	if tc, ok := c.(TimerClock); ok {
		return tc.AfterFunc
	}
	return realClock{}.AfterFunc
}
