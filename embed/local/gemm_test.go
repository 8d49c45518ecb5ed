package local

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestMulAddKernels checks every kernel this machine can run against a plain
// triple loop, for every row-tail size.
func TestMulAddKernels(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	const k, n = 96, 64
	w := make([]float32, k*n)
	for i := range w {
		w[i] = rng.Float32()*2 - 1
	}
	m, err := packMatrix(w, k, n)
	if err != nil {
		t.Fatal(err)
	}
	defer func(k int) { useKernel = k }(useKernel)
	for kern := kernelGeneric; kern <= bestKernel; kern++ {
		useKernel = kern
		for rows := 0; rows <= 31; rows++ {
			const lda, ldc = k + 3, n + 5
			a := make([]float32, rows*lda)
			c := make([]float32, rows*ldc)
			want := make([]float64, rows*ldc)
			for i := range a {
				a[i] = rng.Float32()*2 - 1
			}
			for i := range c {
				c[i] = rng.Float32()
				want[i] = float64(c[i])
			}
			for i := 0; i < rows; i++ {
				for j := 0; j < n; j++ {
					for p := 0; p < k; p++ {
						want[i*ldc+j] += float64(a[i*lda+p]) * float64(w[p*n+j])
					}
				}
			}
			relu := rows%2 == 1
			if relu {
				for i := range want {
					want[i] = max(want[i], 0)
				}
			}
			m.mulAdd(c, ldc, a, lda, rows, make([]float32, 2*k), relu)
			for i := range c {
				if math.Abs(float64(c[i])-want[i]) > 1e-4 {
					t.Fatalf("kernel %s, rows %d: c[%d] = %v, want %v", kernelName(kern), rows, i, c[i], want[i])
				}
			}
		}
	}
}
