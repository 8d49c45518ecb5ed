package admission

import (
	"errors"
	"fmt"
	"hash/maphash"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of BucketsConfig.
const (
	DefaultMaxEntries    = 100_000
	DefaultSweepInterval = time.Minute
)

// BucketsConfig configures Buckets. The zero value is valid: nothing is
// limited until Defaults or a Subject's Limits say so.
type BucketsConfig struct {
	// Defaults are the Limits of each dimension for subjects that carry
	// none of their own.
	Defaults Rules
	// Shadow puts every rule in shadow mode: would-be denials are counted
	// and reported (Decision.Shadow) but the request is allowed.
	Shadow bool
	// MaxEntries bounds the number of subjects held in memory. A subject
	// whose buckets are full again carries no state and is dropped by the
	// periodic sweep; above MaxEntries the subjects closest to full are
	// dropped first (they then restart full: lenient, never stricter). If
	// zero, it defaults to 100 000 (about 15 MB).
	MaxEntries int
	// SweepInterval is how often each shard drops its full subjects,
	// inline on a Reserve. If zero, it defaults to 1m.
	SweepInterval time.Duration
	// Clock is the time source; nil means the real time.
	Clock Clock
}

// Validate reports a configuration NewBuckets would reject.
func (c BucketsConfig) Validate() error {
	var errs []error
	if err := c.Defaults.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.MaxEntries < 0 || c.SweepInterval < 0 {
		errs = append(errs, errors.New("negative MaxEntries or SweepInterval"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("admission: invalid buckets config: %w", err)
	}
	return nil
}

const numShards = 32

// maxSubjects subjects per call are handled without allocating.
const maxSubjects = 8

// Buckets holds per-instance token buckets per (dimension, id): one for
// requests and one for estimated tokens each. It is safe for concurrent use.
type Buckets struct {
	clock      Clock
	defaults   Rules
	shadow     bool
	share      float64 // 1; Global's fallback uses 1/replicas
	seed       maphash.Seed
	shardCap   int
	sweepEvery int64

	shards [numShards]shard

	allowed, denied, shadowDenied atomic.Uint64
	swept, evicted                atomic.Uint64
}

type shard struct {
	mu        sync.Mutex
	m         map[entryKey]entry
	nextSweep int64
}

type entryKey struct {
	dim Dimension
	id  string
}

// NewBuckets returns Buckets configured by cfg.
func NewBuckets(cfg BucketsConfig) (*Buckets, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return newBuckets(cfg, 1), nil
}

func newBuckets(cfg BucketsConfig, share float64) *Buckets {
	if cfg.MaxEntries == 0 {
		cfg.MaxEntries = DefaultMaxEntries
	}
	if cfg.SweepInterval == 0 {
		cfg.SweepInterval = DefaultSweepInterval
	}
	b := &Buckets{
		clock:      clockOr(cfg.Clock),
		defaults:   cfg.Defaults,
		shadow:     cfg.Shadow,
		share:      share,
		seed:       maphash.MakeSeed(),
		shardCap:   max(cfg.MaxEntries/numShards, 1),
		sweepEvery: int64(cfg.SweepInterval),
	}
	for i := range b.shards {
		b.shards[i].m = make(map[entryKey]entry)
	}
	return b
}

// slot is one subject of a call, resolved.
type slot struct {
	key   entryKey
	rule  rule
	shard int
	e     entry
	c     check
}

// Reserve checks every subject's buckets for one request estimated at
// tokens, atomically: either every enforced bucket is charged (one request,
// tokens tokens) or none is, and the Decision says which limit denied and
// the exact delay until the request would fit. Subjects without limits are
// ignored. Up to 8 subjects are handled without allocating.
func (b *Buckets) Reserve(tokens int64, subjects ...Subject) Decision {
	return b.reserve(b.clock.Now().UnixNano(), tokens, subjects)
}

// Settle corrects the token buckets of subjects once the real usage is
// known: estimated − actual tokens are given back (up to the burst) or, when
// the answer cost more, charged as debt that delays later requests.
func (b *Buckets) Settle(estimated, actual int64, subjects ...Subject) {
	b.settle(b.clock.Now().UnixNano(), estimated, actual, subjects)
}

func (b *Buckets) resolve(s *Subject) rule {
	l := s.Limits
	if l == nil {
		if l = b.defaults.of(s.Dim); l == nil {
			return rule{}
		}
	}
	return l.rule(b.share, b.shadow)
}

func (b *Buckets) shardOf(k entryKey) int {
	return int((maphash.String(b.seed, k.id) + uint64(k.dim)) % numShards)
}

// reserve is Reserve at now (Unix nanoseconds).
func (b *Buckets) reserve(now int64, tokens int64, subjects []Subject) Decision {
	var buf [maxSubjects]slot
	slots := buf[:0]
	if len(subjects) > maxSubjects {
		slots = make([]slot, 0, len(subjects))
	}
	for i := range subjects {
		s := &subjects[i]
		r := b.resolve(s)
		if r.unlimited() {
			continue
		}
		k := entryKey{s.Dim, s.ID}
		slots = append(slots, slot{key: k, rule: r, shard: b.shardOf(k)})
	}
	if len(slots) == 0 {
		b.allowed.Add(1)
		return Decision{Allowed: true}
	}

	var lockBuf [maxSubjects]int
	locked := b.lock(lockBuf[:0], slots)
	defer b.unlock(locked)

	cost := float64(max(tokens, 0))
	worst, shadowWorst := -1, -1
	for i := range slots {
		sl := &slots[i]
		sl.e = b.shards[sl.shard].m[sl.key]
		sl.c = sl.e.check(now, &sl.rule, cost)
		if sl.c.wait == 0 {
			continue
		}
		if sl.rule.shadow {
			if shadowWorst < 0 || sl.c.wait > slots[shadowWorst].c.wait {
				shadowWorst = i
			}
		} else if worst < 0 || sl.c.wait > slots[worst].c.wait {
			worst = i
		}
	}

	var d Decision
	if worst >= 0 {
		b.denied.Add(1)
		w := &slots[worst]
		d.RetryAfter = seconds(w.c.wait)
		d.Limit = Limit{w.key.dim, w.c.kind}
		for i := range slots {
			sl := &slots[i]
			if !sl.rule.shadow {
				d.tighten(&sl.rule, sl.c.req, sl.c.tok)
			}
		}
		return d
	}

	d.Allowed = true
	if shadowWorst >= 0 {
		b.shadowDenied.Add(1)
		w := &slots[shadowWorst]
		d.Shadow = true
		d.RetryAfter = seconds(w.c.wait)
		d.Limit = Limit{w.key.dim, w.c.kind}
	} else {
		b.allowed.Add(1)
	}
	for i := range slots {
		sl := &slots[i]
		if sl.rule.shadow && sl.c.wait > 0 {
			continue // what enforcement would do: charge nothing
		}
		sl.e.take(now, &sl.rule, sl.c, cost)
		b.store(&b.shards[sl.shard], sl.key, sl.e, now)
		if !sl.rule.shadow {
			d.tighten(&sl.rule, sl.e.req.v, sl.e.tok.v)
		}
	}
	return d
}

// tighten folds one enforced subject's levels into the reported quotas.
func (d *Decision) tighten(r *rule, req, tok float64) {
	if r.reqRate > 0 {
		if q := quotaOf(req, r.reqRate, r.reqBurst); q.tighter(d.Requests) {
			d.Requests = q
		}
	}
	if r.tokRate > 0 {
		if q := quotaOf(tok, r.tokRate, r.tokBurst); q.tighter(d.Tokens) {
			d.Tokens = q
		}
	}
}

// lock locks the distinct shards of slots in ascending order (so that two
// calls never wait on each other crosswise) and returns them.
func (b *Buckets) lock(locked []int, slots []slot) []int {
	for i := range slots {
		if !slices.Contains(locked, slots[i].shard) {
			locked = append(locked, slots[i].shard)
		}
	}
	slices.Sort(locked)
	for _, i := range locked {
		b.shards[i].mu.Lock()
	}
	return locked
}

func (b *Buckets) unlock(locked []int) {
	for _, i := range locked {
		b.shards[i].mu.Unlock()
	}
}

// store writes e under k and keeps the shard bounded; sh is locked.
func (b *Buckets) store(sh *shard, k entryKey, e entry, now int64) {
	sh.m[k] = e
	if now >= sh.nextSweep || len(sh.m) > b.shardCap {
		b.sweep(sh, now)
	}
}

// sweep drops the shard's full subjects (they carry no state) and, if the
// shard is still above its capacity, the quarter closest to full. sh is
// locked.
func (b *Buckets) sweep(sh *shard, now int64) {
	sh.nextSweep = now + b.sweepEvery
	for k, e := range sh.m {
		if e.fullAt <= now {
			delete(sh.m, k)
			b.swept.Add(1)
		}
	}
	if len(sh.m) <= b.shardCap {
		return
	}
	ats := make([]int64, 0, len(sh.m))
	for _, e := range sh.m {
		ats = append(ats, e.fullAt)
	}
	slices.Sort(ats)
	cut := ats[len(ats)-b.shardCap*3/4-1] // keep about three quarters of the capacity
	for k, e := range sh.m {
		if e.fullAt <= cut {
			delete(sh.m, k)
			b.evicted.Add(1)
		}
	}
}

// settle is Settle at now (Unix nanoseconds).
func (b *Buckets) settle(now int64, estimated, actual int64, subjects []Subject) {
	delta := float64(estimated - actual)
	if delta == 0 {
		return
	}
	for i := range subjects {
		s := &subjects[i]
		r := b.resolve(s)
		if r.tokRate == 0 {
			continue
		}
		k := entryKey{s.Dim, s.ID}
		sh := &b.shards[b.shardOf(k)]
		sh.mu.Lock()
		e := sh.m[k]
		req := e.req.value(now, r.reqRate, r.reqBurst)
		tok := min(e.tok.value(now, r.tokRate, r.tokBurst)+delta, r.tokBurst)
		if r.reqRate > 0 {
			e.req.set(now, req)
		}
		e.tok.set(now, tok)
		e.fullAt = fullAt(now, &r, req, tok)
		b.store(sh, k, e, now)
		sh.mu.Unlock()
	}
}

// BucketsStats is a snapshot of Buckets' counters.
type BucketsStats struct {
	Entries      int    // subjects held now
	Allowed      uint64 // requests allowed by every rule
	Denied       uint64 // requests denied by an enforced rule
	ShadowDenied uint64 // requests allowed that a shadow rule would have denied
	Swept        uint64 // subjects dropped because their buckets were full again
	Evicted      uint64 // subjects dropped early to stay within MaxEntries
}

// Stats returns a snapshot of the counters.
func (b *Buckets) Stats() BucketsStats {
	s := BucketsStats{
		Allowed:      b.allowed.Load(),
		Denied:       b.denied.Load(),
		ShadowDenied: b.shadowDenied.Load(),
		Swept:        b.swept.Load(),
		Evicted:      b.evicted.Load(),
	}
	for i := range b.shards {
		sh := &b.shards[i]
		sh.mu.Lock()
		s.Entries += len(sh.m)
		sh.mu.Unlock()
	}
	return s
}
