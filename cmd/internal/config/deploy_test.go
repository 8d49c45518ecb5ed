package config

// The configurations shipped in deploy/ go through the real loader here,
// with the environment each one runs in: the image's ENV, the compose
// service's environment, and the Kubernetes Deployment's env (base and each
// region's overlay). deploy/config.example.yaml is TestExampleConfigLoads's.
// The manifests themselves are checked by deploy's own tests.

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

var deployDir = filepath.Join("..", "..", "..", "deploy")

func deployRead(t *testing.T, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(deployDir, rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// deployImageEnv returns the ENV of the Dockerfile's final stage (one
// KEY=value per instruction, the form deploy/Dockerfile uses).
func deployImageEnv(t *testing.T) map[string]string {
	t.Helper()
	env := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(deployRead(t, "Dockerfile")))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) >= 2 && f[0] == "FROM":
			clear(env) // only the last stage counts
		case len(f) == 2 && f[0] == "ENV":
			k, v, _ := strings.Cut(f[1], "=")
			env[k] = v
		}
	}
	if len(env) == 0 {
		t.Fatal("deploy/Dockerfile: no ENV in the final stage")
	}
	return env
}

// deployComposeEnv returns a compose service's environment with
// ${VAR:-default} resolved to its default.
func deployComposeEnv(t *testing.T, service string) map[string]string {
	t.Helper()
	var c struct {
		Services map[string]struct {
			Environment map[string]string `yaml:"environment"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(deployRead(t, "compose.yaml"), &c); err != nil {
		t.Fatalf("deploy/compose.yaml: %v", err)
	}
	s, ok := c.Services[service]
	if !ok {
		t.Fatalf("deploy/compose.yaml: no service %s", service)
	}
	re := regexp.MustCompile(`\$\{[A-Za-z_][A-Za-z0-9_]*(?::?-([^}]*))?\}`)
	env := map[string]string{}
	for k, v := range s.Environment {
		env[k] = re.ReplaceAllString(v, "$1")
	}
	return env
}

type deployEnvVar struct {
	Name      string `yaml:"name"`
	Value     string `yaml:"value"`
	ValueFrom *struct {
		SecretKeyRef *struct {
			Name string `yaml:"name"`
			Key  string `yaml:"key"`
		} `yaml:"secretKeyRef"`
		FieldRef map[string]any `yaml:"fieldRef"`
	} `yaml:"valueFrom"`
}

// deploySecret is the Secret edgecache-secrets as deploy/README.md has
// operators create it, with sample values of the documented shapes.
var deploySecret = map[string]string{
	"tenant-secret":    strings.Repeat("ab", 32),                                                      // openssl rand -hex 32
	"admin-tokens":     "prometheus:" + strings.Repeat("cd", 24) + ",ops:" + strings.Repeat("ef", 24), // name:token pairs
	"upstream-api-key": "sk-sample",
	"redis-password":   "sample",
	"redis-username":   "edgecache",
	"qdrant-api-key":   "sample",
	"embed-api-key":    "sk-sample",
}

// TestDeploySecretDocumented: every key above is one deploy/README.md has
// operators create.
func TestDeploySecretDocumented(t *testing.T) {
	readme := string(deployRead(t, "README.md"))
	for k := range deploySecret {
		if !strings.Contains(readme, "--from-literal="+k+"=") {
			t.Errorf("deploy/README.md does not create the Secret key %s", k)
		}
	}
}

// deployPodEnv returns the env of the edgecache container in a Deployment
// manifest or patch; values from the Secret read as deploySecret's.
func deployPodEnv(t *testing.T, rel string) map[string]string {
	t.Helper()
	var d struct {
		Spec struct {
			Template struct {
				Spec struct {
					Containers []struct {
						Name string         `yaml:"name"`
						Env  []deployEnvVar `yaml:"env"`
					} `yaml:"containers"`
				} `yaml:"spec"`
			} `yaml:"template"`
		} `yaml:"spec"`
	}
	if err := yaml.Unmarshal(deployRead(t, rel), &d); err != nil {
		t.Fatalf("deploy/%s: %v", rel, err)
	}
	env := map[string]string{}
	for _, c := range d.Spec.Template.Spec.Containers {
		if c.Name != "edgecache" {
			continue
		}
		for _, v := range c.Env {
			switch {
			case v.ValueFrom == nil:
				env[v.Name] = v.Value
			case v.ValueFrom.SecretKeyRef != nil:
				val, ok := deploySecret[v.ValueFrom.SecretKeyRef.Key]
				if !ok {
					t.Errorf("deploy/%s: %s reads secret key %q, which deploy/README.md does not tell operators to create",
						rel, v.Name, v.ValueFrom.SecretKeyRef.Key)
				}
				env[v.Name] = val
			}
		}
	}
	return env
}

// deployGetenv layers environments, later ones winning (image ENV, then
// the pod's or service's env).
func deployGetenv(layers ...map[string]string) func(string) string {
	merged := map[string]string{}
	for _, l := range layers {
		for k, v := range l {
			merged[k] = v
		}
	}
	return func(k string) string { return merged[k] }
}

func checkContainerPaths(t *testing.T, c Config) {
	t.Helper()
	if c.AdminListen != "0.0.0.0:9090" {
		t.Errorf("admin_listen = %q: the kubelet and Prometheus need 0.0.0.0:9090", c.AdminListen)
	}
	// The image's only writable directory.
	for what, p := range map[string]string{"degrade.journal_dir": c.Degrade.JournalDir, "semantic.snapshot_path": c.Semantic.SnapshotPath} {
		if !strings.HasPrefix(p, "/var/lib/edgecache/") {
			t.Errorf("%s = %q: want a path under /var/lib/edgecache (the root file system is read-only)", what, p)
		}
	}
	if c.Semantic.ModelDir != "/opt/edgecache/models/use-lite" {
		t.Errorf("semantic.model_dir = %q: the image keeps the model in /opt/edgecache/models/use-lite", c.Semantic.ModelDir)
	}
	if i := slices.IndexFunc(c.Routes, func(r Route) bool { return r.API == "chat" }); i < 0 || c.Routes[i].Cache.Mode != ModeSemantic {
		t.Errorf("the chat route should use the semantic tier the image ships a model for: %+v", c.Routes)
	}
}

// TestDeployContainerConfig loads the image's configuration as the image
// runs it alone and as compose runs it.
func TestDeployContainerConfig(t *testing.T) {
	path := filepath.Join(deployDir, "config.container.yaml")
	image := deployImageEnv(t)

	alone, err := Load(path, deployGetenv(image, map[string]string{"EDGECACHE_UPSTREAM_URL": "https://api.example.com/v1"}))
	if err != nil {
		t.Fatalf("image defaults: %v", err)
	}
	checkContainerPaths(t, alone)
	if alone.Semantic.Index != "embedded" || len(alone.Redis.Addrs) != 0 {
		t.Errorf("alone: index %q, redis %v: want the embedded index and no Redis", alone.Semantic.Index, alone.Redis.Addrs)
	}

	compose, err := Load(path, deployGetenv(image, deployComposeEnv(t, "edgecache")))
	if err != nil {
		t.Fatalf("compose: %v", err)
	}
	checkContainerPaths(t, compose)
	if compose.Semantic.Index != "qdrant" || compose.Semantic.Qdrant.Addr != "qdrant:6334" ||
		!slices.Equal(compose.Redis.Addrs, []string{"redis:6379"}) || compose.Upstream.URL != "http://llmsim:8000" ||
		compose.Degrade.Region != "local" {
		t.Errorf("compose: index %q at %q, redis %v, upstream %q, region %q", compose.Semantic.Index, compose.Semantic.Qdrant.Addr,
			compose.Redis.Addrs, compose.Upstream.URL, compose.Degrade.Region)
	}
}

// TestDeployKubernetesConfig loads the ConfigMap's configuration with the
// environment of the base Deployment and of every region's overlay.
func TestDeployKubernetesConfig(t *testing.T) {
	var cm struct {
		Kind string            `yaml:"kind"`
		Data map[string]string `yaml:"data"`
	}
	if err := yaml.Unmarshal(deployRead(t, "k8s/base/configmap.yaml"), &cm); err != nil || cm.Kind != "ConfigMap" {
		t.Fatalf("deploy/k8s/base/configmap.yaml: %v (kind %q)", err, cm.Kind)
	}
	text, ok := cm.Data["edgecache.yaml"]
	if !ok {
		t.Fatal("deploy/k8s/base/configmap.yaml: no edgecache.yaml key")
	}
	image := deployImageEnv(t)
	base := deployPodEnv(t, "k8s/base/deployment.yaml")
	load := func(t *testing.T, getenv func(string) string) Config {
		t.Helper()
		c, err := Parse([]byte(text))
		if err != nil {
			t.Fatalf("configmap edgecache.yaml: %v", err)
		}
		c.applyEnv(getenv)
		c.Default()
		if err := c.Validate(); err != nil {
			t.Fatalf("configmap edgecache.yaml: %v", err)
		}
		return c
	}

	t.Run("base", func(t *testing.T) {
		checkContainerPaths(t, load(t, deployGetenv(image, base)))
	})
	overlays, err := os.ReadDir(filepath.Join(deployDir, "k8s", "overlays"))
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range overlays {
		if !o.IsDir() {
			continue
		}
		region := o.Name()
		t.Run(region, func(t *testing.T) {
			patch := deployPodEnv(t, filepath.Join("k8s", "overlays", region, "deployment.yaml"))
			c := load(t, deployGetenv(image, base, patch))
			checkContainerPaths(t, c)
			if c.Degrade.Region != region || c.Upstream.URL == "" || len(c.Redis.Addrs) == 0 {
				t.Errorf("region %q, upstream %q, redis %v: an overlay sets its region (= its directory), model and Redis",
					c.Degrade.Region, c.Upstream.URL, c.Redis.Addrs)
			}
			if (patch["EDGECACHE_QDRANT_ADDR"] != "") != (c.Semantic.Index == "qdrant") {
				t.Errorf("index %q with EDGECACHE_QDRANT_ADDR %q", c.Semantic.Index, patch["EDGECACHE_QDRANT_ADDR"])
			}
		})
	}
}
