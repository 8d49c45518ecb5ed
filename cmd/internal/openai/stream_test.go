package openai

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
)

func readAll(t *testing.T, s string) (raws, datas []string, err error) {
	t.Helper()
	er := NewEventReader(strings.NewReader(s))
	for {
		raw, data, e := er.Next()
		if e != nil {
			return raws, datas, e
		}
		raws, datas = append(raws, string(raw)), append(datas, string(data))
	}
}

func TestEventReader(t *testing.T) {
	in := "data: {\"a\":1}\n\n: keep-alive\n\nevent: x\ndata: line1\ndata: line2\r\n\r\n\n\ndata: [DONE]\n\n"
	raws, datas, err := readAll(t, in)
	if err != io.EOF {
		t.Fatalf("err = %v, want io.EOF", err)
	}
	wantData := []string{`{"a":1}`, ``, "line1\nline2", `[DONE]`}
	if !reflect.DeepEqual(datas, wantData) {
		t.Errorf("data = %q, want %q", datas, wantData)
	}
	if got := strings.Join(raws, ""); got != strings.Replace(in, "\r\n\r\n\n\n", "\r\n\r\n", 1) {
		t.Errorf("raw events do not reproduce the input (minus stray blank lines):\n%q", got)
	}
	// A stream cut inside an event is not a clean end.
	if _, _, err := readAll(t, "data: {\"a\":1}\n\ndata: {\"b\""); err != io.ErrUnexpectedEOF {
		t.Errorf("cut stream: err = %v, want io.ErrUnexpectedEOF", err)
	}
	// Long lines are read whole.
	long := strings.Repeat("x", 100<<10)
	_, datas, _ = readAll(t, "data: "+long+"\n\n")
	if len(datas) != 1 || datas[0] != long {
		t.Errorf("long line not read whole (got %d events)", len(datas))
	}
}

const chatStream = `data: {"id":"c1","object":"chat.completion.chunk","created":7,"model":"m","system_fingerprint":"fp","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}

data: {"id":"c1","object":"chat.completion.chunk","created":7,"model":"m","choices":[{"index":0,"delta":{"content":"Hello"},"finish_reason":null}]}

data: {"id":"c1","object":"chat.completion.chunk","created":7,"model":"m","choices":[{"index":0,"delta":{"content":", world"},"finish_reason":null}]}

data: {"id":"c1","object":"chat.completion.chunk","created":7,"model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get","arguments":"{\"q\":"}}]},"finish_reason":null}]}

data: {"id":"c1","object":"chat.completion.chunk","created":7,"model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"1}"}}]},"finish_reason":null}]}

data: {"id":"c1","object":"chat.completion.chunk","created":7,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}

data: {"id":"c1","object":"chat.completion.chunk","created":7,"model":"m","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}

data: [DONE]

`

func accumulate(t *testing.T, api API, s string) *Accumulator {
	t.Helper()
	acc := NewAccumulator(api)
	_, datas, err := readAll(t, s)
	if err != io.EOF && err != io.ErrUnexpectedEOF {
		t.Fatal(err)
	}
	for _, d := range datas {
		acc.Add([]byte(d))
	}
	return acc
}

func TestAccumulatorChat(t *testing.T) {
	acc := accumulate(t, APIChat, chatStream)
	if err := acc.Err(); err != nil {
		t.Fatalf("Err = %v, want nil", err)
	}
	b, err := acc.Body()
	if err != nil {
		t.Fatal(err)
	}
	var r Response
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	m := r.Choices[0].Message
	if r.Object != "chat.completion" || r.ID != "c1" || *m.Content != "Hello, world" ||
		*r.Choices[0].FinishReason != "tool_calls" || r.Usage.TotalTokens != 7 || *r.SystemFingerprint != "fp" {
		t.Errorf("assembled %s", b)
	}
	if len(m.ToolCalls) != 1 || m.ToolCalls[0].ID != "call_1" || m.ToolCalls[0].Function.Arguments != `{"q":1}` || m.ToolCalls[0].Index != nil {
		t.Errorf("tool calls assembled wrong: %+v", m.ToolCalls)
	}
	if !Complete(APIChat, b) {
		t.Errorf("assembled answer is not Complete: %s", b)
	}
}

func TestAccumulatorRejects(t *testing.T) {
	cut := chatStream[:strings.Index(chatStream, `data: {"id":"c1","object":"chat.completion.chunk","created":7,"model":"m","choices":[{"index":0,"delta":{},`)]
	tests := map[string]string{
		"no [DONE]":   cut,
		"error event": "data: {\"error\":{\"message\":\"boom\"}}\n\ndata: [DONE]\n\n",
		"empty":       "data: {\"id\":\"x\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\ndata: {\"id\":\"x\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n",
		"no finish":   "data: {\"id\":\"x\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n\n",
		"bad json":    "data: {\"id\":\n\ndata: [DONE]\n\n",
	}
	for name, s := range tests {
		if err := accumulate(t, APIChat, s).Err(); err == nil {
			t.Errorf("%s: Err = nil, want an error", name)
		}
	}
}

// TestReplayRoundTrip replays stored answers as streams and assembles them
// again: the result must mean the same as what was stored.
func TestReplayRoundTrip(t *testing.T) {
	tests := []struct {
		api  API
		body string
	}{
		{APIChat, `{"id":"a","object":"chat.completion","created":5,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Paris."},"logprobs":null,"finish_reason":"stop"},{"index":1,"message":{"role":"assistant","content":"It is Paris."},"logprobs":null,"finish_reason":"length"}],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}`},
		{APIChat, `{"id":"b","object":"chat.completion","created":5,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"t1","type":"function","function":{"name":"f","arguments":"{}"}}]},"logprobs":null,"finish_reason":"tool_calls"}]}`},
		{APICompletions, `{"id":"c","object":"text_completion","created":5,"model":"m","choices":[{"index":0,"text":"once upon","logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}`},
	}
	for _, tt := range tests {
		for _, usage := range []bool{false, true} {
			var buf bytes.Buffer
			flushes := 0
			if err := WriteStream(&buf, func() { flushes++ }, tt.api, []byte(tt.body), usage); err != nil {
				t.Fatal(err)
			}
			acc := accumulate(t, tt.api, buf.String())
			if err := acc.Err(); err != nil {
				t.Fatalf("replayed stream not complete: %v\n%s", err, buf.String())
			}
			got, _ := acc.Body()
			var want, have Response
			_ = json.Unmarshal([]byte(tt.body), &want)
			_ = json.Unmarshal(got, &have)
			if !usage {
				want.Usage = nil
			}
			for i := range want.Choices {
				want.Choices[i].Logprobs, have.Choices[i].Logprobs = nil, nil
			}
			if !reflect.DeepEqual(want, have) {
				t.Errorf("%s usage=%v: round trip changed the answer:\nwant %s\ngot  %s", tt.api, usage, tt.body, got)
			}
			if events := strings.Count(buf.String(), "\n\n"); flushes != events {
				t.Errorf("flushed %d times for %d events", flushes, events)
			}
		}
	}
}

func TestComplete(t *testing.T) {
	tests := []struct {
		api  API
		body string
		want bool
	}{
		{APIChat, `{"choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}]}`, true},
		{APIChat, `{"choices":[{"index":0,"message":{"role":"assistant","content":""},"finish_reason":"stop"}]}`, false},
		{APIChat, `{"choices":[{"index":0,"message":{"role":"assistant","content":"  "},"finish_reason":"stop"}]}`, false},
		{APIChat, `{"choices":[]}`, false},
		{APIChat, `{"choices":[{"index":0,"message":{"content":"hi"},"finish_reason":null}]}`, false},
		{APIChat, `{"error":{"message":"x"},"choices":[{"message":{"content":"hi"},"finish_reason":"stop"}]}`, false},
		{APIChat, `{"choices":[{"index":0,"message":{"content":"hi"},"finish`, false},
		{APICompletions, `{"choices":[{"index":0,"text":"hi","finish_reason":"stop"}]}`, true},
		{APIEmbeddings, `{"data":[{"embedding":[0.1,0.2]}]}`, true},
		{APIEmbeddings, `{"data":[{"embedding":"AAAA"}]}`, true},
		{APIEmbeddings, `{"data":[]}`, false},
		{APIEmbeddings, `{"data":[{"embedding":[]}]}`, false},
		{APIJSON, `{"images":["..."]}`, true},
		{APIJSON, `{"error":"bad"}`, false},
	}
	for _, tt := range tests {
		if got := Complete(tt.api, []byte(tt.body)); got != tt.want {
			t.Errorf("Complete(%s, %s) = %v, want %v", tt.api, tt.body, got, tt.want)
		}
	}
}

func TestParseRequestErrors(t *testing.T) {
	tests := []struct {
		api   API
		body  string
		param string
	}{
		{APIChat, `{"model":"m"}`, "messages"},
		{APIChat, `{"messages":[{"role":"user","content":"x"}]}`, "model"},
		{APIChat, `{"model":5,"messages":[]}`, "model"},
		{APIChat, `{"model":"m","messages":"hi"}`, "messages"},
		{APIChat, `{"model":"m","messages":[]}`, "messages"},
		{APIChat, `{"model":"m","messages":[{"content":"x"}]}`, "messages[0].role"},
		{APIChat, `{"model":"m","messages":[{"role":"user","content":5}]}`, "messages[0].content"},
		{APIChat, `{"model":"m","messages":[{"role":"user","content":"x"}],"stream":"yes"}`, "stream"},
		{APIChat, `{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":"hot"}`, "temperature"},
		{APIChat, `{"model":"m","messages":[{"role":"user","content":"x"}],"n":1.5}`, "n"},
		{APIChat, `{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":"10"}`, "max_tokens"},
		{APIChat, `{"model":"m","messages":[{"role":"user","content":"x"}],"stream_options":{"include_usage":1}}`, "stream_options.include_usage"},
		{APIChat, `[1,2]`, ""},
		{APIEmbeddings, `{"model":"m"}`, "input"},
		{APIEmbeddings, `{"model":"m","input":{}}`, "input"},
		{APIJSON, `{"x":`, ""},
	}
	for _, tt := range tests {
		_, err := ParseRequest(tt.api, []byte(tt.body))
		var ie *InvalidRequestError
		if !errors.As(err, &ie) {
			t.Errorf("ParseRequest(%s, %s) err = %v, want *InvalidRequestError", tt.api, tt.body, err)
			continue
		}
		if ie.Param != tt.param {
			t.Errorf("ParseRequest(%s, %s) param = %q, want %q (%s)", tt.api, tt.body, ie.Param, tt.param, ie.Msg)
		}
	}
	r, err := ParseRequest(APIChat, []byte(`{"model":"m","messages":[{"role":"user","content":"x"}],"stream":true,"stream_options":{"include_usage":true},"temperature":0.2,"n":2}`))
	if err != nil || !r.Stream || !r.IncludeUsage || *r.Temperature != 0.2 || r.N != 2 || r.Model != "m" {
		t.Errorf("ParseRequest fields = %+v, %v", r, err)
	}
}

// A lean accumulator (DropText: the answer is only relayed) agrees with a
// full one on everything the relay reads, event by event — HasContent
// (the first token), Done, Broken, Err (an empty or white-space answer is
// still an empty answer), TotalTokens, and the model and usage of Body —
// and keeps none of the text.
func TestAccumulatorDropText(t *testing.T) {
	white := "data: {\"id\":\"x\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\" \\n\"}}]}\n\n" +
		"data: {\"id\":\"x\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\\t\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n"
	cut := chatStream[:strings.Index(chatStream, `data: {"id":"c1","object":"chat.completion.chunk","created":7,"model":"m","choices":[{"index":0,"delta":{},`)]
	streams := map[string]struct {
		api API
		s   string
	}{
		"chat with tools": {APIChat, chatStream},
		"white space":     {APIChat, white},
		"cut":             {APIChat, cut},
		"error event":     {APIChat, "data: {\"error\":{\"message\":\"boom\"}}\n\ndata: [DONE]\n\n"},
		"completions":     {APICompletions, "data: {\"id\":\"c\",\"model\":\"m\",\"choices\":[{\"index\":0,\"text\":\"once\",\"finish_reason\":null}]}\n\ndata: {\"id\":\"c\",\"model\":\"m\",\"choices\":[{\"index\":0,\"text\":\" upon\",\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2,\"total_tokens\":3}}\n\ndata: [DONE]\n\n"},
	}
	for name, tt := range streams {
		_, datas, err := readAll(t, tt.s)
		if err != io.EOF && err != io.ErrUnexpectedEOF {
			t.Fatal(err)
		}
		full, lean := NewAccumulator(tt.api), NewAccumulator(tt.api)
		lean.DropText()
		for i, d := range datas {
			full.Add([]byte(d))
			lean.Add([]byte(d))
			if full.HasContent() != lean.HasContent() || full.Done() != lean.Done() || full.Broken() != lean.Broken() {
				t.Fatalf("%s, event %d: full (content %v, done %v, broken %v) and lean (%v, %v, %v) differ", name, i,
					full.HasContent(), full.Done(), full.Broken(), lean.HasContent(), lean.Done(), lean.Broken())
			}
		}
		if fe, le := full.Err(), lean.Err(); (fe == nil) != (le == nil) || fe != nil && fe.Error() != le.Error() {
			t.Errorf("%s: Err full %v, lean %v", name, fe, le)
		}
		if full.TotalTokens() != lean.TotalTokens() {
			t.Errorf("%s: tokens full %d, lean %d", name, full.TotalTokens(), lean.TotalTokens())
		}
		fb, ferr := full.Body()
		lb, lerr := lean.Body()
		if (ferr == nil) != (lerr == nil) {
			t.Errorf("%s: Body errors full %v, lean %v", name, ferr, lerr)
		}
		if ferr == nil {
			fm, fi, fo := answerUsageForTest(fb)
			lm, li, lo := answerUsageForTest(lb)
			if fm != lm || fi != li || fo != lo {
				t.Errorf("%s: model/usage full %q %d %d, lean %q %d %d", name, fm, fi, fo, lm, li, lo)
			}
		}
		for _, c := range lean.choices {
			if c.content.b.Cap() != 0 || c.text.b.Cap() != 0 || c.refusal.b.Cap() != 0 {
				t.Errorf("%s: the lean accumulator kept text", name)
			}
			for _, a := range c.toolArgs {
				if a.b.Cap() != 0 {
					t.Errorf("%s: the lean accumulator kept tool arguments", name)
				}
			}
		}
	}
}

func answerUsageForTest(b []byte) (model string, in, out int) {
	var r Response
	if json.Unmarshal(b, &r) != nil {
		return "", -1, -1
	}
	if r.Usage != nil {
		in, out = r.Usage.PromptTokens, r.Usage.CompletionTokens
	}
	return r.Model, in, out
}
