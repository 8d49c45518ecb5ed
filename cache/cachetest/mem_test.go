package cachetest_test

import (
	"errors"
	"testing"
	"time"

	"github.com/edgecache/edgecache/cache"
	"github.com/edgecache/edgecache/cache/cachetest"
)

func TestMemConformance(t *testing.T) {
	cachetest.RunTier(t, func(t *testing.T) cache.Tier { return &cachetest.Mem{} })
}

func TestMemFailAndCalls(t *testing.T) {
	m := &cachetest.Mem{Name: "fake"}
	ctx := t.Context()
	boom := errors.New("boom")
	cachetest.MustSet(t, m, "k", cachetest.NewEntry(time.Now(), time.Minute, []byte("x")), time.Minute)
	if e := cachetest.MustGet(t, m, "k"); e.Tier != "fake" {
		t.Errorf("Tier = %q, want %q", e.Tier, "fake")
	}
	m.Fail(boom)
	if _, err := m.Get(ctx, "k"); !errors.Is(err, boom) {
		t.Errorf("Get on a failing Mem = %v, want %v", err, boom)
	}
	if err := m.Set(ctx, "k", cache.Entry{}, time.Minute); !errors.Is(err, boom) {
		t.Errorf("Set on a failing Mem = %v, want %v", err, boom)
	}
	if err := m.Delete(ctx, "k"); !errors.Is(err, boom) {
		t.Errorf("Delete on a failing Mem = %v, want %v", err, boom)
	}
	m.Fail(nil)
	cachetest.MustGet(t, m, "k")
	want := cachetest.MemCalls{Gets: 3, Hits: 2, Sets: 2, Deletes: 1}
	if got := m.Calls(); got != want {
		t.Errorf("Calls() = %+v, want %+v", got, want)
	}
}

func TestMemClock(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	m := &cachetest.Mem{Now: func() time.Time { return now }}
	cachetest.MustSet(t, m, "k", cachetest.NewEntry(now, time.Minute, []byte("x")), 10*time.Second)
	now = now.Add(4 * time.Second)
	if ttl, ok := m.TTL("k"); !ok || ttl != 6*time.Second {
		t.Errorf("TTL = %v, %v; want 6s, true", ttl, ok)
	}
	now = now.Add(6 * time.Second)
	if _, err := m.Get(t.Context(), "k"); !errors.Is(err, cache.ErrMiss) {
		t.Errorf("Get at the ttl = %v, want cache.ErrMiss", err)
	}
	if m.Len() != 1 {
		t.Errorf("Len = %d, want 1 (expired entries are kept until overwritten)", m.Len())
	}
}
