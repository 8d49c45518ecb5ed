// Package templates holds edgecache's predefined answers and honest busy
// messages, per route and per language, and chooses one for a request.
//
// A Set is loaded from the built-in defaults embedded in the binary and an
// optional operator directory of YAML files; operator entries override
// built-in ones (same template id; same route, lang and reason for busy
// messages). Every file is validated at load and all problems are reported
// together with file, line and field. A Set is immutable; a Watcher polls
// the directory and swaps in a new Set when it changes and validates,
// keeping the previous one otherwise.
//
// Templates are chosen by keywords found in the last user message (Match)
// or by the similarity of its embedding to example questions
// (MatchSemantic), for the route first and then for any route ("*"), in the
// requested language, then the route's default language, then English.
// Busy renders the message served when nothing else may be: it says the
// service is busy and when to retry.
//
// The package returns text and metadata only; wrapping it into an OpenAI
// response or SSE stream, and marking it as degraded, is the caller's job.
//
// File format (one or more *.yaml or *.yml files, each with any of the
// three sections):
//
//	templates:
//	  - id: password-reset        # unique; an operator id equal to a built-in one replaces it
//	    route: "*"                # route name or "*" (the default)
//	    intent: account           # free-form label, reported back in Match
//	    lang: en                  # BCP 47 tag, stored as its base language (zh-CN → zh)
//	    keywords: [password, reset, "forgot*"]  # "x*" matches words starting with x
//	    min_keywords: 1           # keywords that must be found; default 1 (0 without keywords)
//	    examples: ["I forgot my password"]      # for MatchSemantic
//	    max_chars: 0              # match only messages up to this many characters; 0 = any
//	    text: "You can reset your password at Settings → Security."
//	    disabled: false           # true removes the template (e.g. a built-in) with this id
//	busy:
//	  - route: "*"
//	    lang: zh
//	    reason: ""                # optional: used only for this degradation reason
//	    text: "当前请求较多，请在 {{.RetryAfter}} 秒后重试。"
//	routes:
//	  - route: support-cn         # the default language of a route
//	    lang: zh
//
// Template text is served as written. Busy text is a text/template with
// the fields of BusyData.
package templates

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"text/template"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// AnyRoute is the route of templates and busy messages that apply to every
// route.
const AnyRoute = "*"

// DefaultLang is the last language tried when choosing a template or a busy
// message.
const DefaultLang = "en"

// Template is one predefined answer, as loaded.
type Template struct {
	ID     string
	Route  string // route name or AnyRoute
	Intent string
	Lang   string // base language, e.g. "zh"
	Text   string // served as written
	Source string // "file:line" it was loaded from; built-ins are "builtin/<file>:line"
	// Keywords are normalised: NFKC, lower-case, single spaces.
	Keywords    []string
	MinKeywords int
	Examples    []string
	MaxChars    int // 0: any length
}

// BusyData is what a busy message's text/template can use.
type BusyData struct {
	RetryAfter int    // seconds, at least 1
	Route      string // the request's route
	Reason     string // the degradation reason, e.g. "upstream_503"
}

// Match is a chosen template.
type Match struct {
	Template
	// Hits are the keywords found in the message (Match) ...
	Hits []string
	// ... or Score is the best similarity between the message and an
	// example (MatchSemantic).
	Score float32
}

// Set is an immutable collection of templates, busy messages and route
// languages. A nil *Set has no templates and renders the fallback busy
// message. It is safe for concurrent use.
type Set struct {
	templates []*tmpl               // by ID
	byKey     map[routeLang][]*tmpl // candidates per (route, lang), by ID
	busy      map[busyKey]*busyMsg  // (route, lang, reason)
	routeLang map[string]string     // route → default language
	dir       string                // operator directory, "" for built-ins only

	vecMu   sync.Mutex
	vectors map[string]*exampleVectors // by Embedder.Name()
}

type tmpl struct {
	Template
	kws []keyword
}

type keyword struct {
	text   string // normalised, without a trailing "*"
	prefix bool   // "text*": matches words that start with text
	cjk    bool   // contains CJK runes: matched as a substring
}

type routeLang struct{ route, lang string }

type busyKey struct{ route, lang, reason string }

type busyMsg struct {
	text   string
	source string
	tmpl   *template.Template
}

// Dir returns the operator directory the Set was loaded from ("" for the
// built-ins only).
func (s *Set) Dir() string {
	if s == nil {
		return ""
	}
	return s.dir
}

// Templates returns the templates of the Set sorted by ID (copies).
func (s *Set) Templates() []Template {
	if s == nil {
		return nil
	}
	out := make([]Template, len(s.templates))
	for i, t := range s.templates {
		out[i] = t.Template
		out[i].Keywords = slices.Clone(t.Keywords)
		out[i].Examples = slices.Clone(t.Examples)
	}
	return out
}

// ByID returns the template with id, e.g. for a route that names the
// template it falls back to.
func (s *Set) ByID(id string) (Template, bool) {
	if s == nil {
		return Template{}, false
	}
	i, ok := slices.BinarySearchFunc(s.templates, id, func(t *tmpl, id string) int { return strings.Compare(t.ID, id) })
	if !ok {
		return Template{}, false
	}
	return s.templates[i].copy(), true
}

// RouteLang returns the default language configured for route ("" when
// none is).
func (s *Set) RouteLang(route string) string {
	if s == nil {
		return ""
	}
	return s.routeLang[route]
}

// langs returns the languages to try, in order: the requested one (if it
// is a known tag), the route's default, DefaultLang.
func (s *Set) langs(route, lang string) []string {
	out := make([]string, 0, 3)
	if l, ok := NormalizeLang(lang); ok {
		out = append(out, l)
	}
	if l := s.routeLang[route]; l != "" && !slices.Contains(out, l) {
		out = append(out, l)
	}
	if !slices.Contains(out, DefaultLang) {
		out = append(out, DefaultLang)
	}
	return out
}

// candidates returns the template lists to try in order for route and
// lang: the route's own, then those for any route.
func (s *Set) candidates(route, lang string) [][]*tmpl {
	out := make([][]*tmpl, 0, 2)
	if route != AnyRoute {
		if ts := s.byKey[routeLang{route, lang}]; len(ts) > 0 {
			out = append(out, ts)
		}
	}
	if ts := s.byKey[routeLang{AnyRoute, lang}]; len(ts) > 0 {
		out = append(out, ts)
	}
	return out
}

// Match chooses the template to answer text (the last user message) on
// route. Languages are tried in order — lang (any BCP 47 tag; "" for
// unknown), the route's default, English — and within a language the
// route's own templates before those for any route. Among those, a template
// qualifies when at least MinKeywords of its keywords occur in text
// (case-insensitive; whole words for Latin scripts, substrings for CJK) and
// text is not longer than its MaxChars; the one with the most keywords
// found wins, then the one with fewer keywords (more specific), then the
// smaller ID. Templates with neither keywords nor MinKeywords match any
// text of the route with zero hits.
func (s *Set) Match(route, lang, text string) (Match, bool) {
	if s == nil || len(s.templates) == 0 {
		return Match{}, false
	}
	msg := normalize(text)
	chars := utf8.RuneCountInString(strings.TrimSpace(text))
	for _, l := range s.langs(route, lang) {
		for _, ts := range s.candidates(route, l) {
			var best *tmpl
			var bestHits []string
			for _, t := range ts {
				if t.MaxChars > 0 && chars > t.MaxChars {
					continue
				}
				hits := t.hits(msg)
				if len(hits) < t.MinKeywords {
					continue
				}
				if best == nil || better(len(hits), len(t.kws), len(bestHits), len(best.kws)) {
					best, bestHits = t, hits
				}
			}
			if best != nil {
				return Match{Template: best.copy(), Hits: bestHits}, true
			}
		}
	}
	return Match{}, false
}

// better reports whether a template with hits found of kws keywords beats
// the current best; ties keep the current one (the smaller ID, as lists are
// sorted by ID).
func better(hits, kws, bestHits, bestKws int) bool {
	if hits != bestHits {
		return hits > bestHits
	}
	return kws < bestKws
}

func (t *tmpl) copy() Template {
	c := t.Template
	c.Keywords = slices.Clone(t.Keywords)
	c.Examples = slices.Clone(t.Examples)
	return c
}

// hits returns the keywords of t found in msg (normalised).
func (t *tmpl) hits(msg string) []string {
	var out []string
	for _, k := range t.kws {
		if k.in(msg) {
			out = append(out, k.String())
		}
	}
	return out
}

func (k keyword) String() string {
	if k.prefix {
		return k.text + "*"
	}
	return k.text
}

// in reports whether k occurs in msg: as a substring when k contains CJK
// runes, else only where it is not glued to other letters or digits of a
// space-separated script (CJK neighbours are boundaries).
func (k keyword) in(msg string) bool {
	if k.cjk {
		return strings.Contains(msg, k.text)
	}
	first, _ := utf8.DecodeRuneInString(k.text)
	last, _ := utf8.DecodeLastRuneInString(k.text)
	for from := 0; from < len(msg); {
		i := strings.Index(msg[from:], k.text)
		if i < 0 {
			return false
		}
		start, end := from+i, from+i+len(k.text)
		before, _ := utf8.DecodeLastRuneInString(msg[:start])
		after, _ := utf8.DecodeRuneInString(msg[end:])
		okStart := start == 0 || !isWordRune(first) || !isWordRune(before)
		okEnd := k.prefix || end == len(msg) || !isWordRune(last) || !isWordRune(after)
		if okStart && okEnd {
			return true
		}
		_, size := utf8.DecodeRuneInString(msg[start:])
		from = start + size
	}
	return false
}

// isWordRune reports whether r belongs to a word of a space-separated
// script.
func isWordRune(r rune) bool {
	return (unicode.IsLetter(r) || unicode.IsDigit(r) || r == '_') && !isCJK(r)
}

// normalize folds text for keyword matching: NFKC (full-width Latin to
// ASCII), lower case, every run of white space to one space, trimmed.
func normalize(text string) string {
	return strings.Join(strings.Fields(strings.ToLower(norm.NFKC.String(text))), " ")
}

// Busy renders the honest busy message for route in lang (any BCP 47 tag;
// "" for unknown) with retryAfter rounded up to whole seconds (at least 1)
// and reason (e.g. "upstream_503", "rate_limit_exceeded"). Languages are
// tried as in Match; within a language the first of these that exists
// wins: (route, reason), (route, any reason), ("*", reason), ("*", any
// reason). It never returns an empty string.
func (s *Set) Busy(route, lang string, retryAfter time.Duration, reason string) string {
	data := BusyData{RetryAfter: retrySeconds(retryAfter), Route: route, Reason: reason}
	if s != nil {
		for _, l := range s.langs(route, lang) {
			for _, k := range busyKeys(route, l, reason) {
				m, ok := s.busy[k]
				if !ok {
					continue
				}
				if out, err := m.render(data); err == nil {
					return out
				}
			}
		}
	}
	return fallbackBusy(data.RetryAfter)
}

func busyKeys(route, lang, reason string) []busyKey {
	routes := []string{route}
	if route != AnyRoute {
		routes = append(routes, AnyRoute)
	}
	keys := make([]busyKey, 0, 4)
	for _, r := range routes {
		if reason != "" {
			keys = append(keys, busyKey{r, lang, reason})
		}
		keys = append(keys, busyKey{r, lang, ""})
	}
	return keys
}

func (m *busyMsg) render(d BusyData) (string, error) {
	var b strings.Builder
	if err := m.tmpl.Execute(&b, d); err != nil {
		return "", err
	}
	out := strings.TrimSpace(b.String())
	if out == "" {
		return "", errRendersEmpty
	}
	return out, nil
}

var errRendersEmpty = errors.New("renders as empty text")

// retrySeconds rounds d up to whole seconds, at least 1.
func retrySeconds(d time.Duration) int {
	if d <= time.Second {
		return 1
	}
	s := math.Ceil(d.Seconds())
	if s > math.MaxInt32 {
		return math.MaxInt32
	}
	return int(s)
}

// fallbackBusy is served only if no busy message renders, which validation
// at load prevents.
func fallbackBusy(secs int) string {
	return fmt.Sprintf("The service is busy and could not answer this request. Please retry in %d seconds.", secs)
}

// Embedder embeds texts for MatchSemantic; the implementations in
// edgecache's embed package satisfy it. Vectors of different Names are never
// compared.
type Embedder interface {
	Embed(ctx context.Context, texts []string) ([][]float32, error)
	Name() string
}

// exampleVectors are the embeddings of every template's examples, made by
// one embedder.
type exampleVectors struct {
	byTemplate map[*tmpl][][]float32
}

// MatchSemantic chooses the template whose example questions are most
// similar (cosine) to text, at least minScore, trying routes and languages
// in the order of Match. Only templates with examples and a MaxChars that
// admits text take part. The examples are embedded with e on first use and
// kept with the Set; an embedding error is returned and nothing is kept.
func (s *Set) MatchSemantic(ctx context.Context, e Embedder, route, lang, text string, minScore float32) (Match, bool, error) {
	if s == nil || e == nil {
		return Match{}, false, nil
	}
	ev, err := s.exampleVectors(ctx, e)
	if err != nil || len(ev.byTemplate) == 0 {
		return Match{}, false, err
	}
	qs, err := e.Embed(ctx, []string{text})
	if err != nil {
		return Match{}, false, fmt.Errorf("templates: embed message: %w", err)
	}
	if len(qs) != 1 {
		return Match{}, false, fmt.Errorf("templates: embedder %s returned %d vectors for 1 text", e.Name(), len(qs))
	}
	q := qs[0]
	chars := utf8.RuneCountInString(strings.TrimSpace(text))
	for _, l := range s.langs(route, lang) {
		for _, ts := range s.candidates(route, l) {
			var best *tmpl
			var bestScore float32
			for _, t := range ts {
				if t.MaxChars > 0 && chars > t.MaxChars {
					continue
				}
				for _, v := range ev.byTemplate[t] {
					if sc := cosine(q, v); sc >= minScore && (best == nil || sc > bestScore) {
						best, bestScore = t, sc
					}
				}
			}
			if best != nil {
				return Match{Template: best.copy(), Score: bestScore}, true, nil
			}
		}
	}
	return Match{}, false, nil
}

func (s *Set) exampleVectors(ctx context.Context, e Embedder) (*exampleVectors, error) {
	name := e.Name()
	s.vecMu.Lock()
	ev, ok := s.vectors[name]
	s.vecMu.Unlock()
	if ok {
		return ev, nil
	}
	// Embed outside the lock; two concurrent first calls both embed and
	// the first to finish is kept.
	var texts []string
	var owners []*tmpl
	for _, t := range s.templates {
		for _, x := range t.Examples {
			texts = append(texts, x)
			owners = append(owners, t)
		}
	}
	ev = &exampleVectors{byTemplate: make(map[*tmpl][][]float32)}
	if len(texts) > 0 {
		vs, err := e.Embed(ctx, texts)
		if err != nil {
			return nil, fmt.Errorf("templates: embed examples with %s: %w", name, err)
		}
		if len(vs) != len(texts) {
			return nil, fmt.Errorf("templates: embedder %s returned %d vectors for %d examples", name, len(vs), len(texts))
		}
		for i, v := range vs {
			ev.byTemplate[owners[i]] = append(ev.byTemplate[owners[i]], v)
		}
	}
	s.vecMu.Lock()
	defer s.vecMu.Unlock()
	if prev, ok := s.vectors[name]; ok {
		return prev, nil
	}
	if s.vectors == nil {
		s.vectors = make(map[string]*exampleVectors)
	}
	s.vectors[name] = ev
	return ev, nil
}

// cosine returns the cosine similarity of a and b, 0 when their lengths
// differ or either is zero.
func cosine(a, b []float32) float32 {
	if len(a) != len(b) || len(a) == 0 {
		return 0
	}
	var dot, na, nb float64
	for i := range a {
		dot += float64(a[i]) * float64(b[i])
		na += float64(a[i]) * float64(a[i])
		nb += float64(b[i]) * float64(b[i])
	}
	if na == 0 || nb == 0 {
		return 0
	}
	return float32(dot / math.Sqrt(na*nb))
}
