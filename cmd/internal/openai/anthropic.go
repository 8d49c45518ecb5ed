package openai

// Anthropic's Messages API (POST /v1/messages), as edgecache needs it:
// request validation, the error shape ({"type":"error","error":{"type",
// "message"}}) with Anthropic's statuses, and the completeness check of a
// stored message. Streams are in anthropic_stream.go.

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
)

// checkAnthropic validates the fields of a Messages request edgecache acts
// on and fills r's delivery fields.
func checkAnthropic(r *Request, v Value) error {
	m, ok := v.Get("messages")
	if !ok || m.Kind == Null {
		return invalid("messages", "missing_required_parameter", "messages: Field required")
	}
	if m.Kind != Array {
		return invalid("messages", "invalid_type", "messages: Input should be a valid list, not %s", m.Kind)
	}
	if len(m.Elems()) == 0 {
		return invalid("messages", "invalid_value", "messages: at least one message is required")
	}
	for i, msg := range m.Elems() {
		if msg.Kind != Object {
			return invalid(fmt.Sprintf("messages.%d", i), "invalid_type", "messages.%d: Input should be an object, not %s", i, msg.Kind)
		}
		role, _ := msg.Get("role")
		if role.Kind != String || (role.Str() != "user" && role.Str() != "assistant") {
			return invalid(fmt.Sprintf("messages.%d.role", i), "invalid_value", "messages.%d.role: Input should be 'user' or 'assistant'", i)
		}
		c, ok := msg.Get("content")
		if !ok || (c.Kind != String && c.Kind != Array) {
			return invalid(fmt.Sprintf("messages.%d.content", i), "invalid_type", "messages.%d.content: Input should be a string or a list of content blocks", i)
		}
	}
	if s, ok := v.Get("system"); ok && s.Kind != Null && s.Kind != String && s.Kind != Array {
		return invalid("system", "invalid_type", "system: Input should be a string or a list of text blocks, not %s", s.Kind)
	}
	if s, ok := v.Get("stream"); ok && s.Kind != Null {
		if s.Kind != Bool {
			return invalid("stream", "invalid_type", "stream: Input should be a valid boolean, not %s", s.Kind)
		}
		r.Stream = s.Bool()
	}
	if t, ok := v.Get("temperature"); ok && t.Kind != Null {
		f, ok := t.Float()
		if !ok {
			return invalid("temperature", "invalid_type", "temperature: Input should be a valid number, not %s", t.Kind)
		}
		r.Temperature = &f
	}
	for _, name := range []string{"top_p"} {
		if t, ok := v.Get(name); ok && t.Kind != Null {
			if _, ok := t.Float(); !ok {
				return invalid(name, "invalid_type", "%s: Input should be a valid number, not %s", name, t.Kind)
			}
		}
	}
	for _, name := range []string{"max_tokens", "top_k"} {
		if n, ok := v.Get(name); ok && n.Kind != Null {
			if i, ok := n.Int(); !ok || i < 0 {
				return invalid(name, "invalid_type", "%s: Input should be a valid non-negative integer", name)
			}
		}
	}
	if s, ok := v.Get("stop_sequences"); ok && s.Kind != Null && s.Kind != Array {
		return invalid("stop_sequences", "invalid_type", "stop_sequences: Input should be a valid list, not %s", s.Kind)
	}
	return nil
}

// AnthropicMessage is a non-streamed Messages answer; Content blocks and
// Usage are kept as they came so a replay loses nothing.
type AnthropicMessage struct {
	ID           string            `json:"id"`
	Type         string            `json:"type"`
	Role         string            `json:"role"`
	Model        string            `json:"model"`
	Content      []json.RawMessage `json:"content"`
	StopReason   *string           `json:"stop_reason"`
	StopSequence *string           `json:"stop_sequence"`
	Usage        json.RawMessage   `json:"usage,omitempty"`
}

// anthropicUsage is the part of a usage object edgecache counts.
type anthropicUsage struct {
	InputTokens  int64 `json:"input_tokens"`
	OutputTokens int64 `json:"output_tokens"`
}

// inspectAnthropic is Inspect for a Messages answer: complete when it is a
// message with a stop reason and at least one content block.
func inspectAnthropic(body []byte) (complete bool, totalTokens int64) {
	var m AnthropicMessage
	if json.Unmarshal(body, &m) != nil || m.Type != "message" {
		return false, -1
	}
	totalTokens = -1
	var u anthropicUsage
	if len(m.Usage) > 0 && json.Unmarshal(m.Usage, &u) == nil {
		totalTokens = u.InputTokens + u.OutputTokens
	}
	return m.StopReason != nil && len(m.Content) > 0, totalTokens
}

// SyntheticAnthropic renders edgecache's own text (a template) as a
// Messages answer with id.
func SyntheticAnthropic(model, id, text string) []byte {
	block, _ := json.Marshal(map[string]string{"type": "text", "text": text})
	stop := "end_turn"
	b, _ := json.Marshal(AnthropicMessage{ID: "msg_edgecache_" + id, Type: "message", Role: "assistant", Model: model,
		Content: []json.RawMessage{block}, StopReason: &stop, Usage: json.RawMessage(`{"input_tokens":0,"output_tokens":0}`)})
	return b
}

// DiscloseAnthropic returns a copy of a stored Messages answer with notice
// before the text of its first text block; ok is false when it has none.
func DiscloseAnthropic(body []byte, notice string) ([]byte, bool) {
	var m map[string]json.RawMessage
	var blocks []map[string]json.RawMessage
	if json.Unmarshal(body, &m) != nil || json.Unmarshal(m["content"], &blocks) != nil {
		return nil, false
	}
	for _, b := range blocks {
		var typ, text string
		if json.Unmarshal(b["type"], &typ) != nil || typ != "text" || json.Unmarshal(b["text"], &text) != nil {
			continue
		}
		b["text"], _ = json.Marshal(notice + text)
		c, err := json.Marshal(blocks)
		if err != nil {
			return nil, false
		}
		m["content"] = c
		out, err := json.Marshal(m)
		return out, err == nil
	}
	return nil, false
}

// ErrorShaper is implemented by a ResponseWriter whose route speaks another
// API than OpenAI's: WriteError and WriteErrorEvent then write that API's
// error shape.
type ErrorShaper interface{ ErrorShape() API }

func shapeOf(w any) API {
	if s, ok := w.(ErrorShaper); ok {
		return s.ErrorShape()
	}
	return ""
}

// AnthropicError is Anthropic's error shape.
type AnthropicError struct {
	Type  string               `json:"type"` // "error"
	Error AnthropicErrorDetail `json:"error"`
}

// AnthropicErrorDetail is the inside of an AnthropicError.
type AnthropicErrorDetail struct {
	Type    string `json:"type"`
	Message string `json:"message"`
}

// AnthropicStatus maps an edge status to Anthropic's: 503 (the upstream
// unavailable, the edge busy or shedding) is 529 overloaded_error.
func AnthropicStatus(status int) (int, string) {
	switch {
	case status == http.StatusBadRequest || status == http.StatusUnsupportedMediaType || status == http.StatusRequestTimeout:
		return status, "invalid_request_error"
	case status == http.StatusUnauthorized:
		return status, "authentication_error"
	case status == http.StatusForbidden:
		return status, "permission_error"
	case status == http.StatusNotFound:
		return status, "not_found_error"
	case status == http.StatusRequestEntityTooLarge:
		return status, "request_too_large"
	case status == http.StatusTooManyRequests:
		return status, "rate_limit_error"
	case status == http.StatusServiceUnavailable || status == 529:
		return 529, "overloaded_error"
	case status == http.StatusGatewayTimeout:
		return status, "timeout_error"
	case status < 500:
		return status, "invalid_request_error"
	}
	return status, "api_error"
}

func writeAnthropicError(w http.ResponseWriter, status, retryAfter int, body ErrorBody) {
	status, typ := AnthropicStatus(status)
	b, _ := json.Marshal(AnthropicError{Type: "error", Error: AnthropicErrorDetail{Type: typ, Message: body.Error.Message}})
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)+1))
	if retryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(retryAfter))
	}
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

func writeAnthropicErrorEvent(w io.Writer, e ErrorBody) error {
	b, _ := json.Marshal(AnthropicError{Type: "error", Error: AnthropicErrorDetail{Type: "api_error", Message: e.Error.Message}})
	return writeNamedEvent(w, "error", b)
}

func writeNamedEvent(w io.Writer, name string, data []byte) error {
	buf := make([]byte, 0, len(data)+len(name)+16)
	buf = append(buf, "event: "...)
	buf = append(buf, name...)
	buf = append(buf, "\ndata: "...)
	buf = append(buf, data...)
	buf = append(buf, '\n', '\n')
	_, err := w.Write(buf)
	return err
}
