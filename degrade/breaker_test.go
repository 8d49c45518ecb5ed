package degrade

import (
	"errors"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func noJitter() BreakerConfig { return BreakerConfig{Jitter: -1} }

func TestBreakerTripsOnConsecutiveFailures(t *testing.T) {
	b := NewBreaker("a", noJitter())
	for i := range 4 {
		if err := b.allow(t0); err != nil {
			t.Fatalf("call %d refused: %v", i, err)
		}
		b.record(t0, false, 0, "503")
	}
	if b.allow(t0) != nil {
		t.Fatal("refused before the 5th failure")
	}
	b.record(t0, false, 0, "503")
	err := b.allow(t0.Add(time.Second))
	var oe *OpenError
	if !errors.Is(err, ErrOpen) || !errors.As(err, &oe) || !oe.Until.Equal(t0.Add(30*time.Second)) {
		t.Fatalf("after 5 failures: %v, want open until +30s", err)
	}
}

func TestBreakerTripsOnRatio(t *testing.T) {
	b := NewBreaker("a", noJitter())
	// 10 requests in the window, alternating: 50 % failures, never 5 in a row.
	for i := range 10 {
		if err := b.allow(t0.Add(time.Duration(i) * time.Second)); err != nil {
			t.Fatalf("call %d refused early: %v", i, err)
		}
		b.record(t0.Add(time.Duration(i)*time.Second), i%2 == 0, 0, "x")
	}
	if b.allow(t0.Add(10*time.Second)) == nil {
		t.Fatal("50 % failures over 10 requests did not trip")
	}
	// Old failures leave the window: a fresh breaker with failures 40 s ago stays closed.
	b2 := NewBreaker("b", noJitter())
	for i := range 9 {
		b2.allow(t0)
		b2.record(t0, i%2 == 0, 0, "x")
	}
	b2.allow(t0.Add(40 * time.Second))
	b2.record(t0.Add(40*time.Second), false, 0, "x")
	if b2.allow(t0.Add(40*time.Second)) != nil {
		t.Error("failures outside the window counted")
	}
}

func TestBreakerHalfOpenAndGrowingOpenTime(t *testing.T) {
	b := NewBreaker("a", noJitter())
	trip := func(at time.Time) {
		for range 5 {
			b.allow(at)
			b.record(at, false, 0, "x")
		}
	}
	trip(t0)
	if b.allow(t0.Add(29*time.Second)) == nil {
		t.Fatal("open breaker let a call through")
	}
	// After 30 s: one probe at a time.
	at := t0.Add(30 * time.Second)
	if err := b.allow(at); err != nil {
		t.Fatalf("half-open probe refused: %v", err)
	}
	if b.allow(at) == nil {
		t.Fatal("second concurrent probe allowed")
	}
	b.record(at, false, 0, "x") // probe failed: open again, for 60 s now
	if err := b.allow(at.Add(59 * time.Second)); err == nil {
		t.Fatal("second trip did not double the open time")
	}
	at = at.Add(60 * time.Second)
	for i := range 2 { // two good probes close it
		if err := b.allow(at); err != nil {
			t.Fatalf("probe %d refused: %v", i, err)
		}
		b.record(at, true, 0, "")
	}
	if s := b.Status(); s.State != "closed" {
		t.Fatalf("state %s after good probes", s.State)
	}
	for range 3 {
		if err := b.allow(at); err != nil {
			t.Fatalf("closed breaker refused: %v", err)
		}
	}
}

func TestBreakerRetryAfterExtendsNeverShortens(t *testing.T) {
	b := NewBreaker("a", noJitter())
	for range 5 {
		b.allow(t0)
		b.record(t0, false, 120*time.Second, "429")
	}
	if b.allow(t0.Add(119*time.Second)) == nil {
		t.Fatal("Retry-After 120 s not honoured")
	}
	// A late failure with a shorter Retry-After does not shorten it.
	b.record(t0.Add(time.Second), false, 5*time.Second, "429")
	if b.allow(t0.Add(100*time.Second)) == nil {
		t.Fatal("open time shortened")
	}
	// Cap: many trips stay within MaxOpen (+ jitter off).
	b2 := NewBreaker("c", noJitter())
	at := t0
	for range 20 {
		for range 5 {
			b2.allow(at)
			b2.record(at, false, 0, "x")
		}
		at = at.Add(301 * time.Second)
	}
	if b2.Remaining() > 300*time.Second {
		t.Errorf("open time %v above the cap", b2.Remaining())
	}
}

func TestBreakerAbandonedProbe(t *testing.T) {
	b := NewBreaker("a", noJitter())
	for range 5 {
		b.allow(t0)
		b.record(t0, false, 0, "x")
	}
	at := t0.Add(31 * time.Second)
	if b.allow(at) != nil {
		t.Fatal("probe refused")
	}
	// The prober never reports; after probeTimeout another may probe.
	if b.allow(at.Add(probeTimeout+time.Second)) != nil {
		t.Error("an abandoned probe blocked the breaker forever")
	}
}

func TestRetryBudget(t *testing.T) {
	var b RetryBudget
	var ends []func()
	for range 10 {
		ends = append(ends, b.Begin())
	}
	var dones []func()
	for {
		d, ok := b.TryRetry()
		if !ok {
			break
		}
		dones = append(dones, d)
	}
	if len(dones) != 3 { // 20 % of 10 = 2, minimum 3
		t.Errorf("retries allowed with 10 in flight: %d, want 3", len(dones))
	}
	for range 40 {
		ends = append(ends, b.Begin())
	}
	if _, ok := b.TryRetry(); !ok { // 20 % of 50 = 10
		t.Error("budget did not grow with traffic")
	}
	for _, f := range append(ends, dones...) {
		f()
	}
	if r, rt := b.InFlight(); r != 0 || rt != 1 {
		t.Errorf("in flight %d/%d", r, rt)
	}
}

func TestBackoff(t *testing.T) {
	for attempt := 1; attempt <= 10; attempt++ {
		limit := min(100*time.Millisecond<<(attempt-1), 2*time.Second)
		for range 100 {
			if d := Backoff(attempt, 0, 0); d < 0 || d > limit {
				t.Fatalf("attempt %d: %v outside [0, %v]", attempt, d, limit)
			}
		}
	}
}

func TestBreakerHoldAndRelease(t *testing.T) {
	b := NewBreaker("a", noJitter())
	b.hold(t0, 7*time.Second, "upstream_429")
	if b.allow(t0.Add(6*time.Second)) == nil {
		t.Fatal("held target called before Retry-After passed")
	}
	if b.allow(t0.Add(7*time.Second)) != nil {
		t.Fatal("held target not probed after Retry-After")
	}
	b.Release() // the probe was never made
	if b.allow(t0.Add(7*time.Second)) != nil {
		t.Fatal("released probe slot not reusable")
	}
	b.record(t0.Add(7*time.Second), true, 0, "")
	b.allow(t0.Add(8 * time.Second))
	b.record(t0.Add(8*time.Second), true, 0, "")
	if s := b.Status(); s.State != "closed" || s.Trips != 0 {
		t.Errorf("after a hold and good probes: %+v", s)
	}
}
