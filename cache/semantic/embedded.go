package semantic

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
)

// EmbeddedConfig configures NewEmbedded. Zero values mean the documented
// defaults; NewEmbedded copies the config and never modifies it.
type EmbeddedConfig struct {
	// Dim is the dimension of every vector. Required.
	Dim int

	// MaxPoints bounds the number of points held. When full, an Upsert
	// first evicts the point that expires soonest (expired points expire
	// soonest, so they go first; ties go to the oldest insert). If zero,
	// defaults to 1,000,000. Size memory at about Dim + 430 bytes per
	// point at the default M, plus its key and text (943 bytes at 512
	// dimensions and 100,000 points in one graph, 959 at 1,000,000,
	// measured by BenchmarkEmbeddedSearch; the int8 vector and its scale
	// are 516 of them, layer-0 links 260, the key map, expiry heap and
	// entry ~150).
	MaxPoints int

	// SnapshotPath is where the index persists itself: on Close and every
	// SnapshotInterval, and read back by NewEmbedded. If empty, nothing
	// is persisted.
	SnapshotPath string

	// SnapshotInterval is how often the snapshot is rewritten. If zero,
	// defaults to 5m; a negative value writes it only on Close.
	SnapshotInterval time.Duration

	// SweepInterval is how often expired points are removed (they are
	// never returned by Search in the meantime). If zero, defaults to 30s.
	SweepInterval time.Duration

	// ExactBelow is the partition size under which Search compares the
	// query with every point instead of walking a graph: exact, and
	// faster than a graph at that size. A partition gets an HNSW graph
	// when it reaches ExactBelow points and goes back to exact search
	// when it falls under half of it. If zero, defaults to 256.
	ExactBelow int

	// M is the HNSW link count per node on upper layers (2·M on layer 0).
	// If zero, defaults to 32: on 512-d data at 300,000 points, M=32 with
	// EfConstruction=200 lifts recall@1 at EfSearch=32 from 0.84 (M=16,
	// EfConstruction=100, as hnswlib measures too) to 0.99 for the same
	// search time (float32 vectors, 2026-11). Each unit of M costs 8 bytes
	// per point. A snapshot saved with another M is rebuilt on load.
	M int

	// EfConstruction is the HNSW beam width while inserting: higher builds
	// a better graph, more slowly. If zero, defaults to 100, for the build
	// rate (8,309 inserts/s on 2 cores at 1,000,000 points with
	// UpsertBatch). At 1,000,000 clustered 512-d points (int8, 2026-12-07,
	// busy machine), 200 builds at 1,816 inserts per CPU-second against
	// 2,928 and lifts recall@1 at EfSearch=64 from 0.918 / 0.914 (new
	// draws / paraphrase-like) to 0.966 / 0.982, at EfSearch=128 from
	// 0.962 / 0.971 to 0.974 / 0.9995: choose 200 where a slower build is
	// acceptable. (At 100,000 points the two give the same recall.)
	EfConstruction int

	// EfSearch is the HNSW beam width while searching (at least k): higher
	// raises recall and latency. If zero, defaults to 128: at 1,000,000
	// clustered 512-d points (EfConstruction 100, int8), recall@1 against
	// exact float search is 0.961 (new draws) / 0.975 (paraphrase-like) at
	// 128 for a lookup p50 of 0.34 ms, p99 0.76 ms, against 0.919 / 0.916
	// at 64 (p50 0.24 ms, p99 0.53 ms); 2 vCPU, 2026-12-07,
	// BenchmarkEmbeddedSearch.
	EfSearch int

	// Now is the clock. If nil, time.Now.
	Now func() time.Time

	// Logger receives snapshot and sweeper events. If nil, slog.Default().
	Logger *slog.Logger
}

func (c EmbeddedConfig) withDefaults() EmbeddedConfig {
	if c.MaxPoints == 0 {
		c.MaxPoints = 1_000_000
	}
	if c.SnapshotInterval == 0 {
		c.SnapshotInterval = 5 * time.Minute
	}
	if c.SweepInterval == 0 {
		c.SweepInterval = 30 * time.Second
	}
	if c.ExactBelow == 0 {
		c.ExactBelow = 256
	}
	if c.M == 0 {
		c.M = 32
	}
	if c.EfConstruction == 0 {
		c.EfConstruction = 100
	}
	if c.EfSearch == 0 {
		c.EfSearch = 128
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate reports the first invalid field after defaults are applied.
func (c EmbeddedConfig) Validate() error {
	c = c.withDefaults()
	switch {
	case c.Dim <= 0:
		return fmt.Errorf("semantic: EmbeddedConfig.Dim = %d, must be positive", c.Dim)
	case c.MaxPoints < 0:
		return fmt.Errorf("semantic: EmbeddedConfig.MaxPoints = %d, must not be negative", c.MaxPoints)
	case c.SweepInterval < 0:
		return fmt.Errorf("semantic: EmbeddedConfig.SweepInterval = %s, must not be negative", c.SweepInterval)
	case c.ExactBelow < 2:
		return fmt.Errorf("semantic: EmbeddedConfig.ExactBelow = %d, must be at least 2", c.ExactBelow)
	case c.M < 2 || c.M > 128:
		return fmt.Errorf("semantic: EmbeddedConfig.M = %d, must be in [2, 128]", c.M)
	case c.EfConstruction < 1 || c.EfSearch < 1:
		return fmt.Errorf("semantic: EmbeddedConfig EfConstruction = %d, EfSearch = %d, must be positive", c.EfConstruction, c.EfSearch)
	}
	return nil
}

// EmbeddedStats are cumulative counters and current sizes, cheap to read,
// for metrics and tests.
type EmbeddedStats struct {
	Points     int // live points (including any not yet swept after expiry)
	Partitions int // distinct filters with points
	Graphs     int // partitions searched through an HNSW graph
	DeadSlots  int // tombstoned graph slots waiting for reuse
	Searches   uint64
	Hits       uint64 // searches that returned at least one match
	Upserts    uint64
	Deletes    uint64 // explicit deletes and purges of present keys
	Evictions  uint64 // points removed to stay within MaxPoints
	Expired    uint64 // points removed by the sweeper after ExpiresAt
	Snapshots  uint64 // snapshots written
}

// Embedded is the in-process Index: points are partitioned by their exact
// Filter; a small partition is searched exhaustively, a larger one through
// an HNSW graph. It enforces ExpiresAt on read, sweeps expired points in
// the background, holds at most MaxPoints points, and persists itself to a
// snapshot file.
//
// Vectors are stored as int8 with a scale per vector (quant.go), a
// quarter of float32, and there is no float copy: a Match's Score is the
// cosine with the stored vector, within 0.002 of the float cosine for
// unit vectors of 128 dimensions or more (0.004 from 32), and its Vector
// is the stored vector dequantised (each component within half a
// quantisation step, max|v|/254). On USE-lite embeddings of QQP
// questions the score error stays under 0.0006, under 0.0003 where the
// cosine is 0.8 or more (TestInt8CosineError): far inside the margin of
// any threshold the tier uses. Recall@1 against exact float search is
// thereby capped where two stored vectors are that close to a query.
//
// Locking: mu guards the key map, the expiry heap and the partition map;
// each partition's own lock guards its vectors. mu is never held while a
// partition's lock is, so a slow graph insert in one partition delays
// neither searches elsewhere nor bookkeeping.
type Embedded struct {
	cfg EmbeddedConfig
	log *slog.Logger

	mu     sync.RWMutex
	byKey  map[string]*entry
	parts  map[Filter]*partition
	expiry expiryHeap
	seq    uint64
	closed bool

	snapMu sync.Mutex // one snapshot write at a time

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error

	searches, hits, upserts, deletes, evictions, expired, snapshots atomic.Uint64
	graphSeed                                                       atomic.Uint64
}

var _ Index = (*Embedded)(nil)
var _ Purger = (*Embedded)(nil)

// errClosed is returned by operations on a closed index.
var errClosed = fmt.Errorf("%w: closed", ErrUnavailable)

// entry is one point's bookkeeping. Its identity fields are immutable once
// created; heapIdx belongs to Embedded.mu; slot and state to part.mu. It
// is laid out to fit a 64-byte allocation: a million of them are a
// twentieth of the index.
type entry struct {
	kt   string // the key then the text, in one string (see newEntry)
	part *partition
	exp  int64 // unix nanoseconds; noExpiry for none
	seq  uint64

	heapIdx int32

	slot  uint32
	klen  uint32 // the key's length in kt
	state entryState
}

// newEntry returns an entry for key and text (which it concatenates: one
// string header fewer per entry, and no hold on memory the caller's
// strings might share, such as a whole request body).
func newEntry(key, text string, part *partition, exp int64, seq uint64) *entry {
	return &entry{kt: key + text, klen: uint32(len(key)), part: part, exp: exp, seq: seq}
}

func (en *entry) key() string  { return en.kt[:en.klen] }
func (en *entry) text() string { return en.kt[en.klen:] }

type entryState uint8

const (
	statePending entryState = iota // counted, not yet in the partition's vectors
	stateLinked                    // searchable
	stateRemoved                   // removed before or after it was linked
)

const noExpiry = math.MaxInt64

func expNanos(t time.Time) int64 {
	if t.IsZero() {
		return noExpiry
	}
	return t.UnixNano()
}

// point returns en as a Point, its vector dequantised from row.
func (en *entry) point(row []int8) Point {
	x, sx := getRow(row, en.part.dim)
	vec := make([]float32, len(x))
	dequantize(vec, x, sx)
	p := Point{Key: en.key(), Vector: vec, Filter: en.part.filter, Text: en.text()}
	if en.exp != noExpiry {
		p.ExpiresAt = time.Unix(0, en.exp)
	}
	return p
}

// NewEmbedded returns an embedded index, loading cfg.SnapshotPath when it
// exists. A snapshot that cannot be read (corrupt, truncated, another
// dimension) is logged and ignored: the index starts empty and the next
// snapshot replaces the file.
func NewEmbedded(cfg EmbeddedConfig) (*Embedded, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	e := &Embedded{
		cfg:   cfg,
		log:   cfg.Logger,
		byKey: make(map[string]*entry),
		parts: make(map[Filter]*partition),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	if cfg.SnapshotPath != "" {
		if err := e.loadSnapshot(cfg.SnapshotPath); err != nil {
			e.log.Warn("semantic: ignoring unreadable snapshot, starting empty",
				"path", cfg.SnapshotPath, "err", err)
			e.byKey = make(map[string]*entry)
			e.parts = make(map[Filter]*partition)
			e.expiry = nil
			e.seq = 0
		}
		e.shrinkToCapacity()
	}
	go e.background()
	return e, nil
}

func (e *Embedded) now() int64 { return e.cfg.Now().UnixNano() }

func (e *Embedded) checkVector(v []float32) error {
	if len(v) != e.cfg.Dim {
		return fmt.Errorf("semantic: vector has %d dimensions, index has %d", len(v), e.cfg.Dim)
	}
	return nil
}

// Upsert adds p, replacing any point with the same key (in whichever
// partition it was). A point already expired only removes the old one.
func (e *Embedded) Upsert(ctx context.Context, p Point) error {
	if p.Key == "" {
		return errors.New("semantic: upsert with an empty key")
	}
	if err := e.checkVector(p.Vector); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	exp := expNanos(p.ExpiresAt)
	now := e.now()

	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return errClosed
	}
	en, victims := e.admitLocked(p, exp, now, nil)
	if en == nil {
		e.mu.Unlock()
		e.release(victims)
		return nil
	}
	part := en.part
	e.mu.Unlock()

	e.release(victims)
	part.insert(e, en, p.Vector)
	e.upserts.Add(1)
	return nil
}

// admitLocked makes the entry of p, which Upsert and UpsertBatch then
// link: it detaches a point with the same key, evicts the soonest to
// expire while the index is full, and files the entry in its partition.
// An already expired p gets no entry (nil). Victims are appended to
// victims for release after the lock. e.mu is held.
func (e *Embedded) admitLocked(p Point, exp, now int64, victims []*entry) (*entry, []*entry) {
	if old := e.byKey[p.Key]; old != nil {
		e.detachLocked(old)
		victims = append(victims, old)
	}
	if exp <= now {
		return nil, victims
	}
	for len(e.byKey) >= e.cfg.MaxPoints {
		v := e.expiry[0]
		e.detachLocked(v)
		victims = append(victims, v)
		if v.exp <= now {
			e.expired.Add(1)
		} else {
			e.evictions.Add(1)
		}
	}
	part := e.parts[p.Filter]
	if part == nil {
		part = &partition{filter: p.Filter, dim: e.cfg.Dim}
		e.parts[p.Filter] = part
	}
	e.seq++
	en := newEntry(p.Key, p.Text, part, exp, e.seq)
	part.members++
	e.byKey[en.key()] = en
	e.expiry.push(en)
	return en, victims
}

// UpsertBatch adds the points as Upsert would, one after another (a later
// point with a key replaces an earlier one), but links each partition's
// new points into its graph in parallel, on every core: the way to load
// many points at once (a warm-up, a migration, a benchmark). It works in
// rounds of batchRound points; a partition is locked for writing while a
// round's points are linked into it, so its searches wait meanwhile. On
// an error no point of the round that failed, or of later rounds, is
// added.
func (e *Embedded) UpsertBatch(ctx context.Context, ps []Point) error {
	for i := range ps {
		if ps[i].Key == "" {
			return errors.New("semantic: upsert with an empty key")
		}
		if err := e.checkVector(ps[i].Vector); err != nil {
			return err
		}
	}
	for len(ps) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := min(len(ps), batchRound)
		if err := e.upsertRound(ps[:n]); err != nil {
			return err
		}
		ps = ps[n:]
	}
	return nil
}

// batchRound bounds the points UpsertBatch registers under e.mu and links
// under one partition lock at a time.
const batchRound = 16384

func (e *Embedded) upsertRound(ps []Point) error {
	type group struct {
		ens  []*entry
		vecs [][]float32
	}
	now := e.now()
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return errClosed
	}
	var victims []*entry
	groups := make(map[*partition]*group)
	var order []*partition
	added := 0
	for _, p := range ps {
		var en *entry
		if en, victims = e.admitLocked(p, expNanos(p.ExpiresAt), now, victims); en == nil {
			continue
		}
		part := en.part
		gr := groups[part]
		if gr == nil {
			gr = &group{}
			groups[part] = gr
			order = append(order, part)
		}
		gr.ens = append(gr.ens, en)
		gr.vecs = append(gr.vecs, p.Vector)
		added++
	}
	e.mu.Unlock()

	// Victims of this round include entries of this round (a key twice,
	// or evicted to make room): release marks them removed before their
	// partition links the rest.
	e.release(victims)
	for _, part := range order {
		gr := groups[part]
		part.insertBatch(e, gr.ens, gr.vecs)
	}
	e.upserts.Add(uint64(added))
	return nil
}

// detachLocked removes en from the key map, the expiry heap and its
// partition's member count; release then removes its vector.
func (e *Embedded) detachLocked(en *entry) {
	delete(e.byKey, en.key())
	e.expiry.remove(en)
	p := en.part
	p.members--
	if p.members == 0 && e.parts[p.filter] == p {
		delete(e.parts, p.filter)
	}
}

func (e *Embedded) release(victims []*entry) {
	for _, en := range victims {
		p := en.part
		p.mu.Lock()
		p.remove(e, en)
		p.mu.Unlock()
	}
}

// Search returns up to k live points in partition f with score ≥
// minScore, best first.
func (e *Embedded) Search(ctx context.Context, v []float32, f Filter, k int, minScore float32) ([]Match, error) {
	if err := e.checkVector(v); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	e.searches.Add(1)
	if k <= 0 {
		return nil, nil
	}
	e.mu.RLock()
	closed, p := e.closed, e.parts[f]
	e.mu.RUnlock()
	if closed {
		return nil, errClosed
	}
	if p == nil {
		return nil, nil
	}
	now := e.now()
	p.mu.RLock()
	ms := p.search(v, k, minScore, now, e.cfg.EfSearch)
	p.mu.RUnlock()
	if len(ms) > 0 {
		e.hits.Add(1)
	}
	return ms, nil
}

// Delete removes the point with key; an absent key is not an error.
func (e *Embedded) Delete(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return errClosed
	}
	en := e.byKey[key]
	if en == nil {
		e.mu.Unlock()
		return nil
	}
	e.detachLocked(en)
	e.mu.Unlock()
	e.release([]*entry{en})
	e.deletes.Add(1)
	return nil
}

// Purge removes every point whose namespace and route match; an empty
// argument matches any value. It scans every key, so it is an operator
// action, not a request-path one.
func (e *Embedded) Purge(ctx context.Context, namespace, route string) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return 0, errClosed
	}
	var victims []*entry
	for _, en := range e.byKey {
		f := en.part.filter
		if (namespace == "" || f.Namespace == namespace) && (route == "" || f.Route == route) {
			victims = append(victims, en)
		}
	}
	for _, en := range victims {
		e.detachLocked(en)
	}
	e.mu.Unlock()
	e.release(victims)
	e.deletes.Add(uint64(len(victims)))
	return len(victims), nil
}

// Stats returns current sizes and cumulative counters.
func (e *Embedded) Stats() EmbeddedStats {
	e.mu.RLock()
	st := EmbeddedStats{Points: len(e.byKey), Partitions: len(e.parts)}
	parts := make([]*partition, 0, len(e.parts))
	for _, p := range e.parts {
		parts = append(parts, p)
	}
	e.mu.RUnlock()
	for _, p := range parts {
		p.mu.RLock()
		if p.g != nil {
			st.Graphs++
			st.DeadSlots += len(p.g.free)
		}
		p.mu.RUnlock()
	}
	st.Searches = e.searches.Load()
	st.Hits = e.hits.Load()
	st.Upserts = e.upserts.Load()
	st.Deletes = e.deletes.Load()
	st.Evictions = e.evictions.Load()
	st.Expired = e.expired.Load()
	st.Snapshots = e.snapshots.Load()
	return st
}

// Sweep removes every expired point now; the background sweeper calls it
// every SweepInterval. It returns how many were removed.
func (e *Embedded) Sweep() int {
	const batch = 4096 // bound the time mu is held
	total := 0
	for {
		now := e.now()
		e.mu.Lock()
		var victims []*entry
		for len(e.expiry) > 0 && e.expiry[0].exp <= now && len(victims) < batch {
			v := e.expiry[0]
			e.detachLocked(v)
			victims = append(victims, v)
		}
		e.mu.Unlock()
		e.release(victims)
		e.expired.Add(uint64(len(victims)))
		total += len(victims)
		if len(victims) < batch {
			return total
		}
	}
}

// shrinkToCapacity evicts after a snapshot load into a smaller MaxPoints.
func (e *Embedded) shrinkToCapacity() {
	e.mu.Lock()
	var victims []*entry
	for len(e.byKey) > e.cfg.MaxPoints {
		v := e.expiry[0]
		e.detachLocked(v)
		victims = append(victims, v)
	}
	e.mu.Unlock()
	e.release(victims)
	e.evictions.Add(uint64(len(victims)))
}

// background runs the sweeper and the periodic snapshot until Close.
func (e *Embedded) background() {
	defer close(e.done)
	sweep := time.NewTicker(e.cfg.SweepInterval)
	defer sweep.Stop()
	var snap <-chan time.Time
	if e.cfg.SnapshotPath != "" && e.cfg.SnapshotInterval > 0 {
		t := time.NewTicker(e.cfg.SnapshotInterval)
		defer t.Stop()
		snap = t.C
	}
	for {
		select {
		case <-e.stop:
			return
		case <-sweep.C:
			e.guard("sweep", func() { e.Sweep() })
		case <-snap:
			e.guard("snapshot", func() {
				if err := e.Snapshot(); err != nil {
					e.log.Warn("semantic: periodic snapshot", "path", e.cfg.SnapshotPath, "err", err)
				}
			})
		}
	}
}

// guard runs fn, logging instead of crashing if it panics.
func (e *Embedded) guard(what string, fn func()) {
	defer func() {
		if r := recover(); r != nil {
			e.log.Error("semantic: background "+what+" panicked", "panic", r, "stack", string(debug.Stack()))
		}
	}()
	fn()
}

// Close stops the background work and writes a final snapshot (when
// configured). Later calls return the first call's result; operations
// after Close return an error wrapping ErrUnavailable.
func (e *Embedded) Close() error {
	e.closeOnce.Do(func() {
		close(e.stop)
		<-e.done
		// Refuse writes first, so none lands after the final snapshot.
		e.mu.Lock()
		e.closed = true
		e.mu.Unlock()
		if e.cfg.SnapshotPath != "" {
			e.closeErr = e.Snapshot()
		}
	})
	return e.closeErr
}

// partition holds the points of one Filter: flat (vectors in one slice,
// compared exhaustively) below ExactBelow points, an HNSW graph above.
type partition struct {
	filter Filter
	dim    int

	members int // guarded by Embedded.mu: entries assigned, pending or linked

	mu     sync.RWMutex
	g      *hnsw   // nil while flat
	flat   []int8  // flat: the row (see putRow) of owners[i] at i·rowBytes(dim)
	owners []owner // by slot; zero for a dead graph slot
	live   int
}

// flatRow returns the flat partition's row i.
func (p *partition) flatRow(i int) []int8 {
	r := rowBytes(p.dim)
	return p.flat[i*r : (i+1)*r : (i+1)*r]
}

// owner maps a slot to its entry. The expiry is copied beside the pointer
// so that the search's liveness check, run for every candidate, reads one
// dense array instead of chasing a pointer per node.
type owner struct {
	en  *entry
	exp int64 // 0 for a dead slot
}

func ownerOf(en *entry) owner { return owner{en, en.exp} }

// insert makes en searchable, unless it is removed meanwhile. Into a
// graph, the neighbour search runs under the read lock and only the
// linking under the write lock.
func (p *partition) insert(e *Embedded, en *entry, v []float32) {
	var g *hnsw
	var pl *insertPlan
	p.mu.RLock()
	if p.g != nil && en.state != stateRemoved {
		g, pl = p.g, p.g.plan(v)
	}
	p.mu.RUnlock()
	p.mu.Lock()
	defer p.mu.Unlock()
	if pl != nil && p.g == g && en.state != stateRemoved {
		p.link(en, g.commit(v, pl))
		return
	}
	p.add(e, en, v)
}

// link records en at graph slot s.
func (p *partition) link(en *entry, s uint32) {
	if int(s) == len(p.owners) {
		p.owners = append(p.owners, ownerOf(en))
	} else {
		p.owners[s] = ownerOf(en)
	}
	en.slot = s
	en.state = stateLinked
	p.live++
}

// add makes en searchable under the write lock, unless it was removed
// while pending.
func (p *partition) add(e *Embedded, en *entry, v []float32) {
	if en.state == stateRemoved {
		return
	}
	if p.g == nil && p.live+1 >= e.cfg.ExactBelow {
		p.toGraph(e)
	}
	if p.g == nil {
		en.slot = uint32(len(p.owners))
		p.flat = append(p.flat, make([]int8, rowBytes(p.dim))...)
		putRow(p.flatRow(len(p.owners)), v, p.dim)
		p.owners = append(p.owners, ownerOf(en))
		en.state = stateLinked
		p.live++
		return
	}
	p.link(en, p.g.add(v))
}

// remove makes en unsearchable.
func (p *partition) remove(e *Embedded, en *entry) {
	if en.state != stateLinked {
		en.state = stateRemoved
		return
	}
	en.state = stateRemoved
	p.live--
	if p.g == nil {
		// Swap the last point into the hole.
		last := len(p.owners) - 1
		if int(en.slot) != last {
			moved := p.owners[last]
			copy(p.flatRow(int(en.slot)), p.flatRow(last))
			p.owners[en.slot] = moved
			moved.en.slot = en.slot
		}
		p.owners[last] = owner{}
		p.owners = p.owners[:last]
		p.flat = p.flat[:last*rowBytes(p.dim)]
		return
	}
	p.owners[en.slot] = owner{}
	p.g.remove(en.slot)
	switch {
	case p.live < e.cfg.ExactBelow/2:
		p.toFlat()
	case len(p.g.free) > p.live && p.live <= rebuildMax:
		p.rebuild(e)
	}
}

// rebuildMax bounds the partitions rebuilt in place when tombstones
// outnumber live points: the rebuild holds the partition lock, and at this
// size takes tens of milliseconds. Larger partitions keep their tombstones
// for later inserts to reuse (a partition's memory is that of its peak
// size until it shrinks to this size, or below ExactBelow/2).
const rebuildMax = 1024

func (p *partition) newGraph(e *Embedded) *hnsw {
	return newHNSW(p.dim, e.cfg.M, e.cfg.EfConstruction, e.graphSeed.Add(1))
}

// toGraph moves a flat partition into a new graph, linked in parallel.
func (p *partition) toGraph(e *Embedded) {
	g := p.newGraph(e)
	slots := g.addBatch(len(p.owners), func(i int, row []int8) { copy(row, p.flatRow(i)) }, batchWorkers())
	for i, o := range p.owners {
		o.en.slot = slots[i]
	}
	p.g, p.flat = g, nil
}

// toFlat moves a graph partition's live points into a flat one.
func (p *partition) toFlat() {
	owners := make([]owner, 0, p.live)
	flat := make([]int8, 0, p.live*rowBytes(p.dim))
	for s, o := range p.owners {
		if o.en == nil {
			continue
		}
		o.en.slot = uint32(len(owners))
		owners = append(owners, o)
		flat = append(flat, p.g.rowOf(uint32(s))...)
	}
	p.g, p.flat, p.owners = nil, flat, owners
}

// rebuild replaces the graph with one of its live points only, linked
// in parallel.
func (p *partition) rebuild(e *Embedded) {
	g := p.newGraph(e)
	owners := make([]owner, 0, p.live)
	var from []uint32
	for s, o := range p.owners {
		if o.en != nil {
			owners = append(owners, o)
			from = append(from, uint32(s))
		}
	}
	slots := g.addBatch(len(from), func(i int, row []int8) { copy(row, p.g.rowOf(from[i])) }, batchWorkers())
	for i, o := range owners {
		o.en.slot = slots[i]
	}
	p.g, p.owners = g, owners
}

// insertBatch makes the entries searchable (those not removed
// meanwhile), linking them into the graph in parallel. vecs[i] is
// ens[i]'s vector.
func (p *partition) insertBatch(e *Embedded, ens []*entry, vecs [][]float32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for i, en := range ens {
		if en.state != stateRemoved {
			ens[n], vecs[n] = en, vecs[i]
			n++
		}
	}
	ens, vecs = ens[:n], vecs[:n]
	if p.g == nil && p.live+len(ens) >= e.cfg.ExactBelow {
		p.toGraph(e)
	}
	if p.g == nil {
		for i, en := range ens {
			p.add(e, en, vecs[i])
		}
		return
	}
	slots := p.g.addBatch(len(ens), func(i int, row []int8) { putRow(row, vecs[i], p.dim) }, batchWorkers())
	for i, en := range ens {
		p.link(en, slots[i])
	}
}

// queryPool holds quantised queries for exact partitions (a graph keeps
// its own in its scratch).
var queryPool = sync.Pool{New: func() any { return new(query) }}

// search runs under p.mu.RLock.
func (p *partition) search(v []float32, k int, minScore float32, now int64, efSearch int) []Match {
	alive := func(s uint32) bool { return p.owners[s].exp > now }
	var top []cand
	if p.g == nil {
		q := queryPool.Get().(*query)
		defer queryPool.Put(q)
		q.set(v)
		var h maxHeap // the k best so far, worst on top
		for i, o := range p.owners {
			if o.exp <= now {
				continue
			}
			x, sx := getRow(p.flatRow(i), p.dim)
			d := -float32(dotI8(q.v, x)) * q.scale * sx
			if -d < minScore {
				continue
			}
			if len(h) < k {
				h.push(cand{uint32(i), d})
			} else if d < h[0].d {
				h.pop()
				h.push(cand{uint32(i), d})
			}
		}
		top = h
		sortCands(top)
	} else {
		top = p.g.search(v, efSearch, k, alive)
	}
	var out []Match
	for _, c := range top {
		if len(out) == k || -c.d < minScore {
			break
		}
		var row []int8
		if p.g == nil {
			row = p.flatRow(int(c.id))
		} else {
			row = p.g.rowOf(c.id)
		}
		out = append(out, Match{Point: p.owners[c.id].en.point(row), Score: -c.d})
	}
	return out
}

// expiryHeap orders entries by expiry, then insertion: its minimum is the
// next to expire and the first to evict.
type expiryHeap []*entry

func (h expiryHeap) less(i, j int) bool {
	if h[i].exp != h[j].exp {
		return h[i].exp < h[j].exp
	}
	return h[i].seq < h[j].seq
}

func (h expiryHeap) swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIdx = int32(i)
	h[j].heapIdx = int32(j)
}

func (h *expiryHeap) push(en *entry) {
	en.heapIdx = int32(len(*h))
	*h = append(*h, en)
	h.up(len(*h) - 1)
}

func (h *expiryHeap) remove(en *entry) {
	i := int(en.heapIdx)
	last := len(*h) - 1
	if i != last {
		h.swap(i, last)
	}
	(*h)[last] = nil
	*h = (*h)[:last]
	if i != last {
		if !h.down(i) {
			h.up(i)
		}
	}
	en.heapIdx = -1
}

func (h expiryHeap) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !h.less(i, p) {
			return
		}
		h.swap(i, p)
		i = p
	}
}

func (h expiryHeap) down(i int) bool {
	start := i
	for {
		l := 2*i + 1
		if l >= len(h) {
			break
		}
		m := l
		if r := l + 1; r < len(h) && h.less(r, l) {
			m = r
		}
		if !h.less(m, i) {
			break
		}
		h.swap(i, m)
		i = m
	}
	return i > start
}
