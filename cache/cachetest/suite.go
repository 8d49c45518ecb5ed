// Package cachetest holds what tests across edgecache need to exercise
// caches: RunTier, the conformance suite every cache.Tier must pass; Mem, an
// in-memory Tier with call counters for other packages' tests; and
// StartRedis / StartRedisCluster, which run real redis-server processes on
// free loopback ports so tests can stop and restart them.
//
// It is imported only from _test.go files.
package cachetest

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/edgecache/edgecache/cache"
)

// Waiter is implemented by tiers whose writes become visible
// asynchronously (ristretto-backed L1). RunTier calls Wait after every Set
// and Delete.
type Waiter interface {
	Wait()
}

// RunTier runs the conformance suite against tiers made by newTier, which
// is called once per subtest and must return an empty tier (or one whose
// other keys do not matter) and register its own cleanup on the t it is
// given.
//
// Tiers honour the ttl given to Set; they need not look at ExpiresAt, which
// the tiered cache filters on read. Times must survive a round trip to the
// millisecond.
func RunTier(t *testing.T, newTier func(t *testing.T) cache.Tier) {
	t.Helper()
	nonce := rand.Text()[:8] // keys unique per run, in case tiers share a store
	key := func(t *testing.T, name string) cache.Key {
		return cache.Key(fmt.Sprintf("conformance:%s:%s:%s", nonce, t.Name(), name))
	}
	tests := []struct {
		name string
		run  func(t *testing.T, tier cache.Tier, key func(string) cache.Key)
	}{
		{"MissOnAbsent", testMissOnAbsent},
		{"RoundTrip", testRoundTrip},
		{"EmptyHeaderAndBody", testEmptyHeaderAndBody},
		{"Overwrite", testOverwrite},
		{"Delete", testDelete},
		{"NonPositiveTTL", testNonPositiveTTL},
		{"TTLExpiry", testTTLExpiry},
		{"Isolation", testIsolation},
		{"LargeBody", testLargeBody},
		{"Concurrent", testConcurrent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tier := newTier(t)
			tc.run(t, tier, func(name string) cache.Key { return key(t, name) })
		})
	}
}

func testMissOnAbsent(t *testing.T, tier cache.Tier, key func(string) cache.Key) {
	_, err := tier.Get(t.Context(), key("absent"))
	if !errors.Is(err, cache.ErrMiss) {
		t.Fatalf("Get(absent) error = %v, want cache.ErrMiss", err)
	}
}

func testRoundTrip(t *testing.T, tier cache.Tier, key func(string) cache.Key) {
	want := NewEntry(time.Now(), time.Minute, []byte(`{"id":"chatcmpl-1","choices":[]}`))
	want.Status = http.StatusNonAuthoritativeInfo
	want.Header.Add("X-Multi", "one")
	want.Header.Add("X-Multi", "two")
	want.Header.Set("X-Empty", "")
	k := key("k")
	MustSet(t, tier, k, want, time.Minute)
	got := MustGet(t, tier, k)
	AssertEntry(t, got, want)
	if got.Tier == "" {
		t.Errorf("Get: Entry.Tier is empty; tiers name themselves on read")
	}
}

func testEmptyHeaderAndBody(t *testing.T, tier cache.Tier, key func(string) cache.Key) {
	want := cache.Entry{Status: http.StatusNoContent, StoredAt: time.Now(), ExpiresAt: time.Now().Add(time.Minute)}
	k := key("k")
	MustSet(t, tier, k, want, time.Minute)
	AssertEntry(t, MustGet(t, tier, k), want)
}

func testOverwrite(t *testing.T, tier cache.Tier, key func(string) cache.Key) {
	k := key("k")
	now := time.Now()
	MustSet(t, tier, k, NewEntry(now, time.Minute, []byte("first")), time.Minute)
	second := NewEntry(now.Add(time.Second), 2*time.Minute, []byte("second answer"))
	second.Status = http.StatusCreated
	MustSet(t, tier, k, second, 2*time.Minute)
	AssertEntry(t, MustGet(t, tier, k), second)
}

func testDelete(t *testing.T, tier cache.Tier, key func(string) cache.Key) {
	k := key("k")
	MustSet(t, tier, k, NewEntry(time.Now(), time.Minute, []byte("doomed")), time.Minute)
	if err := tier.Delete(t.Context(), k); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	settle(tier)
	if _, err := tier.Get(t.Context(), k); !errors.Is(err, cache.ErrMiss) {
		t.Fatalf("Get after Delete error = %v, want cache.ErrMiss", err)
	}
	if err := tier.Delete(t.Context(), key("never-set")); err != nil {
		t.Fatalf("Delete(absent) = %v, want nil", err)
	}
}

func testNonPositiveTTL(t *testing.T, tier cache.Tier, key func(string) cache.Key) {
	for _, ttl := range []time.Duration{0, -time.Second} {
		k := key(fmt.Sprint(ttl))
		if err := tier.Set(t.Context(), k, NewEntry(time.Now(), time.Minute, []byte("x")), ttl); err != nil {
			t.Fatalf("Set(ttl=%v) = %v, want nil (no-op)", ttl, err)
		}
		settle(tier)
		if _, err := tier.Get(t.Context(), k); !errors.Is(err, cache.ErrMiss) {
			t.Fatalf("Get after Set(ttl=%v) error = %v, want cache.ErrMiss", ttl, err)
		}
	}
}

// testTTLExpiry polls rather than sleeps: the entry must be readable before
// its ttl and gone soon after. A tier that drops expired entries lazily may
// still return one, as long as its ExpiresAt has passed (the tiered cache
// filters those).
func testTTLExpiry(t *testing.T, tier cache.Tier, key func(string) cache.Key) {
	const ttl = 300 * time.Millisecond
	k := key("k")
	start := time.Now()
	MustSet(t, tier, k, NewEntry(start, ttl, []byte("short-lived")), ttl)
	if _, err := tier.Get(t.Context(), k); err != nil && time.Since(start) < ttl/2 {
		t.Fatalf("Get right after Set(ttl=%v) error = %v, want a hit", ttl, err)
	}
	deadline := start.Add(ttl + 3*time.Second)
	for {
		e, err := tier.Get(t.Context(), k)
		if errors.Is(err, cache.ErrMiss) {
			if since := time.Since(start); since < ttl-5*time.Millisecond {
				t.Fatalf("entry gone after %v, before its ttl %v", since, ttl)
			}
			return
		}
		if err != nil {
			t.Fatalf("Get: %v", err)
		}
		if time.Now().After(deadline) {
			if e.ExpiresAt.Before(time.Now()) {
				t.Logf("tier still returns the entry %v after its ttl; accepted since ExpiresAt has passed", time.Since(start))
				return
			}
			t.Fatalf("entry still live %v after Set with ttl %v", time.Since(start), ttl)
		}
		time.Sleep(10 * time.Millisecond) // polling interval, not synchronisation
	}
}

func testIsolation(t *testing.T, tier cache.Tier, key func(string) cache.Key) {
	now := time.Now()
	a, ab, c := key("a"), key("ab"), key("c")
	ea := NewEntry(now, time.Minute, []byte("answer a"))
	eab := NewEntry(now, time.Minute, []byte("answer ab"))
	MustSet(t, tier, a, ea, time.Minute)
	MustSet(t, tier, ab, eab, time.Minute)
	AssertEntry(t, MustGet(t, tier, a), ea)
	AssertEntry(t, MustGet(t, tier, ab), eab)
	if _, err := tier.Get(t.Context(), c); !errors.Is(err, cache.ErrMiss) {
		t.Fatalf("Get(unset key) error = %v, want cache.ErrMiss", err)
	}
	if err := tier.Delete(t.Context(), a); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	settle(tier)
	AssertEntry(t, MustGet(t, tier, ab), eab)
}

func testLargeBody(t *testing.T, tier cache.Tier, key func(string) cache.Key) {
	body := make([]byte, 1<<20)
	_, _ = rand.Read(body) // crypto/rand.Read never fails
	want := NewEntry(time.Now(), time.Minute, body)
	k := key("k")
	MustSet(t, tier, k, want, time.Minute)
	AssertEntry(t, MustGet(t, tier, k), want)
}

// testConcurrent races Sets, Gets and Deletes on a few keys; run it under
// -race. Every hit must be a whole entry that was stored under that key.
func testConcurrent(t *testing.T, tier cache.Tier, key func(string) cache.Key) {
	const goroutines, iterations = 8, 100
	keys := []cache.Key{key("0"), key("1"), key("2"), key("3")}
	var wg sync.WaitGroup
	errc := make(chan error, goroutines)
	for g := range goroutines {
		wg.Go(func() {
			for i := range iterations {
				k := keys[(g+i)%len(keys)]
				var err error
				switch i % 5 {
				case 0, 1:
					body := fmt.Appendf(nil, "%s|%d|%d", k, g, i)
					err = tier.Set(t.Context(), k, NewEntry(time.Now(), time.Minute, body), time.Minute)
				case 4:
					err = tier.Delete(t.Context(), k)
				default:
					var e cache.Entry
					e, err = tier.Get(t.Context(), k)
					if errors.Is(err, cache.ErrMiss) {
						err = nil
					} else if err == nil && (!bytes.HasPrefix(e.Body, []byte(string(k)+"|")) || e.Status != http.StatusOK) {
						err = fmt.Errorf("Get(%s) = status %d body %q: not an entry stored under that key", k, e.Status, e.Body)
					}
				}
				if err != nil {
					errc <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
}

// NewEntry returns a 200 JSON entry stored at now, fresh for ttl.
func NewEntry(now time.Time, ttl time.Duration, body []byte) cache.Entry {
	return cache.Entry{
		Status:    http.StatusOK,
		Header:    http.Header{"Content-Type": {"application/json"}},
		Body:      body,
		StoredAt:  now,
		ExpiresAt: now.Add(ttl),
	}
}

// MustSet stores e and, if the tier is a Waiter, waits for the write to be
// visible.
func MustSet(t testing.TB, tier cache.Tier, k cache.Key, e cache.Entry, ttl time.Duration) {
	t.Helper()
	if err := tier.Set(t.Context(), k, e, ttl); err != nil {
		t.Fatalf("Set(%s): %v", k, err)
	}
	settle(tier)
}

// MustGet returns the entry under k or fails the test.
func MustGet(t testing.TB, tier cache.Tier, k cache.Key) cache.Entry {
	t.Helper()
	e, err := tier.Get(t.Context(), k)
	if err != nil {
		t.Fatalf("Get(%s): %v", k, err)
	}
	return e
}

// AssertEntry compares everything a tier persists: status, headers (nil and
// empty are equal), body, and times to the millisecond. Tier is not
// compared.
func AssertEntry(t testing.TB, got, want cache.Entry) {
	t.Helper()
	if got.Status != want.Status {
		t.Errorf("Status = %d, want %d", got.Status, want.Status)
	}
	if !headerEqual(got.Header, want.Header) {
		t.Errorf("Header = %v, want %v", got.Header, want.Header)
	}
	if !bytes.Equal(got.Body, want.Body) {
		t.Errorf("Body (%d bytes) differs from the stored body (%d bytes)", len(got.Body), len(want.Body))
	}
	if !timeEqual(got.StoredAt, want.StoredAt) {
		t.Errorf("StoredAt = %v, want %v (to the millisecond)", got.StoredAt, want.StoredAt)
	}
	if !timeEqual(got.ExpiresAt, want.ExpiresAt) {
		t.Errorf("ExpiresAt = %v, want %v (to the millisecond)", got.ExpiresAt, want.ExpiresAt)
	}
}

func timeEqual(a, b time.Time) bool {
	if a.IsZero() || b.IsZero() {
		return a.IsZero() == b.IsZero()
	}
	return a.Sub(b).Abs() < time.Millisecond
}

func headerEqual(a, b http.Header) bool {
	if len(a) != len(b) {
		return false
	}
	for name, va := range a {
		vb, ok := b[name]
		if !ok || !slices.Equal(va, vb) {
			return false
		}
	}
	return true
}

func settle(tier cache.Tier) {
	if w, ok := tier.(Waiter); ok {
		w.Wait()
	}
}
