package cache_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/edgecache/edgecache/cache"
	"github.com/edgecache/edgecache/cache/cachetest"
	"github.com/edgecache/edgecache/cache/local"
	"github.com/edgecache/edgecache/cache/shared"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// go-redis re-dials a dead server from this goroutine every second
		// and notices Close only at its next wake-up.
		goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).tryDial"),
	)
}

var quiet = slog.New(slog.DiscardHandler)

// clock is a settable test clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Unix(1_700_000_000, 0)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func newTiered(t *testing.T, cfg cache.TieredConfig, tiers ...cache.Tier) *cache.Tiered {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quiet
	}
	tc := cache.NewTiered(cfg, tiers...)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := tc.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return tc
}

func closeNow(t *testing.T, tc *cache.Tiered) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := tc.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func memTiers(clk *clock, names ...string) []*cachetest.Mem {
	ms := make([]*cachetest.Mem, len(names))
	for i, n := range names {
		ms[i] = &cachetest.Mem{Name: n, Now: clk.Now}
	}
	return ms
}

func TestGetBackfillsFasterTierWithRemainingTTL(t *testing.T) {
	clk := newClock()
	m := memTiers(clk, "l1", "l2")
	tc := newTiered(t, cache.TieredConfig{Now: clk.Now}, m[0], m[1])
	want := cachetest.NewEntry(clk.Now(), 10*time.Minute, []byte("answer"))
	cachetest.MustSet(t, m[1], "k", want, time.Hour) // L2 keeps it longer (stale window)

	clk.Advance(4 * time.Minute)
	got, err := tc.Get(t.Context(), "k")
	if err != nil || got.Tier != "l2" {
		t.Fatalf("Get = %q, %v; want an l2 hit", got.Tier, err)
	}
	cachetest.AssertEntry(t, got, want)
	if ttl, ok := m[0].TTL("k"); !ok || ttl != 6*time.Minute {
		t.Errorf("L1 ttl after backfill = %v, %v; want the remaining 6m", ttl, ok)
	}
	l1 := cachetest.MustGet(t, m[0], "k")
	if !l1.ExpiresAt.Equal(want.ExpiresAt) {
		t.Errorf("L1 ExpiresAt = %v, want the original %v", l1.ExpiresAt, want.ExpiresAt)
	}
	if got, err := tc.Get(t.Context(), "k"); err != nil || got.Tier != "l1" {
		t.Fatalf("second Get = %q, %v; want an l1 hit", got.Tier, err)
	}
	s := tc.Stats()
	if s.Hits[0] != 1 || s.Hits[1] != 1 || s.Backfills != 1 || s.Misses != 0 {
		t.Errorf("Stats = %+v", s)
	}
}

// Prepare completes a slower tier's hit before it backfills: the caller
// and the faster tier get the prepared entry; an L1 hit is not prepared
// again.
func TestPrepareRunsOnBackfill(t *testing.T) {
	clk := newClock()
	m := memTiers(clk, "l1", "l2")
	prepared := 0
	prep := func(e *cache.Entry) {
		prepared++
		e.Usage = &cache.Usage{Model: string(e.Body), Input: 1, Output: 2}
	}
	tc := newTiered(t, cache.TieredConfig{Now: clk.Now, Prepare: prep}, m[0], m[1])
	cachetest.MustSet(t, m[1], "k", cachetest.NewEntry(clk.Now(), 10*time.Minute, []byte("answer")), time.Hour)
	got, err := tc.Get(t.Context(), "k")
	if err != nil || got.Usage == nil || got.Usage.Model != "answer" {
		t.Fatalf("Get = %+v, %v; want the prepared entry", got, err)
	}
	if l1 := cachetest.MustGet(t, m[0], "k"); l1.Usage != got.Usage {
		t.Errorf("L1 holds usage %v, want the prepared %v", l1.Usage, got.Usage)
	}
	if got, err := tc.Get(t.Context(), "k"); err != nil || got.Tier != "l1" || prepared != 1 {
		t.Errorf("second Get = %q, %v, prepared %d times; want an l1 hit prepared once", got.Tier, err, prepared)
	}
}

// A hit in the third tier writes the first directly and the second through
// the queue.
func TestBackfillThroughQueueForMiddleTiers(t *testing.T) {
	clk := newClock()
	m := memTiers(clk, "a", "b", "c")
	tc := cache.NewTiered(cache.TieredConfig{Now: clk.Now, Logger: quiet}, m[0], m[1], m[2])
	cachetest.MustSet(t, m[2], "k", cachetest.NewEntry(clk.Now(), time.Minute, []byte("v")), time.Minute)
	if got, err := tc.Get(t.Context(), "k"); err != nil || got.Tier != "c" {
		t.Fatalf("Get = %q, %v; want a hit in c", got.Tier, err)
	}
	if _, ok := m[0].TTL("k"); !ok {
		t.Error("first tier not backfilled synchronously")
	}
	closeNow(t, tc)
	if ttl, ok := m[1].TTL("k"); !ok || ttl != time.Minute {
		t.Errorf("middle tier ttl = %v, %v; want 1m after the queue drained", ttl, ok)
	}
}

func TestExpiredEntryIsAMiss(t *testing.T) {
	clk := newClock()
	m := memTiers(clk, "l1", "l2")
	tc := newTiered(t, cache.TieredConfig{Now: clk.Now}, m[0], m[1])
	// Both tiers still hold the entries (long storage ttl) but only L2's is fresh.
	cachetest.MustSet(t, m[0], "k", cachetest.NewEntry(clk.Now(), time.Minute, []byte("old")), time.Hour)
	fresh := cachetest.NewEntry(clk.Now(), 10*time.Minute, []byte("new"))
	cachetest.MustSet(t, m[1], "k", fresh, time.Hour)
	cachetest.MustSet(t, m[1], "gone", cachetest.NewEntry(clk.Now(), time.Minute, []byte("x")), time.Hour)
	clk.Advance(time.Minute) // ExpiresAt == now counts as expired

	got, err := tc.Get(t.Context(), "k")
	if err != nil || got.Tier != "l2" || string(got.Body) != "new" {
		t.Fatalf("Get = %q %q, %v; want the fresh l2 entry", got.Tier, got.Body, err)
	}
	if _, err := tc.Get(t.Context(), "gone"); !errors.Is(err, cache.ErrMiss) {
		t.Fatalf("Get(expired everywhere) = %v, want cache.ErrMiss", err)
	}
	if s := tc.Stats(); s.Expired != 2 || s.Misses != 1 {
		t.Errorf("Stats = %+v, want 2 expired, 1 miss", s)
	}
	// GetStale serves the expired entry within the window, not beyond.
	if e, err := tc.GetStale(t.Context(), "gone", time.Minute); err != nil || string(e.Body) != "x" {
		t.Errorf("GetStale within window = %q, %v", e.Body, err)
	}
	clk.Advance(2 * time.Minute)
	if _, err := tc.GetStale(t.Context(), "gone", time.Minute); !errors.Is(err, cache.ErrMiss) {
		t.Errorf("GetStale beyond window = %v, want cache.ErrMiss", err)
	}
}

func TestFailingTierIsAMiss(t *testing.T) {
	clk := newClock()
	m := memTiers(clk, "l1", "l2")
	tc := newTiered(t, cache.TieredConfig{Now: clk.Now}, m[0], m[1])
	cachetest.MustSet(t, m[1], "k", cachetest.NewEntry(clk.Now(), time.Minute, []byte("v")), time.Minute)
	m[0].Fail(errors.New("l1 broken"))
	if got, err := tc.Get(t.Context(), "k"); err != nil || got.Tier != "l2" {
		t.Fatalf("Get with a failing L1 = %q, %v; want an l2 hit", got.Tier, err)
	}
	m[0].Fail(nil)
	m[1].Fail(errors.New("l2 down"))
	if _, err := tc.Get(t.Context(), "absent"); !errors.Is(err, cache.ErrMiss) {
		t.Fatalf("Get with a failing L2 = %v, want cache.ErrMiss", err)
	}
	if s := tc.Stats(); s.Errors != 2 || s.StoreErrors != 1 { // the backfill into the failing L1
		t.Errorf("Stats = %+v, want 2 errors and 1 store error", s)
	}
}

func TestStoreWritesAllTiersAndCloseDrains(t *testing.T) {
	clk := newClock()
	m := memTiers(clk, "l1", "l2")
	tc := cache.NewTiered(cache.TieredConfig{Now: clk.Now, QueueSize: 200, Logger: quiet}, m[0], m[1])
	const n = 150
	for i := range n {
		if !tc.Store(cache.Key(fmt.Sprint(i)), cachetest.NewEntry(clk.Now(), time.Minute, []byte("v")), time.Minute) {
			t.Fatalf("Store %d dropped", i)
		}
	}
	closeNow(t, tc)
	if m[0].Len() != n || m[1].Len() != n {
		t.Errorf("tiers hold %d and %d entries, want %d each", m[0].Len(), m[1].Len(), n)
	}
	if s := tc.Stats(); s.Queued != n || s.Stored != n || s.Drops != 0 {
		t.Errorf("Stats = %+v, want %d queued and stored", s, n)
	}
	if tc.Store("late", cachetest.NewEntry(clk.Now(), time.Minute, nil), time.Minute) {
		t.Error("Store after Close = true")
	}
	if err := tc.Close(t.Context()); err != nil {
		t.Errorf("second Close = %v", err)
	}
}

func TestStoreFillsTimesAndIgnoresNonPositiveTTL(t *testing.T) {
	clk := newClock()
	m := &cachetest.Mem{Now: clk.Now}
	tc := cache.NewTiered(cache.TieredConfig{Now: clk.Now, Logger: quiet}, m)
	if tc.Store("zero", cache.Entry{Status: 200}, 0) {
		t.Error("Store(ttl=0) = true")
	}
	tc.Store("k", cache.Entry{Status: 200, Body: []byte("v")}, time.Minute)
	closeNow(t, tc)
	e := cachetest.MustGet(t, m, "k")
	if !e.StoredAt.Equal(clk.Now()) || !e.ExpiresAt.Equal(clk.Now().Add(time.Minute)) {
		t.Errorf("StoredAt, ExpiresAt = %v, %v; want now and now+ttl", e.StoredAt, e.ExpiresAt)
	}
	if m.Len() != 1 {
		t.Errorf("Len = %d, want 1", m.Len())
	}
}

// blockingTier's Set signals entered and waits for release or its context.
type blockingTier struct {
	cachetest.Mem
	entered chan struct{}
	release chan struct{}
}

func newBlockingTier() *blockingTier {
	return &blockingTier{entered: make(chan struct{}, 100), release: make(chan struct{})}
}

func (b *blockingTier) Set(ctx context.Context, k cache.Key, e cache.Entry, ttl time.Duration) error {
	b.entered <- struct{}{}
	select {
	case <-b.release:
		return b.Mem.Set(ctx, k, e, ttl)
	case <-ctx.Done():
		return ctx.Err()
	}
}

func TestFullQueueDropsAndCounts(t *testing.T) {
	bt := newBlockingTier()
	var dropped atomic.Int64
	tc := newTiered(t, cache.TieredConfig{QueueSize: 2, Workers: 1, OnDrop: func() { dropped.Add(1) }}, bt)
	e := cachetest.NewEntry(time.Now(), time.Minute, []byte("v"))
	if !tc.Store("1", e, time.Minute) {
		t.Fatal("first Store dropped")
	}
	<-bt.entered // the only worker is busy with "1"
	for _, k := range []cache.Key{"2", "3"} {
		if !tc.Store(k, e, time.Minute) {
			t.Fatalf("Store(%s) dropped with room in the queue", k)
		}
	}
	start := time.Now()
	if tc.Store("4", e, time.Minute) {
		t.Fatal("Store into a full queue = true")
	}
	if d := time.Since(start); d > 10*time.Millisecond {
		t.Errorf("Store into a full queue took %v; it must not block", d)
	}
	if s := tc.Stats(); s.Drops != 1 || dropped.Load() != 1 {
		t.Errorf("Drops = %d, OnDrop calls = %d; want 1 and 1", s.Drops, dropped.Load())
	}
	close(bt.release)
	closeNow(t, tc)
	if bt.Len() != 3 {
		t.Errorf("tier holds %d entries, want the 3 queued", bt.Len())
	}
}

func TestCloseIsBoundedByContext(t *testing.T) {
	bt := newBlockingTier() // never released: writes end only by context
	tc := cache.NewTiered(cache.TieredConfig{QueueSize: 10, Workers: 1, WriteTimeout: time.Hour, Logger: quiet}, bt)
	e := cachetest.NewEntry(time.Now(), time.Minute, []byte("v"))
	for i := range 5 {
		tc.Store(cache.Key(fmt.Sprint(i)), e, time.Minute)
	}
	<-bt.entered
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := tc.Close(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close = %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Close took %v with a 50ms context", d)
	}
	if s := tc.Stats(); s.Drops != 4 || s.StoreErrors != 1 {
		t.Errorf("Stats = %+v, want the 4 waiting writes dropped and the cancelled one failed", s)
	}
	if err := tc.Close(t.Context()); err != nil {
		t.Errorf("Close after the workers stopped = %v, want nil", err)
	}
}

type panicTier struct{ cachetest.Mem }

func (*panicTier) Set(context.Context, cache.Key, cache.Entry, time.Duration) error {
	panic("tier bug")
}

func TestWorkerSurvivesPanickingTier(t *testing.T) {
	good := &cachetest.Mem{}
	tc := cache.NewTiered(cache.TieredConfig{Workers: 1, Logger: quiet}, &panicTier{}, good)
	e := cachetest.NewEntry(time.Now(), time.Minute, []byte("v"))
	tc.Store("1", e, time.Minute)
	tc.Store("2", e, time.Minute)
	closeNow(t, tc)
	if good.Len() != 2 {
		t.Errorf("good tier holds %d entries, want 2", good.Len())
	}
	if s := tc.Stats(); s.Panics != 2 || s.Stored != 0 || s.StoreErrors != 2 {
		t.Errorf("Stats = %+v, want 2 panics, 2 store errors", s)
	}
}

func TestDeleteAllTiers(t *testing.T) {
	clk := newClock()
	m := memTiers(clk, "l1", "l2")
	tc := newTiered(t, cache.TieredConfig{Now: clk.Now}, m[0], m[1])
	for _, mt := range m {
		cachetest.MustSet(t, mt, "k", cachetest.NewEntry(clk.Now(), time.Minute, nil), time.Minute)
	}
	if err := tc.Delete(t.Context(), "k"); err != nil {
		t.Fatal(err)
	}
	if m[0].Len()+m[1].Len() != 0 {
		t.Error("entry left in a tier after Delete")
	}
	boom := errors.New("boom")
	m[1].Fail(boom)
	cachetest.MustSet(t, m[0], "k", cachetest.NewEntry(clk.Now(), time.Minute, nil), time.Minute)
	if err := tc.Delete(t.Context(), "k"); !errors.Is(err, boom) {
		t.Errorf("Delete with a failing tier = %v, want it to wrap %v", err, boom)
	}
	if m[0].Len() != 0 {
		t.Error("a failing tier stopped Delete from reaching the others")
	}
}

func TestConcurrentGetAndStore(t *testing.T) {
	m := []*cachetest.Mem{{Name: "l1"}, {Name: "l2"}}
	tc := newTiered(t, cache.TieredConfig{}, m[0], m[1])
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 200 {
				k := cache.Key(fmt.Sprint(i % 8))
				if g%2 == 0 {
					tc.Store(k, cachetest.NewEntry(time.Now(), time.Minute, []byte(k)), time.Minute)
				} else if e, err := tc.Get(t.Context(), k); err == nil && string(e.Body) != string(k) {
					t.Errorf("Get(%s) body %q", k, e.Body)
				}
			}
		})
	}
	wg.Wait()
}

// The real stack: ristretto L1 over a real Redis L2.
func TestLocalOverShared(t *testing.T) {
	r := cachetest.StartRedis(t)
	l1, err := local.New(local.Config{MaxBytes: 16 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l1.Close() })
	l2, err := shared.New(shared.Config{Conn: shared.Conn{Addrs: []string{r.Addr()}}, FailureThreshold: 2, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l2.Close() })
	tc := newTiered(t, cache.TieredConfig{}, l1, l2)
	ctx := t.Context()

	t.Run("L2HitBackfillsL1", func(t *testing.T) {
		want := cachetest.NewEntry(time.Now().Add(-time.Minute), 10*time.Minute, []byte("from another edge"))
		cachetest.MustSet(t, l2, "k", want, time.Hour)
		got, err := tc.Get(ctx, "k")
		if err != nil || got.Tier != shared.TierName {
			t.Fatalf("Get = %q, %v; want an l2 hit", got.Tier, err)
		}
		l1.Wait()
		inL1 := cachetest.MustGet(t, l1, "k")
		cachetest.AssertEntry(t, inL1, want)
		if !inL1.ExpiresAt.Equal(got.ExpiresAt) {
			t.Errorf("L1 ExpiresAt = %v, want %v", inL1.ExpiresAt, got.ExpiresAt)
		}
		if got, err := tc.Get(ctx, "k"); err != nil || got.Tier != local.TierName {
			t.Fatalf("second Get = %q, %v; want an l1 hit", got.Tier, err)
		}
	})

	t.Run("StoreReachesBothTiers", func(t *testing.T) {
		want := cachetest.NewEntry(time.Now(), time.Minute, []byte("stored"))
		if !tc.Store("s", want, time.Minute) {
			t.Fatal("Store dropped")
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			l1.Wait()
			_, err1 := l1.Get(ctx, "s")
			_, err2 := l2.Get(ctx, "s")
			if err1 == nil && err2 == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("entry not in both tiers: l1 %v, l2 %v", err1, err2)
			}
			time.Sleep(5 * time.Millisecond) // polling interval
		}
	})

	t.Run("DeadL2IsAFastMiss", func(t *testing.T) {
		r.Stop()
		for i := 0; l2.Healthy(); i++ {
			if i == 10 {
				t.Fatalf("L2 breaker still closed after %d failed Gets", i)
			}
			_, _ = tc.Get(ctx, "absent") // the failures open the breaker
		}
		start := time.Now()
		for range 100 {
			if _, err := tc.Get(ctx, "absent"); !errors.Is(err, cache.ErrMiss) {
				t.Fatalf("Get with L2 down = %v, want cache.ErrMiss", err)
			}
		}
		if d := time.Since(start); d > 50*time.Millisecond {
			t.Errorf("100 misses with L2 down took %v", d)
		}
		if got, err := tc.Get(ctx, "k"); err != nil || got.Tier != local.TierName {
			t.Errorf("L1 hit with L2 down = %q, %v", got.Tier, err)
		}
	})
}
