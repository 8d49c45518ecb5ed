package llmsim

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestStats(t *testing.T) {
	s, ts := newSim(t, Config{})
	for range 3 {
		post(t, ts, "/v1/chat/completions", chatBody("count me"))
	}
	post(t, ts, "/v1/chat/completions", `{"bad json`)
	do(t, ts, http.MethodGet, "/v1/chat/completions", nil)
	post(t, ts, "/v1/embeddings", map[string]any{"model": "e", "input": []string{"x", "y"}})
	s.SetFault(Fault{Status: 500, Paths: []string{"/v1/embeddings"}})
	post(t, ts, "/v1/embeddings", map[string]any{"model": "e", "input": "x"})
	s.ClearFault()
	do(t, ts, http.MethodGet, "/v1/models", nil)
	post(t, ts, "/v1/unknown", chatBody("x"))
	do(t, ts, http.MethodGet, "/_sim/config", nil)

	want := map[string]int64{"/v1/chat/completions": 5, "/v1/embeddings": 2, "/v1/models": 1, StatEmbeddedInputs: 2}
	if got := withoutBusy(s.Stats()); !maps.Equal(got, want) {
		t.Errorf("Stats() = %v, want %v", got, want)
	}
	resp, b := do(t, ts, http.MethodGet, "/_sim/stats", nil)
	if got := withoutBusy(decode[map[string]int64](t, b)); resp.StatusCode != http.StatusOK || !maps.Equal(got, want) {
		t.Errorf("GET /_sim/stats = %d %s, want %v", resp.StatusCode, b, want)
	}

	if resp, _ := do(t, ts, http.MethodDelete, "/_sim/stats", nil); resp.StatusCode != http.StatusNoContent {
		t.Errorf("DELETE: %d", resp.StatusCode)
	}
	if _, b := do(t, ts, http.MethodGet, "/_sim/stats", nil); strings.TrimSpace(string(b)) != "{}" {
		t.Errorf("after reset: %s", b)
	}
	post(t, ts, "/v1/completions", map[string]any{"model": "m", "prompt": "p"})
	if got := withoutBusy(s.Stats()); !maps.Equal(got, map[string]int64{"/v1/completions": 1}) {
		t.Errorf("after reset and one request: %v", got)
	}
}

func TestConfigEndpoint(t *testing.T) {
	s, ts := newSim(t, Config{TTFT: 5 * time.Millisecond, MaxConcurrency: 9})
	resp, b := do(t, ts, http.MethodGet, "/_sim/config", nil)
	want := `{"ttft_ms":5,"tokens_per_sec":0,"answer_tokens":24,"max_concurrency":9,"embedding_dims":256}`
	if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(b)) != want {
		t.Errorf("GET: %d %s, want %s", resp.StatusCode, b, want)
	}

	resp, b = do(t, ts, http.MethodPut, "/_sim/config", `{"answer_tokens":4,"tokens_per_sec":50.5,"ttft_ms":0.5}`)
	want = `{"ttft_ms":0.5,"tokens_per_sec":50.5,"answer_tokens":4,"max_concurrency":9,"embedding_dims":256}`
	if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(b)) != want {
		t.Errorf("PUT: %d %s, want %s", resp.StatusCode, b, want)
	}
	wantCfg := Config{TTFT: 500 * time.Microsecond, TokensPerSec: 50.5, AnswerTokens: 4, MaxConcurrency: 9, EmbeddingDims: 256}
	if got := s.Config(); got != wantCfg {
		t.Errorf("Config() = %+v, want %+v", got, wantCfg)
	}
	_, b = post(t, ts, "/v1/chat/completions", chatBody("short"))
	if words := strings.Fields(decode[chatCompletion](t, b).Choices[0].Message.Content); len(words) != 4 {
		t.Errorf("answer has %d words after answer_tokens 4", len(words))
	}

	for _, bad := range []string{`{"answer_tokens":-1}`, `{"ttft_ms":-3}`, `{"tokens":3}`, `{"max_concurrency":"2"}`, `{`} {
		resp, b := do(t, ts, http.MethodPut, "/_sim/config", bad)
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("PUT %s: %d %s", bad, resp.StatusCode, b)
		}
	}
	if got := s.Config(); got != wantCfg {
		t.Errorf("an invalid PUT changed the config to %+v", got)
	}
}

func TestMaxConcurrency(t *testing.T) {
	// A TTFT far beyond the test holds the admitted requests until their
	// clients cancel.
	s, ts := newSim(t, Config{MaxConcurrency: 2, TTFT: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 2)
	for _, stream := range []bool{false, true} {
		go func() {
			_, _, err := tryPost(ctx, ts, "/v1/chat/completions", mustJSON(t, with(chatBody("hold"), "stream", stream)))
			errc <- err
		}()
	}
	waitFor(t, "two requests in flight", func() bool { return s.InFlight() == 2 })

	for _, p := range faultPaths[:3] {
		resp, b := post(t, ts, p.path, p.body)
		if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "1" {
			t.Errorf("%s over the limit: status %d Retry-After %q: %s", p.path, resp.StatusCode, resp.Header.Get("Retry-After"), b)
		}
		checkError(t, resp, b, "requests", "", "rate_limit_exceeded")
	}
	// Embeddings are not generation requests and pass.
	if resp, b := post(t, ts, "/v1/embeddings", map[string]any{"model": "e", "input": "x"}); resp.StatusCode != http.StatusOK {
		t.Errorf("embeddings under a full limit: %d %s", resp.StatusCode, b)
	}
	if n := s.InFlight(); n != 2 {
		t.Errorf("InFlight() = %d after rejections, want 2", n)
	}

	cancel()
	for range 2 {
		if err := <-errc; err == nil {
			t.Error("a held request completed")
		}
	}
	waitFor(t, "the held requests to leave", func() bool { return s.InFlight() == 0 })
	s.SetConfig(Config{MaxConcurrency: 2})
	if resp, b := post(t, ts, "/v1/chat/completions", chatBody("free")); resp.StatusCode != http.StatusOK {
		t.Errorf("after release: %d %s", resp.StatusCode, b)
	}
}

func TestSetConfigConcurrent(t *testing.T) {
	// Knobs change while requests run; -race checks the access.
	s, ts := newSim(t, Config{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 50 {
			s.SetConfig(Config{AnswerTokens: 1 + i%5})
		}
	}()
	for i := range 20 {
		resp, b := post(t, ts, "/v1/chat/completions", chatBody(fmt.Sprint(i)))
		if n := len(strings.Fields(decode[chatCompletion](t, b).Choices[0].Message.Content)); resp.StatusCode != 200 || n < 1 || n > DefaultAnswerTokens {
			t.Errorf("status %d, %d words", resp.StatusCode, n)
		}
	}
	<-done
}

func TestConfigCacheControl(t *testing.T) {
	s, ts := newSim(t, Config{})
	resp, b := do(t, ts, http.MethodPut, "/_sim/config", `{"cache_control":"private, max-age=5"}`)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), `"cache_control":"private, max-age=5"`) {
		t.Fatalf("PUT: %d %s", resp.StatusCode, b)
	}
	if s.Config().CacheControl != "private, max-age=5" {
		t.Errorf("Config() = %+v", s.Config())
	}
	if resp, _ := post(t, ts, "/v1/chat/completions", chatBody("cc")); resp.Header.Get("Cache-Control") != "private, max-age=5" {
		t.Errorf("answer Cache-Control = %q", resp.Header.Get("Cache-Control"))
	}
	if resp, _ := stream(t, ts, "/v1/chat/completions", with(chatBody("cc"), "stream", true)); resp.Header.Get("Cache-Control") != "private, max-age=5" {
		t.Errorf("stream Cache-Control = %q", resp.Header.Get("Cache-Control"))
	}
	if resp, b := do(t, ts, http.MethodPut, "/_sim/config", `{"cache_control":"a\r\nX-Evil: 1"}`); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("PUT with a line break: %d %s", resp.StatusCode, b)
	}
	do(t, ts, http.MethodPut, "/_sim/config", `{"cache_control":""}`)
	if resp, _ := post(t, ts, "/v1/chat/completions", chatBody("cc")); resp.Header.Get("Cache-Control") != "" {
		t.Errorf("cleared: Cache-Control = %q", resp.Header.Get("Cache-Control"))
	}
	if resp, _ := stream(t, ts, "/v1/chat/completions", with(chatBody("cc"), "stream", true)); resp.Header.Get("Cache-Control") != "no-cache" {
		t.Errorf("cleared stream: Cache-Control = %q", resp.Header.Get("Cache-Control"))
	}
}

// TestBusyMillis: the slot time of admitted generations is summed (two
// answers of 50 ms at once: about 100 ms), refused ones add nothing, and a
// reset clears it.
func TestBusyMillis(t *testing.T) {
	s, ts := newSim(t, Config{TTFT: 50 * time.Millisecond, MaxConcurrency: 2})
	done := make(chan struct{})
	for range 2 {
		go func() { post(t, ts, "/v1/chat/completions", chatBody("busy")); done <- struct{}{} }()
	}
	for s.InFlight() < 2 {
		time.Sleep(time.Millisecond)
	}
	if resp, _ := post(t, ts, "/v1/chat/completions", chatBody("refused")); resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("third: %d, want 429", resp.StatusCode)
	}
	<-done
	<-done
	deadline := time.Now().Add(2 * time.Second) // added as each handler returns, after its answer
	for s.Stats()[StatBusyMillis] < 100 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if b := s.Stats()[StatBusyMillis]; b < 100 || b > 1000 {
		t.Errorf("busy_ms = %d after two 50 ms answers, want about 100", b)
	}
	s.ResetStats()
	if _, ok := s.Stats()[StatBusyMillis]; ok {
		t.Error("busy_ms after a reset")
	}
}

// withoutBusy drops the slot time, which depends on the machine's speed.
func withoutBusy(m map[string]int64) map[string]int64 {
	delete(m, StatBusyMillis)
	return m
}
