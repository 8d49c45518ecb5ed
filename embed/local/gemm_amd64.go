//go:build amd64 && !purego

package local

import (
	"golang.org/x/sys/cpu"
)

//go:generate go run gen_kernels.go

// Kernels in kernels_amd64.s; see gen_kernels.go.

//go:noescape
func gemmAVX512x1(k int, a *float32, lda int, b *float32, c *float32, ldc int, relu int)

//go:noescape
func gemmAVX512x2(k int, a *float32, lda int, b *float32, c *float32, ldc int, relu int)

//go:noescape
func gemmAVX512x3(k int, a *float32, lda int, b *float32, c *float32, ldc int, relu int)

//go:noescape
func gemmAVX512x4(k int, a *float32, lda int, b *float32, c *float32, ldc int, relu int)

//go:noescape
func gemmAVX512x5(k int, a *float32, lda int, b *float32, c *float32, ldc int, relu int)

//go:noescape
func gemmAVX512x6(k int, a *float32, lda int, b *float32, c *float32, ldc int, relu int)

//go:noescape
func gemmAVX512x7(k int, a *float32, lda int, b *float32, c *float32, ldc int, relu int)

//go:noescape
func gemmAVX512x8(k int, a *float32, lda int, b *float32, c *float32, ldc int, relu int)

//go:noescape
func gemmAVX512x9(k int, a *float32, lda int, b *float32, c *float32, ldc int, relu int)

//go:noescape
func gemmAVX512x10(k int, a *float32, lda int, b *float32, c *float32, ldc int, relu int)

//go:noescape
func gemmAVX512x11(k int, a *float32, lda int, b *float32, c *float32, ldc int, relu int)

//go:noescape
func gemmAVX512x12(k int, a *float32, lda int, b *float32, c *float32, ldc int, relu int)

//go:noescape
func gemmAVX512x13(k int, a *float32, lda int, b *float32, c *float32, ldc int, relu int)

//go:noescape
func gemmAVX512x14(k int, a *float32, lda int, b *float32, c *float32, ldc int, relu int)

//go:noescape
func gemmAVX2x1(k int, a *float32, lda int, b *float32, c *float32, ldc int, relu int)

//go:noescape
func gemmAVX2x2(k int, a *float32, lda int, b *float32, c *float32, ldc int, relu int)

//go:noescape
func gemmAVX2x3(k int, a *float32, lda int, b *float32, c *float32, ldc int, relu int)

//go:noescape
func gemmAVX2x4(k int, a *float32, lda int, b *float32, c *float32, ldc int, relu int)

//go:noescape
func gemmAVX2x5(k int, a *float32, lda int, b *float32, c *float32, ldc int, relu int)

//go:noescape
func gemmAVX2x6(k int, a *float32, lda int, b *float32, c *float32, ldc int, relu int)

//go:noescape
func gemmVNNIx1(k4 int, a *uint8, lda int, b *int8, c *float32, ldc int, relu int, corr *int32, ws *float32, as *float32)

//go:noescape
func gemmVNNIx2(k4 int, a *uint8, lda int, b *int8, c *float32, ldc int, relu int, corr *int32, ws *float32, as *float32)

//go:noescape
func gemmVNNIx3(k4 int, a *uint8, lda int, b *int8, c *float32, ldc int, relu int, corr *int32, ws *float32, as *float32)

//go:noescape
func gemmVNNIx4(k4 int, a *uint8, lda int, b *int8, c *float32, ldc int, relu int, corr *int32, ws *float32, as *float32)

//go:noescape
func gemmVNNIx5(k4 int, a *uint8, lda int, b *int8, c *float32, ldc int, relu int, corr *int32, ws *float32, as *float32)

//go:noescape
func gemmVNNIx6(k4 int, a *uint8, lda int, b *int8, c *float32, ldc int, relu int, corr *int32, ws *float32, as *float32)

//go:noescape
func gemmVNNIx7(k4 int, a *uint8, lda int, b *int8, c *float32, ldc int, relu int, corr *int32, ws *float32, as *float32)

//go:noescape
func gemmVNNIx8(k4 int, a *uint8, lda int, b *int8, c *float32, ldc int, relu int, corr *int32, ws *float32, as *float32)

//go:noescape
func gemmVNNIx9(k4 int, a *uint8, lda int, b *int8, c *float32, ldc int, relu int, corr *int32, ws *float32, as *float32)

//go:noescape
func gemmVNNIx10(k4 int, a *uint8, lda int, b *int8, c *float32, ldc int, relu int, corr *int32, ws *float32, as *float32)

//go:noescape
func gemmVNNIx11(k4 int, a *uint8, lda int, b *int8, c *float32, ldc int, relu int, corr *int32, ws *float32, as *float32)

//go:noescape
func gemmVNNIx12(k4 int, a *uint8, lda int, b *int8, c *float32, ldc int, relu int, corr *int32, ws *float32, as *float32)

//go:noescape
func gemmVNNIx13(k4 int, a *uint8, lda int, b *int8, c *float32, ldc int, relu int, corr *int32, ws *float32, as *float32)

//go:noescape
func gemmVNNIx14(k4 int, a *uint8, lda int, b *int8, c *float32, ldc int, relu int, corr *int32, ws *float32, as *float32)

//go:noescape
func absMaxAVX512(x *float32, n int) float32

//go:noescape
func quantAVX512(x *float32, n int, inv float32, dst *uint8, offset int)

//go:noescape
func softmaxAVX512(x *float32, n int, scale float32)

type qkernelFunc func(k4 int, a *uint8, lda int, b *int8, c *float32, ldc int, relu int, corr *int32, ws *float32, as *float32)

var vnniKernels = [...]qkernelFunc{nil, gemmVNNIx1, gemmVNNIx2, gemmVNNIx3, gemmVNNIx4, gemmVNNIx5, gemmVNNIx6, gemmVNNIx7, gemmVNNIx8, gemmVNNIx9, gemmVNNIx10, gemmVNNIx11, gemmVNNIx12, gemmVNNIx13, gemmVNNIx14}

// hasVNNI reports AVX-512 VNNI (VPDPBUSD on ZMM) with the BW and VL
// extensions the quantiser uses: the int8 path runs only there.
var hasVNNI = cpu.X86.HasAVX512F && cpu.X86.HasAVX512BW && cpu.X86.HasAVX512VL && cpu.X86.HasAVX512VNNI

// useVNNI selects the int8 assembly kernels; only tests turn it off (to
// cover the portable ones).
var useVNNI = hasVNNI

func quantizeRowsKernel(q *qrows, a []float32, lda int) {
	if !useVNNI {
		quantizeRowsGeneric(q, a, lda)
		return
	}
	n := q.k
	off := 0
	if q.signed {
		off = 1
	}
	for r := 0; r < q.rows; r++ {
		x := &a[r*lda]
		scale, inv := rowScale(absMaxAVX512(x, n), q.signed)
		q.scale[r] = scale
		quantAVX512(x, n, inv, &q.data[r*n], off)
	}
}

func mulAddQKernel(w *qmatrix, c []float32, ldc int, a *qrows, relu bool) {
	if !useVNNI {
		mulAddQGeneric(w, c, ldc, a, relu)
		return
	}
	const maxMR = len(vnniKernels) - 1
	rows, k := a.rows, w.k
	blocks := (rows + maxMR - 1) / maxMR
	r := 0
	if relu {
		r = 1
	}
	corr := w.corrFor(a)
	for j0 := 0; j0 < w.n; j0 += 2 * panelWidth {
		bp := &w.data[j0*k]
		for b := 0; b < blocks; b++ {
			i0, i1 := b*rows/blocks, (b+1)*rows/blocks
			vnniKernels[i1-i0](k/4, &a.data[i0*k], k, bp, &c[i0*ldc+j0], ldc, r, &corr[j0], &w.scale[j0], &a.scale[i0])
		}
	}
}

type kernelFunc func(k int, a *float32, lda int, b *float32, c *float32, ldc int, relu int)

var (
	avx512Kernels = [...]kernelFunc{nil, gemmAVX512x1, gemmAVX512x2, gemmAVX512x3, gemmAVX512x4, gemmAVX512x5, gemmAVX512x6, gemmAVX512x7, gemmAVX512x8, gemmAVX512x9, gemmAVX512x10, gemmAVX512x11, gemmAVX512x12, gemmAVX512x13, gemmAVX512x14}
	avx2Kernels   = [...]kernelFunc{nil, gemmAVX2x1, gemmAVX2x2, gemmAVX2x3, gemmAVX2x4, gemmAVX2x5, gemmAVX2x6}
)

// Kernel choices, in order of preference.
const (
	kernelGeneric = iota
	kernelAVX2
	kernelAVX512
)

// bestKernel is the fastest kernel this CPU and OS support.
var bestKernel = func() int {
	switch {
	case cpu.X86.HasAVX512F:
		return kernelAVX512
	case cpu.X86.HasAVX2 && cpu.X86.HasFMA:
		return kernelAVX2
	}
	return kernelGeneric
}()

// useKernel is the kernel in use. Only tests change it (to cover the
// others); it is fixed while a Model computes.
var useKernel = bestKernel

func kernelName(k int) string {
	return [...]string{"go", "avx2", "avx512"}[k]
}

func mulAddKernel(w *matrix, c []float32, ldc int, a []float32, lda, rows int, scratch []float32, relu bool) {
	var kernels []kernelFunc
	width := panelWidth
	switch useKernel {
	case kernelAVX512:
		kernels, width = avx512Kernels[:], 2*panelWidth
	case kernelAVX2:
		kernels = avx2Kernels[:]
	default:
		mulAddGeneric(w, c, ldc, a, lda, rows, scratch, relu)
		return
	}
	k := w.k
	// Split the rows into blocks of nearly equal size, at most maxMR each.
	maxMR := len(kernels) - 1
	blocks := (rows + maxMR - 1) / maxMR
	r := 0
	if relu {
		r = 1
	}
	for j0 := 0; j0 < w.n; j0 += width {
		bp := &w.data[j0*k]
		for b := 0; b < blocks; b++ {
			i0, i1 := b*rows/blocks, (b+1)*rows/blocks
			kernels[i1-i0](k, &a[i0*lda], lda, bp, &c[i0*ldc+j0], ldc, r)
		}
	}
}
