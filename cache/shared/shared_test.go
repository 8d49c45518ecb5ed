package shared_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/edgecache/edgecache/cache"
	"github.com/edgecache/edgecache/cache/cachetest"
	"github.com/edgecache/edgecache/cache/shared"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// go-redis starts this when a pool's dials keep failing; it re-dials
		// every second and only notices Close at its next wake-up.
		goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).tryDial"),
	)
}

var quiet = slog.New(slog.DiscardHandler)

func newShared(tb testing.TB, cfg shared.Config) *shared.Shared {
	tb.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quiet
	}
	s, err := shared.New(cfg)
	if err != nil {
		tb.Fatalf("shared.New: %v", err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

// rawClient talks to Redis directly, beside the code under test.
func rawClient(tb testing.TB, addrs ...string) redis.UniversalClient {
	tb.Helper()
	c := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: addrs})
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

func TestConformanceSingleNode(t *testing.T) {
	r := cachetest.StartRedis(t)
	n := 0
	cachetest.RunTier(t, func(t *testing.T) cache.Tier {
		n++ // each subtest gets its own key space on the one server
		return newShared(t, shared.Config{Conn: shared.Conn{Addrs: []string{r.Addr()}}, Prefix: fmt.Sprintf("t%d:", n), Timeout: time.Second})
	})
}

func TestConformanceCluster(t *testing.T) {
	addrs := cachetest.StartRedisCluster(t)
	cachetest.RunTier(t, func(t *testing.T) cache.Tier {
		return newShared(t, shared.Config{Conn: shared.Conn{Addrs: addrs}, Timeout: time.Second})
	})
}

// Keys must spread over the cluster's slots (no hash tag pins them to one
// node), and each must be readable through the cluster client.
func TestClusterSpreadsKeys(t *testing.T) {
	addrs := cachetest.StartRedisCluster(t)
	s := newShared(t, shared.Config{Conn: shared.Conn{Addrs: addrs}, Timeout: time.Second})
	const n = 60
	for i := range n {
		k := cache.Key(fmt.Sprintf("key-%d", i))
		cachetest.MustSet(t, s, k, cachetest.NewEntry(time.Now(), time.Minute, []byte(k)), time.Minute)
	}
	for i := range n {
		k := cache.Key(fmt.Sprintf("key-%d", i))
		if e := cachetest.MustGet(t, s, k); string(e.Body) != string(k) {
			t.Errorf("Get(%s) body = %q", k, e.Body)
		}
	}
	for _, a := range addrs {
		size, err := rawClient(t, a).DBSize(t.Context()).Result()
		if err != nil {
			t.Fatalf("DBSIZE %s: %v", a, err)
		}
		if size == 0 {
			t.Errorf("node %s holds no keys; keys are not spread over slots", a)
		}
	}
}

func TestGetMarksTierAndCounts(t *testing.T) {
	r := cachetest.StartRedis(t)
	s := newShared(t, shared.Config{Conn: shared.Conn{Addrs: []string{r.Addr()}}})
	cachetest.MustSet(t, s, "k", cachetest.NewEntry(time.Now(), time.Minute, []byte("v")), time.Minute)
	if e := cachetest.MustGet(t, s, "k"); e.Tier != shared.TierName {
		t.Errorf("Tier = %q, want %q", e.Tier, shared.TierName)
	}
	if _, err := s.Get(t.Context(), "absent"); !errors.Is(err, cache.ErrMiss) {
		t.Errorf("Get(absent) = %v, want cache.ErrMiss", err)
	}
	want := shared.Stats{Gets: 2, Hits: 1, Misses: 1, Sets: 1}
	if got := s.Stats(); got != want {
		t.Errorf("Stats = %+v, want %+v", got, want)
	}
	// The value is stored under the default prefix with a PX ttl.
	ttl, err := rawClient(t, r.Addr()).PTTL(t.Context(), shared.DefaultPrefix+"k").Result()
	if err != nil || ttl <= 0 || ttl > time.Minute {
		t.Errorf("PTTL = %v, %v; want within (0, 1m]", ttl, err)
	}
}

func TestCorruptValueIsMissAndCounted(t *testing.T) {
	r := cachetest.StartRedis(t)
	s := newShared(t, shared.Config{Conn: shared.Conn{Addrs: []string{r.Addr()}}, Prefix: "p:"})
	if err := rawClient(t, r.Addr()).Set(t.Context(), "p:k", "not an entry", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(t.Context(), "k"); !errors.Is(err, cache.ErrMiss) {
		t.Fatalf("Get(corrupt) = %v, want cache.ErrMiss", err)
	}
	if st := s.Stats(); st.Corrupt != 1 || st.Misses != 1 || st.Errors != 0 {
		t.Errorf("Stats = %+v, want 1 corrupt miss and no error", st)
	}
	if !s.Healthy() {
		t.Error("a corrupt value must not count against Redis")
	}
}

// A Redis that stops answering (CLIENT PAUSE) costs at most the budget.
func TestSlowRedisIsBoundedByTimeout(t *testing.T) {
	r := cachetest.StartRedis(t)
	const budget = 50 * time.Millisecond
	s := newShared(t, shared.Config{Conn: shared.Conn{Addrs: []string{r.Addr()}}, Timeout: budget})
	cachetest.MustSet(t, s, "k", cachetest.NewEntry(time.Now(), time.Minute, []byte("v")), time.Minute)
	if err := rawClient(t, r.Addr()).Do(t.Context(), "CLIENT", "PAUSE", "1000", "ALL").Err(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err := s.Get(t.Context(), "k")
	elapsed := time.Since(start)
	if err == nil || errors.Is(err, cache.ErrMiss) {
		t.Fatalf("Get during pause = %v, want a timeout error", err)
	}
	if elapsed > budget+200*time.Millisecond {
		t.Errorf("Get took %v, want about the %v budget", elapsed, budget)
	}
	if st := s.Stats(); st.Errors != 1 {
		t.Errorf("Stats.Errors = %d, want 1", st.Errors)
	}
}

// The fail-open guard: once Redis is gone the breaker opens and operations
// are skipped in microseconds; after a restart a probe closes it again.
func TestFailOpenAndRecover(t *testing.T) {
	r := cachetest.StartRedis(t)
	s := newShared(t, shared.Config{
		Conn:             shared.Conn{Addrs: []string{r.Addr()}},
		FailureThreshold: 3,
		ProbeInterval:    100 * time.Millisecond,
	})
	ctx := t.Context()
	cachetest.MustSet(t, s, "k", cachetest.NewEntry(time.Now(), time.Minute, []byte("v")), time.Minute)
	if !s.Healthy() {
		t.Fatal("not healthy before the outage")
	}

	r.Stop()
	for i := 0; s.Healthy(); i++ {
		if i == 10 {
			t.Fatalf("breaker still closed after %d failed Gets; stats %+v", i, s.Stats())
		}
		if _, err := s.Get(ctx, "k"); err == nil || errors.Is(err, cache.ErrMiss) {
			t.Fatalf("Get with Redis stopped = %v, want an error that is not ErrMiss", err)
		}
	}

	const n = 100
	start := time.Now()
	for range n {
		if _, err := s.Get(ctx, "k"); !errors.Is(err, shared.ErrUnavailable) {
			t.Fatalf("Get with the breaker open = %v, want ErrUnavailable", err)
		}
	}
	elapsed := time.Since(start)
	t.Logf("%d Gets with the breaker open took %v", n, elapsed)
	if elapsed > 50*time.Millisecond {
		t.Errorf("%d Gets with the breaker open took %v, want well under 50ms", n, elapsed)
	}
	if err := s.Set(ctx, "k", cachetest.NewEntry(time.Now(), time.Minute, nil), time.Minute); !errors.Is(err, shared.ErrUnavailable) {
		t.Errorf("Set with the breaker open = %v, want ErrUnavailable", err)
	}
	if err := s.Delete(ctx, "k"); !errors.Is(err, shared.ErrUnavailable) {
		t.Errorf("Delete with the breaker open = %v, want ErrUnavailable", err)
	}
	if err := s.Ping(ctx); err == nil {
		t.Error("Ping with Redis stopped = nil")
	}

	r.Restart()
	start = time.Now()
	for !s.Healthy() {
		if time.Since(start) > 5*time.Second {
			t.Fatalf("not healthy %v after the restart; stats %+v", time.Since(start), s.Stats())
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
	t.Logf("recovered %v after the restart", time.Since(start))
	if _, err := s.Get(ctx, "k"); !errors.Is(err, cache.ErrMiss) { // restarted empty
		t.Errorf("Get after recovery = %v, want cache.ErrMiss", err)
	}
	cachetest.MustSet(t, s, "k", cachetest.NewEntry(time.Now(), time.Minute, []byte("v2")), time.Minute)
	cachetest.MustGet(t, s, "k")
	st := s.Stats()
	if st.Opens != 1 || st.Skipped < n {
		t.Errorf("Stats = %+v, want 1 open and at least %d skipped", st, n)
	}
}

// A caller that gives up is not Redis's fault and must not open the breaker.
func TestCallerCancellationDoesNotOpenBreaker(t *testing.T) {
	r := cachetest.StartRedis(t)
	s := newShared(t, shared.Config{Conn: shared.Conn{Addrs: []string{r.Addr()}}, FailureThreshold: 2})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	for range 5 {
		if _, err := s.Get(ctx, "k"); err == nil {
			t.Fatal("Get with a cancelled context = nil error")
		}
	}
	if !s.Healthy() {
		t.Errorf("breaker opened on caller cancellations; stats %+v", s.Stats())
	}
}

func TestPingAndClose(t *testing.T) {
	r := cachetest.StartRedis(t)
	s := newShared(t, shared.Config{Conn: shared.Conn{Addrs: []string{r.Addr()}}})
	if err := s.Ping(t.Context()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if s.Healthy() {
		t.Error("Healthy after Close")
	}
	if _, err := s.Get(t.Context(), "k"); !errors.Is(err, shared.ErrUnavailable) {
		t.Errorf("Get after Close = %v, want ErrUnavailable", err)
	}
	if err := s.Ping(t.Context()); !errors.Is(err, shared.ErrUnavailable) {
		t.Errorf("Ping after Close = %v, want ErrUnavailable", err)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := map[string]shared.Config{
		"no addrs":       {},
		"empty addr":     {Conn: shared.Conn{Addrs: []string{""}}},
		"db in cluster":  {Conn: shared.Conn{Addrs: []string{"a:1", "b:1"}, DB: 1}},
		"negative db":    {Conn: shared.Conn{Addrs: []string{"a:1"}, DB: -1}},
		"negative time":  {Conn: shared.Conn{Addrs: []string{"a:1"}}, Timeout: -1},
		"negative count": {Conn: shared.Conn{Addrs: []string{"a:1"}}, FailureThreshold: -1},
	}
	for name, cfg := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := shared.New(cfg); err == nil {
				t.Error("New = nil error, want one")
			}
		})
	}
	if err := (shared.Config{Conn: shared.Conn{Addrs: []string{"a:1", "b:1"}, MasterName: "m", DB: 2}}).Validate(); err != nil {
		t.Errorf("Sentinel with DB 2: %v", err)
	}
}

// TestTLS: with Conn.TLS the client reaches a Redis that speaks only TLS on
// that port, and the stored entry is there in plaintext Redis terms (the
// same server's plaintext port sees it); without TLS, or trusting other
// CAs, the TLS port is unusable: a miss, never a wrong answer.
func TestTLS(t *testing.T) {
	r := cachetest.StartRedisTLS(t)
	s := newShared(t, shared.Config{Conn: shared.Conn{Addrs: []string{r.TLSAddr}, TLS: r.ClientConfig()}, Prefix: "tls:", Timeout: time.Second})
	if err := s.Ping(t.Context()); err != nil {
		t.Fatalf("Ping over TLS: %v", err)
	}
	cachetest.MustSet(t, s, "k", cachetest.NewEntry(time.Now(), time.Minute, []byte("over tls")), time.Minute)
	if e := cachetest.MustGet(t, s, "k"); string(e.Body) != "over tls" {
		t.Errorf("Get over TLS: %q", e.Body)
	}
	if n, err := rawClient(t, r.Addr()).Exists(t.Context(), "tls:k").Result(); err != nil || n != 1 {
		t.Errorf("the plaintext port sees %d keys tls:k (%v), want 1", n, err)
	}

	for name, c := range map[string]shared.Conn{
		"plaintext to the TLS port": {Addrs: []string{r.TLSAddr}},
		"untrusted CA":              {Addrs: []string{r.TLSAddr}, TLS: &tls.Config{MinVersion: tls.VersionTLS12}},
		"wrong server name":         {Addrs: []string{r.TLSAddr}, TLS: &tls.Config{RootCAs: r.RootCAs, ServerName: "redis.example.com"}},
	} {
		t.Run(name, func(t *testing.T) {
			s := newShared(t, shared.Config{Conn: c, Prefix: "tls:", Timeout: 300 * time.Millisecond})
			if err := s.Ping(t.Context()); err == nil {
				t.Error("Ping succeeded")
			}
			if _, err := s.Get(t.Context(), "k"); err == nil {
				t.Error("Get succeeded")
			}
		})
	}
}
