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
