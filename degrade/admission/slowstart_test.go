package admission

import (
	"testing"
	"time"
)

// streamSim drives a Concurrency with long streams on a fake clock: each
// admitted call has its first token ttft after it started (fed through
// FirstToken, as the pipeline does) and ends hold after that (Release with
// no sample). Time moves in steps; nothing sleeps.
type streamSim struct {
	t        *testing.T
	c        *Concurrency
	clk      *fakeClock
	ttft     time.Duration // of calls admitted from now on
	hold     time.Duration // stream length after the first token
	calls    []*simCall
	waiting  []*waiter
	admitted int // at once or after waiting
	rejected int // shed or timed out
}

type simCall struct {
	rel        Release
	ttft       time.Duration
	first, end time.Time
	fed        bool
}

func newStreamSim(t *testing.T, cfg ConcurrencyConfig, ttft, hold time.Duration) *streamSim {
	c, clk := newTestConcurrency(t, cfg)
	return &streamSim{t: t, c: c, clk: clk, ttft: ttft, hold: hold}
}

func (s *streamSim) start(rel Release) {
	now := s.clk.Now()
	s.admitted++
	s.calls = append(s.calls, &simCall{rel: rel, ttft: s.ttft, first: now.Add(s.ttft), end: now.Add(s.ttft + s.hold)})
}

// arrive enters n new free-lane requests, as a burst.
func (s *streamSim) arrive(n int) {
	for range n {
		rel, w, err := s.c.enter(s.clk.Now(), Free, time.Time{})
		switch {
		case err != nil:
			s.rejected++
		case w != nil:
			s.waiting = append(s.waiting, w)
		default:
			s.start(rel)
		}
	}
}

// step moves time by d and plays what fell due: first tokens, stream ends,
// waiters admitted or timed out.
func (s *streamSim) step(d time.Duration) {
	s.clk.Advance(d) // fires queue timeouts
	now := s.clk.Now()
	live := s.calls[:0]
	for _, call := range s.calls {
		if !call.fed && !call.first.After(now) {
			call.fed = true
			s.c.FirstToken(call.ttft)
		}
		if !call.end.After(now) {
			call.rel(0, true)
			continue
		}
		live = append(live, call)
	}
	s.calls = live
	still := s.waiting[:0]
	for _, w := range s.waiting {
		switch {
		case !decided(w):
			still = append(still, w)
		case w.err != nil:
			s.rejected++
		default:
			s.start(s.c.releaser(w.lane))
		}
	}
	s.waiting = still
}

// The ship configuration (cmd/internal/app): initial 100, max 4096, a
// queue as long as max_in_flight.
func shipConfig() ConcurrencyConfig {
	return ConcurrencyConfig{InitialLimit: 100, MaxLimit: 4096, MaxQueue: 4096}
}

func TestSlowStartAdmitsBurstAtSteadyTTFT(t *testing.T) {
	const ttft = 200 * time.Millisecond
	s := newStreamSim(t, shipConfig(), ttft, 30*time.Second)
	if st := s.c.Stats(); !st.SlowStart || st.Limit != 100 {
		t.Fatalf("start: %+v", st)
	}
	s.arrive(2000)
	if s.admitted != 100 || len(s.waiting) != 1900 {
		t.Fatalf("burst: %d admitted, %d waiting, want 100 and 1900", s.admitted, len(s.waiting))
	}
	// Each first token adds two slots, so the calls started per TTFT
	// double: the limit goes 100 → 300 → 700 → 1500 → 3100, four TTFTs.
	var limits []int
	for elapsed := time.Duration(0); elapsed < 6*ttft; elapsed += 10 * time.Millisecond {
		s.step(10 * time.Millisecond)
		if elapsed%ttft == 0 {
			limits = append(limits, s.c.Stats().Limit)
		}
	}
	st := s.c.Stats()
	t.Logf("limit per TTFT: %v; then %d, %d in flight, base TTFT %v", limits, st.Limit, st.InFlight, st.BaseTTFT)
	if s.admitted != 2000 || s.rejected != 0 || st.InFlight != 2000 {
		t.Fatalf("after 6 TTFTs: %d admitted, %d rejected, %d in flight; want all 2000 admitted", s.admitted, s.rejected, st.InFlight)
	}
	if !st.SlowStart || st.BaseTTFT != ttft {
		t.Errorf("steady TTFT ended slow start or misjudged the base: %+v", st)
	}
	// It grows only while used (in flight and waiting ≥ limit / 2): it
	// stops at about twice the demand.
	for range 100 {
		s.step(10 * time.Millisecond)
	}
	if l := s.c.Stats().Limit; l < 2000 || l > 4010 {
		t.Fatalf("limit %d with 2000 streams open, want 2000..4010", l)
	}
	if to := s.c.Stats().Lanes[Free].Timeouts; to != 0 {
		t.Fatalf("%d queue timeouts", to)
	}
}

// Without slow start the burst mostly times out: the gradient adds about
// 0.8 per window, and the free lane waits 500ms.
func TestNoSlowStartShedsBurst(t *testing.T) {
	cfg := shipConfig()
	cfg.NoSlowStart = true
	s := newStreamSim(t, cfg, 200*time.Millisecond, 30*time.Second)
	s.arrive(2000)
	for range 200 {
		s.step(10 * time.Millisecond)
	}
	if s.admitted > 110 || s.rejected < 1890 {
		t.Fatalf("%d admitted, %d rejected: want the old behaviour (100 admitted)", s.admitted, s.rejected)
	}
}

func TestSlowStartEndsAndClampsWhenTTFTRises(t *testing.T) {
	const hold = 3 * time.Second
	s := newStreamSim(t, shipConfig(), 200*time.Millisecond, hold)
	// Steady load: 500 new streams a second, each open 3.2s — about 1,600
	// open at once.
	tick := func() {
		s.arrive(5)
		s.step(10 * time.Millisecond)
	}
	for range 1000 { // 10s
		tick()
	}
	st := s.c.Stats()
	if !st.SlowStart || s.rejected != 0 {
		t.Fatalf("healthy phase: %+v, %d rejected", st, s.rejected)
	}
	peak := st.Limit
	t.Logf("healthy: limit %d, %d in flight", peak, st.InFlight)
	// The upstream slows down: TTFT 200ms → 2s for calls from now on.
	s.ttft = 2 * time.Second
	var limits []int
	ended := time.Duration(-1)
	for i := range 1000 { // 10s
		tick()
		st := s.c.Stats()
		if ended < 0 && !st.SlowStart {
			ended = time.Duration(i+1) * 10 * time.Millisecond
		}
		if (i+1)%100 == 0 {
			limits = append(limits, st.Limit)
		}
	}
	t.Logf("TTFT 2s from t=0: slow start ended at %v; limit each second: %v", ended, limits)
	// The first slow calls show their TTFT 2s later; after a second of slow
	// groups slow start ends, and the limit falls to half the calls in
	// flight.
	if ended < 0 || ended > 3200*time.Millisecond {
		t.Fatalf("slow start ended at %v, want within 3.2s (one TTFT and a second)", ended)
	}
	if limits[3] > peak/4+10 {
		t.Fatalf("limit %d 4s after TTFT rose, want ≤ a quarter of %d (half the calls in flight)", limits[3], peak)
	}
	// Then the gradient takes it down further, window by window.
	for i := 4; i < len(limits); i++ {
		if limits[i] > limits[i-1] {
			t.Fatalf("limit rose from %d to %d at %ds under a high TTFT", limits[i-1], limits[i], i+1)
		}
	}
	if last := limits[len(limits)-1]; last > peak*17/100 {
		t.Fatalf("limit %d 10s after TTFT rose, want ≤ 17%% of %d", last, peak)
	}
}

func TestSlowStartEndsOnOverloadAndShortensWaits(t *testing.T) {
	s := newStreamSim(t, shipConfig(), 200*time.Millisecond, 30*time.Second)
	s.arrive(150) // 100 in flight, 50 waiting with slow start's 5s wait
	s.step(time.Second)
	if len(s.waiting) != 0 {
		// 100 first tokens grew the limit to 200: all admitted.
		t.Fatalf("%d still waiting", len(s.waiting))
	}
	s.step(time.Second)
	st := s.c.Stats()
	s.ttft = time.Hour                    // no first token while they wait
	s.arrive(st.Limit - st.InFlight + 20) // fill the limit, 20 waiting
	if len(s.waiting) != 20 {
		t.Fatalf("%d waiting, want 20", len(s.waiting))
	}
	s.step(time.Second) // they have waited 1s, more than free's 500ms
	if len(s.waiting) != 20 {
		t.Fatalf("%d waiting after 1s in slow start, want 20 (5s wait)", len(s.waiting))
	}
	// An overload failure (a 503 from the upstream) ends slow start: the
	// waiters fall back to the free lane's 500ms, which they have used up.
	s.calls[0].rel(0, false)
	s.calls = s.calls[1:]
	s.step(0)
	if st := s.c.Stats(); st.SlowStart || len(s.waiting) != 0 || st.Lanes[Free].Timeouts != 20 {
		t.Fatalf("after a 503: slow start %v, %d waiting, %d timeouts; want ended, 0, 20",
			st.SlowStart, len(s.waiting), st.Lanes[Free].Timeouts)
	}
	// The window's close cuts the limit by DropBackoff.
	before := s.c.Stats().Limit
	s.calls[0].rel(0, false)
	s.calls = s.calls[1:]
	s.step(time.Second)
	s.calls[0].rel(0, false)
	s.calls = s.calls[1:]
	if after := s.c.Stats().Limit; after >= before {
		t.Fatalf("limit %d after overload failures, want below %d", after, before)
	}
}

func TestSlowStartIdleLimitDoesNotGrow(t *testing.T) {
	s := newStreamSim(t, shipConfig(), 200*time.Millisecond, 100*time.Millisecond)
	for range 500 { // 10 calls at a time: far below the limit of 100
		s.arrive(1)
		s.step(20 * time.Millisecond)
	}
	if l := s.c.Stats().Limit; l != 100 {
		t.Fatalf("limit %d after an idle period, want 100", l)
	}
}

func TestSlowStartOffWhenLimitFixed(t *testing.T) {
	c, _ := newTestConcurrency(t, fixed(10))
	if c.Stats().SlowStart {
		t.Fatal("slow start with MinLimit = MaxLimit")
	}
}

// Slow start judges a group of ten samples by its median — four slow calls
// in ten are jitter, six are congestion — and ends when groups stay slow
// for a second: one slow group is a stall.
func TestSlowStartGroupMedian(t *testing.T) {
	g := gradient{limit: 100, min: 5, max: 4096, tolerance: 1.5, slack: 0.5, slow: true}
	now := t0.UnixNano()
	feed := func(slow int) bool {
		ended := false
		for i := range slowStartGroup {
			ttft := 0.2
			if i < slow {
				ttft = 5
			}
			ended = g.sample(now, ttft, 2, 100, 0) || ended
		}
		now += int64(100 * time.Millisecond)
		return ended
	}
	if feed(0) || g.base != 0.2 {
		t.Fatalf("first group: base %v, slow start %v", g.base, g.slow)
	}
	if feed(4) || !g.slow {
		t.Fatal("four slow samples in ten ended slow start")
	}
	for range 5 { // a stall: half a second of slow groups, then a fast one
		if feed(10) {
			t.Fatal("half a second of slow groups ended slow start")
		}
	}
	feed(0)
	for i := 0; ; i++ { // congestion: slow groups for a second
		ended := feed(6)
		if ended {
			if i != 10 {
				t.Fatalf("slow start ended at the slow group %d, want 10 (1s after the first)", i)
			}
			break
		}
		if i > 10 {
			t.Fatal("a second of slow groups did not end slow start")
		}
	}
	if g.limit != 50 { // half the 100 calls in flight
		t.Fatalf("limit %v after slow start ended, want 50", g.limit)
	}
	// With calls in flight and queued under a quarter of the limit, a slow
	// group ends nothing.
	g = gradient{limit: 100, min: 5, max: 4096, tolerance: 1.5, slack: 0.5, slow: true, base: 0.2}
	for range slowStartGroup {
		g.sample(now, 5, 2, 20, 4)
	}
	if !g.slow || g.limit != 100 || g.base != 0.2 {
		t.Fatalf("a slow group at 10 calls in flight of 100: slow start %v, limit %v, base %v", g.slow, g.limit, g.base)
	}
}

// TestSlowStartRestartsWhenUpstreamRecovers: after an incident clamped the
// limit, an upstream back at its no-load TTFT gets its capacity back within
// seconds (slow start again), where the gradient alone would leave the
// callers shed; a constant high TTFT never restarts it.
func TestSlowStartRestartsWhenUpstreamRecovers(t *testing.T) {
	const hold = 3 * time.Second
	s := newStreamSim(t, shipConfig(), 200*time.Millisecond, hold)
	tick := func() { // about 1,600 streams open at once, as above
		s.arrive(5)
		s.step(10 * time.Millisecond)
	}
	for range 1000 { // 10s healthy
		tick()
	}
	s.ttft = 2 * time.Second
	for range 1000 { // 10s of incident: slow start ends, the limit falls
		tick()
	}
	st := s.c.Stats()
	if st.SlowStart {
		t.Fatalf("incident: still in slow start: %+v", st)
	}
	clamped := st.Limit
	s.ttft = 200 * time.Millisecond // the upstream has recovered
	restarted := time.Duration(-1)
	for i := range 2000 { // 20s
		tick()
		if restarted < 0 && s.c.Stats().SlowStart {
			restarted = time.Duration(i+1) * 10 * time.Millisecond
		}
		if i == 1499 {
			s.rejected = 0 // count the last 5s only
		}
	}
	st = s.c.Stats()
	t.Logf("clamped limit %d; slow start again after %v; limit %d, %d in flight, %d shed in the last 5s", clamped, restarted, st.Limit, st.InFlight, s.rejected)
	// The stored-up waiters and the calls of the incident drain first; then
	// five healthy, full windows.
	if restarted < 0 || restarted > 9*time.Second {
		t.Fatalf("slow start began again after %v, want within 9s of the recovery", restarted)
	}
	if st.Limit < 1600 || s.rejected != 0 {
		t.Fatalf("recovered: limit %d (want ≥ 1,600, the load), %d shed in the last 5s", st.Limit, s.rejected)
	}

	// A high TTFT that never recovers: no restart, however long.
	s2 := newStreamSim(t, shipConfig(), 200*time.Millisecond, hold)
	for range 1000 {
		s2.arrive(5)
		s2.step(10 * time.Millisecond)
	}
	s2.ttft = 2 * time.Second
	for i := range 3000 { // 30s
		s2.arrive(5)
		s2.step(10 * time.Millisecond)
		if i > 500 && s2.c.Stats().SlowStart {
			t.Fatalf("slow start began again at %v under a TTFT of 2s", time.Duration(i+1)*10*time.Millisecond)
		}
	}
}
