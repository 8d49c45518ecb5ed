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
//
// # Whose failure is it
//
// A target is shared by every tenant, so one tenant must not be able to
// open it for the others (DEGRADATION.md rule 8). Each failure is recorded
// with its source: "" for target-wide evidence — a call made with the
// edge's own upstream key or with no key at all, or a connection that could
// not be made (no key reached the upstream) — or the tenant whose own key
// the call carried (RecordFor). The rule:
//
//   - Target-wide failures count in full, as in any breaker.
//   - Tenant failures count only as far as they do not come from one
//     tenant: the loudest tenant's failures are left out of both the
//     failure count and the request count (of the window, and of the run of
//     consecutive failures), so the breaker trips on tenant failures only
//     when the other tenants' failures alone meet the trip condition. One
//     tenant whose key draws 5xx, timeouts, cut streams or empty answers
//     never trips it, however many requests it sends; an outage that every
//     tenant sees trips it once failures from the second-loudest and
//     quieter tenants reach the thresholds.
//   - Half-open, a probe that fails with a tenant's key reopens the breaker
//     only when an earlier probe of the same half-open period failed with
//     another tenant's key; otherwise the probe slot is given back.
//
// Namespaces are per API key: a tenant holding several keys counts as
// several tenants. Upstream 429 and 401/403 answers about a tenant's own key
// are not failures at all: the pipeline passes them to that tenant and holds
// the key (Holds), never the target.
//
// Why a breaker of our own rather than gobreaker (which guards the semantic
// tier and the remote embedder): the upstream breaker needs a windowed
// ratio, open times that grow per trip and follow an upstream's
// Retry-After, cooldown holds (Hold), operator status and the tenant
// attribution above; gobreaker has none of them.
type Breaker struct {
	name string
	cfg  BreakerConfig

	mu          sync.Mutex
	state       State
	buckets     []bucket  // ring of one-second buckets over the window
	run         run       // the current run of consecutive failures
	trips       int       // trips in a row (reset when closed)
	openUntil   time.Time // while open
	probing     bool      // a half-open probe is in flight
	probeAt     time.Time // when it started; a probe never reported is given up on
	probeOK     int
	probeFailed string // the tenant whose probe failed in this half-open period
	openedAt    time.Time
	lastReason  string
	observer    func(Transition)
}

// probeTimeout is how long a half-open probe may stay unreported before
// another call may probe (a caller that went away never reports).
const probeTimeout = 30 * time.Second

// maxTenants bounds the tenants tracked per bucket and per run; failures of
// further tenants count as coming from distinct quiet tenants.
const maxTenants = 64

// tally counts failures by source: target-wide, and per tenant.
type tally struct {
	wide    int
	tenants map[string]int // allocated on a bucket's first tenant failure
	others  int            // tenants beyond maxTenants
}

func (c *tally) add(tenant string) {
	switch {
	case tenant == "":
		c.wide++
	case c.tenants[tenant] > 0 || len(c.tenants) < maxTenants:
		if c.tenants == nil {
			c.tenants = make(map[string]int)
		}
		c.tenants[tenant]++
	default:
		c.others++
	}
}

type bucket struct {
	sec   int64
	total int
	fails tally
}

// run is a run of consecutive failures.
type run struct {
	n     int
	fails tally
}

// counted returns the failures that count against the target — every one
// but the loudest tenant's (see Breaker) — and the loudest tenant's.
func counted(wide, others int, perTenant map[string]int) (n, loudest int) {
	n = wide + others
	for _, c := range perTenant {
		n += c
		loudest = max(loudest, c)
	}
	return n - loudest, loudest
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

// Transition is a change of a breaker's state, for logs.
type Transition struct {
	Target   string
	From, To State
	Reason   string    // the failure that tripped it, or the hold's reason
	Until    time.Time // when it may probe again (To == Open)
}

// Observe makes fn receive every state change from now on, outside the
// breaker's lock, on the goroutine that caused it. fn must be quick.
func (b *Breaker) Observe(fn func(Transition)) {
	b.mu.Lock()
	b.observer = fn
	b.mu.Unlock()
}

// unlock releases b.mu and reports a state change from the state held
// before, if there was one.
func (b *Breaker) unlock(from State) {
	if b.state == from || b.observer == nil {
		b.mu.Unlock() // the common case: nothing to report
		return
	}
	obs := b.observer
	tr := Transition{Target: b.name, From: from, To: b.state, Reason: b.lastReason, Until: b.openUntil}
	b.mu.Unlock()
	obs(tr)
}

// Name is the target the breaker guards.
func (b *Breaker) Name() string { return b.name }

// Allow reports whether a call may go to the target now; when it may not,
// the error is an *OpenError saying until when. A caller that was allowed
// must call Record with the outcome.
func (b *Breaker) Allow() error { return b.allow(now(b.cfg.Clock)) }

func (b *Breaker) allow(t time.Time) error {
	b.mu.Lock()
	defer b.unlock(b.state)
	switch b.state {
	case Open:
		if t.Before(b.openUntil) {
			return &OpenError{Target: b.name, Until: b.openUntil}
		}
		b.state, b.probing, b.probeOK, b.probeFailed = HalfOpen, false, 0, ""
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

// Record reports the outcome of an allowed call as target-wide evidence (a
// call made with the edge's own key, or with none). retryAfter, when the
// upstream sent one with a failure, holds the breaker open at least that
// long once it trips.
func (b *Breaker) Record(ok bool, retryAfter time.Duration, reason string) {
	b.recordFor(now(b.cfg.Clock), "", ok, retryAfter, reason)
}

// RecordFor reports the outcome of an allowed call made with tenant's own
// key ("" → target-wide, as Record); see Breaker for how tenant failures
// count.
func (b *Breaker) RecordFor(tenant string, ok bool, retryAfter time.Duration, reason string) {
	b.recordFor(now(b.cfg.Clock), tenant, ok, retryAfter, reason)
}

func (b *Breaker) record(t time.Time, ok bool, retryAfter time.Duration, reason string) {
	b.recordFor(t, "", ok, retryAfter, reason)
}

func (b *Breaker) recordFor(t time.Time, tenant string, ok bool, retryAfter time.Duration, reason string) {
	b.mu.Lock()
	defer b.unlock(b.state)
	switch b.state {
	case HalfOpen:
		b.probing = false
		switch {
		case ok:
			b.probeOK++
			if b.probeOK >= b.cfg.Probes {
				b.state, b.trips, b.run = Closed, 0, run{}
				clear(b.buckets)
			}
		case tenant == "" || b.probeFailed != "" && b.probeFailed != tenant:
			b.trip(t, retryAfter, reason)
		default:
			b.probeFailed = tenant // one tenant's failure: not yet evidence
		}
		return
	case Open: // a call allowed before the trip finished late
		if !ok && tenant == "" && retryAfter > 0 && t.Add(retryAfter).After(b.openUntil) {
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
		b.run = run{}
		return
	}
	bk.fails.add(tenant)
	b.run.n++
	b.run.fails.add(tenant)
	if b.tripping(t) {
		b.trip(t, retryAfter, reason)
	}
}

// tripping reports whether the evidence meets the trip condition: a run of
// Consecutive failures, or FailureRatio of at least MinRequests requests in
// the window, with the loudest tenant's failures left out of both.
func (b *Breaker) tripping(t time.Time) bool {
	inRun, _ := counted(b.run.fails.wide, b.run.fails.others, b.run.fails.tenants)
	if inRun >= b.cfg.Consecutive {
		return true
	}
	total, failed, loudest := b.window(t)
	total -= loudest
	return total >= b.cfg.MinRequests && float64(failed) >= b.cfg.FailureRatio*float64(total)
}

// window returns the requests and the counted failures in the window, and
// the failures of the loudest tenant (left out of the count).
func (b *Breaker) window(t time.Time) (total, failed, loudest int) {
	oldest := t.Unix() - int64(len(b.buckets)) + 1
	wide, others := 0, 0
	var perTenant map[string]int
	for i := range b.buckets {
		bk := &b.buckets[i]
		if bk.sec < oldest || bk.sec > t.Unix() {
			continue
		}
		total += bk.total
		wide += bk.fails.wide
		others += bk.fails.others
		for k, n := range bk.fails.tenants {
			if perTenant == nil {
				perTenant = make(map[string]int, len(bk.fails.tenants))
			}
			perTenant[k] += n
		}
	}
	failed, loudest = counted(wide, others, perTenant)
	return total, failed, loudest
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
	b.run = run{}
	b.lastReason = reason
	clear(b.buckets)
}

// BreakerStatus is a snapshot for operators.
type BreakerStatus struct {
	Target    string    `json:"target"`
	State     string    `json:"state"`
	OpenUntil time.Time `json:"open_until,omitzero"`
	OpenedAt  time.Time `json:"opened_at,omitzero"`
	Trips     int       `json:"trips_in_a_row"`
	Requests  int       `json:"window_requests"`
	Failures  int       `json:"window_failures"`
	// Counted is the failures that count towards a trip: all but the
	// loudest tenant's (see Breaker).
	Counted    int    `json:"window_failures_counted"`
	LastReason string `json:"last_reason,omitempty"`
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
	total, failed, loudest := b.window(t)
	s := BreakerStatus{Target: b.name, State: st.String(), Trips: b.trips, Requests: total, Failures: failed + loudest,
		Counted: failed, LastReason: b.lastReason}
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
	defer b.unlock(b.state)
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
