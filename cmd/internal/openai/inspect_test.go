package openai

import (
	"strings"
	"testing"
)

// inspectValue is Inspect on the parsed tree: the reference the scanner is
// tested against.
func inspectValue(api API, body []byte) (complete bool, totalTokens int64) {
	v, err := ParseJSON(body)
	if err != nil || v.Kind != Object {
		return false, -1
	}
	totalTokens = -1
	if u, ok := v.Get("usage"); ok {
		if t, ok := u.Get("total_tokens"); ok {
			if n, ok := t.Int(); ok {
				totalTokens = n
			}
		}
	}
	if e, ok := v.Get("error"); ok && e.Kind != Null {
		return false, totalTokens
	}
	switch api {
	case APIJSON:
		return true, totalTokens
	case APIEmbeddings:
		data, _ := v.Get("data")
		if len(data.Elems()) == 0 {
			return false, totalTokens
		}
		for _, d := range data.Elems() {
			emb, ok := d.Get("embedding")
			if !ok || emb.Kind == Null || (emb.Kind == String && emb.Str() == "") || (emb.Kind == Array && len(emb.Elems()) == 0) {
				return false, totalTokens
			}
		}
		return true, totalTokens
	}
	choices, _ := v.Get("choices")
	if len(choices.Elems()) == 0 {
		return false, totalTokens
	}
	for _, c := range choices.Elems() {
		if fr, _ := c.Get("finish_reason"); fr.Str() == "" {
			return false, totalTokens
		}
		if t, ok := c.Get("text"); ok && t.Kind == String {
			if strings.TrimSpace(t.Str()) == "" {
				return false, totalTokens
			}
			continue
		}
		m, ok := c.Get("message")
		if !ok || m.Kind != Object {
			return false, totalTokens
		}
		content, _ := m.Get("content")
		refusal, _ := m.Get("refusal")
		tools, _ := m.Get("tool_calls")
		if strings.TrimSpace(content.Str()) == "" && refusal.Str() == "" && len(tools.Elems()) == 0 {
			return false, totalTokens
		}
	}
	return true, totalTokens
}

// inspectCases are answers of every shape Inspect judges, good and bad.
var inspectCases = []string{
	`{"choices":[{"index":0,"message":{"role":"assistant","content":"Paris"},"finish_reason":"stop"}],"usage":{"prompt_tokens":2,"completion_tokens":1,"total_tokens":3}}`,
	`{"choices":[{"message":{"content":"   "},"finish_reason":"stop"}]}`,
	`{"choices":[{"message":{"content":null,"tool_calls":[{"id":"c1","type":"function"}]},"finish_reason":"tool_calls"}]}`,
	`{"choices":[{"message":{"content":null,"tool_calls":[]},"finish_reason":"tool_calls"}]}`,
	`{"choices":[{"message":{"content":"","refusal":"I can't"},"finish_reason":"stop"}]}`,
	`{"choices":[{"message":{"content":"x"},"finish_reason":null}]}`,
	`{"choices":[{"message":{"content":"x"},"finish_reason":""}]}`,
	`{"choices":[{"message":{"content":"x"}}]}`,
	`{"choices":[{"message":"x","finish_reason":"stop"}]}`,
	`{"choices":[{"text":"hello","finish_reason":"length"}],"usage":{"total_tokens":7}}`,
	`{"choices":[{"text":" \n","finish_reason":"stop"}]}`,
	`{"choices":[{"text":5,"message":{"content":"y"},"finish_reason":"stop"}]}`,
	`{"choices":[]}`,
	`{"choices":null}`,
	`{"choices":{"a":1}}`,
	`{"choices":[1,2]}`,
	`{"choices":[{"message":{"content":"a"},"finish_reason":"stop"},{"message":{"content":""},"finish_reason":"stop"}]}`,
	`{"error":{"message":"boom"},"choices":[{"message":{"content":"a"},"finish_reason":"stop"}]}`,
	`{"error":null,"choices":[{"message":{"content":"a"},"finish_reason":"stop"}]}`,
	`{"choices":[{"message":{"content":"a"},"finish_reason":"stop"}],"choices":[]}`,
	`{"choices":[],"choices":[{"message":{"content":"a"},"finish_reason":"stop"}]}`,
	`{"choices":[{"message":{"content":"a"},"message":{"content":""},"finish_reason":"stop"}]}`,
	`{"choices":[{"message":{"content":"","content":"b"},"finish_reason":"stop","finish_reason":""}]}`,
	`{"usage":{"total_tokens":4.2e1},"choices":[{"message":{"content":"\u00e9t\u00e9"},"finish_reason":"stop"}]}`,
	`{"usage":{"total_tokens":"42"}}`,
	`{"usage":{"total_tokens":42,"total_tokens":1.5}}`,
	`{"usage":5,"usage":{"total_tokens":9}}`,
	`{"usage":{"total_tokens":9},"usage":null}`,
	`{"data":[{"embedding":[0.1,0.2],"index":0}],"usage":{"prompt_tokens":3,"total_tokens":3}}`,
	`{"data":[{"embedding":"AAAA"}]}`,
	`{"data":[{"embedding":""}]}`,
	`{"data":[{"embedding":[]}]}`,
	`{"data":[{"embedding":null}]}`,
	`{"data":[{"index":0}]}`,
	`{"data":[]}`,
	`{"data":[{"embedding":{"x":1}}]}`,
	`{"images":["..."],"parameters":{}}`,
	` { "choices" : [ { "finish_reason" : "stop" , "message" : { "content" : "ok" } } ] } `,
	`{"choices":[{"message":{"content":"a"},"finish_reason":"stop"}]} x`,
	`{"choices":[{"message":{"content":"a"},"finish_reason":"stop"}]`,
	`{"choices":[{"message":{"content":"a\x01"},"finish_reason":"stop"}]}`,
	`{"choices":[{"message":{"content":"a"},"finish_reason":"stop"}],"x":[1,2,{"y":[true,false,null,-0.5e-3]}]}`,
	`{"x":nul}`,
	`{"x":01}`,
	`[1]`,
	`"x"`,
	``,
	"{\"choices\":[{\"message\":{\"content\":\"\xff\"},\"finish_reason\":\"stop\"}]}",
	`{"a":` + strings.Repeat(`[`, 300) + strings.Repeat(`]`, 300) + `}`,
	`{"a":` + strings.Repeat(`[`, 200) + strings.Repeat(`]`, 200) + `,"choices":[{"text":"t","finish_reason":"stop"}]}`,
	`{"\u0063hoices":[{"text":"t","finish_reason":"stop"}]}`,
}

var inspectAPIs = []API{APIChat, APICompletions, APIEmbeddings, APIJSON}

// The scanner judges every answer exactly as the tree does.
func TestInspectMatchesTree(t *testing.T) {
	for _, c := range inspectCases {
		for _, api := range inspectAPIs {
			ok1, n1 := Inspect(api, []byte(c))
			ok2, n2 := inspectValue(api, []byte(c))
			if ok1 != ok2 || n1 != n2 {
				t.Errorf("Inspect(%s, %.80q) = %v, %d; the tree says %v, %d", api, c, ok1, n1, ok2, n2)
			}
		}
	}
	if ok, n := Inspect(APIChat, []byte(inspectCases[0])); !ok || n != 3 {
		t.Errorf("a complete chat answer: %v, %d; want true, 3", ok, n)
	}
	if ok, _ := Inspect(APIChat, []byte(inspectCases[1])); ok {
		t.Error("a blank chat answer counts as complete")
	}
}

func FuzzInspect(f *testing.F) {
	for _, c := range inspectCases {
		f.Add([]byte(c))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, api := range inspectAPIs {
			ok1, n1 := Inspect(api, b)
			ok2, n2 := inspectValue(api, b)
			if ok1 != ok2 || n1 != n2 {
				t.Fatalf("Inspect(%s, %q) = %v, %d; the tree says %v, %d", api, b, ok1, n1, ok2, n2)
			}
		}
	})
}
