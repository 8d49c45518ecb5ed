package verify

import (
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// Token kinds. A word is exactly one kind; kindContent words are the ones
// whose presence on one side only suggests a different question.
const (
	kindContent  uint8 = iota
	kindStop           // function words: articles, pronouns, auxiliaries, prepositions
	kindFiller         // words paraphrases add or drop freely ("best", "way", "really")
	kindQuestion       // question words: what, why, how, ...
	kindNegation       // not, no, never, n't, without, ...
	kindNumber         // digits and number words
)

// maxTokens bounds the words looked at per text; a longer prompt is judged
// on its first maxTokens words.
const maxTokens = 96

// maxBytes bounds the text looked at per side.
const maxBytes = 2048

type token struct {
	start, end int32  // stem bytes in scratch.buf
	hash       uint64 // FNV-1a of the stem (of the value, for numbers)
	kind       uint8
	entity     bool // capitalised inside the sentence, or an acronym: a likely name
	first      bool // first word of the text
}

// side is one tokenised text.
type side struct {
	toks  []token
	words int // all words, including those past maxTokens
}

// scratch is per-call working memory, pooled by the Verifier.
type scratch struct {
	buf  []byte
	norm []byte
	q, c side
}

func newScratch() *scratch {
	return &scratch{
		buf:  make([]byte, 0, 2*maxBytes+64),
		norm: make([]byte, 0, maxBytes+64),
		q:    side{toks: make([]token, 0, maxTokens)},
		c:    side{toks: make([]token, 0, maxTokens)},
	}
}

func (s *scratch) stem(t token) []byte { return s.buf[t.start:t.end] }

// tokenize splits text into words (letters, digits and inner apostrophes),
// after NFKC normalisation, lowercases and stems them into s.buf and
// classifies them. Invalid UTF-8 is read as U+FFFD, a non-letter.
func (s *scratch) tokenize(text string, out *side) {
	out.toks, out.words = out.toks[:0], 0
	if len(text) > maxBytes {
		text = text[:maxBytes]
	}
	src := text
	if !isASCII(text) {
		s.norm = norm.NFKC.AppendString(s.norm[:0], text)
		src = string(s.norm) // one allocation, non-ASCII texts only
	}
	caps, acronyms := casing(src)
	i := 0
	for i < len(src) {
		r, n := decode(src, i)
		if !isWordRune(r) {
			i += n
			continue
		}
		start := i
		upper, allUpper, letters := unicode.IsUpper(r), true, 0
		j := i
		for j < len(src) {
			r, n := decode(src, j)
			if isWordRune(r) {
				if unicode.IsLetter(r) {
					letters++
					if !unicode.IsUpper(r) {
						allUpper = false
					}
				}
				j += n
				continue
			}
			// An apostrophe between letters stays inside the word.
			if (r == '\'' || r == '’') && j+n < len(src) {
				if r2, _ := decode(src, j+n); unicode.IsLetter(r2) {
					j += n
					continue
				}
			}
			break
		}
		// "C++", "C#", "F#": a plus or hash right after a letter is part
		// of the name.
		if j < len(src) && (src[j] == '+' || src[j] == '#') && j > start && isLetterByte(src[j-1]) {
			j++
			if j < len(src) && src[j] == '+' {
				j++
			}
		}
		s.addWord(src[start:j], caps && upper, acronyms && allUpper && letters >= 2, out)
		i = j
	}
}

// casing reports whether capitals and all-capital words in text can mark
// names: not when most words after the first are capitalised (Title Case;
// "I" does not count) or the text is mostly upper case (shouting).
func casing(text string) (caps, acronyms bool) {
	words, capital, upper, letters := 0, 0, 0, 0
	inWord := false
	for i := 0; i < len(text); i++ {
		b := text[i]
		isL := 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z'
		if isL {
			letters++
			if 'A' <= b && b <= 'Z' {
				upper++
			}
			if !inWord {
				words++
				single := b == 'I' && (i+1 == len(text) || !isLetterByte(text[i+1]))
				if words > 1 && 'A' <= b && b <= 'Z' && !single {
					capital++
				}
			}
		}
		inWord = isL || '0' <= b && b <= '9' || b >= utf8.RuneSelf
	}
	if letters == 0 {
		return false, false
	}
	acronyms = upper*2 < letters
	caps = acronyms && (words < 4 || capital*10 < (words-1)*6)
	return caps, acronyms
}

func isLetterByte(b byte) bool { return 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' }

func (s *scratch) addWord(w string, upper, acronym bool, out *side) {
	out.words++
	if len(out.toks) == maxTokens {
		return
	}
	first := out.words == 1
	// Lowercase into buf; apostrophes become ASCII.
	start := len(s.buf)
	for k := 0; k < len(w); {
		r, n := decode(w, k)
		k += n
		if r == '’' {
			r = '\''
		}
		if r < utf8.RuneSelf {
			if 'A' <= r && r <= 'Z' {
				r += 'a' - 'A'
			}
			s.buf = append(s.buf, byte(r))
		} else {
			s.buf = utf8.AppendRune(s.buf, unicode.ToLower(r))
		}
	}
	word := s.buf[start:]

	// Contractions: "don't" and "can't" are a negation (their auxiliary
	// is a stopword anyway); "it's", "we're", "Quora's" keep their base.
	if k := indexByte(word, '\''); k >= 0 {
		if hasSuffix(word, "n't") {
			s.buf = s.buf[:start]
			out.toks = append(out.toks, token{hash: negHash, kind: kindNegation, first: first})
			return
		}
		s.buf = s.buf[:start+k]
		word = word[:k]
	}
	s.push(out, start, word, upper && !first, acronym, first)
}

var negHash = fnv([]byte("not"))

// push classifies word (already in buf at start) and appends its token.
func (s *scratch) push(out *side, start int, word []byte, capital, acronym, first bool) {
	if len(word) == 0 {
		return
	}
	if len(out.toks) == maxTokens {
		return
	}
	t := token{first: first}
	if c, ok := lexicon[string(word)]; ok && !(acronym && c.kind == kindStop) {
		t.kind = c.kind
		if c.kind == kindNumber {
			t.hash = fnv([]byte(c.value))
		} else {
			t.hash = fnv(word)
		}
		t.start, t.end = int32(start), int32(start+len(word))
		if c.kind == kindNegation {
			t.hash = negHash
		}
		out.toks = append(out.toks, t)
		return
	}
	if v, ok := numberValue(word); ok {
		t.kind = kindNumber
		t.hash = fnv(v)
		t.start, t.end = int32(start), int32(start+len(word))
		out.toks = append(out.toks, t)
		return
	}
	stemmed := stem(word)
	s.buf = s.buf[:start+len(stemmed)]
	t.kind = kindContent
	t.start, t.end = int32(start), int32(start+len(stemmed))
	t.hash = fnv(stemmed)
	if h, ok := synonyms[t.hash]; ok {
		t.hash = h
	}
	t.entity = (capital || acronym) && !(len(word) == 1)
	out.toks = append(out.toks, t)
}

// numberValue reads a word with digits as a number: "80", "2016" and
// "1st" as their digits without leading zeros, "1990s" as "1990"; any other
// word with a digit ("s7582", "m553dn", "6s", "4g") is a model number or
// code, compared whole. Decimal points split words, so "2.5" is the two
// numbers 2 and 5.
func numberValue(w []byte) ([]byte, bool) {
	n := 0
	for n < len(w) && '0' <= w[n] && w[n] <= '9' {
		n++
	}
	if n == 0 {
		for _, b := range w {
			if '0' <= b && b <= '9' {
				return w, true
			}
		}
		return nil, false
	}
	switch string(w[n:]) {
	case "", "st", "nd", "rd", "th":
	case "s":
		if n < 3 { // "6s" is a phone, "1990s" a decade
			return w, true
		}
	default:
		return w, true
	}
	d := w[:n]
	for len(d) > 1 && d[0] == '0' {
		d = d[1:]
	}
	return d, true
}

// stem strips common English inflections in place: plurals, -ing, -ed and
// a final e, so that "learning", "learned" and "learns" meet "learn", and
// "studies" meets "study".
func stem(w []byte) []byte {
	if !isASCIIBytes(w) || len(w) <= 3 {
		return w
	}
	n := len(w)
	switch {
	case hasSuffix(w, "ies") && n > 4:
		w = w[:n-2]
		w[len(w)-1] = 'y'
	case hasSuffix(w, "sses"):
		w = w[:n-2]
	case hasSuffix(w, "ss") || hasSuffix(w, "us") || hasSuffix(w, "is"):
	case hasSuffix(w, "s"):
		w = w[:n-1]
	}
	n = len(w)
	switch {
	case hasSuffix(w, "ing") && n > 5 && hasVowel(w[:n-3]):
		w = undouble(w[:n-3])
	case hasSuffix(w, "ed") && n > 4 && hasVowel(w[:n-2]):
		w = undouble(w[:n-2])
	}
	if n := len(w); n > 3 && w[n-1] == 'e' {
		w = w[:n-1]
	}
	if n := len(w); n > 3 && w[n-1] == 'y' {
		w[n-1] = 'i'
	}
	return w
}

func undouble(w []byte) []byte {
	n := len(w)
	if n >= 4 && w[n-1] == w[n-2] && !isVowel(w[n-1]) && w[n-1] != 'l' && w[n-1] != 's' && w[n-1] != 'z' {
		return w[:n-1]
	}
	return w
}

func hasSuffix(w []byte, s string) bool {
	return len(w) >= len(s) && string(w[len(w)-len(s):]) == s
}

func hasVowel(w []byte) bool {
	for _, b := range w {
		if isVowel(b) {
			return true
		}
	}
	return false
}

func isVowel(b byte) bool {
	switch b {
	case 'a', 'e', 'i', 'o', 'u', 'y':
		return true
	}
	return false
}

func isWordRune(r rune) bool {
	if r < utf8.RuneSelf {
		return 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9'
	}
	return unicode.IsLetter(r) || unicode.IsDigit(r)
}

func decode(s string, i int) (rune, int) {
	if b := s[i]; b < utf8.RuneSelf {
		return rune(b), 1
	}
	return utf8.DecodeRuneInString(s[i:])
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

func isASCIIBytes(s []byte) bool {
	for _, b := range s {
		if b >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

func fnv(b []byte) uint64 {
	const offset, prime = 14695981039346656037, 1099511628211
	h := uint64(offset)
	for _, c := range b {
		h = (h ^ uint64(c)) * prime
	}
	return h
}
