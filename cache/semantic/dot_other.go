//go:build !amd64

package semantic

// dot returns the inner product of a and b, which must have the same
// length. On unit vectors it is the cosine similarity.
func dot(a, b []float32) float32 { return dotGeneric(a, b) }

// dotI8 returns the inner product of a and b (same length).
func dotI8(a []int16, b []int8) int32 { return dotI8Generic(a, b) }

// dotI8I8 returns the inner product of two int8 vectors of the same
// length.
func dotI8I8(a, b []int8) int32 { return dotI8I8Generic(a, b) }

// prefetch hints that v will be read soon; a no-op here.
func prefetch(v []float32) {}

// prefetchI8 hints that v will be read soon; a no-op here.
func prefetchI8(v []int8) {}

// i8Kernel names the int8 kernel in use.
func i8Kernel() string { return "go" }
