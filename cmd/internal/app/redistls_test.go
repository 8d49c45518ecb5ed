package app

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgecache/edgecache/cache/cachetest"
	"github.com/edgecache/edgecache/cmd/internal/llmsim"
)

// TestRedisOverTLS: edgecache configured with redis.tls reaches a Redis
// that is served over TLS only, end to end: an answer one instance stores
// is an L2 hit at another (a restart), and /readyz reports Redis up. The
// same Redis without tls in the configuration is down for edgecache, and
// every request is still answered.
func TestRedisOverTLS(t *testing.T) {
	r := cachetest.StartRedisTLS(t)
	sim, err := llmsim.Start(context.Background(), "127.0.0.1:0", llmsim.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	writeConfig := func(doc string) string {
		path := filepath.Join(t.TempDir(), "edgecache.yaml")
		if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	withTLS := writeConfig(fmt.Sprintf("redis: {addrs: [%q], tls: {enabled: true, ca_file: %q}}\n", r.TLSAddr, r.CAFile))
	post := func(base, prompt string) (int, string) {
		t.Helper()
		resp, err := http.Post(base+"/v1/chat/completions", "application/json",
			strings.NewReader(`{"model":"m","messages":[{"role":"user","content":"`+prompt+`"}]}`))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, resp.Header.Get("Cache-Status")
	}
	readyRedis := func(admin string) string {
		t.Helper()
		code, b := get(t, admin+"/readyz", "")
		var st struct{ Redis string }
		if code != 200 || json.Unmarshal(b, &st) != nil {
			t.Fatalf("/readyz: %d %s", code, b)
		}
		return st.Redis
	}

	first, firstAdmin := startEdgecache(t, sim.URL(), "--config", withTLS)
	if code, cs := post(first, "stored over tls"); code != 200 || !strings.Contains(cs, "stored") {
		t.Fatalf("first request: %d %q, want a stored miss", code, cs)
	}
	if st := readyRedis(firstAdmin); st != "up" {
		t.Errorf("/readyz redis %q with TLS configured, want up", st)
	}
	second, _ := startEdgecache(t, sim.URL(), "--config", withTLS)
	waitUntil(t, func() bool { // the store is written behind the answer
		code, cs := post(second, "stored over tls")
		if code != 200 {
			t.Fatalf("second instance: %d %q", code, cs)
		}
		return strings.HasPrefix(cs, "edgecache; hit; detail=l2")
	})

	plain := writeConfig(fmt.Sprintf("redis: {addrs: [%q]}\n", r.TLSAddr))
	third, thirdAdmin := startEdgecache(t, sim.URL(), "--config", plain)
	for i := range 8 { // new prompts: each is an L2 read and write that fails
		if code, cs := post(third, fmt.Sprint("plaintext ", i)); code != 200 || strings.Contains(cs, "detail=l2") {
			t.Errorf("plaintext to the TLS port: %d %q, want an answer without L2", code, cs)
		}
	}
	waitUntil(t, func() bool { return readyRedis(thirdAdmin) != "up" })
}
