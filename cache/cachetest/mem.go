package cachetest

import (
	"context"
	"sync"
	"time"

	"github.com/edgecache/edgecache/cache"
)

// Mem is an in-memory cache.Tier for tests: a map behind a mutex that
// honours the ttl given to Set by its own clock, counts calls, and can be
// told to fail. The zero value is an empty, working tier. It is not meant
// for production (no size bound, no eviction).
type Mem struct {
	// Name is set in Entry.Tier on read. If empty, "mem" is used.
	Name string
	// Now is the clock for ttls. If nil, time.Now is used.
	Now func() time.Time

	mu      sync.Mutex
	entries map[cache.Key]memItem
	err     error
	calls   MemCalls
}

// MemCalls counts the calls made to a Mem.
type MemCalls struct {
	Gets, Hits, Sets, Deletes int
}

type memItem struct {
	e     cache.Entry
	until time.Time // storage expiry: Set time + ttl
}

var _ cache.Tier = (*Mem)(nil)

// Get returns the entry under k, or cache.ErrMiss when it is absent or its
// ttl has passed, or the error set by Fail.
func (m *Mem) Get(_ context.Context, k cache.Key) (cache.Entry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls.Gets++
	if m.err != nil {
		return cache.Entry{}, m.err
	}
	it, ok := m.entries[k]
	if !ok || !m.now().Before(it.until) {
		return cache.Entry{}, cache.ErrMiss
	}
	m.calls.Hits++
	e := it.e
	e.Tier = m.Name
	if e.Tier == "" {
		e.Tier = "mem"
	}
	return e, nil
}

// Set stores e under k for ttl (a non-positive ttl is a no-op), or returns
// the error set by Fail.
func (m *Mem) Set(_ context.Context, k cache.Key, e cache.Entry, ttl time.Duration) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls.Sets++
	if m.err != nil {
		return m.err
	}
	if ttl <= 0 {
		return nil
	}
	if m.entries == nil {
		m.entries = make(map[cache.Key]memItem)
	}
	e.Tier = ""
	m.entries[k] = memItem{e: e, until: m.now().Add(ttl)}
	return nil
}

// Delete removes k, or returns the error set by Fail.
func (m *Mem) Delete(_ context.Context, k cache.Key) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls.Deletes++
	if m.err != nil {
		return m.err
	}
	delete(m.entries, k)
	return nil
}

// Fail makes every later call return err; Fail(nil) heals the tier.
func (m *Mem) Fail(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.err = err
}

// Calls returns the call counters.
func (m *Mem) Calls() MemCalls {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.calls
}

// Len returns the number of stored entries, expired ones included.
func (m *Mem) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.entries)
}

// TTL returns the storage lifetime left for k by Mem's clock (the ttl given
// to Set minus the time since), and whether k is stored at all. Tests use
// it to check the ttl a backfill wrote.
func (m *Mem) TTL(k cache.Key) (time.Duration, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	it, ok := m.entries[k]
	if !ok {
		return 0, false
	}
	return it.until.Sub(m.now()), true
}

func (m *Mem) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}
