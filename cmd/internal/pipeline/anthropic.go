package pipeline

// Anthropic Messages routes (api: anthropic) share the whole flow with the
// OpenAI APIs; what differs is decided by the API in the openai package
// (validation, key material, stream assembly and replay) and here: every
// answer the edge writes itself — refusals, errors, degraded rungs — is in
// Anthropic's shape.

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"time"

	"github.com/edgecache/edgecache/cmd/internal/openai"
)

// shapedWriter marks the ResponseWriter of a route whose errors are not in
// OpenAI's shape (openai.ErrorShaper); Unwrap keeps
// http.ResponseController (flushes, write deadlines) working.
type shapedWriter struct {
	http.ResponseWriter
	api openai.API
}

func (w shapedWriter) ErrorShape() openai.API      { return w.api }
func (w shapedWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// errorShape returns w, marked when rt speaks Anthropic's API.
func errorShape(w http.ResponseWriter, rt *Route) http.ResponseWriter {
	if rt.API == openai.APIAnthropic {
		return shapedWriter{ResponseWriter: w, api: rt.API}
	}
	return w
}

// syntheticAnswer renders a template in the request's API shape.
func syntheticAnswer(req *openai.Request, id, text string, now time.Time) []byte {
	switch req.API {
	case openai.APIAnthropic:
		sum := sha256.Sum256([]byte(id + "\x00" + text))
		return openai.SyntheticAnthropic(req.Model, hex.EncodeToString(sum[:8]), text)
	case openai.APIResponses:
		return openai.SyntheticResponse(req.Model, id, text, now)
	}
	return syntheticChat(req.Model, id, text, now)
}

// discloseAnthropic writes the semantic-nearest notice before the text of
// a stored Messages answer.
func discloseAnthropic(body []byte, notice string) ([]byte, error) {
	b, ok := openai.DiscloseAnthropic(body, notice)
	if !ok {
		return nil, errNotDisclosable
	}
	return b, nil
}
