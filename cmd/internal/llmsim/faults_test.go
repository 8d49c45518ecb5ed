package llmsim

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"
)

// tryPost sends a request and reads the body, returning transport and read
// errors instead of failing: faults are supposed to cause them.
func tryPost(ctx context.Context, ts *httptest.Server, path string, body []byte) (*http.Response, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ts.URL+path, bytes.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := ts.Client().Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

var faultPaths = []struct {
	path string
	body any
}{
	{"/v1/chat/completions", chatBody("hi")},
	{"/v1/chat/completions", with(chatBody("hi"), "stream", true)},
	{"/v1/completions", map[string]any{"model": "sim-1", "prompt": "hi"}},
	{"/v1/embeddings", map[string]any{"model": "sim-embed-1", "input": "hi"}},
}

func TestFaultStatus(t *testing.T) {
	tests := []struct {
		fault      Fault
		typ, code  string
		retryAfter string
	}{
		{Fault{Status: 503, RetryAfter: 7}, "server_error", "", "7"},
		{Fault{Status: 500}, "server_error", "", ""},
		{Fault{Status: 429, RetryAfter: 2}, "requests", "rate_limit_exceeded", "2"},
		{Fault{Status: 400}, "invalid_request_error", "", ""},
		{Fault{Status: 401}, "invalid_request_error", "invalid_api_key", ""},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.fault.Status), func(t *testing.T) {
			s, ts := newSim(t, Config{})
			s.SetFault(tt.fault)
			for _, p := range faultPaths {
				resp, b := post(t, ts, p.path, p.body)
				if resp.StatusCode != tt.fault.Status || resp.Header.Get("Retry-After") != tt.retryAfter {
					t.Errorf("%s: status %d Retry-After %q, want %d %q", p.path, resp.StatusCode, resp.Header.Get("Retry-After"), tt.fault.Status, tt.retryAfter)
				}
				checkError(t, resp, b, tt.typ, "", tt.code)
			}
			// Never /v1/models nor /_sim/*.
			if resp, b := do(t, ts, http.MethodGet, "/v1/models", nil); resp.StatusCode != http.StatusOK {
				t.Errorf("/v1/models faulted: %d %s", resp.StatusCode, b)
			}
			if resp, b := do(t, ts, http.MethodGet, "/_sim/stats", nil); resp.StatusCode != http.StatusOK {
				t.Errorf("/_sim/stats faulted: %d %s", resp.StatusCode, b)
			}
		})
	}
}

func TestFaultPaths(t *testing.T) {
	s, ts := newSim(t, Config{})
	s.SetFault(Fault{Status: 503, Paths: []string{"/v1/embeddings", "/v1/completions"}})
	want := []int{200, 200, 503, 503}
	for i, p := range faultPaths {
		if resp, _ := post(t, ts, p.path, p.body); resp.StatusCode != want[i] {
			t.Errorf("%s: status %d, want %d", p.path, resp.StatusCode, want[i])
		}
	}
}

func TestFaultProbability(t *testing.T) {
	s, ts := newSim(t, Config{AnswerTokens: 2})
	s.SetFault(Fault{Status: 500, Probability: 0.5})
	counts := map[int]int{}
	for range 200 {
		resp, _ := post(t, ts, "/v1/chat/completions", chatBody("coin"))
		counts[resp.StatusCode]++
	}
	if counts[500] < 60 || counts[500] > 140 || counts[200]+counts[500] != 200 {
		t.Errorf("statuses %v: want about 100 of each of 200 and 500", counts)
	}
}

// postWithKey posts body to path with the API key in header name ("" → no
// key) and returns the status and Retry-After.
func postWithKey(t *testing.T, ts *httptest.Server, path string, body any, name, value string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, ts.URL+path, bytes.NewReader(mustJSON(t, body)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if name != "" {
		req.Header.Set(name, value)
	}
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, resp.Header.Get("Retry-After")
}

func TestFaultKeys(t *testing.T) {
	s, ts := newSim(t, Config{AnswerTokens: 2})
	s.SetFault(Fault{Status: 429, RetryAfter: 20, Keys: []string{"sk-ratelimited", "azure-limited"}})
	tests := []struct {
		header, value string
		want          int
	}{
		{"Authorization", "Bearer sk-ratelimited", 429},
		{"Authorization", "bearer  sk-ratelimited ", 429},
		{"Api-Key", "azure-limited", 429},
		{"X-Api-Key", "sk-ratelimited", 429},
		{"Authorization", "Bearer sk-other", 200},
		{"Authorization", "Bearer sk-ratelimited-not", 200},
		{"Api-Key", "sk-other", 200},
		{"", "", 200}, // no key at all
	}
	for _, p := range faultPaths {
		for _, tt := range tests {
			status, ra := postWithKey(t, ts, p.path, p.body, tt.header, tt.value)
			if status != tt.want || (tt.want == 429) != (ra == "20") {
				t.Errorf("%s with %s %q: %d Retry-After %q, want %d", p.path, tt.header, tt.value, status, ra, tt.want)
			}
		}
	}
	// Over HTTP, the filter is kept and shown.
	body := `{"status":500,"keys":["sk-bad"]}`
	if resp, b := post(t, ts, "/_sim/faults", body); resp.StatusCode != http.StatusOK ||
		!reflect.DeepEqual(decode[Fault](t, b), Fault{Status: 500, Keys: []string{"sk-bad"}}) {
		t.Fatalf("POST %s: %d %s", body, resp.StatusCode, b)
	}
	if status, _ := postWithKey(t, ts, "/v1/chat/completions", chatBody("x"), "Authorization", "Bearer sk-bad"); status != 500 {
		t.Errorf("sk-bad: %d, want 500", status)
	}
	if status, _ := postWithKey(t, ts, "/v1/chat/completions", chatBody("x"), "Authorization", "Bearer sk-good"); status != 200 {
		t.Errorf("sk-good: %d, want 200", status)
	}
	if resp, _ := post(t, ts, "/_sim/faults", `{"status":500,"keys":[""]}`); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("an empty key: %d, want 400", resp.StatusCode)
	}
}

func TestFaultHangUntilClientGoes(t *testing.T) {
	for _, p := range faultPaths[:3] { // generation paths: InFlight sees them
		t.Run(p.path, func(t *testing.T) {
			s, ts := newSim(t, Config{})
			s.SetFault(Fault{Hang: true})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			errc := make(chan error, 1)
			go func() {
				resp, _, err := tryPost(ctx, ts, p.path, mustJSON(t, p.body))
				if err == nil {
					err = fmt.Errorf("answered %d", resp.StatusCode)
				}
				errc <- err
			}()
			waitFor(t, "the request to be held", func() bool { return s.InFlight() == 1 })
			select {
			case err := <-errc:
				t.Fatalf("hung request ended by itself: %v", err)
			default:
			}
			cancel()
			if err := <-errc; !errors.Is(err, context.Canceled) {
				t.Errorf("client error %v, want context.Canceled", err)
			}
			// Only the client going away can end a hang without hang_ms.
			waitFor(t, "the handler to give up", func() bool { return s.InFlight() == 0 })
		})
	}
}

func TestFaultHangMS(t *testing.T) {
	const hang = 30 * time.Millisecond
	tests := []struct {
		fault  Fault
		status int
	}{
		{Fault{Hang: true, HangMS: 30}, http.StatusOK},
		{Fault{HangMS: 30}, http.StatusOK}, // hang_ms alone implies hang
		{Fault{HangMS: 30, Status: 503}, http.StatusServiceUnavailable},
	}
	for _, tt := range tests {
		s, ts := newSim(t, Config{})
		s.SetFault(tt.fault)
		start := time.Now()
		resp, b := post(t, ts, "/v1/chat/completions", chatBody("wait"))
		if d := time.Since(start); d < hang || resp.StatusCode != tt.status {
			t.Errorf("%+v: status %d after %v, want %d after at least %v: %s", tt.fault, resp.StatusCode, d, tt.status, hang, b)
		}
	}
}

func TestFaultEmpty(t *testing.T) {
	s, ts := newSim(t, Config{})
	s.SetFault(Fault{Empty: true})

	resp, b := post(t, ts, "/v1/chat/completions", chatBody("nothing"))
	cc := decode[chatCompletion](t, b)
	if resp.StatusCode != http.StatusOK || len(cc.Choices) != 1 || cc.Choices[0].Message.Content != "" ||
		cc.Choices[0].FinishReason != "stop" || cc.Usage.CompletionTokens != 0 || !strings.Contains(string(b), `"content":""`) {
		t.Errorf("empty non-stream: %d %s", resp.StatusCode, b)
	}

	_, res := stream(t, ts, "/v1/chat/completions", with(chatBody("nothing"), "stream", true))
	got := assemble(t, res, "chat.completion.chunk", true, false)
	if !res.done || res.err != nil || len(res.data) != 2 || got.contents != 0 || got.finish[0] != "stop" {
		t.Errorf("empty stream: %d events, %d content chunks, finish %q, done %v, err %v", len(res.data), got.contents, got.finish[0], res.done, res.err)
	}

	v, list := getEmbeddings(t, ts, "nothing", "float")
	if len(v) != 0 || list.Object != "list" {
		t.Errorf("empty embeddings: %d vectors", len(v))
	}
}

func TestFaultCutStream(t *testing.T) {
	for _, tt := range []struct {
		cutAfter, n, wantContents int
	}{
		{cutAfter: 3, n: 1, wantContents: 3},
		{cutAfter: 3, n: 2, wantContents: 3}, // counted over all choices
		{cutAfter: 100, n: 1, wantContents: 10},
	} {
		t.Run(fmt.Sprint(tt), func(t *testing.T) {
			s, ts := newSim(t, Config{AnswerTokens: 10})
			s.SetFault(Fault{CutAfter: tt.cutAfter})
			resp, res := stream(t, ts, "/v1/chat/completions", with(chatBody("cut"), "stream", true, "n", tt.n,
				"stream_options", map[string]any{"include_usage": true}))
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d", resp.StatusCode)
			}
			got := assemble(t, res, "chat.completion.chunk", true, true)
			if res.done || res.err == nil || got.contents != tt.wantContents || len(got.finish) != 0 || got.usage != nil {
				t.Errorf("cut stream: done %v, err %v, %d content chunks (want %d), finish %v", res.done, res.err, got.contents, tt.wantContents, got.finish)
			}
			if !errors.Is(res.err, io.ErrUnexpectedEOF) {
				t.Errorf("read error %v, want unexpected EOF (a broken chunked body)", res.err)
			}
		})
	}

	s, ts := newSim(t, Config{})
	s.SetFault(Fault{CutAfter: 1})
	for _, p := range []struct{ path, body string }{
		{"/v1/chat/completions", string(mustJSON(t, chatBody("cut")))},
		{"/v1/embeddings", `{"model":"e","input":"cut"}`},
	} {
		resp, b, err := tryPost(context.Background(), ts, p.path, []byte(p.body))
		if resp == nil || resp.StatusCode != http.StatusOK || !errors.Is(err, io.ErrUnexpectedEOF) || len(b) == 0 {
			t.Errorf("%s cut: response %v, %d bytes, err %v; want 200, some bytes, unexpected EOF", p.path, resp, len(b), err)
		}
	}
}

func TestFaultReset(t *testing.T) {
	s, ts := newSim(t, Config{})
	s.SetFault(Fault{Reset: true})
	for _, p := range faultPaths {
		resp, _, err := tryPost(context.Background(), ts, p.path, mustJSON(t, p.body))
		if err == nil {
			t.Errorf("%s: answered %d despite reset", p.path, resp.StatusCode)
			continue
		}
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("%s: error %v, want connection reset", p.path, err)
		}
	}
	if resp, _ := do(t, ts, http.MethodGet, "/v1/models", nil); resp.StatusCode != http.StatusOK {
		t.Errorf("/v1/models: %d", resp.StatusCode)
	}
	if resp, _ := do(t, ts, http.MethodDelete, "/_sim/faults", nil); resp.StatusCode != http.StatusNoContent {
		t.Errorf("DELETE /_sim/faults: %d", resp.StatusCode)
	}
	if resp, _ := post(t, ts, "/v1/chat/completions", chatBody("after")); resp.StatusCode != http.StatusOK {
		t.Errorf("after clearing: %d", resp.StatusCode)
	}
}

func TestFaultsEndpoint(t *testing.T) {
	s, ts := newSim(t, Config{})
	resp, b := do(t, ts, http.MethodGet, "/_sim/faults", nil)
	if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(b)) != "{}" {
		t.Errorf("no fault: %d %s", resp.StatusCode, b)
	}

	body := `{"status":503,"probability":1,"retry_after":3,"paths":["/v1/chat/completions"]}`
	resp, b = post(t, ts, "/_sim/faults", body)
	want := Fault{Status: 503, Probability: 1, RetryAfter: 3, Paths: []string{"/v1/chat/completions"}}
	if resp.StatusCode != http.StatusOK || !reflect.DeepEqual(decode[Fault](t, b), want) || !reflect.DeepEqual(s.Fault(), want) {
		t.Errorf("POST: %d %s; Fault() = %+v", resp.StatusCode, b, s.Fault())
	}
	if _, b2 := do(t, ts, http.MethodGet, "/_sim/faults", nil); !reflect.DeepEqual(decode[Fault](t, b2), want) {
		t.Errorf("GET after POST: %s", b2)
	}
	if resp, _ := post(t, ts, "/v1/chat/completions", chatBody("x")); resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "3" {
		t.Errorf("fault set over HTTP not applied: %d", resp.StatusCode)
	}

	for _, bad := range []string{
		`{"status":503`,
		`{"stauts":503}`,
		`{"status":"503"}`,
		`{"status":200}`,
		`{"status":503,"probability":1.5}`,
		`{"hang_ms":-1}`,
		`{"cut_after":-2}`,
		`{"retry_after":5}`,
		`{}`,
		`{"status":503,"paths":["/v1/models"]}`,
		`{"status":503,"paths":["/v1/chat/completion"]}`,
	} {
		resp, b := post(t, ts, "/_sim/faults", bad)
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("POST %s: status %d, want 400", bad, resp.StatusCode)
			continue
		}
		checkError(t, resp, b, "invalid_request_error", "", "")
	}
	if !reflect.DeepEqual(s.Fault(), want) {
		t.Errorf("an invalid POST changed the fault to %+v", s.Fault())
	}

	if resp, _ := do(t, ts, http.MethodDelete, "/_sim/faults", nil); resp.StatusCode != http.StatusNoContent {
		t.Errorf("DELETE: %d", resp.StatusCode)
	}
	if resp, _ := post(t, ts, "/v1/chat/completions", chatBody("x")); resp.StatusCode != 200 {
		t.Errorf("after DELETE: %d", resp.StatusCode)
	}
	if !reflect.DeepEqual(s.Fault(), Fault{}) {
		t.Errorf("after DELETE: Fault() = %+v", s.Fault())
	}
}
