// Package cache implements edgecache's tiered response cache.
//
// A lookup consults the tiers in order — the in-process L1 (cache/local),
// then the region's shared L2 (cache/shared) — and a hit in a slower tier
// backfills the faster ones with the entry's remaining lifetime. Writes never
// happen on the request path: Tiered.Store hands the entry to a bounded queue
// owned by the cache and drained on Close, and a full queue drops and counts.
//
// The package is protocol-agnostic: it stores opaque response bytes with
// their status and a few headers under exact keys computed by the caller. It
// never imports the HTTP framework or the application.
package cache

import (
	"context"
	"errors"
	"net/http"
	"time"
)

// ErrMiss is returned by Get when no live entry exists for the key. Tier
// implementations translate their vendor's "not found" into ErrMiss.
var ErrMiss = errors.New("cache: miss")

// Key is an exact cache key: a printable, fixed-length digest of everything
// that changes the answer (see ARCHITECTURE.md, "Keys"). Keys never contain
// prompts or client credentials.
type Key string

// Entry is one cached response. It is immutable once stored: share it, never
// mutate it (copy the Header before changing it).
type Entry struct {
	Status    int         // HTTP status of the stored answer (always 2xx today)
	Header    http.Header // the few response headers worth replaying (Content-Type)
	Body      []byte      // the complete, non-streamed response body
	StoredAt  time.Time   // when the upstream answered
	ExpiresAt time.Time   // when the entry stops being fresh
	Tier      string      // set on read: "l1", "l2"; not persisted
	// Usage is what the answer in Body reports of its model and tokens,
	// derived once (by whoever makes the entry, or TieredConfig.Prepare
	// when a slower tier's hit backfills a faster one) so that a hit need
	// not scan the body again. Tiers that serialise entries do not keep
	// it: nil means derive it from Body. Shared between copies of the
	// entry: never modified once set.
	Usage *Usage
}

// Usage is an answer's model and token counts (-1: not reported).
type Usage struct {
	Model         string
	Input, Output int64
}

// TTL returns the entry's remaining freshness at now; zero or negative when
// it has expired.
func (e Entry) TTL(now time.Time) time.Duration { return e.ExpiresAt.Sub(now) }

// Age returns how long ago the upstream produced the entry.
func (e Entry) Age(now time.Time) time.Duration {
	if d := now.Sub(e.StoredAt); d > 0 {
		return d
	}
	return 0
}

// A Tier stores entries under exact keys.
//
// Get returns ErrMiss when the key is absent or expired, and any other error
// only for real trouble (which callers treat as a miss). Set stores the entry
// for ttl; a non-positive ttl is a no-op. Delete removes the key; deleting an
// absent key is not an error.
type Tier interface {
	Get(ctx context.Context, k Key) (Entry, error)
	Set(ctx context.Context, k Key, e Entry, ttl time.Duration) error
	Delete(ctx context.Context, k Key) error
}
