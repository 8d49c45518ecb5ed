package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func writeSecret(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func loadYAML(t *testing.T, yaml string, env map[string]string) (Config, error) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "edgecache.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return Load(p, envOf(env))
}

const secretsYAML = `
upstream: {url: http://up.example}
backups:
  - {name: deep-infra, url: http://b0.example}
  - {name: together, url: http://b1.example}
tenants:
  - {name: acme-corp, lane: paid}
semantic:
  remote: {url: http://embed.example, model: m}
`

// Every secret can be set by an environment variable and by a file an
// environment variable names, without any secret in the YAML file.
func TestSecretsFromEnvAndFiles(t *testing.T) {
	for _, viaFile := range []bool{false, true} {
		name := "env"
		if viaFile {
			name = "file"
		}
		t.Run(name, func(t *testing.T) {
			env := map[string]string{}
			put := func(k, v string) {
				if viaFile {
					env[k+"_FILE"] = writeSecret(t, v+"\n")
				} else {
					env[k] = v
				}
			}
			put("EDGECACHE_UPSTREAM_API_KEY", "sk-up")
			put("EDGECACHE_BACKUP_DEEP_INFRA_API_KEY", "sk-b0")
			put("EDGECACHE_BACKUP_1_API_KEY", "sk-b1") // by index
			put("EDGECACHE_EMBED_API_KEY", "sk-embed")
			put("EDGECACHE_QDRANT_API_KEY", "qd-key")
			put("EDGECACHE_REDIS_USERNAME", "edge")
			put("EDGECACHE_REDIS_PASSWORD", "redis-pw")
			put("EDGECACHE_TENANT_SECRET", "tenant-secret")
			put("EDGECACHE_ADMIN_TOKENS", "alice:tok-aaaaaaaaaaaaaaaa,bob:tok-bbbbbbbbbbbbbbbb")
			put("EDGECACHE_TENANT_ACME_CORP_KEYS", "sk-acme-1,sk-acme-2")
			c, err := loadYAML(t, secretsYAML, env)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]string{
				"upstream": c.Upstream.APIKey, "backup0": c.Backups[0].APIKey, "backup1": c.Backups[1].APIKey,
				"embed": c.Semantic.Remote.APIKey, "qdrant": c.Semantic.Qdrant.APIKey,
				"redis user": c.Redis.Username, "redis pw": c.Redis.Password, "tenant secret": c.TenantSecret,
			}
			want := map[string]string{
				"upstream": "sk-up", "backup0": "sk-b0", "backup1": "sk-b1", "embed": "sk-embed", "qdrant": "qd-key",
				"redis user": "edge", "redis pw": "redis-pw", "tenant secret": "tenant-secret",
			}
			for k, w := range want {
				if got[k] != w {
					t.Errorf("%s = %q, want %q", k, got[k], w)
				}
			}
			if len(c.AdminTokens) != 2 || c.AdminTokens[1] != (AdminToken{Name: "bob", Token: "tok-bbbbbbbbbbbbbbbb"}) {
				t.Errorf("admin tokens = %+v", c.AdminTokens)
			}
			if k := c.Tenants[0].APIKeys; len(k) != 2 || k[1] != "sk-acme-2" {
				t.Errorf("tenant keys = %q", k)
			}
		})
	}
}

// api_key_file and its siblings in the YAML file read the secret from a
// file; the environment still overrides them.
func TestSecretsYAMLFileFields(t *testing.T) {
	up, b0, embed, qd := writeSecret(t, "sk-up\n"), writeSecret(t, "sk-b0"), writeSecret(t, "sk-embed\r\n"), writeSecret(t, "qd")
	user, pw, ts := writeSecret(t, "edge"), writeSecret(t, "pw"), writeSecret(t, "ts")
	tokens := writeSecret(t, "# operators\nalice:tok-aaaaaaaaaaaaaaaa\nbob:tok-bbbbbbbbbbbbbbbb\n")
	yaml := `
upstream: {url: http://up.example, api_key_file: ` + up + `}
backups:
  - {name: b0, url: http://b0.example, api_key_file: ` + b0 + `}
semantic:
  remote: {url: http://embed.example, model: m, api_key_file: ` + embed + `}
  qdrant: {api_key_file: ` + qd + `}
redis: {username_file: ` + user + `, password_file: ` + pw + `}
tenant_secret_file: ` + ts + `
admin_tokens_file: ` + tokens + `
`
	c, err := loadYAML(t, yaml, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Upstream.APIKey != "sk-up" || c.Backups[0].APIKey != "sk-b0" || c.Semantic.Remote.APIKey != "sk-embed" ||
		c.Semantic.Qdrant.APIKey != "qd" || c.Redis.Username != "edge" || c.Redis.Password != "pw" || c.TenantSecret != "ts" {
		t.Errorf("secrets = %q %q %q %q %q %q %q", c.Upstream.APIKey, c.Backups[0].APIKey, c.Semantic.Remote.APIKey,
			c.Semantic.Qdrant.APIKey, c.Redis.Username, c.Redis.Password, c.TenantSecret)
	}
	if len(c.AdminTokens) != 2 || c.AdminTokens[0] != (AdminToken{Name: "alice", Token: "tok-aaaaaaaaaaaaaaaa"}) {
		t.Errorf("admin tokens = %+v", c.AdminTokens)
	}
	c, err = loadYAML(t, yaml, map[string]string{"EDGECACHE_UPSTREAM_API_KEY": "sk-env"})
	if err != nil || c.Upstream.APIKey != "sk-env" {
		t.Errorf("env over api_key_file: %q, %v", c.Upstream.APIKey, err)
	}
}

func TestSecretsConflictsAndBadFiles(t *testing.T) {
	empty := writeSecret(t, "\n")
	cases := []struct {
		name, yaml string
		env        map[string]string
		want       string
	}{
		{"value and file in YAML", "upstream: {url: http://u, api_key: a, api_key_file: " + empty + "}", nil, "both set"},
		{"env and env file", "upstream: {url: http://u}", map[string]string{
			"EDGECACHE_UPSTREAM_API_KEY": "a", "EDGECACHE_UPSTREAM_API_KEY_FILE": empty}, "EDGECACHE_UPSTREAM_API_KEY and EDGECACHE_UPSTREAM_API_KEY_FILE"},
		{"backup by name and index", "upstream: {url: http://u}\nbackups: [{name: b, url: http://b}]", map[string]string{
			"EDGECACHE_BACKUP_B_API_KEY": "a", "EDGECACHE_BACKUP_0_API_KEY": "b"}, "set once"},
		{"empty file", "upstream: {url: http://u}", map[string]string{"EDGECACHE_REDIS_PASSWORD_FILE": empty}, "is empty"},
		{"missing file", "upstream: {url: http://u}", map[string]string{"EDGECACHE_TENANT_SECRET_FILE": "/nonexistent/x"}, "EDGECACHE_TENANT_SECRET_FILE"},
		{"missing tokens file", "upstream: {url: http://u}", map[string]string{"EDGECACHE_ADMIN_TOKENS_FILE": "/nonexistent/x"}, "EDGECACHE_ADMIN_TOKENS_FILE"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadYAML(t, tc.yaml, tc.env)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}
