package openai

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"
)

// Kind is the JSON type of a Value.
type Kind uint8

// JSON kinds.
const (
	Null Kind = iota
	Bool
	Number
	String
	Array
	Object
)

func (k Kind) String() string {
	switch k {
	case Null:
		return "null"
	case Bool:
		return "boolean"
	case Number:
		return "number"
	case String:
		return "string"
	case Array:
		return "array"
	default:
		return "object"
	}
}

// Value is a parsed JSON value in canonical form: strings are unescaped,
// numbers are normalised ("1.0", "1e0" and "1" are the same number), and
// object members are sorted by key with duplicates resolved to the last one
// (as encoding/json and Python's json do). A Value is immutable once parsed.
type Value struct {
	Kind Kind
	str  string   // String: the decoded text; Number: canonical text; Bool: "t"/""
	arr  []Value  // Array
	obj  []Member // Object, sorted by Key, unique
}

// Member is one member of a JSON object.
type Member struct {
	Key string
	Val Value
}

// maxDepth bounds nesting so hostile input cannot exhaust the stack.
const maxDepth = 256

// SyntaxError describes malformed JSON with the byte offset where it was found.
type SyntaxError struct {
	Offset int
	Msg    string
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("invalid JSON at byte %d: %s", e.Offset, e.Msg)
}

// ErrInvalidUTF8 is returned for JSON text that is not valid UTF-8.
var ErrInvalidUTF8 = errors.New("request body is not valid UTF-8")

// ParseJSON parses exactly one JSON value (surrounding whitespace allowed).
// The Value may share memory with b: b must not be modified afterwards.
// Strings without escapes are views of b, not copies (parsing a large body
// costs no copy of it), so any one of them that is kept keeps all of b
// alive: copy (strings.Clone) what outlives the request.
func ParseJSON(b []byte) (Value, error) {
	if !utf8.Valid(b) {
		return Value{}, ErrInvalidUTF8
	}
	p := parser{b: b}
	p.skipSpace()
	v, err := p.value(0)
	if err != nil {
		return Value{}, err
	}
	p.skipSpace()
	if p.i != len(p.b) {
		return Value{}, p.errf("unexpected data after the top-level value")
	}
	return v, nil
}

type parser struct {
	b []byte
	i int
}

func (p *parser) errf(format string, args ...any) error {
	return &SyntaxError{Offset: p.i, Msg: fmt.Sprintf(format, args...)}
}

func (p *parser) skipSpace() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *parser) value(depth int) (Value, error) {
	if depth > maxDepth {
		return Value{}, p.errf("nesting deeper than %d", maxDepth)
	}
	if p.i >= len(p.b) {
		return Value{}, p.errf("unexpected end of input")
	}
	switch c := p.b[p.i]; {
	case c == '{':
		return p.object(depth)
	case c == '[':
		return p.array(depth)
	case c == '"':
		s, err := p.string()
		return Value{Kind: String, str: s}, err
	case c == 't':
		return p.literal("true", Value{Kind: Bool, str: "t"})
	case c == 'f':
		return p.literal("false", Value{Kind: Bool})
	case c == 'n':
		return p.literal("null", Value{Kind: Null})
	case c == '-' || (c >= '0' && c <= '9'):
		return p.number()
	default:
		return Value{}, p.errf("unexpected character %q", c)
	}
}

func (p *parser) literal(lit string, v Value) (Value, error) {
	if !bytes.HasPrefix(p.b[p.i:], []byte(lit)) {
		return Value{}, p.errf("invalid literal")
	}
	p.i += len(lit)
	return v, nil
}

func (p *parser) object(depth int) (Value, error) {
	p.i++ // '{'
	members := make([]Member, 0, 4)
	p.skipSpace()
	if p.i < len(p.b) && p.b[p.i] == '}' {
		p.i++
		return Value{Kind: Object}, nil
	}
	for {
		p.skipSpace()
		if p.i >= len(p.b) || p.b[p.i] != '"' {
			return Value{}, p.errf("expected a string object key")
		}
		k, err := p.string()
		if err != nil {
			return Value{}, err
		}
		p.skipSpace()
		if p.i >= len(p.b) || p.b[p.i] != ':' {
			return Value{}, p.errf("expected ':' after object key")
		}
		p.i++
		p.skipSpace()
		v, err := p.value(depth + 1)
		if err != nil {
			return Value{}, err
		}
		members = append(members, Member{Key: k, Val: v})
		p.skipSpace()
		if p.i >= len(p.b) {
			return Value{}, p.errf("unexpected end of input in object")
		}
		if p.b[p.i] == ',' {
			p.i++
			continue
		}
		if p.b[p.i] == '}' {
			p.i++
			break
		}
		return Value{}, p.errf("expected ',' or '}' in object")
	}
	// Stable sort keeps duplicates in input order; the last one wins.
	slices.SortStableFunc(members, func(a, b Member) int { return strings.Compare(a.Key, b.Key) })
	out := members[:0]
	for i, m := range members {
		if i+1 < len(members) && members[i+1].Key == m.Key {
			continue
		}
		out = append(out, m)
	}
	return Value{Kind: Object, obj: out}, nil
}

func (p *parser) array(depth int) (Value, error) {
	p.i++ // '['
	var elems []Value
	p.skipSpace()
	if p.i < len(p.b) && p.b[p.i] == ']' {
		p.i++
		return Value{Kind: Array, arr: []Value{}}, nil
	}
	for {
		p.skipSpace()
		v, err := p.value(depth + 1)
		if err != nil {
			return Value{}, err
		}
		elems = append(elems, v)
		p.skipSpace()
		if p.i >= len(p.b) {
			return Value{}, p.errf("unexpected end of input in array")
		}
		if p.b[p.i] == ',' {
			p.i++
			continue
		}
		if p.b[p.i] == ']' {
			p.i++
			return Value{Kind: Array, arr: elems}, nil
		}
		return Value{}, p.errf("expected ',' or ']' in array")
	}
}

// string parses a quoted string at p.i and returns its decoded text.
func (p *parser) string() (string, error) {
	p.i++ // opening quote
	start := p.i
	// Fast path: no escapes.
	for p.i < len(p.b) {
		c := p.b[p.i]
		if c == '"' {
			// No copy: the Value references the input, which ParseJSON's
			// contract forbids changing afterwards. Whoever keeps the
			// string past the request clones it (see ParseJSON).
			s := unsafe.String(unsafe.SliceData(p.b[start:]), p.i-start)
			p.i++
			return s, nil
		}
		if c == '\\' {
			break
		}
		if c < 0x20 {
			return "", p.errf("control character in string")
		}
		p.i++
	}
	buf := append([]byte(nil), p.b[start:p.i]...)
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			p.i++
			return string(buf), nil
		case c < 0x20:
			return "", p.errf("control character in string")
		case c != '\\':
			buf = append(buf, c)
			p.i++
			continue
		}
		// escape
		if p.i+1 >= len(p.b) {
			return "", p.errf("unexpected end of input in string escape")
		}
		e := p.b[p.i+1]
		p.i += 2
		switch e {
		case '"', '\\', '/':
			buf = append(buf, e)
		case 'b':
			buf = append(buf, '\b')
		case 'f':
			buf = append(buf, '\f')
		case 'n':
			buf = append(buf, '\n')
		case 'r':
			buf = append(buf, '\r')
		case 't':
			buf = append(buf, '\t')
		case 'u':
			r, ok := p.hex4()
			if !ok {
				return "", p.errf("invalid \\u escape")
			}
			if utf16.IsSurrogate(r) {
				// A valid pair is two escapes; anything else becomes U+FFFD,
				// as encoding/json does.
				if p.i+1 < len(p.b) && p.b[p.i] == '\\' && p.b[p.i+1] == 'u' {
					save := p.i
					p.i += 2
					if r2, ok := p.hex4(); ok {
						if d := utf16.DecodeRune(r, r2); d != utf8.RuneError {
							buf = utf8.AppendRune(buf, d)
							continue
						}
					}
					p.i = save
				}
				r = utf8.RuneError
			}
			buf = utf8.AppendRune(buf, r)
		default:
			return "", p.errf("invalid escape character %q", e)
		}
	}
	return "", p.errf("unterminated string")
}

func (p *parser) hex4() (rune, bool) {
	if p.i+4 > len(p.b) {
		return 0, false
	}
	var r rune
	for _, c := range p.b[p.i : p.i+4] {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	p.i += 4
	return r, true
}

func (p *parser) number() (Value, error) {
	start := p.i
	integer, err := p.numberEnd()
	if err != nil {
		return Value{}, err
	}
	lit := string(p.b[start:p.i])
	if integer {
		if lit == "-0" {
			lit = "0"
		}
		return Value{Kind: Number, str: lit}, nil
	}
	f, err := strconv.ParseFloat(lit, 64)
	if err != nil { // out of range: keep the literal, it is still deterministic
		return Value{Kind: Number, str: lit}, nil
	}
	if f == 0 {
		return Value{Kind: Number, str: "0"}, nil
	}
	return Value{Kind: Number, str: strconv.FormatFloat(f, 'g', -1, 64)}, nil
}

// numberEnd validates the number at p.i and moves past it, reporting
// whether it has neither fraction nor exponent.
func (p *parser) numberEnd() (integer bool, err error) {
	if p.b[p.i] == '-' {
		p.i++
	}
	digits := func() int {
		n := 0
		for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
			p.i++
			n++
		}
		return n
	}
	if p.i < len(p.b) && p.b[p.i] == '0' {
		p.i++
	} else if digits() == 0 {
		return false, p.errf("invalid number")
	}
	integer = true
	if p.i < len(p.b) && p.b[p.i] == '.' {
		p.i++
		integer = false
		if digits() == 0 {
			return false, p.errf("invalid number: digits expected after '.'")
		}
	}
	if p.i < len(p.b) && (p.b[p.i] == 'e' || p.b[p.i] == 'E') {
		p.i++
		integer = false
		if p.i < len(p.b) && (p.b[p.i] == '+' || p.b[p.i] == '-') {
			p.i++
		}
		if digits() == 0 {
			return false, p.errf("invalid number: digits expected in exponent")
		}
	}
	return integer, nil
}

// Get returns the member named key of an object.
func (v Value) Get(key string) (Value, bool) {
	if v.Kind != Object {
		return Value{}, false
	}
	i, ok := slices.BinarySearchFunc(v.obj, key, func(m Member, k string) int { return strings.Compare(m.Key, k) })
	if !ok {
		return Value{}, false
	}
	return v.obj[i].Val, true
}

// Members returns an object's members in canonical (sorted) order.
func (v Value) Members() []Member { return v.obj }

// Elems returns an array's elements.
func (v Value) Elems() []Value { return v.arr }

// Str returns a string's text.
func (v Value) Str() string {
	if v.Kind != String {
		return ""
	}
	return v.str
}

// Bool reports whether v is the literal true.
func (v Value) Bool() bool { return v.Kind == Bool && v.str != "" }

// Float returns a number's value.
func (v Value) Float() (float64, bool) {
	if v.Kind != Number {
		return 0, false
	}
	f, err := strconv.ParseFloat(v.str, 64)
	return f, err == nil
}

// Int returns a number's value when it is an integer that fits in int64.
func (v Value) Int() (int64, bool) {
	if v.Kind != Number {
		return 0, false
	}
	if n, err := strconv.ParseInt(v.str, 10, 64); err == nil {
		return n, true
	}
	f, err := strconv.ParseFloat(v.str, 64)
	if err != nil || f != float64(int64(f)) {
		return 0, false
	}
	return int64(f), true
}

// AppendCanonical appends v's canonical encoding: no insignificant
// whitespace, sorted keys, normalised numbers and minimal string escapes.
// Two JSON texts that differ only in those respects encode identically.
func (v Value) AppendCanonical(dst []byte) []byte {
	return v.appendCanonical(dst, nil)
}

// AppendCanonicalExcept is AppendCanonical with the named top-level object
// members left out (for example "stream", which never changes the answer).
func (v Value) AppendCanonicalExcept(dst []byte, skip ...string) []byte {
	return v.appendCanonical(dst, skip)
}

func (v Value) appendCanonical(dst []byte, skip []string) []byte {
	switch v.Kind {
	case Null:
		return append(dst, "null"...)
	case Bool:
		if v.str != "" {
			return append(dst, "true"...)
		}
		return append(dst, "false"...)
	case Number:
		return append(dst, v.str...)
	case String:
		return appendString(dst, v.str)
	case Array:
		dst = append(dst, '[')
		for i, e := range v.arr {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = e.appendCanonical(dst, nil)
		}
		return append(dst, ']')
	default:
		dst = append(dst, '{')
		first := true
		for _, m := range v.obj {
			if slices.Contains(skip, m.Key) {
				continue
			}
			if !first {
				dst = append(dst, ',')
			}
			first = false
			dst = appendString(dst, m.Key)
			dst = append(dst, ':')
			dst = m.Val.appendCanonical(dst, nil)
		}
		return append(dst, '}')
	}
}

const hexDigits = "0123456789abcdef"

func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		dst = append(dst, s[start:i]...)
		switch c {
		case '"', '\\':
			dst = append(dst, '\\', c)
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		start = i + 1
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
