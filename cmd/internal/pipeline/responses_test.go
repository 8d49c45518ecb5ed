package pipeline

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/edgecache/edgecache/cache/semantic"
	"github.com/edgecache/edgecache/cmd/internal/config"
	"github.com/edgecache/edgecache/cmd/internal/llmsim"
	"github.com/edgecache/edgecache/cmd/internal/openai"
	"github.com/edgecache/edgecache/embed/lexical"
)

func responsesBody(prompt string, extra ...string) string {
	s := `{"model":"sim-1","instructions":"Be brief.","input":` + quote(prompt)
	for _, x := range extra {
		s += "," + x
	}
	return s + "}"
}

// responsesText is the output text of a Responses answer: the JSON
// response, or the response.completed event of a stream (whose deltas must
// add up to it). ok is false when the stream ended in an error event.
func responsesText(t *testing.T, r result) (text string, ok bool) {
	t.Helper()
	body := r.body
	if strings.HasPrefix(r.header.Get("Content-Type"), "text/event-stream") {
		er := openai.NewEventReader(strings.NewReader(string(r.body)))
		deltas := ""
		body = nil
		for {
			_, data, err := er.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("stream: %v", err)
			}
			var ev struct {
				Type     string          `json:"type"`
				Delta    string          `json:"delta"`
				Response json.RawMessage `json:"response"`
			}
			if err := json.Unmarshal(data, &ev); err != nil {
				t.Fatalf("event %s: %v", data, err)
			}
			switch ev.Type {
			case "error":
				return deltas, false
			case "response.output_text.delta":
				deltas += ev.Delta
			case "response.completed":
				body = ev.Response
			}
		}
		if body == nil {
			t.Fatalf("stream without response.completed: %s", r.body)
		}
		defer func() {
			if deltas != text {
				t.Errorf("deltas %q, completed text %q", deltas, text)
			}
		}()
	}
	var resp struct {
		Object string `json:"object"`
		Output []struct {
			Content []struct{ Text string } `json:"content"`
		} `json:"output"`
	}
	if err := json.Unmarshal(body, &resp); err != nil || resp.Object != "response" || len(resp.Output) == 0 || len(resp.Output[0].Content) == 0 {
		t.Fatalf("not a response: %s", body)
	}
	return resp.Output[0].Content[0].Text, true
}

func responsesRoute(ttl time.Duration) []config.Route {
	return []config.Route{{Name: "responses", Path: "/v1/responses",
		Cache: config.CachePolicy{TTL: config.Duration(ttl), StaleIfError: config.Duration(time.Hour)}}}
}

func TestResponsesStaleRungInItsShape(t *testing.T) {
	e := newEdge(t, edgeOpts{routes: responsesRoute(time.Second)})
	body := responsesBody("old but gold")
	first := e.post("/v1/responses", body)
	want, _ := responsesText(t, first)
	e.settle()
	req, err := openai.ParseRequest(openai.APIResponses, []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	key := exactKey(&Route{Name: "responses"}, anonymous, "", req)
	waitFor(t, func() bool { _, err := e.tiered.Get(context.Background(), key); return err != nil })
	e.sim.Server.SetFault(llmsim.Fault{Status: 503})
	for _, stream := range []string{`"stream":false`, `"stream":true`} {
		r := e.post("/v1/responses", responsesBody("old but gold", stream))
		if r.status != 200 || r.header.Get("X-Edgecache-Degraded") != "stale" {
			t.Fatalf("%s: stale rung: %d %q %s", stream, r.status, r.header.Get("X-Edgecache-Degraded"), r.body)
		}
		if got, _ := responsesText(t, r); got != want {
			t.Errorf("%s: stale %q, stored %q", stream, got, want)
		}
	}
}

type fakeTemplates struct{}

func (fakeTemplates) Lang(string) string { return "en" }
func (fakeTemplates) Match(route, lang, text string) (string, string, bool) {
	if strings.Contains(text, "opening hours") {
		return "We open at nine.", "hours", true
	}
	return "", "", false
}
func (fakeTemplates) Busy(route, lang string, retryAfter time.Duration, reason string) string {
	return "busy, retry later"
}

func TestResponsesTemplateAndBusyRungs(t *testing.T) {
	e := newEdge(t, edgeOpts{routes: responsesRoute(time.Hour)})
	e.p.cfg.Templates = fakeTemplates{}
	e.sim.Server.SetFault(llmsim.Fault{Status: 503, RetryAfter: 3})
	for _, stream := range []string{`"stream":false`, `"stream":true`} {
		r := e.post("/v1/responses", responsesBody("what are your opening hours?", stream))
		if r.status != 200 || r.header.Get("X-Edgecache-Degraded") != "template" {
			t.Fatalf("%s: template rung: %d %q %s", stream, r.status, r.header.Get("X-Edgecache-Degraded"), r.body)
		}
		if got, _ := responsesText(t, r); got != "We open at nine." {
			t.Errorf("%s: template text %q", stream, got)
		}
		r = e.post("/v1/responses", responsesBody("something else", stream))
		var eb openai.ErrorBody
		if r.status != 503 || r.header.Get("Retry-After") != "3" || json.Unmarshal(r.body, &eb) != nil || eb.Error.Message != "busy, retry later" {
			t.Fatalf("%s: busy rung: %d %q %s", stream, r.status, r.header.Get("Retry-After"), r.body)
		}
	}
}

func TestResponsesStreamCutEndsWithErrorEvent(t *testing.T) {
	e := newEdge(t, edgeOpts{routes: responsesRoute(time.Hour)})
	e.sim.Server.SetFault(llmsim.Fault{CutAfter: 3})
	r := e.post("/v1/responses", responsesBody("cut me", `"stream":true`))
	if r.status != 200 || !strings.Contains(string(r.body), "event: error\ndata: ") {
		t.Fatalf("cut stream: %d %s", r.status, r.body)
	}
	if _, ok := responsesText(t, r); ok {
		t.Fatal("a cut stream ends with an error event")
	}
	e.sim.Server.ClearFault()
	e.settle()
	before := e.upstreamCalls("/v1/responses")
	e.post("/v1/responses", responsesBody("cut me"))
	if e.upstreamCalls("/v1/responses") != before+1 {
		t.Error("a cut stream was stored")
	}
	// An empty answer is a failure, never an empty 200.
	e.sim.Server.SetFault(llmsim.Fault{Empty: true})
	for _, stream := range []string{`"stream":false`, `"stream":true`} {
		if r := e.post("/v1/responses", responsesBody("empty "+stream, stream)); r.status != 502 {
			t.Errorf("%s: empty answer: %d %s", stream, r.status, r.body)
		}
	}
}

func TestResponsesServerStateBypasses(t *testing.T) {
	e := newEdge(t, edgeOpts{routes: responsesRoute(time.Hour)})
	for _, extra := range []string{`"background":true`, `"conversation":"conv_1"`, `"previous_response_id":"resp_1"`} {
		for i := 0; i < 2; i++ {
			r := e.post("/v1/responses", responsesBody("state", extra))
			if cs := r.header.Get("Cache-Status"); !strings.Contains(cs, "fwd=bypass") {
				t.Errorf("%s: Cache-Status %q", extra, cs)
			}
		}
	}
	if e.upstreamCalls("/v1/responses") != 6 {
		t.Errorf("upstream calls %d, want 6", e.upstreamCalls("/v1/responses"))
	}
}

// The semantic tier and its nearest rung work on the last user turn of a
// Responses input: during a storm, a similar question gets the stored
// answer with the notice before it, as JSON and as a replayed stream.
func TestResponsesNearestRungDiscloses(t *testing.T) {
	c := nearestCases[0]
	emb := lexical.New(0)
	idx, err := semantic.NewEmbedded(semantic.EmbeddedConfig{Dim: emb.Dim()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { idx.Close() })
	e := newEdge(t, edgeOpts{
		routes: []config.Route{{Name: "responses", Path: "/v1/responses", Cache: config.CachePolicy{Mode: config.ModeSemantic}}},
		semantic: &SemanticConfig{Embedder: emb, Index: &searchFailer{Index: idx}, Verifier: pairScorer{{c.similar, c.stored}: 0.82, {c.verified, c.stored}: 0.95},
			DefaultThreshold: nearestThreshold, MinCosine: func(float32) float32 { return -1 }},
	})
	seed := e.post("/v1/responses", responsesBody(c.stored))
	answer, _ := responsesText(t, seed)
	e.waitIndexed()
	// A verified paraphrase, as a list of input items, is a semantic hit.
	hit := e.post("/v1/responses", `{"model":"sim-1","instructions":"Be brief.","input":[{"role":"user","content":[{"type":"input_text","text":`+quote(c.verified)+`}]}]}`)
	if got, _ := responsesText(t, hit); got != answer || !strings.Contains(hit.header.Get("Cache-Status"), "detail=semantic") {
		t.Fatalf("semantic hit: %q %q", hit.header.Get("Cache-Status"), got)
	}
	e.sim.Server.SetFault(llmsim.Fault{Status: 503})
	for _, stream := range []string{`"stream":false`, `"stream":true`} {
		r := e.post("/v1/responses", responsesBody(c.similar, stream))
		if r.status != 200 || r.header.Get("X-Edgecache-Degraded") != "semantic-nearest" {
			t.Fatalf("%s: %d %q %s", stream, r.status, r.header.Get("X-Edgecache-Degraded"), r.body)
		}
		if got, _ := responsesText(t, r); !strings.HasPrefix(got, c.opening) || !strings.HasSuffix(got, answer) {
			t.Errorf("%s: %q, want the notice then %q", stream, got, answer)
		}
	}
	// Other instructions are another context: no semantic match.
	e.sim.Server.ClearFault()
	other := e.post("/v1/responses", `{"model":"sim-1","instructions":"Be long.","input":`+quote(c.verified)+`}`)
	if strings.Contains(other.header.Get("Cache-Status"), "hit") {
		t.Errorf("other instructions: %q", other.header.Get("Cache-Status"))
	}
}

// A Responses stream is relayed event by event: the first delta arrives
// long before the last one is written.
func TestResponsesStreamRelayedPerEvent(t *testing.T) {
	e := newEdge(t, edgeOpts{routes: responsesRoute(time.Hour), sim: llmsim.Config{AnswerTokens: 10, TokensPerSec: 20}})
	start := time.Now()
	req, _ := http.NewRequest(http.MethodPost, e.url+"/v1/responses", strings.NewReader(responsesBody("slowly", `"stream":true`)))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	er := openai.NewEventReader(resp.Body)
	var first time.Duration
	for {
		_, data, err := er.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if first == 0 && strings.Contains(string(data), `"response.output_text.delta"`) {
			first = time.Since(start)
		}
	}
	total := time.Since(start)
	if first == 0 || total < 400*time.Millisecond || first > total/2 {
		t.Errorf("first delta after %v, stream over after %v: buffered", first, total)
	}
}
