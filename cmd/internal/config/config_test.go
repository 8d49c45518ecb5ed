package config

import (
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgecache/edgecache/cache/semantic/verify"
)

// exampleEnv is the environment the example configuration needs: its
// shared route needs the edge's own upstream key.
func exampleEnv(name string) string {
	if name == "EDGECACHE_UPSTREAM_API_KEY" {
		return "sk-edge"
	}
	return ""
}

func TestExampleConfigLoads(t *testing.T) {
	path := filepath.Join("..", "..", "..", "deploy", "config.example.yaml")
	c, err := Load(path, exampleEnv)
	if err != nil {
		t.Fatalf("deploy/config.example.yaml: %v", err)
	}
	byName := map[string]Route{}
	for _, r := range c.Routes {
		byName[r.Name] = r
	}
	if len(c.Routes) < 8 || byName["responses"].API != "responses" || byName["txt2img"].API != "json" || !byName["txt2img"].Cache.Shared {
		t.Errorf("routes = %+v", c.Routes)
	}
	if byName["messages"].API != "anthropic" || byName["messages_count_tokens"].Cache.Mode != ModeOff {
		t.Errorf("Anthropic routes: %+v", c.Routes)
	}
	if p := c.Pricing["deepseek-chat"]; p.InputPerMillion != 0.27 || p.OutputPerMillion != 1.10 || len(c.Pricing) != 2 {
		t.Errorf("pricing = %+v", c.Pricing)
	}
	if byName["embeddings"].Cache.TTL.D() != 24*time.Hour || byName["completions"].Cache.TTL.D() != time.Hour {
		t.Errorf("ttl defaults not applied: %+v", c.Routes)
	}
	if byName["models"].Cache.Mode != ModeOff || byName["completions"].Cache.Mode != ModeExact || byName["support"].Cache.Mode != ModeSemantic {
		t.Errorf("modes: %+v", c.Routes)
	}
	if sp := byName["support"].Cache.Semantic; sp.MaxFalseHitRate != 0.02 ||
		sp.Shadow != (ShadowPolicy{Sample: 0.05, NearMissSample: 0.01, MaxShare: 0.05}) {
		t.Errorf("support route shadow verification: %+v, max_false_hit_rate %v", sp.Shadow, sp.MaxFalseHitRate)
	}
	if c.Degrade.MaxAttempts != 3 || c.Admission.DefaultLane != "free" || c.Semantic.Embedder != "local" || c.Semantic.VerifierModel != "" {
		t.Errorf("degrade/admission/semantic sections: %+v %+v %+v", c.Degrade, c.Admission, c.Semantic)
	}
	if c.Log != (Log{Access: AccessFull, SampleRate: 0.1}) {
		t.Errorf("log section %+v", c.Log)
	}
	var d Config
	d.Default()
	if c.Server != d.Server {
		t.Errorf("server section %+v, want the defaults %+v", c.Server, d.Server)
	}
}

func TestDefaultsWithoutFile(t *testing.T) {
	c, err := Load("", func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != ":8080" || c.AdminListen != "127.0.0.1:9090" || c.MaxBodyBytes != 8<<20 {
		t.Errorf("listen defaults: %+v", c)
	}
	if !slices.ContainsFunc(c.Routes, func(r Route) bool {
		return r.Path == "/v1/responses" && r.API == "responses" && r.Cache.Mode == ModeExact
	}) {
		t.Errorf("no default responses route: %+v", c.Routes)
	}
	if n := len(c.Routes); n != 7 || c.Routes[5].API != "anthropic" || c.Routes[6].Path != "/v1/messages/count_tokens" || c.Routes[6].Cache.Mode != ModeOff {
		t.Errorf("default Anthropic routes: %+v", c.Routes)
	}
	if c.Routes[0].Path != "/v1/chat/completions" || c.Routes[0].Cache.Mode != ModeExact || c.Routes[0].Cache.TTL.D() != time.Hour {
		t.Errorf("default routes: %+v", c.Routes)
	}
	want := Server{ReadHeaderTimeout: Duration(10 * time.Second), ReadTimeout: Duration(30 * time.Second),
		WriteTimeout: Duration(30 * time.Second), IdleTimeout: Duration(120 * time.Second), MaxHeaderBytes: 64 << 10}
	if c.Server != want {
		t.Errorf("server defaults %+v, want %+v", c.Server, want)
	}
}

// TestServerEnv: each server knob has its variable, over the file; a bad
// value is an error naming the variable.
func TestServerEnv(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(path, []byte("server: {read_timeout: 5s, idle_timeout: 7s}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"EDGECACHE_READ_HEADER_TIMEOUT": "2s",
		"EDGECACHE_READ_TIMEOUT":        "3s",
		"EDGECACHE_WRITE_TIMEOUT":       "4s",
		"EDGECACHE_MAX_HEADER_BYTES":    "8192",
	}
	c, err := Load(path, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	want := Server{ReadHeaderTimeout: Duration(2 * time.Second), ReadTimeout: Duration(3 * time.Second),
		WriteTimeout: Duration(4 * time.Second), IdleTimeout: Duration(7 * time.Second), MaxHeaderBytes: 8192}
	if c.Server != want {
		t.Errorf("server %+v, want %+v (env over file, file over defaults)", c.Server, want)
	}
	for name, v := range map[string]string{"EDGECACHE_IDLE_TIMEOUT": "120", "EDGECACHE_MAX_HEADER_BYTES": "64k"} {
		_, err := Load("", func(k string) string { return map[string]string{name: v}[k] })
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s=%s: %v, want an error naming the variable", name, v, err)
		}
	}
}

// TestDegradedFloorDefault: a route that sets no degraded_floor gets the
// calibrated verifier score (verify.DegradedFloor), not a raw 0.5, and
// gets it as written (0.81), not as the float32's float64 expansion.
func TestDegradedFloorDefault(t *testing.T) {
	c, err := Load("", func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range c.Routes {
		if r.Cache.DegradedFloor != 0.81 || float32(r.Cache.DegradedFloor) != verify.DegradedFloor {
			t.Errorf("route %s: degraded_floor %v, want verify.DegradedFloor (%v)", r.Name, r.Cache.DegradedFloor, verify.DegradedFloor)
		}
	}
	ex, err := Load(filepath.Join("..", "..", "..", "deploy", "config.example.yaml"), exampleEnv)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range ex.Routes {
		if r.Cache.DegradedFloor != 0.81 {
			t.Errorf("config.example.yaml route %s: degraded_floor %v, want 0.81", r.Name, r.Cache.DegradedFloor)
		}
	}
}

func TestEnvOverrides(t *testing.T) {
	env := map[string]string{
		"EDGECACHE_LISTEN":           "127.0.0.1:1",
		"EDGECACHE_ADMIN_LISTEN":     "127.0.0.1:2",
		"EDGECACHE_UPSTREAM_URL":     "https://api.example.com/v1",
		"EDGECACHE_UPSTREAM_API_KEY": "sk-up",
		"EDGECACHE_REDIS_ADDR":       "a:1, b:2,c:3",
		"EDGECACHE_REDIS_TLS":        "true",
		"EDGECACHE_REDIS_CLUSTER":    "1",
		"EDGECACHE_VERIFIER_MODEL":   "/etc/edgecache/verifier.json",
		"EDGECACHE_LOCAL_PRECISION":  "float32",
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(path, []byte("listen: \":9\"\nupstream: {url: \"http://file\"}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:1" || c.AdminListen != "127.0.0.1:2" || c.Upstream.URL != "https://api.example.com/v1" ||
		c.Upstream.APIKey != "sk-up" || strings.Join(c.Redis.Addrs, ",") != "a:1,b:2,c:3" ||
		!c.Redis.TLS.Enabled || !c.Redis.Cluster || c.Semantic.VerifierModel != "/etc/edgecache/verifier.json" ||
		c.Semantic.LocalPrecision != "float32" {
		t.Errorf("env not applied: %+v", c)
	}
	if tc, err := c.Redis.TLS.Config(); err != nil || tc == nil || tc.RootCAs != nil || tc.InsecureSkipVerify {
		t.Errorf("EDGECACHE_REDIS_TLS=true: %+v, %v; want TLS verified against the system roots", tc, err)
	}
	for _, v := range []string{"yes", "on", "tls"} {
		_, err := Load("", func(k string) string { return map[string]string{"EDGECACHE_REDIS_TLS": v}[k] })
		if err == nil || !strings.Contains(err.Error(), "EDGECACHE_REDIS_TLS") {
			t.Errorf("EDGECACHE_REDIS_TLS=%s: %v, want an error naming the variable", v, err)
		}
	}
}

func TestRedisTLSConfig(t *testing.T) {
	if tc, err := (RedisTLS{}).Config(); tc != nil || err != nil {
		t.Errorf("TLS off: %v, %v; want nil, nil", tc, err)
	}
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, tl := range map[string]RedisTLS{
		"missing CA file":   {Enabled: true, CAFile: filepath.Join(dir, "absent.pem")},
		"CA file not PEM":   {Enabled: true, CAFile: notPEM},
		"cert without key":  {Enabled: true, CertFile: notPEM},
		"key without cert":  {Enabled: true, KeyFile: notPEM},
		"unreadable client": {Enabled: true, CertFile: notPEM, KeyFile: notPEM},
	} {
		if _, err := tl.Config(); err == nil {
			t.Errorf("%s: no error", name)
		}
		path := filepath.Join(t.TempDir(), "c.yaml")
		doc := fmt.Sprintf("redis: {addrs: [\"r:6380\"], tls: {enabled: true, ca_file: %q, cert_file: %q, key_file: %q}}\n", tl.CAFile, tl.CertFile, tl.KeyFile)
		if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(path, func(string) string { return "" }); err == nil || !strings.Contains(err.Error(), "redis.tls") {
			t.Errorf("%s: Load error %v, want one naming redis.tls", name, err)
		}
	}
	tc, err := (RedisTLS{Enabled: true, ServerName: "redis.internal"}).Config()
	if err != nil || tc.ServerName != "redis.internal" || tc.MinVersion != tls.VersionTLS12 {
		t.Errorf("server name: %+v, %v", tc, err)
	}
}

func TestValidateErrors(t *testing.T) {
	tests := map[string]string{
		"unknown field":    "listn: x\n",
		"bad duration":     "upstream: {timeout: forever}\n",
		"bad mode":         "routes: [{name: a, path: /a, cache: {mode: fuzzy}}]\n",
		"dup name":         "routes: [{name: a, path: /a}, {name: a, path: /b}]\n",
		"dup path":         "routes: [{name: a, path: /a}, {name: b, path: /a}]\n",
		"no name":          "routes: [{path: /a}]\n",
		"relative path":    "routes: [{name: a, path: a}]\n",
		"reserved path":    "routes: [{name: a, path: /admin/x}]\n",
		"bad api":          "routes: [{name: a, path: /a, api: grpc}]\n",
		"models cached":    "routes: [{name: m, path: /v1/models, cache: {mode: exact}}]\n",
		"temperature":      "routes: [{name: a, path: /a, cache: {max_temperature: 3}}]\n",
		"negative ttl":     "routes: [{name: a, path: /a, cache: {ttl: -1s}}]\n",
		"bad upstream":     "upstream: {url: \"ftp://x\"}\n",
		"tiny body limit":  "max_body_bytes: 10\n",
		"open brace":       "routes: [{name: a, path: \"/d/{x/chat/completions\"}]\n",
		"brace in segment": "routes: [{name: a, path: \"/d/x{y}/chat/completions\"}]\n",
		"param twice":      "routes: [{name: a, path: \"/d/{x}/{x}/chat/completions\"}]\n",
		"unknown param":    "routes: [{name: a, path: \"/d/{x}/chat/completions\", upstream_path: \"/v1/{y}/chat/completions\"}]\n",
		"models template":  "routes: [{name: a, path: \"/d/{x}/models\", api: models}]\n",
		"same shape":       "routes: [{name: a, path: \"/d/{x}/chat/completions\"}, {name: b, path: \"/d/{y}/chat/completions\"}]\n",
		"negative timeout": "server: {write_timeout: -1s}\n",
		"tiny header cap":  "server: {max_header_bytes: 100}\n",
		"credit scope":     "admission: {credits: [{scope: ip, requests: 1}]}\n",
		"credit lane":      "admission: {credits: [{scope: key, lane: gold, requests: 1}]}\n",
		"credit empty":     "admission: {credits: [{scope: key}]}\n",
		"credit window":    "admission: {credits: [{scope: key, requests: 1, window: 10ms}]}\n",
		"credit offset":    "admission: {credits: [{scope: key, requests: 1, window: 1h, offset: 2h}]}\n",
		"local precision":  "semantic: {local_precision: fp16}\n",
	}
	for name, doc := range tests {
		path := filepath.Join(t.TempDir(), "c.yaml")
		if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(path, func(string) string { return "" }); err == nil {
			t.Errorf("%s: Load succeeded, want an error", name)
		} else if !strings.Contains(err.Error(), "c.yaml") {
			t.Errorf("%s: error %q does not name the file", name, err)
		}
	}
}

func TestTemplatedRoute(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	doc := "routes: [{name: azure, path: \"/openai/deployments/{deployment}/chat/completions\"}]\n"
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	r := c.Routes[0]
	if r.API != "chat" || r.UpstreamPath != r.Path {
		t.Errorf("route %+v: want api chat and the same upstream path", r)
	}
	if names, err := PathParams(r.Path); err != nil || len(names) != 1 || names[0] != "deployment" {
		t.Errorf("PathParams = %q, %v", names, err)
	}
	for p, want := range map[string]string{"/v1/embeddings": "embeddings", "/openai/deployments/{d}/completions": "completions",
		"/openai/deployments/{d}/embeddings": "embeddings", "/v1/models": "models", "/sdapi/v1/txt2img": "json"} {
		if got := apiForPath(p); got != want {
			t.Errorf("apiForPath(%s) = %s, want %s", p, got, want)
		}
	}
}

// TestUpstreamH2CURL: h2c:// (HTTP/2 with prior knowledge) is taken
// wherever an upstream URL is; other schemes are refused by name.
func TestUpstreamH2CURL(t *testing.T) {
	c, err := Parse([]byte("upstream: {url: \"h2c://vllm.svc:8000\"}\n" +
		"backups: [{name: b, url: \"h2c://backup.svc:8000\"}]\n" +
		"upstreams: [{name: p, targets: [{url: \"h2c://a.svc:8000\"}]}]\n"))
	if err == nil {
		c.Default()
		err = c.Validate()
	}
	if err != nil {
		t.Fatalf("h2c URLs refused: %v", err)
	}
	c, err = Parse([]byte("upstream: {url: \"ws://vllm.svc:8000\"}\n"))
	if err == nil {
		c.Default()
		err = c.Validate()
	}
	if err == nil || !strings.Contains(err.Error(), "http, https or h2c") {
		t.Errorf("ws:// upstream: err %v, want one naming the schemes", err)
	}
}

func FuzzParseConfig(f *testing.F) {
	b, _ := os.ReadFile(filepath.Join("..", "..", "..", "deploy", "config.example.yaml"))
	f.Add(b)
	f.Add([]byte("routes: [{name: a, path: /a}]"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b)
		if err != nil {
			return
		}
		c.Default()
		_ = c.Validate() // must not panic
	})
}

// TestShadowPolicyValidation: shares and the error budget are checked.
func TestShadowPolicyValidation(t *testing.T) {
	for name, c := range map[string]struct {
		yaml string
		ok   bool
	}{
		"example values":     {`{sample: 0.05, near_miss_sample: 0.01, max_share: 0.05}, max_false_hit_rate: 0.02`, true},
		"zeros: off":         {`{}, max_false_hit_rate: 0`, true},
		"sample over 1":      {`{sample: 1.5}`, false},
		"negative near-miss": {`{near_miss_sample: -0.1}`, false},
		"max_share of 1":     {`{sample: 0.1, max_share: 1}`, false},
		"budget of 1":        {`{}, max_false_hit_rate: 1`, false},
		"negative budget":    {`{}, max_false_hit_rate: -0.02`, false},
	} {
		doc := "routes:\n  - {name: chat, path: /v1/chat/completions, cache: {mode: semantic, semantic: {shadow: " + c.yaml + "}}}\n"
		cfg, err := Parse([]byte(doc))
		if err == nil {
			cfg.Default()
			err = cfg.Validate()
		}
		if (err == nil) != c.ok {
			t.Errorf("%s: %v, want ok %v", name, err, c.ok)
		}
	}
}

func TestLogAccessFromEnv(t *testing.T) {
	env := map[string]string{"EDGECACHE_LOG_ACCESS": "sampled", "EDGECACHE_LOG_ACCESS_SAMPLE_RATE": "0.25"}
	c, err := Load("", func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if c.Log != (Log{Access: AccessSampled, SampleRate: 0.25}) {
		t.Errorf("log %+v", c.Log)
	}
	for _, bad := range []map[string]string{{"EDGECACHE_LOG_ACCESS": "some"}, {"EDGECACHE_LOG_ACCESS_SAMPLE_RATE": "2"}} {
		if _, err := Load("", func(k string) string { return bad[k] }); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

func TestPricingValidated(t *testing.T) {
	c, err := loadDoc(t, "pricing:\n  gpt-4o: {input_per_million: 2.5, output_per_million: 10}\n", nil)
	if err != nil || c.Pricing["gpt-4o"].OutputPerMillion != 10 {
		t.Fatalf("pricing: %+v %v", c.Pricing, err)
	}
	for _, doc := range []string{
		"pricing:\n  m: {input_per_million: -1}\n",
		"pricing:\n  m: {output_per_million: 1, currency: \"a currency name far too long\"}\n",
		"pricing:\n  m: {input_per_milion: 1}\n", // misspelt
	} {
		if _, err := loadDoc(t, doc, nil); err == nil {
			t.Errorf("%q loaded", doc)
		}
	}
}

func TestConcurrencySlowStartKnobs(t *testing.T) {
	cfg, err := Parse([]byte("admission:\n  concurrency: {initial: 50, slow_start_slack: 2s, slow_start_wait: 3s, no_slow_start: true}\n"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Default()
	want := ConcurrencyLimits{Initial: 50, Max: 4096, SlowStartSlack: Duration(2 * time.Second),
		SlowStartWait: Duration(3 * time.Second), NoSlowStart: true}
	if got := cfg.Admission.Concurrency; got != want {
		t.Errorf("concurrency: %+v, want %+v", got, want)
	}
	cfg, err = Parse(nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Default()
	if got := cfg.Admission.Concurrency; got != (ConcurrencyLimits{Initial: 100, Max: 4096}) {
		t.Errorf("defaults: %+v", got)
	}
}
