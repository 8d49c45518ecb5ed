package app

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/edgecache/edgecache/cmd/internal/llmsim"
)

// TestSecretFilesServe: the admin tokens, the tenant secret and the
// upstream key come from files named by *_FILE variables (mounted
// Secrets), and the running service uses them.
func TestSecretFilesServe(t *testing.T) {
	sim, err := llmsim.Start(context.Background(), "127.0.0.1:0", llmsim.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	u, _ := url.Parse(sim.URL())
	proxy := httputil.NewSingleHostReverseProxy(u)
	var mu sync.Mutex
	var auths []string
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		auths = append(auths, r.Header.Get("Authorization"))
		mu.Unlock()
		proxy.ServeHTTP(w, r)
	}))
	defer up.Close()

	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	t.Setenv("EDGECACHE_ADMIN_TOKENS_FILE", write("admin-tokens", "ops:ops-token-from-a-file-0123\n"))
	t.Setenv("EDGECACHE_TENANT_SECRET_FILE", write("tenant-secret", strings.Repeat("ab", 32)+"\n"))
	t.Setenv("EDGECACHE_UPSTREAM_API_KEY_FILE", write("upstream-api-key", "sk-edge-from-file\n"))
	data, admin := startEdgecache(t, up.URL, "--admin-listen", "0.0.0.0:0")
	admin = strings.Replace(admin, "0.0.0.0", "127.0.0.1", 1)
	admin = strings.Replace(admin, "[::]", "127.0.0.1", 1)

	if code, _ := get(t, admin+"/admin/upstreams", ""); code != http.StatusUnauthorized {
		t.Errorf("no token: %d, want 401", code)
	}
	if code, b := get(t, admin+"/admin/upstreams", "ops-token-from-a-file-0123"); code != 200 {
		t.Errorf("token from EDGECACHE_ADMIN_TOKENS_FILE: %d %s", code, b)
	}
	code, b := get(t, admin+"/readyz", "")
	var st struct {
		TenantSecret string `json:"tenant_secret"`
	}
	if code != 200 || json.Unmarshal(b, &st) != nil || st.TenantSecret != "configured" {
		t.Errorf("/readyz: %d %s, want tenant_secret configured", code, b)
	}
	postKey(t, data, "sk-client", `{"model":"m","messages":[{"role":"user","content":"whose key?"}]}`)
	mu.Lock()
	defer mu.Unlock()
	if len(auths) != 1 || auths[0] != "Bearer sk-edge-from-file" {
		t.Errorf("upstream saw Authorization %q, want the key from EDGECACHE_UPSTREAM_API_KEY_FILE", auths)
	}
}
