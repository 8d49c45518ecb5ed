package local

import (
	"fmt"
	"math"
)

// The int8 path: weights are quantised once at Load, symmetrically per
// output column (w ≈ sw[j]·q, q in [−127, 127]); activations are quantised
// per row just before each matmul (a ≈ sa[i]·(u − z), u a byte). A row with
// negative values uses the zero point z = 128 (u = round(a/sa) + 128, sa =
// max|a|/127); a row known to be ≥ 0 (the ReLU output fed to the second
// feed-forward matmul) uses z = 0 and the full byte (sa = max a/255). The
// kernels accumulate u·q in int32 (exact: at most 255·127·1536 < 2³¹),
// starting from −z·Σₖq[k][j] to cancel the zero point, and then add
// float32(acc)·(sa[i]·sw[j]) to c.

// qmatrix is a K×N weight matrix quantised to int8 and packed for the VNNI
// kernels: column panels of panelWidth columns as in matrix, each panel a run
// of K/4 blocks of 64 bytes, a block holding 4 consecutive values of k for
// each of the 16 columns. Element (p, j) lives at
// data[(j/16)·K·16 + (p/4)·64 + (j%16)·4 + p%4].
type qmatrix struct {
	k, n  int
	data  []int8
	scale []float32 // n: the column scales sw
	corr  []int32   // n: −128·Σₖ q[k][j], the correction for zero point 128
}

// quantizeMatrix quantises the row-major K×N matrix w.
func quantizeMatrix(w []float32, k, n int) (qmatrix, error) {
	if len(w) != k*n || k <= 0 || n <= 0 || k%4 != 0 || n%(2*panelWidth) != 0 {
		return qmatrix{}, fmt.Errorf("model: cannot quantise a %d×%d matrix from %d values", k, n, len(w))
	}
	m := qmatrix{k: k, n: n, data: make([]int8, k*n), scale: make([]float32, n), corr: make([]int32, n)}
	for j := 0; j < n; j++ {
		var mx float32
		for p := 0; p < k; p++ {
			mx = max(mx, float32(math.Abs(float64(w[p*n+j]))))
		}
		var inv float32
		if mx > 0 {
			m.scale[j] = mx / 127
			inv = 127 / mx
		}
		var sum int32
		for p := 0; p < k; p++ {
			q := int8(max(-127, min(127, math.RoundToEven(float64(w[p*n+j]*inv)))))
			m.data[(j/panelWidth)*k*panelWidth+(p/4)*64+(j%panelWidth)*4+p%4] = q
			sum += int32(q)
		}
		m.corr[j] = -128 * sum
	}
	return m, nil
}

// at returns element (p, j).
func (w *qmatrix) at(p, j int) int8 {
	return w.data[(j/panelWidth)*w.k*panelWidth+(p/4)*64+(j%panelWidth)*4+p%4]
}

// qrows is a block of quantised activation rows: rows × k bytes (row stride
// k), their scales and zero point.
type qrows struct {
	k, rows int
	data    []uint8
	scale   []float32
	signed  bool // zero point 128 (else 0: every value was ≥ 0)
}

// quantizeRows quantises rows×n values of a (row stride lda) into q, whose
// data must hold rows·n bytes and scale rows values. With signed false the
// values must be ≥ 0.
func quantizeRows(q *qrows, a []float32, lda, rows, n int, signed bool) {
	if rows > maxRows || n%16 != 0 || len(a) < (rows-1)*lda+n || len(q.data) < rows*n || len(q.scale) < rows {
		panic("local: quantise operands too short")
	}
	q.k, q.rows, q.signed = n, rows, signed
	quantizeRowsKernel(q, a, lda)
}

// rowScale returns the scale and its inverse for a row whose largest
// magnitude is mx.
func rowScale(mx float32, signed bool) (scale, inv float32) {
	if mx == 0 || mx != mx {
		return 0, 0
	}
	if signed {
		return mx / 127, 127 / mx
	}
	return mx / 255, 255 / mx
}

// quantizeRowsGeneric is the portable quantiser and the reference of the
// assembly one.
func quantizeRowsGeneric(q *qrows, a []float32, lda int) {
	n := q.k
	for r := 0; r < q.rows; r++ {
		x := a[r*lda : r*lda+n]
		var mx float32
		for _, v := range x {
			mx = max(mx, float32(math.Abs(float64(v))))
		}
		scale, inv := rowScale(mx, q.signed)
		q.scale[r] = scale
		d := q.data[r*n : (r+1)*n]
		for i, v := range x {
			f := math.RoundToEven(float64(float32(v * inv)))
			if q.signed {
				d[i] = uint8(int8(max(-128, min(127, f)))) ^ 0x80
			} else {
				d[i] = uint8(max(0, min(255, f)))
			}
		}
	}
}

// zeroCorr is the correction of unsigned rows (zero point 0).
var zeroCorr [ffnDim]int32

// corrFor returns the accumulators' starting values for a's zero point.
func (w *qmatrix) corrFor(a *qrows) []int32 {
	if a.signed {
		return w.corr
	}
	return zeroCorr[:w.n]
}

// mulAdd adds (a dequantised)·(w dequantised) to c (row stride ldc): c[i][j]
// += float32(acc)·(sa[i]·sw[j]) with acc the exact integer dot product; with
// relu it then clamps c at 0. It panics if a slice is too short.
func (w *qmatrix) mulAdd(c []float32, ldc int, a *qrows, relu bool) {
	rows := a.rows
	if rows <= 0 {
		return
	}
	if rows > maxRows || a.k != w.k || ldc < w.n || len(c) < (rows-1)*ldc+w.n {
		panic("local: int8 matmul operands too short")
	}
	mulAddQKernel(w, c, ldc, a, relu)
}

// mulAddQGeneric is the portable int8 kernel and the reference of the
// assembly one: the same integer sums and the same float32 operations in the
// same order, so the two agree exactly.
func mulAddQGeneric(w *qmatrix, c []float32, ldc int, a *qrows, relu bool) {
	k := w.k
	corr := w.corrFor(a)
	for i := 0; i < a.rows; i++ {
		u := a.data[i*k : (i+1)*k]
		out := c[i*ldc : i*ldc+w.n]
		for j := range out {
			acc := corr[j]
			base := (j/panelWidth)*k*panelWidth + (j%panelWidth)*4
			for p0 := 0; p0 < k; p0 += 4 {
				b := w.data[base+p0*16 : base+p0*16+4 : base+p0*16+4]
				x := u[p0 : p0+4 : p0+4]
				acc += int32(x[0])*int32(b[0]) + int32(x[1])*int32(b[1]) + int32(x[2])*int32(b[2]) + int32(x[3])*int32(b[3])
			}
			s := a.scale[i] * w.scale[j]
			v := out[j] + float32(float32(acc)*s)
			if relu && v < 0 {
				v = 0
			}
			out[j] = v
		}
	}
}
