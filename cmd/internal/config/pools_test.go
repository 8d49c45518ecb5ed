package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func loadPoolDoc(t *testing.T, doc string, env map[string]string) (Config, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	return Load(path, func(k string) string { return env[k] })
}

// TestUpstreamPools: the contract keys of issue 17 load, with defaults and
// each target's api_key from the environment or a file.
func TestUpstreamPools(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(keyFile, []byte("file-key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := loadPoolDoc(t, `upstreams:
  - name: fleet
    balance: least_latency
    health_check: {path: /v1/models, interval: 2s, timeout: 1s, unhealthy: 2, healthy: 2}
    targets:
      - {url: "http://10.0.0.1:8000", weight: 1}
      - {url: "http://10.0.0.2:8000", weight: 3, api_key_file: `+keyFile+`}
  - name: other-pool
    targets:
      - {name: q, url: "https://api.example.com/v1", models: {qwen-max: qwen-max-latest}}
models:
  - {match: "deepseek-*", upstream: fleet, fallback: [other-pool]}
  - {match: qwen-max, upstream: other-pool}
`, map[string]string{"EDGECACHE_POOL_FLEET_0_API_KEY": "env-key"})
	if err != nil {
		t.Fatal(err)
	}
	f := c.Upstreams[0]
	if f.Balance != "least_latency" || f.HealthCheck.Interval.D() != 2*time.Second || f.HealthCheck.Timeout.D() != time.Second ||
		f.HealthCheck.Unhealthy != 2 || f.HealthCheck.Healthy != 2 || f.SlowStart.D() != 30*time.Second {
		t.Errorf("fleet: %+v", f)
	}
	if f.Targets[0].Name != "fleet-0" || f.Targets[0].APIKey != "env-key" || f.Targets[1].APIKey != "file-key" || f.Targets[1].Weight != 3 {
		t.Errorf("fleet targets: %+v", f.Targets)
	}
	if o := c.Upstreams[1]; o.Balance != "least_latency" || o.Targets[0].Name != "q" || o.SlowStart != 0 {
		t.Errorf("other-pool: %+v", o)
	}
	if m := c.Models[0]; m.Match != "deepseek-*" || m.Upstream != "fleet" || len(m.Fallback) != 1 || m.Fallback[0] != "other-pool" {
		t.Errorf("models: %+v", c.Models)
	}
}

func TestUpstreamPoolErrors(t *testing.T) {
	for name, doc := range map[string]string{
		"no name":        "upstreams: [{targets: [{url: \"http://a\"}]}]\n",
		"bad balance":    "upstreams: [{name: p, balance: random, targets: [{url: \"http://a\"}]}]\n",
		"no targets":     "upstreams: [{name: p}]\n",
		"bad url":        "upstreams: [{name: p, targets: [{url: \"ftp://a\"}]}]\n",
		"dup pool":       "upstreams: [{name: p, targets: [{url: \"http://a\"}]}, {name: p, targets: [{url: \"http://b\"}]}]\n",
		"negative w":     "upstreams: [{name: p, targets: [{url: \"http://a\", weight: -1}]}]\n",
		"timeout > int":  "upstreams: [{name: p, health_check: {interval: 1s, timeout: 2s}, targets: [{url: \"http://a\"}]}]\n",
		"unknown key":    "upstreams: [{name: p, targets: [{url: \"http://a\", wieght: 2}]}]\n",
		"unknown pool":   "upstreams: [{name: p, targets: [{url: \"http://a\"}]}]\nmodels: [{match: m, upstream: q}]\n",
		"unknown fb":     "upstreams: [{name: p, targets: [{url: \"http://a\"}]}]\nmodels: [{match: m, upstream: p, fallback: [q]}]\n",
		"bad glob":       "upstreams: [{name: p, targets: [{url: \"http://a\"}]}]\nmodels: [{match: \"[\", upstream: p}]\n",
		"default no url": "upstreams: [{name: p, targets: [{url: \"http://a\"}]}]\nmodels: [{match: m, upstream: default}]\n",
	} {
		if _, err := loadPoolDoc(t, doc, nil); err == nil {
			t.Errorf("%s: Load succeeded, want an error", name)
		} else if !strings.Contains(err.Error(), "c.yaml") {
			t.Errorf("%s: error %q does not name the file", name, err)
		}
	}
	// The upstream + backups are the pool "default".
	if _, err := loadPoolDoc(t, "upstream: {url: \"http://u\"}\nupstreams: [{name: p, targets: [{url: \"http://a\"}]}]\nmodels: [{match: m, upstream: p, fallback: [default]}]\n", nil); err != nil {
		t.Errorf("fallback to default: %v", err)
	}
}

// TestExamplePools: the commented upstreams: and models: example of
// deploy/config.example.yaml loads once uncommented.
func TestExamplePools(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "..", "deploy", "config.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc strings.Builder
	doc.WriteString("upstream: {url: \"http://127.0.0.1:8000\"}\n")
	in := ""
	for _, l := range strings.Split(string(b), "\n") {
		switch {
		case l == "upstreams: []" || l == "models: []":
			in = strings.TrimSuffix(l, " []")
			doc.WriteString(in + "\n")
		case in != "" && strings.HasPrefix(l, "#  "):
			doc.WriteString(strings.TrimPrefix(l, "#") + "\n")
		default:
			in = ""
		}
	}
	key := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(key, []byte("sk-pool"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := loadPoolDoc(t, strings.Replace(doc.String(), "/run/secrets/deepseek-key", key, 1), nil)
	if err != nil {
		t.Fatalf("%v\n%s", err, doc.String())
	}
	if len(c.Upstreams) != 2 || len(c.Upstreams[0].Targets) != 3 || c.Upstreams[0].Targets[1].Weight != 2 ||
		c.Upstreams[0].HealthCheck.Interval.D() != 2*time.Second || len(c.Models) != 2 || c.Models[1].Fallback[0] != "default" || c.Upstreams[0].Targets[2].APIKey != "sk-pool" {
		t.Errorf("example pools: %+v %+v", c.Upstreams, c.Models)
	}
}

func TestRouteUpstreamUnknown(t *testing.T) {
	if _, err := loadPoolDoc(t, "upstreams: [{name: p, targets: [{url: \"http://a\"}]}]\nroutes: [{name: r, path: /v1/chat/completions, upstream: q}]\n", nil); err == nil || !strings.Contains(err.Error(), `no upstream pool named "q"`) {
		t.Errorf("route naming an unknown pool: %v", err)
	}
}
