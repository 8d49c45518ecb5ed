package jobs

import (
	"sync"
	"time"
)

// runWindow bounds how many jobs a replica runs at once by what the model
// takes: it is the one mechanism both queues (the local one and the Redis
// one) use to back off.
//
// Why: a busy answer (the upstream's 429 or 503, or admission's queue
// timing out) says the model is saturated, and starting as many runs as
// there are workers kept it answering busy: jobs came back busy, waited
// out their Retry-After, and lower-lane jobs took the freed starts, so free
// jobs finished before paid ones submitted beside them (47-65 of the first
// 100 were paid in a 100 + 100 run). The window narrows instead: halved on
// a busy answer (once per back-off, however many runs of one burst come
// back busy), widened by one per window's worth of answered runs (additive
// increase, multiplicative decrease, as TCP's congestion window). A busy
// answer at a window of one also pauses new starts for its Retry-After.
// (The queues also keep a lower lane from starting while a higher lane's
// job waits out its Retry-After.)
type runWindow struct {
	mu      sync.Mutex
	limit   float64 // runs allowed at once, 1…max
	max     int
	running int
	// Busy answers before burstEnd (the last halving plus its back-off)
	// belong to the same burst. pauseUntil holds every start.
	burstEnd, pauseUntil time.Time
}

func newRunWindow(max int) *runWindow {
	return &runWindow{limit: float64(max), max: max}
}

// acquire takes a run slot at now; when there is none it returns how long
// to wait at most before trying again (a pause's end, or 0: until a run
// ends).
func (w *runWindow) acquire(now time.Time) (bool, time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if now.Before(w.pauseUntil) {
		return false, w.pauseUntil.Sub(now)
	}
	if w.running >= int(w.limit) {
		return false, 0
	}
	w.running++
	return true, 0
}

// cancel gives back a slot acquire took for a run that did not happen
// (nothing to pick).
func (w *runWindow) cancel() {
	w.mu.Lock()
	w.running--
	w.mu.Unlock()
}

// release ends a run: busy with the answer's retryAfter, or answered.
func (w *runWindow) release(now time.Time, busy bool, retryAfter time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.running--
	if !busy {
		w.limit = min(w.limit+1/w.limit, float64(w.max))
		return
	}
	if now.Before(w.burstEnd) {
		return // the same burst of busy answers: cut once
	}
	backoff := max(retryAfter, 100*time.Millisecond)
	w.burstEnd = now.Add(backoff)
	if w.limit < 2 {
		w.pauseUntil = now.Add(backoff)
	}
	w.limit = max(w.limit/2, 1)
}

// size is the current window, for tests and the queue's state.
func (w *runWindow) size() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return int(w.limit)
}
