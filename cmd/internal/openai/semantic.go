package openai

import "strings"

// LastUserText returns the text of the request's last message when that
// message is the user's and holds only text (a string, or text parts), the
// one part of a request that semantic matching may treat as fuzzy. ok is
// false for requests that cannot be matched semantically: other APIs, a last
// message from another role (a tool result, an assistant prefill), images or
// audio in the last turn, or an empty text.
func (r *Request) LastUserText() (text string, ok bool) {
	if r.API == APIResponses {
		return r.lastUserTextResponses()
	}
	if r.API != APIChat && r.API != APIAnthropic {
		return "", false
	}
	msgs, _ := r.Body.Get("messages")
	elems := msgs.Elems()
	if len(elems) == 0 {
		return "", false
	}
	return userMessageText(elems[len(elems)-1], "text")
}

// userMessageText is the text of msg when it is the user's and holds only
// text: a string, or content parts all of type partType ("text" in Chat
// and Messages, "input_text" in Responses), joined by line breaks; ok is
// false otherwise or when the text is blank.
func userMessageText(msg Value, partType string) (text string, ok bool) {
	if role, _ := msg.Get("role"); role.Str() != "user" {
		return "", false
	}
	c, _ := msg.Get("content")
	switch c.Kind {
	case String:
		text = c.Str()
	case Array:
		var b strings.Builder
		for _, part := range c.Elems() {
			typ, _ := part.Get("type")
			t, hasText := part.Get("text")
			if typ.Str() != partType || !hasText || t.Kind != String {
				return "", false
			}
			if b.Len() > 0 {
				b.WriteByte('\n')
			}
			b.WriteString(t.Str())
		}
		text = b.String()
	default:
		return "", false
	}
	if strings.TrimSpace(text) == "" {
		return "", false
	}
	return text, true
}

// AppendContextMaterial appends the canonical bytes of everything that
// changes the answer except the content of the last user message: two
// requests that agree here may be matched semantically on that content.
// Call it only when LastUserText reported ok.
func (r *Request) AppendContextMaterial(dst []byte) []byte {
	if r.API == APIResponses {
		// Instructions and earlier input items are part of it; a string
		// input is the same context as one user message holding it.
		return r.appendContext(dst, "input", "content", "type")
	}
	return r.appendContext(dst, "messages", "content")
}

// appendContext writes the body canonically without the delivery fields
// (stream, stream_options) and, in the turns array under turnsKey, without
// the last turn's except members. One implementation for Chat and
// Responses, which differ only in those names.
func (r *Request) appendContext(dst []byte, turnsKey string, except ...string) []byte {
	dst = append(dst, '{')
	first := true
	for _, m := range r.Body.Members() {
		if m.Key == "stream" || m.Key == "stream_options" {
			continue
		}
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = appendString(dst, m.Key)
		dst = append(dst, ':')
		switch {
		case m.Key != turnsKey:
			dst = m.Val.AppendCanonical(dst)
		case m.Val.Kind == String:
			dst = append(dst, `[{"role":"user"}]`...)
		default:
			elems := m.Val.Elems()
			dst = append(dst, '[')
			for i, e := range elems {
				if i > 0 {
					dst = append(dst, ',')
				}
				if i == len(elems)-1 {
					dst = e.AppendCanonicalExcept(dst, except...)
				} else {
					dst = e.AppendCanonical(dst)
				}
			}
			dst = append(dst, ']')
		}
	}
	return append(dst, '}')
}
