package llmsim

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"sync"
)

// This file holds the OpenAI wire details shared by the endpoints: request
// decoding helpers, the error body, and pooled buffers.

// apiError is a client error reported with the OpenAI error shape.
type apiError struct {
	status  int
	message string
	param   string // "" is sent as null
}

func (e *apiError) Error() string { return e.message }

func badRequest(param, message string) *apiError {
	return &apiError{status: http.StatusBadRequest, message: message, param: param}
}

// errorKind maps an HTTP status to the OpenAI error "type" and "code" ("" is
// sent as null). It is the one table for every error llmsim sends, injected
// or not, so the shapes cannot drift apart.
func errorKind(status int) (typ, code string) {
	switch {
	case status == http.StatusTooManyRequests:
		return "requests", "rate_limit_exceeded"
	case status == http.StatusUnauthorized:
		return "invalid_request_error", "invalid_api_key"
	case status >= 500:
		return "server_error", ""
	default:
		return "invalid_request_error", ""
	}
}

// writeError sends {"error":{"message","type","param","code"}} with status.
func writeError(w http.ResponseWriter, status int, message, param string) {
	typ, code := errorKind(status)
	bp := getBytes()
	defer putBytes(bp)
	b := append((*bp)[:0], `{"error":{"message":`...)
	b = appendJSONString(b, message)
	b = append(b, `,"type":`...)
	b = appendJSONString(b, typ)
	b = append(b, `,"param":`...)
	b = appendNullableString(b, param)
	b = append(b, `,"code":`...)
	b = appendNullableString(b, code)
	b = append(b, "}}\n"...)
	*bp = b
	writeBody(w, status, b)
}

func writeAPIError(w http.ResponseWriter, e *apiError) {
	writeError(w, e.status, e.message, e.param)
}

func writeMethodNotAllowed(w http.ResponseWriter, r *http.Request, allow string) {
	w.Header().Set("Allow", allow)
	writeError(w, http.StatusMethodNotAllowed, "Method "+r.Method+" not allowed on "+r.URL.Path+"; use "+allow, "")
}

var (
	contentTypeJSON  = []string{"application/json"}
	contentTypeEvent = []string{"text/event-stream"}
	cacheControlNo   = []string{"no-cache"}
)

// writeBody sends a complete JSON body. net/http adds the Content-Length of
// a body that fits its 2 KiB write buffer without allocating, so only
// larger bodies get the header from here (otherwise they would be chunked).
func writeBody(w http.ResponseWriter, status int, b []byte) {
	h := w.Header()
	h["Content-Type"] = contentTypeJSON
	if len(b) >= 2048 {
		h["Content-Length"] = []string{strconv.Itoa(len(b))}
	}
	w.WriteHeader(status)
	_, _ = w.Write(b) // the client is gone; nothing to do
}

// writeJSON marshals v; for the admin endpoints, not the hot path.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "encoding response: "+err.Error(), "")
		return
	}
	writeBody(w, status, append(b, '\n'))
}

// decodeError turns a json.Unmarshal error into the client error to send.
func decodeError(err error) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return badRequest(te.Field, "Invalid type for '"+te.Field+"': expected "+te.Type.String()+", got "+te.Value+".")
	}
	return badRequest("", "We could not parse the JSON body of your request: "+err.Error())
}

// messageContent is a chat message's content: a string, an array of parts
// (text parts are concatenated, other parts ignored) or null.
type messageContent string

func (c *messageContent) UnmarshalJSON(b []byte) error {
	b = bytes.TrimLeft(b, " \t\r\n")
	if len(b) == 0 {
		return badRequest("messages", "Invalid message content.")
	}
	switch b[0] {
	case '"':
		// Fast path: without escapes or non-ASCII bytes the JSON string is
		// its own content (the outer decoder has validated it).
		if len(b) >= 2 && isPlainASCII(b[1:len(b)-1]) {
			*c = messageContent(b[1 : len(b)-1])
			return nil
		}
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*c = messageContent(s)
	case '[':
		var parts []struct {
			Type string `json:"type"`
			Text string `json:"text"`
		}
		if err := json.Unmarshal(b, &parts); err != nil {
			return badRequest("messages", "Invalid content parts: "+err.Error())
		}
		var buf []byte
		for _, p := range parts {
			if p.Type == "text" {
				buf = append(buf, p.Text...)
			}
		}
		*c = messageContent(buf)
	case 'n':
		*c = ""
	default:
		return badRequest("messages", "Invalid type for message content: expected a string or an array of content parts.")
	}
	return nil
}

// isPlainASCII reports whether b is printable ASCII with no JSON escapes.
func isPlainASCII(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c == '"' || c == '\\' || c >= 0x80 {
			return false
		}
	}
	return true
}

// appendJSONString appends s as a JSON string. Plain ASCII (the common
// case: model names, filler words) is copied as is.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= 0x80 {
			q, _ := json.Marshal(s) // cannot fail for a string
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

func appendNullableString(b []byte, s string) []byte {
	if s == "" {
		return append(b, "null"...)
	}
	return appendJSONString(b, s)
}

// appendUsage appends a "usage" object value.
func appendUsage(b []byte, prompt, completion int) []byte {
	b = append(b, `{"prompt_tokens":`...)
	b = strconv.AppendInt(b, int64(prompt), 10)
	b = append(b, `,"completion_tokens":`...)
	b = strconv.AppendInt(b, int64(completion), 10)
	b = append(b, `,"total_tokens":`...)
	b = strconv.AppendInt(b, int64(prompt+completion), 10)
	return append(b, '}')
}

// countWords counts runs of non-space bytes: the simulator's "tokens".
func countWords(s string) int {
	n, in := 0, false
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case ' ', '\t', '\n', '\r', '\v', '\f':
			in = false
		default:
			if !in {
				n++
				in = true
			}
		}
	}
	return n
}

// Pools for request bodies and response bytes. Oversized buffers are
// dropped rather than kept forever.
const maxPooledBytes = 1 << 20

var (
	bufferPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}
	bytesPool  = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}
)

func getBuffer() *bytes.Buffer { return bufferPool.Get().(*bytes.Buffer) }

func putBuffer(b *bytes.Buffer) {
	if b.Cap() > maxPooledBytes {
		return
	}
	b.Reset()
	bufferPool.Put(b)
}

func getBytes() *[]byte { return bytesPool.Get().(*[]byte) }

func putBytes(b *[]byte) {
	if cap(*b) > maxPooledBytes {
		return
	}
	*b = (*b)[:0]
	bytesPool.Put(b)
}
