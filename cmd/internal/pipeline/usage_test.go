package pipeline

import "testing"

func TestAnswerUsage(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		model      string
		in, out    int64
	}{
		{"chat", `{"id":"x","object":"chat.completion","model":"deepseek-chat","choices":[{"message":{"role":"assistant","content":"the \"usage\": {\"prompt_tokens\": 999} and \"model\": \"fake\""}}],"usage":{"prompt_tokens":12,"completion_tokens":34,"total_tokens":46}}`, "deepseek-chat", 12, 34},
		{"responses", `{"id":"r","object":"response","model":"gpt-4o","output":[{"type":"message","content":[{"type":"output_text","text":"usage"}]}],"usage" : {"input_tokens":5,"output_tokens":7,"total_tokens":12}}`, "gpt-4o", 5, 7},
		{"embeddings", `{"object":"list","data":[{"embedding":[0.1]}],"model":"text-embedding-3-small","usage":{"prompt_tokens":8,"total_tokens":8}}`, "text-embedding-3-small", 8, -1},
		{"string value", `{"model":"m","choices":[{"message":{"content":"usage"}}],"note":"usage"}`, "m", -1, -1},
		{"no usage", `{"model":"m","choices":[]}`, "m", -1, -1},
		{"not json", `usage: {`, "", -1, -1},
		{"nested details", `{"model":"gpt-4o","usage":{"input_tokens_details":{"cached_tokens":3},"input_tokens":9,"output_tokens_details":{"reasoning_tokens":2},"output_tokens":4}}`, "gpt-4o", 9, 4},
		{"escaped model", `{"model":"a\"b","usage":{"prompt_tokens": 1, "completion_tokens" : 2}}`, "a\"b", 1, 2},
	} {
		model, in, out := answerUsage([]byte(tc.body))
		if model != tc.model || in != tc.in || out != tc.out {
			t.Errorf("%s: answerUsage = %q %d %d, want %q %d %d", tc.name, model, in, out, tc.model, tc.in, tc.out)
		}
	}
}

// TestAnswerUsageAllocs: it runs on every cache hit, so it reads the
// answer without a decoder: one allocation (the model's name).
func TestAnswerUsageAllocs(t *testing.T) {
	body := []byte(`{"id":"x","model":"deepseek-chat","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":34}}`)
	if n := testing.AllocsPerRun(100, func() { answerUsage(body) }); n > 1 {
		t.Errorf("answerUsage allocates %v times per call, want ≤ 1", n)
	}
}
