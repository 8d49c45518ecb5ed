// Package embed turns texts into unit-length vectors for the semantic cache
// tier.
//
// Implementations: the local Universal Sentence Encoder Lite model in pure Go
// (embed/local), a lexical embedder of hashed word and character n-grams
// (embed/lexical, the fallback when the model is missing), and a client of an
// OpenAI-compatible /v1/embeddings API (embed/remote). Memo wraps any of them
// with a cache of recent texts.
package embed

import (
	"context"
	"errors"
	"math"
)

// ErrUnavailable is returned (wrapped) when an embedder cannot answer now:
// its breaker is open, its deadline passed, or its backend is down. Callers
// skip the semantic tier for that request; it is never a client error.
var ErrUnavailable = errors.New("embed: unavailable")

// Vector is an embedding. Embedders return L2-normalised vectors, so the dot
// product of two vectors is their cosine similarity.
type Vector = []float32

// An Embedder embeds texts. Embed returns one vector per text, in order, each
// of length Dim(). It is safe for concurrent use.
type Embedder interface {
	Embed(ctx context.Context, texts []string) ([]Vector, error)
	// Dim is the length of the vectors.
	Dim() int
	// Name identifies the model and its version, e.g. "use-lite-v1" or
	// "lexical-v1"; vectors of different names are never compared.
	Name() string
}

// One embeds a single text.
func One(ctx context.Context, e Embedder, text string) (Vector, error) {
	vs, err := e.Embed(ctx, []string{text})
	if err != nil {
		return nil, err
	}
	if len(vs) != 1 {
		return nil, errors.New("embed: embedder returned the wrong number of vectors")
	}
	return vs[0], nil
}

// Dot returns the dot product of a and b (their cosine similarity when both
// are unit vectors). It panics if the lengths differ.
func Dot(a, b Vector) float32 {
	if len(a) != len(b) {
		panic("embed: Dot of vectors of different lengths")
	}
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(a); i += 4 {
		s0 += a[i] * b[i]
		s1 += a[i+1] * b[i+1]
		s2 += a[i+2] * b[i+2]
		s3 += a[i+3] * b[i+3]
	}
	for ; i < len(a); i++ {
		s0 += a[i] * b[i]
	}
	return s0 + s1 + s2 + s3
}

// Normalize scales v to unit length in place; a zero vector stays zero.
func Normalize(v Vector) {
	var s float64
	for _, x := range v {
		s += float64(x) * float64(x)
	}
	if s == 0 {
		return
	}
	inv := float32(1 / math.Sqrt(s))
	for i := range v {
		v[i] *= inv
	}
}
