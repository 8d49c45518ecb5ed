package bench

import (
	"context"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgecache/edgecache/cmd/internal/config"
)

func TestSemanticPrompts(t *testing.T) {
	ps := semanticPrompts(semanticPromptCount)
	if len(ps) != semanticPromptCount {
		t.Fatalf("%d prompts, want %d", len(ps), semanticPromptCount)
	}
	seen := map[string]bool{}
	for _, p := range ps {
		if seen[p] {
			t.Errorf("duplicate prompt %q", p)
		}
		seen[p] = true
		if err := checkCasePrompt(p); err != nil {
			t.Error(err)
		}
		letters := 0
		for _, c := range p {
			if 'a' <= c && c <= 'z' {
				letters++
			}
		}
		if letters < 29 || p != strings.ToLower(p) {
			t.Errorf("prompt %q: %d letters (want ≥ 29), or not lower case", p, letters)
		}
	}
	if got := semanticPrompts(3); !slices.Equal(got, ps[:3]) {
		t.Errorf("semanticPrompts(3) = %q, want the first three", got)
	}
	// The body is ChatBody's shape around another question.
	if got := semanticBody("What is the capital of France?"); got != ChatBody {
		t.Errorf("semanticBody differs from ChatBody:\n%s\n%s", got, ChatBody)
	}
	var req struct {
		Messages []struct{ Role, Content string } `json:"messages"`
	}
	if err := json.Unmarshal([]byte(semanticBody(strings.ToUpper(ps[0]))), &req); err != nil || req.Messages[1].Content != strings.ToUpper(ps[0]) {
		t.Errorf("semanticBody is not the chat request: %v %+v", err, req)
	}
}

func TestRandomCase(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	p := "can you tell me the capital of france?"
	seen := map[string]bool{}
	for range 1000 {
		v := randomCase(p, rng)
		if v == p || strings.ToLower(v) != p {
			t.Fatalf("randomCase(%q) = %q", p, v)
		}
		seen[v] = true
	}
	if len(seen) < 990 {
		t.Errorf("only %d distinct variants in 1000", len(seen))
	}
	// A source that never flips: the all-upper-case form.
	if v := randomCase("ab1", zeroRand{}); v != "AB1" {
		t.Errorf("unchanged pattern: %q, want AB1", v)
	}
}

type zeroRand struct{}

func (zeroRand) IntN(int) int { return 0 }

func TestIsSemanticHit(t *testing.T) {
	for cs, want := range map[string]bool{
		"edgecache; hit; detail=semantic":                  true,
		"edgecache; hit; detail=semantic; ttl=3599":        true,
		"edgecache;hit;detail=semantic":                    true,
		"edgecache; detail=semantic; hit":                  true,
		"edgecache; hit; detail=l1":                        false,
		"edgecache; fwd=miss":                              false,
		"edgecache; fwd=miss; detail=semantic":             false,
		"other; hit; detail=semantic":                      false,
		"":                                                 false,
		"edgecache; hit; detail=semantic-nearest; stale=1": false,
	} {
		if got := isSemanticHit(cs); got != want {
			t.Errorf("isSemanticHit(%q) = %v, want %v", cs, got, want)
		}
	}
}

func TestSemanticConfigYAML(t *testing.T) {
	path := filepath.Join(t.TempDir(), "edgecache.yaml")
	if err := os.WriteFile(path, []byte(semanticConfigYAML("http://127.0.0.1:4321")), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := config.Load(path, func(string) string { return "" })
	if err != nil {
		t.Fatalf("%v\n%s", err, semanticConfigYAML("http://127.0.0.1:4321"))
	}
	sm := c.Semantic
	if c.Upstream.URL != "http://127.0.0.1:4321" || sm.Embedder != "remote" || sm.Remote.URL != "http://127.0.0.1:4321/v1" ||
		sm.Remote.Model != semanticEmbedModel || sm.Index != "embedded" {
		t.Errorf("upstream %q, semantic %+v", c.Upstream.URL, sm)
	}
	if len(c.Routes) != 1 {
		t.Fatalf("routes %+v, want one", c.Routes)
	}
	r := c.Routes[0]
	// The shipped verifier defaults: no threshold or floor of our own.
	if r.Path != chatPath || r.API != "chat" || r.Cache.Mode != config.ModeSemantic || r.Cache.Semantic.Threshold != 0 || r.Cache.Semantic.Floor != 0 {
		t.Errorf("route %+v", r)
	}
}

const sampleMetrics = `# HELP edgecache_cache_lookups_total Cache tiers consulted, by route, tier and result (hit or miss).
# TYPE edgecache_cache_lookups_total counter
edgecache_cache_lookups_total{result="miss",route="chat",tier="l1"} 1210
edgecache_cache_lookups_total{result="hit",route="chat",tier="l1"} 7
edgecache_cache_lookups_total{result="hit",route="chat",tier="semantic"} 1000
edgecache_cache_lookups_total{result="miss",route="chat",tier="semantic"} 201
edgecache_cache_lookups_total{result="error",route="chat",tier="semantic"} 2
edgecache_cache_lookups_total{result="hit",route="other",tier="semantic"} 5
edgecache_upstream_requests_total{http_response_status_code="200",route="chat"} 201
`

func TestParseLookups(t *testing.T) {
	c, err := parseLookups(strings.NewReader(sampleMetrics))
	if err != nil {
		t.Fatal(err)
	}
	want := lookupCounts{exactHit: 7, semanticHit: 1005, semanticOther: 203, seenSemantic: true}
	if c != want {
		t.Errorf("parseLookups = %+v, want %+v", c, want)
	}
	c, _ = parseLookups(strings.NewReader("edgecache_cache_lookups_total{result=\"hit\",route=\"chat\",tier=\"l1\"} 3\n"))
	if c.seenSemantic || c.exactHit != 3 {
		t.Errorf("without semantic series: %+v", c)
	}

	before := lookupCounts{exactHit: 1, semanticHit: 205, semanticOther: 200, seenSemantic: true}
	d := want.sub(before)
	if d != (lookupCounts{exactHit: 6, semanticHit: 800, semanticOther: 3, seenSemantic: true}) {
		t.Errorf("sub = %+v", d)
	}
	// wrk counted fewer than edgecache: the larger count is the base.
	if got := semanticHitShare(d, 700); !near(got, 800.0/809) {
		t.Errorf("share against edgecache's count = %v", got)
	}
	if got := semanticHitShare(d, 1000); !near(got, 0.8) {
		t.Errorf("share against wrk's count = %v", got)
	}
	if got := semanticHitShare(lookupCounts{}, 0); got != 0 {
		t.Errorf("share of nothing = %v", got)
	}
}

func TestSemanticLuaScript(t *testing.T) {
	prompts := []string{"can you tell me the capital of france?", "what is 2 + 2?"}
	script, err := SemanticLuaScript(semanticBodyPrefix, semanticBodySuffix, prompts, map[string]string{"X-Test": "1"})
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(script, "\n")
	if lines[0] != "-- generated by edgebench" || lines[1] != `wrk.method = "POST"` {
		t.Errorf("script starts %q", lines[:2])
	}
	if got := unquoteLua(t, strings.TrimPrefix(lines[2], "wrk.body = ")); got != semanticBody(prompts[0]) {
		t.Errorf("wrk.body = %q", got)
	}
	for _, want := range []string{
		`wrk.headers["Content-Type"] = "application/json"`,
		`wrk.headers["X-Test"] = "1"`,
		"local prompts = {\n  " + luaQuote(prompts[0]) + ",\n  " + luaQuote(prompts[1]) + ",\n}\n",
		"local prefix = " + luaQuote(semanticBodyPrefix) + "\n",
		"local suffix = " + luaQuote(semanticBodySuffix) + "\n",
		`io.open("/dev/urandom", "rb")`,
		"request = function()",
		"return wrk.format(nil, nil, nil, prefix .. v .. suffix)",
	} {
		if !strings.Contains(script, want) {
			t.Errorf("script lacks %q:\n%s", want, script)
		}
	}
	for _, bad := range [][]string{nil, {""}, {"ABC?"}, {`say "hi"`}, {`back\slash`}, {"tab\there"}, {"café"}} {
		if _, err := SemanticLuaScript(semanticBodyPrefix, semanticBodySuffix, bad, nil); err == nil {
			t.Errorf("prompts %q accepted", bad)
		}
	}
}

// wrkBodies runs wrk (one connection, a second) with script runs times in
// a row against a slow local server (about 150 requests a run) and returns
// the bodies it received, in order, and the requests that were not POSTed
// as JSON.
func wrkBodies(t *testing.T, script string, runs int) (bodies, bad []string) {
	t.Helper()
	var mu sync.Mutex
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
			bad = append(bad, r.Method+" "+r.Header.Get("Content-Type"))
		}
		bodies = append(bodies, string(b))
		mu.Unlock()
		time.Sleep(5 * time.Millisecond)
		w.Write([]byte("{}"))
	}))
	defer ts.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for run := range runs {
		out, err := exec.CommandContext(ctx, "wrk", wrkArgs(1, time.Second, script, ts.URL+chatPath)...).CombinedOutput()
		if err != nil {
			t.Fatalf("wrk run %d: %v\n%s", run, err, out)
		}
		if _, err := ParseWrk(string(out)); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	}
	ts.Close()
	mu.Lock()
	defer mu.Unlock()
	return bodies, bad
}

// TestSemanticLuaScriptUnderWrk runs the script in wrk for a second against
// a slow local server (about 150 requests) and checks what it sent.
func TestSemanticLuaScriptUnderWrk(t *testing.T) {
	if testing.Short() {
		t.Skip("runs wrk for a second")
	}
	if _, err := exec.LookPath("wrk"); err != nil {
		t.Skip("wrk not in PATH")
	}
	prompts := semanticPrompts(4)
	script, err := SemanticLuaScript(semanticBodyPrefix, semanticBodySuffix, prompts, nil)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "semantic.lua")
	if err := os.WriteFile(path, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	bodies, bad := wrkBodies(t, path, 1)
	if len(bad) > 0 {
		t.Errorf("requests not POSTed as JSON: %q", bad)
	}
	if len(bodies) < 20 {
		t.Fatalf("only %d requests in a second", len(bodies))
	}
	variants, asked := map[string]bool{}, map[string]bool{}
	for _, b := range bodies {
		v, ok := strings.CutPrefix(b, semanticBodyPrefix)
		if ok {
			v, ok = strings.CutSuffix(v, semanticBodySuffix)
		}
		if !ok || !json.Valid([]byte(b)) {
			t.Fatalf("body %q is not prefix + prompt + suffix", b)
		}
		if !slices.Contains(prompts, strings.ToLower(v)) || slices.Contains(prompts, v) {
			t.Fatalf("prompt %q is not a case variant of one of %q", v, prompts)
		}
		variants[v] = true
		asked[strings.ToLower(v)] = true
	}
	if len(variants) < len(bodies)*9/10 || len(asked) != len(prompts) {
		t.Errorf("%d requests: %d distinct variants of %d prompts", len(bodies), len(variants), len(asked))
	}
}
