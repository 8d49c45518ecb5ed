package llmsim

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

func TestMessages(t *testing.T) {
	sim, err := Start(context.Background(), "127.0.0.1:0", Config{AnswerTokens: 5})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	post := func(body string) (*http.Response, string) {
		resp, err := http.Post(sim.URL()+"/v1/messages", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	body := `{"model":"m","max_tokens":64,"messages":[{"role":"user","content":"hello"}]}`
	resp, js := post(body)
	var m struct {
		Type       string `json:"type"`
		StopReason string `json:"stop_reason"`
		Content    []struct{ Type, Text string }
	}
	if resp.StatusCode != 200 || json.Unmarshal([]byte(js), &m) != nil || m.Type != "message" || m.StopReason != "end_turn" ||
		len(m.Content) != 1 || len(strings.Fields(m.Content[0].Text)) != 5 || !strings.HasPrefix(m.Content[0].Text, "sim:") {
		t.Fatalf("JSON: %d %s", resp.StatusCode, js)
	}
	resp, sse := post(strings.Replace(body, `"max_tokens":64`, `"max_tokens":64,"stream":true`, 1))
	var text bytes.Buffer
	for _, line := range strings.Split(sse, "\n") {
		if d, ok := strings.CutPrefix(line, "data: "); ok {
			var ev struct {
				Type  string
				Delta struct{ Text string }
			}
			_ = json.Unmarshal([]byte(d), &ev)
			if ev.Type == "content_block_delta" {
				text.WriteString(ev.Delta.Text)
			}
		}
	}
	if resp.Header.Get("Content-Type") != "text/event-stream" || text.String() != m.Content[0].Text ||
		!strings.Contains(sse, "event: message_stop") || !strings.Contains(sse, "event: message_start") {
		t.Fatalf("SSE: %q\n%s", text.String(), sse)
	}
	if resp, js := post(`{"model":"m","messages":[]}`); resp.StatusCode != 400 || !strings.Contains(js, `"type":"error"`) {
		t.Errorf("bad request: %d %s", resp.StatusCode, js)
	}
	sim.Server.SetFault(Fault{Status: 529, RetryAfter: 2})
	if resp, js := post(body); resp.StatusCode != 529 || resp.Header.Get("Retry-After") != "2" || !strings.Contains(js, "overloaded_error") {
		t.Errorf("fault: %d %s", resp.StatusCode, js)
	}
	sim.Server.ClearFault()
	resp, err = http.Post(sim.URL()+"/v1/messages/count_tokens", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "{\"input_tokens\":1}\n" {
		t.Errorf("count_tokens: %d %s", resp.StatusCode, b)
	}
}
