package verify

import (
	"math"
	"math/bits"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Features are what the verifier measures about a query and a candidate
// (each cut at its first 2,048 bytes and 96 words). For two identical texts
// every difference is zero, Cosine, Jaccard and CharSim are one, and Size
// is their number of content words.
type Features struct {
	Cosine float32 // embedding cosine, clamped to [-1, 1]

	Jaccard   float32 // content stems in common / content stems in either
	OnlyMax   float32 // content words on one side only: the larger side's count
	OnlyMin   float32 // ... and the smaller side's: words swapped for others
	OnlyLong  float32 // one-side content words of 7 or more letters (specific terms)
	Order     float32 // 1 − Jaccard of adjacent content-word pairs: reordered or changed phrases
	Swap      float32 // two shared words swap roles ("A to B" against "B to A")
	LenRatio  float32 // |ln(words in query / words in candidate)|
	CharSim   float32 // Jaccard of the character trigrams of the content words: spelling-tolerant overlap
	Person    float32 // the possessives differ ("your favourite" against "the most popular", "my" against "his")
	Size      float32 // content words on the shorter side: context for the others, not a difference
	NumDiff   float32 // both sides have numbers and they differ
	NumOne    float32 // numbers on one side only
	Negation  float32 // one side is negated an odd number of times more
	Entity    float32 // likely names (capitalised words, acronyms) on one side only
	QuestionH float32 // "why" against "how"
	QuestionY float32 // "why" against another question word
	QuestionW float32 // when/where/who against another question word
	QuestionQ float32 // how many/much against another question word
	QuestionO float32 // other question-word differences (yes/no against what/how, ...)

	Opposite     float32 // one side uses a word, the other its opposite ("maximum" against "minimum", "enable" against "disable")
	Substitution float32 // one content word swapped for another in the same place, neither a respelling of the other ("aspirin" against "warfarin")
}

// Extract measures query against candidate. It is what Score computes
// before applying the model; it is exported for fitting models (see
// cmd/internal/eval) and for explaining scores.
func (v *Verifier) Extract(query, candidate string, cosine float32) Features {
	s := v.get()
	defer v.put(s)
	return s.features(query, candidate, cosine)
}

func (s *scratch) features(query, candidate string, cosine float32) Features {
	s.buf = s.buf[:0]
	s.tokenize(query, &s.q)
	s.tokenize(candidate, &s.c)
	var f Features
	switch {
	case cosine != cosine: // NaN
		f.Cosine = 0
	case cosine > 1:
		f.Cosine = 1
	case cosine < -1:
		f.Cosine = -1
	default:
		f.Cosine = cosine
	}
	if f.Cosine < 1 && sameWording(query, candidate) {
		f.Cosine = 1 // the same prompt, however the embedding weighs a "?"
	}
	q, c := &s.q, &s.c

	// Content words, each distinct stem once per side.
	nq, oq, lq := s.unmatched(q, c)
	nc, oc, lc := s.unmatched(c, q)
	shared := float32(nq-oq+nc-oc) / 2
	if union := shared + float32(oq+oc); union > 0 {
		f.Jaccard = shared / union
	} else {
		f.Jaccard = 1
	}
	f.OnlyMax = float32(min(max(oq, oc), 6))
	f.OnlyMin = float32(min(min(oq, oc), 6))
	f.OnlyLong = float32(min(lq+lc, 4))
	f.Order = 1 - s.bigramJaccard()
	f.Swap = s.discordance()
	wq, wc := max(q.words, 1), max(c.words, 1)
	f.LenRatio = float32(math.Abs(math.Log(float64(wq) / float64(wc))))
	f.CharSim = s.charSim()
	if s.possessives(q) != s.possessives(c) {
		f.Person = 1
	}
	f.Size = float32(min(nq, nc, 12))

	// Numbers.
	hq, hc := hasKind(q, kindNumber), hasKind(c, kindNumber)
	switch {
	case hq && hc:
		if !sameSet(q, c, kindNumber) {
			f.NumDiff = 1
		}
	case hq != hc:
		f.NumOne = 1
	}

	// Negation parity.
	if s.negations(q)%2 != s.negations(c)%2 {
		f.Negation = 1
	}

	if s.opposite() {
		f.Opposite = 1
	}
	if oq == 1 && oc == 1 {
		f.Substitution = s.substitution()
	}

	// Names on one side only.
	f.Entity = float32(min(s.entitiesOnly(q, c)+s.entitiesOnly(c, q), 3))

	// Question type.
	cq, cc := questionClass(s, q), questionClass(s, c)
	if cq != cc && cq != qNone && cc != qNone {
		switch {
		case (cq == qWhy && cc == qHow) || (cq == qHow && cc == qWhy):
			f.QuestionH = 1
		case cq == qWhy || cc == qWhy:
			f.QuestionY = 1
		case cq == qWhen || cq == qWhere || cq == qWho || cc == qWhen || cc == qWhere || cc == qWho:
			f.QuestionW = 1
		case cq == qQuantity || cc == qQuantity:
			f.QuestionQ = 1
		case (cq == qWhat && cc == qHow) || (cq == qHow && cc == qWhat):
			// "What is the best way to…" asks "How do I…": no difference.
		default:
			f.QuestionO = 1
		}
	}
	return f
}

// unmatched counts a's distinct content stems (n), those with no match in
// b (only), and how many of those are long (7+ bytes).
func (s *scratch) unmatched(a, b *side) (n, only, long int) {
	for i, t := range a.toks {
		if t.kind != kindContent || seenBefore(a, i) {
			continue
		}
		n++
		if !s.matches(t, b) {
			only++
			if t.end-t.start >= 7 {
				long++
			}
		}
	}
	return n, only, long
}

// substitution reports whether the one content word that each side has
// and the other lacks stands in the same place (a neighbouring word in
// common, or the same end of the text) and is no respelling or
// abbreviation of the other ("favourite" and "favorite", "pic" and
// "picture"): "side effects of aspirin" against "side effects of
// warfarin", "learn python" against "learn java".
func (s *scratch) substitution() float32 {
	i, j := onlyAt(s, &s.q, &s.c), onlyAt(s, &s.c, &s.q)
	if i < 0 || j < 0 {
		return 0
	}
	if variant(s.stem(s.q.toks[i]), s.stem(s.c.toks[j])) || !aligned(&s.q, i, &s.c, j) {
		return 0
	}
	return 1
}

// onlyAt is the index of a's first content token with no match in b, or -1.
func onlyAt(s *scratch, a, b *side) int {
	for i, t := range a.toks {
		if t.kind == kindContent && !s.matches(t, b) {
			return i
		}
	}
	return -1
}

// aligned reports whether a.toks[i] and b.toks[j] have the same word
// before them (or both start the text) or the same word after them (or
// both end it).
func aligned(a *side, i int, b *side, j int) bool {
	switch {
	case i == 0 && j == 0:
		return true
	case i > 0 && j > 0 && a.toks[i-1].hash == b.toks[j-1].hash:
		return true
	}
	switch ei, ej := i+1 == len(a.toks), j+1 == len(b.toks); {
	case ei && ej:
		return true
	case !ei && !ej:
		return a.toks[i+1].hash == b.toks[j+1].hash
	}
	return false
}

// variant reports whether two different stems are one word spelt two ways
// (at most one edit apart, two for words of six letters or more) or one
// abbreviates the other (its letters, in order, from the same first
// letter: "tv" and "television", "pic" and "picture").
func variant(a, b []byte) bool {
	if len(a) > len(b) {
		a, b = b, a
	}
	if len(a) == 0 {
		return true
	}
	if a[0] == b[0] && len(a) >= 2 {
		k := 0
		for _, c := range b {
			if k < len(a) && a[k] == c {
				k++
			}
		}
		if k == len(a) {
			return true
		}
	}
	limit := 1
	if len(a) >= 6 {
		limit = 2
	}
	return editDistance(a, b, limit) <= limit
}

// editDistance is the Levenshtein distance of a and b, or limit+1 when it
// is larger than limit (or the words are longer than 32 bytes). It does not
// allocate.
func editDistance(a, b []byte, limit int) int {
	if len(b)-len(a) > limit || len(a)-len(b) > limit {
		return limit + 1
	}
	if len(a) > 32 || len(b) > 32 {
		return limit + 1
	}
	var prev, cur [33]int
	for j := 0; j <= len(b); j++ {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		best := cur[0]
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			best = min(best, cur[j])
		}
		if best > limit {
			return limit + 1
		}
		prev = cur
	}
	return prev[len(b)]
}

// seenBefore reports whether a.toks[i]'s stem occurred earlier in a.
func seenBefore(a *side, i int) bool {
	h := a.toks[i].hash
	for _, t := range a.toks[:i] {
		if t.hash == h {
			return true
		}
	}
	return false
}

// matches reports whether t occurs in b: the same stem, or one stem is a
// prefix of the other ("popular", "popularity") when the shorter has at
// least 5 bytes and they differ by at most 4.
func (s *scratch) matches(t token, b *side) bool {
	for _, u := range b.toks {
		if u.hash == t.hash {
			return true
		}
	}
	ts := s.stem(t)
	if len(ts) < 5 {
		return false
	}
	for _, u := range b.toks {
		if u.kind != kindContent {
			continue
		}
		us := s.stem(u)
		short, long := ts, us
		if len(short) > len(long) {
			short, long = long, short
		}
		if len(short) >= 5 && len(long)-len(short) <= 4 && string(long[:len(short)]) == string(short) {
			return true
		}
	}
	return false
}

// discordance reports (1) whether two shared content words appear in
// opposite orders on the two sides with a directional word between them
// on both: "convert Celsius to Fahrenheit" against "convert Fahrenheit to
// Celsius", "Messi better than Ronaldo" against "Ronaldo better than
// Messi". "Reset my password" against "password reset" or "the future of
// the party" against "the party's future" are common rephrasings, not
// swaps.
func (s *scratch) discordance() float32 {
	var pos [maxTokens]int8 // for each query token: position of its match in c, or -1
	var order [maxTokens]int8
	n := 0
	for i, t := range s.q.toks {
		if t.kind != kindContent || seenBefore(&s.q, i) {
			continue
		}
		for j, u := range s.c.toks {
			if u.hash == t.hash {
				pos[n] = int8(min(j, 127))
				order[n] = int8(min(i, 127))
				n++
				break
			}
		}
	}
	for a := 0; a < n; a++ {
		for b := a + 1; b < n; b++ {
			if (order[a] < order[b]) != (pos[a] < pos[b]) &&
				s.related(&s.q, int(order[a]), int(order[b])) && s.related(&s.c, int(pos[a]), int(pos[b])) {
				return 1
			}
		}
	}
	return 0
}

// related reports whether a directional word ("to", "than", "from",
// "into", ...) and no symmetric one ("and", "or", "vs", ...) stands between
// sd's tokens i and j: the two words play roles that swapping them would
// exchange.
func (s *scratch) related(sd *side, i, j int) bool {
	if i > j {
		i, j = j, i
	}
	dir := false
	for k := i + 1; k < j && k < len(sd.toks); k++ {
		switch string(s.stem(sd.toks[k])) {
		case "to", "than", "from", "into", "against", "over", "think", "about", "by", "with", "for":
			dir = true
		case "and", "or", "vs", "versus", "between", "both", "compar", "comparison", "differ", "differenc", "different", "similar":
			return false
		}
	}
	return dir
}

// negations counts sd's negations, leaving out the "or not" and "if not"
// of questions ("Do I love her or not?").
func (s *scratch) negations(sd *side) int {
	n := 0
	for i, t := range sd.toks {
		if t.kind != kindNegation {
			continue
		}
		if i > 0 && t.end > t.start {
			switch string(s.stem(sd.toks[i-1])) {
			case "or", "if", "whether":
				continue
			}
		}
		n++
	}
	return n
}

// possessives returns the set of grammatical persons of sd's possessive
// pronouns: 1 first, 2 second, 4 third.
func (s *scratch) possessives(sd *side) uint8 {
	var m uint8
	for _, t := range sd.toks {
		if t.kind != kindStop {
			continue
		}
		switch string(s.stem(t)) {
		case "my", "mine", "our", "ours":
			m |= 1
		case "your", "yours":
			m |= 2
		case "his", "her", "hers", "their", "theirs", "its":
			m |= 4
		}
	}
	return m
}

// charSim is the Jaccard similarity of the sets of character trigrams of
// the two sides' content words and numbers (hashed into 512 bits).
func (s *scratch) charSim() float32 {
	var a, b [8]uint64
	s.trigrams(&s.q, &a)
	s.trigrams(&s.c, &b)
	inter, union := 0, 0
	for i := range a {
		inter += bits.OnesCount64(a[i] & b[i])
		union += bits.OnesCount64(a[i] | b[i])
	}
	if union == 0 {
		return 1
	}
	return float32(inter) / float32(union)
}

func (s *scratch) trigrams(sd *side, set *[8]uint64) {
	for _, t := range sd.toks {
		if t.kind != kindContent && t.kind != kindNumber {
			continue
		}
		w := s.stem(t)
		// Trigrams of " w ": word boundaries count as characters.
		n := len(w) + 2
		at := func(i int) byte {
			if i == 0 || i == n-1 {
				return ' '
			}
			return w[i-1]
		}
		for i := 0; i+3 <= n; i++ {
			h := (uint32(at(i))*31+uint32(at(i+1)))*31 + uint32(at(i+2))
			h *= 2654435761
			set[h>>29] |= 1 << ((h >> 23) & 63)
		}
	}
}

// entitiesOnly counts a's distinct likely names that b does not contain
// in any case.
func (s *scratch) entitiesOnly(a, b *side) int {
	n := 0
	for i, t := range a.toks {
		if t.entity && !seenBefore(a, i) && !s.matches(t, b) {
			n++
		}
	}
	return n
}

// bigramJaccard compares the pairs of consecutive content words (stop
// words skipped) of the two sides; two sides without pairs compare as 1.
func (s *scratch) bigramJaccard() float32 {
	var bq, bc [maxTokens]uint64
	nq := bigrams(&s.q, bq[:0])
	nc := bigrams(&s.c, bc[:0])
	if len(nq) == 0 && len(nc) == 0 {
		return 1
	}
	inter := 0
	for _, x := range nq {
		for _, y := range nc {
			if x == y {
				inter++
				break
			}
		}
	}
	union := len(nq) + len(nc) - inter
	if union <= 0 {
		return 1
	}
	return float32(inter) / float32(union)
}

func bigrams(sd *side, out []uint64) []uint64 {
	prev := uint64(0)
	for _, t := range sd.toks {
		if t.kind != kindContent && t.kind != kindNumber {
			continue
		}
		if prev != 0 {
			out = append(out, prev*31+t.hash)
		}
		prev = t.hash
	}
	return out
}

func hasKind(sd *side, k uint8) bool {
	for _, t := range sd.toks {
		if t.kind == k {
			return true
		}
	}
	return false
}

// sameSet reports whether the distinct tokens of kind k are the same on
// both sides.
func sameSet(a, b *side, k uint8) bool {
	return subset(a, b, k) && subset(b, a, k)
}

func subset(a, b *side, k uint8) bool {
	for _, t := range a.toks {
		if t.kind != k {
			continue
		}
		found := false
		for _, u := range b.toks {
			if u.kind == k && u.hash == t.hash {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// edgePunct is the sentence punctuation sameWording ignores at the edges
// of words. Symbols that change what is asked (+ in C++, # in C#, - in
// -5) are not in it, nor is anything inside a word (5.5, Node.js, don't).
const edgePunct = "?!.,;:\"'()[]¿¡…«»“”‘’—–"

// sameWording reports whether a and b differ only in letter case, white
// space and sentence punctuation at the edges of words ("How do I reset my
// password?" and "how do i reset my password"): the same prompt, whatever
// cosine the embedding gives the pair. It does not allocate.
func sameWording(a, b string) bool {
	i, j := 0, 0
	for {
		var wa, wb string
		wa, i = nextWord(a, i)
		wb, j = nextWord(b, j)
		if wa == "" || wb == "" {
			return wa == wb
		}
		if !strings.EqualFold(wa, wb) {
			return false
		}
	}
}

// nextWord returns the next word of s from byte i on (a run of non-space
// runes with edgePunct trimmed; words that are all punctuation are
// skipped) and where to go on; "" at the end.
func nextWord(s string, i int) (string, int) {
	for i < len(s) {
		r, n := utf8.DecodeRuneInString(s[i:])
		if unicode.IsSpace(r) {
			i += n
			continue
		}
		start := i
		for i < len(s) {
			r, n := utf8.DecodeRuneInString(s[i:])
			if unicode.IsSpace(r) {
				break
			}
			i += n
		}
		if w := strings.Trim(s[start:i], edgePunct); w != "" {
			return w, i
		}
	}
	return "", i
}
