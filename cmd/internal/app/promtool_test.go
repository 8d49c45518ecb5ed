package app

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgecache/edgecache/cache/cachetest"
	"github.com/edgecache/edgecache/cmd/internal/llmsim"
)

// checkMetricsWithPromtool runs `promtool check metrics` on an exposition
// when promtool is installed (Debian: apt-get install prometheus; make deps
// installs it) and fails on any complaint; it says so and skips the check
// otherwise.
func checkMetricsWithPromtool(t *testing.T, exposition []byte) {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		t.Log("promtool not installed: /metrics not checked with promtool check metrics (apt-get install prometheus)")
		return
	}
	cmd := exec.Command(path, "check", "metrics")
	cmd.Stdin = bytes.NewReader(exposition)
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

// TestMetricsWithRedisPassPromtool: with Redis configured, /metrics carries
// go-redis' pool counts but none of its millisecond or nanosecond series,
// and promtool check metrics finds nothing to complain about.
func TestMetricsWithRedisPassPromtool(t *testing.T) {
	r := cachetest.StartRedis(t)
	sim, err := llmsim.Start(context.Background(), "127.0.0.1:0", llmsim.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	cfgPath := filepath.Join(t.TempDir(), "edgecache.yaml")
	if err := os.WriteFile(cfgPath, []byte(fmt.Sprintf("redis: {addrs: [%q]}\n", r.Addr())), 0o600); err != nil {
		t.Fatal(err)
	}
	data, admin := startEdgecache(t, sim.URL(), "--config", cfgPath)
	for range 2 {
		resp, err := http.Post(data+"/v1/chat/completions", "application/json", strings.NewReader(`{"model":"m","messages":[{"role":"user","content":"redis metrics"}]}`))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	_, b := get(t, admin+"/metrics", "")
	if !bytes.Contains(b, []byte("db_client_connections_")) || !bytes.Contains(b, []byte("edgecache_redis_up 1")) {
		t.Errorf("/metrics lacks the Redis series:\n%s", b)
	}
	for _, unit := range []string{"_milliseconds", "_nanoseconds", "use_time", "create_time", "waits_duration"} {
		if bytes.Contains(b, []byte(unit)) {
			t.Errorf("/metrics has a %s series (not base units)", unit)
		}
	}
	checkMetricsWithPromtool(t, b)
}
