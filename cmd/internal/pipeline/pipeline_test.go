package pipeline

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgecache/edgecache/cache"
	"github.com/edgecache/edgecache/cache/cachetest"
	"github.com/edgecache/edgecache/cache/local"
	"github.com/edgecache/edgecache/cache/shared"
	"github.com/edgecache/edgecache/cmd/internal/config"
	"github.com/edgecache/edgecache/cmd/internal/llmsim"
	"github.com/edgecache/edgecache/cmd/internal/openai"
	"github.com/edgecache/edgecache/cmd/internal/upstream"
	"github.com/edgecache/edgecache/degrade"
)

// edge is a pipeline in front of a real llmsim, served by a plain mux.
type edge struct {
	t       *testing.T
	url     string
	sim     *llmsim.Running
	tiered  *cache.Tiered
	l1      *local.Local
	p       *Pipeline
	targets []*Target
	journal *memJournal
}

type edgeOpts struct {
	redisAddr string
	routes    []config.Route
	sim       llmsim.Config
	simURL    string // reuse an llmsim
	maxBody   int64
	semantic  *SemanticConfig
	backups   []string // failover targets' URLs
	shadow    *ShadowConfig
	// route, when set, gives the policy in force per request (a table
	// that shadow steering changes); else the compiled routes serve.
	route  func(name string) *Route
	apiKey string // the edge's own upstream key, on every target
}

// memJournal keeps degraded answers for assertions.
type memJournal struct {
	mu   sync.Mutex
	recs []*Degraded
}

func (j *memJournal) Degraded(d *Degraded) {
	j.mu.Lock()
	j.recs = append(j.recs, d)
	j.mu.Unlock()
}

func (j *memJournal) rungs() map[string]int {
	j.mu.Lock()
	defer j.mu.Unlock()
	m := map[string]int{}
	for _, r := range j.recs {
		m[r.Rung]++
	}
	return m
}

func newEdge(t *testing.T, o edgeOpts) *edge {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	e := &edge{t: t}
	simURL := o.simURL
	if simURL == "" {
		sim, err := llmsim.Start(ctx, "127.0.0.1:0", o.sim)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sim.Close() })
		e.sim, simURL = sim, sim.URL()
	}
	up, err := upstream.New(upstream.Config{URL: simURL, APIKey: o.apiKey})
	if err != nil {
		t.Fatal(err)
	}
	l1, err := local.New(local.Config{MaxBytes: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l1.Close() })
	e.l1 = l1
	tiers, names := []cache.Tier{l1}, []string{"l1"}
	if o.redisAddr != "" {
		l2, err := shared.New(shared.Config{Conn: shared.Conn{Addrs: []string{o.redisAddr}}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l2.Close() })
		tiers, names = append(tiers, l2), append(names, "l2")
	}
	e.tiered = cache.NewTiered(cache.TieredConfig{}, tiers...)
	t.Cleanup(func() { e.tiered.Close(context.Background()) })
	cfg := config.Config{Routes: o.routes, MaxBodyBytes: o.maxBody, Upstream: config.Upstream{APIKey: o.apiKey}}
	cfg.Default()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	routes, err := Compile(cfg.Routes)
	if err != nil {
		t.Fatal(err)
	}
	targets := []*Target{{Name: "primary", Client: up, Breaker: degrade.NewBreaker("primary", degrade.BreakerConfig{}), Budget: &degrade.RetryBudget{}}}
	for i, u := range o.backups {
		c, err := upstream.New(upstream.Config{URL: u, APIKey: o.apiKey})
		if err != nil {
			t.Fatal(err)
		}
		name := fmt.Sprintf("backup-%d", i+1)
		targets = append(targets, &Target{Name: name, Client: c, Breaker: degrade.NewBreaker(name, degrade.BreakerConfig{}), Budget: &degrade.RetryBudget{}})
	}
	e.targets = targets
	e.journal = &memJournal{}
	e.p = New(Config{Cache: e.tiered, Tiers: names, Targets: targets, Secret: []byte("test-secret"), Journal: e.journal,
		Guard:        GuardConfig{BackoffBase: time.Millisecond, BackoffCap: 5 * time.Millisecond},
		MaxBodyBytes: cfg.MaxBodyBytes, StreamIdleTimeout: 2 * time.Second, Timeout: 5 * time.Second,
		Semantic: o.semantic, Shadow: o.shadow})
	mux := http.NewServeMux()
	for _, rt := range routes {
		mux.HandleFunc(rt.Path, func(w http.ResponseWriter, r *http.Request) {
			cur := rt
			if o.route != nil {
				cur = o.route(rt.Name)
			}
			e.p.Serve(w, r, cur)
		})
	}
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	t.Cleanup(func() { e.p.Close(context.Background()) })
	e.url = srv.URL
	return e
}

type result struct {
	status int
	header http.Header
	body   []byte
}

func (e *edge) post(path, body string, hdr ...string) result {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.url+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("read body: %v", err)
	}
	return result{resp.StatusCode, resp.Header, b}
}

// settle waits until the write queue has taken every stored answer.
func (e *edge) settle() {
	e.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		s := e.tiered.Stats()
		if s.Stored+s.StoreErrors >= s.Queued {
			e.l1.Wait() // ristretto applies writes asynchronously
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
	e.t.Fatalf("write queue did not drain: %+v", e.tiered.Stats())
}

func (e *edge) upstreamCalls(path string) int64 {
	return e.sim.Server.Stats()[path]
}

func chat(prompt string, extra ...string) string {
	s := `{"model":"sim-1","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":` + quote(prompt) + `}]`
	for _, x := range extra {
		s += "," + x
	}
	return s + "}"
}

func quote(s string) string { b, _ := json.Marshal(s); return string(b) }

func simPrefix(prompt string) string {
	sum := sha256.Sum256([]byte(prompt))
	return "sim:" + hex.EncodeToString(sum[:])[:12]
}

func content(t *testing.T, b []byte) string {
	t.Helper()
	var r openai.Response
	if err := json.Unmarshal(b, &r); err != nil || len(r.Choices) == 0 || r.Choices[0].Message == nil || r.Choices[0].Message.Content == nil {
		t.Fatalf("not a chat completion: %s", b)
	}
	return *r.Choices[0].Message.Content
}

// sseText assembles a streamed chat answer and reports whether it ended in
// [DONE] and whether an error event arrived.
func sseText(t *testing.T, b []byte) (text string, done, errEvent bool) {
	t.Helper()
	er := openai.NewEventReader(bytes.NewReader(b))
	for {
		_, data, err := er.Next()
		if err != nil {
			return text, done, errEvent
		}
		if string(data) == "[DONE]" {
			done = true
			continue
		}
		var c openai.Response
		if err := json.Unmarshal(data, &c); err != nil {
			t.Fatalf("bad event %q: %v", data, err)
		}
		if len(c.Error) > 0 {
			errEvent = true
		}
		for _, ch := range c.Choices {
			if ch.Delta != nil && ch.Delta.Content != nil {
				text += *ch.Delta.Content
			}
		}
	}
}

func TestMissThenHit(t *testing.T) {
	e := newEdge(t, edgeOpts{})
	body := chat("What is the capital of France?")
	r1 := e.post("/v1/chat/completions", body)
	if r1.status != 200 || r1.header.Get("Cache-Status") != "edgecache; fwd=uri-miss; stored" {
		t.Fatalf("first: %d %q %s", r1.status, r1.header.Get("Cache-Status"), r1.body)
	}
	if got := content(t, r1.body); !strings.HasPrefix(got, simPrefix("What is the capital of France?")) {
		t.Fatalf("answer %q is not llmsim's for this prompt", got)
	}
	e.settle()
	r2 := e.post("/v1/chat/completions", body)
	if !strings.HasPrefix(r2.header.Get("Cache-Status"), "edgecache; hit; detail=l1") || r2.header.Get("Age") == "" {
		t.Fatalf("second: Cache-Status %q Age %q", r2.header.Get("Cache-Status"), r2.header.Get("Age"))
	}
	if !bytes.Equal(r1.body, r2.body) {
		t.Errorf("hit body differs from the upstream's:\n%s\n%s", r1.body, r2.body)
	}
	if r2.header.Get("Content-Type") != "application/json" {
		t.Errorf("hit Content-Type = %q", r2.header.Get("Content-Type"))
	}
	if n := e.upstreamCalls("/v1/chat/completions"); n != 1 {
		t.Errorf("upstream calls = %d, want 1", n)
	}
}

func TestKeyRules(t *testing.T) {
	e := newEdge(t, edgeOpts{apiKey: "sk-edge", routes: []config.Route{
		{Name: "chat", Path: "/v1/chat/completions"},
		{Name: "faq", Path: "/faq/chat", API: "chat", UpstreamPath: "/v1/chat/completions", Cache: config.CachePolicy{Shared: true}},
	}})
	base := chat("Explain caching", `"temperature":0.2`)
	auth := []string{"Authorization", "Bearer sk-tenant-a"}
	if r := e.post("/v1/chat/completions", base, auth...); r.status != 200 {
		t.Fatalf("seed: %d %s", r.status, r.body)
	}
	e.settle()
	hits := map[string]struct {
		body string
		hdr  []string
	}{
		"reformatted JSON, other field order": {"{\n \"temperature\": 0.20,\n \"messages\": [ {\"content\":\"Be brief.\", \"role\":\"system\"}, {\"role\":\"user\",\"content\":\"Explain caching\"}],\n \"model\": \"sim-1\"\n}", auth},
		"stream flag does not matter":         {chat("Explain caching", `"temperature":0.2`, `"stream":false`), auth},
	}
	for name, h := range hits {
		if r := e.post("/v1/chat/completions", h.body, h.hdr...); !strings.Contains(r.header.Get("Cache-Status"), "hit") {
			t.Errorf("%s: Cache-Status %q, want a hit", name, r.header.Get("Cache-Status"))
		}
	}
	misses := map[string]struct {
		body string
		hdr  []string
	}{
		"other system prompt": {strings.Replace(base, "Be brief.", "Be verbose.", 1), auth},
		"earlier turn":        {`{"model":"sim-1","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"hi"},{"role":"assistant","content":"hello"},{"role":"user","content":"Explain caching"}],"temperature":0.2}`, auth},
		"other model":         {strings.Replace(base, "sim-1", "sim-2", 1), auth},
		"other temperature":   {chat("Explain caching", `"temperature":0.3`), auth},
		"other tenant":        {base, []string{"Authorization", "Bearer sk-tenant-b"}},
		"no credentials":      {base, nil},
		"tools":               {chat("Explain caching", `"temperature":0.2`, `"tools":[{"type":"function","function":{"name":"f","parameters":{}}}]`), auth},
	}
	for name, m := range misses {
		if r := e.post("/v1/chat/completions", m.body, m.hdr...); r.status != 200 || !strings.Contains(r.header.Get("Cache-Status"), "fwd=uri-miss") {
			t.Errorf("%s: %d Cache-Status %q, want a miss", name, r.status, r.header.Get("Cache-Status"))
		}
	}
	// A shared route hits across tenants.
	e.post("/faq/chat", chat("Opening hours?"), "Authorization", "Bearer sk-tenant-a")
	e.settle()
	if r := e.post("/faq/chat", chat("Opening hours?"), "Authorization", "Bearer sk-tenant-b"); !strings.Contains(r.header.Get("Cache-Status"), "hit") {
		t.Errorf("shared route: Cache-Status %q, want a hit across tenants", r.header.Get("Cache-Status"))
	}
}

func TestBypass(t *testing.T) {
	e := newEdge(t, edgeOpts{})
	tests := []struct {
		name, body, detail string
		hdr                []string
	}{
		{"no-store", chat("b1"), "no-store", []string{"Cache-Control", "no-store"}},
		{"hot temperature", chat("b2", `"temperature":1.5`), "temperature", nil},
		{"n>1", chat("b3", `"n":2`), "n", nil},
	}
	for _, tt := range tests {
		for i := 0; i < 2; i++ {
			r := e.post("/v1/chat/completions", tt.body, tt.hdr...)
			if r.status != 200 || r.header.Get("Cache-Status") != "edgecache; fwd=bypass; detail="+tt.detail {
				t.Errorf("%s #%d: %d %q", tt.name, i, r.status, r.header.Get("Cache-Status"))
			}
			e.settle()
		}
	}
	// no-cache: forwarded, and the fresh answer replaces the stored one.
	r := e.post("/v1/chat/completions", chat("b4"), "Cache-Control", "no-cache")
	if r.header.Get("Cache-Status") != "edgecache; fwd=request; detail=no-cache; stored" {
		t.Errorf("no-cache: %q", r.header.Get("Cache-Status"))
	}
	if n := e.upstreamCalls("/v1/chat/completions"); n != 7 {
		t.Errorf("upstream calls = %d, want 7 (nothing bypassed was stored)", n)
	}
}

func TestStreamMissStoredAndReplayed(t *testing.T) {
	e := newEdge(t, edgeOpts{sim: llmsim.Config{AnswerTokens: 12}})
	prompt := "stream me"
	r1 := e.post("/v1/chat/completions", chat(prompt, `"stream":true`, `"stream_options":{"include_usage":true}`))
	text, done, _ := sseText(t, r1.body)
	if r1.header.Get("Content-Type") != "text/event-stream" || !done || !strings.HasPrefix(text, simPrefix(prompt)) {
		t.Fatalf("streamed miss: %q done=%v text=%q", r1.header.Get("Content-Type"), done, text)
	}
	if !bytes.Contains(r1.body, []byte(`"usage":{`)) {
		t.Errorf("include_usage: no usage chunk in %s", r1.body)
	}
	e.settle()
	// The assembled answer serves a plain request...
	r2 := e.post("/v1/chat/completions", chat(prompt))
	if !strings.Contains(r2.header.Get("Cache-Status"), "hit") || content(t, r2.body) != text {
		t.Fatalf("non-stream after stream: %q %q, want hit with %q", r2.header.Get("Cache-Status"), r2.body, text)
	}
	// ...and is replayed as a stream.
	r3 := e.post("/v1/chat/completions", chat(prompt, `"stream":true`))
	text3, done3, _ := sseText(t, r3.body)
	if !strings.Contains(r3.header.Get("Cache-Status"), "hit") || text3 != text || !done3 || bytes.Contains(r3.body, []byte(`"usage":{`)) {
		t.Fatalf("stream replay: %q done=%v text=%q body=%s", r3.header.Get("Cache-Status"), done3, text3, r3.body)
	}
	if n := e.upstreamCalls("/v1/chat/completions"); n != 1 {
		t.Errorf("upstream calls = %d, want 1", n)
	}
}

func TestCoalescing(t *testing.T) {
	e := newEdge(t, edgeOpts{sim: llmsim.Config{TTFT: 300 * time.Millisecond}})
	const n = 100
	body := chat("one call for all")
	var wg sync.WaitGroup
	var ok, collapsed atomic.Int32
	bodies := make([][]byte, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest(http.MethodPost, e.url+"/v1/chat/completions", strings.NewReader(body))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			bodies[i], _ = io.ReadAll(resp.Body)
			if resp.StatusCode == 200 {
				ok.Add(1)
			}
			if strings.Contains(resp.Header.Get("Cache-Status"), "collapsed") {
				collapsed.Add(1)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != n {
		t.Fatalf("%d/%d succeeded", ok.Load(), n)
	}
	if calls := e.upstreamCalls("/v1/chat/completions"); calls != 1 {
		t.Errorf("upstream calls = %d, want exactly 1", calls)
	}
	for i := range bodies {
		if !bytes.Equal(bodies[i], bodies[0]) {
			t.Fatalf("answer %d differs", i)
		}
	}
	t.Logf("collapsed: %d of %d", collapsed.Load(), n)
}

func TestCoalescedStreams(t *testing.T) {
	e := newEdge(t, edgeOpts{sim: llmsim.Config{TTFT: 200 * time.Millisecond, TokensPerSec: 200, AnswerTokens: 20}})
	body := chat("fan out", `"stream":true`)
	var wg sync.WaitGroup
	texts := make([]string, 10)
	for i := range texts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Post(e.url+"/v1/chat/completions", "application/json", strings.NewReader(body))
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			text, done, _ := sseText(t, b)
			if !done {
				t.Errorf("stream %d did not finish", i)
			}
			texts[i] = text
		}()
	}
	wg.Wait()
	for i, s := range texts {
		if s != texts[0] || !strings.HasPrefix(s, simPrefix("fan out")) {
			t.Errorf("stream %d text %q", i, s)
		}
	}
	if calls := e.upstreamCalls("/v1/chat/completions"); calls != 1 {
		t.Errorf("upstream calls = %d, want 1", calls)
	}
}

// One client hanging up must not cancel the call another client waits on.
func TestHangUpDoesNotCancelSharedCall(t *testing.T) {
	e := newEdge(t, edgeOpts{sim: llmsim.Config{TTFT: 400 * time.Millisecond}})
	body := chat("patience")
	ctx, cancel := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, e.url+"/v1/chat/completions", strings.NewReader(body))
		_, err := http.DefaultClient.Do(req)
		first <- err
	}()
	// Wait until the call is in flight upstream, then join it and hang up the first client.
	waitFor(t, func() bool { return e.upstreamCalls("/v1/chat/completions") == 1 })
	second := make(chan result, 1)
	go func() { second <- e.post("/v1/chat/completions", body) }()
	waitFor(t, func() bool {
		e.p.flights.mu.Lock()
		defer e.p.flights.mu.Unlock()
		for _, c := range e.p.flights.calls {
			c.mu.Lock()
			w := c.waiters
			c.mu.Unlock()
			if w == 2 {
				return true
			}
		}
		return false
	})
	cancel()
	if err := <-first; err == nil {
		t.Fatal("first client was not canceled")
	}
	r := <-second
	if r.status != 200 || !strings.Contains(r.header.Get("Cache-Status"), "collapsed") || !strings.HasPrefix(content(t, r.body), simPrefix("patience")) {
		t.Fatalf("second client: %d %q %s", r.status, r.header.Get("Cache-Status"), r.body)
	}
	if calls := e.upstreamCalls("/v1/chat/completions"); calls != 1 {
		t.Errorf("upstream calls = %d, want 1", calls)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 5s")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestUpstreamFailuresNeverCached(t *testing.T) {
	e := newEdge(t, edgeOpts{sim: llmsim.Config{AnswerTokens: 10}})
	// Each fault below is the target's failure (five in a row would open
	// the breaker, which is not what this test is about).
	e.targets[0].Breaker = degrade.NewBreaker("primary", degrade.BreakerConfig{Consecutive: 100, MinRequests: 100})
	path := "/v1/chat/completions"
	// A stream cut mid-way ends with an error event and is not stored.
	e.sim.Server.SetFault(llmsim.Fault{CutAfter: 3})
	r := e.post(path, chat("cut", `"stream":true`))
	text, done, errEvent := sseText(t, r.body)
	if r.status != 200 || done || !errEvent || text == "" {
		t.Fatalf("cut stream: status %d done=%v errorEvent=%v text=%q\n%s", r.status, done, errEvent, text, r.body)
	}
	// An empty answer and a 5xx are passed on but never stored.
	e.sim.Server.SetFault(llmsim.Fault{Empty: true})
	e.post(path, chat("empty"))
	e.sim.Server.SetFault(llmsim.Fault{Status: 503, RetryAfter: 7})
	r = e.post(path, chat("fivexx"))
	if r.status != 503 || r.header.Get("Retry-After") != "7" || r.header.Get("X-Edgecache-Degraded") != "busy" ||
		r.header.Get("X-Edgecache-Degraded-Reason") != "upstream_503" {
		t.Errorf("upstream 503: %d Retry-After %q degraded %q/%q", r.status, r.header.Get("Retry-After"),
			r.header.Get("X-Edgecache-Degraded"), r.header.Get("X-Edgecache-Degraded-Reason"))
	}
	e.sim.Server.ClearFault()
	e.settle()
	for _, p := range []string{"cut", "empty", "fivexx"} {
		r := e.post(path, chat(p))
		if r.status != 200 || r.header.Get("Cache-Status") != "edgecache; fwd=uri-miss; stored" {
			t.Errorf("%s after the fault: %d %q, want a fresh miss", p, r.status, r.header.Get("Cache-Status"))
		}
	}
}

func TestUpstreamUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()
	e := newEdge(t, edgeOpts{simURL: dead})
	r := e.post("/v1/chat/completions", chat("anyone?"))
	if r.status != 503 || r.header.Get("Retry-After") == "" || !bytes.Contains(r.body, []byte(`"upstream_unavailable"`)) {
		t.Errorf("dead upstream: %d %q %s", r.status, r.header.Get("Retry-After"), r.body)
	}
}

func TestBadInput(t *testing.T) {
	e := newEdge(t, edgeOpts{maxBody: 4096})
	tests := []struct {
		name, body, ctype string
		status            int
	}{
		{"malformed", `{"model":`, "application/json", 400},
		{"not an object", `[1]`, "application/json", 400},
		{"wrong type", `{"model":"m","messages":"hi"}`, "application/json", 400},
		{"non-UTF-8", "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe\"}]}", "application/json", 400},
		{"empty", ``, "application/json", 400},
		{"oversized", `{"model":"m","messages":[{"role":"user","content":"` + strings.Repeat("a", 5000) + `"}]}`, "application/json", 413},
		{"wrong content type", chat("x"), "text/plain", 415},
		{"form", "a=b", "application/x-www-form-urlencoded", 415},
	}
	for _, tt := range tests {
		resp, err := http.Post(e.url+"/v1/chat/completions", tt.ctype, strings.NewReader(tt.body))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var eb openai.ErrorBody
		if resp.StatusCode != tt.status || json.Unmarshal(b, &eb) != nil || eb.Error.Message == "" || eb.Error.Type != openai.TypeInvalidRequest {
			t.Errorf("%s: %d %s, want %d with an OpenAI error body", tt.name, resp.StatusCode, b, tt.status)
		}
	}
	// A body shorter than its Content-Length (client died mid-upload).
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"model\":")
	conn.(*net.TCPConn).CloseWrite()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 400 {
		t.Errorf("truncated body: %d, want 400", resp.StatusCode)
	}
	if n := e.upstreamCalls("/v1/chat/completions"); n != 0 {
		t.Errorf("bad input reached the upstream %d times", n)
	}
}

func TestEmbeddingsAndGenericJSON(t *testing.T) {
	e := newEdge(t, edgeOpts{routes: []config.Route{
		{Name: "embeddings", Path: "/v1/embeddings"},
		{Name: "emb-json", Path: "/custom/embed", API: "json", UpstreamPath: "/v1/embeddings"},
		{Name: "models", Path: "/v1/models"},
	}})
	for _, path := range []string{"/v1/embeddings", "/custom/embed"} {
		body := `{"model":"sim-embed-1","input":["a","b"]}`
		r1 := e.post(path, body)
		e.settle()
		r2 := e.post(path, body)
		if r1.status != 200 || !strings.Contains(r2.header.Get("Cache-Status"), "hit") || !bytes.Equal(r1.body, r2.body) {
			t.Errorf("%s: %d %q / %q", path, r1.status, r1.header.Get("Cache-Status"), r2.header.Get("Cache-Status"))
		}
	}
	resp, err := http.Get(e.url + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Contains(b, []byte(`"sim-1"`)) || !strings.Contains(resp.Header.Get("Cache-Status"), "bypass") {
		t.Errorf("models: %d %q %s", resp.StatusCode, resp.Header.Get("Cache-Status"), b)
	}
}

// TestL2 covers the shared tier end to end with a real redis-server: a new
// process (fresh L1) finds answers in L2, and a Redis that dies mid-load
// costs nothing but hits.
func TestL2(t *testing.T) {
	if testing.Short() {
		t.Skip("starts redis-server")
	}
	rds := cachetest.StartRedis(t)
	e1 := newEdge(t, edgeOpts{redisAddr: rds.Addr()})
	body := chat("survive a restart")
	r1 := e1.post("/v1/chat/completions", body)
	e1.settle()
	// "Restart": a second edge with an empty L1, the same Redis and upstream.
	e2 := newEdge(t, edgeOpts{redisAddr: rds.Addr(), simURL: e1.sim.URL()})
	r2 := e2.post("/v1/chat/completions", body)
	if !strings.HasPrefix(r2.header.Get("Cache-Status"), "edgecache; hit; detail=l2") || !bytes.Equal(r1.body, r2.body) {
		t.Fatalf("after restart: %q, want an L2 hit with the same body", r2.header.Get("Cache-Status"))
	}
	e2.settle()
	if r := e2.post("/v1/chat/completions", body); !strings.HasPrefix(r.header.Get("Cache-Status"), "edgecache; hit; detail=l1") {
		t.Errorf("after backfill: %q, want an L1 hit", r.header.Get("Cache-Status"))
	}
	// Redis dies mid-load: every request still succeeds.
	rds.Stop()
	var failed int
	var slowest time.Duration
	for i := range 200 {
		start := time.Now()
		r := e2.post("/v1/chat/completions", chat(fmt.Sprintf("redis down %d", i%20)))
		if d := time.Since(start); d > slowest && i >= 10 {
			slowest = d
		}
		if r.status != 200 {
			failed++
		}
	}
	if failed > 0 {
		t.Errorf("%d of 200 requests failed with Redis down", failed)
	}
	t.Logf("slowest request with Redis down (after the breaker opened): %v", slowest)
}

// The pooled namespace HMAC gives Namespace's answer, for every key in
// turn (a reused MAC must be reset) and from many goroutines at once.
func TestTenantMatchesNamespace(t *testing.T) {
	p := New(Config{Secret: []byte("server-secret")})
	defer p.Close(context.Background())
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				k := fmt.Sprintf("sk-%d-%d", g, i%7)
				if got, want := p.callerOf(k).tenant(), Namespace([]byte("server-secret"), k); got != want {
					t.Errorf("callerOf(%q).tenant() = %q, want %q", k, got, want)
					return
				}
				if got, want := p.callerOf(k).keyID(), KeyID([]byte("server-secret"), k); got != want {
					t.Errorf("callerOf(%q).keyID() = %q, want %q", k, got, want)
					return
				}
			}
		})
	}
	wg.Wait()
	if a, b := p.callerOf("sk-a").tenant(), p.callerOf("sk-b").tenant(); a == b || len(a) != 34 {
		t.Errorf("tenant namespaces %q and %q: want distinct, 34 bytes", a, b)
	}
}

// TestInlineStreamHangUpStopsUpstream: a stream nobody can join is relayed
// on its handler's goroutine (serveInline); its client hanging up mid-
// stream ends the upstream call at once (llmsim sees no generation in
// flight) instead of letting it run to its end, and the client got the
// events as they came, not at the end.
func TestInlineStreamHangUpStopsUpstream(t *testing.T) {
	e := newEdge(t, edgeOpts{sim: llmsim.Config{TokensPerSec: 20, AnswerTokens: 200}}) // a 10 s stream
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	body := `{"model":"sim-1","stream":true,"messages":[{"role":"user","content":"hang up on me"}]}`
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, e.url+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Cache-Control", "no-store") // not stored: not coalesced, relayed inline
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(resp.Body)
	contentEvents := 0
	for contentEvents < 3 {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("after %d content events: %v", contentEvents, err)
		}
		if strings.Contains(line, `"content":"`) && !strings.Contains(line, `"content":""`) {
			contentEvents++
		}
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("3 events of a 20 tokens/s stream took %v: not relayed as they came", d)
	}
	if n := e.sim.Server.InFlight(); n != 1 {
		t.Fatalf("llmsim has %d generations in flight mid-stream, want 1", n)
	}
	cancel()
	resp.Body.Close()
	waitFor(t, func() bool { return e.sim.Server.InFlight() == 0 })
	if d := time.Since(start); d > 8*time.Second {
		t.Errorf("the upstream call ended %v after the start: it ran on after the hang-up", d)
	}
}
