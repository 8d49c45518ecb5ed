package embed

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/dgraph-io/ristretto/v2"
)

// Memo wraps an Embedder with a bounded cache of recent texts: a prompt
// embedded once (to look it up, then to index it, or by another tenant) is
// not embedded again.
type Memo struct {
	inner Embedder
	c     *ristretto.Cache[string, Vector]
	// computed and remembered count texts (not calls): those the wrapped
	// embedder embedded and those answered from the cache. They exist so
	// that the operator and the benchmark can see what embedding costs per
	// request (edgecache.embed.texts); an atomic add per call keeps them
	// off the profile.
	computed, remembered atomic.Int64
}

var _ Embedder = (*Memo)(nil)

// NewMemo caches up to maxBytes of vectors (0 → 64 MiB) in front of e.
func NewMemo(e Embedder, maxBytes int64) (*Memo, error) {
	if maxBytes <= 0 {
		maxBytes = 64 << 20
	}
	dim := int64(e.Dim())
	if dim <= 0 {
		dim = 512
	}
	items := max(maxBytes/(dim*4+64), 1)
	c, err := ristretto.NewCache(&ristretto.Config[string, Vector]{
		NumCounters: items * 10,
		MaxCost:     maxBytes,
		BufferItems: 64,
	})
	if err != nil {
		return nil, fmt.Errorf("embed memo: %w", err)
	}
	return &Memo{inner: e, c: c}, nil
}

// Name implements Embedder.
func (m *Memo) Name() string { return m.inner.Name() }

// Dim implements Embedder.
func (m *Memo) Dim() int { return m.inner.Dim() }

// Embed implements Embedder: cached texts are answered from memory and the
// rest are embedded in one call to the wrapped embedder. Returned vectors are
// shared: callers must not modify them.
func (m *Memo) Embed(ctx context.Context, texts []string) ([]Vector, error) {
	out := make([]Vector, len(texts))
	var missing []string
	var at []int
	for i, t := range texts {
		if v, ok := m.c.Get(t); ok {
			out[i] = v
			continue
		}
		missing, at = append(missing, t), append(at, i)
	}
	if n := len(texts) - len(missing); n > 0 {
		m.remembered.Add(int64(n))
	}
	if len(missing) == 0 {
		return out, nil
	}
	vs, err := m.inner.Embed(ctx, missing)
	if err != nil {
		return nil, err
	}
	if len(vs) != len(missing) {
		return nil, errors.New("embed: embedder returned the wrong number of vectors")
	}
	m.computed.Add(int64(len(missing)))
	for j, v := range vs {
		out[at[j]] = v
		m.c.Set(missing[j], v, int64(len(v)*4+len(missing[j])+64))
	}
	return out, nil
}

// Counts returns how many texts the wrapped embedder has embedded
// (computed; a failed call counts none) and how many were answered from the
// cache (remembered) since NewMemo.
func (m *Memo) Counts() (computed, remembered int64) {
	return m.computed.Load(), m.remembered.Load()
}

// Coverage implements Coverer for the wrapped embedder.
func (m *Memo) Coverage(text string) float64 { return CoverageOf(m.inner, text) }

// Space implements Spacer for the wrapped embedder.
func (m *Memo) Space(text string) (string, float64) { return SpaceOf(m.inner, text) }

// Close releases the cache.
func (m *Memo) Close() { m.c.Close() }
