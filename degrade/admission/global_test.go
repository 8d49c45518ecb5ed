package admission

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/edgecache/edgecache/cache/cachetest"
	"github.com/edgecache/edgecache/cache/shared"
)

// newTestGlobal returns a Global with its own Redis client, as a separate
// edgecache process would have. now, if not nil, is the script's time in
// µs (instead of Redis TIME), so tests can be exact.
func newTestGlobal(t *testing.T, cfg GlobalConfig, now func() int64) *Global {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	g, err := NewGlobal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	g.serverNow = now
	return g
}

// testClient is a Redis client of its own, as a separate edgecache process
// would have, with the settings the program's client has (context
// deadlines honoured, one immediate retry).
func testClient(t *testing.T, addr string) redis.UniversalClient {
	t.Helper()
	c, err := shared.NewClient(shared.Conn{Addrs: []string{addr}}, shared.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// fixedNow is a settable script time in µs.
type fixedNow struct{ us atomic.Int64 }

func newFixedNow() *fixedNow {
	f := &fixedNow{}
	f.us.Store(t0.UnixMicro())
	return f
}
func (f *fixedNow) now() int64                { return f.us.Load() }
func (f *fixedNow) advance(d time.Duration)   { f.us.Add(d.Microseconds()) }
func (f *fixedNow) at() int64                 { return f.us.Load() * 1000 } // as Unix ns
func (f *fixedNow) since() time.Duration      { return time.Duration(f.at() - ns0) }
func (f *fixedNow) set(d time.Duration) int64 { f.us.Store(t0.Add(d).UnixMicro()); return f.at() }

var tenantLimit = Rules{Tenant: Limits{RequestsPerSecond: 10, RequestBurst: 20}}

// TestGlobalTwoProcessesShareTheLimit is the "not limit × replicas" proof:
// two Globals with their own clients hammer one tenant from 16 goroutines
// at one instant and admit exactly the burst between them.
func TestGlobalTwoProcessesShareTheLimit(t *testing.T) {
	r := cachetest.StartRedis(t)
	now := newFixedNow()
	cfg := GlobalConfig{Client: testClient(t, r.Addr()), Region: "eu", Replicas: 2, Defaults: tenantLimit, Timeout: time.Second}
	gs := []*Global{newTestGlobal(t, cfg, now.now), newTestGlobal(t, cfg, now.now)}

	var allowed [2]atomic.Int64
	var wg sync.WaitGroup
	for w := range 16 {
		g := gs[w%2]
		wg.Go(func() {
			for range 10 {
				d := g.Reserve(context.Background(), 0, tenant("acme"))
				if d.Fallback {
					t.Errorf("fell back with Redis up: %+v", d)
				}
				if d.Allowed {
					allowed[w%2].Add(1)
				}
			}
		})
	}
	wg.Wait()
	if a, b := allowed[0].Load(), allowed[1].Load(); a+b != 20 {
		t.Fatalf("two processes admitted %d + %d = %d of 160 at one instant, want the burst: 20", a, b, a+b)
	}
	d := gs[0].Reserve(context.Background(), 0, tenant("acme"))
	if d.Allowed || d.RetryAfter != 100*time.Millisecond || d.Limit != (Limit{DimTenant, KindRequests}) ||
		d.Requests != (Quota{20, 0, 2 * time.Second}) {
		t.Fatalf("denied decision: %+v", d)
	}
	now.advance(d.RetryAfter)
	if d := gs[1].Reserve(context.Background(), 0, tenant("acme")); !d.Allowed {
		t.Fatalf("the other process at RetryAfter: %+v", d)
	}
	if st := gs[0].Stats(); st.Allowed+st.Denied != 81 || st.Fallbacks != 0 || st.RedisErrors != 0 {
		t.Errorf("stats: %+v", st)
	}
}

// TestGlobalRealTimeWindow is the same proof on Redis's own clock: over
// however long the run takes, the two processes admit at most
// burst + rate × elapsed.
func TestGlobalRealTimeWindow(t *testing.T) {
	r := cachetest.StartRedis(t)
	cfg := GlobalConfig{Client: testClient(t, r.Addr()), Defaults: tenantLimit, Timeout: time.Second}
	gs := []*Global{newTestGlobal(t, cfg, nil), newTestGlobal(t, cfg, nil)}
	var allowed atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for w := range 8 {
		wg.Go(func() {
			for range 25 {
				if gs[w%2].Reserve(context.Background(), 0, tenant("acme")).Allowed {
					allowed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	limit := 20 + int64(10*time.Since(start).Seconds()) + 1
	if n := allowed.Load(); n < 20 || n > limit {
		t.Fatalf("admitted %d, want between 20 and %d (burst + rate × elapsed)", n, limit)
	}
}

// TestGlobalFallbackShareAndRecovery stops Redis: each process then admits
// only its share (limit / Replicas); after a restart and the breaker's
// cooldown they share the limit in Redis again.
func TestGlobalFallbackShareAndRecovery(t *testing.T) {
	r := cachetest.StartRedis(t)
	now := newFixedNow()
	clocks := []*fakeClock{newFakeClock(), newFakeClock()}
	var gs []*Global
	for _, c := range clocks {
		gs = append(gs, newTestGlobal(t, GlobalConfig{
			Client:   testClient(t, r.Addr()),
			Replicas: 2,
			Defaults: tenantLimit,
			Clock:    c,
			Cooldown: time.Second,
			Timeout:  time.Second, // a loaded test machine; a stopped Redis refuses at once anyway
		}, now.now))
	}
	ctx := context.Background()
	for i, g := range gs { // connections are pooled before the outage
		if d := g.Reserve(ctx, 0, tenant("warm")); d.Fallback {
			t.Fatalf("process %d fell back with Redis up: %+v", i, d)
		}
	}

	r.Stop()
	for i, g := range gs {
		n := 0
		for range 30 {
			d := g.Reserve(ctx, 0, tenant("acme"))
			if !d.Fallback {
				t.Fatalf("process %d decided without Redis and without fallback: %+v", i, d)
			}
			if d.Allowed {
				n++
			}
		}
		if n != 10 {
			t.Errorf("process %d admitted %d alone, want its share 20/2 = 10", i, n)
		}
		st := g.Stats()
		if !st.BreakerOpen || st.Opens != 1 || st.RedisErrors != DefaultFailureThreshold || st.Fallbacks != 30 {
			t.Errorf("process %d stats: %+v (the breaker should stop calls after %d failures)", i, st, DefaultFailureThreshold)
		}
	}
	// The share refills at rate / Replicas: 5 per second.
	clocks[0].Advance(time.Second)
	n := 0
	for range 10 {
		if gs[0].Reserve(ctx, 0, tenant("acme")).Allowed {
			n++
		}
	}
	if n != 5 {
		t.Errorf("after 1s of outage, admitted %d, want 5 (rate 10 / 2 replicas)", n)
	}

	r.Restart() // empty: the tenant's bucket is full again
	for _, c := range clocks {
		c.Advance(time.Second) // the cooldown: the next request is the trial
	}
	total := 0
	for i := range 40 {
		d := gs[i%2].Reserve(ctx, 0, tenant("acme"))
		if d.Fallback {
			t.Fatalf("request %d after restart and cooldown still fell back: %+v", i, d)
		}
		if d.Allowed {
			total++
		}
	}
	if total != 20 {
		t.Errorf("after recovery the two processes admitted %d, want the shared burst 20", total)
	}
	if gs[0].Stats().BreakerOpen || gs[1].Stats().BreakerOpen {
		t.Error("breaker still open after recovery")
	}
}

// TestGlobalTimeoutFallsBack pauses Redis: a call slower than Timeout is
// decided locally in about Timeout.
func TestGlobalTimeoutFallsBack(t *testing.T) {
	r := cachetest.StartRedis(t)
	g := newTestGlobal(t, GlobalConfig{Client: testClient(t, r.Addr()), Defaults: tenantLimit, Timeout: 50 * time.Millisecond}, nil)
	ctx := context.Background()
	admin := redis.NewClient(&redis.Options{Addr: r.Addr()})
	defer admin.Close()
	if err := g.script.Load(ctx, admin).Err(); err != nil {
		t.Fatal(err)
	}
	// Warm up: the first call also dials, which a loaded machine may not
	// do within 50ms (one failure does not open the breaker).
	warm := false
	for range DefaultFailureThreshold - 1 {
		if warm = !g.Reserve(ctx, 0, tenant("acme")).Fallback; warm {
			break
		}
	}
	if !warm {
		t.Fatalf("never reached Redis within 50ms: %+v", g.Stats())
	}
	if err := admin.Do(ctx, "CLIENT", "PAUSE", "1000", "ALL").Err(); err != nil {
		t.Fatal(err)
	}
	defer admin.Do(ctx, "CLIENT", "UNPAUSE")
	start := time.Now()
	d := g.Reserve(ctx, 0, tenant("acme"))
	if el := time.Since(start); !d.Fallback || !d.Allowed || el > 900*time.Millisecond { // before Redis would answer
		t.Fatalf("paused Redis: %+v after %v, want an allowed fallback within ~50ms", d, el)
	}
}

// TestGlobalMatchesBuckets runs one scenario through the Lua script and the
// Go buckets at the same explicit times: the two implementations must agree.
func TestGlobalMatchesBuckets(t *testing.T) {
	r := cachetest.StartRedis(t)
	now := newFixedNow()
	rules := Rules{
		Key:    Limits{RequestsPerSecond: 3, RequestBurst: 4, TokensPerMinute: 1200, TokenBurst: 500},
		Tenant: Limits{RequestsPerSecond: 0.5, RequestBurst: 3, TokensPerMinute: 600},
		IP:     Limits{RequestsPerSecond: 1, RequestBurst: 1, Shadow: true},
	}
	g := newTestGlobal(t, GlobalConfig{Client: testClient(t, r.Addr()), Defaults: rules, Timeout: time.Second}, now.now)
	b := newTestBuckets(t, BucketsConfig{Defaults: rules})
	s := []Subject{key("k"), tenant("t"), ip("1.1.1.1")}
	ctx := context.Background()
	// Hand-computed: key 3 rps burst 4, 20 tokens/s burst 500; tenant 0.5
	// rps burst 3, 10 tokens/s burst 600; IP 1 rps burst 1 in shadow.
	type step struct {
		at           time.Duration
		tokens       int64
		settleActual int64 // settle tokens → settleActual after an allowed reserve, if ≥ 0
		allowed      bool
		shadow       bool          // the IP rule would have denied
		limit        string        // denying limit, if denied
		retryAfter   time.Duration // if denied
	}
	steps := []step{
		{0, 100, -1, true, false, "", 0},
		{0, 100, 10, true, true, "", 0},                                            // 90 tokens refunded
		{100 * time.Millisecond, 300, -1, true, true, "", 0},                       // IP: 0.1 of 1
		{2 * time.Second, 300, -1, false, false, "tenant_tokens", 9 * time.Second}, // 210 of 300 at 10/s
		{2 * time.Second, 10, 700, true, false, "", 0},                             // settled into debt: tenant at -490
		{2 * time.Second, 10, -1, false, false, "tenant_tokens", 50 * time.Second},
		{52 * time.Second, 10, -1, true, false, "", 0},
		{52*time.Second + 100*time.Millisecond, 1, -1, true, true, "", 0},
		{53 * time.Second, 1, 0, true, false, "", 0},
	}
	for i, st := range steps {
		nowNs := now.set(st.at)
		dg := g.Reserve(ctx, st.tokens, s...)
		db := b.reserve(nowNs, st.tokens, s)
		if dg.Allowed != st.allowed || dg.Shadow != st.shadow ||
			(!st.allowed && (dg.Limit.String() != st.limit || dg.RetryAfter != st.retryAfter)) {
			t.Errorf("step %d: redis %+v, want allowed %v shadow %v limit %q after %v", i, dg, st.allowed, st.shadow, st.limit, st.retryAfter)
		}
		if !same(dg, db) {
			t.Errorf("step %d: implementations disagree:\nredis %+v\n   go %+v", i, dg, db)
		}
		if st.settleActual >= 0 && dg.Allowed {
			g.Settle(ctx, st.tokens, st.settleActual, s...)
			b.settle(nowNs, st.tokens, st.settleActual, s)
		}
	}
	if st := g.Stats(); st.RedisErrors != 0 || st.Fallbacks != 0 || st.Local.Entries != 0 {
		t.Errorf("stats: %+v, want every call answered by Redis", st)
	}
}

// same compares decisions, allowing 1µs for the two float roundings.
func same(a, b Decision) bool {
	near := func(x, y time.Duration) bool { return x-y <= time.Microsecond && y-x <= time.Microsecond }
	qs := func(x, y Quota) bool {
		return x.Limit == y.Limit && x.Remaining == y.Remaining && near(x.Reset, y.Reset)
	}
	return a.Allowed == b.Allowed && a.Shadow == b.Shadow && a.Limit == b.Limit && near(a.RetryAfter, b.RetryAfter) &&
		qs(a.Requests, b.Requests) && qs(a.Tokens, b.Tokens)
}

func TestGlobalKeyLayout(t *testing.T) {
	r := cachetest.StartRedis(t)
	g := newTestGlobal(t, GlobalConfig{
		Client:  testClient(t, r.Addr()),
		Region:  "eu-west",
		Timeout: time.Second,
		Defaults: Rules{
			Tenant: Limits{RequestsPerSecond: 10, TokensPerMinute: 6000},
		},
	}, nil)
	ctx := context.Background()
	if d := g.Reserve(ctx, 100, tenant("acme")); d.Fallback {
		t.Fatalf("fell back with Redis up: %+v", d)
	}
	const want = "edgecache:rl:v1:{eu-west}:tenant:acme"
	if k := g.Key(DimTenant, "acme"); k != want {
		t.Fatalf("Key = %q, want %q", k, want)
	}
	c := redis.NewClient(&redis.Options{Addr: r.Addr()})
	defer c.Close()
	h, err := c.HGetAll(ctx, want).Result()
	if err != nil || h["r"] != "9" || h["t"] != "5900" || h["ts"] == "" {
		t.Fatalf("HGETALL %s = %v, %v", want, h, err)
	}
	// Idle keys expire once full again (1s for 100 tokens at 6000 per
	// minute), plus 1s.
	if ttl, err := c.PTTL(ctx, want).Result(); err != nil || ttl <= time.Second || ttl > 2*time.Second {
		t.Fatalf("PTTL = %v, %v; want about 2s", ttl, err)
	}
}

func TestGlobalShadow(t *testing.T) {
	r := cachetest.StartRedis(t)
	now := newFixedNow()
	g := newTestGlobal(t, GlobalConfig{Client: testClient(t, r.Addr()), Shadow: true, Timeout: time.Second, Defaults: Rules{IP: Limits{RequestsPerSecond: 1}}}, now.now)
	ctx := context.Background()
	g.Reserve(ctx, 0, ip("a"))
	d := g.Reserve(ctx, 0, ip("a"))
	if !d.Allowed || !d.Shadow || d.Fallback || d.Limit != (Limit{DimIP, KindRequests}) || d.RetryAfter != time.Second {
		t.Fatalf("shadow: %+v", d)
	}
	if st := g.Stats(); st.ShadowDenied != 1 || st.Denied != 0 {
		t.Fatalf("stats: %+v", st)
	}
}

func TestGlobalConfigValidate(t *testing.T) {
	c := testClient(t, "127.0.0.1:1")
	for _, c := range []GlobalConfig{
		{},
		{Client: c, Region: "a{b}"},
		{Client: c, Replicas: -1},
		{Client: c, Timeout: -1},
		{Client: c, Defaults: Rules{IP: Limits{RequestsPerSecond: -1}}},
	} {
		if _, err := NewGlobal(c); err == nil {
			t.Errorf("NewGlobal(%+v): no error", c)
		}
	}
}
