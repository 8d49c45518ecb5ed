package semantic

import "golang.org/x/sys/cpu"

// useAVX2 is fixed at start-up: the FMA kernel needs AVX2 and FMA3 (and an
// OS that saves the YMM registers, which cpu.X86.HasAVX2 already checks).
var useAVX2 = cpu.X86.HasAVX2 && cpu.X86.HasFMA

//go:noescape
func dotAVX2(a, b *float32, n int) float32

//go:noescape
func prefetchFloats(p *float32, n int)

// prefetch hints that v will be read soon.
func prefetch(v []float32) {
	if len(v) > 0 {
		prefetchFloats(&v[0], len(v))
	}
}

// dot returns the inner product of a and b, which must have the same
// length. On unit vectors it is the cosine similarity.
func dot(a, b []float32) float32 {
	if len(a) == 0 {
		return 0
	}
	if useAVX2 {
		_ = b[len(a)-1]
		return dotAVX2(&a[0], &b[0], len(a))
	}
	return dotGeneric(a, b)
}
