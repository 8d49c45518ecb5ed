package admission

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of ConcurrencyConfig (design/DEGRADATION.md, "adaptive limit"
// and "queue wait").
const (
	DefaultInitialLimit     = 20
	DefaultMinLimit         = 5
	DefaultMaxLimit         = 500
	DefaultSmoothing        = 0.2
	DefaultTolerance        = 1.5
	DefaultPercentile       = 0.9
	DefaultWindow           = time.Second
	DefaultMinWindowSamples = 10
	DefaultLongWindow       = 100
	DefaultDropBackoff      = 0.9
	DefaultMaxQueue         = 1000
	DefaultSlowStartMaxWait = 5 * time.Second
	DefaultSlowStartSlack   = time.Second
)

// QueueOrder is the order in which a lane's waiters are served.
type QueueOrder uint8

const (
	// OrderDefault is the lane's default: FIFO for enterprise and paid,
	// LIFO for free and batch.
	OrderDefault QueueOrder = iota
	// FIFO serves the oldest waiter first: fair, for lanes whose clients
	// wait patiently.
	FIFO
	// LIFO serves the newest waiter first: under overload the freshest
	// requests, whose clients are still there, get the slots, and the
	// oldest time out.
	LIFO
)

// String returns "default", "fifo" or "lifo".
func (o QueueOrder) String() string {
	switch o {
	case FIFO:
		return "fifo"
	case LIFO:
		return "lifo"
	case OrderDefault:
		return "default"
	}
	return fmt.Sprintf("order(%d)", uint8(o))
}

// LaneConfig is one lane's partition of an upstream.
type LaneConfig struct {
	// Share is the fraction of the limit guaranteed to the lane while the
	// limit is saturated; below saturation any lane may borrow. If every
	// lane's Share is zero, the defaults apply: enterprise 0.30, paid 0.40,
	// free 0.20, batch 0.10. Shares must sum to at most 1.
	Share float64
	// MaxWait is the longest a request of the lane waits in the queue. If
	// zero, it defaults to 2s for enterprise and paid, 500ms for free and
	// batch.
	MaxWait time.Duration
	// Order is FIFO or LIFO; OrderDefault takes the lane's default.
	Order QueueOrder
}

var defaultLanes = [NumLanes]LaneConfig{
	Batch:      {Share: 0.10, MaxWait: 500 * time.Millisecond, Order: LIFO},
	Free:       {Share: 0.20, MaxWait: 500 * time.Millisecond, Order: LIFO},
	Paid:       {Share: 0.40, MaxWait: 2 * time.Second, Order: FIFO},
	Enterprise: {Share: 0.30, MaxWait: 2 * time.Second, Order: FIFO},
}

// ConcurrencyConfig configures a Concurrency. The zero value is valid and
// takes every default.
type ConcurrencyConfig struct {
	// Name identifies the upstream (and model) in Stats.
	Name string
	// InitialLimit, MinLimit and MaxLimit bound the adaptive limit. If
	// zero, they default to 20, 5 and 500.
	InitialLimit, MinLimit, MaxLimit int
	// Smoothing is the weight of each window's new limit. If zero, 0.2.
	Smoothing float64
	// Tolerance is how much the TTFT may exceed its long-term value before
	// the limit shrinks. If zero, 1.5.
	Tolerance float64
	// Percentile of TTFT measured per window. If zero, 0.9.
	Percentile float64
	// Window is the shortest sampling window; a window closes once it is
	// this old and holds MinWindowSamples samples (or one overload
	// failure). If zero, 1s.
	Window time.Duration
	// MinWindowSamples: if zero, 10.
	MinWindowSamples int
	// LongWindow is the number of windows the long-term TTFT averages
	// over. If zero, 100.
	LongWindow int
	// DropBackoff multiplies the limit after a window with an overload
	// failure. If zero, 0.9.
	DropBackoff float64
	// NoSlowStart starts the limit in the gradient regime. By default it
	// starts in slow start: while the limit is in use, each TTFT sample
	// within Tolerance × the no-load TTFT + SlowStartSlack grows the limit
	// (by two at a stream's first token, one as a call ends), so that it
	// about doubles per TTFT, until the first sign of congestion — medians
	// of ten consecutive samples above that threshold for a second, with
	// calls in flight and waiting at least a quarter of the limit (the
	// limit falls to half the calls in flight), or an overload failure —
	// hands over to the gradient (gradient.go), or until it reaches
	// MaxLimit. Slow start begins again after three windows in a row with
	// the limit full and TTFT back within that threshold (an upstream that
	// recovered from an incident; gradient.restartSlowStart says why).
	// NoSlowStart turns both off.
	NoSlowStart bool
	// SlowStartSlack is added to Tolerance × the no-load TTFT before slow
	// start sees congestion: for a fast upstream (a no-load TTFT of a few
	// milliseconds) the scheduling of a burst on the proxy and the
	// upstream moves TTFT by far more than 50 % with no model server
	// queueing (edgebench streams, 2,000 streams on two shared cores: from
	// about 20ms to a window p90 of 580ms, llmsim direct alike). Slow start
	// is the optimistic phase; the gradient after it uses Tolerance alone.
	// If zero, 1s.
	SlowStartSlack time.Duration
	// SlowStartMaxWait is the longest a request waits in the queue while
	// the limit is in slow start, when it is longer than the lane's
	// MaxWait: a queue then says that the limit has not yet found the
	// upstream's capacity, not that the upstream is full, and slow start
	// needs a few TTFTs to find it. When slow start ends, waiters fall back
	// to their lane's MaxWait (those who waited longer time out then). The
	// client's deadline bounds the wait as always. If zero, 5s.
	SlowStartMaxWait time.Duration
	// Lanes partition the limit, indexed by Lane.
	Lanes [NumLanes]LaneConfig
	// MaxQueue bounds the waiters of all lanes together. When it is full, a
	// new request displaces the waiter of the lowest lower lane that would
	// be served last, or is shed if there is none. If zero, 1000.
	MaxQueue int
	// Shadow admits every request at once, counting in
	// LaneStats.ShadowRejected those that would have had to queue.
	Shadow bool
	// HardLimit caps the requests in flight whatever the adaptive limit
	// says, in Shadow mode too: it is the upstream's own capacity (a
	// configured max_concurrency), not an estimate, so observing instead
	// of enforcing it would only produce the upstream's 429s. MaxLimit,
	// MinLimit and InitialLimit are lowered to it. If zero, no hard cap.
	HardLimit int
	// Clock is the time source; nil means the real time. If it is a
	// TimerClock, queue waits are timed by it too.
	Clock Clock
}

// Validate reports a configuration NewConcurrency would reject.
func (c ConcurrencyConfig) Validate() error {
	var errs []error
	if c.InitialLimit < 0 || c.MinLimit < 0 || c.MaxLimit < 0 || c.HardLimit < 0 || c.MinWindowSamples < 0 || c.LongWindow < 0 || c.MaxQueue < 0 {
		errs = append(errs, errors.New("negative limit, MinWindowSamples, LongWindow or MaxQueue"))
	}
	if c.Window < 0 || c.SlowStartMaxWait < 0 || c.SlowStartSlack < 0 {
		errs = append(errs, errors.New("negative Window, SlowStartMaxWait or SlowStartSlack"))
	}
	d := c.withDefaults()
	if d.MinLimit > d.MaxLimit || d.InitialLimit < d.MinLimit || d.InitialLimit > d.MaxLimit {
		errs = append(errs, fmt.Errorf("want MinLimit ≤ InitialLimit ≤ MaxLimit, have %d, %d, %d", d.MinLimit, d.InitialLimit, d.MaxLimit))
	}
	if !(d.Smoothing > 0 && d.Smoothing <= 1) || !(d.DropBackoff > 0 && d.DropBackoff < 1) || !(d.Percentile > 0 && d.Percentile <= 1) {
		errs = append(errs, errors.New("Smoothing and Percentile must be in (0,1], DropBackoff in (0,1)"))
	}
	if !(d.Tolerance >= 1) {
		errs = append(errs, fmt.Errorf("Tolerance %v: want ≥ 1", d.Tolerance))
	}
	var sum float64
	for l, lc := range c.Lanes {
		if lc.Share < 0 || lc.MaxWait < 0 || lc.Order > LIFO || math.IsNaN(lc.Share) {
			errs = append(errs, fmt.Errorf("lane %s: negative Share or MaxWait, or unknown Order", Lane(l)))
		}
		sum += lc.Share
	}
	if sum > 1+1e-9 {
		errs = append(errs, fmt.Errorf("lane shares sum to %v: want ≤ 1", sum))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("admission: invalid concurrency config: %w", err)
	}
	return nil
}

func (c ConcurrencyConfig) withDefaults() ConcurrencyConfig {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	deff := func(v *float64, d float64) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.InitialLimit, DefaultInitialLimit)
	def(&c.MinLimit, DefaultMinLimit)
	def(&c.MaxLimit, DefaultMaxLimit)
	def(&c.MinWindowSamples, DefaultMinWindowSamples)
	def(&c.LongWindow, DefaultLongWindow)
	def(&c.MaxQueue, DefaultMaxQueue)
	deff(&c.Smoothing, DefaultSmoothing)
	deff(&c.Tolerance, DefaultTolerance)
	deff(&c.Percentile, DefaultPercentile)
	deff(&c.DropBackoff, DefaultDropBackoff)
	if c.Window == 0 {
		c.Window = DefaultWindow
	}
	if c.HardLimit > 0 {
		c.MaxLimit = min(c.MaxLimit, c.HardLimit)
		c.MinLimit = min(c.MinLimit, c.HardLimit)
		c.InitialLimit = min(c.InitialLimit, c.HardLimit)
	}
	if c.SlowStartMaxWait == 0 {
		c.SlowStartMaxWait = DefaultSlowStartMaxWait
	}
	if c.SlowStartSlack == 0 {
		c.SlowStartSlack = DefaultSlowStartSlack
	}
	noShares := true
	for _, lc := range c.Lanes {
		noShares = noShares && lc.Share == 0
	}
	for l := range c.Lanes {
		lc := &c.Lanes[l]
		if noShares {
			lc.Share = defaultLanes[l].Share
		}
		if lc.MaxWait == 0 {
			lc.MaxWait = defaultLanes[l].MaxWait
		}
		if lc.Order == OrderDefault {
			lc.Order = defaultLanes[l].Order
		}
	}
	return c
}

// Release ends an admitted upstream call and feeds the adaptive limit. ttft
// is the time from sending the request to its first token; ok is false
// when the call failed with an overload symptom (timeout before the first
// token, 429 or 503 from the upstream, connection refused), which cuts the
// limit. A call that ended for another reason (client gone, 400) passes
// ok = true and ttft ≤ 0 when it has no first token: the slot is freed
// without a sample. Calls after the first do nothing.
type Release func(ttft time.Duration, ok bool)

// Concurrency is the adaptive concurrency limit of one upstream (and
// model): lanes partition the limit, with guaranteed shares that apply
// only when it is saturated, and a bounded priority queue holds requests
// that do not fit. It is safe for concurrent use.
//
// Below the limit every request starts at once, whatever its lane. At the
// limit a request queues; each freed slot goes first to the highest lane
// that has waiters and uses less than its guaranteed share, otherwise to
// the highest lane that has waiters. A request waits at most its lane's
// MaxWait and never past its deadline minus the current p90 TTFT (starting
// later would only produce a timeout).
type Concurrency struct {
	name       string
	clock      Clock
	afterFunc  func(time.Duration, func()) Timer
	lanes      [NumLanes]LaneConfig
	maxQueue   int
	shadow     bool
	hard       int // HardLimit; 0 → none
	window     int64
	minSamples int
	pct        float64
	slowWait   time.Duration

	mu       sync.Mutex
	grad     gradient
	win      window
	drain    drainRate
	short    time.Duration // the last window's TTFT percentile
	inflight int
	queued   int
	lane     [NumLanes]laneState
}

type laneState struct {
	inflight, queued int
	q                list.List // of *waiter
	admitted, waited uint64
	shed, timeouts   uint64
	cancelled        uint64
	shadowRejected   uint64
}

type waiter struct {
	lane  Lane
	since time.Time
	until time.Time     // when timer expires it
	elem  *list.Element // nil once decided
	timer Timer
	ready chan struct{} // closed once decided; err says how
	err   error
}

// NewConcurrency returns a Concurrency configured by cfg.
func NewConcurrency(cfg ConcurrencyConfig) (*Concurrency, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	c := &Concurrency{
		name:       cfg.Name,
		clock:      clockOr(cfg.Clock),
		afterFunc:  timerClockOr(clockOr(cfg.Clock)),
		lanes:      cfg.Lanes,
		maxQueue:   cfg.MaxQueue,
		shadow:     cfg.Shadow,
		hard:       cfg.HardLimit,
		window:     int64(cfg.Window),
		minSamples: cfg.MinWindowSamples,
		pct:        cfg.Percentile,
		slowWait:   cfg.SlowStartMaxWait,
		grad: gradient{
			limit:       float64(cfg.InitialLimit),
			min:         float64(cfg.MinLimit),
			max:         float64(cfg.MaxLimit),
			smoothing:   cfg.Smoothing,
			tolerance:   cfg.Tolerance,
			dropBackoff: cfg.DropBackoff,
			longFactor:  2 / float64(cfg.LongWindow+1),
			slow:        !cfg.NoSlowStart && cfg.InitialLimit < cfg.MaxLimit,
			restart:     !cfg.NoSlowStart && cfg.InitialLimit < cfg.MaxLimit,
			slack:       cfg.SlowStartSlack.Seconds(),
		},
	}
	c.win.start = c.clock.Now().UnixNano()
	c.win.samples = make([]time.Duration, 0, maxWindowSamples)
	return c, nil
}

// capacity is the limit as a whole number of slots; c.mu is held.
func (c *Concurrency) capacity() int { return int(c.grad.limit) }

// slots is how many requests may be in flight: the adaptive limit, or in
// Shadow mode the hard limit (unbounded without one); c.mu is held.
func (c *Concurrency) slots() int {
	switch {
	case !c.shadow:
		return c.capacity()
	case c.hard > 0:
		return c.hard
	}
	return math.MaxInt
}

// Acquire waits for an upstream slot for a request of lane. deadline (zero:
// none) and ctx's deadline bound the wait, as does the lane's MaxWait. It
// returns the Release to call exactly once when the upstream call ends
// (for a stream: after its last chunk), or a *RejectError (ErrShed,
// ErrQueueTimeout) with a Retry-After estimate from the queue's drain
// rate, or ctx.Err() when ctx is cancelled while waiting. An invalid lane
// is treated as Batch.
func (c *Concurrency) Acquire(ctx context.Context, lane Lane, deadline time.Time) (Release, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok && (deadline.IsZero() || dl.Before(deadline)) {
		deadline = dl
	}
	rel, w, err := c.enter(c.clock.Now(), lane, deadline)
	if w == nil {
		return rel, err
	}
	select {
	case <-w.ready:
	case <-ctx.Done():
		c.mu.Lock()
		if w.elem != nil {
			c.dequeue(w)
			w.timer.Stop()
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				// The client's deadline ended the wait: a queue timeout,
				// with a Retry-After, like the timer's.
				c.lane[w.lane].timeouts++
				err := c.reject(ErrQueueTimeout, ReasonDeadline, w.lane, c.clock.Now().Sub(w.since))
				c.mu.Unlock()
				return nil, err
			}
			c.lane[w.lane].cancelled++
			c.mu.Unlock()
			return nil, ctx.Err()
		}
		c.mu.Unlock()
		if w.err != nil { // rejected as ctx ended: the rejection says more
			return nil, w.err
		}
		c.releaser(w.lane)(0, true) // granted as ctx ended: give the slot back
		return nil, ctx.Err()
	}
	if w.err != nil {
		return nil, w.err
	}
	return c.releaser(w.lane), nil
}

// enter is Acquire without the wait: it admits (Release), rejects (error)
// or queues the request (a waiter whose ready channel closes once it is
// decided). Tests drive it with explicit times.
func (c *Concurrency) enter(now time.Time, lane Lane, deadline time.Time) (Release, *waiter, error) {
	if !lane.Valid() {
		lane = Batch
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.inflight < c.slots() && c.queued == 0 {
		if c.inflight >= c.capacity() { // Shadow mode: over the adaptive limit
			c.lane[lane].shadowRejected++
		}
		c.admit(lane)
		return c.releaser(lane), nil, nil
	}
	wait, reason := c.lanes[lane].MaxWait, ReasonMaxWait
	if c.grad.slow {
		wait = max(wait, c.slowWait)
	}
	if !deadline.IsZero() {
		if left := deadline.Sub(now) - c.short; left < wait {
			wait, reason = left, ReasonDeadline
		}
	}
	if wait <= 0 {
		c.lane[lane].timeouts++
		return nil, nil, c.reject(ErrQueueTimeout, ReasonDeadline, lane, 0)
	}
	if c.queued >= c.maxQueue && !c.displace(lane, now) {
		c.lane[lane].shed++
		return nil, nil, c.reject(ErrShed, ReasonQueueFull, lane, 0)
	}
	w := &waiter{lane: lane, since: now, until: now.Add(wait), ready: make(chan struct{})}
	w.elem = c.lane[lane].q.PushBack(w)
	c.lane[lane].queued++
	c.lane[lane].waited++
	c.queued++
	w.timer = c.afterFunc(wait, func() { c.expire(w, reason) })
	return nil, w, nil
}

// admit starts a request of lane; c.mu is held.
func (c *Concurrency) admit(lane Lane) {
	c.inflight++
	c.lane[lane].inflight++
	c.lane[lane].admitted++
	c.win.peak = max(c.win.peak, c.inflight)
}

func (c *Concurrency) dequeue(w *waiter) {
	c.lane[w.lane].q.Remove(w.elem)
	w.elem = nil
	c.lane[w.lane].queued--
	c.queued--
}

// displace makes room in a full queue for a request of lane by shedding the
// waiter of the lowest lane below it that would be served last. It reports
// whether there was one; c.mu is held.
func (c *Concurrency) displace(lane Lane, now time.Time) bool {
	for l := Batch; l < lane; l++ {
		q := &c.lane[l].q
		if q.Len() == 0 {
			continue
		}
		e := q.Back() // FIFO serves the back last
		if c.lanes[l].Order == LIFO {
			e = q.Front()
		}
		v := e.Value.(*waiter)
		c.dequeue(v)
		v.timer.Stop()
		c.lane[l].shed++
		v.err = c.reject(ErrShed, ReasonDisplaced, l, now.Sub(v.since))
		close(v.ready)
		return true
	}
	return false
}

// expire ends a wait that ran out of time.
func (c *Concurrency) expire(w *waiter, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if w.elem == nil { // decided meanwhile
		return
	}
	c.dequeue(w)
	c.lane[w.lane].timeouts++
	w.err = c.reject(ErrQueueTimeout, reason, w.lane, c.clock.Now().Sub(w.since))
	close(w.ready)
}

// slowStartEnded shortens the waits that slow start lengthened to the
// lane's MaxWait from the waiter's arrival; waiters past it time out now.
// c.mu is held.
func (c *Concurrency) slowStartEnded(now time.Time) {
	for l := range c.lane {
		q := &c.lane[l].q
		for e := q.Front(); e != nil; {
			w := e.Value.(*waiter)
			e = e.Next()
			until := w.since.Add(c.lanes[l].MaxWait)
			if !until.Before(w.until) {
				continue // its lane's wait or its deadline bounds it already
			}
			w.timer.Stop()
			w.until = until
			if until.After(now) {
				w.timer = c.afterFunc(until.Sub(now), func() { c.expire(w, ReasonMaxWait) })
				continue
			}
			c.dequeue(w)
			c.lane[l].timeouts++
			w.err = c.reject(ErrQueueTimeout, ReasonMaxWait, Lane(l), now.Sub(w.since))
			close(w.ready)
		}
	}
}

// dispatch hands free slots to waiters; c.mu is held.
func (c *Concurrency) dispatch() {
	for c.queued > 0 && c.inflight < c.slots() {
		w := c.next()
		c.dequeue(w)
		w.timer.Stop()
		c.admit(w.lane)
		close(w.ready)
	}
}

// next picks the waiter a free slot goes to: the highest lane with waiters
// below its guaranteed share, else the highest lane with waiters. c.mu is
// held and c.queued > 0.
func (c *Concurrency) next() *waiter {
	capacity := float64(c.capacity())
	pick := Lane(NumLanes)
	for l := Enterprise; ; l-- {
		ls := &c.lane[l]
		if ls.q.Len() > 0 {
			if pick == NumLanes {
				pick = l
			}
			if float64(ls.inflight) < math.Floor(c.lanes[l].Share*capacity) {
				pick = l
				break
			}
		}
		if l == Batch {
			break
		}
	}
	q := &c.lane[pick].q
	e := q.Front()
	if c.lanes[pick].Order == LIFO {
		e = q.Back()
	}
	return e.Value.(*waiter)
}

// releaser returns the Release of one admitted request.
func (c *Concurrency) releaser(lane Lane) Release {
	var done atomic.Bool
	return func(ttft time.Duration, ok bool) {
		if done.Swap(true) {
			return
		}
		now := c.clock.Now().UnixNano()
		c.mu.Lock()
		defer c.mu.Unlock()
		c.inflight--
		c.lane[lane].inflight--
		c.drain.add(now)
		c.observe(now, ttft, ok)
		c.dispatch()
	}
}

// FirstToken feeds the adaptive limit the time to first token of an
// admitted call as soon as it is known: for a stream, the limit learns when
// its first token arrives, not tens of seconds later when it ends. The
// call's Release then passes ttft 0, so that the sample is not counted
// twice. A limit that grew admits waiters at once.
func (c *Concurrency) FirstToken(ttft time.Duration) {
	if ttft <= 0 {
		return
	}
	now := c.clock.Now().UnixNano()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sample(now, ttft, 2) // the stream keeps its slot
	c.dispatch()
}

// observe records one finished call, with its TTFT sample when ttft > 0;
// c.mu is held. Tests drive it with explicit times.
func (c *Concurrency) observe(now int64, ttft time.Duration, ok bool) {
	if !ok {
		c.sample(now, -1, 0)
		return
	}
	c.sample(now, ttft, 1) // the call's slot is free again
}

// sample records one TTFT sample (ttft > 0), an overload failure (ttft <
// 0) or nothing (0), grows the limit by grow if it is in slow start and
// the sample is good, and closes the window when it is due; c.mu is held.
func (c *Concurrency) sample(now int64, ttft time.Duration, grow float64) {
	if c.grad.slow {
		defer func() {
			if !c.grad.slow {
				c.slowStartEnded(time.Unix(0, now))
			}
		}()
	}
	w := &c.win
	switch {
	case ttft < 0:
		w.drops++
		c.grad.slow = false // the window's close cuts the limit
	case ttft > 0:
		c.grad.sample(now, ttft.Seconds(), grow, c.inflight, c.queued)
		if len(w.samples) < maxWindowSamples {
			w.samples = append(w.samples, ttft)
		}
	}
	full := len(w.samples) == maxWindowSamples
	if !full && (now-w.start < c.window || (len(w.samples) < c.minSamples && w.drops == 0)) {
		return
	}
	short := percentile(w.samples, c.pct)
	if short > 0 {
		c.short = short
	}
	c.grad.update(short.Seconds(), w.peak, w.drops > 0)
	w.samples = w.samples[:0]
	w.drops = 0
	w.start = now
	w.peak = c.inflight
}

// reject builds a RejectError with a Retry-After estimate: the waiters of
// lane and above, plus this one, divided by the rate at which slots free
// up; without a measured rate, the lane's MaxWait. c.mu is held.
func (c *Concurrency) reject(err error, reason string, lane Lane, waited time.Duration) *RejectError {
	ahead := 1
	for l := lane; l < NumLanes; l++ {
		ahead += c.lane[l].queued
	}
	ra := c.lanes[lane].MaxWait
	if c.drain.rate > 0 {
		ra = time.Duration(float64(ahead) / c.drain.rate * float64(time.Second))
	}
	ra = min(max(ra, time.Millisecond), time.Minute)
	return &RejectError{Err: err, Reason: reason, Lane: lane, RetryAfter: ra, Waited: waited}
}

// LaneStats is one lane's part of ConcurrencyStats.
type LaneStats struct {
	Lane           Lane
	InFlight       int    // admitted and not yet released
	Queued         int    // waiting now
	Guaranteed     int    // slots guaranteed under saturation at the current limit
	Admitted       uint64 // requests that got a slot (directly or after waiting)
	Waited         uint64 // requests that had to queue
	Shed           uint64 // ErrShed: queue full or displaced
	Timeouts       uint64 // ErrQueueTimeout: lane MaxWait or deadline
	Cancelled      uint64 // the caller's context ended while queued
	ShadowRejected uint64 // shadow mode: admitted beyond the limit
}

// ConcurrencyStats is a snapshot of a Concurrency.
type ConcurrencyStats struct {
	Name      string
	Limit     int           // the adaptive limit now
	InFlight  int           // admitted and not yet released
	Queued    int           // waiting now
	TTFT      time.Duration // TTFT percentile of the last closed window
	LongTTFT  time.Duration // long-term TTFT the gradient compares with
	DrainRate float64       // slots freed per second
	SlowStart bool          // the limit is still in slow start
	BaseTTFT  time.Duration // slow start's no-load TTFT estimate (0: none yet)
	Lanes     [NumLanes]LaneStats
}

// Stats returns a snapshot.
func (c *Concurrency) Stats() ConcurrencyStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := ConcurrencyStats{
		Name:      c.name,
		Limit:     c.capacity(),
		InFlight:  c.inflight,
		Queued:    c.queued,
		TTFT:      c.short,
		LongTTFT:  time.Duration(c.grad.long * float64(time.Second)),
		DrainRate: c.drain.rate,
		SlowStart: c.grad.slow,
		BaseTTFT:  time.Duration(c.grad.base * float64(time.Second)),
	}
	for l := range s.Lanes {
		ls := &c.lane[l]
		s.Lanes[l] = LaneStats{
			Lane:           Lane(l),
			InFlight:       ls.inflight,
			Queued:         ls.queued,
			Guaranteed:     int(c.lanes[l].Share * float64(c.capacity())),
			Admitted:       ls.admitted,
			Waited:         ls.waited,
			Shed:           ls.shed,
			Timeouts:       ls.timeouts,
			Cancelled:      ls.cancelled,
			ShadowRejected: ls.shadowRejected,
		}
	}
	return s
}
