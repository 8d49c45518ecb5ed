package openai

import (
	"bytes"
	"math/rand/v2"
	"reflect"
	"testing"
)

const scanHead = `{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"sim-1",`

// scanStreams are chunk sequences (data payloads) meant to take the fast
// path, leave it, or break the stream, with chunks in unusual forms.
func scanStreams() map[string][]string {
	first := scanHead + `"choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}`
	c := func(body string) string { return scanHead + `"choices":[` + body + `]}` }
	finish := c(`{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}`)
	streams := map[string][]string{
		"plain": {first, c(`{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}`),
			c(`{"index":0,"delta":{"content":" world"},"finish_reason":null}`), finish, "[DONE]"},
		"escapes": {first, c(`{"index":0,"delta":{"content":"a\n\"b\"\\\/\t\r\b\f"}}`),
			c(`{"index":0,"delta":{"content":"\u00e9\ud83d\ude00 é 😀"}}`), finish, "[DONE]"},
		"white space": {first, " { \"id\" : \"x\" ,\n\"choices\" : [ { \"index\" : 0 , \"delta\" : { \"content\" : \"hi\" } } ] } ", finish, "[DONE]"},
		"two choices": {first, c(`{"index":1,"delta":{"role":"assistant","content":"B"}},{"index":0,"delta":{"content":"A"}}`),
			c(`{"index":1,"delta":{},"finish_reason":"length"}`), finish, "[DONE]"},
		"completions": {scanHead + `"choices":[{"index":0,"text":"Hel","logprobs":null,"finish_reason":null}]}`,
			c(`{"index":0,"text":"lo","finish_reason":null}`), c(`{"index":0,"text":null,"finish_reason":"stop"}`), "[DONE]"},
		"usage": {first, c(`{"index":0,"delta":{"content":"x"}}`), finish,
			scanHead + `"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}`, "[DONE]"},
		"usage null and fingerprint": {first, scanHead + `"system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"content":"x"}}],"usage":null}`,
			scanHead + `"system_fingerprint":null,"service_tier":null,"choices":[{"index":0,"delta":{"content":"y"}}]}`, finish, "[DONE]"},
		"tool calls": {first, c(`{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":"{\""}}]}}`),
			c(`{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"a\":1}"}}]}}`), c(`{"index":0,"delta":{},"finish_reason":"tool_calls"}`), "[DONE]"},
		"refusal":        {first, c(`{"index":0,"delta":{"refusal":"no"}}`), finish, "[DONE]"},
		"error event":    {first, c(`{"index":0,"delta":{"content":"x"}}`), `{"error":{"message":"boom"}}`, "[DONE]"},
		"error null":     {first, c(`{"index":0,"delta":{"content":"x"}}`), scanHead + `"choices":[],"error":null}`, finish, "[DONE]"},
		"malformed":      {first, c(`{"index":0,"delta":{"content":"x"}}`), scanHead + `"choices":[{"index":0,"delta":{"content":"y"}}`, finish, "[DONE]"},
		"trailing bytes": {first, c(`{"index":0,"delta":{"content":"x"}}`) + " x", finish, "[DONE]"},
		"bad types": {first, c(`{"index":"0","delta":{"content":"x"}}`), c(`{"index":0,"delta":{"content":5}}`),
			c(`{"index":1.0,"delta":{"content":"x"}}`), c(`{"index":0,"delta":null}`), finish, "[DONE]"},
		"case and duplicates": {first, c(`{"index":0,"delta":{"Content":"x"}}`), c(`{"index":0,"delta":{"content":"a","content":"b"}}`),
			c(`{"INDEX":1,"delta":{"content":"z"}}`), scanHead + `"id":"y","choices":[{"index":0,"delta":{"content":"q"}}]}`, finish, "[DONE]"},
		"control and invalid utf-8": {first, c(`{"index":0,"delta":{"content":"a` + "\x01" + `b"}}`),
			c(`{"index":0,"delta":{"content":"a` + "\xff" + `b"}}`), c(`{"index":0,"delta":{"content":"\q"}}`), finish, "[DONE]"},
		"unknown keys": {first, c(`{"index":0,"delta":{"content":"x","extra":1},"other":true}`), scanHead + `"choices":[],"x":{"a":[1,2]}}`, finish, "[DONE]"},
		"no id first":  {`{"choices":[{"index":0,"delta":{"content":"a"}}]}`, c(`{"index":0,"delta":{"content":"b"}}`), finish, "[DONE]"},
		"empty and numbers": {first, c(``), c(`{}`), `{"created":-5,"choices":[]}`, `{"created":1e3,"choices":[]}`, `{"created":01,"choices":[]}`,
			c(`{"index":0,"delta":{"content":"x"},"finish_reason":""}`), finish, "[DONE]"},
		"no done": {first, c(`{"index":0,"delta":{"content":"x"}}`), finish},
	}
	return streams
}

// accState is everything an Accumulator shows.
type accState struct {
	Body                 string
	BodyErr, Err         string
	Done, Content, Broke bool
	Tokens               int64
}

func stateOf(a *Accumulator) accState {
	s := accState{Done: a.Done(), Content: a.HasContent(), Broke: a.Broken(), Tokens: a.TotalTokens()}
	b, err := a.Body()
	s.Body = string(b)
	if err != nil {
		s.BodyErr = err.Error()
	}
	if err := a.Err(); err != nil {
		s.Err = err.Error()
	}
	return s
}

func runChunks(api API, chunks []string, noFast bool) accState {
	a := NewAccumulator(api)
	a.noFast = noFast
	for _, ch := range chunks {
		a.Add([]byte(ch))
	}
	return stateOf(a)
}

// TestAddFastSameAsDecoding: the fast path changes nothing an accumulator
// shows, chunk by chunk and in the end.
func TestAddFastSameAsDecoding(t *testing.T) {
	for name, chunks := range scanStreams() {
		for _, api := range []API{APIChat, APICompletions} {
			for n := 1; n <= len(chunks); n++ { // every prefix
				fast, slow := runChunks(api, chunks[:n], false), runChunks(api, chunks[:n], true)
				if !reflect.DeepEqual(fast, slow) {
					t.Errorf("%s (api %v, %d chunks):\n fast %+v\n slow %+v", name, api, n, fast, slow)
				}
			}
		}
	}
}

// TestAddFastMutations: random byte edits of common chunks leave the fast
// path and the decoder agreeing.
func TestAddFastMutations(t *testing.T) {
	base := scanStreams()["escapes"]
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte(`{}[]:,"\ 0123456789.-enulltrfa` + "\x00\xff\n")
	for i := range 3000 {
		chunks := append([]string(nil), base...)
		k := 1 + rng.IntN(len(chunks)-2)
		b := []byte(chunks[k])
		for range 1 + rng.IntN(3) {
			j := rng.IntN(len(b))
			switch rng.IntN(3) {
			case 0:
				b[j] = alphabet[rng.IntN(len(alphabet))]
			case 1:
				b = append(b[:j], b[j+1:]...)
			default:
				b = append(b[:j], append([]byte{alphabet[rng.IntN(len(alphabet))]}, b[j:]...)...)
			}
			if len(b) == 0 {
				break
			}
		}
		chunks[k] = string(b)
		fast, slow := runChunks(APIChat, chunks, false), runChunks(APIChat, chunks, true)
		if !reflect.DeepEqual(fast, slow) {
			t.Fatalf("mutation %d: chunk %q:\n fast %+v\n slow %+v", i, b, fast, slow)
		}
	}
}

// TestAddFastTaken: the common chunk takes the fast path and allocates
// nothing once the buffers have grown.
func TestAddFastTaken(t *testing.T) {
	a := NewAccumulator(APIChat)
	a.Add([]byte(scanHead + `"choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}`))
	chunk := []byte(scanHead + `"choices":[{"index":0,"delta":{"content":"word \"q\"\n"},"logprobs":null,"finish_reason":null}]}`)
	if !a.addFast(chunk) {
		t.Fatal("the common chunk does not take the fast path")
	}
	a.choices[0].content.b.Grow(1 << 16) // the answer's growth is not the chunk's
	if n := testing.AllocsPerRun(100, func() { a.Add(chunk) }); n != 0 {
		t.Errorf("%v allocations per common chunk, want 0", n)
	}
	var want bytes.Buffer
	for range 102 {
		want.WriteString("word \"q\"\n")
	}
	if got := a.choices[0].content.String(); got != want.String() {
		t.Errorf("content %.60q…, want %.60q…", got, want.String())
	}
}
