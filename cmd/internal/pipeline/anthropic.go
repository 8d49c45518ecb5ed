package pipeline

// Anthropic Messages routes (api: anthropic) share the whole flow with the
// OpenAI APIs; what differs is decided by the API in the openai package
// (validation, key material, stream assembly and replay) and here: every
// answer the edge writes itself — refusals, errors, degraded rungs — is in
// Anthropic's shape.

import (
	"net/http"

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
