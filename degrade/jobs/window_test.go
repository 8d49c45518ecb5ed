package jobs

import (
	"testing"
	"time"
)

// TestRunWindowBacksOffAndRecovers: a burst of busy answers halves the
// window once; answered runs widen it by about one per window; a busy
// answer at a window of one pauses every start for its Retry-After.
func TestRunWindowBacksOffAndRecovers(t *testing.T) {
	w := newRunWindow(16)
	now := time.Unix(1000, 0)
	for range 16 {
		if ok, _ := w.acquire(now); !ok {
			t.Fatal("a slot under the window was refused")
		}
	}
	if ok, wait := w.acquire(now); ok || wait != 0 {
		t.Fatalf("17th start: ok=%v wait=%v, want refused until a run ends", ok, wait)
	}
	for range 12 { // one saturated burst: 12 of 16 come back busy
		w.release(now, true, time.Second)
	}
	if got := w.size(); got != 8 {
		t.Fatalf("window after one busy burst: %d, want 8 (halved once)", got)
	}
	for range 4 {
		w.release(now, false, 0)
	}
	// The next burst, a back-off later, halves again: 8 → 4 → 2 → 1.
	for i := range 3 {
		now = now.Add(time.Second)
		w.acquire(now)
		w.release(now, true, time.Second)
		if got, want := w.size(), 8>>(i+1); got != want {
			t.Fatalf("window after burst %d: %d, want %d", i+2, got, want)
		}
	}
	// At one, a busy answer pauses starts for its Retry-After.
	now = now.Add(time.Second)
	w.acquire(now)
	w.release(now, true, 2*time.Second)
	if ok, wait := w.acquire(now.Add(time.Second)); ok || wait != time.Second {
		t.Fatalf("during the pause: ok=%v wait=%v, want refused for 1s more", ok, wait)
	}
	now = now.Add(2 * time.Second)
	// Answered runs widen it again: about one more slot per window.
	for range 40 {
		if ok, _ := w.acquire(now); !ok {
			t.Fatalf("a start at window %d with nothing running was refused", w.size())
		}
		w.release(now, false, 0)
	}
	if got := w.size(); got < 7 || got > 10 {
		t.Fatalf("window after 40 answered runs from 1: %d, want about 8 (additive increase)", got)
	}
}
