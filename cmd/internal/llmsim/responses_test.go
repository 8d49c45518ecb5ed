package llmsim

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestResponsesJSONAndStream(t *testing.T) {
	s := New(Config{AnswerTokens: 5})
	srv := httptest.NewServer(s)
	defer srv.Close()
	post := func(body string) *http.Response {
		t.Helper()
		resp, err := http.Post(srv.URL+"/v1/responses", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	resp := post(`{"model":"m","instructions":"x","input":[{"role":"user","content":[{"type":"input_text","text":"hello"}]}],"store":true}`)
	var r struct {
		ID     string `json:"id"`
		Status string `json:"status"`
		Output []struct {
			Content []struct{ Text string } `json:"content"`
		} `json:"output"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil || resp.StatusCode != 200 {
		t.Fatal(resp.StatusCode, err)
	}
	resp.Body.Close()
	text := r.Output[0].Content[0].Text
	if r.Status != "completed" || !strings.HasPrefix(text, "sim:") {
		t.Fatalf("%+v", r)
	}
	if post(`{"model":"m","input":"hello"}`).StatusCode != 200 {
		t.Fatal("string input")
	}
	g, _ := http.Get(srv.URL + "/v1/responses/" + r.ID)
	if g.StatusCode != 200 {
		t.Fatalf("GET stored: %d", g.StatusCode)
	}
	resp = post(`{"model":"m","input":"hello","stream":true}`)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, ev := range []string{"response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
		"response.output_text.delta", "response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed"} {
		if !strings.Contains(string(b), "event: "+ev+"\n") {
			t.Fatalf("no %s in\n%s", ev, b)
		}
	}
	if !strings.Contains(string(b), `"text":"`+text+`"`) {
		t.Fatalf("streamed text differs from %q:\n%s", text, b)
	}
	if post(`{"model":"m"}`).StatusCode != 400 {
		t.Fatal("missing input is a 400")
	}
	s.SetFault(Fault{Status: 503, RetryAfter: 2})
	resp = post(`{"model":"m","input":"hello"}`)
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "2" {
		t.Fatalf("fault: %d %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if s.Stats()["/v1/responses"] < 5 {
		t.Fatalf("stats %v", s.Stats())
	}
}
