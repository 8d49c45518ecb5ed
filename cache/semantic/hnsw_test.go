package semantic

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
	"unsafe"
)

// unitVec returns a random unit vector.
func unitVec(r *rand.Rand, dim int) []float32 {
	v := make([]float32, dim)
	for i := range v {
		v[i] = float32(r.NormFloat64())
	}
	normalize(v)
	return v
}

// nearVec returns a unit vector at roughly angle noise from v.
func nearVec(r *rand.Rand, v []float32, noise float64) []float32 {
	out := make([]float32, len(v))
	for i := range v {
		out[i] = v[i] + float32(r.NormFloat64()*noise/math.Sqrt(float64(len(v))))
	}
	normalize(out)
	return out
}

func normalize(v []float32) {
	var s float64
	for _, x := range v {
		s += float64(x) * float64(x)
	}
	n := float32(1 / math.Sqrt(s))
	for i := range v {
		v[i] *= n
	}
}

// exactBest returns the index of the stored vector nearest to q.
func exactBest(data [][]float32, q []float32, live func(int) bool) int {
	best, bestS := -1, float32(math.Inf(-1))
	for i, v := range data {
		if live != nil && !live(i) {
			continue
		}
		if s := dot(q, v); s > bestS {
			best, bestS = i, s
		}
	}
	return best
}

func TestHNSWRecall(t *testing.T) {
	const n, dim = 5000, 64
	r := rand.New(rand.NewPCG(7, 7))
	data := make([][]float32, n)
	for i := range data {
		data[i] = unitVec(r, dim)
	}
	g := newHNSW(dim, 16, 100, 1)
	start := time.Now()
	for i, v := range data {
		if s := g.add(v); int(s) != i {
			t.Fatalf("slot %d for insert %d", s, i)
		}
	}
	t.Logf("build %v", time.Since(start))
	all := func(uint32) bool { return true }
	hits := 0
	const queries = 500
	for range queries {
		q := unitVec(r, dim)
		res := g.search(q, 64, 1, all)
		if len(res) > 0 && int(res[0].id) == exactBest(data, q, nil) {
			hits++
		}
	}
	if recall := float64(hits) / queries; recall < 0.9 {
		t.Fatalf("recall@1 = %.3f, want ≥ 0.9", recall)
	} else {
		t.Logf("recall@1 = %.3f", recall)
	}

	// Delete half, reinsert new vectors into the dead slots, and check
	// recall against the live set.
	live := make([]bool, n)
	for i := range live {
		live[i] = true
	}
	for i := 0; i < n; i += 2 {
		g.remove(uint32(i))
		live[i] = false
	}
	for range n / 4 {
		v := unitVec(r, dim)
		s := g.add(v)
		if live[s] {
			t.Fatalf("reused live slot %d", s)
		}
		data[s], live[s] = v, true
	}
	ok := func(id uint32) bool { return live[id] }
	hits = 0
	for range queries {
		q := unitVec(r, dim)
		res := g.search(q, 64, 64, ok)
		if len(res) > 0 && int(res[0].id) == exactBest(data, q, func(i int) bool { return live[i] }) {
			hits++
		}
		for _, c := range res {
			if !live[c.id] {
				t.Fatalf("search returned dead slot %d", c.id)
			}
		}
	}
	if recall := float64(hits) / queries; recall < 0.85 {
		t.Fatalf("after churn recall@1 = %.3f, want ≥ 0.85", recall)
	} else {
		t.Logf("after churn recall@1 = %.3f", recall)
	}
}

// TestHNSWAddBatch links a graph in parallel (addBatch, several workers)
// into a graph that already has points and dead slots, and checks that
// every slot is distinct, the dead slots were reused, and recall holds.
func TestHNSWAddBatch(t *testing.T) {
	const n, dim = 4000, 64
	r := rand.New(rand.NewPCG(8, 8))
	data := make([][]float32, 0, n)
	g := newHNSW(dim, 16, 100, 1)
	for range 500 { // a sequential start
		v := unitVec(r, dim)
		g.add(v)
		data = append(data, v)
	}
	live := make([]bool, 500, n)
	for i := range live {
		live[i] = true
	}
	for i := 0; i < 500; i += 5 {
		g.remove(uint32(i))
		live[i] = false
	}
	batch := make([][]float32, n-500)
	for i := range batch {
		batch[i] = unitVec(r, dim)
	}
	slots := g.addBatch(len(batch), func(i int, row []int8) { putRow(row, batch[i], dim) }, 4)
	seen := map[uint32]bool{}
	reused := 0
	for i, s := range slots {
		if seen[s] {
			t.Fatalf("slot %d twice", s)
		}
		seen[s] = true
		if int(s) < len(data) {
			if live[s] {
				t.Fatalf("batch took live slot %d", s)
			}
			reused++
			data[s], live[s] = batch[i], true
			continue
		}
		for len(data) <= int(s) {
			data = append(data, nil)
			live = append(live, false)
		}
		data[s], live[s] = batch[i], true
	}
	if reused != 100 {
		t.Errorf("reused %d dead slots, want 100", reused)
	}
	if g.live != n-100 {
		t.Errorf("live = %d, want %d", g.live, n-100)
	}
	ok := func(id uint32) bool { return live[id] }
	hits := 0
	const queries = 500
	for range queries {
		q := unitVec(r, dim)
		res := g.search(q, 64, 1, ok)
		if len(res) > 0 && int(res[0].id) == exactBest(data, q, func(i int) bool { return live[i] }) {
			hits++
		}
	}
	if recall := float64(hits) / queries; recall < 0.9 {
		t.Fatalf("recall@1 after a parallel batch = %.3f, want ≥ 0.9", recall)
	} else {
		t.Logf("recall@1 after a parallel batch = %.3f", recall)
	}
}

// TestEntrySize keeps an entry in a 64-byte allocation (a million points
// hold a million entries).
func TestEntrySize(t *testing.T) {
	if n := unsafe.Sizeof(entry{}); n > 64 {
		t.Errorf("entry is %d bytes, want at most 64", n)
	}
}

// TestHNSWAddBatchSelfSearch links small graphs in parallel, the shape of
// a partition turning into a graph (256 points, M=32), and checks every
// point finds itself: an insert linking in parallel must never see a node
// on a layer where that node has no links yet (see linkFrom).
func TestHNSWAddBatchSelfSearch(t *testing.T) {
	const n, dim = 256, 32
	all := func(uint32) bool { return true }
	misses := 0
	for seed := range uint64(10) {
		r := rand.New(rand.NewPCG(seed, 1))
		data := make([][]float32, n)
		for i := range data {
			data[i] = unitVec(r, dim)
		}
		g := newHNSW(dim, 32, 100, seed)
		slots := g.addBatch(n, func(i int, row []int8) { putRow(row, data[i], dim) }, 4)
		for i, v := range data {
			if res := g.search(v, 128, 1, all); len(res) != 1 || res[0].id != slots[i] {
				misses++
			}
		}
	}
	if misses > 2 {
		t.Errorf("%d of %d points did not find themselves", misses, 10*n)
	}
}
