package app

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/edgecache/edgecache/cache/cachetest"
	"github.com/edgecache/edgecache/cmd/internal/llmsim"
)

func postStatus(t *testing.T, url, body string) string {
	t.Helper()
	resp, err := http.Post(url+"/v1/chat/completions", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.Header.Get("Cache-Status")
}

// A route toggled on one replica changes behaviour on a second replica
// sharing Redis within 1 s; the audit shows the change; a restart keeps it.
func TestRouteToggleAcrossReplicas(t *testing.T) {
	rds := cachetest.StartRedis(t)
	sim, err := llmsim.Start(context.Background(), "127.0.0.1:0", llmsim.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	t.Setenv("EDGECACHE_ADMIN_TOKENS", "oncall-alice:alice-token-0123456789")
	_, admin1 := startEdgecache(t, sim.URL(), "--redis", rds.Addr())
	data2, _ := startEdgecache(t, sim.URL(), "--redis", rds.Addr())
	body := `{"model":"m","messages":[{"role":"user","content":"toggle me"}]}`
	postStatus(t, data2, body)
	waitUntil(t, func() bool { return strings.Contains(postStatus(t, data2, body), "hit") })

	var out, errOut bytes.Buffer
	start := time.Now()
	if err := Run(context.Background(), []string{"routes", "--admin", admin1, "--token", "alice-token-0123456789",
		"set", "chat", "mode=off"}, &out, &errOut); err != nil {
		t.Fatalf("routes set: %v %s", err, errOut.String())
	}
	if !strings.Contains(out.String(), "off") {
		t.Errorf("routes set printed:\n%s", out.String())
	}
	deadline := start.Add(time.Second)
	for !strings.Contains(postStatus(t, data2, body), "fwd=bypass; detail=off") {
		if time.Now().After(deadline) {
			t.Fatal("replica 2 still caches 1 s after the toggle on replica 1")
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("replica 2 follows after %v", time.Since(start))

	out.Reset()
	if err := Run(context.Background(), []string{"routes", "--admin", admin1, "audit", "chat"}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	var audit struct {
		Audit []struct {
			Who, Route, Action string
			Before, After      struct{ Mode string }
		} `json:"audit"`
	}
	if err := json.Unmarshal(out.Bytes(), &audit); err != nil || len(audit.Audit) != 1 {
		t.Fatalf("audit: %v %s", err, out.String())
	}
	if a := audit.Audit[0]; a.Who != "oncall-alice" || a.Before.Mode != "exact" || a.After.Mode != "off" {
		t.Errorf("audit record %+v", a)
	}
	// A restarted replica starts with the region's policy.
	data3, admin3 := startEdgecache(t, sim.URL(), "--redis", rds.Addr())
	if cs := postStatus(t, data3, body); !strings.Contains(cs, "detail=off") {
		t.Errorf("restarted replica: %q, want the toggled policy", cs)
	}
	// Bad changes are refused with a clear 400.
	code, b := patch(t, admin3+"/admin/routes/chat", `{"mode":"fuzzy"}`)
	if code != 400 || !bytes.Contains(b, []byte("mode")) {
		t.Errorf("bad patch: %d %s", code, b)
	}
	if code, _ := patch(t, admin3+"/admin/routes/nope", `{"mode":"off"}`); code != 404 {
		t.Errorf("unknown route: %d", code)
	}
}

func patch(t *testing.T, url, body string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPatch, url, strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// Without Redis the change persists in the local file across a restart.
func TestRoutePolicyPersistsLocally(t *testing.T) {
	sim, err := llmsim.Start(context.Background(), "127.0.0.1:0", llmsim.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	t.Setenv("EDGECACHE_POLICY_FILE", t.TempDir()+"/routes.json")
	_, admin := startEdgecache(t, sim.URL())
	if code, b := patch(t, admin+"/admin/routes/chat", `{"ttl":"5m","templates":false}`); code != 200 {
		t.Fatalf("patch: %d %s", code, b)
	}
	_, admin2 := startEdgecache(t, sim.URL())
	code, b := get(t, admin2+"/admin/routes/chat", "")
	var v struct {
		TTL        string `json:"ttl"`
		Templates  bool   `json:"templates"`
		Overridden bool   `json:"overridden"`
		UpdatedBy  string `json:"updated_by"`
	}
	if code != 200 || json.Unmarshal(b, &v) != nil || v.TTL != "5m0s" || v.Templates || !v.Overridden || v.UpdatedBy != "local" {
		t.Errorf("after restart: %d %s", code, b)
	}
}

func postKey(t *testing.T, url, key, body string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.Header.Get("Cache-Status")
}

func TestPurgeTenantNamespaceAndRoute(t *testing.T) {
	sim, err := llmsim.Start(context.Background(), "127.0.0.1:0", llmsim.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	data, admin := startEdgecache(t, sim.URL())
	body := `{"model":"m","messages":[{"role":"user","content":"purge me"}]}`
	for _, k := range []string{"sk-tenant-a", "sk-tenant-b"} {
		postKey(t, data, k, body)
		waitUntil(t, func() bool { return strings.Contains(postKey(t, data, k, body), "hit") })
	}
	post := func(path, b string) (int, []byte) {
		resp, err := http.Post(admin+path, "application/json", strings.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, out
	}
	if code, b := post("/admin/cache/purge", `{"api_key":"sk-tenant-a"}`); code != 200 || !bytes.Contains(b, []byte(`"generation":1`)) {
		t.Fatalf("purge namespace: %d %s", code, b)
	}
	if cs := postKey(t, data, "sk-tenant-a", body); !strings.Contains(cs, "fwd=uri-miss") {
		t.Errorf("tenant a after its purge: %q, want a miss", cs)
	}
	if cs := postKey(t, data, "sk-tenant-b", body); !strings.Contains(cs, "hit") {
		t.Errorf("tenant b after a's purge: %q, want a hit", cs)
	}
	if code, b := post("/admin/cache/purge", `{"route":"chat"}`); code != 200 {
		t.Fatalf("purge route: %d %s", code, b)
	}
	if cs := postKey(t, data, "sk-tenant-b", body); !strings.Contains(cs, "fwd=uri-miss") {
		t.Errorf("tenant b after the route purge: %q, want a miss", cs)
	}
	if code, _ := post("/admin/cache/purge", `{}`); code != 400 {
		t.Errorf("empty purge: %d, want 400", code)
	}
}
