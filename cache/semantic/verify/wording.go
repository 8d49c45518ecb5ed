package verify

import (
	"unicode"
	"unicode/utf8"
)

// AppendWordingKey appends text's wording key to dst: its words as the
// verifier's exact-wording rule compares them (runs of non-space runes
// with sentence punctuation trimmed at their edges, words that are all
// punctuation dropped, letter case folded), separated by single spaces.
// Two texts have the same key exactly when Score takes them for the same
// prompt whatever their cosine (it reads the cosine as 1): "What is AI?"
// and "WHAT IS AI", "hello" and "HELLO!!!". Symbols and inner punctuation
// are kept ("C++", "-5", "5.5").
//
// The cosine pre-filter (MinCosine) cannot stand in for this rule, which
// is why the key exists: the pre-filter bounds the score of texts that
// differ, and USE-lite gives texts of the same wording any cosine. On
// variants of the first 3,000 questions of qqp-dev.tsv (case, end and edge
// punctuation, spacing, quotes; TestSameWordingCosines), 22.8 % of the
// 570,000 same-wording pairs are under the 0.92 pre-filter: 1 % under
// 0.70, the lowest 0.368 ("  Why is ISRO very successful?  " against
// "\"Why is ISRO very successful?\""). A run of punctuation goes lower
// ("hi" against "hi " and 33 "?!": 0.263), so no floor is safe, and a
// wider search would still lose such a text to k nearer ones. The lexical
// embedder folds case and drops punctuation itself (1.000 on the same
// variants). So retrieval looks such texts up by this key, beside the
// vector search (cmd/internal/pipeline, SemanticConfig.Wording).
//
// Case is folded rune by rune to the smallest rune of its simple-folding
// orbit, so keys are equal exactly when strings.EqualFold holds word by
// word. It does not allocate when dst has room.
func AppendWordingKey(dst []byte, text string) []byte {
	first := true
	for i := 0; ; {
		var w string
		w, i = nextWord(text, i)
		if w == "" {
			return dst
		}
		if !first {
			dst = append(dst, ' ')
		}
		first = false
		for _, r := range w {
			dst = utf8.AppendRune(dst, foldRune(r))
		}
	}
}

// WordingKey is AppendWordingKey(nil, text) as a string.
func WordingKey(text string) string { return string(AppendWordingKey(nil, text)) }

// foldRune is the smallest rune r is equal to under simple case folding
// (what strings.EqualFold compares).
func foldRune(r rune) rune {
	if r < utf8.RuneSelf { // an ASCII letter's orbit starts at its capital (K: k, K, U+212A)
		if 'a' <= r && r <= 'z' {
			return r - ('a' - 'A')
		}
		return r
	}
	m := r
	for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
		m = min(m, f)
	}
	return m
}
