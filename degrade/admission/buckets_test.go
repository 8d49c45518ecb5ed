package admission

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

func newTestBuckets(t testing.TB, cfg BucketsConfig) *Buckets {
	t.Helper()
	b, err := NewBuckets(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var ns0 = t0.UnixNano()

func at(d time.Duration) int64 { return ns0 + int64(d) }

func key(id string) Subject    { return Subject{Dim: DimKey, ID: id} }
func tenant(id string) Subject { return Subject{Dim: DimTenant, ID: id} }
func ip(id string) Subject     { return Subject{Dim: DimIP, ID: id} }

func TestReserveBurstThenExactDelay(t *testing.T) {
	b := newTestBuckets(t, BucketsConfig{Defaults: Rules{Key: Limits{RequestsPerSecond: 2, RequestBurst: 3}}})
	s := []Subject{key("k1")}
	for i := range 3 {
		if d := b.reserve(ns0, 0, s); !d.Allowed {
			t.Fatalf("request %d denied within the burst: %+v", i, d)
		}
	}
	d := b.reserve(ns0, 0, s)
	want := Decision{
		RetryAfter: 500 * time.Millisecond,
		Limit:      Limit{DimKey, KindRequests},
		Requests:   Quota{Limit: 3, Remaining: 0, Reset: 1500 * time.Millisecond},
	}
	if d != want {
		t.Fatalf("4th request: got %+v, want %+v", d, want)
	}
	if d := b.reserve(at(d.RetryAfter-time.Microsecond), 0, s); d.Allowed {
		t.Fatalf("allowed 1µs before RetryAfter: %+v", d)
	}
	if d := b.reserve(at(d.RetryAfter), 0, s); !d.Allowed {
		t.Fatalf("denied at exactly RetryAfter: %+v", d)
	}
	// Refill is capped at the burst.
	for i := range 3 {
		if d := b.reserve(at(time.Hour), 0, s); !d.Allowed {
			t.Fatalf("after an hour, request %d denied", i)
		}
	}
	if d := b.reserve(at(time.Hour), 0, s); d.Allowed {
		t.Fatal("the bucket refilled above its burst")
	}
}

func TestReserveTokensAndSettle(t *testing.T) {
	// 600 tokens per minute = 10 per second, burst 600.
	b := newTestBuckets(t, BucketsConfig{Defaults: Rules{Tenant: Limits{TokensPerMinute: 600}}})
	s := []Subject{tenant("acme")}
	if d := b.reserve(ns0, 500, s); !d.Allowed || d.Tokens != (Quota{600, 100, 50 * time.Second}) {
		t.Fatalf("first: %+v", d)
	}
	d := b.reserve(ns0, 200, s)
	if d.Allowed || d.RetryAfter != 10*time.Second || d.Limit != (Limit{DimTenant, KindTokens}) {
		t.Fatalf("second: %+v, want denied for 10s by tenant_tokens", d)
	}
	if d.Requests.Limit != 0 {
		t.Errorf("requests quota reported for a tokens-only rule: %+v", d.Requests)
	}
	// The answer used only 100 of the 500 estimated: 400 come back.
	b.settle(ns0, 500, 100, s)
	if d := b.reserve(ns0, 200, s); !d.Allowed || d.Tokens.Remaining != 300 {
		t.Fatalf("after settle: %+v, want allowed with 300 left", d)
	}
	// A refund never overfills the bucket.
	b.settle(at(time.Hour), 10_000, 0, s)
	if d := b.reserve(at(time.Hour), 0, s); d.Tokens.Remaining != 600 {
		t.Fatalf("after a huge refund: %+v, want 600 left", d)
	}
	// An answer that cost more than estimated leaves debt.
	b.reserve(at(time.Hour), 600, s)
	b.settle(at(time.Hour), 600, 900, s)
	if d := b.reserve(at(time.Hour), 10, s); d.Allowed || d.RetryAfter != 31*time.Second {
		t.Fatalf("in debt: %+v, want denied for 31s", d)
	}
}

func TestReserveLargerThanBurst(t *testing.T) {
	b := newTestBuckets(t, BucketsConfig{Defaults: Rules{Key: Limits{TokensPerMinute: 600}}})
	s := []Subject{key("k")}
	if d := b.reserve(ns0, 1000, s); !d.Allowed {
		t.Fatalf("a request above the burst was refused with a full bucket: %+v", d)
	}
	if d := b.reserve(ns0, 1, s); d.Allowed || d.RetryAfter != 40100*time.Millisecond {
		t.Fatalf("after the large request: %+v, want denied for 40.1s", d)
	}
	// Denied large requests wait for a full bucket, not forever.
	if d := b.reserve(at(time.Minute), 1000, s); d.Allowed || d.RetryAfter != 40*time.Second {
		t.Fatalf("large request in debt: %+v, want denied for 40s", d)
	}
	if d := b.reserve(at(100*time.Second), 1000, s); !d.Allowed {
		t.Fatalf("large request on a full bucket: %+v", d)
	}
}

func TestReserveAllOrNothing(t *testing.T) {
	b := newTestBuckets(t, BucketsConfig{Defaults: Rules{
		Key:    Limits{RequestsPerSecond: 1, RequestBurst: 10},
		Tenant: Limits{RequestsPerSecond: 0.2, RequestBurst: 1},
		IP:     Limits{RequestsPerSecond: 1, RequestBurst: 2},
	}})
	s := []Subject{key("k"), tenant("t"), ip("10.0.0.1")}
	if d := b.reserve(ns0, 0, s); !d.Allowed || d.Requests != (Quota{1, 0, 5 * time.Second}) {
		t.Fatalf("first: %+v, want allowed with the tenant as the tightest quota", d)
	}
	// The tenant denies (5s) — and so does nothing else: the key and the IP
	// are not charged.
	for range 3 {
		d := b.reserve(ns0, 0, s)
		if d.Allowed || d.Limit != (Limit{DimTenant, KindRequests}) || d.RetryAfter != 5*time.Second {
			t.Fatalf("denied: %+v", d)
		}
	}
	if d := b.reserve(ns0, 0, []Subject{ip("10.0.0.1")}); !d.Allowed || d.Requests.Remaining != 0 {
		t.Fatalf("IP bucket after denials: %+v, want 1 left before this request (charged once)", d)
	}
	// Now the IP denies for 1s and the tenant for 5s: the longest wait is
	// the honest one.
	d := b.reserve(ns0, 0, s)
	if d.Allowed || d.Limit.Dim != DimTenant || d.RetryAfter != 5*time.Second {
		t.Fatalf("two denials: %+v, want the tenant's 5s", d)
	}
	if d := b.reserve(at(5*time.Second), 0, s); !d.Allowed {
		t.Fatalf("after 5s: %+v", d)
	}
}

func TestReserveSubjectLimitsOverrideDefaults(t *testing.T) {
	b := newTestBuckets(t, BucketsConfig{Defaults: Rules{Tenant: Limits{RequestsPerSecond: 1}}})
	big := &Limits{RequestsPerSecond: 100, RequestBurst: 100}
	for i := range 100 {
		if d := b.reserve(ns0, 0, []Subject{{Dim: DimTenant, ID: "big", Limits: big}}); !d.Allowed {
			t.Fatalf("request %d of a tenant with its own limit denied", i)
		}
	}
	b.reserve(ns0, 0, []Subject{tenant("small")})
	if d := b.reserve(ns0, 0, []Subject{tenant("small")}); d.Allowed {
		t.Fatal("default tenant limit not applied")
	}
	if d := b.reserve(ns0, 0, []Subject{ip("1.2.3.4"), key("no-limit")}); !d.Allowed || d.Requests.Limit != 0 {
		t.Fatalf("unlimited subjects: %+v", d)
	}
}

func TestReserveShadow(t *testing.T) {
	shadowed := &Limits{RequestsPerSecond: 1, RequestBurst: 1, Shadow: true}
	b := newTestBuckets(t, BucketsConfig{Defaults: Rules{Key: Limits{RequestsPerSecond: 10, RequestBurst: 10}}})
	s := []Subject{key("k"), {Dim: DimTenant, ID: "t", Limits: shadowed}}
	if d := b.reserve(ns0, 0, s); !d.Allowed || d.Shadow {
		t.Fatalf("first: %+v", d)
	}
	d := b.reserve(ns0, 0, s)
	if !d.Allowed || !d.Shadow || d.Limit != (Limit{DimTenant, KindRequests}) || d.RetryAfter != time.Second {
		t.Fatalf("second: %+v, want allowed, shadow-denied by tenant_requests for 1s", d)
	}
	// Headers show only enforced rules: the key's 10, not the shadow 1.
	if d.Requests.Limit != 10 || d.Requests.Remaining != 8 {
		t.Errorf("quota: %+v, want the key's (10, 8 left)", d.Requests)
	}
	// The shadow bucket is not charged when it would deny (as enforcement
	// would not): after 1s it allows again.
	if d := b.reserve(at(time.Second), 0, s); d.Shadow {
		t.Fatalf("after 1s: %+v, want no shadow denial", d)
	}
	if st := b.Stats(); st.ShadowDenied != 1 || st.Denied != 0 || st.Allowed != 2 {
		t.Errorf("stats: %+v", st)
	}

	all := newTestBuckets(t, BucketsConfig{Shadow: true, Defaults: Rules{IP: Limits{RequestsPerSecond: 1}}})
	all.reserve(ns0, 0, []Subject{ip("a")})
	if d := all.reserve(ns0, 0, []Subject{ip("a")}); !d.Allowed || !d.Shadow {
		t.Fatalf("config-wide shadow: %+v", d)
	}
}

func TestReserveClockBackwards(t *testing.T) {
	b := newTestBuckets(t, BucketsConfig{Defaults: Rules{Key: Limits{RequestsPerSecond: 1, RequestBurst: 1}}})
	s := []Subject{key("k")}
	b.reserve(ns0, 0, s)
	// Time jumps back: no refill, and the wait is measured from the
	// bucket's own time, never negative.
	d := b.reserve(at(-10*time.Second), 0, s)
	if d.Allowed || d.RetryAfter != time.Second {
		t.Fatalf("after a jump back: %+v", d)
	}
	if d := b.reserve(at(time.Second), 0, s); !d.Allowed {
		t.Fatalf("1s after the original time: %+v", d)
	}
}

func TestDecisionHeadersAndMessage(t *testing.T) {
	b := newTestBuckets(t, BucketsConfig{Defaults: Rules{Key: Limits{RequestsPerSecond: 2, RequestBurst: 3, TokensPerMinute: 6000}}})
	s := []Subject{key("k")}
	for range 3 {
		b.reserve(ns0, 100, s)
	}
	d := b.reserve(ns0, 100, s)
	got := map[string]string{}
	d.Headers(func(k, v string) { got[k] = v })
	want := map[string]string{
		"x-ratelimit-limit-requests":     "3",
		"x-ratelimit-remaining-requests": "0",
		"x-ratelimit-reset-requests":     "1.5s",
		"x-ratelimit-limit-tokens":       "6000",
		"x-ratelimit-remaining-tokens":   "5700",
		"x-ratelimit-reset-tokens":       "3s",
		"retry-after":                    "1",
		"retry-after-ms":                 "500",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("headers:\n got %v\nwant %v", got, want)
	}
	msg := d.Message()
	for _, part := range []string{"API key", "requests", "limit 3", "resets in 1.5s", "retry after 1s"} {
		if !strings.Contains(msg, part) {
			t.Errorf("message %q lacks %q", msg, part)
		}
	}
	err := d.Err()
	if ra, ok := RetryAfter(err); !ok || ra != 500*time.Millisecond || !isRateLimited(err) {
		t.Errorf("Err() = %v: RetryAfter %v %v", err, ra, ok)
	}
	if (Decision{Allowed: true}).Err() != nil {
		t.Error("an allowing decision has an error")
	}
	ok := map[string]string{}
	b.reserve(at(time.Hour), 0, s).Headers(func(k, v string) { ok[k] = v })
	if _, has := ok["retry-after"]; has || ok["x-ratelimit-remaining-requests"] != "2" {
		t.Errorf("allowed headers: %v", ok)
	}
}

func TestRetryAfterSeconds(t *testing.T) {
	for d, want := range map[time.Duration]int{0: 1, time.Millisecond: 1, time.Second: 1, 1001 * time.Millisecond: 2, 59 * time.Second: 59} {
		if got := RetryAfterSeconds(d); got != want {
			t.Errorf("RetryAfterSeconds(%v) = %d, want %d", d, got, want)
		}
	}
}

func TestBucketsBoundedMemory(t *testing.T) {
	b := newTestBuckets(t, BucketsConfig{
		MaxEntries:    256,
		SweepInterval: time.Minute,
		Defaults:      Rules{IP: Limits{RequestsPerSecond: 1, RequestBurst: 5}},
	})
	for i := range 10_000 {
		b.reserve(ns0, 0, []Subject{ip(fmt.Sprint("10.0.", i/256, ".", i%256))})
	}
	st := b.Stats()
	if st.Entries > 256+numShards || st.Evicted == 0 {
		t.Fatalf("after 10k subjects with MaxEntries 256: %+v", st)
	}
	// Full buckets are dropped by the sweep, which loses nothing.
	touched, fresh := map[int]bool{}, 0
	for i := 0; len(touched) < numShards; i++ { // touch every shard past its sweep time
		s := ip(fmt.Sprint("late-", i))
		touched[b.shardOf(entryKey{s.Dim, s.ID})] = true
		b.reserve(at(2*time.Minute), 0, []Subject{s})
		fresh++
	}
	for i := range b.shards {
		for k := range b.shards[i].m {
			if !strings.HasPrefix(k.id, "late-") {
				t.Fatalf("subject %q, full since long, survived the sweep", k.id)
			}
		}
	}
	if st := b.Stats(); st.Entries == 0 || st.Entries > fresh || st.Swept == 0 {
		t.Fatalf("after the sweep: %+v (%d fresh subjects)", st, fresh)
	}
}

func TestReserveManySubjects(t *testing.T) {
	b := newTestBuckets(t, BucketsConfig{Defaults: Rules{IP: Limits{RequestsPerSecond: 1, RequestBurst: 1}}})
	var s []Subject
	for i := range 2 * maxSubjects {
		s = append(s, ip(fmt.Sprint(i)))
	}
	if d := b.reserve(ns0, 0, s); !d.Allowed {
		t.Fatalf("first: %+v", d)
	}
	if d := b.reserve(ns0, 0, s); d.Allowed {
		t.Fatalf("second: %+v", d)
	}
}

// TestReserveConcurrent checks, under -race and on the real clock, that
// concurrent callers never admit more than the bucket holds.
func TestReserveConcurrent(t *testing.T) {
	b := newTestBuckets(t, BucketsConfig{Defaults: Rules{
		Tenant: Limits{RequestsPerSecond: 1, RequestBurst: 50},
		IP:     Limits{RequestsPerSecond: 1000, RequestBurst: 1000},
	}})
	var wg sync.WaitGroup
	var mu sync.Mutex
	allowed := 0
	start := time.Now()
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				if b.Reserve(1, tenant("t"), ip(fmt.Sprint(g, "-", i%7))).Allowed {
					mu.Lock()
					allowed++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if limit := 50 + int(time.Since(start).Seconds()) + 1; allowed > limit || allowed < 50 {
		t.Fatalf("allowed %d, want between 50 and %d", allowed, limit)
	}
}

func isRateLimited(err error) bool {
	_, ok := err.(*RateLimitError)
	return ok && err.(*RateLimitError).Unwrap() == ErrRateLimited
}

func BenchmarkReserve(b *testing.B) {
	bk := newTestBuckets(b, BucketsConfig{Defaults: Rules{
		Key:    Limits{RequestsPerSecond: 1e9, TokensPerMinute: 1e12},
		Tenant: Limits{RequestsPerSecond: 1e9, TokensPerMinute: 1e12},
		IP:     Limits{RequestsPerSecond: 1e9},
	}})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if !bk.Reserve(100, key("sk-hash"), tenant("acme"), ip("203.0.113.7")).Allowed {
				b.Fatal("denied")
			}
		}
	})
}
