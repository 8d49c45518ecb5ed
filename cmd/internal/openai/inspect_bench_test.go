package openai

import "testing"

func BenchmarkInspect(b *testing.B) {
	body := []byte(`{"id":"chatcmpl-sim-12998c017066","object":"chat.completion","created":1795415806,"model":"sim-1","choices":[{"index":0,"message":{"role":"assistant","content":"sim:12998c017066 fugiat nulla pariatur excepteur sint occaecat cupidatat non proident sunt culpa qui officia deserunt mollit anim id est laborum vitae porta lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore et dolore magna","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":2,"completion_tokens":40,"total_tokens":42}}`)
	b.ReportAllocs()
	for b.Loop() {
		if ok, n := Inspect(APIChat, body); !ok || n != 42 {
			b.Fatal(ok, n)
		}
	}
}
