package pipeline

// The Responses API's paths besides POST {path}: GET and DELETE
// {path}/{id}, POST {path}/{id}/cancel, GET {path}/{id}/input_items, POST
// {path}/input_tokens and {path}/compact. They read or change what the
// provider stores, or are not answers to cache, so they are passed
// through, to the same path under the route's upstream path.

import (
	"net/http"
	"strings"

	"github.com/edgecache/edgecache/cmd/internal/openai"
)

// passStoredResponse forwards a request under a responses route's path as
// it came, its body included (POST /v1/responses/input_tokens and
// /compact carry one).
func (p *Pipeline) passStoredResponse(w http.ResponseWriter, r *http.Request, rt *Route) {
	var body []byte
	if r.Method == http.MethodPost && r.ContentLength != 0 {
		b, status, err := readBody(w, r, p.cfg.MaxBodyBytes)
		if err != nil {
			openai.WriteError(w, status, 0, openai.NewError(openai.TypeInvalidRequest, "invalid_body", "", err.Error()))
			return
		}
		body = b
	}
	p.forward(w, r, &pending{rt: rt, usage: -1}, body, passThrough, "edgecache; fwd=bypass; detail=passthrough")
}

// storedResponse reports whether r is about a stored response (any method
// on a path under a responses route's own): passed through.
func storedResponse(rt *Route, r *http.Request) bool {
	return rt.API == openai.APIResponses && subPath(rt, r) != ""
}

// subPath is what r's path has after a plain route's Path on a responses
// route ("/resp_1", "/resp_1/cancel") or a models route ("/deepseek-chat":
// GET /v1/models/{id} asks for one model), or "".
func subPath(rt *Route, r *http.Request) string {
	if rt.API != openai.APIResponses && rt.API != openai.APIModels {
		return ""
	}
	rest, ok := strings.CutPrefix(r.URL.Path, strings.TrimSuffix(rt.Path, "/"))
	if !ok || !strings.HasPrefix(rest, "/") || rest == "/" {
		return ""
	}
	return rest
}
