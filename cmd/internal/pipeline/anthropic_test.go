package pipeline

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgecache/edgecache/cache/semantic"
	"github.com/edgecache/edgecache/cmd/internal/config"
	"github.com/edgecache/edgecache/cmd/internal/llmsim"
	"github.com/edgecache/edgecache/cmd/internal/openai"
	"github.com/edgecache/edgecache/embed/lexical"
)

func messages(prompt string, extra ...string) string {
	s := `{"model":"claude-sim","max_tokens":64,"system":"Be brief.","messages":[{"role":"user","content":` + quote(prompt) + `}]`
	for _, x := range extra {
		s += "," + x
	}
	return s + "}"
}

// anthropicText is the text of a Messages answer, JSON or SSE (assembled
// by the edge's own accumulator), and whether it is complete.
func anthropicText(t *testing.T, r result) (string, bool) {
	t.Helper()
	body := r.body
	if strings.HasPrefix(r.header.Get("Content-Type"), "text/event-stream") {
		acc := openai.NewStreamAccumulator(openai.APIAnthropic)
		er := openai.NewEventReader(bytes.NewReader(r.body))
		for {
			_, data, err := er.Next()
			if err != nil {
				break
			}
			acc.Add(data)
		}
		if acc.Err() != nil {
			return "", false
		}
		var err error
		if body, err = acc.Body(); err != nil {
			t.Fatal(err)
		}
	}
	var m struct {
		Type    string `json:"type"`
		Content []struct{ Type, Text string }
	}
	if json.Unmarshal(body, &m) != nil || m.Type != "message" || len(m.Content) == 0 {
		return "", false
	}
	return m.Content[0].Text, true
}

type oneTemplate struct{}

func (oneTemplate) Lang(string) string { return "en" }
func (oneTemplate) Match(_, _, text string) (string, string, bool) {
	return "Opening hours are 9 to 5.", "hours", strings.Contains(text, "opening hours")
}
func (oneTemplate) Busy(string, string, time.Duration, string) string { return "busy, retry soon" }

// TestAnthropicRungs: stale, template and busy answer in the Messages
// shape, JSON and streamed, and are journaled.
func TestAnthropicRungs(t *testing.T) {
	e := newEdge(t, edgeOpts{routes: []config.Route{{Name: "messages", Path: "/v1/messages",
		Cache: config.CachePolicy{TTL: config.Duration(time.Second), StaleIfError: config.Duration(time.Hour)}}}})
	e.p.cfg.Templates = oneTemplate{}
	first := e.post("/v1/messages", messages("old but gold"))
	want, ok := anthropicText(t, first)
	if !ok || !strings.HasPrefix(want, "sim:") {
		t.Fatalf("miss: %d %s", first.status, first.body)
	}
	e.settle()
	time.Sleep(1100 * time.Millisecond) // the TTL passes
	e.sim.Server.SetFault(llmsim.Fault{Status: 503, RetryAfter: 3})
	for _, stream := range []bool{false, true} {
		extra := `"stream":false`
		if stream {
			extra = `"stream":true`
		}
		r := e.post("/v1/messages", messages("old but gold", extra))
		if got, ok := anthropicText(t, r); r.status != 200 || r.header.Get("X-Edgecache-Degraded") != "stale" || !ok || got != want {
			t.Errorf("stale (stream %v): %d %q %q %s", stream, r.status, r.header.Get("X-Edgecache-Degraded"), got, r.body)
		}
		r = e.post("/v1/messages", messages("what are your opening hours?", extra))
		if got, ok := anthropicText(t, r); r.status != 200 || r.header.Get("X-Edgecache-Degraded") != "template" || !ok || got != "Opening hours are 9 to 5." {
			t.Errorf("template (stream %v): %d %q %q %s", stream, r.status, r.header.Get("X-Edgecache-Degraded"), got, r.body)
		}
		r = e.post("/v1/messages", messages("never asked", extra))
		var eb openai.AnthropicError
		if r.status != 529 || r.header.Get("Retry-After") == "" || json.Unmarshal(r.body, &eb) != nil ||
			eb.Type != "error" || eb.Error.Type != "overloaded_error" || eb.Error.Message == "" {
			t.Errorf("busy (stream %v): %d retry-after %q %s", stream, r.status, r.header.Get("Retry-After"), r.body)
		}
	}
	if rungs := e.journal.rungs(); rungs["stale"] != 2 || rungs["template"] != 2 || rungs["busy"] != 2 {
		t.Errorf("journal %v", rungs)
	}
}

// TestAnthropicKeys: x-api-key is the tenant; anthropic-version and
// anthropic-beta join the key.
func TestAnthropicKeys(t *testing.T) {
	e := newEdge(t, edgeOpts{routes: []config.Route{{Name: "messages", Path: "/v1/messages"}}})
	body := messages("who am I")
	calls := func() int64 { return e.sim.Server.Stats()["/v1/messages"] }
	e.post("/v1/messages", body, "x-api-key", "sk-ant-a")
	e.settle()
	if r := e.post("/v1/messages", body, "x-api-key", "sk-ant-a"); !strings.Contains(r.header.Get("Cache-Status"), "hit") {
		t.Errorf("same key: %q", r.header.Get("Cache-Status"))
	}
	for _, hdr := range [][]string{{"x-api-key", "sk-ant-b"}, {"x-api-key", "sk-ant-a", "anthropic-version", "2023-06-01"},
		{"x-api-key", "sk-ant-a", "anthropic-beta", "some-beta"}} {
		if r := e.post("/v1/messages", body, hdr...); strings.Contains(r.header.Get("Cache-Status"), "hit") {
			t.Errorf("%v: a hit, want a miss", hdr)
		}
	}
	if got := calls(); got != 4 {
		t.Errorf("%d upstream calls, want 4", got)
	}
}

// TestAnthropicEdgeKeyReplacesXAPIKey: with the edge's own upstream key,
// the client's x-api-key never reaches the upstream (private and shared
// routes).
func TestAnthropicEdgeKeyReplacesXAPIKey(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Get("X-Api-Key")+"|"+r.Header.Get("Authorization"))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"id":"msg_1","type":"message","role":"assistant","model":"m","content":[{"type":"text","text":"hi"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":1,"output_tokens":1}}`))
	}))
	defer up.Close()
	shared := true
	e := newEdge(t, edgeOpts{simURL: up.URL, apiKey: "sk-edge", routes: []config.Route{
		{Name: "messages", Path: "/v1/messages"},
		{Name: "shared", Path: "/shared/v1/messages", UpstreamPath: "/v1/messages", API: "anthropic", Cache: config.CachePolicy{Shared: shared}},
	}})
	for _, path := range []string{"/v1/messages", "/shared/v1/messages"} {
		if r := e.post(path, messages("key check "+path), "x-api-key", "sk-ant-client"); r.status != 200 {
			t.Fatalf("%s: %d %s", path, r.status, r.body)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, s := range seen {
		if strings.Contains(s, "sk-ant-client") || !strings.HasPrefix(s, "sk-edge|") {
			t.Errorf("upstream saw x-api-key|authorization %q, want the edge's key only", s)
		}
	}
}

// TestAnthropicNearestRung: on a semantic anthropic route, during a 503
// storm, the nearest stored answer to the last user turn is served in the
// Messages shape, JSON and streamed, with the notice before its text; a
// different system prompt (the context) finds nothing and is busy (529).
func TestAnthropicNearestRung(t *testing.T) {
	c := nearestCases[0]
	emb := lexical.New(0)
	idx, err := semantic.NewEmbedded(semantic.EmbeddedConfig{Dim: emb.Dim()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { idx.Close() })
	e := newEdge(t, edgeOpts{
		routes: []config.Route{{Name: "messages", Path: "/v1/messages", Cache: config.CachePolicy{Mode: config.ModeSemantic}}},
		semantic: &SemanticConfig{Embedder: emb, Index: idx, Verifier: pairScorer{{c.similar, c.stored}: 0.82},
			DefaultThreshold: nearestThreshold, MinCosine: func(float32) float32 { return -1 }},
	})
	seed := e.post("/v1/messages", messages(c.stored))
	answer, ok := anthropicText(t, seed)
	if !ok {
		t.Fatalf("seed: %d %s", seed.status, seed.body)
	}
	e.waitIndexed()
	e.sim.Server.SetFault(llmsim.Fault{Status: 503})
	for _, extra := range []string{`"stream":false`, `"stream":true`} {
		r := e.post("/v1/messages", messages(c.similar, extra))
		text, ok := anthropicText(t, r)
		if r.status != 200 || r.header.Get("X-Edgecache-Degraded") != "semantic-nearest" || !ok ||
			!strings.HasPrefix(text, c.opening) || !strings.HasSuffix(text, answer) {
			t.Errorf("%s: %d %q text %q", extra, r.status, r.header.Get("X-Edgecache-Degraded"), text)
		}
	}
	other := strings.Replace(messages(c.similar), "Be brief.", "Be verbose.", 1)
	if r := e.post("/v1/messages", other); r.status != 529 {
		t.Errorf("another system prompt: %d %s, want 529 (no nearest answer in its context)", r.status, r.body)
	}
	if n := len(e.nearestRecords()); n != 2 {
		t.Errorf("%d semantic-nearest journal records, want 2", n)
	}
}
