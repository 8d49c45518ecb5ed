package embed

import (
	"context"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MinCoverage is the default share of a prompt an embedder must represent
// for the prompt to take part in semantic matching. Below it the prompt is
// exact-only: it is not looked up, not indexed and never served by the
// degraded rung. Why: an embedder that does not know a script maps every
// text of that script to nearly the same vector (USE-lite embeds any two
// pure-Chinese prompts at cosine 1.0000), so a similarity there says
// nothing, and a wrong answer is worse than a miss.
const MinCoverage = 0.9

// A Coverer says how much of a text it can represent: the share, in [0, 1],
// of the text's non-space characters that map to something it knows (for
// USE-lite: a character some vocabulary piece starts with; for the Chinese
// model: Han characters, ASCII letters, digits and punctuation). Text with
// no such characters has coverage 1 when it is empty and 0 otherwise.
type Coverer interface {
	Coverage(text string) float64
}

// CoverageOf is e's coverage of text. An embedder that does not say (a
// remote model, chosen by the operator for their languages) covers all.
func CoverageOf(e Embedder, text string) float64 {
	if c, ok := e.(Coverer); ok {
		return c.Coverage(text)
	}
	return 1
}

// ShareOf is the share of text's non-space runes for which known reports
// true: the common way embedders compute Coverage.
func ShareOf(text string, known func(r rune) bool) float64 {
	n, k := 0, 0
	for _, r := range text {
		if unicode.IsSpace(r) {
			continue
		}
		n++
		if known(r) {
			k++
		}
	}
	if n == 0 {
		return 1
	}
	return float64(k) / float64(n)
}

// A Spacer embeds different texts with different models (a Router). Space
// names the model that embeds text, with its coverage of it; vectors of
// different spaces must never be compared, so the space joins the
// semantic filter.
type Spacer interface {
	Space(text string) (space string, coverage float64)
}

// SpaceOf is the space e embeds text in and its coverage: for a Spacer its
// choice, else e's name and CoverageOf.
func SpaceOf(e Embedder, text string) (string, float64) {
	if s, ok := e.(Spacer); ok {
		return s.Space(text)
	}
	return e.Name(), CoverageOf(e, text)
}

// Router embeds each text with the member that represents it best: the
// highest coverage, the earlier member on ties. It exists so that one
// semantic tier serves several languages with a model made for each
// (USE-lite for English, the Chinese model for Chinese and Chinese mixed
// with English terms) without a multilingual model none of them was
// measured with. Members must share a dimension; their vectors are never
// compared with each other's (see Spacer).
type Router struct {
	members []Embedder
	names   []string
	dim     int
}

var (
	_ Embedder = (*Router)(nil)
	_ Spacer   = (*Router)(nil)
	_ Coverer  = (*Router)(nil)
)

// NewRouter routes between members, the first being the default.
func NewRouter(members ...Embedder) (*Router, error) {
	if len(members) == 0 {
		return nil, fmt.Errorf("embed: router without members")
	}
	r := &Router{members: members, dim: members[0].Dim()}
	for _, m := range members {
		if m.Dim() != r.dim || r.dim <= 0 {
			return nil, fmt.Errorf("embed: router members must share a known dimension: %s has %d, %s has %d",
				members[0].Name(), r.dim, m.Name(), m.Dim())
		}
		r.names = append(r.names, m.Name())
	}
	return r, nil
}

// Name is the members' names joined by "+"; the default member's name when
// there is one member.
func (r *Router) Name() string { return strings.Join(r.names, "+") }

// Primary is the name of the default member.
func (r *Router) Primary() string { return r.names[0] }

// Dim implements Embedder.
func (r *Router) Dim() int { return r.dim }

// pick is the member for text and its coverage.
func (r *Router) pick(text string) (int, float64) {
	best, cov := 0, -1.0
	for i, m := range r.members {
		if c := CoverageOf(m, text); c > cov {
			best, cov = i, c
		}
		if cov >= 1 {
			break
		}
	}
	return best, cov
}

// Space implements Spacer.
func (r *Router) Space(text string) (string, float64) {
	i, c := r.pick(text)
	return r.names[i], c
}

// Coverage implements Coverer: the best member's.
func (r *Router) Coverage(text string) float64 {
	_, c := r.pick(text)
	return c
}

// Embed implements Embedder: each member embeds its texts in one call.
func (r *Router) Embed(ctx context.Context, texts []string) ([]Vector, error) {
	out := make([]Vector, len(texts))
	groups := make([][]int, len(r.members))
	for i, t := range texts {
		m, _ := r.pick(t)
		groups[m] = append(groups[m], i)
	}
	for m, at := range groups {
		if len(at) == 0 {
			continue
		}
		batch := make([]string, len(at))
		for j, i := range at {
			batch[j] = texts[i]
		}
		vs, err := r.members[m].Embed(ctx, batch)
		if err != nil {
			return nil, err
		}
		if len(vs) != len(at) {
			return nil, fmt.Errorf("%w: %s returned %d vectors for %d texts", ErrUnavailable, r.names[m], len(vs), len(at))
		}
		for j, i := range at {
			out[i] = vs[j]
		}
	}
	return out, nil
}

// IsHan reports whether r is a Chinese character (Han script).
func IsHan(r rune) bool { return r >= 0x2E80 && unicode.Is(unicode.Han, r) }

// HanShare is the share of text's non-space runes that are Han.
func HanShare(text string) float64 {
	if !utf8.ValidString(text) {
		return 0
	}
	return ShareOf(text, IsHan)
}
