package local

import "fmt"

// panelWidth is the number of columns in one packed panel of a weight
// matrix: one cache line of float32.
const panelWidth = 16

// matrix is a K×N weight matrix packed for the matmul kernels: column panels
// of panelWidth columns, each stored row after row, so that the kernels read
// the weights they need as one contiguous stream.
// Element (p, j) lives at data[(j/16)*k*16 + p*16 + j%16].
type matrix struct {
	k, n int
	data []float32
}

// packMatrix packs the row-major K×N matrix w.
func packMatrix(w []float32, k, n int) (matrix, error) {
	if len(w) != k*n || k <= 0 || n <= 0 || n%(2*panelWidth) != 0 {
		return matrix{}, fmt.Errorf("model: cannot pack a %d×%d matrix from %d values", k, n, len(w))
	}
	m := matrix{k: k, n: n, data: make([]float32, k*n)}
	for j0 := 0; j0 < n; j0 += panelWidth {
		panel := m.data[j0*k : (j0+panelWidth)*k]
		for p := 0; p < k; p++ {
			copy(panel[p*panelWidth:(p+1)*panelWidth], w[p*n+j0:p*n+j0+panelWidth])
		}
	}
	return m, nil
}

// mulAdd adds a·w to c, where a is rows×k with row stride lda and c is
// rows×n with row stride ldc; with relu it then clamps c at 0. scratch must
// hold 2·k values. It panics if a slice is too short.
func (w *matrix) mulAdd(c []float32, ldc int, a []float32, lda, rows int, scratch []float32, relu bool) {
	if rows <= 0 {
		return
	}
	if rows > maxRows || lda < w.k || ldc < w.n || len(a) < (rows-1)*lda+w.k ||
		len(c) < (rows-1)*ldc+w.n || len(scratch) < 2*w.k {
		panic("local: matmul operands too short")
	}
	mulAddKernel(w, c, ldc, a, lda, rows, scratch, relu)
}

// mulAddGeneric is the portable kernel: rows in pairs, each pair's outputs
// computed four columns at a time in eight scalar accumulators, few enough
// to stay in registers on amd64 as well as arm64.
func mulAddGeneric(w *matrix, c []float32, ldc int, a []float32, lda, rows int, scratch []float32, relu bool) {
	k := w.k
	for i0 := 0; i0 < rows; i0 += 2 {
		mr := min(2, rows-i0)
		blk := scratch[:2*k]
		a0 := a[i0*lda : i0*lda+k]
		a1 := a0
		if mr == 2 {
			a1 = a[(i0+1)*lda : (i0+1)*lda+k]
		}
		for p := range a0 {
			blk[2*p] = a0[p]
			blk[2*p+1] = a1[p]
		}
		for j0 := 0; j0 < w.n; j0 += panelWidth {
			panel := w.data[j0*k : (j0+panelWidth)*k]
			for jj := 0; jj < panelWidth; jj += 4 {
				var c00, c01, c02, c03, c10, c11, c12, c13 float32
				for p := 0; p < k; p++ {
					b := panel[p*panelWidth+jj : p*panelWidth+jj+4 : p*panelWidth+jj+4]
					x := blk[2*p : 2*p+2 : 2*p+2]
					b0, b1, b2, b3 := b[0], b[1], b[2], b[3]
					x0, x1 := x[0], x[1]
					c00 += x0 * b0
					c01 += x0 * b1
					c02 += x0 * b2
					c03 += x0 * b3
					c10 += x1 * b0
					c11 += x1 * b1
					c12 += x1 * b2
					c13 += x1 * b3
				}
				acc := [2][4]float32{{c00, c01, c02, c03}, {c10, c11, c12, c13}}
				for r := 0; r < mr; r++ {
					out := c[(i0+r)*ldc+j0+jj : (i0+r)*ldc+j0+jj+4]
					for j := range out {
						out[j] += acc[r][j]
					}
					if relu {
						reluInPlace(out)
					}
				}
			}
		}
	}
}

func reluInPlace(x []float32) {
	for i, v := range x {
		if v < 0 {
			x[i] = 0
		}
	}
}
