package local_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/edgecache/edgecache/cache"
	"github.com/edgecache/edgecache/cache/cachetest"
	"github.com/edgecache/edgecache/cache/local"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newLocal(tb testing.TB, cfg local.Config) *local.Local {
	tb.Helper()
	l, err := local.New(cfg)
	if err != nil {
		tb.Fatalf("local.New: %v", err)
	}
	tb.Cleanup(func() { _ = l.Close() })
	return l
}

func TestConformance(t *testing.T) {
	cachetest.RunTier(t, func(t *testing.T) cache.Tier { return newLocal(t, local.Config{}) })
}

func TestGetSetsTierAndCounts(t *testing.T) {
	l := newLocal(t, local.Config{MaxBytes: 1 << 20})
	cachetest.MustSet(t, l, "k", cachetest.NewEntry(time.Now(), time.Minute, []byte("v")), time.Minute)
	if e := cachetest.MustGet(t, l, "k"); e.Tier != local.TierName {
		t.Errorf("Tier = %q, want %q", e.Tier, local.TierName)
	}
	if _, err := l.Get(t.Context(), "absent"); !errors.Is(err, cache.ErrMiss) {
		t.Errorf("Get(absent) = %v, want cache.ErrMiss", err)
	}
	s := l.Stats()
	if s.Gets != 2 || s.Hits != 1 || s.Misses != 1 || s.Sets != 1 {
		t.Errorf("Stats = %+v, want 2 gets, 1 hit, 1 miss, 1 set", s)
	}
}

// An entry costing more than the whole budget is rejected: counted, not an
// error, and simply absent.
func TestOversizedEntryIsRejectedNotAnError(t *testing.T) {
	l := newLocal(t, local.Config{MaxBytes: 4 << 10, ExpectedItems: 10})
	big := cachetest.NewEntry(time.Now(), time.Minute, make([]byte, 8<<10))
	if err := l.Set(t.Context(), "big", big, time.Minute); err != nil {
		t.Fatalf("Set = %v, want nil", err)
	}
	l.Wait()
	if _, err := l.Get(t.Context(), "big"); !errors.Is(err, cache.ErrMiss) {
		t.Errorf("Get(big) = %v, want cache.ErrMiss", err)
	}
	if s := l.Stats(); s.Rejected+s.Dropped != 1 {
		t.Errorf("Stats = %+v, want the set rejected or dropped", s)
	}
}

func TestNilAndClosed(t *testing.T) {
	var nilLocal *local.Local
	closed := newLocal(t, local.Config{})
	cachetest.MustSet(t, closed, "k", cachetest.NewEntry(time.Now(), time.Minute, []byte("v")), time.Minute)
	if err := closed.Close(); err != nil {
		t.Fatal(err)
	}
	for name, l := range map[string]*local.Local{"nil": nilLocal, "closed": closed} {
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			if _, err := l.Get(ctx, "k"); !errors.Is(err, cache.ErrMiss) {
				t.Errorf("Get = %v, want cache.ErrMiss", err)
			}
			if err := l.Set(ctx, "k", cache.Entry{}, time.Minute); err != nil {
				t.Errorf("Set = %v, want nil", err)
			}
			if err := l.Delete(ctx, "k"); err != nil {
				t.Errorf("Delete = %v, want nil", err)
			}
			l.Wait()
			if err := l.Close(); err != nil {
				t.Errorf("Close = %v, want nil", err)
			}
			_ = l.Stats()
		})
	}
}

func TestCloseWhileInUse(t *testing.T) {
	l, err := local.New(local.Config{MaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		e := cachetest.NewEntry(time.Now(), time.Minute, []byte("v"))
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			k := cache.Key(fmt.Sprint(i % 16))
			_ = l.Set(t.Context(), k, e, time.Minute)
			_, _ = l.Get(t.Context(), k)
			_ = l.Delete(t.Context(), k)
		}
	}()
	time.Sleep(10 * time.Millisecond) // let the writer run; not synchronisation
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	close(stop)
	<-done
}

func TestConfigValidate(t *testing.T) {
	for _, cfg := range []local.Config{{MaxBytes: -1}, {ExpectedItems: -1}} {
		if _, err := local.New(cfg); err == nil {
			t.Errorf("New(%+v) = nil error, want one", cfg)
		}
	}
}

func TestCost(t *testing.T) {
	e := cachetest.NewEntry(time.Now(), time.Minute, make([]byte, 1000))
	if c := local.Cost("key", e); c < 1000+3+int64(len("Content-Type")+len("application/json")) {
		t.Errorf("Cost = %d, want at least body + key + headers", c)
	}
}

func BenchmarkLocalGet(b *testing.B) {
	l := newLocal(b, local.Config{MaxBytes: 64 << 20})
	const n = 1024
	keys := make([]cache.Key, n)
	for i := range keys {
		keys[i] = cache.Key(fmt.Sprintf("%064x", i))
		cachetest.MustSet(b, l, keys[i], cachetest.NewEntry(time.Now(), time.Hour, make([]byte, 2048)), time.Hour)
	}
	ctx := b.Context()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := l.Get(ctx, keys[i%n]); err != nil {
				b.Errorf("Get: %v", err)
				return
			}
			i++
		}
	})
}
