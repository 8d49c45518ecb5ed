// Package semantic is the L3 of the cache: a vector index that answers
// "which stored prompt is nearest to this one", not "is this key stored".
//
// Matching is only ever fuzzy in the last user turn: every point carries a
// Filter (tenant namespace, route, model and a hash of the whole context
// but the last user message), and Search only considers points whose Filter
// is identical to the query's. A Match names the exact cache key of the
// stored answer; the caller reads the answer from the exact tiers and runs
// its own verification before serving it.
//
// Implementations: Embedded, the in-process index (the default: int8
// vectors, exact search in small partitions, an HNSW graph in large ones,
// TTL, a capacity bound and a snapshot file), and Qdrant, an adapter to a
// Qdrant collection over gRPC. Both pass the conformance suite,
// semantictest.RunIndex (Embedded within its documented score tolerance),
// and both implement Purger.
package semantic

import (
	"context"
	"errors"
	"time"
)

// ErrUnavailable is returned (wrapped) when the index cannot answer now.
// Callers skip the semantic tier for that request.
var ErrUnavailable = errors.New("semantic: index unavailable")

// Filter is the exact part of a semantic lookup. Points match a query only
// when every field is equal.
type Filter struct {
	Namespace string // tenant namespace (or "shared")
	Route     string
	Model     string
	Context   string // hash of everything in the request but the last user message
}

// Point is one indexed prompt.
type Point struct {
	Key       string    // exact cache key of the stored answer; the point's identity
	Vector    []float32 // unit vector of Text, of the index's dimension
	Filter    Filter
	Text      string    // the last user message, for verification
	ExpiresAt time.Time // after it, the point is never returned
}

// Match is a search result.
type Match struct {
	Point
	Score float32 // cosine similarity to the query vector
}

// An Index stores points and finds the nearest ones. It is safe for
// concurrent use.
type Index interface {
	// Upsert adds p, replacing any point with the same Key.
	Upsert(ctx context.Context, p Point) error
	// Search returns up to k live points matching f exactly whose score
	// is at least minScore, best first.
	Search(ctx context.Context, v []float32, f Filter, k int, minScore float32) ([]Match, error)
	// Delete removes the point with key; an absent key is not an error.
	Delete(ctx context.Context, key string) error
	// Close releases resources (and persists, for an embedded index).
	Close() error
}
