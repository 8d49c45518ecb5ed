package local

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestQuantizeRows checks the quantiser against its definition, and the
// assembly quantiser against the portable one exactly.
func TestQuantizeRows(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	const n, lda = 96, 101
	for _, signed := range []bool{true, false} {
		for rows := 0; rows <= 17; rows++ {
			a := make([]float32, rows*lda)
			for i := range a {
				a[i] = float32(rng.NormFloat64())
				if !signed {
					a[i] = max(a[i], 0)
				}
			}
			if rows == 3 { // an all-zero row
				clear(a[2*lda : 2*lda+n])
			}
			var got, want qrows
			for _, q := range []*qrows{&got, &want} {
				q.data, q.scale = make([]uint8, rows*n), make([]float32, rows)
			}
			quantizeRows(&got, a, lda, rows, n, signed)
			quantizeRowsGeneric(&qrows{k: n, rows: rows, data: want.data, scale: want.scale, signed: signed}, a, lda)
			for r := 0; r < rows; r++ {
				if got.scale[r] != want.scale[r] {
					t.Fatalf("signed %v rows %d: scale[%d] = %v, want %v", signed, rows, r, got.scale[r], want.scale[r])
				}
				z := 0.0
				if signed {
					z = 128
				}
				for i := 0; i < n; i++ {
					g := got.data[r*n+i]
					if g != want.data[r*n+i] {
						t.Fatalf("signed %v rows %d: data[%d][%d] = %d, want %d", signed, rows, r, i, g, want.data[r*n+i])
					}
					// Dequantised, every value is within half a step.
					if d := math.Abs((float64(g)-z)*float64(got.scale[r]) - float64(a[r*lda+i])); d > 0.5001*float64(got.scale[r]) {
						t.Fatalf("signed %v: row %d value %d off by %v (scale %v)", signed, r, i, d, got.scale[r])
					}
				}
			}
		}
	}
}

// TestMulAddQKernels checks the VNNI kernels against the portable int8
// kernel (exactly, every row count up to maxRows, both zero points, with and
// without ReLU) and the int8 product against the float one.
func TestMulAddQKernels(t *testing.T) {
	if !hasVNNI {
		t.Log("no AVX-512 VNNI: checking the portable kernel only")
	}
	rng := rand.New(rand.NewPCG(1, 2))
	const k, n = 128, 64
	w := make([]float32, k*n)
	for i := range w {
		w[i] = float32(rng.NormFloat64()) * 0.1
	}
	qm, err := quantizeMatrix(w, k, n)
	if err != nil {
		t.Fatal(err)
	}
	for p := 0; p < k; p++ {
		for j := 0; j < n; j++ {
			if d := math.Abs(float64(qm.at(p, j))*float64(qm.scale[j]) - float64(w[p*n+j])); d > 0.5001*float64(qm.scale[j]) {
				t.Fatalf("w[%d][%d] quantised off by %v", p, j, d)
			}
		}
	}
	defer func(v bool) { useVNNI = v }(useVNNI)
	for _, signed := range []bool{true, false} {
		for rows := 0; rows <= maxRows; rows++ {
			if rows > 40 && rows%37 != 0 && rows != maxRows {
				continue
			}
			const lda, ldc = k + 3, n + 5
			a := make([]float32, rows*lda)
			for i := range a {
				a[i] = float32(rng.NormFloat64())
				if !signed {
					a[i] = max(a[i], 0)
				}
			}
			c0 := make([]float32, rows*ldc)
			for i := range c0 {
				c0[i] = float32(rng.NormFloat64())
			}
			relu := rows%2 == 1
			q := qrows{data: make([]uint8, rows*k), scale: make([]float32, rows)}
			quantizeRows(&q, a, lda, rows, k, signed)
			var got [2][]float32
			for v, vnni := range []bool{false, hasVNNI} {
				useVNNI = vnni
				got[v] = append([]float32(nil), c0...)
				qm.mulAdd(got[v], ldc, &q, relu)
			}
			for i := range got[0] {
				if got[0][i] != got[1][i] {
					t.Fatalf("signed %v, rows %d: VNNI c[%d] = %v, portable %v", signed, rows, i, got[1][i], got[0][i])
				}
			}
			// Against the float product: within a few quantisation steps.
			for i := 0; i < rows; i++ {
				for j := 0; j < n; j++ {
					want := float64(c0[i*ldc+j])
					var mag float64
					for p := 0; p < k; p++ {
						want += float64(a[i*lda+p]) * float64(w[p*n+j])
						mag += math.Abs(float64(w[p*n+j]))
					}
					if relu {
						want = max(want, 0)
					}
					tol := 0.02 * mag
					if d := math.Abs(float64(got[0][i*ldc+j]) - want); d > tol {
						t.Fatalf("signed %v, rows %d: c[%d][%d] = %v, float %v", signed, rows, i, j, got[0][i*ldc+j], want)
					}
				}
			}
		}
	}
}

// TestSoftmaxAVX512 checks the assembly softmax of the int8 path against
// math.Exp.
func TestSoftmaxAVX512(t *testing.T) {
	if !hasVNNI {
		t.Skip("no AVX-512 VNNI")
	}
	rng := rand.New(rand.NewPCG(5, 6))
	for _, n := range []int{16, 32, 64, 128} {
		for _, spread := range []float64{0.1, 3, 30, 300} {
			x := make([]float32, n)
			for i := range x {
				x[i] = float32(rng.NormFloat64() * spread)
			}
			L := n - rng.IntN(16)
			for i := L; i < n; i++ {
				x[i] = float32(math.Inf(-1))
			}
			const scale = 0.125
			want := make([]float64, n)
			mx := math.Inf(-1)
			for _, v := range x[:L] {
				mx = max(mx, float64(v*scale))
			}
			var sum float64
			for i, v := range x[:L] {
				want[i] = math.Exp(float64(v*scale) - mx)
				sum += want[i]
			}
			softmaxAVX512(&x[0], n, scale)
			for i := range x {
				w := want[i] / sum
				if d := math.Abs(float64(x[i]) - w); d > 1e-6*w+1e-30 && d > 2e-7 {
					t.Fatalf("n %d spread %v: softmax[%d] = %v, want %v", n, spread, i, x[i], w)
				}
			}
		}
	}
}
