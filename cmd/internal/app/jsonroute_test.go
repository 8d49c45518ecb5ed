package app

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgecache/edgecache/cmd/internal/llmsim"
)

// TestJSONRouteTenantsAndStreams: a json route takes the tenant from
// x-api-key as well, and relays a streamed answer event by event, never
// buffered and never stored.
func TestJSONRouteTenantsAndStreams(t *testing.T) {
	sim, err := llmsim.Start(context.Background(), "127.0.0.1:0", llmsim.Config{AnswerTokens: sdkAnswerWords, TokensPerSec: 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	cfg := filepath.Join(t.TempDir(), "edgecache.yaml")
	if err := os.WriteFile(cfg, []byte("routes:\n  - name: anything\n    path: /v1/chat/completions\n    api: json\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	data, _ := startEdgecache(t, sim.URL(), "--config", cfg)
	post := func(body, key string) *http.Response {
		req, _ := http.NewRequest(http.MethodPost, data+pathChat, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("x-api-key", key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	body := `{"model":"sim-1","messages":[{"role":"user","content":"` + uniquePrompt(t, "json") + `"}]}`
	for i, c := range []struct {
		key, want string
	}{{"sk-ant-a", "fwd=uri-miss"}, {"sk-ant-a", "hit"}, {"sk-ant-b", "fwd=uri-miss"}} {
		resp := post(body, c.key)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if cs := resp.Header.Get("Cache-Status"); !strings.Contains(cs, c.want) {
			t.Errorf("request %d (%s): Cache-Status %q, want %s", i, c.key, cs, c.want)
		}
	}

	stream := strings.TrimSuffix(body, "}") + `,"stream":true}`
	for i := range 2 {
		start := time.Now()
		resp := post(stream, "sk-ant-a")
		br := bufio.NewReader(resp.Body)
		first, err := br.ReadString('\n')
		ttfb := time.Since(start)
		rest, _ := io.ReadAll(br)
		total := time.Since(start)
		resp.Body.Close()
		if err != nil || !strings.HasPrefix(first, "data: ") || !strings.Contains(string(rest), "data: [DONE]") {
			t.Fatalf("stream %d: %q %v %q", i, first, err, rest)
		}
		if resp.Header.Get("Content-Type") != "text/event-stream" || !strings.Contains(resp.Header.Get("Cache-Status"), "detail=stream") {
			t.Errorf("stream %d: %q %q", i, resp.Header.Get("Content-Type"), resp.Header.Get("Cache-Status"))
		}
		if ttfb > total/2 {
			t.Errorf("stream %d: first event after %v of %v: buffered, not relayed", i, ttfb, total)
		}
	}
	if got := sim.Server.Stats()[pathChat]; got != 4 {
		t.Errorf("%d upstream calls, want 4 (two misses, two streams never stored)", got)
	}
}

// TestModelsRetrieve: GET /v1/models/{id} reaches the upstream with its id.
func TestModelsRetrieve(t *testing.T) {
	e := newSDKEnv(t)
	m, err := e.client.Models.Get(e.ctx, "sim-1")
	if err != nil {
		t.Fatal(err)
	}
	if m.ID != "sim-1" || m.Object != "model" {
		t.Errorf("retrieved %s", m.RawJSON())
	}
	if _, err := e.client.Models.Get(e.ctx, "no-such-model"); err == nil {
		t.Error("an unknown model was found")
	}
}
