package config

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
)

// Secrets come from four places, the later overriding the earlier: the
// YAML value (api_key: …), a YAML file reference (api_key_file: …), an
// environment variable (EDGECACHE_…), or an environment variable naming a
// file (EDGECACHE_…_FILE, a mounted Kubernetes or Docker Secret). Setting
// a value and its file at the same level is an error, so a stale value
// never wins silently. A file's content is taken whole, minus its trailing
// line break; an empty or unreadable file fails start-up.

// secret is one secret setting: where it goes and what can set it.
type secret struct {
	dst      *string
	yamlFile string   // the YAML file field's value
	field    string   // the YAML path, for errors: "upstream.api_key"
	envs     []string // environment names, each also read as NAME_FILE; at most one may be set
}

// readSecretFile reads a secret file: its content without the trailing
// line break.
func readSecretFile(path, what string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	v := strings.TrimRight(string(b), "\r\n")
	if v == "" {
		return "", fmt.Errorf("%s: file %s is empty", what, path)
	}
	return v, nil
}

// resolve applies s's sources to *s.dst.
func (s secret) resolve(getenv func(string) string) error {
	if s.yamlFile != "" {
		if *s.dst != "" {
			return fmt.Errorf("%s and %s_file are both set: keep one", s.field, s.field)
		}
		v, err := readSecretFile(s.yamlFile, s.field+"_file")
		if err != nil {
			return err
		}
		*s.dst = v
	}
	var set []string
	for _, name := range s.envs {
		for _, n := range []string{name, name + "_FILE"} {
			if getenv(n) != "" {
				set = append(set, n)
			}
		}
	}
	switch len(set) {
	case 0:
		return nil
	case 1:
	default:
		return fmt.Errorf("%s: set once, not by %s", s.field, strings.Join(set, " and "))
	}
	name := set[0]
	if !strings.HasSuffix(name, "_FILE") || slices.Contains(s.envs, name) {
		*s.dst = getenv(name)
		return nil
	}
	v, err := readSecretFile(getenv(name), name)
	if err != nil {
		return err
	}
	*s.dst = v
	return nil
}

// envName turns a configured name into the part of an environment
// variable's name: upper case, anything but letters and digits → "_".
func envName(name string) string {
	return strings.ToUpper(strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '_'
	}, name))
}

// parseTokens reads admin tokens: "name:token" separated by commas or
// line breaks; a bare token is named "env".
func parseTokens(v string) []AdminToken {
	var out []AdminToken
	for _, pair := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == '\n' || r == '\r' }) {
		pair = strings.TrimSpace(pair)
		if pair == "" || strings.HasPrefix(pair, "#") {
			continue
		}
		name, tok, ok := strings.Cut(pair, ":")
		if !ok {
			name, tok = "env", name // a bare token
		}
		out = append(out, AdminToken{Name: name, Token: tok})
	}
	return out
}

// splitKeys splits a list of API keys separated by commas or line breaks.
func splitKeys(v string) []string {
	var out []string
	for _, k := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == '\n' || r == '\r' }) {
		if k = strings.TrimSpace(k); k != "" {
			out = append(out, k)
		}
	}
	return out
}

// resolveSecrets applies every secret's YAML file and environment sources.
func (c *Config) resolveSecrets(getenv func(string) string) []error {
	secrets := []secret{
		{&c.Upstream.APIKey, c.Upstream.APIKeyFile, "upstream.api_key", []string{"EDGECACHE_UPSTREAM_API_KEY"}},
		{&c.Redis.Username, c.Redis.UsernameFile, "redis.username", []string{"EDGECACHE_REDIS_USERNAME"}},
		{&c.Redis.Password, c.Redis.PasswordFile, "redis.password", []string{"EDGECACHE_REDIS_PASSWORD"}},
		{&c.TenantSecret, c.TenantSecretFile, "tenant_secret", []string{"EDGECACHE_TENANT_SECRET"}},
		{&c.Semantic.Remote.APIKey, c.Semantic.Remote.APIKeyFile, "semantic.remote.api_key", []string{"EDGECACHE_EMBED_API_KEY"}},
		{&c.Semantic.Qdrant.APIKey, c.Semantic.Qdrant.APIKeyFile, "semantic.qdrant.api_key", []string{"EDGECACHE_QDRANT_API_KEY"}},
	}
	for i := range c.Backups {
		b := &c.Backups[i]
		envs := []string{"EDGECACHE_BACKUP_" + strconv.Itoa(i) + "_API_KEY"}
		if n := envName(b.Name); n != "" && n != strconv.Itoa(i) {
			envs = append([]string{"EDGECACHE_BACKUP_" + n + "_API_KEY"}, envs...)
		}
		secrets = append(secrets, secret{&b.APIKey, b.APIKeyFile, fmt.Sprintf("backups[%d] (%s).api_key", i, b.Name), envs})
	}
	for i := range c.Upstreams {
		pl := &c.Upstreams[i]
		for j := range pl.Targets {
			t := &pl.Targets[j]
			envs := []string{"EDGECACHE_POOL_" + envName(pl.Name) + "_" + strconv.Itoa(j) + "_API_KEY"}
			secrets = append(secrets, secret{&t.APIKey, t.APIKeyFile, fmt.Sprintf("upstreams[%d] (%s).targets[%d].api_key", i, pl.Name, j), envs})
		}
	}
	var errs []error
	for _, s := range secrets {
		if err := s.resolve(getenv); err != nil {
			errs = append(errs, err)
		}
	}

	// Admin tokens and tenant keys are lists: every source adds to them.
	if c.AdminTokensFile != "" {
		v, err := readSecretFile(c.AdminTokensFile, "admin_tokens_file")
		errs = append(errs, err)
		c.AdminTokens = append(c.AdminTokens, parseTokens(v)...)
	}
	c.AdminTokens = append(c.AdminTokens, parseTokens(getenv("EDGECACHE_ADMIN_TOKENS"))...)
	if p := getenv("EDGECACHE_ADMIN_TOKENS_FILE"); p != "" {
		v, err := readSecretFile(p, "EDGECACHE_ADMIN_TOKENS_FILE")
		errs = append(errs, err)
		c.AdminTokens = append(c.AdminTokens, parseTokens(v)...)
	}
	for i := range c.Tenants {
		name := "EDGECACHE_TENANT_" + envName(c.Tenants[i].Name) + "_KEYS"
		c.Tenants[i].APIKeys = append(c.Tenants[i].APIKeys, splitKeys(getenv(name))...)
		if p := getenv(name + "_FILE"); p != "" {
			v, err := readSecretFile(p, name+"_FILE")
			errs = append(errs, err)
			c.Tenants[i].APIKeys = append(c.Tenants[i].APIKeys, splitKeys(v)...)
		}
	}
	return slices.DeleteFunc(errs, func(err error) bool { return err == nil })
}
