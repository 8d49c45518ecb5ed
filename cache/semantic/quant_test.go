package semantic

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"testing"
)

// int8Score is what the index returns for query q against stored v.
func int8Score(q []float32, v []float32) float32 {
	x := make([]int8, len(v))
	s := quantize(x, v)
	var qq query
	qq.set(q)
	return float32(dotI8(qq.v, x)) * qq.scale * s
}

// cosError measures |int8 score − float cosine| over pairs: all of them,
// and those whose cosine is at least 0.8 (where the tier's thresholds
// are). It returns the 99th percentile and the maximum of each.
func cosError(pairs [][2][]float32) (p99, maxAll, p99Near, maxNear float64, near int) {
	var all, hi []float64
	for _, p := range pairs {
		want := float64(dot(p[0], p[1]))
		e := math.Abs(float64(int8Score(p[0], p[1])) - want)
		all = append(all, e)
		if want >= 0.8 {
			hi = append(hi, e)
		}
	}
	slices.Sort(all)
	slices.Sort(hi)
	q := func(s []float64, p float64) float64 {
		if len(s) == 0 {
			return 0
		}
		return s[min(len(s)-1, int(p*float64(len(s))))]
	}
	return q(all, 0.99), q(all, 1), q(hi, 0.99), q(hi, 1), len(hi)
}

// TestInt8CosineError bounds the score error of int8 storage: the index
// promises a score within scoreTolerance of the float cosine. Synthetic
// data always; real sentence embeddings too when EDGECACHE_EMB_FILE names
// a file of 512-d float32 vectors (little-endian; consecutive vectors are
// scored as pairs, and each against a random other). On USE-lite vectors
// of 5,000 QQP question pairs (qqp-dev.tsv, 2026-12-07): pairs p99
// 0.00029, max 0.00052; pairs with cosine ≥ 0.8 p99 0.00018, max 0.00029;
// random pairs p99 0.00037, max 0.00056. (With the plain scale max|v|/127
// instead of the norm-preserving one: max 0.00058 all pairs, 0.00056 at
// cosine ≥ 0.8, twice the error where the thresholds are.)
func TestInt8CosineError(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 9))
	check := func(name string, pairs [][2][]float32, tol float64) {
		t.Helper()
		p99, mx, p99n, mxn, n := cosError(pairs)
		t.Logf("%s: %d pairs: |error| p99 %.5f max %.5f; %d with cosine ≥ 0.8: p99 %.5f max %.5f",
			name, len(pairs), p99, mx, n, p99n, mxn)
		if mx > tol {
			t.Errorf("%s: max error %.5f over the tolerance %v", name, mx, tol)
		}
	}
	for _, dim := range []int{32, 128, 512} {
		var pairs [][2][]float32
		for range 3000 {
			v := unitVec(r, dim)
			pairs = append(pairs, [2][]float32{nearVec(r, v, 0.3+r.Float64()), v})
		}
		tol := scoreTolerance
		if dim < 128 {
			tol = scoreToleranceLowDim
		}
		check(fmt.Sprintf("synthetic %d-d", dim), pairs, tol)
	}
	path := os.Getenv("EDGECACHE_EMB_FILE")
	if path == "" {
		return
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	const dim = 512
	var vecs [][]float32
	for off := 0; off+4*dim <= len(data); off += 4 * dim {
		v := make([]float32, dim)
		for i := range v {
			v[i] = math.Float32frombits(binary.LittleEndian.Uint32(data[off+4*i:]))
		}
		vecs = append(vecs, v)
	}
	var pairs, random [][2][]float32
	for i := 0; i+1 < len(vecs); i += 2 {
		pairs = append(pairs, [2][]float32{vecs[i], vecs[i+1]})
		random = append(random, [2][]float32{vecs[i], vecs[r.IntN(len(vecs))]})
	}
	check("embeddings, pairs", pairs, scoreTolerance)
	check("embeddings, random", random, scoreTolerance)
}
