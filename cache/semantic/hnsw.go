package semantic

import (
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
)

// hnsw is a Hierarchical Navigable Small World graph (Malkov and Yashunin,
// "Efficient and robust approximate nearest neighbor search using
// Hierarchical Navigable Small World graphs", arXiv:1603.09320) over unit
// vectors, ranked by inner product. It follows the paper and hnswlib:
// greedy descent through the upper layers, a beam of width ef on the
// target layer, neighbours chosen with the diversity heuristic (the paper's
// algorithm 4), M links per node on upper layers and 2·M on layer 0.
//
// Deletion is by tombstone: a dead node keeps its vector and links, so it
// still routes searches, but is never returned or chosen as a new
// neighbour. A later insert reuses the dead slot (it keeps the slot's
// level): the slot is first detached from the neighbours it linked to,
// each of which gets the best of the dead node's other neighbours in
// compensation, then linked again as a fresh insert. This keeps the graph
// bounded by its peak size instead of growing with churn.
//
// Vectors are int8 with a per-vector scale (quant.go): a slot's row is
// its dim bytes, padding to 4 and the float32 scale, so that one distance
// reads one contiguous row (516 bytes at 512 dimensions, against 2,048
// as float32). Queries are int16 (dotI8), links are chosen and pruned
// with int8·int8 products (dotI8I8).
//
// Storage is slot-indexed and chunked (1,024 slots per chunk) so that
// growth never copies more than one chunk, and holds no per-node heap
// object: layer-0 links are a fixed block per slot in a chunk, the rare
// upper layers (a node has them with probability 1/M) one shared array
// indexed by a per-slot offset. It is not safe for concurrent use: the
// owning partition's lock serialises writers, and searches (which only
// read) may run in parallel under a read lock. addBatch is the exception:
// it links many nodes in parallel under striped locks, with the
// partition locked exclusively.
type hnsw struct {
	dim   int
	row   int // bytes per slot in vecs: dim, padded to 4, then the scale
	m, m0 int // maximum links per node on layers ≥ 1, and on layer 0
	efC   int // beam width while inserting
	ml    float64
	rngMu sync.Mutex // plans draw levels under the read lock
	rng   *rand.Rand

	vecs   [][]int8   // chunked: slot → row
	links0 [][]uint32 // chunked: slot → [count, id × m0]
	upper  []uint32   // levels 1..level of each slot that has them, each [count, id × m]
	upOff  []uint32   // slot → offset of its blocks in upper
	levels []uint8
	ver    []uint8 // bumped when a dead slot is reused; see plan
	dead   []bool
	free   []uint32 // dead slots, reused by later inserts
	n      int      // slots in use, live or dead
	live   int

	entry    uint32
	maxLevel int // -1 while the graph is empty

	// While addBatch links in parallel: epMu guards entry and maxLevel,
	// locks[s&lockMask] guards slot s's link blocks. Nil otherwise.
	epMu  sync.RWMutex
	locks *[lockStripes]sync.Mutex

	scratch sync.Pool // *scratch, sized to the graph
}

const (
	lockStripes = 4096
	lockMask    = lockStripes - 1
)

const (
	chunkShift = 10
	chunkSlots = 1 << chunkShift
	chunkMask  = chunkSlots - 1
	maxLevels  = 16 // layer cap; with M=16 layer 16 would need ~10^19 points
)

// cand is a node and its distance to the query. Distance is the negated
// inner product, so smaller is nearer.
type cand struct {
	id uint32
	d  float32
}

func newHNSW(dim, m, efC int, seed uint64) *hnsw {
	if m < 2 {
		m = 2
	}
	return &hnsw{
		dim:      dim,
		row:      rowBytes(dim),
		m:        m,
		m0:       2 * m,
		efC:      max(efC, m),
		ml:       1 / math.Log(float64(m)),
		rng:      rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15)),
		maxLevel: -1,
	}
}

// rowOf returns slot s's row: its int8 vector and scale (see putRow).
func (g *hnsw) rowOf(s uint32) []int8 {
	c := g.vecs[s>>chunkShift]
	off := int(s&chunkMask) * g.row
	return c[off : off+g.row : off+g.row]
}

// vec returns slot s's int8 vector and scale.
func (g *hnsw) vec(s uint32) ([]int8, float32) { return getRow(g.rowOf(s), g.dim) }

// dist is the distance from q to slot s: the negated inner product.
func (g *hnsw) dist(q *query, s uint32) float32 {
	x, sx := g.vec(s)
	return -float32(dotI8(q.v, x)) * q.scale * sx
}

// distSlots is the distance between two slots.
func (g *hnsw) distSlots(a, b uint32) float32 {
	x, sx := g.vec(a)
	y, sy := g.vec(b)
	return -float32(dotI8I8(x, y)) * sx * sy
}

// slotQuery sets q to slot s's vector, exactly as stored.
func (g *hnsw) slotQuery(q *query, s uint32) {
	x, sx := g.vec(s)
	q.setI8(x, sx)
}

// block returns slot s's link block on layer l: element 0 is the count,
// then room for the maximum number of links.
func (g *hnsw) block(s uint32, l int) []uint32 {
	if l == 0 {
		c := g.links0[s>>chunkShift]
		off := int(s&chunkMask) * (g.m0 + 1)
		return c[off : off+g.m0+1 : off+g.m0+1]
	}
	off := int(g.upOff[s]) + (l-1)*(g.m+1)
	return g.upper[off : off+g.m+1 : off+g.m+1]
}

func (g *hnsw) neighbors(s uint32, l int) []uint32 {
	b := g.block(s, l)
	return b[1 : 1+b[0]]
}

func (g *hnsw) setNeighbors(s uint32, l int, ids []uint32) {
	b := g.block(s, l)
	b[0] = uint32(copy(b[1:], ids))
}

func (g *hnsw) maxLinks(l int) int {
	if l == 0 {
		return g.m0
	}
	return g.m
}

func (g *hnsw) randomLevel() int {
	g.rngMu.Lock()
	u := g.rng.Float64()
	g.rngMu.Unlock()
	l := int(-math.Log(1-u) * g.ml)
	return min(l, maxLevels-1)
}

// newSlot appends a slot with the given level and returns it. A chunk
// grows with its slots (doubling) up to exactly chunkSlots, so a small
// graph costs its size, not a whole chunk, and a full chunk has no spare
// capacity; full chunks are never copied again.
func (g *hnsw) newSlot(level int) uint32 {
	s := uint32(g.n)
	c := g.n >> chunkShift
	if c == len(g.vecs) {
		g.vecs = append(g.vecs, nil)
		g.links0 = append(g.links0, nil)
	}
	g.vecs[c] = growChunk(g.vecs[c], g.row)
	g.links0[c] = growChunk(g.links0[c], g.m0+1)
	g.n++
	g.levels = append(g.levels, uint8(level))
	g.ver = append(g.ver, 0)
	g.dead = append(g.dead, false)
	var off uint32
	if level > 0 {
		off = uint32(len(g.upper))
		g.upper = append(g.upper, make([]uint32, level*(g.m+1))...)
	}
	g.upOff = append(g.upOff, off)
	return s
}

// growChunk extends a chunk by one slot of size elements, growing its
// capacity by doubling but never past chunkSlots slots.
func growChunk[T any](c []T, size int) []T {
	if len(c)+size > cap(c) {
		n := min(max(2*cap(c), 16*size), chunkSlots*size)
		nc := make([]T, len(c), n)
		copy(nc, c)
		c = nc
	}
	return c[:len(c)+size]
}

// add inserts v (copied) and returns its slot, reusing a dead slot when
// there is one.
func (g *hnsw) add(v []float32) uint32 {
	s, level := g.place(v, g.randomLevel())
	g.link(s, level)
	return s
}

// addRow is add for a vector already in row form (another graph's, or a
// flat partition's).
func (g *hnsw) addRow(row []int8) uint32 {
	s, level := g.placeRow(row, g.randomLevel())
	g.link(s, level)
	return s
}

// place stores v in a dead slot (detached first; it keeps its level) or a
// new slot of the given level, unlinked, and returns the slot and level.
func (g *hnsw) place(v []float32, level int) (uint32, int) {
	s, level := g.slotFor(level)
	putRow(g.rowOf(s), v, g.dim)
	return s, level
}

// placeRow is place for a vector in row form.
func (g *hnsw) placeRow(row []int8, level int) (uint32, int) {
	s, level := g.slotFor(level)
	copy(g.rowOf(s), row)
	return s, level
}

// slotFor takes a dead slot (detached; it keeps its level) or a new slot
// of the given level for a new vector, and counts it live.
func (g *hnsw) slotFor(level int) (uint32, int) {
	s, ok := g.takeFree()
	if ok {
		g.detach(s)
		g.ver[s]++
		g.dead[s] = false
		level = int(g.levels[s])
	} else {
		s = g.newSlot(level)
	}
	g.live++
	return s, level
}

// insertPlan is the expensive, read-only half of an insert: the beam
// searches for the new vector's neighbours, run under the partition's read
// lock so that searches proceed meanwhile and inserts into one graph
// overlap. commit then links under the write lock, revalidating what may
// have changed in between.
type insertPlan struct {
	level    int
	maxLevel int // of the graph when planned
	entry    uint32
	layers   [][]cand  // layers[l]: candidates on layer l, nearest first
	vers     [][]uint8 // slot versions of layers[l], to detect reuse (256 reuses of one slot during one insert would be missed)
}

func (g *hnsw) plan(v []float32) *insertPlan {
	pl := &insertPlan{level: g.randomLevel(), maxLevel: g.maxLevel, entry: g.entry}
	if g.maxLevel < 0 {
		return pl
	}
	sc := g.getScratch()
	defer g.scratch.Put(sc)
	// The query is the vector as it will be stored, so that the plan's
	// distances are those between stored vectors.
	row := make([]int8, g.row)
	putRow(row, v, g.dim)
	x, sx := getRow(row, g.dim)
	q := &sc.q
	q.setI8(x, sx)
	ep := cand{g.entry, g.dist(q, g.entry)}
	for l := g.maxLevel; l > pl.level; l-- {
		ep = g.greedy(q, ep, l, sc)
	}
	eps := []cand{ep}
	notDead := func(id uint32) bool { return !g.dead[id] }
	top := min(pl.level, g.maxLevel)
	pl.layers = make([][]cand, top+1)
	pl.vers = make([][]uint8, top+1)
	for l := top; l >= 0; l-- {
		w := g.searchLayer(q, eps, g.efC, l, sc, notDead, 0)
		sortCands(w)
		pl.layers[l] = slices.Clone(w)
		pl.vers[l] = make([]uint8, len(w))
		for i, c := range w {
			pl.vers[l][i] = g.ver[c.id]
		}
		if len(w) > 0 {
			eps = pl.layers[l]
		}
	}
	return pl
}

// commit finishes an insert planned by plan on this graph, falling back to
// a full insert when the graph moved too far since (new entry point, a
// reused slot on layers the plan did not cover, or every candidate of a
// layer gone).
func (g *hnsw) commit(v []float32, pl *insertPlan) uint32 {
	top := len(pl.layers) - 1
	if top < 0 || g.maxLevel != pl.maxLevel || g.entry != pl.entry {
		return g.add(v)
	}
	s, level := g.place(v, pl.level)
	if level > top && level <= g.maxLevel {
		g.link(s, level) // a reused slot above the planned layers
		return s
	}
	ws := make([][]cand, min(level, top)+1)
	for l := range ws {
		for i, c := range pl.layers[l] {
			if c.id != s && !g.dead[c.id] && g.ver[c.id] == pl.vers[l][i] {
				ws[l] = append(ws[l], c)
			}
		}
		if len(ws[l]) == 0 {
			g.link(s, level)
			return s
		}
	}
	var sel []uint32
	for l := len(ws) - 1; l >= 0; l-- {
		sel = g.connect(s, l, ws[l], sel[:0])
	}
	if level > g.maxLevel {
		g.entry, g.maxLevel = s, level
	}
	return s
}

// connect links s on layer l to the heuristic's choice among candidates
// w (nearest first), and each chosen neighbour back to s.
func (g *hnsw) connect(s uint32, l int, w []cand, sel []uint32) []uint32 {
	sc := g.getScratch()
	defer g.scratch.Put(sc)
	return g.connectScratch(s, l, w, sel, sc)
}

// connectScratch is connect with the caller's scratch memory. A new node
// takes M links on every layer, layer 0 included (where it has room for
// 2·M, which reverse links fill): choosing up to 2·M on layer 0, as FAISS
// does, was measured at 1,000,000 clustered points and changed recall@1
// by under 0.015 (0.92 / 0.93 at EfSearch 64) for a 10 % slower build.
func (g *hnsw) connectScratch(s uint32, l int, w []cand, sel []uint32, sc *scratch) []uint32 {
	sel = g.selectNeighbors(w, g.m, sel)
	g.lock(s)
	g.setNeighbors(s, l, sel)
	g.unlock(s)
	for _, n := range sel {
		g.lock(n)
		g.addLink(n, s, l, sc)
		g.unlock(n)
	}
	return sel
}

// lock and unlock guard slot s's links while addBatch runs; no-ops
// otherwise.
func (g *hnsw) lock(s uint32) {
	if g.locks != nil {
		g.locks[s&lockMask].Lock()
	}
}

func (g *hnsw) unlock(s uint32) {
	if g.locks != nil {
		g.locks[s&lockMask].Unlock()
	}
}

// takeFree pops a dead slot for reuse. The entry point is never reused:
// linking a node from itself would leave it unreachable.
func (g *hnsw) takeFree() (uint32, bool) {
	for i := len(g.free) - 1; i >= 0; i-- {
		s := g.free[i]
		if s == g.entry {
			continue
		}
		g.free[i] = g.free[len(g.free)-1]
		g.free = g.free[:len(g.free)-1]
		return s, true
	}
	return 0, false
}

// remove tombstones slot s.
func (g *hnsw) remove(s uint32) {
	if g.dead[s] {
		return
	}
	g.dead[s] = true
	g.live--
	g.free = append(g.free, s)
}

// detach unlinks dead slot s from the nodes it links to, before the slot
// is reused for another vector. Each such node loses its link to s and, if
// that leaves it room, gains the nearest of s's other live neighbours it
// did not already have, so the neighbourhood stays connected.
func (g *hnsw) detach(s uint32) {
	for l := int(g.levels[s]); l >= 0; l-- {
		out := g.neighbors(s, l)
		for _, n := range out {
			if n == s {
				continue
			}
			b := g.block(n, l)
			nb := b[1 : 1+b[0]]
			i := slices.Index(nb, s)
			if i < 0 {
				continue
			}
			nb[i] = nb[len(nb)-1]
			nb = nb[:len(nb)-1]
			best, bestD := uint32(0), float32(math.Inf(1))
			for _, c := range out {
				if c == n || c == s || g.dead[c] || slices.Contains(nb, c) {
					continue
				}
				if d := g.distSlots(n, c); d < bestD {
					best, bestD = c, d
				}
			}
			if !math.IsInf(float64(bestD), 1) {
				nb = append(nb, best)
			}
			b[0] = uint32(len(nb))
		}
		g.block(s, l)[0] = 0
	}
}

// link connects slot s, whose vector is in place, into layers 0..level.
func (g *hnsw) link(s uint32, level int) {
	if g.maxLevel < 0 {
		g.entry, g.maxLevel = s, level
		return
	}
	g.linkFrom(s, level, g.entry, g.maxLevel)
	if level > g.maxLevel {
		g.entry, g.maxLevel = s, level
	}
}

// linkShared is link while addBatch runs: the entry point is read under
// epMu, and an insert that will raise the graph's top level holds epMu
// for its whole length (rare: a new top level comes about log_M(n)
// times), as in hnswlib.
func (g *hnsw) linkShared(s uint32, level int) {
	g.epMu.RLock()
	entry, maxLevel := g.entry, g.maxLevel
	g.epMu.RUnlock()
	if level > maxLevel {
		g.epMu.Lock()
		defer g.epMu.Unlock()
		entry, maxLevel = g.entry, g.maxLevel
		if level > maxLevel {
			defer func() { g.entry, g.maxLevel = s, level }()
		}
	}
	g.linkFrom(s, level, entry, maxLevel)
}

// linkFrom links s into layers 0..min(level, maxLevel), descending from
// entry, the entry point at maxLevel.
//
// The searches run top-down, each layer's result seeding the next; the
// links are then made bottom-up, layer 0 first. Only then is a node
// reachable on an upper layer when its lower layers are linked: while
// addBatch links in parallel, another insert that descends through s
// would otherwise arrive on a layer where s has no links yet and see
// nothing but s (measured: 256 points linked on 2 workers left some
// unreachable, TestEmbeddedConformance/Exact/ManyPoints).
func (g *hnsw) linkFrom(s uint32, level int, entry uint32, maxLevel int) {
	sc := g.getScratch()
	defer g.scratch.Put(sc)
	q := &sc.q
	g.slotQuery(q, s)

	ep := cand{entry, g.dist(q, entry)}
	for l := maxLevel; l > level; l-- {
		ep = g.greedy(q, ep, l, sc)
	}
	eps := append(sc.eps[:0], ep)
	notSelfOrDead := func(id uint32) bool { return id != s && !g.dead[id] }
	top := min(level, maxLevel)
	var upper [][]cand // upper[l-1]: the candidates on layer l ≥ 1
	if top > 0 {
		upper = make([][]cand, top)
	}
	sel := sc.sel[:0]
	for l := top; l >= 0; l-- {
		w := g.searchLayer(q, eps, g.efC, l, sc, notSelfOrDead, 0)
		if len(w) == 0 {
			// Nothing live is reachable: link to dead nodes rather than
			// leave s unreachable; a later prune drops them.
			w = g.searchLayer(q, eps, g.efC, l, sc, func(id uint32) bool { return id != s }, 0)
		}
		sortCands(w)
		if l > 0 {
			upper[l-1] = slices.Clone(w)
		} else {
			sel = g.connectScratch(s, 0, w, sel[:0], sc)
		}
		if len(w) > 0 {
			eps = append(eps[:0], w...) // w is scratch, reused by the next layer
		}
	}
	for l := 1; l <= top; l++ {
		sel = g.connectScratch(s, l, upper[l-1], sel[:0], sc)
	}
	sc.eps, sc.sel = eps[:0], sel[:0]
}

// addBatch stores n new vectors (put writes vector i into the row it is
// given, see putRow) and links them, on up to workers goroutines in
// parallel. It returns their slots in order. Slots are assigned and
// vectors written first, one at a time (dead slots are reused as by add);
// then each worker takes the next unlinked node and links it as link
// does, reading and writing link blocks under striped locks (locks) and
// the entry point under epMu. The caller holds the graph exclusively:
// nothing else reads it meanwhile.
func (g *hnsw) addBatch(n int, put func(i int, row []int8), workers int) []uint32 {
	slots := make([]uint32, n)
	levels := make([]uint8, n)
	for i := range n {
		s, level := g.slotFor(g.randomLevel())
		put(i, g.rowOf(s))
		slots[i], levels[i] = s, uint8(level)
	}
	i0 := 0
	if g.maxLevel < 0 && n > 0 {
		g.link(slots[0], int(levels[0]))
		i0 = 1
	}
	if workers < 2 || n-i0 < 64 {
		for i := i0; i < n; i++ {
			g.link(slots[i], int(levels[i]))
		}
		return slots
	}
	g.locks = new([lockStripes]sync.Mutex)
	next := atomic.Int64{}
	next.Store(int64(i0))
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				g.linkShared(slots[i], int(levels[i]))
			}
		})
	}
	wg.Wait()
	g.locks = nil
	return slots
}

// batchWorkers is how many goroutines addBatch uses: every core.
func batchWorkers() int { return runtime.GOMAXPROCS(0) }

// addLink adds the link n → s on layer l, pruning n's links with the
// heuristic when they overflow (dead links are dropped first).
func (g *hnsw) addLink(n, s uint32, l int, sc *scratch) {
	b := g.block(n, l)
	cnt := int(b[0])
	nb := b[1 : 1+cnt]
	if slices.Contains(nb, s) {
		return
	}
	limit := g.maxLinks(l)
	if cnt < limit {
		b[1+cnt] = s
		b[0]++
		return
	}
	cs := sc.cs[:0]
	for _, x := range nb {
		if !g.dead[x] {
			cs = append(cs, cand{x, g.distSlots(n, x)})
		}
	}
	cs = append(cs, cand{s, g.distSlots(n, s)})
	ids := sc.pruned[:0]
	if len(cs) <= limit {
		for _, c := range cs {
			ids = append(ids, c.id)
		}
	} else {
		sortCands(cs)
		ids = g.selectNeighbors(cs, limit, ids)
	}
	g.setNeighbors(n, l, ids)
	sc.cs, sc.pruned = cs[:0], ids[:0]
}

// selectNeighbors is the diversity heuristic: walking candidates nearest
// first, keep one only if it is nearer to the base than to every neighbour
// kept so far. cs must be sorted nearest first.
func (g *hnsw) selectNeighbors(cs []cand, m int, out []uint32) []uint32 {
	for _, c := range cs {
		if len(out) >= m {
			break
		}
		good := true
		for _, r := range out {
			if g.distSlots(c.id, r) < c.d {
				good = false
				break
			}
		}
		if good {
			out = append(out, c.id)
		}
	}
	return out
}

// greedy walks layer l from ep to a local minimum of the distance to q.
func (g *hnsw) greedy(q *query, ep cand, l int, sc *scratch) cand {
	for changed := true; changed; {
		changed = false
		for _, n := range g.readNeighbors(ep.id, l, sc) {
			if d := g.dist(q, n); d < ep.d {
				ep, changed = cand{n, d}, true
			}
		}
	}
	return ep
}

// readNeighbors returns slot s's links on layer l: the block itself, or
// while addBatch runs a copy taken under the slot's lock (in sc.nb).
func (g *hnsw) readNeighbors(s uint32, l int, sc *scratch) []uint32 {
	if g.locks == nil {
		return g.neighbors(s, l)
	}
	g.lock(s)
	sc.nb = append(sc.nb[:0], g.neighbors(s, l)...)
	g.unlock(s)
	return sc.nb
}

// searchLayer is the beam search on one layer: it returns up to ef nodes
// accepted by ok, nearest to q, in no particular order, in scratch memory
// (valid until the next call with sc). Nodes ok rejects (dead, expired)
// are traversed but not returned. When many are rejected the beam would
// never fill; maxExpand (0 = unlimited) then bounds the work.
//
// Distances are computed for a node's unvisited neighbours as a batch,
// each vector prefetched two ahead of its dot product: the search is
// bound by memory, not arithmetic, once the vectors outgrow the cache.
func (g *hnsw) searchLayer(q *query, eps []cand, ef, l int, sc *scratch, ok func(uint32) bool, maxExpand int) []cand {
	sc.reset(g.n)
	frontier, top := sc.frontier[:0], sc.top[:0]
	defer func() { sc.frontier, sc.top = frontier[:0], top[:0] }()
	for _, ep := range eps {
		if sc.visit(ep.id) {
			continue
		}
		frontier.push(ep)
		if ok(ep.id) {
			top.push(ep)
			if len(top) > ef {
				top.pop()
			}
		}
	}
	expanded := 0
	for len(frontier) > 0 {
		c := frontier.pop()
		if len(top) >= ef && c.d > top[0].d {
			break
		}
		if maxExpand > 0 && expanded >= maxExpand && (len(top) > 0 && c.d > top[0].d || expanded >= 4*maxExpand) {
			break
		}
		expanded++
		ids := sc.ids[:0]
		for _, n := range g.readNeighbors(c.id, l, sc) {
			if !sc.visit(n) {
				ids = append(ids, n)
			}
		}
		sc.ids = ids
		for i := 0; i < len(ids) && i < 2; i++ {
			prefetchI8(g.rowOf(ids[i]))
		}
		for i, n := range ids {
			if i+2 < len(ids) {
				prefetchI8(g.rowOf(ids[i+2]))
			}
			d := g.dist(q, n)
			if len(top) < ef || d < top[0].d {
				frontier.push(cand{n, d})
				if ok(n) {
					top.push(cand{n, d})
					if len(top) > ef {
						top.pop()
					}
				}
			}
		}
	}
	return top
}

// search returns the k accepted nodes nearest to q, nearest first, found
// with a beam of width ef ≥ k.
func (g *hnsw) search(v []float32, ef, k int, ok func(uint32) bool) []cand {
	if g.maxLevel < 0 {
		return nil
	}
	sc := g.getScratch()
	defer g.scratch.Put(sc)
	q := &sc.q
	q.set(v)
	ep := cand{g.entry, g.dist(q, g.entry)}
	for l := g.maxLevel; l > 0; l-- {
		ep = g.greedy(q, ep, l, sc)
	}
	sc.eps = append(sc.eps[:0], ep)
	w := g.searchLayer(q, sc.eps, max(ef, k), 0, sc, ok, 8*ef)
	sortCands(w)
	return slices.Clone(w[:min(k, len(w))])
}

func (g *hnsw) getScratch() *scratch {
	if sc, ok := g.scratch.Get().(*scratch); ok {
		return sc
	}
	return &scratch{}
}

// scratch is one search's reusable memory: the visited set, which marks
// slots with a generation number so that clearing it between searches is
// free (hnswlib's VisitedList), and the heaps and buffers.
type scratch struct {
	marks    []uint16
	gen      uint16
	frontier minHeap
	top      maxHeap
	eps      []cand
	ids      []uint32
	nb       []uint32 // readNeighbors' copy
	sel      []uint32 // linkFrom's chosen neighbours
	cs       []cand   // addLink's candidates
	pruned   []uint32 // addLink's choice
	q        query
}

func (v *scratch) reset(n int) {
	if len(v.marks) < n {
		v.marks = make([]uint16, n+n/4+chunkSlots)
		v.gen = 0
	}
	v.gen++
	if v.gen == 0 {
		clear(v.marks)
		v.gen = 1
	}
}

// visit marks id and reports whether it was already marked.
func (v *scratch) visit(id uint32) bool {
	if v.marks[id] == v.gen {
		return true
	}
	v.marks[id] = v.gen
	return false
}

func sortCands(cs []cand) {
	slices.SortFunc(cs, func(a, b cand) int {
		switch {
		case a.d < b.d:
			return -1
		case a.d > b.d:
			return 1
		}
		return int(a.id) - int(b.id)
	})
}

// minHeap pops the nearest candidate first.
type minHeap []cand

func (h *minHeap) push(c cand) {
	*h = append(*h, c)
	s := *h
	for i := len(s) - 1; i > 0; {
		p := (i - 1) / 2
		if s[p].d <= s[i].d {
			break
		}
		s[p], s[i] = s[i], s[p]
		i = p
	}
}

func (h *minHeap) pop() cand {
	s := *h
	top := s[0]
	last := len(s) - 1
	s[0] = s[last]
	s = s[:last]
	for i := 0; ; {
		l, r, m := 2*i+1, 2*i+2, i
		if l < len(s) && s[l].d < s[m].d {
			m = l
		}
		if r < len(s) && s[r].d < s[m].d {
			m = r
		}
		if m == i {
			break
		}
		s[m], s[i] = s[i], s[m]
		i = m
	}
	*h = s
	return top
}

// maxHeap keeps the farthest candidate on top, to drop it first.
type maxHeap []cand

func (h *maxHeap) push(c cand) {
	*h = append(*h, c)
	s := *h
	for i := len(s) - 1; i > 0; {
		p := (i - 1) / 2
		if s[p].d >= s[i].d {
			break
		}
		s[p], s[i] = s[i], s[p]
		i = p
	}
}

func (h *maxHeap) pop() cand {
	s := *h
	top := s[0]
	last := len(s) - 1
	s[0] = s[last]
	s = s[:last]
	for i := 0; ; {
		l, r, m := 2*i+1, 2*i+2, i
		if l < len(s) && s[l].d > s[m].d {
			m = l
		}
		if r < len(s) && s[r].d > s[m].d {
			m = r
		}
		if m == i {
			break
		}
		s[m], s[i] = s[i], s[m]
		i = m
	}
	*h = s
	return top
}
