package cache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults applied by NewTiered to zero TieredConfig fields.
const (
	DefaultQueueSize    = 1024
	DefaultWorkers      = 2
	DefaultWriteTimeout = time.Second
)

// TieredConfig configures a Tiered cache. The zero value is usable.
type TieredConfig struct {
	// QueueSize bounds the writes waiting for a worker; when it is full,
	// Store drops the write. If zero, it defaults to 1024.
	QueueSize int
	// Workers is the number of goroutines writing queued entries to the
	// tiers. If zero, it defaults to 2.
	Workers int
	// WriteTimeout bounds each queued write to one tier. If zero, it
	// defaults to 1s.
	WriteTimeout time.Duration
	// Now is the clock that decides freshness. If nil, time.Now is used.
	Now func() time.Time
	// OnDrop, if set, is called each time a write is dropped (see
	// TieredStats.Drops). It runs on the dropping goroutine, often a
	// request's, so it must be cheap and safe for concurrent use.
	OnDrop func()
	// Logger receives recovered panics of the write workers. If nil,
	// slog.Default() is used.
	Logger *slog.Logger
	// Prepare, if set, completes an entry a slower tier answered before
	// it backfills the faster ones and is returned, e.g. deriving the
	// Usage that serialising tiers do not keep. It runs on the reading
	// goroutine.
	Prepare func(*Entry)
}

// TieredStats are cumulative counters since NewTiered.
type TieredStats struct {
	// Hits[i] counts Gets answered by tier i (in NewTiered order).
	Hits []uint64
	// Misses counts Gets that no tier answered with a fresh entry.
	Misses uint64
	// Expired counts entries a tier returned past their ExpiresAt (each is
	// treated as a miss in that tier).
	Expired uint64
	// Errors counts tier errors other than ErrMiss during Get and Delete
	// (each is treated as a miss in that tier).
	Errors uint64
	// Backfills counts writes of a hit into faster tiers (queued or direct).
	Backfills uint64
	// Queued counts writes accepted by Store (and queued backfills).
	Queued uint64
	// Stored counts queued writes that every target tier accepted.
	Stored uint64
	// StoreErrors counts failed tier writes (one per tier per write).
	StoreErrors uint64
	// Drops counts writes not queued because the queue was full or the
	// cache closed, plus queued writes abandoned when Close ran out of time.
	Drops uint64
	// Panics counts tier writes that panicked in a worker (recovered).
	Panics uint64
}

// Tiered looks keys up in a list of tiers, fastest first, and writes
// entries to all of them off the request path.
//
// Get returns the first fresh entry: a tier's ErrMiss, any other tier error,
// and an entry whose ExpiresAt has passed (by TieredConfig.Now) are all
// misses in that tier, and the next tier is tried. A hit in tier i backfills
// tiers[:i] with the entry's remaining lifetime, ExpiresAt − now: tiers[0],
// conventionally the in-process L1, synchronously; the others through the
// write queue.
//
// Store never blocks: it queues the write for the worker goroutines, which
// write to every tier under a bounded context; a full queue drops the write
// and counts it. Close drains the queue. Tiered is safe for concurrent use.
type Tiered struct {
	tiers        []Tier
	now          func() time.Time
	onDrop       func()
	prepare      func(*Entry)
	writeTimeout time.Duration
	log          *slog.Logger

	// mu guards closing queue against concurrent sends: Store holds it
	// shared, Close exclusively.
	mu     sync.RWMutex
	closed bool
	// queue holds pointers: a buffer of write values (entries with their
	// headers and bodies) would be scanned whole by every garbage
	// collection, empty or not.
	queue chan *write

	workCtx    context.Context // parent of worker writes; cancelled when Close gives up
	cancelWork context.CancelFunc
	workers    sync.WaitGroup
	done       chan struct{} // closed when every worker has returned
	closeOnce  sync.Once

	hits                                 []atomic.Uint64
	misses, expired, errs, backfills     atomic.Uint64
	queued, stored, storeErrs, drops, ps atomic.Uint64
}

// write is one queued entry for a set of tiers.
type write struct {
	key   Key
	entry Entry
	ttl   time.Duration
	tiers []Tier
}

// NewTiered returns a Tiered cache over tiers, fastest first, and starts its
// write workers; Close stops them. Tiered does not own the tiers: closing
// them is the caller's job, after Close.
func NewTiered(cfg TieredConfig, tiers ...Tier) *Tiered {
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = DefaultQueueSize
	}
	if cfg.Workers <= 0 {
		cfg.Workers = DefaultWorkers
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	t := &Tiered{
		tiers:        append([]Tier(nil), tiers...),
		now:          cfg.Now,
		onDrop:       cfg.OnDrop,
		prepare:      cfg.Prepare,
		writeTimeout: cfg.WriteTimeout,
		log:          cfg.Logger,
		queue:        make(chan *write, cfg.QueueSize),
		workCtx:      ctx,
		cancelWork:   cancel,
		done:         make(chan struct{}),
		hits:         make([]atomic.Uint64, len(tiers)),
	}
	t.workers.Add(cfg.Workers)
	for range cfg.Workers {
		go t.worker()
	}
	go func() {
		t.workers.Wait()
		close(t.done)
	}()
	return t
}

// Get returns the first fresh entry for k, or ErrMiss. Tier errors are
// counted and treated as misses, so Get returns no other error; a hit
// backfills the faster tiers (see Tiered).
func (t *Tiered) Get(ctx context.Context, k Key) (Entry, error) {
	now := t.now()
	for i, tier := range t.tiers {
		e, err := tier.Get(ctx, k)
		if err != nil {
			if !errors.Is(err, ErrMiss) {
				t.errs.Add(1)
			}
			continue
		}
		if !now.Before(e.ExpiresAt) {
			t.expired.Add(1)
			continue
		}
		t.hits[i].Add(1)
		if i > 0 {
			if t.prepare != nil {
				// On a copy: prepare keeps its argument's address, and e
				// itself would then be moved to the heap on every hit.
				pe := e
				t.prepare(&pe)
				e = pe
			}
			t.backfill(ctx, k, e, e.ExpiresAt.Sub(now), i)
		}
		return e, nil
	}
	t.misses.Add(1)
	return Entry{}, ErrMiss
}

// backfill writes a hit from tier i into tiers[:i]: the first directly (it
// is in-process by convention, so this costs less than the lookup it
// saves), the rest through the queue.
func (t *Tiered) backfill(ctx context.Context, k Key, e Entry, ttl time.Duration, i int) {
	e.Tier = ""
	t.backfills.Add(1)
	if err := t.tiers[0].Set(ctx, k, e, ttl); err != nil {
		t.storeErrs.Add(1)
	}
	if i > 1 {
		t.enqueue(write{key: k, entry: e, ttl: ttl, tiers: t.tiers[1:i]})
	}
}

// Store queues e for every tier, to be kept for ttl, and reports whether it
// was queued. It never blocks: when the queue is full or the cache is closed
// the write is dropped, counted and OnDrop called. A non-positive ttl stores
// nothing and returns false. A zero e.StoredAt is set to now and a zero
// e.ExpiresAt to now+ttl.
//
// ttl is how long the tiers keep the entry; it may exceed ExpiresAt − now
// so that an expired entry stays available to GetStale.
func (t *Tiered) Store(k Key, e Entry, ttl time.Duration) bool {
	if ttl <= 0 {
		return false
	}
	now := t.now()
	if e.StoredAt.IsZero() {
		e.StoredAt = now
	}
	if e.ExpiresAt.IsZero() {
		e.ExpiresAt = now.Add(ttl)
	}
	e.Tier = ""
	return t.enqueue(write{key: k, entry: e, ttl: ttl, tiers: t.tiers})
}

func (t *Tiered) enqueue(w write) bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if !t.closed {
		select {
		case t.queue <- &w:
			t.queued.Add(1)
			return true
		default:
		}
	}
	t.drop(1)
	return false
}

func (t *Tiered) drop(n uint64) {
	t.drops.Add(n)
	if t.onDrop != nil {
		for range n {
			t.onDrop()
		}
	}
}

// GetStale is Get for the degradation ladder: it returns the first entry
// for k that is fresh or expired no longer than maxStale ago, without
// backfilling, or ErrMiss. Callers compare ExpiresAt with their clock to
// tell stale from fresh. It only finds what the tiers still hold, so Store
// with a ttl that covers the stale window.
func (t *Tiered) GetStale(ctx context.Context, k Key, maxStale time.Duration) (Entry, error) {
	now := t.now()
	for _, tier := range t.tiers {
		e, err := tier.Get(ctx, k)
		if err != nil {
			if !errors.Is(err, ErrMiss) {
				t.errs.Add(1)
			}
			continue
		}
		if now.Sub(e.ExpiresAt) <= maxStale {
			return e, nil
		}
	}
	return Entry{}, ErrMiss
}

// Delete removes k from every tier, trying all of them, and returns the
// joined errors. A write for k still in the queue may store it again.
func (t *Tiered) Delete(ctx context.Context, k Key) error {
	var errs []error
	for i, tier := range t.tiers {
		if err := tier.Delete(ctx, k); err != nil {
			t.errs.Add(1)
			errs = append(errs, fmt.Errorf("tier %d: %w", i, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("cache delete: %w", err)
	}
	return nil
}

// Stats returns the cumulative counters.
func (t *Tiered) Stats() TieredStats {
	s := TieredStats{
		Hits:        make([]uint64, len(t.hits)),
		Misses:      t.misses.Load(),
		Expired:     t.expired.Load(),
		Errors:      t.errs.Load(),
		Backfills:   t.backfills.Load(),
		Queued:      t.queued.Load(),
		Stored:      t.stored.Load(),
		StoreErrors: t.storeErrs.Load(),
		Drops:       t.drops.Load(),
		Panics:      t.ps.Load(),
	}
	for i := range t.hits {
		s.Hits[i] = t.hits[i].Load()
	}
	return s
}

// Close stops accepting writes, lets the workers drain the queue and waits
// for them. If ctx ends first, in-flight writes are cancelled, the rest of
// the queue is dropped (and counted), and Close returns ctx's error once the
// workers have returned. Get keeps working after Close. Close is idempotent;
// later calls wait like the first.
func (t *Tiered) Close(ctx context.Context) error {
	t.closeOnce.Do(func() {
		t.mu.Lock()
		t.closed = true
		close(t.queue)
		t.mu.Unlock()
	})
	select {
	case <-t.done:
		return nil
	case <-ctx.Done():
		t.cancelWork()
		<-t.done
		return fmt.Errorf("cache close: %w", ctx.Err())
	}
}

// worker writes queued entries until the queue is closed and empty.
func (t *Tiered) worker() {
	defer t.workers.Done()
	for w := range t.queue {
		if t.workCtx.Err() != nil {
			t.drop(1) // Close gave up: abandon what is left
			continue
		}
		if t.write(*w) {
			t.stored.Add(1)
		}
	}
}

// write stores w in each of its tiers and reports whether all accepted it.
func (t *Tiered) write(w write) bool {
	ok := true
	for _, tier := range w.tiers {
		if err := t.writeOne(tier, w); err != nil {
			t.storeErrs.Add(1)
			ok = false
		}
	}
	return ok
}

// writeOne is one bounded tier write; a panicking tier is recovered,
// logged and counted so the worker survives.
func (t *Tiered) writeOne(tier Tier, w write) (err error) {
	defer func() {
		if r := recover(); r != nil {
			t.ps.Add(1)
			t.log.Error("cache: tier write panicked", "panic", r, "stack", string(debug.Stack()))
			err = fmt.Errorf("cache: tier write panicked: %v", r)
		}
	}()
	ctx, cancel := context.WithTimeout(t.workCtx, t.writeTimeout)
	defer cancel()
	return tier.Set(ctx, w.key, w.entry, w.ttl)
}
