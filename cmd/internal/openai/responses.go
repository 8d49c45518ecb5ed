package openai

// The OpenAI Responses API (POST /v1/responses): validation, judging a
// stored answer, the semantic tier's view of the last user turn, and the
// answers the edge writes itself (templates, the semantic-nearest notice).
// Streams are in responses_stream.go.

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// APIResponses is POST /v1/responses (see request.go for the others).
const APIResponses API = "responses"

// checkResponses validates the Responses fields edgecache acts on: input
// (a string or an array of items, when present: previous_response_id or a
// stored prompt may stand in for it), instructions, background and
// max_output_tokens.
func checkResponses(v Value) error {
	if in, ok := v.Get("input"); ok && in.Kind != Null {
		switch in.Kind {
		case String:
		case Array:
			for i, it := range in.Elems() {
				if it.Kind != Object {
					return invalid(fmt.Sprintf("input[%d]", i), "invalid_type", "'input[%d]' must be an object, not %s.", i, it.Kind)
				}
			}
		default:
			return invalid("input", "invalid_type", "'input' must be a string or an array of input items, not %s.", in.Kind)
		}
	} else {
		_, prev := v.Get("previous_response_id")
		_, prompt := v.Get("prompt")
		_, conv := v.Get("conversation")
		if !prev && !prompt && !conv {
			return invalid("input", "missing_required_parameter", "You must provide 'input'.")
		}
	}
	if _, err := str(v, "instructions", false); err != nil {
		return err
	}
	if b, ok := v.Get("background"); ok && b.Kind != Null && b.Kind != Bool {
		return invalid("background", "invalid_type", "'background' must be a boolean, not %s.", b.Kind)
	}
	if m, ok := v.Get("max_output_tokens"); ok && m.Kind != Null {
		if n, ok := m.Int(); !ok || n < 1 {
			return invalid("max_output_tokens", "invalid_type", "'max_output_tokens' must be a positive integer.")
		}
	}
	return nil
}

// ServerState names what a Responses request depends on that lives on the
// provider's servers, or "": such a request is neither served from nor
// stored in the cache, since the same body can mean a different
// conversation (previous_response_id, conversation, an item_reference in
// input, a stored prompt whose versions change) or asks for a response
// that is retrieved later (background).
func (r *Request) ServerState() string {
	if r.API != APIResponses {
		return ""
	}
	for _, f := range []string{"previous_response_id", "conversation", "prompt"} {
		if v, ok := r.Body.Get(f); ok && v.Kind != Null {
			return f
		}
	}
	if b, ok := r.Body.Get("background"); ok && b.Bool() {
		return "background"
	}
	in, _ := r.Body.Get("input")
	for _, it := range in.Elems() {
		if t, _ := it.Get("type"); t.Str() == "item_reference" {
			return "item_reference"
		}
	}
	return ""
}

// inspectResponses judges a Responses answer: complete when it is a
// response whose status is "completed", without error, with output.
// "incomplete" answers (max_output_tokens reached, content filter) are
// passed on but not stored.
func inspectResponses(body []byte) (bool, int64) {
	var r struct {
		Object string          `json:"object"`
		Status string          `json:"status"`
		Error  json.RawMessage `json:"error"`
		Output []outputItem    `json:"output"`
		Usage  *struct {
			TotalTokens *int64 `json:"total_tokens"`
		} `json:"usage"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return false, -1
	}
	tokens := int64(-1)
	if r.Usage != nil && r.Usage.TotalTokens != nil {
		tokens = *r.Usage.TotalTokens
	}
	ok := r.Object == "response" && r.Status == "completed" && hasOutput(r.Output) &&
		(len(r.Error) == 0 || bytes.Equal(r.Error, []byte("null")))
	return ok, tokens
}

type outputItem struct {
	Type    string `json:"type"`
	Content []struct {
		Text    string `json:"text"`
		Refusal string `json:"refusal"`
	} `json:"content"`
}

// hasOutput reports whether output holds an answer: a message with text
// or a refusal, or an item other than a message or reasoning (a tool call).
func hasOutput(out []outputItem) bool {
	for _, it := range out {
		switch it.Type {
		case "reasoning":
		case "message":
			for _, c := range it.Content {
				if strings.TrimSpace(c.Text) != "" || c.Refusal != "" {
					return true
				}
			}
		default:
			return true
		}
	}
	return false
}

// EmptyResponse reports whether a Responses answer says it completed but
// holds nothing: a failure like an empty chat answer, never a 200.
func EmptyResponse(body []byte) bool {
	var r struct {
		Status string       `json:"status"`
		Output []outputItem `json:"output"`
	}
	return json.Unmarshal(body, &r) == nil && r.Status == "completed" && !hasOutput(r.Output)
}

// lastUserTextResponses is LastUserText for the Responses API: the input
// when it is a string, else the last input item when it is the user's
// message of text only (a string, or input_text parts).
func (r *Request) lastUserTextResponses() (string, bool) {
	in, _ := r.Body.Get("input")
	switch in.Kind {
	case String:
		if strings.TrimSpace(in.Str()) == "" {
			return "", false
		}
		return in.Str(), true
	case Array:
		elems := in.Elems()
		if len(elems) == 0 {
			return "", false
		}
		last := elems[len(elems)-1]
		if t, ok := last.Get("type"); ok && t.Str() != "message" {
			return "", false
		}
		return userMessageText(last, "input_text")
	}
	return "", false
}

// SyntheticResponse renders an answer the edge writes itself (a template)
// as a completed Responses API response.
func SyntheticResponse(model, id, text string, now time.Time) []byte {
	sum := sha256.Sum256([]byte(id + "\x00" + text))
	h := hex.EncodeToString(sum[:8])
	resp := map[string]any{
		"id": "resp_edgecache_" + h, "object": "response", "created_at": now.Unix(),
		"status": "completed", "error": nil, "incomplete_details": nil, "model": model,
		"output": []any{map[string]any{
			"id": "msg_edgecache_" + h, "type": "message", "status": "completed", "role": "assistant",
			"content": []any{map[string]any{"type": "output_text", "text": text, "annotations": []any{}}},
		}},
		"parallel_tool_calls": true, "tool_choice": "auto", "tools": []any{},
		"text": map[string]any{"format": map[string]any{"type": "text"}},
		"usage": map[string]any{"input_tokens": 0, "output_tokens": 0, "total_tokens": 0,
			"input_tokens_details": map[string]any{"cached_tokens": 0}, "output_tokens_details": map[string]any{"reasoning_tokens": 0}},
	}
	b, _ := marshalNoEscape(resp) // plain values: cannot fail
	return b
}

// ErrNotDisclosable: a stored response has no output text a notice can
// precede (tool calls only, say).
var ErrNotDisclosable = errors.New("stored response has no output text for the notice")

// DiscloseResponse returns a copy of a stored response with notice before
// the text of its first output_text part (the one the SDKs' output_text
// begins with). body is not modified.
func DiscloseResponse(body []byte, notice string) ([]byte, error) {
	var resp map[string]any
	d := json.NewDecoder(bytes.NewReader(body))
	d.UseNumber()
	if err := d.Decode(&resp); err != nil {
		return nil, ErrNotDisclosable
	}
	out, _ := resp["output"].([]any)
	for _, it := range out {
		item, _ := it.(map[string]any)
		if item == nil || item["type"] != "message" {
			continue
		}
		parts, _ := item["content"].([]any)
		for _, p := range parts {
			part, _ := p.(map[string]any)
			if part == nil || part["type"] != "output_text" {
				continue
			}
			if t, _ := part["text"].(string); t != "" {
				part["text"] = notice + t
				return marshalNoEscape(resp)
			}
		}
	}
	return nil, ErrNotDisclosable
}

// marshalNoEscape is json.Marshal without HTML escaping: an answer's <, >
// and & stay as written.
func marshalNoEscape(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}
