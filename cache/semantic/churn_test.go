package semantic_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/edgecache/edgecache/cache/semantic"
	"github.com/edgecache/edgecache/cache/semantic/semantictest"
)

// TestEmbeddedChurnAgainstModel drives an Embedded index through random
// upserts (new keys, replacements, moves between partitions), deletes,
// clock jumps and sweeps, with partitions crossing the exact/graph
// threshold both ways and the capacity bound evicting, and checks every
// search against a plain map: results must be live, in the right
// partition, scored correctly, best first, and (nearly always) the true
// top k. Midway and at the end, a snapshot must restore the same state.
func TestEmbeddedChurnAgainstModel(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	clk := &clock{now: time.Unix(1_700_000_000, 0)}
	const capacity = 150
	path := filepath.Join(t.TempDir(), "churn.snap")
	cfg := semantic.EmbeddedConfig{
		Dim: semantictest.Dim, MaxPoints: capacity, ExactBelow: 24, M: 6,
		EfConstruction: 32, EfSearch: 48, Now: clk.Now, SnapshotPath: path, SnapshotInterval: -1,
	}
	e := newEmbedded(t, cfg)
	ctx := t.Context()

	type rec struct {
		p   semantic.Point
		seq int
	}
	model := map[string]rec{}
	seq := 0
	filters := []semantic.Filter{filterN(0), filterN(1), filterN(2), {Namespace: "other"}}

	liveIn := func(f semantic.Filter) []rec {
		var out []rec
		for _, rc := range model {
			if rc.p.Filter == f && rc.p.ExpiresAt.After(clk.Now()) {
				out = append(out, rc)
			}
		}
		return out
	}
	dot := func(a, b []float32) float64 {
		var s float64
		for i := range a {
			s += float64(a[i]) * float64(b[i])
		}
		return s
	}
	evictIfFull := func() {
		// Mirror the policy: soonest expiry first, then oldest insert.
		for len(model) >= capacity {
			var victim string
			for k, rc := range model {
				v := model[victim]
				if victim == "" || rc.p.ExpiresAt.Before(v.p.ExpiresAt) ||
					(rc.p.ExpiresAt.Equal(v.p.ExpiresAt) && rc.seq < v.seq) {
					victim = k
				}
			}
			delete(model, victim)
		}
	}
	searches, misses := 0, 0
	check := func(ix *semantic.Embedded, step int) {
		t.Helper()
		for _, f := range filters {
			q := semantictest.Random(r)
			k := 1 + r.IntN(5)
			ms, err := ix.Search(ctx, q, f, k, -1)
			if err != nil {
				t.Fatal(err)
			}
			live := liveIn(f)
			slices.SortFunc(live, func(a, b rec) int {
				return -cmpFloat(dot(q, a.p.Vector), dot(q, b.p.Vector))
			})
			for i, m := range ms {
				rc, ok := model[m.Key]
				if !ok || rc.p.Filter != f || !rc.p.ExpiresAt.After(clk.Now()) {
					t.Fatalf("step %d: search returned %s, which is not live in %v", step, m.Key, f)
				}
				if want := dot(q, rc.p.Vector); math.Abs(want-float64(m.Score)) > embeddedTolerance {
					t.Fatalf("step %d: %s scored %v, want %v", step, m.Key, m.Score, want)
				}
				if i > 0 && ms[i-1].Score < m.Score {
					t.Fatalf("step %d: results not best first", step)
				}
			}
			if want := min(k, len(live)); len(ms) != want {
				t.Fatalf("step %d: %d results, want %d (live %d)", step, len(ms), want, len(live))
			}
			searches++
			if len(ms) > 0 && ms[0].Key != live[0].p.Key {
				misses++
			}
		}
	}

	for step := range 6000 {
		switch op := r.IntN(100); {
		case op < 60: // upsert: a new key, or an existing one (maybe moving)
			key := fmt.Sprintf("k%d", r.IntN(900))
			p := semantic.Point{
				Key: key, Vector: semantictest.Random(r), Filter: filters[r.IntN(len(filters))],
				Text: fmt.Sprint(step), ExpiresAt: clk.Now().Add(time.Duration(1+r.IntN(3600)) * time.Second),
			}
			if err := e.Upsert(ctx, p); err != nil {
				t.Fatal(err)
			}
			delete(model, key)
			evictIfFull()
			seq++
			model[key] = rec{p, seq}
		case op < 75:
			key := fmt.Sprintf("k%d", r.IntN(900))
			if err := e.Delete(ctx, key); err != nil {
				t.Fatal(err)
			}
			delete(model, key)
		case op < 80:
			clk.Add(time.Duration(r.IntN(20)) * time.Second)
		case op < 82:
			e.Sweep()
			for k, rc := range model {
				if !rc.p.ExpiresAt.After(clk.Now()) {
					delete(model, k)
				}
			}
		default:
			check(e, step)
		}
		if step == 3000 || step == 5999 {
			// Expired points may still sit in the model, unswept; the
			// snapshot drops them on load, so sweep both first.
			e.Sweep()
			for k, rc := range model {
				if !rc.p.ExpiresAt.After(clk.Now()) {
					delete(model, k)
				}
			}
			if err := e.Snapshot(); err != nil {
				t.Fatal(err)
			}
			restored := newEmbedded(t, cfg)
			if got := restored.Stats().Points; got != len(model) {
				t.Fatalf("step %d: restored %d points, model has %d", step, got, len(model))
			}
			for key, rc := range model {
				ms, err := restored.Search(ctx, rc.p.Vector, rc.p.Filter, 1, 0.9999)
				if err != nil {
					t.Fatal(err)
				}
				if len(ms) != 1 || ms[0].Key != key || ms[0].Text != rc.p.Text {
					t.Fatalf("step %d: after restore %s is %v", step, key, ms)
				}
			}
			check(restored, step)
		}
	}
	st := e.Stats()
	t.Logf("%d searches, %d top-1 misses; stats %+v", searches, misses, st)
	if st.Evictions == 0 || st.Graphs == 0 {
		t.Errorf("the run never evicted or never built a graph: %+v", st)
	}
	if misses*50 > searches {
		t.Errorf("top-1 wrong in %d of %d searches, want under 2%%", misses, searches)
	}
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// TestEmbeddedConcurrentGraphWrites hammers one graph partition with
// parallel inserts (planned under the read lock, committed under the write
// lock), deletes that free slots for reuse, and searches; afterwards every
// surviving point must find itself and no deleted one may be found.
func TestEmbeddedConcurrentGraphWrites(t *testing.T) {
	e := newEmbedded(t, semantic.EmbeddedConfig{ExactBelow: 16, M: 8, EfConstruction: 48})
	ctx := t.Context()
	f := filterN(0)
	const writers, each = 4, 300
	vecs := make([][][]float32, writers)
	var wg sync.WaitGroup
	for w := range writers {
		r := rand.New(rand.NewPCG(uint64(w), 77))
		vecs[w] = make([][]float32, each)
		for i := range vecs[w] {
			vecs[w][i] = semantictest.Random(r)
		}
		wg.Go(func() {
			for i, v := range vecs[w] {
				p := semantic.Point{Key: fmt.Sprintf("w%d-%d", w, i), Vector: v, Filter: f, ExpiresAt: time.Now().Add(time.Hour)}
				if err := e.Upsert(ctx, p); err != nil {
					t.Error(err)
					return
				}
				if i%3 == 2 { // delete an earlier one: its slot gets reused
					if err := e.Delete(ctx, fmt.Sprintf("w%d-%d", w, i-2)); err != nil {
						t.Error(err)
						return
					}
				}
			}
		})
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 78))
			for range each {
				if _, err := e.Search(ctx, semantictest.Random(r), f, 3, 0); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	missing := 0
	for w := range writers {
		for i, v := range vecs[w] {
			ms, err := e.Search(ctx, v, f, 1, 0.9999)
			if err != nil {
				t.Fatal(err)
			}
			deleted := i%3 == 0 && i+2 < each
			switch {
			case deleted && len(ms) > 0:
				t.Errorf("deleted w%d-%d found", w, i)
			case !deleted && (len(ms) != 1 || ms[0].Key != fmt.Sprintf("w%d-%d", w, i)):
				missing++
			}
		}
	}
	if st := e.Stats(); st.Graphs != 1 || missing > 2 {
		t.Errorf("%d surviving points did not find themselves; stats %+v", missing, st)
	}
}
