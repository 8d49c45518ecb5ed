// Package openai holds the OpenAI wire format as edgecache needs it: request
// parsing and validation, the canonical form that exact cache keys are made
// of, error bodies, and Server-Sent Events (forwarding, assembling a stream
// into one response, and replaying a stored response as a stream).
package openai

import (
	"errors"
	"fmt"
	"strings"
)

// Kind of API a route speaks; it decides validation, what is cacheable and
// how a stored answer is replayed.
type API string

// The APIs edgecache understands.
const (
	APIChat        API = "chat"        // POST /v1/chat/completions
	APICompletions API = "completions" // POST /v1/completions (legacy)
	APIEmbeddings  API = "embeddings"  // POST /v1/embeddings
	APIModels      API = "models"      // GET /v1/models, passed through
	APIJSON        API = "json"        // any JSON POST, exact cache only
	APIAnthropic   API = "anthropic"   // POST /v1/messages (Anthropic Messages)
)

// Request is a parsed, validated request body.
type Request struct {
	API API
	// Body is the whole body, canonical. Its strings are views of the
	// bytes parsed (ParseJSON): whatever is kept beyond the request must be
	// copied (strings.Clone), or it keeps the whole body alive.
	Body Value

	Model        string // a copy, safe to keep
	Stream       bool
	IncludeUsage bool     // stream_options.include_usage
	Temperature  *float64 // nil when absent
	N            int64    // choices asked for; 1 when absent
}

// InvalidRequestError is a client error in the request body; Param names the
// offending field when there is one.
type InvalidRequestError struct {
	Param string
	Code  string
	Msg   string
}

func (e *InvalidRequestError) Error() string { return e.Msg }

func invalid(param, code, format string, args ...any) *InvalidRequestError {
	return &InvalidRequestError{Param: param, Code: code, Msg: fmt.Sprintf(format, args...)}
}

// ParseRequest parses and validates body for api. Only the fields edgecache
// acts on are checked (the upstream validates the rest): a wrong type in one
// of them is a 400 here rather than a surprise later.
func ParseRequest(api API, body []byte) (*Request, error) {
	return ParseRequestFor(api, body, false)
}

// ParseRequestFor is ParseRequest, with "model" optional when
// modelOptional: a route whose path names the model (Azure OpenAI's
// /openai/deployments/{deployment}/…, where the body may omit it).
func ParseRequestFor(api API, body []byte, modelOptional bool) (*Request, error) {
	v, err := ParseJSON(body)
	if err != nil {
		if err == ErrInvalidUTF8 {
			return nil, invalid("", "invalid_encoding", "%s", err)
		}
		return nil, invalid("", "invalid_json", "We could not parse the JSON body of your request: %s.", err)
	}
	r := &Request{API: api, Body: v, N: 1}
	if api == APIJSON {
		return r, nil
	}
	if v.Kind != Object {
		return nil, invalid("", "invalid_type", "The request body must be a JSON object, not %s.", v.Kind)
	}
	if r.Model, err = str(v, "model", !modelOptional); err != nil {
		return nil, err
	}
	// The model outlives the request (journal records, semantic filters):
	// a copy, not a view that would keep the whole body alive.
	r.Model = strings.Clone(r.Model)
	if api == APIAnthropic {
		return r, checkAnthropic(r, v)
	}
	switch api {
	case APIChat:
		if err := checkMessages(v); err != nil {
			return nil, err
		}
	case APIResponses:
		if err := checkResponses(v); err != nil {
			return nil, err
		}
	case APIEmbeddings:
		in, ok := v.Get("input")
		if !ok {
			return nil, invalid("input", "missing_required_parameter", "You must provide 'input'.")
		}
		if in.Kind != String && in.Kind != Array {
			return nil, invalid("input", "invalid_type", "'input' must be a string or an array, not %s.", in.Kind)
		}
	}
	if api == APIEmbeddings {
		return r, nil
	}
	if s, ok := v.Get("stream"); ok && s.Kind != Null {
		if s.Kind != Bool {
			return nil, invalid("stream", "invalid_type", "'stream' must be a boolean, not %s.", s.Kind)
		}
		r.Stream = s.Bool()
	}
	if so, ok := v.Get("stream_options"); ok && so.Kind != Null {
		if so.Kind != Object {
			return nil, invalid("stream_options", "invalid_type", "'stream_options' must be an object, not %s.", so.Kind)
		}
		if iu, ok := so.Get("include_usage"); ok && iu.Kind != Null {
			if iu.Kind != Bool {
				return nil, invalid("stream_options.include_usage", "invalid_type", "'stream_options.include_usage' must be a boolean, not %s.", iu.Kind)
			}
			r.IncludeUsage = iu.Bool()
		}
	}
	if t, ok := v.Get("temperature"); ok && t.Kind != Null {
		f, ok := t.Float()
		if !ok {
			return nil, invalid("temperature", "invalid_type", "'temperature' must be a number, not %s.", t.Kind)
		}
		r.Temperature = &f
	}
	if n, ok := v.Get("n"); ok && n.Kind != Null {
		i, ok := n.Int()
		if !ok || i < 1 {
			return nil, invalid("n", "invalid_type", "'n' must be a positive integer.")
		}
		r.N = i
	}
	for _, name := range []string{"max_tokens", "max_completion_tokens"} {
		if m, ok := v.Get(name); ok && m.Kind != Null {
			if _, ok := m.Int(); !ok {
				return nil, invalid(name, "invalid_type", "'%s' must be an integer.", name)
			}
		}
	}
	return r, nil
}

func str(v Value, name string, required bool) (string, error) {
	f, ok := v.Get(name)
	if !ok || f.Kind == Null {
		if required {
			return "", invalid(name, "missing_required_parameter", "You must provide '%s'.", name)
		}
		return "", nil
	}
	if f.Kind != String {
		return "", invalid(name, "invalid_type", "'%s' must be a string, not %s.", name, f.Kind)
	}
	if required && f.Str() == "" {
		return "", invalid(name, "missing_required_parameter", "'%s' must not be empty.", name)
	}
	return f.Str(), nil
}

func checkMessages(v Value) error {
	m, ok := v.Get("messages")
	if !ok || m.Kind == Null {
		return invalid("messages", "missing_required_parameter", "You must provide 'messages'.")
	}
	if m.Kind != Array {
		return invalid("messages", "invalid_type", "'messages' must be an array, not %s.", m.Kind)
	}
	if len(m.Elems()) == 0 {
		return invalid("messages", "invalid_value", "'messages' must contain at least one message.")
	}
	for i, msg := range m.Elems() {
		if msg.Kind != Object {
			return invalid(fmt.Sprintf("messages[%d]", i), "invalid_type", "'messages[%d]' must be an object, not %s.", i, msg.Kind)
		}
		role, ok := msg.Get("role")
		if !ok || role.Kind != String || role.Str() == "" {
			return invalid(fmt.Sprintf("messages[%d].role", i), "invalid_type", "'messages[%d].role' must be a non-empty string.", i)
		}
		if c, ok := msg.Get("content"); ok {
			switch c.Kind {
			case String, Array, Null:
			default:
				return invalid(fmt.Sprintf("messages[%d].content", i), "invalid_type", "'messages[%d].content' must be a string, an array of parts or null, not %s.", i, c.Kind)
			}
		}
	}
	return nil
}

// keyIgnored lists top-level fields that never change the answer: how it is
// delivered is not what it says. A streamed and a non-streamed request for the
// same prompt share one cache entry.
var keyIgnored = []string{"stream", "stream_options"}

// AppendKeyMaterial appends the canonical bytes of everything in the request
// that changes the answer.
func (r *Request) AppendKeyMaterial(dst []byte) []byte {
	if r.API == APIJSON {
		return r.Body.AppendCanonical(dst)
	}
	return r.Body.AppendCanonicalExcept(dst, keyIgnored...)
}

// WithModel returns the request body, in canonical form, with "model" set
// to model (a backup target may name the same model differently).
func (r *Request) WithModel(model string) ([]byte, error) {
	if r.Body.Kind != Object {
		return nil, errors.New("request body is not an object")
	}
	members := make([]Member, len(r.Body.obj))
	copy(members, r.Body.obj)
	for i := range members {
		if members[i].Key == "model" {
			members[i].Val = Value{Kind: String, str: model}
		}
	}
	return Value{Kind: Object, obj: members}.AppendCanonical(nil), nil
}

// EstimateTokens estimates what a request may cost in tokens before it is
// sent: about four bytes of prompt per token, plus the completion it asks
// for at most (max_tokens or max_completion_tokens; 256 when unbounded).
func EstimateTokens(r *Request, bodyLen int) int64 {
	est := int64(bodyLen/4) + 1
	out := int64(256)
	for _, name := range []string{"max_completion_tokens", "max_tokens", "max_output_tokens"} {
		if v, ok := r.Body.Get(name); ok {
			if n, ok := v.Int(); ok && n > 0 {
				out = n
				break
			}
		}
	}
	if r.API == APIEmbeddings {
		out = 0
	}
	return est + out*r.N
}
