package admission

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgecache/edgecache/cache/cachetest"
	"github.com/redis/go-redis/v9"
)

// creditClock is a fake clock near the real time: Redis expires a
// window's hash at its real end, so the windows must not lie in the past.
func creditClock() *fakeClock {
	day := time.Now().UTC().Truncate(24 * time.Hour)
	return &fakeClock{now: day.Add(23*time.Hour + 59*time.Minute)} // one minute before the reset
}

func newTestCredits(t *testing.T, cfg CreditsConfig) *Credits {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	c, err := NewCredits(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCreditWindowsAligned(t *testing.T) {
	r := CreditRule{Window: 24 * time.Hour}
	start, end := r.window(time.Date(2026, 12, 7, 13, 45, 0, 0, time.UTC))
	if !start.Equal(time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)) || !end.Equal(time.Date(2026, 12, 8, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("daily window %v – %v, want 00:00 UTC to 00:00 UTC", start, end)
	}
	r.Offset = 16 * time.Hour // midnight in UTC+8
	if _, end := r.window(time.Date(2026, 12, 7, 13, 45, 0, 0, time.UTC)); !end.Equal(time.Date(2026, 12, 7, 16, 0, 0, 0, time.UTC)) {
		t.Errorf("offset window ends %v, want 16:00 UTC", end)
	}
	r = CreditRule{Window: time.Hour}
	if start, _ := r.window(time.Date(2026, 12, 7, 13, 45, 0, 0, time.UTC)); start.Hour() != 13 || start.Minute() != 0 {
		t.Errorf("hourly window starts %v", start)
	}
}

// A key's request credit: the last one allowed says 0 remaining, the
// next is refused until 00:00 UTC with the time in the message, and the
// next day it is whole again; the lane's token credit counts what the
// answers used.
func TestCreditsLocal(t *testing.T) {
	clk := creditClock()
	free := Free
	c := newTestCredits(t, CreditsConfig{Clock: clk, Rules: []CreditRule{
		{Scope: ScopeKey, Lane: &free, Requests: 3},
		{Scope: ScopeLane, Lane: &free, Tokens: 100},
	}})
	ctx := context.Background()
	alice := CreditCaller{Key: "k:alice", Lane: Free}
	for i := range 3 {
		d, ch := c.Spend(ctx, alice)
		if !d.Allowed || ch == nil || d.Requests.Limit != 3 || d.Requests.Remaining != int64(2-i) {
			t.Fatalf("request %d: %+v", i, d)
		}
	}
	d, ch := c.Spend(ctx, alice)
	reset := clk.Now().Truncate(24 * time.Hour).Add(24 * time.Hour)
	if d.Allowed || ch != nil || d.Kind != KindRequests || !d.Reset.Equal(reset) || d.RetryAfter != time.Minute {
		t.Fatalf("fourth request: %+v (want refused until %v)", d, reset)
	}
	if msg := d.Message(); !strings.Contains(msg, reset.Format("2006-01-02 15:04:05 UTC")) || !strings.Contains(msg, "3 requests per day") {
		t.Errorf("message %q", msg)
	}
	h := map[string]string{}
	d.Headers(func(k, v string) { h[k] = v })
	if h["retry-after"] != "60" || h["x-ratelimit-remaining-requests"] != "0" || h["x-ratelimit-reset-requests"] != "1m0s" {
		t.Errorf("headers %v", h)
	}
	// Another free key is not limited by alice's count, but the lane's
	// tokens are shared: one answer of 150 tokens spends them.
	bob := CreditCaller{Key: "k:bob", Lane: Free}
	_, ch = c.Spend(ctx, bob)
	c.Settle(ctx, ch, 150, false)
	if d, _ := c.Spend(ctx, bob); d.Allowed || d.Kind != KindTokens {
		t.Fatalf("after 150 of 100 tokens: %+v", d)
	}
	if d, _ := c.Spend(ctx, CreditCaller{Key: "k:carol", Lane: Paid}); !d.Allowed {
		t.Errorf("paid lane refused by free credits: %+v", d)
	}
	clk.Advance(time.Minute)
	if d, _ := c.Spend(ctx, alice); !d.Allowed || d.Requests.Remaining != 2 {
		t.Errorf("next day: %+v", d)
	}
}

// A refund gives the request back (another limit refused it).
func TestCreditsRefund(t *testing.T) {
	c := newTestCredits(t, CreditsConfig{Clock: creditClock(), Rules: []CreditRule{{Scope: ScopeKey, Requests: 1}}})
	k := CreditCaller{Key: "k:x", Lane: Paid}
	_, ch := c.Spend(context.Background(), k)
	c.Settle(context.Background(), ch, 0, true)
	if d, _ := c.Spend(context.Background(), k); !d.Allowed {
		t.Fatalf("after a refund: %+v", d)
	}
}

// Two instances with their own clients on one real redis-server share a
// credit: 16 goroutines each spend at once, exactly the credit is
// admitted; tokens one settles refuse the other; with Redis stopped each
// falls back to its share.
func TestCreditsSharedInRedis(t *testing.T) {
	srv := cachetest.StartRedis(t)
	clk := creditClock()
	rules := []CreditRule{{Scope: ScopeTenant, Requests: 20}, {Scope: ScopeKey, Tokens: 1000, Window: time.Hour}}
	var cs []*Credits
	for range 2 {
		cs = append(cs, newTestCredits(t, CreditsConfig{Client: testClient(t, srv.Addr()), Clock: clk, Replicas: 2,
			Timeout: time.Second, Region: "eu", Rules: rules}))
	}
	ctx := context.Background()
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for i := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d, _ := cs[i%2].Spend(ctx, CreditCaller{Key: "k:acme-1", Tenant: "acme", Lane: Paid})
			if d.Fallback {
				t.Errorf("fell back with Redis up: %+v", d)
			}
			if d.Allowed {
				allowed.Add(1)
			}
		}()
	}
	wg.Wait()
	if n := allowed.Load(); n != 20 {
		t.Fatalf("two instances admitted %d of a shared credit of 20", n)
	}
	k := CreditCaller{Key: "k:solo", Lane: Paid}
	_, ch := cs[0].Spend(ctx, k)
	cs[0].Settle(ctx, ch, 1000, false)
	if d, _ := cs[1].Spend(ctx, k); d.Allowed || d.Kind != KindTokens || d.Tokens.Remaining != 0 || d.Fallback {
		t.Fatalf("the other instance after 1000 tokens: %+v", d)
	}
	srv.Stop()
	n := 0
	for range 20 {
		if d, _ := cs[0].Spend(ctx, CreditCaller{Tenant: "globex", Lane: Paid}); d.Allowed {
			n++
			if !d.Fallback || d.Requests.Limit != 10 {
				t.Fatalf("with Redis down: %+v", d)
			}
		}
	}
	if n != 10 {
		t.Errorf("with Redis down one of 2 replicas admitted %d, want its share 10", n)
	}
}

func TestCreditRuleValidate(t *testing.T) {
	for _, r := range []CreditRule{{}, {Requests: -1}, {Requests: 1, Window: time.Millisecond}, {Requests: 1, Offset: 25 * time.Hour}} {
		if r.Validate() == nil {
			t.Errorf("%+v: valid", r)
		}
	}
	if err := (CreditRule{Tokens: 5, Window: time.Hour, Offset: 30 * time.Minute}).Validate(); err != nil {
		t.Error(err)
	}
}

// What a replica counted alone while Redis was down is added to the
// region's counts once Redis answers again (and a later answer's tokens
// go there too), so the credit is not granted again in full after the
// outage. Redis comes back empty here (no persistence): what it then
// holds is the merge.
func TestCreditsMergedAfterOutage(t *testing.T) {
	srv := cachetest.StartRedis(t)
	clk := &fakeClock{now: time.Now().UTC().Truncate(24 * time.Hour).Add(12 * time.Hour)}
	rules := []CreditRule{{Scope: ScopeTenant, Requests: 20, Tokens: 100000}}
	c := newTestCredits(t, CreditsConfig{Client: testClient(t, srv.Addr()), Clock: clk, Replicas: 2,
		Timeout: time.Second, Region: "eu", Rules: rules})
	admin := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer admin.Close()
	ctx := context.Background()
	caller := CreditCaller{Tenant: "acme", Lane: Paid}
	key := c.applicable(caller, clk.Now())[0].key
	for range 4 {
		if d, _ := c.Spend(ctx, caller); !d.Allowed || d.Fallback {
			t.Fatalf("Redis up: %+v", d)
		}
	}

	srv.Stop()
	var charges []*CreditCharge
	for range 6 {
		d, ch := c.Spend(ctx, caller)
		if !d.Allowed || !d.Fallback || d.Requests.Limit != 10 {
			t.Fatalf("Redis down: %+v, want an allowed fallback on the share of 10", d)
		}
		charges = append(charges, ch)
	}
	c.Settle(ctx, charges[0], 500, false)
	if st := c.Stats(); !st.BreakerOpen || st.Windows != 1 || st.Merged != 0 {
		t.Fatalf("during the outage: %+v", st)
	}

	srv.Restart()
	clk.Advance(2 * DefaultCooldown) // the breaker lets a trial call through
	if d, _ := c.Spend(ctx, caller); !d.Allowed || d.Fallback {
		t.Fatalf("Redis back: %+v", d)
	}
	want := map[string]string{"r": "7", "t": "500"} // 6 counted alone + the trial; the settled tokens
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, err := admin.HGetAll(ctx, key).Result()
		if err == nil && got["r"] == want["r"] && got["t"] == want["t"] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Redis holds %v (%v), want %v: the outage's counts were not merged", got, err, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if st := c.Stats(); st.Merged != 1 || st.Windows != 0 || st.BreakerOpen {
		t.Fatalf("after the merge: %+v", st)
	}
	if ttl, err := admin.PTTL(ctx, key).Result(); err != nil || ttl <= 0 {
		t.Fatalf("merged window's hash has TTL %v (%v), want its window's expiry", ttl, err)
	}
	// A charge made during the outage, settled after the merge: its
	// tokens go to Redis, where its request is counted now.
	c.Settle(ctx, charges[1], 300, false)
	if got, err := admin.HGet(ctx, key, "t").Result(); err != nil || got != "800" {
		t.Fatalf("tokens after a late settle: %q (%v), want 800", got, err)
	}
	if d, _ := c.Spend(ctx, caller); !d.Allowed || d.Fallback || d.Requests.Remaining != 12 {
		t.Fatalf("after the merge: %+v, want 12 of 20 requests left", d)
	}
}
