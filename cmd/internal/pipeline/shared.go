package pipeline

import (
	"net/http"
	"strconv"
)

// What tells two tenants' requests apart besides the body (ARCHITECTURE.md,
// "Keys").
//
// A private route's namespace is the caller's API key; the OpenAI project
// and organization the request names join its keys, so two projects of one
// key never share an entry.
//
// A shared route has one namespace for every tenant, so its answer must be
// a function of the key alone. The upstream is called with the edge's own
// key (config validation refuses a shared route without one), a body in
// canonical form (exactly what the key was made of: no duplicate member or
// odd escape that the upstream's parser could read otherwise), and only the
// route's forward_headers (plus what the edge sets itself, see
// sharedHeader), whose values join the key. Whatever tenant fills an entry,
// the upstream saw the same request.

// projectHeaders name the OpenAI organization and project a request is
// billed to and configured by, and the Anthropic API version and beta
// features that shape the answer: they join a private route's keys.
var projectHeaders = []string{"Openai-Organization", "Openai-Project", "Anthropic-Version", "Anthropic-Beta"}

// sharedMark starts the header part of every shared route's scope, so a
// shared key never equals one made before shared routes forwarded only
// their allowlist (such an entry may have been filled with a tenant's key).
const sharedMark = "\x00shared-v2"

// partition returns the header material of r that joins rt's keys: the
// values of the route's forward_headers on a shared route (always marked,
// even when none is set), of projectHeaders on a private one ("" when the
// request has none).
func (rt *Route) partition(h http.Header) string {
	names := projectHeaders
	var b []byte
	if rt.Shared {
		names = rt.ForwardHeaders
		b = append(b, sharedMark...)
	}
	for _, name := range names {
		vv, ok := h[name]
		if !ok {
			continue
		}
		if b == nil {
			b = append(b, "\x00p"...)
		}
		b = append(b, '\n')
		b = append(b, name...)
		for _, v := range vv { // length-prefixed: no value can imitate another
			b = append(b, ' ')
			b = strconv.AppendInt(b, int64(len(v)), 10)
			b = append(b, ':')
			b = append(b, v...)
		}
	}
	return string(b)
}

// sharedAlways are sent upstream on every shared call when the client set
// them: they never change the answer (a request id for correlation; the
// SDK's timeout and retry count, which the edge itself reads to set the
// deadline and decide on retries).
var sharedAlways = []string{"X-Request-Id", "X-Stainless-Timeout", "X-Stainless-Retry-Count"}

// edgeKeyPlaceholder stands in an Api-Key header for the edge's key: the
// upstream client replaces the value with its own key (Azure's header
// style, kept when the client used it). It never reaches the upstream
// from a configured edge, and carries no tenant's credential otherwise.
const edgeKeyPlaceholder = "edgecache-edge-key"

// sharedHeader is the header of a shared route's upstream call for the
// inbound header h: its forward headers, sharedAlways, a fixed
// Content-Type and User-Agent, and no credentials (the upstream client
// sets the edge's key).
func sharedHeader(h http.Header, forward []string, hasBody bool) http.Header {
	out := make(http.Header, len(forward)+len(sharedAlways)+3)
	out["User-Agent"] = []string{"edgecache"}
	if hasBody {
		out["Content-Type"] = []string{"application/json"}
	}
	for _, names := range [...][]string{sharedAlways, forward} {
		for _, name := range names {
			if vv, ok := h[name]; ok {
				out[name] = vv // read only: the upstream client copies the header
			}
		}
	}
	if h.Get("Api-Key") != "" {
		out["Api-Key"] = []string{edgeKeyPlaceholder}
	}
	if h.Get("X-Api-Key") != "" { // Anthropic's header style, kept the same way
		out["X-Api-Key"] = []string{edgeKeyPlaceholder}
	}
	return out
}

// hiddenStatus is the Cache-Status of every answer that is not degraded on
// a shared route with reveal: false: whether it was a hit is not said.
const hiddenStatus = "edgecache; detail=shared"

// hidden reports whether rt's answers must not say whether they came from
// the cache.
func (rt *Route) hidden() bool { return rt.Shared && !rt.Reveal }

// hideHeader keeps, of an upstream answer's header, only what a cached
// answer also carries, so a miss looks like a hit.
func hideHeader(h http.Header, stream bool) http.Header {
	out := http.Header{}
	if ct, ok := h["Content-Type"]; ok {
		out["Content-Type"] = ct
	}
	if stream {
		out.Set("Cache-Control", "no-cache")
	}
	return out
}
