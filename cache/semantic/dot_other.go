//go:build !amd64

package semantic

// dot returns the inner product of a and b, which must have the same
// length. On unit vectors it is the cosine similarity.
func dot(a, b []float32) float32 { return dotGeneric(a, b) }

// prefetch hints that v will be read soon; a no-op here.
func prefetch(v []float32) {}
