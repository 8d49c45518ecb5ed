package openai

import (
	"unicode/utf8"
	"unsafe"
)

// A fast path for Accumulator.Add: the chunks of a chat or legacy
// completion stream after the first nearly always have one shape,
//
//	{"id":"…","object":"…","created":N,"model":"…","choices":[{"index":0,
//	 "delta":{"content":"…"},"logprobs":null,"finish_reason":null}]}
//
// and decoding each with encoding/json costs a dozen allocations. addFast
// scans such a chunk in place and applies it only when the whole chunk
// parsed; anything else (another key or type, a key in another case, a
// repeated key, an escape it does not decode, invalid UTF-8, trailing
// bytes) makes it return false so Add decodes the chunk as before. The
// effect on the accumulator is the same either way.

// span is a decoded string: a range of Accumulator.scratch.
type span struct{ start, end int }

// fastChoice is one choice of a chunk parsed by addFast.
type fastChoice struct {
	index                 int
	role, content, text   span
	finish                span
	hasRole, hasContent   bool
	hasText, hasFinish    bool
	seenIndex, seenDelta  bool
	seenLogprobs, seenFin bool
	seenText              bool
}

// chunkScanner walks one chunk.
type chunkScanner struct {
	b       []byte
	i       int
	scratch []byte // decoded strings
}

func (s *chunkScanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// lit consumes c after white space.
func (s *chunkScanner) lit(c byte) bool {
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// null consumes a null literal.
func (s *chunkScanner) null() bool {
	s.ws()
	if len(s.b)-s.i >= 4 && string(s.b[s.i:s.i+4]) == "null" {
		s.i += 4
		return true
	}
	return false
}

// isNull reports whether a null literal comes next.
func (s *chunkScanner) isNull() bool {
	s.ws()
	return len(s.b)-s.i >= 4 && string(s.b[s.i:s.i+4]) == "null"
}

// key reads an object key without escapes and the colon after it.
func (s *chunkScanner) key() (string, bool) {
	if !s.lit('"') {
		return "", false
	}
	start := s.i
	for s.i < len(s.b) {
		c := s.b[s.i]
		if c == '"' {
			k := s.b[start:s.i]
			s.i++
			if !s.lit(':') {
				return "", false
			}
			// The compiler does not allocate for string(k) used in a
			// switch or comparison; callers compare it only.
			return unsafeKey(k), true
		}
		if c == '\\' || c < 0x20 || c >= 0x80 {
			return "", false
		}
		s.i++
	}
	return "", false
}

// str decodes a string into the scratch buffer.
func (s *chunkScanner) str() (span, bool) {
	if !s.lit('"') {
		return span{}, false
	}
	sp := span{start: len(s.scratch)}
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			s.i++
			sp.end = len(s.scratch)
			return sp, true
		case c == '\\':
			if s.i+1 >= len(s.b) {
				return span{}, false
			}
			var d byte
			switch s.b[s.i+1] {
			case '"':
				d = '"'
			case '\\':
				d = '\\'
			case '/':
				d = '/'
			case 'b':
				d = '\b'
			case 'f':
				d = '\f'
			case 'n':
				d = '\n'
			case 'r':
				d = '\r'
			case 't':
				d = '\t'
			default: // \u and anything else: encoding/json decides
				return span{}, false
			}
			s.scratch = append(s.scratch, d)
			s.i += 2
		case c < 0x20:
			return span{}, false
		case c < utf8.RuneSelf:
			s.scratch = append(s.scratch, c)
			s.i++
		default:
			r, n := utf8.DecodeRune(s.b[s.i:])
			if r == utf8.RuneError && n == 1 {
				return span{}, false // encoding/json would replace it
			}
			s.scratch = append(s.scratch, s.b[s.i:s.i+n]...)
			s.i += n
		}
	}
	return span{}, false
}

// skipStr skips a string with no escapes.
func (s *chunkScanner) skipStr() bool {
	if !s.lit('"') {
		return false
	}
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			s.i++
			return true
		case c == '\\' || c < 0x20:
			return false
		case c < utf8.RuneSelf:
			s.i++
		default:
			r, n := utf8.DecodeRune(s.b[s.i:])
			if r == utf8.RuneError && n == 1 {
				return false
			}
			s.i += n
		}
	}
	return false
}

// uint reads a non-negative integer without a leading zero, small enough
// for an int.
func (s *chunkScanner) uint() (int, bool) {
	s.ws()
	start, v := s.i, 0
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		if s.i-start >= 15 {
			return 0, false
		}
		v = v*10 + int(s.b[s.i]-'0')
		s.i++
	}
	n := s.i - start
	if n == 0 || n > 1 && s.b[start] == '0' {
		return 0, false
	}
	if s.i < len(s.b) {
		switch s.b[s.i] { // a fraction or exponent: encoding/json decides
		case '.', 'e', 'E':
			return 0, false
		}
	}
	return v, true
}

// addFast applies data when it is a chunk of the common shape; see above.
func (a *Accumulator) addFast(data []byte) bool {
	s := chunkScanner{b: data, scratch: a.scratch[:0]}
	choices := a.fast[:0]
	defer func() { a.scratch, a.fast = s.scratch[:0], choices[:0] }()
	if !s.lit('{') {
		return false
	}
	var seenID, seenObject, seenCreated, seenModel, seenFP, seenTier, seenUsage, seenChoices bool
	once := func(seen *bool) bool {
		if *seen {
			return false
		}
		*seen = true
		return true
	}
	if !s.lit('}') {
		for {
			k, ok := s.key()
			if !ok {
				return false
			}
			switch k {
			case "id":
				ok = once(&seenID) && s.skipStr()
			case "object":
				ok = once(&seenObject) && s.skipStr()
			case "model":
				ok = once(&seenModel) && s.skipStr()
			case "created":
				_, ok = s.uint()
				ok = ok && once(&seenCreated)
			case "system_fingerprint":
				ok = once(&seenFP) && s.null()
			case "service_tier":
				ok = once(&seenTier) && s.null()
			case "usage":
				ok = once(&seenUsage) && s.null()
			case "choices":
				ok = once(&seenChoices)
				if ok {
					choices, ok = s.choices(choices)
				}
			default:
				return false
			}
			if !ok {
				return false
			}
			if s.lit('}') {
				break
			}
			if !s.lit(',') {
				return false
			}
		}
	}
	if s.ws(); s.i != len(s.b) {
		return false
	}
	for i := range choices {
		c := &choices[i]
		ac := a.choice(c.index)
		if c.hasFinish && c.finish.end > c.finish.start {
			fr := string(s.scratch[c.finish.start:c.finish.end])
			ac.finishReason = &fr
		}
		if c.hasText {
			ac.text.Write(s.scratch[c.text.start:c.text.end])
		}
		if c.hasRole && c.role.end > c.role.start {
			if r := s.scratch[c.role.start:c.role.end]; ac.role != string(r) {
				ac.role = string(r)
			}
		}
		if c.hasContent {
			ac.content.Write(s.scratch[c.content.start:c.content.end])
		}
	}
	return true
}

// choices reads the choices array.
func (s *chunkScanner) choices(out []fastChoice) ([]fastChoice, bool) {
	if !s.lit('[') {
		return out, false
	}
	if s.lit(']') {
		return out, true
	}
	for {
		var c fastChoice
		if !s.choice(&c) {
			return out, false
		}
		out = append(out, c)
		if s.lit(']') {
			return out, true
		}
		if !s.lit(',') {
			return out, false
		}
	}
}

func (s *chunkScanner) choice(c *fastChoice) bool {
	if !s.lit('{') {
		return false
	}
	if s.lit('}') {
		return true
	}
	for {
		k, ok := s.key()
		if !ok {
			return false
		}
		switch k {
		case "index":
			if c.seenIndex {
				return false
			}
			c.seenIndex = true
			c.index, ok = s.uint()
		case "delta":
			if c.seenDelta {
				return false
			}
			c.seenDelta = true
			ok = s.delta(c)
		case "logprobs":
			if c.seenLogprobs {
				return false
			}
			c.seenLogprobs = true
			ok = s.null()
		case "finish_reason":
			if c.seenFin {
				return false
			}
			c.seenFin = true
			if !s.null() {
				c.finish, ok = s.str()
				c.hasFinish = ok
			}
		case "text":
			if c.seenText {
				return false
			}
			c.seenText = true
			if !s.null() {
				c.text, ok = s.str()
				c.hasText = ok
			}
		default:
			return false
		}
		if !ok {
			return false
		}
		if s.lit('}') {
			return true
		}
		if !s.lit(',') {
			return false
		}
	}
}

func (s *chunkScanner) delta(c *fastChoice) bool {
	if s.isNull() || !s.lit('{') {
		return false
	}
	if s.lit('}') {
		return true
	}
	var seenRole, seenContent bool
	for {
		k, ok := s.key()
		if !ok {
			return false
		}
		switch k {
		case "role":
			if seenRole {
				return false
			}
			seenRole = true
			c.role, ok = s.str()
			c.hasRole = ok
		case "content":
			if seenContent {
				return false
			}
			seenContent = true
			if !s.null() {
				c.content, ok = s.str()
				c.hasContent = ok
			}
		default:
			return false
		}
		if !ok {
			return false
		}
		if s.lit('}') {
			return true
		}
		if !s.lit(',') {
			return false
		}
	}
}

// unsafeKey views k as a string without copying; the result is only
// compared, while the chunk is alive.
func unsafeKey(k []byte) string {
	if len(k) == 0 {
		return ""
	}
	return unsafe.String(&k[0], len(k))
}
