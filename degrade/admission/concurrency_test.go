package admission

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func newTestConcurrency(t *testing.T, cfg ConcurrencyConfig) (*Concurrency, *fakeClock) {
	t.Helper()
	clk := newFakeClock()
	if cfg.Clock == nil {
		cfg.Clock = clk
	}
	c, err := NewConcurrency(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c, clk
}

// fixed is a config whose limit stays at n (no adaptation within a test).
func fixed(n int) ConcurrencyConfig {
	return ConcurrencyConfig{InitialLimit: n, MinLimit: n, MaxLimit: n}
}

func decided(w *waiter) bool {
	select {
	case <-w.ready:
		return true
	default:
		return false
	}
}

// mustAdmit enters a request that must start at once.
func mustAdmit(t *testing.T, c *Concurrency, clk *fakeClock, lane Lane) Release {
	t.Helper()
	rel, w, err := c.enter(clk.Now(), lane, time.Time{})
	if err != nil || w != nil || rel == nil {
		t.Fatalf("%s request not admitted at once: %v, queued %v", lane, err, w != nil)
	}
	return rel
}

// mustQueue enters a request that must wait.
func mustQueue(t *testing.T, c *Concurrency, clk *fakeClock, lane Lane, deadline time.Time) *waiter {
	t.Helper()
	rel, w, err := c.enter(clk.Now(), lane, deadline)
	if err != nil || w == nil || rel != nil {
		t.Fatalf("%s request not queued: %v", lane, err)
	}
	return w
}

func rejection(t *testing.T, err error, want error, reason string) *RejectError {
	t.Helper()
	var re *RejectError
	if !errors.Is(err, want) || !errors.As(err, &re) || re.Reason != reason {
		t.Fatalf("got %v, want %v (%s)", err, want, reason)
	}
	if re.RetryAfter <= 0 {
		t.Errorf("RetryAfter %v, want > 0", re.RetryAfter)
	}
	return re
}

func TestConcurrencyBelowLimitAnyLaneBorrows(t *testing.T) {
	c, clk := newTestConcurrency(t, fixed(10))
	var rels []Release
	for range 10 { // batch's share is 1 slot, but nothing is saturated yet
		rels = append(rels, mustAdmit(t, c, clk, Batch))
	}
	w := mustQueue(t, c, clk, Enterprise, time.Time{})
	if st := c.Stats(); st.InFlight != 10 || st.Queued != 1 || st.Lanes[Batch].InFlight != 10 {
		t.Fatalf("stats: %+v", st)
	}
	rels[0](0, true)
	if !decided(w) || w.err != nil {
		t.Fatal("the freed slot did not go to the waiter")
	}
	rels[0](0, true) // a second Release is a no-op
	if st := c.Stats(); st.InFlight != 10 || st.Lanes[Enterprise].InFlight != 1 {
		t.Fatalf("after release: %+v", st)
	}
}

func TestConcurrencyPriorityOrder(t *testing.T) {
	c, clk := newTestConcurrency(t, fixed(10))
	var rels []Release
	for range 10 {
		rels = append(rels, mustAdmit(t, c, clk, Batch))
	}
	// Arrival order; every lane except batch is below its share.
	names := []string{"f1", "p1", "e1", "p2", "f2", "b1"}
	lanes := []Lane{Free, Paid, Enterprise, Paid, Free, Batch}
	ws := map[string]*waiter{}
	for i, n := range names {
		ws[n] = mustQueue(t, c, clk, lanes[i], time.Time{})
	}
	// Enterprise first, paid in arrival order (FIFO), free newest first
	// (LIFO), batch last.
	for i, want := range []string{"e1", "p1", "p2", "f2", "f1", "b1"} {
		rels[i](0, true)
		for n, w := range ws {
			if decided(w) && n != want {
				t.Fatalf("slot %d went to %s, want %s", i, n, want)
			}
		}
		if !decided(ws[want]) || ws[want].err != nil {
			t.Fatalf("slot %d: %s not admitted", i, want)
		}
		delete(ws, want)
	}
}

func TestConcurrencyGuaranteedShareUnderSaturation(t *testing.T) {
	c, clk := newTestConcurrency(t, fixed(10)) // shares: enterprise 3, paid 4, free 2, batch 1
	var ent []Release
	for range 9 { // enterprise borrowed far beyond its 3
		ent = append(ent, mustAdmit(t, c, clk, Enterprise))
	}
	mustAdmit(t, c, clk, Free)
	e := mustQueue(t, c, clk, Enterprise, time.Time{})
	f := mustQueue(t, c, clk, Free, time.Time{})
	p := mustQueue(t, c, clk, Paid, time.Time{})
	if st := c.Stats(); st.Lanes[Paid].Guaranteed != 4 || st.Lanes[Free].Guaranteed != 2 {
		t.Fatalf("guarantees: %+v", st.Lanes)
	}
	ent[0](0, true) // paid is below its share: it goes first
	if !decided(p) || decided(e) || decided(f) {
		t.Fatal("first slot: want paid (below its guaranteed share)")
	}
	ent[1](0, true) // free is below its share (1 of 2): before enterprise
	if !decided(f) || decided(e) {
		t.Fatal("second slot: want free (below its guaranteed share) before enterprise (above)")
	}
	ent[2](0, true)
	if !decided(e) {
		t.Fatal("third slot: want enterprise")
	}
}

func TestConcurrencyMaxWait(t *testing.T) {
	c, clk := newTestConcurrency(t, fixed(1))
	mustAdmit(t, c, clk, Paid)
	p := mustQueue(t, c, clk, Paid, time.Time{})
	f := mustQueue(t, c, clk, Free, time.Time{})
	clk.Advance(500*time.Millisecond - 1)
	if decided(f) {
		t.Fatal("free decided before 500ms")
	}
	clk.Advance(1)
	if !decided(f) {
		t.Fatal("free still waiting after 500ms")
	}
	if re := rejection(t, f.err, ErrQueueTimeout, ReasonMaxWait); re.Waited != 500*time.Millisecond || re.Lane != Free {
		t.Errorf("free: %+v", re)
	}
	clk.Advance(1500*time.Millisecond - 1)
	if decided(p) {
		t.Fatal("paid decided before 2s")
	}
	clk.Advance(1)
	rejection(t, p.err, ErrQueueTimeout, ReasonMaxWait)
	if st := c.Stats(); st.Queued != 0 || st.Lanes[Paid].Timeouts != 1 || st.Lanes[Free].Timeouts != 1 || clk.pending() != 0 {
		t.Fatalf("stats: %+v, timers %d", st, clk.pending())
	}
}

func TestConcurrencyWaitNeverExceedsDeadline(t *testing.T) {
	c, clk := newTestConcurrency(t, fixed(1))
	mustAdmit(t, c, clk, Paid)
	w := mustQueue(t, c, clk, Paid, clk.Now().Add(300*time.Millisecond))
	clk.Advance(300*time.Millisecond - 1)
	if decided(w) {
		t.Fatal("decided before the deadline")
	}
	clk.Advance(1)
	if re := rejection(t, w.err, ErrQueueTimeout, ReasonDeadline); re.Waited != 300*time.Millisecond {
		t.Errorf("waited %v", re.Waited)
	}
	// The wait leaves room for the first token: with a p90 TTFT of 100ms a
	// 300ms deadline allows 200ms of queueing.
	c.mu.Lock()
	c.short = 100 * time.Millisecond
	c.mu.Unlock()
	w = mustQueue(t, c, clk, Paid, clk.Now().Add(300*time.Millisecond))
	clk.Advance(200 * time.Millisecond)
	rejection(t, w.err, ErrQueueTimeout, ReasonDeadline)
	// A deadline with no room at all fails at once, without queueing.
	_, w, err := c.enter(clk.Now(), Paid, clk.Now().Add(50*time.Millisecond))
	if w != nil {
		t.Fatal("queued a request whose deadline leaves no time")
	}
	rejection(t, err, ErrQueueTimeout, ReasonDeadline)
}

func TestConcurrencyQueueFullShedsLowestLaneFirst(t *testing.T) {
	cfg := fixed(1)
	cfg.MaxQueue = 3
	c, clk := newTestConcurrency(t, cfg)
	mustAdmit(t, c, clk, Enterprise)
	b1 := mustQueue(t, c, clk, Batch, time.Time{})
	f1 := mustQueue(t, c, clk, Free, time.Time{})
	f2 := mustQueue(t, c, clk, Free, time.Time{})

	mustQueue(t, c, clk, Paid, time.Time{}) // displaces batch
	if !decided(b1) || decided(f1) || decided(f2) {
		t.Fatal("a full queue did not displace the batch waiter first")
	}
	rejection(t, b1.err, ErrShed, ReasonDisplaced)
	mustQueue(t, c, clk, Paid, time.Time{}) // displaces the free waiter served last (LIFO: the oldest)
	if !decided(f1) || decided(f2) {
		t.Fatal("want the oldest free waiter displaced")
	}
	rejection(t, f1.err, ErrShed, ReasonDisplaced)
	for _, l := range []Lane{Free, Batch} { // nothing lower to displace
		_, w, err := c.enter(clk.Now(), l, time.Time{})
		if w != nil {
			t.Fatalf("%s queued into a full queue", l)
		}
		rejection(t, err, ErrShed, ReasonQueueFull)
	}
	st := c.Stats()
	if st.Lanes[Batch].Shed != 2 || st.Lanes[Free].Shed != 2 || st.Lanes[Paid].Shed != 0 || st.Queued != 3 {
		t.Fatalf("stats: %+v", st)
	}
}

func TestConcurrencyRetryAfterFromDrainRate(t *testing.T) {
	cfg := fixed(10)
	cfg.MaxQueue = 3
	c, clk := newTestConcurrency(t, cfg)
	// 40 calls finish over 2s: 20 slots free up per second.
	for range 40 {
		rel := mustAdmit(t, c, clk, Paid)
		clk.Advance(50 * time.Millisecond)
		rel(0, true)
	}
	if r := c.Stats().DrainRate; r < 19 || r > 21 {
		t.Fatalf("drain rate %v, want 20/s", r)
	}
	for range 10 {
		mustAdmit(t, c, clk, Paid)
	}
	for range 3 {
		mustQueue(t, c, clk, Paid, time.Time{})
	}
	// A free request finds the queue full of paid waiters: 3 ahead of it,
	// plus itself, at 20/s.
	_, _, err := c.enter(clk.Now(), Free, time.Time{})
	if re := rejection(t, err, ErrShed, ReasonQueueFull); re.RetryAfter != 200*time.Millisecond {
		t.Fatalf("RetryAfter %v, want 200ms", re.RetryAfter)
	}
	if ra, ok := RetryAfter(err); !ok || ra != 200*time.Millisecond {
		t.Fatalf("RetryAfter(err) = %v, %v", ra, ok)
	}
}

func TestConcurrencyShadow(t *testing.T) {
	cfg := fixed(2)
	cfg.Shadow = true
	c, clk := newTestConcurrency(t, cfg)
	for range 5 {
		mustAdmit(t, c, clk, Free)
	}
	if st := c.Stats(); st.InFlight != 5 || st.Lanes[Free].ShadowRejected != 3 || st.Queued != 0 {
		t.Fatalf("shadow stats: %+v", st)
	}
}

// TestConcurrencyHardLimit: a hard limit lowers the adaptive bounds and
// holds in shadow mode, where the adaptive limit is only observed.
func TestConcurrencyHardLimit(t *testing.T) {
	c, clk := newTestConcurrency(t, ConcurrencyConfig{HardLimit: 3})
	if st := c.Stats(); st.Limit != 3 {
		t.Fatalf("limit %d with the defaults under a hard limit of 3, want 3", st.Limit)
	}
	cfg := fixed(2)
	cfg.Shadow, cfg.HardLimit = true, 3
	c, clk = newTestConcurrency(t, cfg)
	var rels []Release
	for range 2 {
		rels = append(rels, mustAdmit(t, c, clk, Paid))
	}
	if st := c.Stats(); st.Lanes[Paid].ShadowRejected != 0 {
		t.Fatalf("shadow-rejected within the limit: %+v", st.Lanes[Paid])
	}
	// The adaptive limit (2) is only observed; the hard one (3) holds.
	rels = append(rels, mustAdmit(t, c, clk, Paid))
	w := mustQueue(t, c, clk, Paid, time.Time{})
	if st := c.Stats(); st.InFlight != 3 || st.Queued != 1 || st.Lanes[Paid].ShadowRejected != 1 {
		t.Fatalf("stats at the hard limit: %+v", st)
	}
	rels[0](10*time.Millisecond, true)
	if !decided(w) || w.err != nil {
		t.Fatalf("waiter not admitted when a slot freed: %v", w.err)
	}
	if st := c.Stats(); st.InFlight != 3 || st.Queued != 0 {
		t.Fatalf("stats after the handover: %+v", st)
	}
}

func TestConcurrencyAdaptsToTTFT(t *testing.T) {
	c, clk := newTestConcurrency(t, ConcurrencyConfig{})
	round := func(ttft time.Duration, ok bool) int {
		var rels []Release
		for range c.Stats().Limit { // use the whole limit: not app-limited
			rels = append(rels, mustAdmit(t, c, clk, Paid))
		}
		clk.Advance(time.Second)
		for _, r := range rels {
			r(ttft, ok)
		}
		return c.Stats().Limit
	}
	limit := c.Stats().Limit
	if limit != DefaultInitialLimit {
		t.Fatalf("initial limit %d", limit)
	}
	for i := range 30 {
		next := round(200*time.Millisecond, true)
		if next < limit {
			t.Fatalf("window %d: limit fell from %d to %d under steady TTFT", i, limit, next)
		}
		limit = next
	}
	if limit < 35 {
		t.Fatalf("limit %d after 30 good windows, want growth from 20 (≈ +0.8 per window)", limit)
	}
	grown := limit
	for ttft := 300 * time.Millisecond; ttft <= 1200*time.Millisecond; ttft += 100 * time.Millisecond {
		// A round's first window still holds the previous round's samples,
		// and 300ms is within tolerance (1.5 × 200ms): judge from 500ms on.
		next := round(ttft, true)
		if ttft >= 500*time.Millisecond && next > limit {
			t.Fatalf("TTFT %v: limit rose from %d to %d", ttft, limit, next)
		}
		limit = next
	}
	if limit > grown*3/4 {
		t.Fatalf("limit %d after rising TTFT, want well below %d", limit, grown)
	}
	if st := c.Stats(); st.TTFT < 1100*time.Millisecond || st.LongTTFT <= 200*time.Millisecond {
		t.Errorf("TTFT stats: %+v", st)
	}
	// Overload failures (429/503, timeouts) cut the limit, down to MinLimit.
	for range 100 {
		limit = round(0, false)
	}
	if limit != DefaultMinLimit {
		t.Fatalf("limit %d after overload failures, want MinLimit %d", limit, DefaultMinLimit)
	}
}

func TestGradientAppLimited(t *testing.T) {
	g := gradient{limit: 20, min: 5, max: 500, smoothing: 0.2, tolerance: 1.5, dropBackoff: 0.9, longFactor: 2.0 / 101}
	for range 20 {
		g.update(0.2, 5, false) // 5 in flight of 20: the limit was never tested
	}
	if g.limit != 20 {
		t.Fatalf("limit %v moved while app-limited", g.limit)
	}
	g.update(0.2, 20, false)
	if g.limit <= 20 || g.limit > 21 {
		t.Fatalf("limit %v after one used window, want 20.8", g.limit)
	}
	for range 1000 {
		g.update(0.2, int(g.limit), false)
	}
	if g.limit != 500 {
		t.Fatalf("limit %v, want capped at 500", g.limit)
	}
	g.update(0, 500, false) // a window without samples changes nothing
	if g.limit != 500 {
		t.Fatalf("limit %v after an empty window", g.limit)
	}
}

func TestAcquireRealClock(t *testing.T) {
	c, err := NewConcurrency(fixed(1))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	rel, err := c.Acquire(ctx, Paid, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	// A short deadline bounds the wait.
	start := time.Now()
	_, err = c.Acquire(ctx, Paid, start.Add(30*time.Millisecond))
	if el := time.Since(start); !errors.Is(err, ErrQueueTimeout) || el > 5*time.Second {
		t.Fatalf("Acquire with a 30ms deadline: %v after %v", err, el)
	}
	// So does the context's deadline.
	dctx, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
	_, err = c.Acquire(dctx, Paid, time.Time{})
	cancel()
	var re *RejectError
	if !errors.As(err, &re) || re.Reason != ReasonDeadline {
		t.Fatalf("Acquire under a 30ms context: %v", err)
	}

	// A waiter gets the slot its predecessor releases.
	got := make(chan error, 1)
	go func() {
		r, err := c.Acquire(ctx, Enterprise, time.Time{})
		if err == nil {
			r(10*time.Millisecond, true)
		}
		got <- err
	}()
	waitQueued(t, c, 1)
	rel(10*time.Millisecond, true)
	if err := <-got; err != nil {
		t.Fatalf("waiter: %v", err)
	}

	// A waiter whose client leaves is removed from the queue.
	rel, _ = c.Acquire(ctx, Paid, time.Time{})
	cctx, cancel := context.WithCancel(ctx)
	go func() {
		_, err := c.Acquire(cctx, Paid, time.Time{})
		got <- err
	}()
	waitQueued(t, c, 1)
	cancel()
	if err := <-got; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled waiter: %v", err)
	}
	rel(0, true)
	if st := c.Stats(); st.Queued != 0 || st.InFlight != 0 || st.Lanes[Paid].Cancelled != 1 {
		t.Fatalf("stats: %+v", st)
	}
	if _, err := c.Acquire(cctx, Paid, time.Time{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Acquire with a done context: %v", err)
	}
}

// nowOnly is a Clock without timers, like degrade.Clock.
type nowOnly struct{ t time.Time }

func (n nowOnly) Now() time.Time { return n.t }

func TestConcurrencyNowOnlyClockUsesRealTimers(t *testing.T) {
	cfg := fixed(1)
	cfg.Clock = nowOnly{t0}
	c, err := NewConcurrency(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Acquire(context.Background(), Paid, time.Time{}); err != nil {
		t.Fatal(err)
	}
	_, err = c.Acquire(context.Background(), Paid, t0.Add(20*time.Millisecond))
	if re := rejection(t, err, ErrQueueTimeout, ReasonDeadline); re.Waited != 0 { // the frozen clock measured no wait
		t.Fatalf("waited %v on a frozen clock", re.Waited)
	}
}

// waitQueued polls until n requests wait: the waiter runs in another
// goroutine, so its arrival in the queue is observed, not slept for.
func waitQueued(t *testing.T, c *Concurrency, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for c.Stats().Queued != n {
		if time.Now().After(deadline) {
			t.Fatalf("never %d queued: %+v", n, c.Stats())
		}
		time.Sleep(time.Millisecond) // polling interval, not synchronisation by sleep
	}
}

// TestAcquireConcurrent hammers a small limit from every lane under -race:
// the limit is never exceeded and every call returns.
func TestAcquireConcurrent(t *testing.T) {
	cfg := fixed(4)
	cfg.MaxQueue = 8
	c, err := NewConcurrency(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var inflight, peak atomic.Int64
	var admitted, rejected atomic.Int64
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for range 30 {
				rel, err := c.Acquire(context.Background(), Lane(g%NumLanes), time.Now().Add(time.Second))
				if err != nil {
					if !errors.Is(err, ErrShed) && !errors.Is(err, ErrQueueTimeout) {
						t.Errorf("unexpected error %v", err)
					}
					rejected.Add(1)
					continue
				}
				n := inflight.Add(1)
				for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
				}
				admitted.Add(1)
				inflight.Add(-1)
				rel(time.Millisecond, true)
			}
		})
	}
	wg.Wait()
	if p := peak.Load(); p > 4 {
		t.Fatalf("peak in flight %d above the limit 4", p)
	}
	st := c.Stats()
	if st.InFlight != 0 || st.Queued != 0 || admitted.Load()+rejected.Load() != 480 {
		t.Fatalf("after the storm: %+v (admitted %d, rejected %d)", st, admitted.Load(), rejected.Load())
	}
}

func TestConcurrencyConfigValidate(t *testing.T) {
	bad := []ConcurrencyConfig{
		{MinLimit: 50, MaxLimit: 10},
		{InitialLimit: 1000},
		{Smoothing: 2},
		{Tolerance: 0.5},
		{DropBackoff: 1},
		{Lanes: [NumLanes]LaneConfig{Paid: {Share: 0.8}, Free: {Share: 0.5}}},
		{Lanes: [NumLanes]LaneConfig{Paid: {Order: 7}}},
		{MaxQueue: -1},
	}
	for _, cfg := range bad {
		if _, err := NewConcurrency(cfg); err == nil {
			t.Errorf("NewConcurrency(%+v): no error", cfg)
		}
	}
	d := ConcurrencyConfig{Lanes: [NumLanes]LaneConfig{Paid: {Share: 0.5}}}.withDefaults()
	if d.Lanes[Paid].Share != 0.5 || d.Lanes[Free].Share != 0 || d.Lanes[Free].Order != LIFO || d.Lanes[Paid].MaxWait != 2*time.Second {
		t.Errorf("defaults with one share set: %+v", d.Lanes)
	}
}
