package llmsim

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"maps"
)

// answer is the deterministic text generated for one request: the word
// "sim:<12 hex digits of sha256(text)>" followed by filler words chosen from
// the same hash.
type answer struct {
	sum    [sha256.Size]byte
	fill   byte   // where the filler starts in its word cycle (from the hash)
	words  int    // words per choice
	finish string // "stop", or "length" when max_tokens cut it short
}

// newAnswer hashes text and sizes the answer: answerTokens words, capped by
// maxWords when positive.
func newAnswer(text string, answerTokens, maxWords int) answer {
	a := answer{sum: sha256.Sum256([]byte(text)), words: answerTokens, finish: "stop"}
	a.fill = a.sum[6]
	if maxWords > 0 && maxWords < a.words {
		a.words, a.finish = maxWords, "length"
	}
	return a
}

// answerFor is the answer to text: a question listed in the canonical map
// (SetCanonical) gets its canonical question's answer (with its own filler
// when rewording), every other text its own.
func (s *Server) answerFor(cfg *Config, text string, maxWords int) answer {
	c := s.canon.Load()
	if c == nil || len(c.folded) == 0 {
		return newAnswer(text, cfg.AnswerTokens, maxWords)
	}
	canon, ok := c.folded[FoldEmbeddingText(text)]
	if !ok {
		return newAnswer(text, cfg.AnswerTokens, maxWords)
	}
	a := newAnswer(canon, cfg.AnswerTokens, maxWords)
	if c.reword {
		own := sha256.Sum256([]byte(text))
		a.fill = own[6]
	}
	return a
}

// canonical is the map of SetCanonical, immutable once stored.
type canonical struct {
	given  map[string]string // as set, for GET /_sim/config
	folded map[string]string // keys folded (FoldEmbeddingText)
	reword bool
}

// maxCanonical bounds the canonical map, so a typo cannot make the
// simulator hold gigabytes.
const maxCanonical = 100_000

// SetCanonical makes paraphrases answer alike, so that a test knows which
// answers agree: a chat or completion request whose last user message (or
// prompt), folded as FoldEmbeddingText folds it, is a key of m is
// answered as if it had asked the value verbatim; texts not listed get
// their own answer, as always. With reword, such an answer keeps the
// canonical answer's first word ("sim:<hash of the canonical question>")
// but has filler words of its own, the way a model words one answer
// differently each time: alike, not byte for byte the same. A nil or
// empty m turns the mapping off. m is copied.
func (s *Server) SetCanonical(m map[string]string, reword bool) error {
	if len(m) > maxCanonical {
		return errors.New("the canonical map must have at most 100000 entries")
	}
	c := &canonical{given: maps.Clone(m), folded: make(map[string]string, len(m)), reword: reword}
	for k, v := range m {
		c.folded[FoldEmbeddingText(k)] = v
	}
	s.canon.Store(c)
	return nil
}

// Canonical returns the map SetCanonical set (a copy) and whether
// answers are reworded.
func (s *Server) Canonical() (map[string]string, bool) {
	c := s.canon.Load()
	if c == nil {
		return nil, false
	}
	return maps.Clone(c.given), c.reword
}

// appendHash appends the 12 hex digits that identify the request.
func (a *answer) appendHash(b []byte) []byte {
	return hex.AppendEncode(b, a.sum[:6])
}

// appendWord appends word i of choice, preceded by a space unless it is the
// first word. Words are plain ASCII, safe inside a JSON string.
func (a *answer) appendWord(b []byte, choice, i int) []byte {
	if i == 0 {
		b = append(b, "sim:"...)
		return a.appendHash(b)
	}
	// Choices start at different offsets so that n > 1 gives distinct
	// (but still deterministic) texts; choice 0 is the n = 1 answer.
	off := int(a.fill) + 7*choice
	b = append(b, ' ')
	return append(b, fillerWords[(off+i-1)%len(fillerWords)]...)
}

// appendText appends every word of choice.
func (a *answer) appendText(b []byte, choice int) []byte {
	for i := 0; i < a.words; i++ {
		b = a.appendWord(b, choice, i)
	}
	return b
}

// fillerWords is the vocabulary of the filler; an immutable table.
var fillerWords = [...]string{
	"lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit",
	"sed", "do", "eiusmod", "tempor", "incididunt", "ut", "labore", "et",
	"dolore", "magna", "aliqua", "enim", "ad", "minim", "veniam", "quis",
	"nostrud", "exercitation", "ullamco", "laboris", "nisi", "aliquip", "ex", "ea",
	"commodo", "consequat", "duis", "aute", "irure", "in", "reprehenderit", "voluptate",
	"velit", "esse", "cillum", "fugiat", "nulla", "pariatur", "excepteur", "sint",
	"occaecat", "cupidatat", "non", "proident", "sunt", "culpa", "qui", "officia",
	"deserunt", "mollit", "anim", "id", "est", "laborum", "vitae", "porta",
}
