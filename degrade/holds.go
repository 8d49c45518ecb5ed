package degrade

import (
	"sync"
	"sync/atomic"
	"time"
)

// Holds keeps some callers away from one target for a while: an upstream
// that answers 429 with Retry-After about one caller's own API key has
// rate-limited that key, not itself, so the key — never the target — is held
// (DEGRADATION.md rule 8). The zero value is ready to use and holds nothing;
// it is safe for concurrent use. Callers are opaque strings (an HMAC of the
// key, never the key).
//
// The table is bounded: when Max callers are held, expired holds are
// swept, and a new hold that still does not fit is dropped (and counted):
// that caller's next request reaches the upstream, which says 429 again.
type Holds struct {
	// Max callers held at once. Zero → 10,000.
	Max   int
	Clock Clock

	n       atomic.Int64 // len(until): the fast path when nothing is held
	dropped atomic.Uint64
	mu      sync.Mutex
	until   map[string]time.Time
}

// Hold keeps caller away for d from now; it never shortens a hold.
func (h *Holds) Hold(caller string, d time.Duration) { h.hold(now(h.Clock), caller, d) }

func (h *Holds) hold(t time.Time, caller string, d time.Duration) {
	if d <= 0 {
		return
	}
	until := t.Add(d)
	h.mu.Lock()
	defer h.mu.Unlock()
	if cur, ok := h.until[caller]; ok {
		if until.After(cur) {
			h.until[caller] = until
		}
		return
	}
	limit := h.Max
	if limit <= 0 {
		limit = 10_000
	}
	if len(h.until) >= limit {
		for k, u := range h.until {
			if !t.Before(u) {
				delete(h.until, k)
			}
		}
		if len(h.until) >= limit {
			h.dropped.Add(1)
			h.n.Store(int64(len(h.until)))
			return
		}
	}
	if h.until == nil {
		h.until = make(map[string]time.Time)
	}
	h.until[caller] = until
	h.n.Store(int64(len(h.until)))
}

// Remaining is how long caller stays held from now; 0 when it is not.
func (h *Holds) Remaining(caller string) time.Duration {
	if h.n.Load() == 0 {
		return 0 // the common case: no lock, no clock
	}
	return h.remaining(now(h.Clock), caller)
}

func (h *Holds) remaining(t time.Time, caller string) time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	u, ok := h.until[caller]
	if !ok {
		return 0
	}
	if !t.Before(u) {
		delete(h.until, caller)
		h.n.Store(int64(len(h.until)))
		return 0
	}
	return u.Sub(t)
}

// Any reports whether any caller may be held (a hold that has expired but
// not yet been swept counts): a cheap check before computing a caller's
// identity.
func (h *Holds) Any() bool { return h.n.Load() > 0 }

// Len returns the callers held now, and the holds dropped because the table
// was full.
func (h *Holds) Len() (held int, dropped uint64) {
	t := now(h.Clock)
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, u := range h.until {
		if t.Before(u) {
			held++
		}
	}
	return held, h.dropped.Load()
}
