// Package semantictest holds the conformance suite every semantic.Index
// must pass (RunIndex), vector helpers for tests of code that uses an
// index, and QdrantStandIn, an in-test gRPC stand-in for a Qdrant server
// (not Qdrant) for tests on machines where none can run. It is imported
// only from _test.go files.
package semantictest

import (
	"crypto/rand"
	"fmt"
	"math"
	mrand "math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/edgecache/edgecache/cache/semantic"
)

// Dim is the vector dimension RunIndex uses; newIndex must return indexes
// of this dimension.
const Dim = 32

// RunIndex runs the conformance suite against indexes made by newIndex,
// which is called once per subtest and must register its own cleanup
// (Close) on the t it is given. Subtests use filters unique to the run, so
// an index shared with other data (a real Qdrant collection) is fine.
//
// Writes must be visible to the next Search: an index that applies writes
// asynchronously must be configured to wait for them when run here.
func RunIndex(t *testing.T, newIndex func(t *testing.T) semantic.Index) {
	t.Helper()
	RunIndexWith(t, Options{}, newIndex)
}

// Options adapts RunIndexWith to an index's documented precision.
type Options struct {
	// ScoreTolerance is how far a returned score, and each component of a
	// returned vector, may be from the exact value: an index that stores
	// vectors quantised documents its own. If zero, 1e-4.
	ScoreTolerance float64
}

// RunIndexWith is RunIndex with options.
func RunIndexWith(t *testing.T, o Options, newIndex func(t *testing.T) semantic.Index) {
	t.Helper()
	s := suite{tol: o.ScoreTolerance}
	if s.tol == 0 {
		s.tol = 1e-4
	}
	nonce := rand.Text()[:10]
	tests := []struct {
		name string
		run  func(t *testing.T, ix semantic.Index, f semantic.Filter, s suite)
	}{
		{"RoundTrip", testRoundTrip},
		{"FilterIsolation", testFilterIsolation},
		{"MinScore", testMinScore},
		{"LimitAndOrder", testLimitAndOrder},
		{"ReplaceByKey", testReplaceByKey},
		{"Delete", testDelete},
		{"Expiry", testExpiry},
		{"WrongDimension", testWrongDimension},
		{"ManyPoints", testManyPoints},
		{"Concurrent", testConcurrent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ix := newIndex(t)
			f := semantic.Filter{
				Namespace: "conformance-" + nonce,
				Route:     t.Name(),
				Model:     "model-a",
				Context:   "ctx-" + nonce,
			}
			tc.run(t, ix, f, s)
		})
	}
}

// Axis returns the unit vector along axis i.
func Axis(i int) []float32 {
	v := make([]float32, Dim)
	v[i%Dim] = 1
	return v
}

// Blend returns cos·a + sin·b for orthonormal a and b: a unit vector whose
// cosine with a is exactly cos.
func Blend(cos float64, a, b []float32) []float32 {
	sin := math.Sqrt(1 - cos*cos)
	v := make([]float32, len(a))
	for i := range v {
		v[i] = float32(cos*float64(a[i]) + sin*float64(b[i]))
	}
	return v
}

// Random returns a random unit vector of dimension Dim.
func Random(r *mrand.Rand) []float32 {
	v := make([]float32, Dim)
	var s float64
	for i := range v {
		x := r.NormFloat64()
		v[i] = float32(x)
		s += x * x
	}
	n := 1 / math.Sqrt(s)
	for i := range v {
		v[i] = float32(float64(v[i]) * n)
	}
	return v
}

func point(key string, v []float32, f semantic.Filter, ttl time.Duration) semantic.Point {
	return semantic.Point{
		Key:       key,
		Vector:    v,
		Filter:    f,
		Text:      "text of " + key,
		ExpiresAt: time.Now().Add(ttl),
	}
}

func upsert(t *testing.T, ix semantic.Index, p semantic.Point) {
	t.Helper()
	if err := ix.Upsert(t.Context(), p); err != nil {
		t.Fatalf("Upsert(%q): %v", p.Key, err)
	}
}

func search(t *testing.T, ix semantic.Index, v []float32, f semantic.Filter, k int, minScore float32) []semantic.Match {
	t.Helper()
	ms, err := ix.Search(t.Context(), v, f, k, minScore)
	if err != nil {
		t.Fatalf("Search(k=%d, minScore=%v): %v", k, minScore, err)
	}
	return ms
}

func keys(ms []semantic.Match) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.Key
	}
	return out
}

// suite is what the subtests share besides the index.
type suite struct {
	tol float64 // Options.ScoreTolerance
}

func (s suite) near(a, b float32) bool { return math.Abs(float64(a-b)) < s.tol }

func testRoundTrip(t *testing.T, ix semantic.Index, f semantic.Filter, s suite) {
	want := point("k1", Blend(0.6, Axis(0), Axis(1)), f, time.Hour)
	upsert(t, ix, want)
	ms := search(t, ix, want.Vector, f, 5, 0.5)
	if len(ms) != 1 {
		t.Fatalf("Search found %v, want [k1]", keys(ms))
	}
	got := ms[0]
	if got.Key != want.Key || got.Text != want.Text || got.Filter != want.Filter {
		t.Errorf("match = {Key %q, Text %q, Filter %+v}, want {%q, %q, %+v}",
			got.Key, got.Text, got.Filter, want.Key, want.Text, want.Filter)
	}
	if !s.near(got.Score, 1) {
		t.Errorf("score = %v, want 1", got.Score)
	}
	if d := got.ExpiresAt.Sub(want.ExpiresAt); d < -time.Millisecond || d > time.Millisecond {
		t.Errorf("ExpiresAt = %v, want %v (±1ms)", got.ExpiresAt, want.ExpiresAt)
	}
	if got.Vector != nil {
		if len(got.Vector) != Dim {
			t.Fatalf("returned vector has %d dimensions", len(got.Vector))
		}
		for i := range got.Vector {
			if !s.near(got.Vector[i], want.Vector[i]) {
				t.Fatalf("returned vector[%d] = %v, want %v", i, got.Vector[i], want.Vector[i])
			}
		}
	}
	// A query at a known angle scores its cosine.
	ms = search(t, ix, Axis(0), f, 5, 0)
	if len(ms) != 1 || !s.near(ms[0].Score, 0.6) {
		t.Fatalf("Search(axis 0) = %v, want k1 scoring 0.6", ms)
	}
}

// testFilterIsolation stores the same vector under filters that differ from
// f in exactly one field: a search sees only its own filter's point.
func testFilterIsolation(t *testing.T, ix semantic.Index, f semantic.Filter, s suite) {
	v := Axis(3)
	variants := map[string]semantic.Filter{"same": f}
	g := f
	g.Namespace += "-other"
	variants["namespace"] = g
	g = f
	g.Route += "-other"
	variants["route"] = g
	g = f
	g.Model = "model-b"
	variants["model"] = g
	g = f
	g.Context += "-other"
	variants["context"] = g
	g = f
	g.Context = ""
	variants["empty-context"] = g
	for name, vf := range variants {
		upsert(t, ix, point("iso-"+name, v, vf, time.Hour))
	}
	for name, vf := range variants {
		ms := search(t, ix, v, vf, 10, 0)
		if got := keys(ms); !slices.Equal(got, []string{"iso-" + name}) {
			t.Errorf("Search in the %s filter found %v, want only [iso-%s]", name, got, name)
		}
	}
}

func testMinScore(t *testing.T, ix semantic.Index, f semantic.Filter, s suite) {
	q := Axis(0)
	for i, cos := range []float64{0.95, 0.8, 0.5, -0.3} {
		upsert(t, ix, point(fmt.Sprintf("s%d", i), Blend(cos, q, Axis(i+1)), f, time.Hour))
	}
	tests := []struct {
		min  float32
		want []string
	}{
		{0.99, nil},
		{0.9, []string{"s0"}},
		{0.75, []string{"s0", "s1"}},
		{0.4, []string{"s0", "s1", "s2"}},
		{-1, []string{"s0", "s1", "s2", "s3"}},
	}
	for _, tc := range tests {
		ms := search(t, ix, q, f, 10, tc.min)
		if got := keys(ms); !slices.Equal(got, tc.want) && !(len(got) == 0 && len(tc.want) == 0) {
			t.Errorf("minScore %v: found %v, want %v", tc.min, got, tc.want)
		}
		for _, m := range ms {
			if m.Score < tc.min {
				t.Errorf("minScore %v: %s scored %v", tc.min, m.Key, m.Score)
			}
		}
	}
}

func testLimitAndOrder(t *testing.T, ix semantic.Index, f semantic.Filter, s suite) {
	q := Axis(0)
	const n = 10
	var all []string
	for i := range n {
		cos := 0.99 - 0.05*float64(i)
		key := fmt.Sprintf("o%02d", i)
		all = append(all, key)
		upsert(t, ix, point(key, Blend(cos, q, Axis(1+i%(Dim-1))), f, time.Hour))
	}
	for _, k := range []int{1, 3, n, n + 5} {
		ms := search(t, ix, q, f, k, -1)
		want := all[:min(k, n)]
		if got := keys(ms); !slices.Equal(got, want) {
			t.Errorf("k=%d: found %v, want %v", k, got, want)
		}
		for i := 1; i < len(ms); i++ {
			if ms[i].Score > ms[i-1].Score {
				t.Errorf("k=%d: results not best first: %v then %v", k, ms[i-1].Score, ms[i].Score)
			}
		}
	}
	if ms := search(t, ix, q, f, 0, -1); len(ms) != 0 {
		t.Errorf("k=0: found %v, want none", keys(ms))
	}
}

func testReplaceByKey(t *testing.T, ix semantic.Index, f semantic.Filter, s suite) {
	v1, v2 := Axis(0), Blend(0.7, Axis(0), Axis(1))
	upsert(t, ix, point("r", v1, f, time.Hour))
	p := point("r", v2, f, time.Hour)
	p.Text = "replaced"
	upsert(t, ix, p)
	ms := search(t, ix, v1, f, 10, -1)
	if len(ms) != 1 || ms[0].Text != "replaced" || !s.near(ms[0].Score, 0.7) {
		t.Fatalf("after replace: %+v, want one match r with the new text scoring 0.7", ms)
	}

	// Replacing into another filter moves the point.
	g := f
	g.Context += "-moved"
	p = point("r", v1, g, time.Hour)
	upsert(t, ix, p)
	if ms := search(t, ix, v1, f, 10, -1); len(ms) != 0 {
		t.Errorf("old filter still finds %v after the key moved", keys(ms))
	}
	if ms := search(t, ix, v1, g, 10, -1); len(ms) != 1 || ms[0].Key != "r" || !s.near(ms[0].Score, 1) {
		t.Errorf("new filter finds %+v, want r scoring 1", ms)
	}
}

func testDelete(t *testing.T, ix semantic.Index, f semantic.Filter, s suite) {
	upsert(t, ix, point("d1", Axis(0), f, time.Hour))
	upsert(t, ix, point("d2", Axis(1), f, time.Hour))
	if err := ix.Delete(t.Context(), "d1"); err != nil {
		t.Fatalf("Delete(d1): %v", err)
	}
	if got := keys(search(t, ix, Axis(0), f, 10, -1)); !slices.Equal(got, []string{"d2"}) {
		t.Errorf("after Delete(d1) found %v, want [d2]", got)
	}
	for _, key := range []string{"d1", "never-stored"} {
		if err := ix.Delete(t.Context(), key); err != nil {
			t.Errorf("Delete(%s) of an absent key: %v", key, err)
		}
	}
}

func testExpiry(t *testing.T, ix semantic.Index, f semantic.Filter, s suite) {
	v := Axis(2)
	gone := point("expired", v, f, -time.Second)
	upsert(t, ix, gone)
	upsert(t, ix, point("short", Blend(0.99, v, Axis(3)), f, 400*time.Millisecond))
	upsert(t, ix, point("long", Blend(0.98, v, Axis(4)), f, time.Hour))

	deadline := time.Now().Add(15 * time.Second)
	for {
		got := keys(search(t, ix, v, f, 10, -1))
		if slices.Contains(got, "expired") {
			t.Fatalf("found a point stored already expired: %v", got)
		}
		if !slices.Contains(got, "long") {
			t.Fatalf("the long-lived point is missing: %v", got)
		}
		if !slices.Contains(got, "short") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("short-lived point still returned 15s after it expired: %v", got)
		}
		time.Sleep(50 * time.Millisecond) // polling a wall-clock expiry
	}
}

func testWrongDimension(t *testing.T, ix semantic.Index, f semantic.Filter, s suite) {
	p := point("w", make([]float32, Dim+1), f, time.Hour)
	p.Vector[0] = 1
	if err := ix.Upsert(t.Context(), p); err == nil {
		t.Error("Upsert of a vector of the wrong dimension succeeded")
	}
	if _, err := ix.Search(t.Context(), make([]float32, Dim-1), f, 1, 0); err == nil {
		t.Error("Search with a vector of the wrong dimension succeeded")
	}
}

// testManyPoints fills one filter past the size where indexes switch from
// exhaustive search to a graph, then checks every sampled stored vector
// finds itself first.
func testManyPoints(t *testing.T, ix semantic.Index, f semantic.Filter, s suite) {
	const n = 600
	r := mrand.New(mrand.NewPCG(3, 4))
	vs := make([][]float32, n)
	for i := range vs {
		vs[i] = Random(r)
		upsert(t, ix, point(fmt.Sprintf("m%03d", i), vs[i], f, time.Hour))
	}
	misses := 0
	for i := 0; i < n; i += 7 {
		ms := search(t, ix, vs[i], f, 1, 0.99)
		if len(ms) != 1 || ms[0].Key != fmt.Sprintf("m%03d", i) {
			misses++
		}
	}
	if misses > 1 {
		t.Errorf("%d of %d stored vectors did not find themselves first", misses, (n+6)/7)
	}
	for i := 0; i < n; i += 2 {
		if err := ix.Delete(t.Context(), fmt.Sprintf("m%03d", i)); err != nil {
			t.Fatalf("Delete: %v", err)
		}
	}
	for i := 0; i < n; i += 5 {
		ms := search(t, ix, vs[i], f, 1, 0.99)
		if i%2 == 0 && len(ms) > 0 {
			t.Errorf("deleted m%03d still found as %v", i, keys(ms))
		}
	}
}

func testConcurrent(t *testing.T, ix semantic.Index, f semantic.Filter, s suite) {
	const writers, perWriter = 4, 40
	var wg sync.WaitGroup
	errs := make(chan error, 2*writers*perWriter)
	for w := range writers {
		wg.Go(func() {
			r := mrand.New(mrand.NewPCG(uint64(w), 9))
			for i := range perWriter {
				p := point(fmt.Sprintf("c%d-%d", w, i), Random(r), f, time.Hour)
				if err := ix.Upsert(t.Context(), p); err != nil {
					errs <- err
				}
			}
		})
		wg.Go(func() {
			r := mrand.New(mrand.NewPCG(uint64(w), 10))
			for range perWriter {
				if _, err := ix.Search(t.Context(), Random(r), f, 3, 0); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	r := mrand.New(mrand.NewPCG(1, 9)) // writer 1's sequence
	for i := range perWriter {
		key := fmt.Sprintf("c1-%d", i)
		ms := search(t, ix, Random(r), f, 1, 0.99)
		if len(ms) != 1 || ms[0].Key != key {
			t.Errorf("after concurrent writes, %s not found: %v", key, keys(ms))
		}
	}
}
