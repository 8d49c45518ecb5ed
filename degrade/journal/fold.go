package journal

import (
	"sync"
	"time"
)

// Folding of refusals. A client over its quota is refused in microseconds
// and may be refused thousands of times a second; one record each would
// flush the capped Redis stream (and rotate the files) within a minute and
// hide every other degradation. So refusals are folded per tenant, route,
// rung, reason, lane and status over Config.RefusalWindow:
//
//   - the first refusal of a window is written at once, as any record (an
//     operator looking for "why was I refused" finds it without delay);
//   - the ones that follow within the window (by Record.Time) are counted
//     into one more record, written when the window ends: Time and the
//     other fields are those of the first of them, Count how many there
//     were and Last the time of the last one.
//
// A window thus yields at most two records, whatever the rate. The number
// of windows open at once is bounded by Config.MaxRefusalKeys; refusals of
// further tenants are folded under Tenant OtherTenants, so a client that
// rotates keys cannot flush the journal either.

// OtherTenants is the Tenant of records that fold refusals of tenants
// beyond Config.MaxRefusalKeys within one window.
const OtherTenants = "*"

// Refusal returns whether r is a refusal, which the journal folds: rung
// shed (self-protection 503 and own-quota 429, reasons "shed",
// "rate_limit_exceeded" and "insufficient_quota"), and busy answers the edge gave without calling
// the upstream because its own upstream admission was full (reasons
// "shed" and "queued_timeout"). Degraded answers that carry an upstream's
// failure are never folded.
func Refusal(r Record) bool {
	switch r.Rung {
	case RungShed:
		return true
	case RungBusy:
		return len(r.Attempts) == 0 && (r.Reason == "shed" || r.Reason == "queued_timeout")
	}
	return false
}

// foldKey is what refusals folded into one record share.
type foldKey struct {
	rung                        Rung
	tenant, route, reason, lane string
	status                      int
}

func keyOf(r Record) foldKey {
	return foldKey{rung: r.Rung, tenant: r.Tenant, route: r.Route, reason: r.Reason, lane: r.Lane, status: r.Status}
}

// window is one open window: it started with a refusal written at once;
// more holds the ones that followed, if any.
type window struct {
	end  time.Time
	more *Record // Count > 0
}

// folder holds the open windows. It is safe for concurrent use.
type folder struct {
	window  time.Duration
	maxKeys int

	mu   sync.Mutex
	open map[foldKey]*window
}

func newFolder(d time.Duration, maxKeys int) *folder {
	return &folder{window: d, maxKeys: maxKeys, open: map[foldKey]*window{}}
}

// add folds the refusal r and returns the records to write now: none when r
// was counted into its window's pending record; r itself when it opens a
// window; or the pending record of the window r is past, then r.
func (f *folder) add(r Record) (out [2]Record, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := keyOf(r)
	w := f.open[k]
	if w == nil && len(f.open) >= f.maxKeys {
		r.Tenant = OtherTenants
		k.tenant = OtherTenants
		w = f.open[k] // the overflow windows are few: rungs × routes × reasons
	}
	if w != nil && r.Time.Before(w.end) {
		if w.more == nil {
			m := r
			m.Count, m.Last = 1, r.Time
			w.more = &m
		} else {
			w.more.Count++
			if r.Time.After(w.more.Last) {
				w.more.Last = r.Time
			}
		}
		return out, 0
	}
	if w != nil && w.more != nil { // r is past the window: close it
		out[n] = *w.more
		n++
	}
	f.open[k] = &window{end: r.Time.Add(f.window)}
	r.Count = 1
	out[n] = r
	n++
	return out, n
}

// due closes the windows that ended by now and returns their pending
// records. With all set it closes every window (Close).
func (f *folder) due(now time.Time, all bool) []Record {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Record
	for k, w := range f.open {
		if !all && now.Before(w.end) {
			continue
		}
		if w.more != nil {
			out = append(out, *w.more)
		}
		delete(f.open, k)
	}
	return out
}
