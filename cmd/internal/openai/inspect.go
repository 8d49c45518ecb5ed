package openai

import (
	"strings"
	"unicode/utf8"
)

// Inspect reports whether a non-streamed answer is complete (see Complete)
// and the tokens it reports using (-1 unknown). It runs on every upstream
// answer, so it scans the text once without building a tree: only the
// fields it judges are looked at, everything else is validated and
// skipped. It agrees with judging the parsed Value (inspectValue, kept for
// the differential test), duplicate keys resolving to the last one.
func Inspect(api API, body []byte) (complete bool, totalTokens int64) {
	if api == APIAnthropic {
		return inspectAnthropic(body)
	}
	if !utf8.Valid(body) {
		return false, -1
	}
	if api == APIResponses {
		return inspectResponses(body)
	}
	s := scanner{parser: parser{b: body}}
	s.skipSpace()
	if s.i >= len(s.b) || s.b[s.i] != '{' {
		return false, -1
	}
	var (
		tokens   int64 = -1
		errSeen  bool
		listSeen bool // choices (chat, completions) or data (embeddings)
		listOK   bool
	)
	list := "choices"
	if api == APIEmbeddings {
		list = "data"
	}
	err := s.fields(0, func(key string, depth int) error {
		switch key {
		case "usage":
			tokens = -1
			if !s.at('{') {
				return s.skip(depth)
			}
			return s.fields(depth, func(key string, depth int) error {
				if key != "total_tokens" {
					return s.skip(depth)
				}
				tokens = -1
				if !s.atNumber() {
					return s.skip(depth)
				}
				v, err := s.number()
				if n, ok := v.Int(); err == nil && ok {
					tokens = n
				}
				return err
			})
		case "error":
			errSeen = !s.at('n') // null is no error
			return s.skip(depth)
		case list:
			listSeen = true
			if api == APIJSON || !s.at('[') {
				listOK = false
				return s.skip(depth)
			}
			n := 0
			listOK = true
			err := s.elems(depth, func(depth int) error {
				n++
				ok, err := s.item(api, depth)
				listOK = listOK && ok
				return err
			})
			listOK = listOK && n > 0
			return err
		}
		return s.skip(depth)
	})
	s.skipSpace()
	if err != nil || s.i != len(s.b) {
		return false, -1
	}
	if errSeen {
		return false, tokens
	}
	if api == APIJSON {
		return true, tokens
	}
	return listSeen && listOK, tokens
}

// scanner walks JSON text with the parser's validation, building nothing
// but the few values it is asked for.
type scanner struct{ parser }

// at reports whether the value at s.i starts with c.
func (s *scanner) at(c byte) bool { return s.i < len(s.b) && s.b[s.i] == c }

func (s *scanner) atNumber() bool {
	return s.i < len(s.b) && (s.b[s.i] == '-' || (s.b[s.i] >= '0' && s.b[s.i] <= '9'))
}

// fields scans the object at s.i (depth is the object's own), calling f
// with each key and the depth of its value; f must consume the value.
func (s *scanner) fields(depth int, f func(key string, depth int) error) error {
	if depth > maxDepth {
		return s.errf("nesting deeper than %d", maxDepth)
	}
	s.i++ // '{'
	s.skipSpace()
	if s.at('}') {
		s.i++
		return nil
	}
	for {
		s.skipSpace()
		if !s.at('"') {
			return s.errf("expected a string object key")
		}
		k, err := s.string()
		if err != nil {
			return err
		}
		s.skipSpace()
		if !s.at(':') {
			return s.errf("expected ':' after object key")
		}
		s.i++
		s.skipSpace()
		if err := f(k, depth+1); err != nil {
			return err
		}
		s.skipSpace()
		switch {
		case s.i >= len(s.b):
			return s.errf("unexpected end of input in object")
		case s.b[s.i] == ',':
			s.i++
		case s.b[s.i] == '}':
			s.i++
			return nil
		default:
			return s.errf("expected ',' or '}' in object")
		}
	}
}

// elems scans the array at s.i, calling f with the depth of each element;
// f must consume it.
func (s *scanner) elems(depth int, f func(depth int) error) error {
	if depth > maxDepth {
		return s.errf("nesting deeper than %d", maxDepth)
	}
	s.i++ // '['
	s.skipSpace()
	if s.at(']') {
		s.i++
		return nil
	}
	for {
		s.skipSpace()
		if err := f(depth + 1); err != nil {
			return err
		}
		s.skipSpace()
		switch {
		case s.i >= len(s.b):
			return s.errf("unexpected end of input in array")
		case s.b[s.i] == ',':
			s.i++
		case s.b[s.i] == ']':
			s.i++
			return nil
		default:
			return s.errf("expected ',' or ']' in array")
		}
	}
}

// skip validates and passes over the value at s.i.
func (s *scanner) skip(depth int) error {
	if depth > maxDepth {
		return s.errf("nesting deeper than %d", maxDepth)
	}
	switch {
	case s.at('{'):
		return s.fields(depth, func(_ string, depth int) error { return s.skip(depth) })
	case s.at('['):
		return s.elems(depth, s.skip)
	case s.at('"'):
		_, err := s.string()
		return err
	case s.atNumber():
		_, err := s.numberEnd()
		return err
	}
	_, err := s.value(depth) // literals and errors; builds nothing
	return err
}

// str scans a value and returns it if it is a string ("" otherwise, like
// Value.Str).
func (s *scanner) str(depth int) (string, error) {
	if !s.at('"') {
		return "", s.skip(depth)
	}
	return s.string()
}

// item judges one element of choices (chat, completions) or data
// (embeddings), as inspectValue does.
func (s *scanner) item(api API, depth int) (bool, error) {
	if !s.at('{') {
		// Not an object: no finish_reason, no embedding.
		return false, s.skip(depth)
	}
	var (
		finish, text   string
		textIsStr      bool
		msgHasValue    bool // the last message is an object with content, a refusal or tool calls
		embOK, embSeen bool
	)
	err := s.fields(depth, func(key string, depth int) error {
		var err error
		switch {
		case api == APIEmbeddings && key == "embedding":
			embSeen = true
			switch {
			case s.at('n'):
				embOK = false
				return s.skip(depth)
			case s.at('"'):
				var v string
				v, err = s.string()
				embOK = v != ""
			case s.at('['):
				n := 0
				err = s.elems(depth, func(depth int) error { n++; return s.skip(depth) })
				embOK = n > 0
			default:
				embOK = true
				err = s.skip(depth)
			}
			return err
		case api == APIEmbeddings:
			return s.skip(depth)
		case key == "finish_reason":
			finish, err = s.str(depth)
		case key == "text":
			textIsStr = s.at('"')
			text, err = s.str(depth)
		case key == "message":
			msgHasValue = false
			if !s.at('{') {
				return s.skip(depth)
			}
			var content, refusal string
			tools := 0
			err = s.fields(depth, func(key string, depth int) error {
				var err error
				switch key {
				case "content":
					content, err = s.str(depth)
				case "refusal":
					refusal, err = s.str(depth)
				case "tool_calls":
					tools = 0
					if !s.at('[') {
						return s.skip(depth)
					}
					err = s.elems(depth, func(depth int) error { tools++; return s.skip(depth) })
				default:
					err = s.skip(depth)
				}
				return err
			})
			msgHasValue = strings.TrimSpace(content) != "" || refusal != "" || tools > 0
		default:
			err = s.skip(depth)
		}
		return err
	})
	if err != nil {
		return false, err
	}
	if api == APIEmbeddings {
		return embSeen && embOK, nil
	}
	if finish == "" {
		return false, nil
	}
	if textIsStr {
		return strings.TrimSpace(text) != "", nil
	}
	return msgHasValue, nil
}
