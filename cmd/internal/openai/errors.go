package openai

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// Error types used in error bodies, as OpenAI names them.
const (
	TypeInvalidRequest = "invalid_request_error"
	TypeRateLimit      = "rate_limit_error"    // never "requests": SDKs key off the status
	TypeServer         = "server_error"        // an upstream or edge failure
	TypeUnavailable    = "service_unavailable" // overload, with Retry-After
)

// ErrorBody is the OpenAI error shape: {"error":{"message","type","param","code"}}.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail is the inside of an ErrorBody.
type ErrorDetail struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

// NewError builds an error body; empty param and code encode as null.
func NewError(typ, code, param, msg string) ErrorBody {
	e := ErrorBody{Error: ErrorDetail{Message: msg, Type: typ}}
	if param != "" {
		e.Error.Param = &param
	}
	if code != "" {
		e.Error.Code = &code
	}
	return e
}

// WriteError writes an OpenAI-shaped error with status. retryAfter > 0 adds
// a Retry-After header in whole seconds.
func WriteError(w http.ResponseWriter, status int, retryAfter int, body ErrorBody) {
	if shapeOf(w) == APIAnthropic {
		writeAnthropicError(w, status, retryAfter, body)
		return
	}
	b, _ := json.Marshal(body) // plain structs of strings: cannot fail
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)+1))
	if retryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(retryAfter))
	}
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
