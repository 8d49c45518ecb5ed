package app

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/edgecache/edgecache/cmd/internal/llmsim"
)

// TestSharedRouteEdgeKey runs edgecache as the program does with a shared
// route: without the edge's own upstream key it refuses to start and says
// why; with it, a tenant's request reaches the upstream (a real llmsim)
// with the edge's key and only the allowlisted header, and another tenant
// gets the answer from the cache.
func TestSharedRouteEdgeKey(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "edgecache.yaml")
	doc := "routes:\n" +
		"  - {name: faq, path: /faq/chat, api: chat, upstream_path: /v1/chat/completions, cache: {shared: true, forward_headers: [X-Persona]}}\n"
	if err := os.WriteFile(cfg, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("EDGECACHE_UPSTREAM_API_KEY", "")
	err := Run(context.Background(), []string{"--config", cfg, "--upstream", "http://127.0.0.1:9", "--listen", "127.0.0.1:0",
		"--admin-listen", "127.0.0.1:0", "--journal-dir", t.TempDir()}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), `route "faq": cache.shared needs the edge's own upstream key`) {
		t.Fatalf("start without the edge key: %v, want a refusal naming the route", err)
	}

	sim := llmsim.New(llmsim.Config{})
	var mu sync.Mutex
	var seen []http.Header
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Clone())
		mu.Unlock()
		sim.ServeHTTP(w, r)
	}))
	defer up.Close()
	t.Setenv("EDGECACHE_UPSTREAM_API_KEY", "sk-edge")
	data, _ := startEdgecache(t, up.URL, "--config", cfg)
	ask := func(hdr ...string) string {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, data+"/faq/chat", strings.NewReader(`{"model":"m","messages":[{"role":"user","content":"Opening hours?"}]}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		return resp.Header.Get("Cache-Status")
	}
	ask("Authorization", "Bearer sk-tenant-a", "X-Persona", "pirate", "OpenAI-Project", "proj-a", "X-Secret-Sauce", "1")
	waitUntil(t, func() bool {
		return strings.Contains(ask("Authorization", "Bearer sk-tenant-b", "X-Persona", "pirate"), "hit")
	})
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 1 {
		t.Fatalf("upstream calls = %d, want 1", len(seen))
	}
	h := seen[0]
	if h.Get("Authorization") != "Bearer sk-edge" || h.Get("X-Persona") != "pirate" {
		t.Errorf("upstream header %v: want the edge's key and the persona", h)
	}
	for _, name := range []string{"Openai-Project", "X-Secret-Sauce", "X-Forwarded-For"} {
		if _, ok := h[name]; ok {
			t.Errorf("upstream got %s on a shared route: %v", name, h)
		}
	}
}
