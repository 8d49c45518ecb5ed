package llmsim

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestChatCompletion(t *testing.T) {
	_, ts := newSim(t, Config{})
	tests := []struct {
		name       string
		body       any
		hashed     string // text whose hash starts the answer
		words      int
		finish     string
		n          int
		promptToks int
	}{
		{
			name:   "string content",
			body:   chatBody("hello there"),
			hashed: "hello there", words: DefaultAnswerTokens, finish: "stop", n: 1, promptToks: 2,
		},
		{
			name: "content parts are concatenated, other parts ignored",
			body: map[string]any{"model": "sim-1", "messages": []any{map[string]any{"role": "user", "content": []any{
				map[string]any{"type": "text", "text": "what is "},
				map[string]any{"type": "image_url", "image_url": map[string]any{"url": "https://example.com/x.png"}},
				map[string]any{"type": "text", "text": "this?"},
			}}}},
			hashed: "what is this?", words: DefaultAnswerTokens, finish: "stop", n: 1, promptToks: 3,
		},
		{
			name: "last user message wins over later assistant and earlier user",
			body: map[string]any{"model": "sim-1", "messages": []any{
				map[string]any{"role": "system", "content": "be brief"},
				map[string]any{"role": "user", "content": "first question"},
				map[string]any{"role": "assistant", "content": "an answer"},
				map[string]any{"role": "user", "content": "second question"},
				map[string]any{"role": "assistant", "content": nil, "tool_calls": []any{}},
			}},
			hashed: "second question", words: DefaultAnswerTokens, finish: "stop", n: 1, promptToks: 8,
		},
		{
			name:   "max_tokens caps the answer",
			body:   with(chatBody("cap me"), "max_tokens", 5),
			hashed: "cap me", words: 5, finish: "length", n: 1, promptToks: 2,
		},
		{
			name:   "max_completion_tokens wins over max_tokens",
			body:   with(chatBody("cap me"), "max_tokens", 5, "max_completion_tokens", 3),
			hashed: "cap me", words: 3, finish: "length", n: 1, promptToks: 2,
		},
		{
			name:   "a cap above the length changes nothing",
			body:   with(chatBody("cap me"), "max_tokens", 1000),
			hashed: "cap me", words: DefaultAnswerTokens, finish: "stop", n: 1, promptToks: 2,
		},
		{
			name:   "n choices",
			body:   with(chatBody("several"), "n", 3),
			hashed: "several", words: DefaultAnswerTokens, finish: "stop", n: 3, promptToks: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, b := post(t, ts, "/v1/chat/completions", tt.body)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", resp.StatusCode, b)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			cc := decode[chatCompletion](t, b)
			h := hash12(tt.hashed)
			if cc.ID != "chatcmpl-sim-"+h || cc.Object != "chat.completion" || cc.Model != "sim-1" {
				t.Errorf("id/object/model = %q/%q/%q", cc.ID, cc.Object, cc.Model)
			}
			if d := time.Since(time.Unix(cc.Created, 0)); d < -time.Minute || d > time.Minute {
				t.Errorf("created %d is not now", cc.Created)
			}
			if len(cc.Choices) != tt.n {
				t.Fatalf("%d choices, want %d", len(cc.Choices), tt.n)
			}
			var texts []string
			for i, c := range cc.Choices {
				words := strings.Fields(c.Message.Content)
				if c.Index != i || c.Message.Role != "assistant" || c.FinishReason != tt.finish || string(c.Logprobs) != "null" {
					t.Errorf("choice %d: index %d role %q finish %q logprobs %s", i, c.Index, c.Message.Role, c.FinishReason, c.Logprobs)
				}
				if len(words) != tt.words || words[0] != "sim:"+h {
					t.Errorf("choice %d: %d words starting %q, want %d starting sim:%s", i, len(words), words[0], tt.words, h)
				}
				if strings.Join(words, " ") != c.Message.Content {
					t.Errorf("choice %d: irregular spacing in %q", i, c.Message.Content)
				}
				texts = append(texts, c.Message.Content)
			}
			slices.Sort(texts)
			if len(slices.Compact(texts)) != tt.n {
				t.Errorf("choices are not distinct: %q", texts)
			}
			want := usageJSON{tt.promptToks, tt.words * tt.n, tt.promptToks + tt.words*tt.n}
			if cc.Usage == nil || *cc.Usage != want {
				t.Errorf("usage %+v, want %+v", cc.Usage, want)
			}
		})
	}
}

func TestChatDeterministic(t *testing.T) {
	_, ts := newSim(t, Config{})
	_, a := post(t, ts, "/v1/chat/completions", chatBody("same question"))
	_, b := post(t, ts, "/v1/chat/completions", chatBody("same question"))
	_, c := post(t, ts, "/v1/chat/completions", chatBody("another question"))
	ca, cb, cc := decode[chatCompletion](t, a), decode[chatCompletion](t, b), decode[chatCompletion](t, c)
	if ca.ID != cb.ID || ca.Choices[0].Message.Content != cb.Choices[0].Message.Content {
		t.Errorf("same request, different answers:\n%s\n%s", a, b)
	}
	if ca.ID == cc.ID || ca.Choices[0].Message.Content == cc.Choices[0].Message.Content {
		t.Errorf("different requests, same answer: %s", c)
	}
	// A second server answers the same: nothing depends on server state.
	_, ts2 := newSim(t, Config{})
	_, d := post(t, ts2, "/v1/chat/completions", chatBody("same question"))
	if decode[chatCompletion](t, d).Choices[0].Message.Content != ca.Choices[0].Message.Content {
		t.Errorf("another server answers differently: %s", d)
	}
}

func TestModelIsEscaped(t *testing.T) {
	_, ts := newSim(t, Config{})
	model := "we\"ird\\model\n\u00e9\u2028"
	resp, b := post(t, ts, "/v1/chat/completions", with(chatBody("x"), "model", model))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	if got := decode[chatCompletion](t, b).Model; got != model {
		t.Errorf("model %q, want %q", got, model)
	}
}

// assembled is the text of each choice and the chunks' shape, gathered from
// a stream.
type assembled struct {
	text     map[int]string
	finish   map[int]string
	usage    *usageJSON
	contents int // content chunks
}

// assemble checks the invariants every stream must keep and returns what it
// carried. object is the chunk object type; chat tells delta from text.
func assemble(t *testing.T, res sseResult, object string, chat, includeUsage bool) assembled {
	t.Helper()
	out := assembled{text: map[int]string{}, finish: map[int]string{}}
	var first chunk
	for i, d := range res.data {
		c := decode[chunk](t, []byte(d))
		if i == 0 {
			first = c
		}
		if c.ID != first.ID || c.Created != first.Created || c.Model != first.Model || c.Object != object {
			t.Errorf("chunk %d: id/created/model/object %q/%d/%q/%q differ from the first chunk's or from %q", i, c.ID, c.Created, c.Model, c.Object, object)
		}
		hasUsage := strings.Contains(d, `"usage":`)
		if len(c.Choices) == 0 { // the usage chunk
			if !includeUsage || out.usage != nil || i != len(res.data)-1 {
				t.Errorf("unexpected usage chunk %d: %s", i, d)
			}
			var u usageJSON
			if err := json.Unmarshal(c.Usage, &u); err != nil {
				t.Fatalf("usage chunk: %v: %s", err, d)
			}
			out.usage = &u
			continue
		}
		if hasUsage != includeUsage || (hasUsage && string(c.Usage) != "null") {
			t.Errorf("chunk %d: usage field %q with include_usage %v", i, c.Usage, includeUsage)
		}
		for _, ch := range c.Choices {
			if _, done := out.finish[ch.Index]; done {
				t.Errorf("chunk %d: choice %d continues after its finish chunk", i, ch.Index)
			}
			if chat && ch.Delta.Role != nil {
				if *ch.Delta.Role != "assistant" || ch.Delta.Content == nil || *ch.Delta.Content != "" || out.text[ch.Index] != "" {
					t.Errorf("chunk %d: bad role chunk %s", i, d)
				}
				continue
			}
			var content *string
			if chat {
				content = ch.Delta.Content
			} else {
				content = ch.Text
			}
			if ch.FinishReason != nil {
				if content != nil && *content != "" {
					t.Errorf("chunk %d: finish chunk with content %s", i, d)
				}
				out.finish[ch.Index] = *ch.FinishReason
				continue
			}
			if content == nil || *content == "" {
				t.Errorf("chunk %d: content chunk without content: %s", i, d)
				continue
			}
			out.text[ch.Index] += *content
			out.contents++
		}
	}
	return out
}

func TestChatStream(t *testing.T) {
	_, ts := newSim(t, Config{AnswerTokens: 7})
	for _, tt := range []struct {
		name         string
		includeUsage bool
		n            int
		maxTokens    int
	}{
		{name: "plain", n: 1},
		{name: "include usage", includeUsage: true, n: 1},
		{name: "n=2 with usage", includeUsage: true, n: 2},
		{name: "capped", n: 1, maxTokens: 3},
	} {
		t.Run(tt.name, func(t *testing.T) {
			body := with(chatBody("stream me"), "n", tt.n)
			if tt.maxTokens > 0 {
				body["max_tokens"] = tt.maxTokens
			}
			_, full := post(t, ts, "/v1/chat/completions", body)
			want := decode[chatCompletion](t, full)

			sbody := with(body, "stream", true)
			if tt.includeUsage {
				sbody["stream_options"] = map[string]any{"include_usage": true}
			}
			resp, res := stream(t, ts, "/v1/chat/completions", sbody)
			if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
				t.Errorf("Content-Type %q", ct)
			}
			if res.err != nil || !res.done {
				t.Fatalf("stream ended with err %v, done %v", res.err, res.done)
			}
			first := decode[chunk](t, []byte(res.data[0]))
			if first.ID != want.ID || first.Model != "sim-1" {
				t.Errorf("stream id/model %q/%q, want %q/sim-1", first.ID, first.Model, want.ID)
			}
			got := assemble(t, res, "chat.completion.chunk", true, tt.includeUsage)
			for i, c := range want.Choices {
				if got.text[i] != c.Message.Content || got.finish[i] != c.FinishReason {
					t.Errorf("choice %d: stream %q/%q, non-stream %q/%q", i, got.text[i], got.finish[i], c.Message.Content, c.FinishReason)
				}
			}
			if len(got.text) != tt.n || got.contents != tt.n*len(strings.Fields(want.Choices[0].Message.Content)) {
				t.Errorf("%d choices in %d content chunks, want one chunk per word", len(got.text), got.contents)
			}
			if tt.includeUsage {
				if got.usage == nil || *got.usage != *want.Usage {
					t.Errorf("usage %+v, want %+v", got.usage, want.Usage)
				}
			} else if got.usage != nil {
				t.Errorf("usage chunk without include_usage")
			}
		})
	}
}

func TestCompletions(t *testing.T) {
	_, ts := newSim(t, Config{AnswerTokens: 6})
	for _, prompt := range []any{"tell me a story", []string{"tell me a story", "ignored"}} {
		resp, b := post(t, ts, "/v1/completions", map[string]any{"model": "sim-1", "prompt": prompt})
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d: %s", resp.StatusCode, b)
		}
		cc := decode[chatCompletion](t, b)
		h := hash12("tell me a story")
		words := strings.Fields(cc.Choices[0].Text)
		if cc.Object != "text_completion" || cc.ID != "cmpl-sim-"+h || len(words) != 6 || words[0] != "sim:"+h ||
			cc.Choices[0].FinishReason != "stop" || string(cc.Choices[0].Logprobs) != "null" {
			t.Errorf("prompt %v: %s", prompt, b)
		}
		if *cc.Usage != (usageJSON{4, 6, 10}) {
			t.Errorf("usage %+v", *cc.Usage)
		}
	}

	_, full := post(t, ts, "/v1/completions", map[string]any{"model": "sim-1", "prompt": "abc"})
	want := decode[chatCompletion](t, full).Choices[0].Text
	_, res := stream(t, ts, "/v1/completions", map[string]any{
		"model": "sim-1", "prompt": "abc", "stream": true, "stream_options": map[string]any{"include_usage": true},
	})
	if res.err != nil || !res.done {
		t.Fatalf("stream ended with err %v, done %v", res.err, res.done)
	}
	got := assemble(t, res, "text_completion", false, true)
	if got.text[0] != want || got.finish[0] != "stop" || got.contents != 6 || got.usage == nil || got.usage.CompletionTokens != 6 {
		t.Errorf("stream gave %q (%d chunks, finish %q, usage %+v), want %q", got.text[0], got.contents, got.finish[0], got.usage, want)
	}
}

func TestPacing(t *testing.T) {
	const ttft = 40 * time.Millisecond
	_, ts := newSim(t, Config{TTFT: ttft, TokensPerSec: 200, AnswerTokens: 6})

	start := time.Now()
	post(t, ts, "/v1/chat/completions", chatBody("slow"))
	if d := time.Since(start); d < ttft {
		t.Errorf("non-stream answered after %v, before TTFT %v", d, ttft)
	}

	start = time.Now()
	_, res := stream(t, ts, "/v1/chat/completions", with(chatBody("slow"), "stream", true))
	// TTFT, then 5 gaps of 1/200 s between the 6 words.
	if d, min := time.Since(start), ttft+5*5*time.Millisecond; d < min || !res.done {
		t.Errorf("stream took %v (done %v), want at least %v", d, res.done, min)
	}
}

func TestBadRequests(t *testing.T) {
	_, ts := newSim(t, Config{})
	tests := []struct {
		name, path string
		body       any
		param      string // "" for null
	}{
		{"malformed JSON", "/v1/chat/completions", `{"model":`, ""},
		{"not an object", "/v1/chat/completions", `[1,2]`, ""},
		{"missing model", "/v1/chat/completions", map[string]any{"messages": []any{map[string]any{"role": "user", "content": "x"}}}, "model"},
		{"missing messages", "/v1/chat/completions", map[string]any{"model": "m"}, "messages"},
		{"empty messages", "/v1/chat/completions", map[string]any{"model": "m", "messages": []any{}}, "messages"},
		{"messages not an array", "/v1/chat/completions", map[string]any{"model": "m", "messages": "hi"}, "messages"},
		{"model not a string", "/v1/chat/completions", with(chatBody("x"), "model", 3), "model"},
		{"content a number", "/v1/chat/completions", map[string]any{"model": "m", "messages": []any{map[string]any{"role": "user", "content": 3}}}, "messages"},
		{"n zero", "/v1/chat/completions", with(chatBody("x"), "n", 0), "n"},
		{"max_tokens zero", "/v1/chat/completions", with(chatBody("x"), "max_tokens", 0), "max_tokens"},
		{"stream_options without stream", "/v1/chat/completions", with(chatBody("x"), "stream_options", map[string]any{"include_usage": true}), "stream_options"},
		{"stream not a bool", "/v1/chat/completions", with(chatBody("x"), "stream", "yes"), "stream"},
		{"completions token prompt", "/v1/completions", map[string]any{"model": "m", "prompt": []int{1, 2}}, "prompt"},
		{"completions missing prompt", "/v1/completions", map[string]any{"model": "m"}, "prompt"},
		{"embeddings token input", "/v1/embeddings", map[string]any{"model": "e", "input": []int{1, 2}}, "input"},
		{"embeddings nested token input", "/v1/embeddings", map[string]any{"model": "e", "input": [][]int{{1}}}, "input"},
		{"embeddings empty array", "/v1/embeddings", map[string]any{"model": "e", "input": []string{}}, "input"},
		{"embeddings missing model", "/v1/embeddings", map[string]any{"input": "x"}, "model"},
		{"embeddings zero dimensions", "/v1/embeddings", map[string]any{"model": "e", "input": "x", "dimensions": 0}, "dimensions"},
		{"embeddings bad format", "/v1/embeddings", map[string]any{"model": "e", "input": "x", "encoding_format": "hex"}, "encoding_format"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, b := post(t, ts, tt.path, tt.body)
			if resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("status %d, want 400: %s", resp.StatusCode, b)
			}
			checkError(t, resp, b, "invalid_request_error", tt.param, "")
		})
	}
}

// checkError asserts the OpenAI error shape; "" for param or code means null.
func checkError(t *testing.T, resp *http.Response, b []byte, typ, param, code string) {
	t.Helper()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	var raw map[string]map[string]any
	if err := json.Unmarshal(b, &raw); err != nil || len(raw) != 1 || len(raw["error"]) != 4 {
		t.Fatalf("not an OpenAI error body (%v): %s", err, b)
	}
	e := decode[errorBody](t, b).Error
	str := func(p *string) string {
		if p == nil {
			return ""
		}
		return *p
	}
	if e.Message == "" || e.Type != typ || str(e.Param) != param || str(e.Code) != code {
		t.Errorf("error %s, want type %q param %q code %q", b, typ, param, code)
	}
	if (param == "") != (e.Param == nil) || (code == "") != (e.Code == nil) {
		t.Errorf("error %s: empty param/code must be null", b)
	}
}

func TestNotFoundAndMethods(t *testing.T) {
	_, ts := newSim(t, Config{})
	resp, b := post(t, ts, "/v1/nope", chatBody("x"))
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("status %d", resp.StatusCode)
	}
	checkError(t, resp, b, "invalid_request_error", "", "")

	resp, b = do(t, ts, http.MethodGet, "/v1/chat/completions", nil)
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "POST" {
		t.Fatalf("GET chat: status %d, Allow %q", resp.StatusCode, resp.Header.Get("Allow"))
	}
	checkError(t, resp, b, "invalid_request_error", "", "")
}

func TestModels(t *testing.T) {
	_, ts := newSim(t, Config{})
	resp, b := do(t, ts, http.MethodGet, "/v1/models", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	var list struct {
		Object string `json:"object"`
		Data   []struct {
			ID      string `json:"id"`
			Object  string `json:"object"`
			Created int64  `json:"created"`
			OwnedBy string `json:"owned_by"`
		} `json:"data"`
	}
	if err := json.Unmarshal(b, &list); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range list.Data {
		if m.Object != "model" || m.OwnedBy != "llmsim" || m.Created == 0 {
			t.Errorf("model %+v", m)
		}
		ids = append(ids, m.ID)
	}
	if list.Object != "list" || !slices.Equal(ids, []string{"sim-1", "sim-embed-1"}) {
		t.Errorf("models %s", b)
	}
}

// TestAzureLayout: llmsim also serves Azure OpenAI's paths, the deployment
// standing in for a "model" the body leaves out; they count as their
// OpenAI path in the stats.
func TestAzureLayout(t *testing.T) {
	s, ts := newSim(t, Config{})
	resp, b := post(t, ts, "/openai/deployments/gpt-4o-eu/chat/completions?api-version=2024-10-21",
		`{"messages":[{"role":"user","content":"hi"}]}`)
	if resp.StatusCode != 200 {
		t.Fatalf("chat: %d %s", resp.StatusCode, b)
	}
	cc := decode[struct {
		Model   string
		Choices []struct{ Message struct{ Content string } }
	}](t, b)
	if cc.Model != "gpt-4o-eu" || len(cc.Choices) != 1 || !strings.HasPrefix(cc.Choices[0].Message.Content, "sim:"+hash12("hi")) {
		t.Errorf("chat answer %s", b)
	}
	if resp, b := post(t, ts, "/openai/deployments/emb/embeddings", `{"input":"hi"}`); resp.StatusCode != 200 || !strings.Contains(string(b), `"model":"emb"`) {
		t.Errorf("embeddings: %d %s", resp.StatusCode, b)
	}
	if resp, b := post(t, ts, "/openai/deployments/d/completions", `{"prompt":"hi","model":"named"}`); resp.StatusCode != 200 || !strings.Contains(string(b), `"model":"named"`) {
		t.Errorf("completions with a model in the body: %d %s", resp.StatusCode, b)
	}
	for _, p := range []string{"/openai/deployments/d", "/openai/deployments/d/files", "/openai/deployments/"} {
		if resp, _ := post(t, ts, p, `{"messages":[{"role":"user","content":"hi"}]}`); resp.StatusCode != 404 {
			t.Errorf("%s: %d, want 404", p, resp.StatusCode)
		}
	}
	if got := s.Stats(); got["/v1/chat/completions"] != 1 || got["/v1/embeddings"] != 1 || got["/v1/completions"] != 1 {
		t.Errorf("stats %v", got)
	}
}
