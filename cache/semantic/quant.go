package semantic

import (
	"math"
	"unsafe"
)

// Vectors in a graph or an exact partition are held as int8, one byte per
// dimension, with a float32 scale per vector: v ≈ scale·q. The scale is
// chosen so that the dequantised vector keeps the norm of the original
// (|v| / |q|), not to reproduce each component: on a unit vector the
// score of a query against it is then the cosine with the quantised
// direction, and the error that remains is the part of the rounding noise
// perpendicular to the stored vector, which shrinks as the query comes
// nearer (see TestInt8CosineError for the measured figures).
//
// A query is quantised once per search, to int16 with 14 bits of
// magnitude (qMax): its own rounding error is 64 times smaller than the
// stored vectors' and adds nothing measurable, and 512 products of
// 8191·127 sum to well inside an int32.
const (
	i8Max = 127
	qMax  = 8191
)

// quantize writes the int8 form of v into dst (len(v) bytes) and returns
// its scale.
func quantize(dst []int8, v []float32) float32 {
	var amax float32
	for _, x := range v {
		amax = max(amax, float32(math.Abs(float64(x))))
	}
	if amax == 0 || math.IsNaN(float64(amax)) || math.IsInf(float64(amax), 0) {
		clear(dst[:len(v)])
		return 0
	}
	k := i8Max / amax
	var vn, qn float64
	for i, x := range v {
		q := int8(math.Round(float64(x * k)))
		dst[i] = q
		vn += float64(x) * float64(x)
		qn += float64(q) * float64(q)
	}
	return float32(math.Sqrt(vn / qn))
}

// rowBytes is the size of a stored vector's row: dim int8s, padding to
// a multiple of 4, then the float32 scale.
func rowBytes(dim int) int { return (dim+3)&^3 + 4 }

// putRow quantises v (dim floats) into row.
func putRow(row []int8, v []float32, dim int) {
	s := quantize(row[:dim], v)
	*(*float32)(unsafe.Pointer(&row[len(row)-4])) = s
}

// getRow returns row's int8 vector and scale.
func getRow(row []int8, dim int) ([]int8, float32) {
	return row[:dim:dim], *(*float32)(unsafe.Pointer(&row[len(row)-4]))
}

// dequantize writes scale·q into dst.
func dequantize(dst []float32, q []int8, scale float32) {
	for i, x := range q {
		dst[i] = float32(x) * scale
	}
}

// query is a search vector in the form the int8 kernels take.
type query struct {
	v     []int16
	scale float32 // v·scale ≈ the float query
}

// setQuery quantises v into q, reusing q's memory.
func (q *query) set(v []float32) {
	if cap(q.v) < len(v) {
		q.v = make([]int16, len(v))
	}
	q.v = q.v[:len(v)]
	var amax float32
	for _, x := range v {
		amax = max(amax, float32(math.Abs(float64(x))))
	}
	if amax == 0 || math.IsNaN(float64(amax)) || math.IsInf(float64(amax), 0) {
		clear(q.v)
		q.scale = 0
		return
	}
	k := qMax / amax
	for i, x := range v {
		q.v[i] = int16(math.Round(float64(x * k)))
	}
	q.scale = amax / qMax
}

// setI8 sets q to the int8 vector x of scale sx, exactly.
func (q *query) setI8(x []int8, sx float32) {
	if cap(q.v) < len(x) {
		q.v = make([]int16, len(x))
	}
	q.v = q.v[:len(x)]
	for i, c := range x {
		q.v[i] = int16(c)
	}
	q.scale = sx
}

// dotI8Generic is the portable int16·int8 inner product; dotI8 dispatches
// to an assembly kernel where the CPU has one.
func dotI8Generic(a []int16, b []int8) int32 {
	b = b[:len(a)]
	var s0, s1, s2, s3 int32
	i := 0
	for ; i+4 <= len(a); i += 4 {
		s0 += int32(a[i]) * int32(b[i])
		s1 += int32(a[i+1]) * int32(b[i+1])
		s2 += int32(a[i+2]) * int32(b[i+2])
		s3 += int32(a[i+3]) * int32(b[i+3])
	}
	for ; i < len(a); i++ {
		s0 += int32(a[i]) * int32(b[i])
	}
	return (s0 + s1) + (s2 + s3)
}

// scoreTolerance is the promised bound on |returned score − float cosine|
// for unit vectors of 128 dimensions or more (TestInt8CosineError
// measures it; real 512-d sentence embeddings stay under 0.0006). Fewer
// dimensions mean larger components, coarser steps: scoreToleranceLowDim
// holds from 32.
const (
	scoreTolerance       = 0.002
	scoreToleranceLowDim = 0.004
)

// dotI8I8Generic is the portable int8·int8 inner product.
func dotI8I8Generic(a, b []int8) int32 {
	b = b[:len(a)]
	var s0, s1 int32
	i := 0
	for ; i+2 <= len(a); i += 2 {
		s0 += int32(a[i]) * int32(b[i])
		s1 += int32(a[i+1]) * int32(b[i+1])
	}
	for ; i < len(a); i++ {
		s0 += int32(a[i]) * int32(b[i])
	}
	return s0 + s1
}
