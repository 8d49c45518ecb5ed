package pipeline

// The Responses API's paths besides POST {path}: GET and DELETE
// {path}/{id}, POST {path}/{id}/cancel, GET {path}/{id}/input_items. They
// read or change responses the provider stores, so they are passed
// through, to the same path under the route's upstream path.

import (
	"net/http"
	"strings"

	"github.com/edgecache/edgecache/cmd/internal/openai"
)

// storedResponse reports whether r is about a stored response (any method
// on a path under a responses route's own): passed through.
func storedResponse(rt *Route, r *http.Request) bool {
	return rt.API == openai.APIResponses && subPath(rt, r) != ""
}

// subPath is what r's path has after a plain route's Path ("/resp_1",
// "/resp_1/cancel"), or "".
func subPath(rt *Route, r *http.Request) string {
	if rt.API != openai.APIResponses {
		return ""
	}
	rest, ok := strings.CutPrefix(r.URL.Path, strings.TrimSuffix(rt.Path, "/"))
	if !ok || !strings.HasPrefix(rest, "/") || rest == "/" {
		return ""
	}
	return rest
}
