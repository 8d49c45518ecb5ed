package llmsim

import (
	"crypto/sha256"
	"encoding/hex"
)

// answer is the deterministic text generated for one request: the word
// "sim:<12 hex digits of sha256(text)>" followed by filler words chosen from
// the same hash.
type answer struct {
	sum    [sha256.Size]byte
	words  int    // words per choice
	finish string // "stop", or "length" when max_tokens cut it short
}

// newAnswer hashes text and sizes the answer: answerTokens words, capped by
// maxWords when positive.
func newAnswer(text string, answerTokens, maxWords int) answer {
	a := answer{sum: sha256.Sum256([]byte(text)), words: answerTokens, finish: "stop"}
	if maxWords > 0 && maxWords < a.words {
		a.words, a.finish = maxWords, "length"
	}
	return a
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
	off := int(a.sum[6]) + 7*choice
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
