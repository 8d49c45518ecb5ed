package app

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgecache/edgecache/cache/semantic/semantictest"
	"github.com/edgecache/edgecache/cmd/internal/llmsim"
)

// startupWait bounds how long the background retry may take to bring the
// semantic tier up once its dependency answers (first retry after 1 s).
const startupWait = 45 * time.Second

// TestSemanticDependencyDownAtStartup: a remote embedder or a Qdrant that
// is down when edgecache starts does not stop it from starting. It serves
// exact-only (misses and exact hits, all 200), /readyz says why semantic
// matching is off, and once the dependency comes up the background retry
// builds the index and paraphrases hit.
func TestSemanticDependencyDownAtStartup(t *testing.T) {
	for _, late := range []string{"embedder", "qdrant"} {
		t.Run(late, func(t *testing.T) {
			t.Setenv("EDGECACHE_QDRANT_ADDR", "")
			model := startOutageSim(t, llmsim.Config{})
			embedAddr, qdrantAddr := freeAddr(t), freeAddr(t)
			var embedder *llmsim.Running
			startEmbedder := func() {
				var err error
				if embedder, err = llmsim.Start(context.Background(), embedAddr, llmsim.Config{EmbeddingFold: true}); err != nil {
					t.Fatalf("llmsim.Start(%s): %v", embedAddr, err)
				}
				t.Cleanup(func() { _ = embedder.Close() })
			}
			index := "embedded"
			if late == "qdrant" {
				index = fmt.Sprintf("qdrant\n  qdrant: {addr: %q}", qdrantAddr)
				startEmbedder() // only Qdrant is late
			}
			cfg := filepath.Join(t.TempDir(), "edgecache.yaml")
			doc := fmt.Sprintf("semantic:\n  embedder: remote\n  remote: {url: %q, model: m}\n  index: %s\nroutes:\n  - {name: chat, path: /v1/chat/completions, cache: {mode: semantic}}\n",
				"http://"+embedAddr+"/v1", index)
			if err := os.WriteFile(cfg, []byte(doc), 0o600); err != nil {
				t.Fatal(err)
			}
			data, admin := startEdgecache(t, model.URL(), "--config", cfg)

			state := func() string {
				t.Helper()
				code, b := get(t, admin+"/readyz", "")
				var st struct {
					State string `json:"vector_index_state"`
				}
				if code != 200 || json.Unmarshal(b, &st) != nil {
					t.Fatalf("/readyz: %d %s", code, b)
				}
				return st.State
			}
			if s := state(); !strings.HasPrefix(s, "unavailable") {
				t.Errorf("/readyz vector_index_state %q with the %s down, want unavailable and why", s, late)
			}
			if cs := chatPost(t, data, "What are your opening hours?"); !strings.Contains(cs, "stored") {
				t.Errorf("first request: %q, want a stored miss", cs)
			}
			if cs := chatPost(t, data, "What are your opening hours?"); !strings.HasPrefix(cs, "edgecache; hit; detail=l1") {
				t.Errorf("exact repeat: %q, want an L1 hit", cs)
			}
			if cs := chatPost(t, data, "WHAT ARE YOUR OPENING HOURS?"); strings.Contains(cs, "semantic") {
				t.Errorf("a variant with the %s down: %q, want no semantic hit", late, cs)
			}

			if late == "embedder" {
				startEmbedder()
			} else {
				semantictest.StartQdrantStandInAt(t, qdrantAddr)
			}
			deadline := time.Now().Add(startupWait)
			for state() != "up" {
				if time.Now().After(deadline) {
					t.Fatalf("vector_index_state %q %v after the %s came up, want up", state(), startupWait, late)
				}
				time.Sleep(50 * time.Millisecond)
			}
			// A prompt stored now is indexed; its variants hit.
			chatPost(t, data, "Where is your nearest store?")
			for i := 0; ; i++ {
				cs := chatPost(t, data, fmt.Sprintf("WHERE is your nearest STORE? %s", strings.Repeat(" ", i%5)))
				if strings.Contains(cs, "detail=semantic") {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("no semantic hit once the %s is up: last %q", late, cs)
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
}

// freeAddr returns a loopback address nothing listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// chatPost sends a chat completion for prompt, checks it is answered 200,
// and returns its Cache-Status.
func chatPost(t *testing.T, base, prompt string) string {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"model": "m", "messages": []map[string]string{{"role": "user", "content": prompt}}})
	resp, err := http.Post(base+"/v1/chat/completions", "application/json", strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("%q: %d %s", prompt, resp.StatusCode, b)
	}
	return resp.Header.Get("Cache-Status")
}
