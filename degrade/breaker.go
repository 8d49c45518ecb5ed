package degrade

import (
	"math/rand/v2"
	"sync"
	"time"
)

// BreakerConfig tunes a Breaker. Zero fields take the defaults in
// DEGRADATION.md ("breaker trip", "breaker open time", "half-open").
type BreakerConfig struct {
	// FailureRatio over Window trips the breaker once MinRequests were
	// seen. Zero → 0.5.
	FailureRatio float64
	// MinRequests in the window before the ratio counts. Zero → 10.
	MinRequests int
	// Window of the failure ratio. Zero → 30s.
	Window time.Duration
	// Consecutive failures trip the breaker regardless of the ratio.
	// Zero → 5.
	Consecutive int
	// BaseOpen is the open time after the first trip; each further trip in
	// a row adds as much again (30s, 60s, 90s …). Zero → 30s.
	BaseOpen time.Duration
	// MaxOpen caps the open time. Zero → 300s.
	MaxOpen time.Duration
	// Jitter spreads open times by ±Jitter (a fraction), so replicas do
	// not probe in step. Zero → 0.1; negative → none.
	Jitter float64
	// Probes is how many successful half-open probes close the breaker.
	// Zero → 2.
	Probes int
	Clock  Clock
}

func (c BreakerConfig) withDefaults() BreakerConfig {
	if c.FailureRatio == 0 {
		c.FailureRatio = 0.5
	}
	if c.MinRequests == 0 {
		c.MinRequests = 10
	}
	if c.Window == 0 {
		c.Window = 30 * time.Second
	}
	if c.Consecutive == 0 {
		c.Consecutive = 5
	}
	if c.BaseOpen == 0 {
		c.BaseOpen = 30 * time.Second
	}
	if c.MaxOpen == 0 {
		c.MaxOpen = 300 * time.Second
	}
	if c.Jitter == 0 {
		c.Jitter = 0.1
	}
	if c.Jitter < 0 {
		c.Jitter = 0
	}
	if c.Probes == 0 {
		c.Probes = 2
	}
	return c
}

// State of a breaker.
type State int

// Breaker states.
const (
	Closed State = iota
	Open
	HalfOpen
)

func (s State) String() string {
	switch s {
	case Open:
		return "open"
	case HalfOpen:
		return "half-open"
	}
	return "closed"
}

// Breaker is a circuit breaker for one upstream target. Closed, it lets
// calls through and counts outcomes in a sliding window of one-second
// buckets; it trips on a failure ratio or a run of consecutive failures.
// Open, it refuses every call until its open time has passed — a time that
// grows with each trip in a row, never shortens, and is extended by an
// upstream's Retry-After. Then it is half-open: one probe at a time is let
// through, and Probes successes in a row close it; a failure opens it again.
// The breaker is never bypassed. It is safe for concurrent use.
type Breaker struct {
	name string
	cfg  BreakerConfig

	mu          sync.Mutex
	state       State
	buckets     []bucket // ring of one-second buckets over the window
	consecutive int
	trips       int       // trips in a row (reset when closed)
	openUntil   time.Time // while open
	probing     bool      // a half-open probe is in flight
	probeAt     time.Time // when it started; a probe never reported is given up on
	probeOK     int
	openedAt    time.Time
	lastReason  string
}

// probeTimeout is how long a half-open probe may stay unreported before
// another call may probe (a caller that went away never reports).
const probeTimeout = 30 * time.Second

type bucket struct {
	sec            int64
	total, failure int
}

// NewBreaker returns a closed breaker for target name.
func NewBreaker(name string, cfg BreakerConfig) *Breaker {
	cfg = cfg.withDefaults()
	n := int(cfg.Window / time.Second)
	if n < 1 {
		n = 1
	}
	return &Breaker{name: name, cfg: cfg, buckets: make([]bucket, n)}
}

// Name is the target the breaker guards.
func (b *Breaker) Name() string { return b.name }

// Allow reports whether a call may go to the target now; when it may not,
// the error is an *OpenError saying until when. A caller that was allowed
// must call Record with the outcome.
func (b *Breaker) Allow() error { return b.allow(now(b.cfg.Clock)) }

func (b *Breaker) allow(t time.Time) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.state {
	case Open:
		if t.Before(b.openUntil) {
			return &OpenError{Target: b.name, Until: b.openUntil}
		}
		b.state, b.probing, b.probeOK = HalfOpen, false, 0
		fallthrough
	case HalfOpen:
		if b.probing && t.Sub(b.probeAt) < probeTimeout {
			// One probe at a time; the next may go in a second at the latest.
			return &OpenError{Target: b.name, Until: t.Add(time.Second)}
		}
		b.probing, b.probeAt = true, t
	}
	return nil
}

// Record reports the outcome of an allowed call. retryAfter, when the
// upstream sent one with a failure, holds the breaker open at least that
// long once it trips.
func (b *Breaker) Record(ok bool, retryAfter time.Duration, reason string) {
	b.record(now(b.cfg.Clock), ok, retryAfter, reason)
}

func (b *Breaker) record(t time.Time, ok bool, retryAfter time.Duration, reason string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state == HalfOpen {
		b.probing = false
		if !ok {
			b.trip(t, retryAfter, reason)
			return
		}
		b.probeOK++
		if b.probeOK >= b.cfg.Probes {
			b.state, b.trips, b.consecutive = Closed, 0, 0
			clear(b.buckets)
		}
		return
	}
	if b.state == Open { // a call allowed before the trip finished late
		if !ok && retryAfter > 0 && t.Add(retryAfter).After(b.openUntil) {
			b.openUntil = t.Add(retryAfter)
		}
		return
	}
	bk := &b.buckets[t.Unix()%int64(len(b.buckets))]
	if bk.sec != t.Unix() {
		*bk = bucket{sec: t.Unix()}
	}
	bk.total++
	if ok {
		b.consecutive = 0
		return
	}
	bk.failure++
	b.consecutive++
	total, failed := b.window(t)
	if b.consecutive >= b.cfg.Consecutive ||
		(total >= b.cfg.MinRequests && float64(failed) >= b.cfg.FailureRatio*float64(total)) {
		b.trip(t, retryAfter, reason)
	}
}

func (b *Breaker) window(t time.Time) (total, failed int) {
	oldest := t.Unix() - int64(len(b.buckets)) + 1
	for _, bk := range b.buckets {
		if bk.sec >= oldest && bk.sec <= t.Unix() {
			total += bk.total
			failed += bk.failure
		}
	}
	return total, failed
}

// trip opens the breaker for max(retryAfter, BaseOpen × trips in a row),
// capped, with jitter; an open time is never shortened.
func (b *Breaker) trip(t time.Time, retryAfter time.Duration, reason string) {
	b.trips++
	d := min(b.cfg.BaseOpen*time.Duration(b.trips), b.cfg.MaxOpen)
	if b.cfg.Jitter > 0 {
		d = time.Duration(float64(d) * (1 + b.cfg.Jitter*(2*rand.Float64()-1)))
	}
	d = max(d, retryAfter)
	until := t.Add(d)
	if b.state == Open && b.openUntil.After(until) {
		until = b.openUntil
	}
	b.state, b.openUntil, b.openedAt, b.probing = Open, until, t, false
	b.consecutive = 0
	b.lastReason = reason
	clear(b.buckets)
}

// BreakerStatus is a snapshot for operators.
type BreakerStatus struct {
	Target     string    `json:"target"`
	State      string    `json:"state"`
	OpenUntil  time.Time `json:"open_until,omitzero"`
	OpenedAt   time.Time `json:"opened_at,omitzero"`
	Trips      int       `json:"trips_in_a_row"`
	Requests   int       `json:"window_requests"`
	Failures   int       `json:"window_failures"`
	LastReason string    `json:"last_reason,omitempty"`
}

// Status returns a snapshot of the breaker.
func (b *Breaker) Status() BreakerStatus {
	t := now(b.cfg.Clock)
	b.mu.Lock()
	defer b.mu.Unlock()
	st := b.state
	if st == Open && !t.Before(b.openUntil) {
		st = HalfOpen // the next call will probe
	}
	total, failed := b.window(t)
	s := BreakerStatus{Target: b.name, State: st.String(), Trips: b.trips, Requests: total, Failures: failed, LastReason: b.lastReason}
	if st != Closed {
		s.OpenUntil, s.OpenedAt = b.openUntil, b.openedAt
	}
	return s
}

// Remaining is how long the breaker stays open from now (0 when closed or
// ready to probe): the honest Retry-After when it refuses.
func (b *Breaker) Remaining() time.Duration {
	t := now(b.cfg.Clock)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state != Open {
		return 0
	}
	return max(b.openUntil.Sub(t), 0)
}

// Release gives back a call that was allowed but never made (or canceled
// by the client), without counting an outcome.
func (b *Breaker) Release() {
	b.mu.Lock()
	if b.state == HalfOpen {
		b.probing = false
	}
	b.mu.Unlock()
}

// Hold keeps the target closed to calls for d from now (an upstream's
// 429 with Retry-After: a cooldown, not a trip). It never shortens an
// open time.
func (b *Breaker) Hold(d time.Duration, reason string) { b.hold(now(b.cfg.Clock), d, reason) }

func (b *Breaker) hold(t time.Time, d time.Duration, reason string) {
	if d <= 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	until := t.Add(d)
	if b.state == Open && !until.After(b.openUntil) {
		return
	}
	if b.state != Open {
		b.openedAt = t
	}
	b.state, b.openUntil, b.probing, b.probeOK = Open, until, false, 0
	b.lastReason = reason
}
