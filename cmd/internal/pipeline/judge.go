package pipeline

// The shadow judge: does a fresh upstream answer say what the cached answer
// served for a semantic hit said? It never sees the questions, only the two
// answers, because the question it must settle is whether serving the
// cached answer was right, and the fresh answer is the upstream's own word
// on that.
//
// An embedding cosine alone cannot settle it: answers to "How do I learn
// Python?" and "How do I learn Java?" differ in one word, and USE-lite puts
// "15 % of 80 is 12" and "15 % of 90 is 13.5" at 0.96 (SEMANTIC.md's known
// failure modes, now on the answer side). So the judge first checks the
// specifics, then the topic:
//
//  1. The same text (case and spacing aside) agrees.
//  2. A fact check fails → disagree: both answers state numbers and each
//     has one the other lacks (a number changed, not one added); both name
//     identifiers (words mixing letters and digits: versions, codes,
//     hashes; and code-like words: key combinations, commands, flags,
//     paths) and each has one the other lacks; both name entities
//     (capitalised words inside a sentence, acronyms) and neither names
//     one the other capitalises anywhere; or, worded alike (sameWordingAt
//     of their content words in common), one uses a word whose opposite
//     the other uses ("enable" against "disable", the verifier's table),
//     or, worded nearly the same (negatedAt), one is negated where the
//     other is not.
//  3. Otherwise the cosine of the answers' embeddings decides: at least
//     AgreeAt agrees, or AgreeWithFactsAt when the answers share a number
//     or identifier (the same specifics, worded differently); under
//     DisagreeAt disagrees; in between is unsure.
//
// The embedder is the semantic tier's (USE-lite by default); the lexical
// one stands in when it fails or cannot represent an answer, so a judgement
// never waits on a broken model. Its accuracy on labelled answer pairs is
// measured by TestJudgeAccuracy and reported in the README.

import (
	"context"
	"encoding/json"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/edgecache/edgecache/cache/semantic/verify"
	"github.com/edgecache/edgecache/cmd/internal/openai"
	"github.com/edgecache/edgecache/embed"
	"github.com/edgecache/edgecache/embed/lexical"
)

// Verdict is the judge's answer.
type Verdict uint8

// The verdicts. Unsure is neither evidence for nor against the hit: it
// widens the estimate's interval (see shadowCounts.interval).
const (
	Agree Verdict = iota
	Disagree
	Unsure
	numVerdicts
)

// String is the verdict's label on /metrics and in the journal.
func (v Verdict) String() string {
	switch v {
	case Agree:
		return "agree"
	case Disagree:
		return "disagree"
	}
	return "unsure"
}

// Judgement is one comparison of a cached answer with a fresh one.
type Judgement struct {
	Verdict Verdict
	// Score is how strongly the answers agree, in [0, 1]: the cosine of
	// their embeddings, halved when a fact check failed, 1 for the same
	// text.
	Score  float32
	Cosine float32
	// Reason names what decided: "same_text", "cosine", "shared_facts",
	// or the fact check that failed ("numbers", "identifiers",
	// "entities", "opposite").
	Reason string
}

// Judge compares answers. The zero value is not usable; build it with
// newJudge. It is safe for concurrent use.
type Judge struct {
	embedder, fallback embed.Embedder
	verifier           *verify.Verifier // its opposite-word table
	// Thresholds on the answers' cosine (see the file comment).
	AgreeAt, AgreeWithFactsAt, DisagreeAt float32
}

// Default judge thresholds, set on the realistic and llmsim pairs of
// judge_test.go with USE-lite: rewordings of one answer measured 0.85–0.93,
// answers to different questions of the same topic 0.70–0.97 (which the
// fact checks catch), unrelated answers under 0.3.
const (
	defaultAgreeAt          = 0.85
	defaultAgreeWithFactsAt = 0.6
	defaultDisagreeAt       = 0.45
)

// sameWordingAt is the share of content words in common (the verifier's
// Jaccard) from which two answers count as worded alike. Rewordings of
// one answer measured 0.17–0.8 in judge_test.go, answers that differ by
// one opposite word 0.44–0.6. A negation is held against answers only
// from negatedAt: longer answers that share most words differ in a "no"
// or "without" by phrasing more often than in meaning.
const (
	sameWordingAt = 0.4
	negatedAt     = 0.7
)

// newJudge returns a judge embedding with e (the lexical embedder when nil).
func newJudge(e embed.Embedder) *Judge {
	lx := lexical.New(0)
	if e == nil {
		e = lx
	}
	return &Judge{embedder: e, fallback: lx, verifier: verify.New(),
		AgreeAt: defaultAgreeAt, AgreeWithFactsAt: defaultAgreeWithFactsAt, DisagreeAt: defaultDisagreeAt}
}

// Judge compares the text of a cached answer with a fresh one.
func (j *Judge) Judge(ctx context.Context, cached, fresh string) Judgement {
	if normalizeAnswer(cached) == normalizeAnswer(fresh) {
		return Judgement{Verdict: Agree, Score: 1, Cosine: 1, Reason: "same_text"}
	}
	cos := j.cosine(ctx, cached, fresh)
	a, b := extractFacts(cached), extractFacts(fresh)
	conflict := a.conflict(b)
	if conflict == "" {
		// The verifier's opposite words and negation are questions'
		// features: on answers worded differently they fire on phrasing
		// ("exit" in one, "enter :q!" in the other), so only answers
		// worded alike are held to them.
		switch f := j.verifier.Extract(fresh, cached, cos); {
		case f.Jaccard >= sameWordingAt && f.Opposite > 0:
			conflict = "opposite"
		case f.Jaccard >= negatedAt && f.Negation > 0:
			conflict = "negation"
		}
	}
	if conflict != "" {
		return Judgement{Verdict: Disagree, Score: max(cos, 0) / 2, Cosine: cos, Reason: conflict}
	}
	jd := Judgement{Verdict: Unsure, Score: max(cos, 0), Cosine: cos, Reason: "cosine"}
	switch {
	case cos >= j.AgreeAt:
		jd.Verdict = Agree
	case cos >= j.AgreeWithFactsAt && a.shareSpecifics(b):
		jd.Verdict, jd.Reason = Agree, "shared_facts"
	case cos < j.DisagreeAt:
		jd.Verdict = Disagree
	}
	return jd
}

// cosine embeds both answers with the judge's embedder, or the lexical one
// when it fails (or cannot represent them: their cosine then says nothing).
func (j *Judge) cosine(ctx context.Context, a, b string) float32 {
	for _, e := range []embed.Embedder{j.embedder, j.fallback} {
		if _, cov := embed.SpaceOf(e, a); cov < embed.MinCoverage {
			continue
		}
		if _, cov := embed.SpaceOf(e, b); cov < embed.MinCoverage {
			continue
		}
		vs, err := e.Embed(ctx, []string{a, b})
		if err == nil && len(vs) == 2 && len(vs[0]) == len(vs[1]) {
			return embed.Dot(vs[0], vs[1])
		}
	}
	return 0
}

// normalizeAnswer folds case and white space.
func normalizeAnswer(s string) string { return strings.Join(strings.Fields(strings.ToLower(s)), " ") }

// facts are the specifics an answer states.
type facts struct {
	numbers, ids map[string]bool
	// entities are names (capitalised inside a sentence, acronyms); caps
	// every capitalised word, sentence openings included, which another
	// answer's entity may meet ("Tokyo is…" against "…is Tokyo").
	entities, caps map[string]bool
}

// conflict names the first fact check that fails between a and b, or "".
func (a facts) conflict(b facts) string {
	switch {
	case changed(a.numbers, b.numbers):
		return "numbers"
	case changed(a.ids, b.ids):
		return "identifiers"
	case len(a.entities) > 0 && len(b.entities) > 0 && !overlap(a.entities, b.caps) && !overlap(b.entities, a.caps):
		return "entities"
	}
	return ""
}

// shareSpecifics reports whether a and b state a number or an identifier
// in common.
func (a facts) shareSpecifics(b facts) bool {
	return overlap(a.numbers, b.numbers) || overlap(a.ids, b.ids)
}

// changed reports whether each side has a value the other lacks: one was
// replaced, not merely added or left out.
func changed(a, b map[string]bool) bool {
	return len(a) > 0 && len(b) > 0 && !subset(a, b) && !subset(b, a)
}

func subset(a, b map[string]bool) bool {
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

func overlap(a, b map[string]bool) bool {
	for k := range a {
		if b[k] {
			return true
		}
	}
	return false
}

// maxFactBytes bounds the text scanned for facts: the opening of a long
// answer states what it is about.
const maxFactBytes = 8 << 10

// extractFacts scans an answer for numbers, identifiers and entities.
func extractFacts(s string) facts {
	if len(s) > maxFactBytes {
		s = s[:maxFactBytes]
	}
	f := facts{numbers: map[string]bool{}, ids: map[string]bool{}, entities: map[string]bool{}, caps: map[string]bool{}}
	sentenceStart := true
	for _, w := range strings.FieldsFunc(s, func(r rune) bool { return unicode.IsSpace(r) || r == '(' || r == ')' || r == '"' }) {
		word := strings.TrimRight(w, ".,;:!?'’\"")
		ends := word != w && strings.ContainsAny(w[len(word):], ".!?")
		word = strings.TrimLeft(word, "'‘\"*_`[")
		if name, ok := strings.CutSuffix(word, "'s"); ok {
			word = name
		} else if name, ok := strings.CutSuffix(word, "’s"); ok {
			word = name
		}
		switch hasDigit, hasLetter := kinds(word); {
		case hasDigit && !hasLetter:
			if n := normalizeNumber(word); n != "" {
				f.numbers[n] = true
			}
		case hasDigit && hasLetter, codeLike(word):
			f.ids[strings.ToLower(idCore(word))] = true
		case isEntity(word, sentenceStart):
			f.entities[strings.ToLower(word)] = true
		}
		if r, _ := utf8.DecodeRuneInString(word); unicode.IsUpper(r) {
			f.caps[strings.ToLower(word)] = true
		}
		sentenceStart = ends || strings.HasSuffix(w, ":")
	}
	return f
}

// codeLike reports whether a word reads as code rather than prose: a key
// combination (Ctrl+Shift+T), a command (:wq), a flag (-d), a path or URL.
func codeLike(w string) bool {
	if len(w) < 2 {
		return false
	}
	return strings.ContainsAny(w, "+:/=_#@\\") || w[0] == '-' && w[1] != '-' && w[1] != ' '
}

// kinds reports whether word has digits and letters.
func kinds(word string) (digit, letter bool) {
	for _, r := range word {
		switch {
		case r >= '0' && r <= '9':
			digit = true
		case unicode.IsLetter(r):
			letter = true
		}
	}
	return digit, letter
}

// normalizeNumber reads "1,000", "12.50", "15%" and "$3" as "1000", "12.5",
// "15" and "3".
func normalizeNumber(w string) string {
	var b strings.Builder
	for _, r := range w {
		switch {
		case r >= '0' && r <= '9', r == '.':
			b.WriteRune(r)
		case r == ',' || r == '%' || r == '$' || r == '€' || r == '£' || r == '¥' || r == '+' || r == '-':
		default:
			return "" // "10:30", "1/2": kept out rather than misread
		}
	}
	n := strings.Trim(b.String(), ".")
	if strings.Contains(n, ".") {
		n = strings.TrimRight(strings.TrimRight(n, "0"), ".")
	}
	return n
}

// idCore is an identifier without a label before a colon ("sim:3fa2…" is
// "3fa2…"; "v1.2" stays).
func idCore(w string) string {
	if i := strings.LastIndexByte(w, ':'); i >= 0 && i+1 < len(w) {
		return w[i+1:]
	}
	return w
}

// isEntity reports whether a word looks like a name: capitalised inside a
// sentence, or an acronym of two or more capitals anywhere. The first word
// of a sentence is capitalised anyway and tells nothing.
func isEntity(w string, sentenceStart bool) bool {
	r, size := utf8.DecodeRuneInString(w)
	if size == 0 || !unicode.IsUpper(r) || utf8.RuneCountInString(w) < 2 || commonCapitalised[w] {
		return false
	}
	upper := 0
	for _, c := range w {
		if unicode.IsUpper(c) {
			upper++
		} else if !unicode.IsLetter(c) && c != '-' {
			return false
		}
	}
	if upper >= 2 && upper == utf8.RuneCountInString(w) {
		return true // an acronym
	}
	return !sentenceStart
}

// commonCapitalised are words written with a capital inside sentences
// that name nothing.
var commonCapitalised = map[string]bool{"I": true, "I'm": true, "I've": true, "I'll": true, "I'd": true, "OK": true}

// answerText is the assistant text of a stored or fresh chat (or legacy
// completion) answer, or false when the body holds none.
func answerText(body []byte) (string, bool) {
	var r openai.Response
	if err := json.Unmarshal(body, &r); err != nil || len(r.Choices) == 0 {
		return "", false
	}
	c := r.Choices[0]
	switch {
	case c.Message != nil && c.Message.Content != nil:
		return *c.Message.Content, true
	case c.Text != nil:
		return *c.Text, true
	}
	return "", false
}
