package pipeline

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"unicode/utf8"

	"github.com/edgecache/edgecache/cache"
	"github.com/edgecache/edgecache/cache/semantic"
	"github.com/edgecache/edgecache/cache/semantic/verify"
	"github.com/edgecache/edgecache/cmd/internal/config"
	"github.com/edgecache/edgecache/cmd/internal/llmsim"
	"github.com/edgecache/edgecache/cmd/internal/openai"
	"github.com/edgecache/edgecache/embed"
	"github.com/edgecache/edgecache/embed/lexical"
	"github.com/edgecache/edgecache/embed/zh"
)

// pairScorer scores the (query, candidate) pairs it holds and nothing
// else (0): a test places each query exactly against the threshold and the
// degraded floor, whatever the verifiers' calibration makes of the pair.
type pairScorer map[[2]string]float32

func (s pairScorer) Score(q, c string, _ float32) (float32, string) { return s[[2]string{q, c}], "" }

// searchFailer is an index whose next searches fail, as many as asked,
// and which forgets the stored prompts' text when told to.
type searchFailer struct {
	semantic.Index
	fail   atomic.Int32
	noText atomic.Bool
}

func (s *searchFailer) Search(ctx context.Context, v []float32, f semantic.Filter, k int, min float32) ([]semantic.Match, error) {
	if s.fail.Add(-1) >= 0 {
		return nil, semantic.ErrUnavailable
	}
	ms, err := s.Index.Search(ctx, v, f, k, min)
	if s.noText.Load() {
		for i := range ms {
			ms[i].Text = ""
		}
	}
	return ms, err
}

// nearestThreshold is the normal threshold of the tests' route (USE-lite's
// calibrated default); the degraded floor is the default one.
const nearestThreshold = 0.854

// nearestCase is one language's stored question, a query the verifier
// scores between the floor and the threshold (similar), one over the
// threshold (verified), one under the floor (far), and the notice's
// opening words.
type nearestCase struct {
	lang                           string
	stored, similar, verified, far string
	opening                        string
}

var nearestCases = []nearestCase{
	{lang: "en", stored: "How do I reset my password?", similar: "How can I change my login password?",
		verified: "how do i reset my password", far: "What is my password?",
		opening: "The service is busy right now, so this is an earlier answer to a similar question: “How do I reset my password?”."},
	{lang: "zh", stored: "如何重置我的密码？", similar: "怎么修改登录密码？",
		verified: "我的密码怎么重置？", far: "我的密码是什么？",
		opening: "服务繁忙，以下是对一个相近的早先问题“如何重置我的密码？”的回答"},
}

// newNearestEdge is a semantic route in front of llmsim whose verifier
// scores c's queries against c's stored question as their names say. The
// embedder is one that represents c's language (the coverage gate keeps
// the rest exact-only): the lexical one for English, the built-in Chinese
// model for Chinese.
func newNearestEdge(t *testing.T, c nearestCase) (*edge, *searchFailer) {
	t.Helper()
	var emb embed.Embedder = lexical.New(0)
	if c.lang == "zh" {
		z, err := zh.New()
		if err != nil {
			t.Fatal(err)
		}
		emb = z
	}
	idx, err := semantic.NewEmbedded(semantic.EmbeddedConfig{Dim: emb.Dim()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { idx.Close() })
	sf := &searchFailer{Index: idx}
	scores := pairScorer{
		{c.similar, c.stored}:  0.82, // under 0.854, over verify.DegradedFloor
		{c.verified, c.stored}: 0.95,
		{c.far, c.stored}:      0.70, // over the old default floor (0.5), under the new
		{c.similar, ""}:        0.82, // as similar, from an index that kept no text
	}
	e := newEdge(t, edgeOpts{
		routes: []config.Route{{Name: "chat", Path: "/v1/chat/completions", Cache: config.CachePolicy{Mode: config.ModeSemantic}}},
		semantic: &SemanticConfig{Embedder: emb, Index: sf, Verifier: scores,
			DefaultThreshold: nearestThreshold, MinCosine: func(float32) float32 { return -1 }},
	})
	return e, sf
}

// seedAndBreak stores the answer to c.stored and starts a 503 storm.
func seedAndBreak(t *testing.T, e *edge, c nearestCase) string {
	t.Helper()
	seed := e.post("/v1/chat/completions", chat(c.stored))
	if seed.status != 200 {
		t.Fatalf("seed: %d %s", seed.status, seed.body)
	}
	e.waitIndexed()
	e.sim.Server.SetFault(llmsim.Fault{Status: 503})
	return content(t, seed.body)
}

func wantQuestionHash(text string) string {
	sum := sha256.Sum256([]byte(text))
	return hex.EncodeToString(sum[:16])
}

// nearestRecords returns the journal's semantic-nearest records.
func (e *edge) nearestRecords() []*Degraded {
	e.journal.mu.Lock()
	defer e.journal.mu.Unlock()
	var out []*Degraded
	for _, d := range e.journal.recs {
		if d.Rung == "semantic-nearest" {
			out = append(out, d)
		}
	}
	return out
}

// During a 503 storm, a query whose nearest stored question scores under
// the normal threshold (and over the degraded floor) gets a 200 whose body
// says, in the query's language, that the service is busy and which
// question the answer belongs to, then that answer: as JSON and as a
// stream, so an SDK that shows no headers shows it. The journal records
// the similarity, the score and the matched question's hash. Before, the
// body was the other question's answer with nothing in it to say so.
func TestNearestRungDisclosesTheMatchedQuestion(t *testing.T) {
	for _, c := range nearestCases {
		t.Run(c.lang, func(t *testing.T) {
			e, _ := newNearestEdge(t, c)
			answer := seedAndBreak(t, e, c)
			hash := wantQuestionHash(c.stored)
			check := func(what string, r result, text string) {
				t.Helper()
				if r.status != 200 || r.header.Get("X-Edgecache-Degraded") != "semantic-nearest" ||
					r.header.Get("X-Edgecache-Degraded-Reason") != "upstream_503" || r.header.Get("X-Edgecache-Similarity") == "" {
					t.Fatalf("%s: %d degraded %q reason %q similarity %q: %s", what, r.status, r.header.Get("X-Edgecache-Degraded"),
						r.header.Get("X-Edgecache-Degraded-Reason"), r.header.Get("X-Edgecache-Similarity"), r.body)
				}
				if got := r.header.Get("X-Edgecache-Matched-Question-Hash"); got != hash {
					t.Errorf("%s: X-Edgecache-Matched-Question-Hash %q, want %q", what, got, hash)
				}
				if !strings.HasPrefix(text, c.opening) || !strings.HasSuffix(text, "\n\n"+answer) {
					t.Errorf("%s: body text %q\nwant it to open with %q and end with the stored answer %q", what, text, c.opening, answer)
				}
			}
			js := e.post("/v1/chat/completions", chat(c.similar))
			check("JSON", js, content(t, js.body))
			sse := e.post("/v1/chat/completions", chat(c.similar, `"stream":true`))
			text, done, errEvent := sseText(t, sse.body)
			if !done || errEvent || sse.header.Get("Content-Type") != "text/event-stream" {
				t.Errorf("SSE: done %v, error event %v, Content-Type %q", done, errEvent, sse.header.Get("Content-Type"))
			}
			check("SSE", sse, text)

			recs := e.nearestRecords()
			if len(recs) != 2 {
				t.Fatalf("%d semantic-nearest journal records, want 2", len(recs))
			}
			for _, d := range recs {
				if d.Similarity <= 0 || d.Score != 0.82 || d.MatchedHash != hash || !d.Disclosed || d.CacheAge < 0 {
					t.Errorf("journal record: similarity %v score %v matched %q disclosed %v, want >0, 0.82, %q, true",
						d.Similarity, d.Score, d.MatchedHash, d.Disclosed, hash)
				}
			}
		})
	}
}

// During the same storm, a query the verifier scores over the normal
// threshold is a normal semantic hit, served as stored (not degraded);
// one under the default degraded floor (verify.DegradedFloor, no longer
// a raw 0.5) gets the honest busy answer, not another question's answer.
func TestNearestRungVerifiedAndFar(t *testing.T) {
	for _, c := range nearestCases {
		t.Run(c.lang, func(t *testing.T) {
			e, _ := newNearestEdge(t, c)
			answer := seedAndBreak(t, e, c)
			for _, stream := range []bool{false, true} {
				body := chat(c.verified)
				if stream {
					body = chat(c.verified, `"stream":true`)
				}
				r := e.post("/v1/chat/completions", body)
				text := ""
				if stream {
					text, _, _ = sseText(t, r.body)
				} else {
					text = content(t, r.body)
				}
				if r.status != 200 || !strings.HasPrefix(r.header.Get("Cache-Status"), "edgecache; hit; detail=semantic") ||
					r.header.Get("X-Edgecache-Degraded") != "" || text != answer {
					t.Errorf("verified (stream %v): %d %q degraded %q text %q, want the stored answer as is", stream,
						r.status, r.header.Get("Cache-Status"), r.header.Get("X-Edgecache-Degraded"), text)
				}
			}
			r := e.post("/v1/chat/completions", chat(c.far))
			if r.status != 503 || r.header.Get("X-Edgecache-Degraded") != "busy" {
				t.Errorf("under the floor: %d degraded %q %s, want the busy answer", r.status, r.header.Get("X-Edgecache-Degraded"), r.body)
			}
		})
	}
}

// A verified candidate the normal lookup could not reach (the index failed
// once) is served on the semantic-nearest rung as stored: at or over the
// threshold it is the answer, and no notice is added.
func TestNearestRungVerifiedAnswerIsNotRewritten(t *testing.T) {
	c := nearestCases[0]
	e, sf := newNearestEdge(t, c)
	answer := seedAndBreak(t, e, c)
	sf.fail.Store(1) // the normal lookup's search
	r := e.post("/v1/chat/completions", chat(c.verified))
	if r.status != 200 || r.header.Get("X-Edgecache-Degraded") != "semantic-nearest" || content(t, r.body) != answer {
		t.Fatalf("%d degraded %q %s, want the stored answer as is on the semantic-nearest rung", r.status, r.header.Get("X-Edgecache-Degraded"), r.body)
	}
	if recs := e.nearestRecords(); len(recs) != 1 || recs[0].Disclosed || recs[0].Score != 0.95 || recs[0].MatchedHash != wantQuestionHash(c.stored) {
		t.Errorf("journal: %+v", recs)
	}
}

// A stored answer that cannot carry the notice (here a chat completion
// with tool calls and no text) is not served under the threshold: the
// request goes on to the next rung. Never served undisclosed.
func TestNearestRungNeverServesUndisclosed(t *testing.T) {
	c := nearestCases[0]
	e, sf := newNearestEdge(t, c)
	seedAndBreak(t, e, c)

	// An index that returns no text for the match: the notice could not
	// say which question the answer belongs to.
	sf.noText.Store(true)
	if r := e.post("/v1/chat/completions", chat(c.similar)); r.status != 503 || r.header.Get("X-Edgecache-Degraded") != "busy" {
		t.Errorf("match without its text: %d degraded %q %s, want the busy answer", r.status, r.header.Get("X-Edgecache-Degraded"), r.body)
	}
	sf.noText.Store(false)

	req, err := openai.ParseRequest(openai.APIChat, []byte(chat(c.stored)))
	if err != nil {
		t.Fatal(err)
	}
	key := exactKey(&Route{Name: "chat"}, anonymous, "", req)
	old, err := e.tiered.Get(context.Background(), key)
	if err != nil {
		t.Fatalf("the stored answer is not under the key the test computed: %v", err)
	}
	toolsOnly := cache.Entry{Status: 200, Header: http.Header{"Content-Type": {"application/json"}},
		Body: []byte(`{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"sim-1","choices":[{"index":0,` +
			`"message":{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]},` +
			`"finish_reason":"tool_calls"}]}`),
		StoredAt: old.StoredAt, ExpiresAt: old.ExpiresAt}
	e.tiered.Store(key, toolsOnly, old.TTL(e.p.cfg.Now()))
	e.settle()
	e.p.recent.put(key, toolsOnly, e.p.cfg.RecentFor)
	if got, _ := e.tiered.Get(context.Background(), key); string(got.Body) != string(toolsOnly.Body) {
		t.Fatalf("the stored answer was not replaced: %s", got.Body)
	}
	r := e.post("/v1/chat/completions", chat(c.similar))
	if r.status != 503 || r.header.Get("X-Edgecache-Degraded") != "busy" {
		t.Errorf("%d degraded %q %s, want the busy answer", r.status, r.header.Get("X-Edgecache-Degraded"), r.body)
	}
	if recs := e.nearestRecords(); len(recs) != 0 {
		t.Errorf("journal has a semantic-nearest record: %+v", recs[0])
	}
}

func TestDiscloseNearest(t *testing.T) {
	const notice = "NOTICE\n\n"
	chatBody := `{"id":"x","object":"chat.completion","created":1,"model":"m","system_fingerprint":"fp","x_vendor":{"a":[1,2]},` +
		`"choices":[{"index":0,"message":{"role":"assistant","content":"<b>A & B</b>"},"logprobs":null,"finish_reason":"stop"},` +
		`{"index":1,"message":{"role":"assistant","content":"second"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}`
	in := []byte(chatBody)
	out, err := discloseNearest(openai.APIChat, in, notice)
	if err != nil {
		t.Fatal(err)
	}
	if string(in) != chatBody {
		t.Error("the stored body was modified")
	}
	var resp openai.Response
	if err := json.Unmarshal(out, &resp); err != nil || len(resp.Choices) != 2 {
		t.Fatalf("rewritten body %s: %v", out, err)
	}
	for i, want := range []string{notice + "<b>A & B</b>", notice + "second"} {
		if got := *resp.Choices[i].Message.Content; got != want {
			t.Errorf("choice %d: %q, want %q", i, got, want)
		}
	}
	for _, kept := range []string{`"system_fingerprint":"fp"`, `"x_vendor":{"a":[1,2]}`, `"finish_reason":"stop"`, `"total_tokens":3`, `<b>A & B</b>`} {
		if !strings.Contains(string(out), kept) {
			t.Errorf("rewritten body lost or escaped %s: %s", kept, out)
		}
	}

	out, err = discloseNearest(openai.APICompletions, []byte(`{"object":"text_completion","choices":[{"index":0,"text":"answer","finish_reason":"stop"}]}`), notice)
	if err != nil || !strings.Contains(string(out), `"text":"NOTICE\n\nanswer"`) {
		t.Errorf("completions: %s, %v", out, err)
	}

	for name, tt := range map[string]struct {
		api  openai.API
		body string
	}{
		"json route":       {openai.APIJSON, `{"images":["..."]}`},
		"embeddings":       {openai.APIEmbeddings, `{"data":[{"embedding":[0.1]}]}`},
		"not JSON":         {openai.APIChat, `not json`},
		"no choices":       {openai.APIChat, `{"choices":[]}`},
		"tool calls only":  {openai.APIChat, `{"choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[]}}]}`},
		"empty content":    {openai.APIChat, `{"choices":[{"index":0,"message":{"role":"assistant","content":""}}]}`},
		"one without text": {openai.APIChat, `{"choices":[{"message":{"content":"a"}},{"message":{"content":null}}]}`},
		"content parts":    {openai.APIChat, `{"choices":[{"message":{"content":[{"type":"text","text":"a"}]}}]}`},
		"completion, chat": {openai.APICompletions, `{"choices":[{"message":{"content":"a"}}]}`},
		"null choice":      {openai.APIChat, `{"choices":[null]}`},
	} {
		if out, err := discloseNearest(tt.api, []byte(tt.body), notice); err == nil {
			t.Errorf("%s: rewritten to %s, want errNotDisclosable", name, out)
		}
	}
}

func TestNearestNoticeQuotesTheQuestion(t *testing.T) {
	long := strings.Repeat("密码", 100) // 200 runes
	q := quoteQuestion(long)
	if !utf8.ValidString(q) || !strings.HasSuffix(q, "…") || utf8.RuneCountInString(q) != maxQuotedRunes+1 {
		t.Errorf("quoteQuestion(200 runes) = %q (%d runes)", q, utf8.RuneCountInString(q))
	}
	if q := quoteQuestion("  How do\n\tI   reset it?\n"); q != "How do I reset it?" {
		t.Errorf("quoteQuestion = %q", q)
	}
	if q := quoteQuestion(strings.Repeat("word ", 30)); !strings.HasSuffix(q, "word…") && !strings.HasSuffix(q, "wo…") {
		t.Errorf("quoteQuestion cut %q", q)
	}
	for text, want := range map[string]string{
		"如何重置我的密码？":                   "zh",
		"用 Python 写一个 HTTP 服务":        "zh",
		"How do I reset my password?": "en",
		"如何 reset my password":        "en",
		"":                            "en",
	} {
		if got := hanLang(text); got != want {
			t.Errorf("hanLang(%q) = %q, want %q", text, got, want)
		}
	}
	p := &Pipeline{}
	if n := p.nearestNotice("怎么修改密码？", "如何重置我的密码？"); !strings.HasPrefix(n, "服务繁忙") || !strings.Contains(n, "“如何重置我的密码？”") {
		t.Errorf("zh notice %q", n)
	}
	if n := p.nearestNotice("How to change my password?", "How do I reset\nmy password?"); !strings.Contains(n, "“How do I reset my password?”") {
		t.Errorf("en notice %q", n)
	}
	if verify.DegradedFloor >= nearestThreshold {
		t.Errorf("verify.DegradedFloor %v is not under the threshold of these tests", verify.DegradedFloor)
	}
}
