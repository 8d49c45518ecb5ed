package local

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"

	"github.com/edgecache/edgecache/embed"
)

// The tokenizer reproduces, rule for rule, the SentencePiece unigram encoder
// of the Universal Sentence Encoder in tfjs-models
// (universal-sentence-encoder/src/tokenizer, Copyright 2019 Google LLC,
// Apache License 2.0), itself a port of SentencePiece's EncodeAsIds. The Go
// code is our own; the rules, including the reference's quirks, are theirs:
//
//   - the text is NFKC-normalised; if it is not empty, every U+0020 becomes
//     U+2581 ("▁") and one more "▁" is put in front;
//   - symbols are UTF-16 code units (the reference iterates a JS string);
//   - the first six vocabulary entries (unknown, control and user-defined
//     symbols) are never matched; a later duplicate piece replaces an
//     earlier one;
//   - Viterbi over the piece scores: a position where no piece starts gets a
//     one-symbol unknown (id 0, score 0); an end position takes a candidate
//     when its best score is still exactly 0 or the candidate's score is >=
//     (so later starts win ties); positions nothing reaches keep id 0;
//   - walking back from the end, each step goes back by the length of the
//     chosen piece (1 for id 0); consecutive unknowns merge into one.
//
// The model then keeps the first maxTokens tokens.

const (
	// maxTokens is the graph's ClipToMaxLength.
	maxTokens = 128
	// reservedPieces are vocabulary entries the tokenizer never emits
	// except id 0, the unknown symbol.
	reservedPieces = 6
	// wordSep replaces spaces and starts the text.
	wordSep = '\u2581'
	// maxInputBytes bounds the text read before normalising.
	maxInputBytes = 64 << 10
	// maxSymbols bounds the symbols of one word that is longer than any
	// useful prompt (the cut is exact when it falls on a word boundary).
	maxSymbols = 8192
)

type tokenizer struct {
	trie   map[uint64]int32 // node<<16 | symbol → child node
	pieces []trieEnd        // per node: the piece ending there, if any
	length []int32          // per id: length of the piece in UTF-16 units
	lower  bool
}

type trieEnd struct {
	id    int32 // -1: no piece ends at this node
	score float64
}

// readVocab reads vocab.json: a JSON array of [piece, score] pairs where the
// score may be null (read as 0, as JavaScript's null + number does).
func readVocab(path string) ([]string, []float64, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	var entries [][2]json.RawMessage
	if err := json.Unmarshal(raw, &entries); err != nil {
		return nil, nil, fmt.Errorf("vocab.json: %w", err)
	}
	pieces := make([]string, len(entries))
	scores := make([]float64, len(entries))
	for i, e := range entries {
		if err := json.Unmarshal(e[0], &pieces[i]); err != nil {
			return nil, nil, fmt.Errorf("vocab.json entry %d: %w", i, err)
		}
		var s *float64
		if err := json.Unmarshal(e[1], &s); err != nil {
			return nil, nil, fmt.Errorf("vocab.json entry %d: %w", i, err)
		}
		if s != nil {
			scores[i] = *s
		}
	}
	return pieces, scores, nil
}

func newTokenizer(pieces []string, scores []float64) *tokenizer {
	t := &tokenizer{
		trie:   make(map[uint64]int32, 4*len(pieces)),
		pieces: []trieEnd{{id: -1}},
		length: make([]int32, len(pieces)),
	}
	for id, p := range pieces {
		u := utf16.Encode([]rune(p))
		t.length[id] = int32(len(u))
		if id < reservedPieces || len(u) == 0 {
			continue
		}
		node := int32(0)
		for _, s := range u {
			key := uint64(node)<<16 | uint64(s)
			next, ok := t.trie[key]
			if !ok {
				next = int32(len(t.pieces))
				t.pieces = append(t.pieces, trieEnd{id: -1})
				t.trie[key] = next
			}
			node = next
		}
		t.pieces[node] = trieEnd{id: int32(id), score: scores[id]}
	}
	if t.length[0] == 0 {
		t.length[0] = 1
	}
	return t
}

// symbols turns text into the UTF-16 symbols the Viterbi search runs over,
// bounded so that huge inputs cost no more than their first maxTokens
// words. buf is reused.
func (t *tokenizer) symbols(text string, buf []uint16) []uint16 {
	if len(text) > maxInputBytes {
		cut := maxInputBytes
		for cut > 0 && !utf8.RuneStart(text[cut]) {
			cut--
		}
		text = text[:cut]
	}
	if t.lower {
		text = strings.ToLower(text)
	}
	text = norm.NFKC.String(text)
	buf = buf[:0]
	if text == "" {
		return buf
	}
	buf = append(buf, wordSep)
	words := 1
	for _, r := range text {
		if r == ' ' {
			// No piece has "▁" after its first symbol, so the
			// segmentation before a "▁" does not depend on what follows
			// and cutting here leaves the first maxTokens tokens as they
			// would be for the whole text.
			if words == maxTokens+1 {
				break
			}
			words++
			r = wordSep
		}
		if len(buf) >= maxSymbols {
			break
		}
		if r >= 0x10000 {
			r1, r2 := utf16.EncodeRune(r)
			buf = append(buf, uint16(r1), uint16(r2))
		} else {
			buf = append(buf, uint16(r))
		}
	}
	return buf
}

// tokenScratch is reusable memory for encode.
type tokenScratch struct {
	sym   []uint16
	best  []float64
	words []int32
	ids   []int32
}

// encode appends the token ids of text to dst, at most maxTokens.
func (t *tokenizer) encode(text string, sc *tokenScratch, dst []int32) []int32 {
	sc.sym = t.symbols(text, sc.sym)
	sym := sc.sym
	n := len(sym)
	sc.best = grow(sc.best, n+1)
	sc.words = grow(sc.words, n+1)
	best, words := sc.best, sc.words
	clear(best)
	clear(words)
	// Forward pass. Candidates ending at a position are offered in order
	// of their start, as the reference's lattice walk does.
	for i := 0; i < n; i++ {
		matched := false
		node := int32(0)
		for j := i; j < n; j++ {
			next, ok := t.trie[uint64(node)<<16|uint64(sym[j])]
			if !ok {
				break
			}
			node = next
			if pe := t.pieces[node]; pe.id >= 0 {
				matched = true
				relax(best, words, j+1, pe.score+best[i], pe.id)
			}
		}
		if !matched {
			relax(best, words, i+1, best[i], 0)
		}
	}
	// Backward pass.
	ids := sc.ids[:0]
	for at := n; at > 0; {
		id := words[at]
		ids = append(ids, id)
		at -= int(t.length[id])
	}
	sc.ids = ids
	// Reverse, merging runs of unknowns, and keep the first maxTokens.
	prevUnk := false
	kept := 0
	for k := len(ids) - 1; k >= 0 && kept < maxTokens; k-- {
		id := ids[k]
		if id == 0 && prevUnk {
			continue
		}
		prevUnk = id == 0
		dst = append(dst, id)
		kept++
	}
	return dst
}

// relax offers a candidate ending at end with the reference's rule.
func relax(best []float64, words []int32, end int, score float64, id int32) {
	if best[end] == 0 || score >= best[end] {
		best[end] = score
		words[end] = id
	}
}

func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}

// coverage is the share of text's non-space characters (after the same
// normalisation as encode) that some vocabulary piece starts with; the rest
// become the unknown token, which carries no meaning. USE-lite's 8,000
// pieces hold no Chinese character, so any two Chinese prompts encode alike.
func (t *tokenizer) coverage(text string) float64 {
	if len(text) > maxInputBytes {
		text = text[:maxInputBytes]
	}
	if t.lower {
		text = strings.ToLower(text)
	}
	text = norm.NFKC.String(text)
	return embed.ShareOf(text, func(r rune) bool {
		u := uint16(r)
		if r >= 0x10000 {
			r1, _ := utf16.EncodeRune(r)
			u = uint16(r1)
		}
		_, ok := t.trie[uint64(u)]
		return ok
	})
}
