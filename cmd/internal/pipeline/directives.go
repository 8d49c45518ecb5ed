package pipeline

// HTTP caching directives (RFC 9111 §5.2) on both sides of the cache.
//
// A request's Cache-Control may narrow what it accepts from the cache:
//
//   - max-age=N: an entry older than N seconds is not served; the request
//     goes upstream and its answer replaces the entry (Cache-Status
//     fwd=stale; detail=max-age).
//   - min-fresh=N: the entry must stay fresh N more seconds, else the same
//     (detail=min-fresh).
//   - max-stale[=N]: an expired entry is accepted up to N seconds past its
//     expiry (no N: as long as the cache still holds it, i.e. within the
//     route's stale_if_error window) when no fresh one is found
//     (Cache-Status hit; detail=max-stale).
//   - only-if-cached: never an upstream call; a miss is answered 504 in the
//     API's error shape (Cache-Status fwd=miss; detail=only-if-cached). On a
//     shared route with reveal: false every such request gets the 504: a
//     200 would tell a tenant what others asked.
//
// An upstream answer's Cache-Control decides whether and how long it is
// stored (responseTTL): no-store, no-cache and max-age=0 (or s-maxage=0)
// are not stored (on an event stream, no-cache and max-age=0 are read as
// what SSE servers mean by them, "do not buffer this", and ignored);
// private is stored only in a tenant's own namespace
// (never on a shared route or for keyless callers); s-maxage=N, else
// max-age=N, shortens the route's TTL, never lengthens it (the route's TTL
// is the operator's ceiling).

import (
	"context"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/edgecache/edgecache/cache"
	"github.com/edgecache/edgecache/cmd/internal/openai"
)

// directives are the parsed Cache-Control directives of a request;
// absent durations are negative.
type directives struct {
	maxAge, maxStale, minFresh time.Duration
	onlyIfCached               bool
}

// any reports whether the request narrows what it accepts.
func (d directives) any() bool {
	return d.maxAge >= 0 || d.maxStale >= 0 || d.minFresh >= 0 || d.onlyIfCached
}

// ccSeconds parses a delta-seconds argument (RFC 9111 §1.2.2): a
// non-negative integer, quoted or not; too large → the largest duration.
func ccSeconds(v string) (time.Duration, bool) {
	v = strings.Trim(v, `"`)
	n, err := strconv.ParseUint(v, 10, 63)
	if err != nil {
		if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange {
			return math.MaxInt64, true
		}
		return 0, false
	}
	if n > uint64(math.MaxInt64/int64(time.Second)) {
		return math.MaxInt64, true
	}
	return time.Duration(n) * time.Second, true
}

// eachDirective calls f with every directive of h's Cache-Control, its
// name in lower case and its argument ("" without one).
func eachDirective(h http.Header, f func(name, arg string)) {
	for _, v := range h.Values("Cache-Control") {
		for d := range strings.SplitSeq(v, ",") {
			name, arg, _ := strings.Cut(strings.TrimSpace(d), "=")
			f(strings.ToLower(strings.TrimSpace(name)), strings.TrimSpace(arg))
		}
	}
}

// requestDirectives parses r's Cache-Control. An argument that does not
// parse ignores its directive, as RFC 9111 §4.2.1 has caches do for
// invalid freshness values, except max-age, which then means 0 (the
// conservative reading).
func requestDirectives(h http.Header) directives {
	d := directives{maxAge: -1, maxStale: -1, minFresh: -1}
	eachDirective(h, func(name, arg string) {
		switch name {
		case "max-age":
			if s, ok := ccSeconds(arg); ok {
				d.maxAge = s
			} else {
				d.maxAge = 0
			}
		case "max-stale":
			if arg == "" {
				d.maxStale = math.MaxInt64
			} else if s, ok := ccSeconds(arg); ok {
				d.maxStale = s
			}
		case "min-fresh":
			if s, ok := ccSeconds(arg); ok {
				d.minFresh = s
			}
		case "only-if-cached":
			d.onlyIfCached = true
		}
	})
	return d
}

// refuses returns why the request does not accept the fresh entry e, or "".
func (d directives) refuses(e cache.Entry, now time.Time) string {
	switch {
	case d.maxAge >= 0 && e.Age(now) > d.maxAge:
		return "max-age"
	case d.minFresh >= 0 && e.TTL(now) < d.minFresh:
		return "min-fresh"
	}
	return ""
}

// staleEntry returns an expired entry the request accepts under its
// max-stale, if the cache still holds one.
func (p *Pipeline) staleEntry(ctx context.Context, rt *Route, key cache.Key, d directives) (cache.Entry, bool) {
	if d.maxStale < 0 || rt.StaleIfError <= 0 {
		return cache.Entry{}, false
	}
	st, ok := p.cfg.Cache.(Staler)
	if !ok {
		return cache.Entry{}, false
	}
	e, err := st.GetStale(ctx, key, min(d.maxStale, rt.StaleIfError))
	if err != nil {
		return cache.Entry{}, false
	}
	now := p.cfg.Now()
	if -e.TTL(now) > d.maxStale || (d.maxAge >= 0 && e.Age(now) > d.maxAge) {
		return cache.Entry{}, false
	}
	return e, true
}

// writeOnlyIfCached answers a request with only-if-cached that the cache
// cannot serve: 504, no upstream call (RFC 9111 §5.2.1.7). On a shared
// route with reveal: false it is the answer to every only-if-cached
// request, hit or not, and says nothing more.
func writeOnlyIfCached(w http.ResponseWriter, rt *Route) {
	if rt.hidden() {
		w.Header().Set("Cache-Status", hiddenStatus)
	} else {
		w.Header().Set("Cache-Status", "edgecache; fwd=miss; detail=only-if-cached")
	}
	openai.WriteError(w, http.StatusGatewayTimeout, 0, openai.NewError(openai.TypeServer, "only_if_cached", "",
		"The request has Cache-Control: only-if-cached and no cached answer matches it."))
}

// responseTTL returns how long an upstream answer with header h may be
// stored on route rt, or why it may not be (ttl 0): tenantNS says the key
// is in a tenant's own namespace.
func responseTTL(h http.Header, rt *Route, tenantNS bool) (ttl time.Duration, why string) {
	ttl = rt.TTL
	sse := openai.IsEventStream(h)
	maxAge, sMaxAge := time.Duration(-1), time.Duration(-1)
	eachDirective(h, func(name, arg string) {
		switch name {
		case "no-store", "no-cache":
			// no-cache with field names (no-cache="Set-Cookie") is still
			// treated as no-cache: edgecache replays no such fields but
			// revalidation is not something it does.
			if why == "" && (name == "no-store" || !sse) {
				why = name
			}
		case "private":
			if !tenantNS && why == "" {
				why = "private"
			}
		case "max-age":
			if s, ok := ccSeconds(arg); ok {
				maxAge = s
			} else {
				maxAge = 0
			}
		case "s-maxage":
			if s, ok := ccSeconds(arg); ok {
				sMaxAge = s
			} else {
				sMaxAge = 0
			}
		}
	})
	if why != "" {
		return 0, why
	}
	limit := maxAge
	if sMaxAge >= 0 { // a shared cache's own limit wins (RFC 9111 §5.2.2.10)
		limit = sMaxAge
	}
	if limit == 0 && !sse {
		return 0, "max-age=0"
	}
	if limit > 0 && limit < ttl {
		ttl = limit
	}
	return ttl, ""
}
