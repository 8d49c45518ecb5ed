package templates

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/template"
	"unicode"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// builtinFS holds the built-in defaults: busy messages in several
// languages (always en and zh for every route) and a few generic
// templates.
//
//go:embed builtin/*.yaml
var builtinFS embed.FS

// MaxFileBytes is the largest template file Load accepts.
const MaxFileBytes = 4 << 20

// Problem is one thing wrong in a template file.
type Problem struct {
	File   string // path as given to Load joined with the file name; "builtin/<name>" for built-ins
	Line   int    // 1-based; 0 when not tied to a position
	Column int    // 1-based; 0 when unknown
	Field  string // e.g. "templates[2].lang"; "" for the whole file
	Msg    string
}

func (p Problem) String() string {
	var b strings.Builder
	if p.File != "" {
		b.WriteString(p.File)
		if p.Line > 0 {
			fmt.Fprintf(&b, ":%d", p.Line)
			if p.Column > 0 {
				fmt.Fprintf(&b, ":%d", p.Column)
			}
		}
		b.WriteString(": ")
	}
	if p.Field != "" {
		b.WriteString(p.Field)
		b.WriteString(": ")
	}
	b.WriteString(p.Msg)
	return b.String()
}

// ValidationError lists every problem found by Load. Nothing of a Set that
// fails validation is used.
type ValidationError struct {
	Problems []Problem
}

// maxListed bounds the problems an error message lists.
const maxListed = 50

func (e *ValidationError) Error() string {
	if len(e.Problems) == 1 {
		return "templates: " + e.Problems[0].String()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "templates: %d problems:", len(e.Problems))
	for i, p := range e.Problems {
		if i == maxListed {
			fmt.Fprintf(&b, "\n\t… and %d more", len(e.Problems)-maxListed)
			break
		}
		b.WriteString("\n\t")
		b.WriteString(p.String())
	}
	return b.String()
}

// Load returns the built-in defaults merged with the operator templates in
// dir (every *.yaml and *.yml file, sorted by name; hidden files and
// sub-directories are ignored, symbolic links are followed). If dir is
// empty, only the built-ins are loaded. Operator entries replace built-in
// ones with the same template id, or the same route, lang and reason for
// busy messages; within the operator files every id, busy key and route
// must be unique. Any problem fails the whole load with a
// *ValidationError that lists them all; an unreadable directory fails with
// the I/O error.
func Load(dir string) (*Set, error) {
	return load(builtinFS, "builtin", dir)
}

// load merges the *.yaml files of builtin (under builtinDir) with dir.
func load(builtin fs.FS, builtinDir, dir string) (*Set, error) {
	l := newLoader()
	names, err := fs.Glob(builtin, path.Join(builtinDir, "*.yaml"))
	if err != nil {
		return nil, fmt.Errorf("templates: built-ins: %w", err)
	}
	slices.Sort(names)
	for _, name := range names {
		data, err := fs.ReadFile(builtin, name)
		if err != nil {
			return nil, fmt.Errorf("templates: built-ins: %w", err)
		}
		l.file(name, data)
	}
	if dir != "" {
		l.nextLayer()
		files, err := listFiles(dir)
		if err != nil {
			return nil, err
		}
		for _, f := range files {
			if f.size > MaxFileBytes {
				l.problem(f.path, nil, "", fmt.Sprintf("file is %d bytes, more than the %d allowed", f.size, MaxFileBytes))
				continue
			}
			data, err := os.ReadFile(f.path)
			if err != nil {
				return nil, fmt.Errorf("templates: %w", err)
			}
			l.file(f.path, data)
		}
	}
	return l.build(dir)
}

type fileInfo struct {
	path  string
	name  string
	size  int64
	mtime int64
}

// listFiles returns the template files of dir sorted by name.
func listFiles(dir string) ([]fileInfo, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("templates: %w", err)
	}
	var out []fileInfo
	for _, e := range entries {
		name := e.Name()
		ext := filepath.Ext(name)
		if strings.HasPrefix(name, ".") || (ext != ".yaml" && ext != ".yml") {
			continue
		}
		p := filepath.Join(dir, name)
		st, err := os.Stat(p) // follows links (Kubernetes ConfigMap volumes)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue // removed meanwhile, or a dangling link
			}
			return nil, fmt.Errorf("templates: %w", err)
		}
		if !st.Mode().IsRegular() {
			continue
		}
		out = append(out, fileInfo{path: p, name: name, size: st.Size(), mtime: st.ModTime().UnixNano()})
	}
	return out, nil // ReadDir sorts by name
}

// loader accumulates entries layer by layer (built-ins, then operator
// files) and every problem found.
type loader struct {
	problems  []Problem
	templates map[string]*tmpl
	busy      map[busyKey]*busyMsg
	routeLang map[string]string

	// Sources of what the current layer defined, to report duplicates.
	ids      map[string]string
	busyKeys map[busyKey]string
	routes   map[string]string
}

func newLoader() *loader {
	l := &loader{
		templates: make(map[string]*tmpl),
		busy:      make(map[busyKey]*busyMsg),
		routeLang: make(map[string]string),
	}
	l.nextLayer()
	return l
}

// nextLayer starts a layer whose entries override the previous ones.
func (l *loader) nextLayer() {
	l.ids = make(map[string]string)
	l.busyKeys = make(map[busyKey]string)
	l.routes = make(map[string]string)
}

func (l *loader) problem(file string, n *yaml.Node, field, msg string) {
	p := Problem{File: file, Field: field, Msg: msg}
	if n != nil {
		p.Line, p.Column = n.Line, n.Column
	}
	l.problems = append(l.problems, p)
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// file parses every YAML document of one file.
func (l *loader) file(name string, data []byte) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			p := Problem{File: name, Msg: "invalid YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}
			if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
				p.Line, _ = strconv.Atoi(m[1])
				p.Msg = "invalid YAML: " + m[2]
			}
			l.problems = append(l.problems, p)
			return
		}
		l.document(name, &doc)
	}
}

func (l *loader) document(file string, doc *yaml.Node) {
	root := doc
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			return
		}
		root = root.Content[0]
	}
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return // an empty document
	}
	l.fields(file, "", root, []string{"templates", "busy", "routes"}, func(key string, _, v *yaml.Node) {
		items, ok := l.list(file, key, v)
		if !ok {
			return
		}
		for i, item := range items {
			field := fmt.Sprintf("%s[%d]", key, i)
			switch key {
			case "templates":
				l.template(file, field, item)
			case "busy":
				l.busyMessage(file, field, item)
			case "routes":
				l.routeEntry(file, field, item)
			}
		}
	})
}

var (
	templateFields = []string{"id", "route", "intent", "lang", "keywords", "min_keywords", "examples", "max_chars", "text", "disabled"}
	busyFields     = []string{"route", "lang", "reason", "text"}
	routeFields    = []string{"route", "lang"}
)

func (l *loader) template(file, field string, n *yaml.Node) {
	t := &tmpl{Template: Template{Route: AnyRoute, Source: fmt.Sprintf("%s:%d", file, n.Line)}}
	var disabled, haveMin bool
	var idNode, langNode, textNode, kwNode, minNode *yaml.Node
	var rawKeywords []string
	if !l.fields(file, field, n, templateFields, func(key string, _, v *yaml.Node) {
		f := field + "." + key
		switch key {
		case "id":
			idNode = v
			t.ID = l.name(file, f, v, false)
		case "route":
			t.Route = l.route(file, f, v)
		case "intent":
			t.Intent, _ = l.str(file, f, v)
		case "lang":
			langNode = v
			t.Lang = l.lang(file, f, v)
		case "keywords":
			kwNode = v
			rawKeywords = l.strs(file, f, v)
		case "min_keywords":
			minNode, haveMin = v, true
			t.MinKeywords = l.count(file, f, v)
		case "examples":
			for i, x := range l.strs(file, f, v) {
				if x = strings.TrimSpace(x); x == "" {
					l.problem(file, v.Content[i], fmt.Sprintf("%s[%d]", f, i), "empty example")
					continue
				}
				t.Examples = append(t.Examples, x)
			}
		case "max_chars":
			t.MaxChars = l.count(file, f, v)
		case "text":
			textNode = v
			s, _ := l.str(file, f, v)
			t.Text = strings.TrimSpace(s)
		case "disabled":
			disabled = l.bool(file, f, v)
		}
	}) {
		return
	}
	if idNode == nil {
		l.problem(file, n, field+".id", "missing (every template needs a unique id)")
	}
	if t.ID == "" {
		return // reported
	}
	if prev, dup := l.ids[t.ID]; dup {
		l.problem(file, n, field+".id", fmt.Sprintf("duplicate id %q (first defined at %s)", t.ID, prev))
		return
	}
	l.ids[t.ID] = t.Source
	if disabled {
		delete(l.templates, t.ID)
		return
	}
	if langNode == nil {
		l.problem(file, n, field+".lang", "missing (a BCP 47 tag such as en, zh, zh-CN, ja)")
	}
	if t.Text == "" {
		at := textNode
		if at == nil {
			at = n
		}
		l.problem(file, at, field+".text", "missing or empty (a template must have the answer text)")
	}
	for i, k := range rawKeywords {
		kw, msg := parseKeyword(k)
		if msg != "" {
			l.problem(file, kwNode.Content[i], fmt.Sprintf("%s.keywords[%d]", field, i), msg)
			continue
		}
		if !slices.Contains(t.Keywords, kw.String()) {
			t.Keywords = append(t.Keywords, kw.String())
			t.kws = append(t.kws, kw)
		}
	}
	if !haveMin && len(t.kws) > 0 {
		t.MinKeywords = 1
	}
	if t.MinKeywords > len(t.kws) && minNode != nil {
		l.problem(file, minNode, field+".min_keywords",
			fmt.Sprintf("%d is more than the %d keywords, so the template could never match", t.MinKeywords, len(t.kws)))
	}
	l.templates[t.ID] = t
}

// parseKeyword normalises one keyword; msg explains why it is rejected.
func parseKeyword(s string) (kw keyword, msg string) {
	s = normalize(s)
	if strings.HasSuffix(s, "*") {
		kw.prefix = true
		s = strings.TrimSpace(strings.TrimSuffix(s, "*"))
	}
	switch {
	case s == "":
		return kw, "empty keyword"
	case strings.Contains(s, "*"):
		return kw, fmt.Sprintf("keyword %q: '*' is only allowed at the end", s)
	}
	kw.text = s
	kw.cjk = strings.ContainsFunc(s, isCJK)
	return kw, ""
}

func (l *loader) busyMessage(file, field string, n *yaml.Node) {
	k := busyKey{route: AnyRoute}
	m := &busyMsg{source: fmt.Sprintf("%s:%d", file, n.Line)}
	var langNode, textNode *yaml.Node
	if !l.fields(file, field, n, busyFields, func(key string, _, v *yaml.Node) {
		f := field + "." + key
		switch key {
		case "route":
			k.route = l.route(file, f, v)
		case "lang":
			langNode = v
			k.lang = l.lang(file, f, v)
		case "reason":
			k.reason = l.name(file, f, v, true)
		case "text":
			textNode = v
			s, _ := l.str(file, f, v)
			m.text = strings.TrimSpace(s)
		}
	}) {
		return
	}
	if langNode == nil {
		l.problem(file, n, field+".lang", "missing (a BCP 47 tag such as en, zh, zh-CN, ja)")
	}
	if textNode == nil || m.text == "" {
		at := textNode
		if at == nil {
			at = n
		}
		l.problem(file, at, field+".text", "missing or empty (a busy message must say the service is busy and when to retry)")
		return
	}
	t, err := template.New("text").Parse(m.text)
	if err != nil {
		l.problem(file, textNode, field+".text", "invalid template: "+strings.TrimPrefix(err.Error(), "template: "))
		return
	}
	m.tmpl = t
	if _, err := m.render(BusyData{RetryAfter: 30, Route: "chat", Reason: "upstream_503"}); err != nil {
		l.problem(file, textNode, field+".text", "template does not render: "+strings.TrimPrefix(err.Error(), "template: ")+
			" (available: {{.RetryAfter}} seconds, {{.Route}}, {{.Reason}})")
		return
	}
	if k.lang == "" {
		return
	}
	if prev, dup := l.busyKeys[k]; dup {
		l.problem(file, n, field, fmt.Sprintf("duplicate busy message for route %q, lang %q, reason %q (first defined at %s)",
			k.route, k.lang, k.reason, prev))
		return
	}
	l.busyKeys[k] = m.source
	l.busy[k] = m
}

// route parses a routes[i] entry (the default language of a route).
func (l *loader) routeEntry(file, field string, n *yaml.Node) {
	var route, lang string
	var routeNode, langNode *yaml.Node
	if !l.fields(file, field, n, routeFields, func(key string, _, v *yaml.Node) {
		switch key {
		case "route":
			routeNode = v
			route = l.name(file, field+".route", v, false)
		case "lang":
			langNode = v
			lang = l.lang(file, field+".lang", v)
		}
	}) {
		return
	}
	switch {
	case routeNode == nil:
		l.problem(file, n, field+".route", "missing (the route name)")
	case route == AnyRoute:
		l.problem(file, routeNode, field+".route", `"*" has no default language: English is always the last choice`)
	case langNode == nil:
		l.problem(file, n, field+".lang", "missing (a BCP 47 tag such as en, zh, zh-CN, ja)")
	}
	if route == "" || route == AnyRoute || lang == "" {
		return
	}
	src := fmt.Sprintf("%s:%d", file, n.Line)
	if prev, dup := l.routes[route]; dup {
		l.problem(file, n, field+".route", fmt.Sprintf("duplicate route %q (first defined at %s)", route, prev))
		return
	}
	l.routes[route] = src
	l.routeLang[route] = lang
}

// build checks the merged result and makes the Set.
func (l *loader) build(dir string) (*Set, error) {
	if _, ok := l.busy[busyKey{AnyRoute, DefaultLang, ""}]; !ok {
		l.problems = append(l.problems, Problem{Field: "busy",
			Msg: `no busy message for lang "en" at route "*" without a reason: it is the last resort of every busy answer`})
	}
	if len(l.problems) > 0 {
		return nil, &ValidationError{Problems: l.problems}
	}
	s := &Set{
		byKey:     make(map[routeLang][]*tmpl),
		busy:      l.busy,
		routeLang: l.routeLang,
		dir:       dir,
	}
	for _, t := range l.templates {
		s.templates = append(s.templates, t)
	}
	slices.SortFunc(s.templates, func(a, b *tmpl) int { return strings.Compare(a.ID, b.ID) })
	for _, t := range s.templates {
		k := routeLang{t.Route, t.Lang}
		s.byKey[k] = append(s.byKey[k], t)
	}
	return s, nil
}

// fields walks the mapping n, reporting duplicate and unknown keys, and
// calls f for each known one. It reports whether n is a mapping.
func (l *loader) fields(file, field string, n *yaml.Node, known []string, f func(key string, k, v *yaml.Node)) bool {
	n = resolve(n)
	if n.Kind != yaml.MappingNode {
		what := "the file"
		if field != "" {
			what = "this entry"
		}
		l.problem(file, n, field, fmt.Sprintf("%s must be a mapping with the fields %s, not %s", what, strings.Join(known, ", "), kind(n)))
		return false
	}
	seen := make(map[string]int)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], resolve(n.Content[i+1])
		name := join(field, k.Value)
		if line, dup := seen[k.Value]; dup {
			l.problem(file, k, name, fmt.Sprintf("duplicate field (first at line %d)", line))
			continue
		}
		seen[k.Value] = k.Line
		if !slices.Contains(known, k.Value) {
			msg := fmt.Sprintf("unknown field %q (known: %s)", k.Value, strings.Join(known, ", "))
			l.problem(file, k, name, msg)
			continue
		}
		f(k.Value, k, v)
	}
	return true
}

func join(field, key string) string {
	if field == "" {
		return key
	}
	return field + "." + key
}

// resolve follows YAML aliases.
func resolve(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func kind(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "a mapping"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "empty"
		}
		return fmt.Sprintf("%q", n.Value)
	}
	return "a YAML node"
}

func (l *loader) list(file, field string, n *yaml.Node) ([]*yaml.Node, bool) {
	switch {
	case n.Kind == yaml.SequenceNode:
		out := make([]*yaml.Node, len(n.Content))
		for i, c := range n.Content {
			out[i] = resolve(c)
		}
		return out, true
	case n.Kind == yaml.ScalarNode && n.Tag == "!!null":
		return nil, true
	}
	l.problem(file, n, field, "must be a list, not "+kind(n))
	return nil, false
}

// str returns a scalar as a string (numbers and booleans as written).
func (l *loader) str(file, field string, n *yaml.Node) (string, bool) {
	if n.Kind != yaml.ScalarNode {
		l.problem(file, n, field, "must be a string, not "+kind(n))
		return "", false
	}
	if n.Tag == "!!null" {
		return "", true
	}
	return n.Value, true
}

func (l *loader) strs(file, field string, n *yaml.Node) []string {
	items, ok := l.list(file, field, n)
	if !ok {
		return nil
	}
	out := make([]string, len(items))
	for i, c := range items {
		out[i], _ = l.str(file, fmt.Sprintf("%s[%d]", field, i), c)
	}
	return out
}

func (l *loader) count(file, field string, n *yaml.Node) int {
	var v int
	if n.Kind != yaml.ScalarNode || n.Tag != "!!int" || n.Decode(&v) != nil {
		l.problem(file, n, field, "must be a whole number, not "+kind(n))
		return 0
	}
	if v < 0 {
		l.problem(file, n, field, fmt.Sprintf("must not be negative, got %d", v))
		return 0
	}
	return v
}

func (l *loader) bool(file, field string, n *yaml.Node) bool {
	var v bool
	if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" || n.Decode(&v) != nil {
		l.problem(file, n, field, "must be true or false, not "+kind(n))
		return false
	}
	return v
}

// name returns an identifier: non-empty (unless optional), without white
// space or control characters, at most 128 bytes.
func (l *loader) name(file, field string, n *yaml.Node, optional bool) string {
	s, ok := l.str(file, field, n)
	if !ok {
		return ""
	}
	s = strings.TrimSpace(s)
	switch {
	case s == "" && optional:
		return ""
	case s == "":
		l.problem(file, n, field, "must not be empty")
	case strings.ContainsFunc(s, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }):
		l.problem(file, n, field, fmt.Sprintf("%q must not contain white space", s))
	case len(s) > 128 || !utf8.ValidString(s):
		l.problem(file, n, field, "must be valid UTF-8 of at most 128 bytes")
	default:
		return s
	}
	return ""
}

// route returns a template's or busy message's route, AnyRoute if empty.
func (l *loader) route(file, field string, n *yaml.Node) string {
	if r := l.name(file, field, n, true); r != "" {
		return r
	}
	return AnyRoute
}

func (l *loader) lang(file, field string, n *yaml.Node) string {
	s, ok := l.str(file, field, n)
	if !ok {
		return ""
	}
	if strings.TrimSpace(s) == "" {
		l.problem(file, n, field, "must not be empty (a BCP 47 tag such as en, zh, zh-CN, ja)")
		return ""
	}
	lang, ok := NormalizeLang(s)
	if !ok {
		l.problem(file, n, field, fmt.Sprintf("unknown language %q (use a BCP 47 tag such as en, zh, zh-CN, ja)", s))
		return ""
	}
	return lang
}
