package semantic

import "golang.org/x/sys/cpu"

// useAVX2 is fixed at start-up: the FMA kernel needs AVX2 and FMA3 (and an
// OS that saves the YMM registers, which cpu.X86.HasAVX2 already checks).
var useAVX2 = cpu.X86.HasAVX2 && cpu.X86.HasFMA

// The int8 kernels: AVX-512 with VNNI (VPDPWSSD multiplies int16 pairs and
// accumulates in one instruction; VPMOVSXBW needs AVX512BW), else AVX2
// (VPMADDWD then VPADDD), else Go. Variables so that the parity test can
// run each one the CPU has.
var (
	useVNNI   = cpu.X86.HasAVX512F && cpu.X86.HasAVX512BW && cpu.X86.HasAVX512VNNI
	useI8AVX2 = cpu.X86.HasAVX2
)

//go:noescape
func dotAVX2(a, b *float32, n int) float32

//go:noescape
func dotI8VNNI(a *int16, b *int8, n int) int32

//go:noescape
func dotI8AVX2(a *int16, b *int8, n int) int32

//go:noescape
func dotI8I8VNNI(a, b *int8, n int) int32

//go:noescape
func dotI8I8AVX2(a, b *int8, n int) int32

//go:noescape
func prefetchFloats(p *float32, n int)

//go:noescape
func prefetchBytes(p *int8, n int)

// prefetch hints that v will be read soon.
func prefetch(v []float32) {
	if len(v) > 0 {
		prefetchFloats(&v[0], len(v))
	}
}

// prefetchI8 hints that v will be read soon.
func prefetchI8(v []int8) {
	if len(v) > 0 {
		prefetchBytes(&v[0], len(v))
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

// dotI8 returns the inner product of a and b, which must have the same
// length.
func dotI8(a []int16, b []int8) int32 {
	if len(a) == 0 {
		return 0
	}
	_ = b[len(a)-1]
	switch {
	case useVNNI:
		return dotI8VNNI(&a[0], &b[0], len(a))
	case useI8AVX2:
		return dotI8AVX2(&a[0], &b[0], len(a))
	}
	return dotI8Generic(a, b)
}

// dotI8I8 returns the inner product of two int8 vectors of the same
// length.
func dotI8I8(a, b []int8) int32 {
	if len(a) == 0 {
		return 0
	}
	_ = b[len(a)-1]
	switch {
	case useVNNI:
		return dotI8I8VNNI(&a[0], &b[0], len(a))
	case useI8AVX2:
		return dotI8I8AVX2(&a[0], &b[0], len(a))
	}
	return dotI8I8Generic(a, b)
}

// i8Kernel names the int8 kernel in use: "avx512vnni", "avx2" or "go".
func i8Kernel() string {
	switch {
	case useVNNI:
		return "avx512vnni"
	case useI8AVX2:
		return "avx2"
	}
	return "go"
}
