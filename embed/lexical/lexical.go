// Package lexical is a fast embedder of hashed word and character n-grams.
//
// It needs no model: words (lowercased, NFKC-normalised), word bigrams and
// character trigrams of each word are hashed into a fixed number of signed
// buckets with sublinear term frequency, and the vector is L2-normalised.
// It is robust to typos and word order but knows no paraphrase: it is the
// fallback when the local model is missing, and a cheap second opinion.
package lexical

import (
	"context"
	"math"
	"strings"
	"unicode"

	"golang.org/x/text/unicode/norm"

	"github.com/edgecache/edgecache/embed"
)

// DefaultDim is the vector length when Config.Dim is zero.
const DefaultDim = 1024

// Embedder is the lexical embedder. The zero value is not usable; use New.
type Embedder struct {
	dim int
}

var _ embed.Embedder = (*Embedder)(nil)

// New returns a lexical embedder with dim buckets (0 → DefaultDim). Vectors
// are deterministic for a given dim across processes.
func New(dim int) *Embedder {
	if dim <= 0 {
		dim = DefaultDim
	}
	return &Embedder{dim: dim}
}

// Name implements embed.Embedder.
func (e *Embedder) Name() string { return "lexical-v1" }

// Dim implements embed.Embedder.
func (e *Embedder) Dim() int { return e.dim }

// Embed implements embed.Embedder.
func (e *Embedder) Embed(ctx context.Context, texts []string) ([]embed.Vector, error) {
	out := make([]embed.Vector, len(texts))
	for i, t := range texts {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		out[i] = e.vector(t)
	}
	return out, nil
}

// Words splits text into lowercased words of letters and digits, after NFKC
// normalisation. Apostrophes inside words are kept ("don't").
func Words(text string) []string {
	text = norm.NFKC.String(text)
	var words []string
	var b strings.Builder
	flush := func() {
		if b.Len() > 0 {
			words = append(words, b.String())
			b.Reset()
		}
	}
	rs := []rune(text)
	for i, r := range rs {
		switch {
		case unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(unicode.ToLower(r))
			if unicode.Is(unicode.Han, r) || unicode.Is(unicode.Hiragana, r) || unicode.Is(unicode.Katakana, r) {
				flush() // CJK: one character per word
			}
		case (r == '\'' || r == '’') && b.Len() > 0 && i+1 < len(rs) && unicode.IsLetter(rs[i+1]):
			b.WriteRune('\'')
		default:
			flush()
		}
	}
	flush()
	return words
}

func (e *Embedder) vector(text string) embed.Vector {
	counts := map[uint64]float32{}
	add := func(kind byte, s string, w float32) {
		h := hash(kind, s)
		counts[h] += w
	}
	words := Words(text)
	for i, w := range words {
		add('w', w, 1)
		if i > 0 {
			add('b', words[i-1]+" "+w, 0.7)
		}
		padded := []rune("<" + w + ">")
		for j := 0; j+3 <= len(padded); j++ {
			add('c', string(padded[j:j+3]), 0.35)
		}
	}
	v := make(embed.Vector, e.dim)
	for h, c := range counts {
		weight := c // sublinear tf: 1 + ln(tf) once a feature repeats
		if c > 1 {
			weight = float32(1 + math.Log(float64(c)))
		}
		idx := int(h % uint64(e.dim))
		if h>>63 == 1 {
			v[idx] -= weight
		} else {
			v[idx] += weight
		}
	}
	embed.Normalize(v)
	return v
}

// hash is FNV-1a 64 over a kind byte and s: stable across processes, so
// vectors stored by one replica match queries embedded by another.
func hash(kind byte, s string) uint64 {
	const offset, prime = 14695981039346656037, 1099511628211
	h := uint64(offset)
	h = (h ^ uint64(kind)) * prime
	for i := 0; i < len(s); i++ {
		h = (h ^ uint64(s[i])) * prime
	}
	// final avalanche so that the sign bit and the bucket are independent
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	return h
}

// Coverage implements embed.Coverer. The lexical embedder hashes any word,
// but its verifier calibration was fitted on English: Chinese, Japanese and
// Korean characters are not counted as represented, so such prompts go to
// a model made for them or stay exact-only.
func (e *Embedder) Coverage(text string) float64 {
	return embed.ShareOf(text, func(r rune) bool {
		return !unicode.In(r, unicode.Han, unicode.Hiragana, unicode.Katakana, unicode.Hangul)
	})
}
