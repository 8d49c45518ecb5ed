package pipeline

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgecache/edgecache/cmd/internal/config"
	"github.com/edgecache/edgecache/cmd/internal/llmsim"
)

// cacheStatusTTL returns the ttl= of a hit's Cache-Status.
func cacheStatusTTL(t *testing.T, cs string) int {
	t.Helper()
	_, v, ok := strings.Cut(cs, "ttl=")
	if !ok {
		t.Fatalf("Cache-Status %q has no ttl", cs)
	}
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil {
		t.Fatalf("Cache-Status %q: %v", cs, err)
	}
	return n
}

func TestRequestMaxAgeAndMinFresh(t *testing.T) {
	e := newEdge(t, edgeOpts{})
	const path = "/v1/chat/completions"
	body := chat("How fresh is this?")
	e.post(path, body)
	e.settle()
	time.Sleep(5 * time.Millisecond) // the entry is older than 0 s

	for _, cc := range []string{"max-age=60", "min-fresh=1", "max-age=60, min-fresh=60"} {
		if r := e.post(path, body, "Cache-Control", cc); !strings.HasPrefix(r.header.Get("Cache-Status"), "edgecache; hit;") {
			t.Errorf("%s: Cache-Status %q, want a hit", cc, r.header.Get("Cache-Status"))
		}
	}
	if n := e.upstreamCalls(path); n != 1 {
		t.Fatalf("upstream calls = %d, want 1", n)
	}
	calls := int64(1)
	for _, c := range []struct{ cc, detail string }{
		{"max-age=0", "max-age"},
		{"min-fresh=7200", "min-fresh"}, // the route's TTL is 1 h
		{"max-age=bogus", "max-age"},    // an invalid max-age means 0
	} {
		time.Sleep(5 * time.Millisecond)
		r := e.post(path, body, "Cache-Control", c.cc)
		calls++
		if want := "edgecache; fwd=stale; detail=" + c.detail + "; stored"; r.status != 200 || r.header.Get("Cache-Status") != want {
			t.Errorf("%s: %d Cache-Status %q, want %q", c.cc, r.status, r.header.Get("Cache-Status"), want)
		}
		if n := e.upstreamCalls(path); n != calls {
			t.Errorf("%s: upstream calls = %d, want %d (forwarded)", c.cc, n, calls)
		}
		e.settle()
		// The answer refreshed the entry: a plain request gets it, young.
		r = e.post(path, body)
		if !strings.HasPrefix(r.header.Get("Cache-Status"), "edgecache; hit;") || r.header.Get("Age") != "0" {
			t.Errorf("after %s: Cache-Status %q Age %q, want a refreshed hit", c.cc, r.header.Get("Cache-Status"), r.header.Get("Age"))
		}
	}
}

func TestRequestMaxStale(t *testing.T) {
	e := newEdge(t, edgeOpts{routes: []config.Route{{Name: "chat", Path: "/v1/chat/completions",
		Cache: config.CachePolicy{TTL: config.Duration(time.Second), StaleIfError: config.Duration(time.Hour)}}}})
	const path = "/v1/chat/completions"
	body := chat("stale is fine")
	first := e.post(path, body)
	e.settle()
	time.Sleep(1100 * time.Millisecond) // expired
	r := e.post(path, body, "Cache-Control", "max-stale=60")
	if !strings.HasPrefix(r.header.Get("Cache-Status"), "edgecache; hit; detail=max-stale") || string(r.body) != string(first.body) {
		t.Errorf("max-stale=60: Cache-Status %q, want the expired entry", r.header.Get("Cache-Status"))
	}
	r = e.post(path, body, "Cache-Control", "max-stale")
	if !strings.HasPrefix(r.header.Get("Cache-Status"), "edgecache; hit; detail=max-stale") {
		t.Errorf("max-stale: Cache-Status %q, want the expired entry", r.header.Get("Cache-Status"))
	}
	if n := e.upstreamCalls(path); n != 1 {
		t.Errorf("upstream calls = %d, want 1", n)
	}
	// Expired longer ago than the request accepts: forwarded.
	r = e.post(path, body, "Cache-Control", "max-stale=0")
	if r.header.Get("Cache-Status") != "edgecache; fwd=uri-miss; stored" {
		t.Errorf("max-stale=0: Cache-Status %q, want a miss", r.header.Get("Cache-Status"))
	}
	if n := e.upstreamCalls(path); n != 2 {
		t.Errorf("upstream calls = %d, want 2", n)
	}
}

func TestRequestOnlyIfCached(t *testing.T) {
	e := newEdge(t, edgeOpts{})
	const path = "/v1/chat/completions"
	body := chat("only from the cache")
	for _, cc := range []string{"only-if-cached", "only-if-cached, no-store", "only-if-cached, no-cache"} {
		r := e.post(path, body, "Cache-Control", cc)
		var eb struct {
			Error struct{ Type, Code string }
		}
		if err := json.Unmarshal(r.body, &eb); err != nil || r.status != http.StatusGatewayTimeout ||
			eb.Error.Code != "only_if_cached" || r.header.Get("Cache-Status") != "edgecache; fwd=miss; detail=only-if-cached" {
			t.Errorf("%s on a miss: %d %q %s, want 504 only_if_cached", cc, r.status, r.header.Get("Cache-Status"), r.body)
		}
	}
	if n := e.upstreamCalls(path); n != 0 {
		t.Fatalf("upstream calls = %d, want none", n)
	}
	e.post(path, body)
	e.settle()
	if r := e.post(path, body, "Cache-Control", "only-if-cached"); r.status != 200 || !strings.HasPrefix(r.header.Get("Cache-Status"), "edgecache; hit;") {
		t.Errorf("only-if-cached on a hit: %d %q", r.status, r.header.Get("Cache-Status"))
	}
	time.Sleep(5 * time.Millisecond)
	if r := e.post(path, body, "Cache-Control", "only-if-cached, max-age=0"); r.status != http.StatusGatewayTimeout {
		t.Errorf("only-if-cached with a too old entry: %d, want 504", r.status)
	}
	if n := e.upstreamCalls(path); n != 1 {
		t.Errorf("upstream calls = %d, want 1", n)
	}
}

// TestUpstreamCacheControl: what the upstream says about its answer
// decides whether and how long it is stored.
func TestUpstreamCacheControl(t *testing.T) {
	e := newEdge(t, edgeOpts{apiKey: edgeKey, routes: sharedRoutes()})
	const path = "/v1/chat/completions"
	cases := []struct {
		cc, path string
		stream   bool
		auth     string
		stored   bool
		maxTTL   int // when stored: the hit's ttl= at most
	}{
		{"no-store", path, false, "sk-a", false, 0},
		{"no-store", path, true, "sk-a", false, 0},
		{"no-cache", path, false, "sk-a", false, 0},
		{"no-cache", path, true, "sk-a", true, 3600}, // an SSE server's "do not buffer"
		{"max-age=0", path, false, "sk-a", false, 0},
		{"s-maxage=0, max-age=60", path, false, "sk-a", false, 0},
		{"private", path, false, "sk-a", true, 3600}, // the tenant's own namespace
		{"private", path, true, "sk-a", true, 3600},
		{"private", path, false, "", false, 0},            // keyless callers share a namespace
		{"private", "/faq/chat", false, "sk-a", false, 0}, // a shared route
		{"private", "/faq/chat", true, "sk-a", false, 0},
		{"public, max-age=30", path, false, "sk-a", true, 30},
		{"max-age=100, s-maxage=20", path, true, "sk-a", true, 20},
		{"max-age=999999", path, false, "sk-a", true, 3600}, // never longer than the route's TTL
		{"public", "/faq/chat", false, "sk-a", true, 3600},
	}
	for i, c := range cases {
		e.sim.Server.SetConfig(llmsim.Config{CacheControl: c.cc})
		body := chat("cache control case " + strconv.Itoa(i))
		if c.stream {
			body = chat("cache control case "+strconv.Itoa(i), `"stream":true`)
		}
		var hdr []string
		if c.auth != "" {
			hdr = []string{"Authorization", "Bearer " + c.auth}
		}
		before := e.upstreamCalls("/v1/chat/completions")
		first := e.post(c.path, body, hdr...)
		e.settle()
		r := e.post(c.path, body, hdr...)
		calls := e.upstreamCalls("/v1/chat/completions") - before
		name := c.cc + " on " + c.path
		if c.stream {
			name += " (stream)"
		}
		if first.status != 200 {
			t.Errorf("%s: %d %s", name, first.status, first.body)
			continue
		}
		switch {
		case !c.stored && (calls != 2 || strings.HasSuffix(first.header.Get("Cache-Status"), "stored")):
			t.Errorf("%s: stored (Cache-Status %q then %q, %d upstream calls)", name, first.header.Get("Cache-Status"), r.header.Get("Cache-Status"), calls)
		case c.stored && calls != 1:
			t.Errorf("%s: not stored (Cache-Status %q then %q, %d upstream calls)", name, first.header.Get("Cache-Status"), r.header.Get("Cache-Status"), calls)
		case c.stored:
			if ttl := cacheStatusTTL(t, r.header.Get("Cache-Status")); ttl > c.maxTTL || ttl < c.maxTTL-2 {
				t.Errorf("%s: hit ttl %d, want about %d", name, ttl, c.maxTTL)
			}
		}
	}
}

// TestDirectivesOnHiddenRoute: on a shared route with reveal: false, the
// directives tell a tenant nothing of what others asked.
func TestDirectivesOnHiddenRoute(t *testing.T) {
	e := newEdge(t, edgeOpts{apiKey: edgeKey, routes: sharedRoutes()})
	body := chat("Hidden policy?")
	e.post("/quiet/chat", body, "Authorization", "Bearer sk-a")
	e.settle()
	time.Sleep(5 * time.Millisecond)
	r := e.post("/quiet/chat", body, "Authorization", "Bearer sk-b", "Cache-Control", "max-age=0")
	if r.status != 200 || r.header.Get("Cache-Status") != hiddenStatus {
		t.Errorf("max-age=0 on a hidden route: %d %q, want %q", r.status, r.header.Get("Cache-Status"), hiddenStatus)
	}
	e.settle()
	for _, b := range []string{body, chat("Never asked?")} {
		r := e.post("/quiet/chat", b, "Authorization", "Bearer sk-b", "Cache-Control", "only-if-cached")
		if r.status != http.StatusGatewayTimeout || r.header.Get("Cache-Status") != hiddenStatus {
			t.Errorf("only-if-cached on a hidden route: %d %q, want 504 %q", r.status, r.header.Get("Cache-Status"), hiddenStatus)
		}
	}
}

func TestDirectiveParsing(t *testing.T) {
	h := http.Header{"Cache-Control": {`MAX-AGE="30", max-stale`, "min-fresh=99999999999999999999, only-if-cached"}}
	d := requestDirectives(h)
	if d.maxAge != 30*time.Second || d.maxStale < time.Duration(1<<62) || d.minFresh < time.Duration(1<<62) || !d.onlyIfCached {
		t.Errorf("requestDirectives = %+v", d)
	}
	if d := requestDirectives(http.Header{}); d.any() {
		t.Errorf("no header: %+v", d)
	}
	rt := &Route{TTL: time.Hour}
	for _, c := range []struct {
		cc, ct   string
		tenantNS bool
		ttl      time.Duration
		why      string
	}{
		{"", "application/json", false, time.Hour, ""},
		{"no-store", "text/event-stream", true, 0, "no-store"},
		{`no-cache="set-cookie"`, "application/json", true, 0, "no-cache"},
		{"no-cache", "text/event-stream", false, time.Hour, ""},
		{"private, max-age=10", "application/json", true, 10 * time.Second, ""},
		{"private", "application/json", false, 0, "private"},
		{"max-age=x", "application/json", false, 0, "max-age=0"},
		{"s-maxage=20, max-age=5", "application/json", false, 20 * time.Second, ""},
	} {
		h := http.Header{"Content-Type": {c.ct}}
		if c.cc != "" {
			h.Set("Cache-Control", c.cc)
		}
		if ttl, why := responseTTL(h, rt, c.tenantNS); ttl != c.ttl || why != c.why {
			t.Errorf("%q (%s, tenant %v): %v %q, want %v %q", c.cc, c.ct, c.tenantNS, ttl, why, c.ttl, c.why)
		}
	}
}
