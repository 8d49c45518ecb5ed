// Package local is edgecache's L1: an in-process, size-bounded cache of
// exact entries over ristretto (github.com/dgraph-io/ristretto/v2).
//
// L1 is best effort. Writes are applied asynchronously and may be dropped
// under contention or rejected by ristretto's TinyLFU admission policy; both
// are normal, counted in Stats and never reported as errors. Correctness never
// depends on L1 holding an entry: the tiered cache falls through to L2.
//
// Entries are stored for the ttl given to Set and Get stops returning them as
// soon as that ttl has passed. Get does not look at Entry.ExpiresAt; the
// tiered cache filters expired entries (see cache.Tiered).
package local

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/ristretto/v2"

	"github.com/edgecache/edgecache/cache"
)

// TierName is the value Get sets in Entry.Tier.
const TierName = "l1"

const (
	// DefaultMaxBytes is the budget used when Config.MaxBytes is zero.
	DefaultMaxBytes = 256 << 20
	// defaultAvgEntry guesses an average entry size to derive the expected
	// number of items from MaxBytes when Config.ExpectedItems is zero.
	defaultAvgEntry = 4 << 10
	// entryOverhead estimates the bytes an entry costs beyond its body and
	// headers: the Entry struct, the ristretto item, map slots and key.
	entryOverhead = 256
)

// Config configures an L1 cache. The zero value is usable.
type Config struct {
	// MaxBytes bounds the estimated memory held by entries (bodies, headers
	// and a fixed per-entry overhead). If zero, it defaults to 256 MiB.
	MaxBytes int64
	// ExpectedItems is the number of entries the cache is expected to hold
	// when full; it sizes ristretto's admission counters (10× this value).
	// If zero, it is derived from MaxBytes assuming 4 KiB per entry.
	ExpectedItems int64
}

// Validate reports a configuration that New would reject.
func (c Config) Validate() error {
	switch {
	case c.MaxBytes < 0:
		return fmt.Errorf("local: MaxBytes %d is negative", c.MaxBytes)
	case c.ExpectedItems < 0:
		return fmt.Errorf("local: ExpectedItems %d is negative", c.ExpectedItems)
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.MaxBytes == 0 {
		c.MaxBytes = DefaultMaxBytes
	}
	if c.ExpectedItems == 0 {
		c.ExpectedItems = max(c.MaxBytes/defaultAvgEntry, 1)
	}
	return c
}

// Stats are cumulative counters since New.
type Stats struct {
	Gets     uint64 // Get calls on an open cache
	Hits     uint64 // Gets that found a live entry
	Misses   uint64 // Gets that found nothing
	Sets     uint64 // Set calls with a positive ttl on an open cache
	Dropped  uint64 // Sets ristretto dropped before considering them (contention)
	Rejected uint64 // Sets ristretto's admission policy refused (or too large)
	Evicted  uint64 // entries removed to make room or by the expired-entry sweep
	Deletes  uint64 // Delete calls on an open cache
}

// Local is an in-process cache.Tier. All methods are safe for concurrent use
// and on a nil *Local, which behaves as an always-empty cache. After Close,
// Get misses and Set and Delete are no-ops.
type Local struct {
	// mu orders Close after the operations in flight: ristretto must not be
	// used while it is closing. Operations hold it shared.
	mu     sync.RWMutex
	closed bool
	c      *ristretto.Cache[string, cache.Entry]

	gets, hits, misses              atomic.Uint64
	sets, dropped, rejected, evicts atomic.Uint64
	deletes                         atomic.Uint64
}

var _ cache.Tier = (*Local)(nil)

// New returns an empty L1 cache; Close releases its goroutines.
func New(cfg Config) (*Local, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	l := &Local{}
	c, err := ristretto.NewCache(&ristretto.Config[string, cache.Entry]{
		NumCounters:        cfg.ExpectedItems * 10,
		MaxCost:            cfg.MaxBytes,
		BufferItems:        64,
		IgnoreInternalCost: true, // Cost already includes entryOverhead
		OnReject:           func(*ristretto.Item[cache.Entry]) { l.rejected.Add(1) },
		OnEvict:            func(*ristretto.Item[cache.Entry]) { l.evicts.Add(1) },
	})
	if err != nil {
		return nil, fmt.Errorf("local: %w", err)
	}
	l.c = c
	return l, nil
}

// Get returns the entry stored under k with Tier set to "l1", or
// cache.ErrMiss when it is absent or its ttl has passed.
func (l *Local) Get(_ context.Context, k cache.Key) (cache.Entry, error) {
	if l == nil {
		return cache.Entry{}, cache.ErrMiss
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		return cache.Entry{}, cache.ErrMiss
	}
	l.gets.Add(1)
	e, ok := l.c.Get(string(k))
	if !ok {
		l.misses.Add(1)
		return cache.Entry{}, cache.ErrMiss
	}
	l.hits.Add(1)
	e.Tier = TierName
	return e, nil
}

// Set stores e under k for ttl. A non-positive ttl is a no-op. The write is
// applied asynchronously (call Wait to observe it) and may be dropped or
// rejected by the admission policy; that is counted, not returned.
func (l *Local) Set(_ context.Context, k cache.Key, e cache.Entry, ttl time.Duration) error {
	if l == nil || ttl <= 0 {
		return nil
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		return nil
	}
	l.sets.Add(1)
	e.Tier = ""
	if !l.c.SetWithTTL(string(k), e, Cost(k, e), ttl) {
		l.dropped.Add(1)
	}
	return nil
}

// Delete removes k. Deleting an absent key is not an error.
func (l *Local) Delete(_ context.Context, k cache.Key) error {
	if l == nil {
		return nil
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		return nil
	}
	l.deletes.Add(1)
	l.c.Del(string(k))
	return nil
}

// Wait blocks until every Set issued before it has been applied or
// rejected. Tests call it to read their own writes; production code does not
// need it.
func (l *Local) Wait() {
	if l == nil {
		return
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	if !l.closed {
		l.c.Wait()
	}
}

// Stats returns the cumulative counters.
func (l *Local) Stats() Stats {
	if l == nil {
		return Stats{}
	}
	return Stats{
		Gets:     l.gets.Load(),
		Hits:     l.hits.Load(),
		Misses:   l.misses.Load(),
		Sets:     l.sets.Load(),
		Dropped:  l.dropped.Load(),
		Rejected: l.rejected.Load(),
		Evicted:  l.evicts.Load(),
		Deletes:  l.deletes.Load(),
	}
}

// Close drops every entry and stops ristretto's goroutines. It waits for
// operations in flight, is idempotent and always returns nil.
func (l *Local) Close() error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	l.c.Close()
	return nil
}

// Cost estimates the bytes e occupies under k: key, body, header names and
// values, plus a fixed per-entry overhead. It is the cost charged against
// Config.MaxBytes.
func Cost(k cache.Key, e cache.Entry) int64 {
	n := int64(entryOverhead + len(k) + len(e.Body))
	for name, vs := range e.Header {
		n += int64(len(name)) + 16
		for _, v := range vs {
			n += int64(len(v)) + 16
		}
	}
	return n
}
