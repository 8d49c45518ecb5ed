package semantic

import (
	"math"
	"math/rand/v2"
	"slices"
	"sync"
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
// Storage is slot-indexed and chunked (1,024 slots per chunk) so that
// growth never copies more than one chunk. It is not safe for concurrent use: the
// owning partition's lock serialises writers, and searches (which only
// read) may run in parallel under a read lock.
type hnsw struct {
	dim   int
	m, m0 int // maximum links per node on layers ≥ 1, and on layer 0
	efC   int // beam width while inserting
	ml    float64
	rngMu sync.Mutex // plans draw levels under the read lock
	rng   *rand.Rand

	vecs   [][]float32 // chunked: slot → dim floats
	links0 [][]uint32  // chunked: slot → [count, id × m0]
	upper  [][]uint32  // slot → nil, or levels 1..level each [count, id × m]
	levels []uint8
	ver    []uint32 // bumped when a dead slot is reused; see plan
	dead   []bool
	free   []uint32 // dead slots, reused by later inserts
	n      int      // slots in use, live or dead
	live   int

	entry    uint32
	maxLevel int // -1 while the graph is empty

	scratch sync.Pool // *scratch, sized to the graph
}

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
		m:        m,
		m0:       2 * m,
		efC:      max(efC, m),
		ml:       1 / math.Log(float64(m)),
		rng:      rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15)),
		maxLevel: -1,
	}
}

func (g *hnsw) vec(s uint32) []float32 {
	c := g.vecs[s>>chunkShift]
	off := int(s&chunkMask) * g.dim
	return c[off : off+g.dim : off+g.dim]
}

// block returns slot s's link block on layer l: element 0 is the count,
// then room for the maximum number of links.
func (g *hnsw) block(s uint32, l int) []uint32 {
	if l == 0 {
		c := g.links0[s>>chunkShift]
		off := int(s&chunkMask) * (g.m0 + 1)
		return c[off : off+g.m0+1 : off+g.m0+1]
	}
	off := (l - 1) * (g.m + 1)
	return g.upper[s][off : off+g.m+1 : off+g.m+1]
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
// grows with its slots (append doubling, then 1.25×) up to chunkSlots, so
// a small graph costs its size, not a whole chunk; full chunks are never
// copied again.
func (g *hnsw) newSlot(level int) uint32 {
	s := uint32(g.n)
	c := g.n >> chunkShift
	if c == len(g.vecs) {
		g.vecs = append(g.vecs, nil)
		g.links0 = append(g.links0, nil)
	}
	g.vecs[c] = append(g.vecs[c], make([]float32, g.dim)...)
	g.links0[c] = append(g.links0[c], make([]uint32, g.m0+1)...)
	g.n++
	g.levels = append(g.levels, uint8(level))
	g.ver = append(g.ver, 0)
	g.dead = append(g.dead, false)
	var up []uint32
	if level > 0 {
		up = make([]uint32, level*(g.m+1))
	}
	g.upper = append(g.upper, up)
	return s
}

// add inserts v (copied) and returns its slot, reusing a dead slot when
// there is one.
func (g *hnsw) add(v []float32) uint32 {
	s, level := g.place(v, g.randomLevel())
	g.link(s, level)
	return s
}

// place stores v in a dead slot (detached first; it keeps its level) or a
// new slot of the given level, unlinked, and returns the slot and level.
func (g *hnsw) place(v []float32, level int) (uint32, int) {
	s, ok := g.takeFree()
	if ok {
		g.detach(s)
		g.ver[s]++
		g.dead[s] = false
		level = int(g.levels[s])
	} else {
		s = g.newSlot(level)
	}
	copy(g.vec(s), v)
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
	layers   [][]cand   // layers[l]: candidates on layer l, nearest first
	vers     [][]uint32 // slot versions of layers[l], to detect reuse
}

func (g *hnsw) plan(v []float32) *insertPlan {
	pl := &insertPlan{level: g.randomLevel(), maxLevel: g.maxLevel, entry: g.entry}
	if g.maxLevel < 0 {
		return pl
	}
	sc := g.getScratch()
	defer g.scratch.Put(sc)
	ep := cand{g.entry, -dot(v, g.vec(g.entry))}
	for l := g.maxLevel; l > pl.level; l-- {
		ep = g.greedy(v, ep, l)
	}
	eps := []cand{ep}
	notDead := func(id uint32) bool { return !g.dead[id] }
	top := min(pl.level, g.maxLevel)
	pl.layers = make([][]cand, top+1)
	pl.vers = make([][]uint32, top+1)
	for l := top; l >= 0; l-- {
		w := g.searchLayer(v, eps, g.efC, l, sc, notDead, 0)
		sortCands(w)
		pl.layers[l] = slices.Clone(w)
		pl.vers[l] = make([]uint32, len(w))
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
	sel = g.selectNeighbors(w, g.m, sel)
	g.setNeighbors(s, l, sel)
	for _, n := range sel {
		g.addLink(n, s, l)
	}
	return sel
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
			vn := g.vec(n)
			for _, c := range out {
				if c == n || c == s || g.dead[c] || slices.Contains(nb, c) {
					continue
				}
				if d := -dot(vn, g.vec(c)); d < bestD {
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
	q := g.vec(s)
	sc := g.getScratch()
	defer g.scratch.Put(sc)

	ep := cand{g.entry, -dot(q, g.vec(g.entry))}
	for l := g.maxLevel; l > level; l-- {
		ep = g.greedy(q, ep, l)
	}
	eps := []cand{ep}
	notSelfOrDead := func(id uint32) bool { return id != s && !g.dead[id] }
	var sel []uint32
	for l := min(level, g.maxLevel); l >= 0; l-- {
		w := g.searchLayer(q, eps, g.efC, l, sc, notSelfOrDead, 0)
		if len(w) == 0 {
			// Nothing live is reachable: link to dead nodes rather than
			// leave s unreachable; a later prune drops them.
			w = g.searchLayer(q, eps, g.efC, l, sc, func(id uint32) bool { return id != s }, 0)
		}
		sortCands(w)
		sel = g.connect(s, l, w, sel[:0])
		if len(w) > 0 {
			eps = append(eps[:0], w...) // w is scratch, reused by the next layer
		}
	}
	if level > g.maxLevel {
		g.entry, g.maxLevel = s, level
	}
}

// addLink adds the link n → s on layer l, pruning n's links with the
// heuristic when they overflow (dead links are dropped first).
func (g *hnsw) addLink(n, s uint32, l int) {
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
	vn := g.vec(n)
	cs := make([]cand, 0, cnt+1)
	for _, x := range nb {
		if !g.dead[x] {
			cs = append(cs, cand{x, -dot(vn, g.vec(x))})
		}
	}
	cs = append(cs, cand{s, -dot(vn, g.vec(s))})
	if len(cs) <= limit {
		ids := make([]uint32, len(cs))
		for i, c := range cs {
			ids[i] = c.id
		}
		g.setNeighbors(n, l, ids)
		return
	}
	sortCands(cs)
	g.setNeighbors(n, l, g.selectNeighbors(cs, limit, make([]uint32, 0, limit)))
}

// selectNeighbors is the diversity heuristic: walking candidates nearest
// first, keep one only if it is nearer to the base than to every neighbour
// kept so far. cs must be sorted nearest first.
func (g *hnsw) selectNeighbors(cs []cand, m int, out []uint32) []uint32 {
	for _, c := range cs {
		if len(out) >= m {
			break
		}
		vc := g.vec(c.id)
		good := true
		for _, r := range out {
			if -dot(vc, g.vec(r)) < c.d {
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
func (g *hnsw) greedy(q []float32, ep cand, l int) cand {
	for changed := true; changed; {
		changed = false
		for _, n := range g.neighbors(ep.id, l) {
			if d := -dot(q, g.vec(n)); d < ep.d {
				ep, changed = cand{n, d}, true
			}
		}
	}
	return ep
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
func (g *hnsw) searchLayer(q []float32, eps []cand, ef, l int, sc *scratch, ok func(uint32) bool, maxExpand int) []cand {
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
		for _, n := range g.neighbors(c.id, l) {
			if !sc.visit(n) {
				ids = append(ids, n)
			}
		}
		sc.ids = ids
		for i := 0; i < len(ids) && i < 2; i++ {
			prefetch(g.vec(ids[i]))
		}
		for i, n := range ids {
			if i+2 < len(ids) {
				prefetch(g.vec(ids[i+2]))
			}
			d := -dot(q, g.vec(n))
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
func (g *hnsw) search(q []float32, ef, k int, ok func(uint32) bool) []cand {
	if g.maxLevel < 0 {
		return nil
	}
	sc := g.getScratch()
	defer g.scratch.Put(sc)
	ep := cand{g.entry, -dot(q, g.vec(g.entry))}
	for l := g.maxLevel; l > 0; l-- {
		ep = g.greedy(q, ep, l)
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
