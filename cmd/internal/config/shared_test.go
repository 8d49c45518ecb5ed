package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// loadDoc loads a configuration document with the given environment.
func loadDoc(t *testing.T, doc string, env map[string]string) (Config, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	return Load(path, func(name string) string { return env[name] })
}

// TestSharedRouteNeedsEdgeKey: a shared route is refused, with an error
// that names the route and the setting, unless every target has the
// edge's own key; the shipped example is refused the same way without it.
func TestSharedRouteNeedsEdgeKey(t *testing.T) {
	const faq = "routes: [{name: faq, path: /faq, api: chat, cache: {shared: true}}]\n"
	withKey := map[string]string{"EDGECACHE_UPSTREAM_API_KEY": "sk-edge"}
	_, err := loadDoc(t, faq, nil)
	if err == nil || !strings.Contains(err.Error(), `route "faq": cache.shared needs the edge's own upstream key`) ||
		!strings.Contains(err.Error(), "EDGECACHE_UPSTREAM_API_KEY") {
		t.Errorf("shared route without a key: %v, want a refusal naming the route and upstream.api_key", err)
	}
	if _, err := loadDoc(t, faq, withKey); err != nil {
		t.Errorf("shared route with EDGECACHE_UPSTREAM_API_KEY: %v", err)
	}
	if _, err := loadDoc(t, "upstream: {api_key: sk-edge}\n"+faq, nil); err != nil {
		t.Errorf("shared route with upstream.api_key: %v", err)
	}
	_, err = loadDoc(t, faq+"backups: [{name: b2, url: \"http://b2\"}]\n", withKey)
	if err == nil || !strings.Contains(err.Error(), `backup "b2" has no api_key`) {
		t.Errorf("shared route with a keyless backup: %v, want a refusal naming the backup", err)
	}
	if _, err := loadDoc(t, faq+"backups: [{name: b2, url: \"http://b2\", api_key: sk-b2}]\n", withKey); err != nil {
		t.Errorf("shared route, every target keyed: %v", err)
	}
	// A private route needs no edge key: clients' keys go upstream.
	if _, err := loadDoc(t, "routes: [{name: chat, path: /v1/chat/completions}]\n", nil); err != nil {
		t.Errorf("private route: %v", err)
	}
	_, err = Load(filepath.Join("..", "..", "..", "deploy", "config.example.yaml"), func(string) string { return "" })
	if err == nil || !strings.Contains(err.Error(), `route "txt2img": cache.shared needs`) {
		t.Errorf("example without EDGECACHE_UPSTREAM_API_KEY: %v, want the shared route refused", err)
	}
}

func TestForwardHeadersAndReveal(t *testing.T) {
	env := map[string]string{"EDGECACHE_UPSTREAM_API_KEY": "sk-edge"}
	c, err := loadDoc(t, "routes: [{name: faq, path: /faq, api: chat, cache: {shared: true, forward_headers: [x-persona, Accept-Language], reveal: false}}]\n", env)
	if err != nil {
		t.Fatal(err)
	}
	if cp := c.Routes[0].Cache; len(cp.ForwardHeaders) != 2 || cp.Reveal == nil || *cp.Reveal {
		t.Errorf("cache policy %+v", cp)
	}
	bad := map[string]string{
		"credential":           "[Authorization]",
		"azure key":            "[api-key]",
		"anthropic key":        "[X-Api-Key]",
		"cookie":               "[Cookie]",
		"hop-by-hop":           "[Connection]",
		"edge directive":       "[X-Edgecache-Semantic]",
		"cache directive":      "[Cache-Control]",
		"set by the edge":      "[User-Agent]",
		"request id":           "[X-Request-Id]",
		"not a name":           "[\"X Persona\"]",
		"twice, another case":  "[X-Persona, x-persona]",
		"empty":                "[\"\"]",
		"colon in name":        "[\"X-Persona:\"]",
		"content type is ours": "[Content-Type]",
	}
	for name, list := range bad {
		doc := "routes: [{name: faq, path: /faq, api: chat, cache: {shared: true, forward_headers: " + list + "}}]\n"
		if _, err := loadDoc(t, doc, env); err == nil || !strings.Contains(err.Error(), "cache.forward_headers") {
			t.Errorf("%s %s: %v, want a forward_headers refusal", name, list, err)
		}
	}
	private := map[string]string{
		"forward_headers": "{forward_headers: [X-Persona]}",
		"reveal false":    "{reveal: false}",
	}
	for name, cache := range private {
		doc := "routes: [{name: chat, path: /v1/chat/completions, cache: " + cache + "}]\n"
		if _, err := loadDoc(t, doc, env); err == nil || !strings.Contains(err.Error(), "applies to shared routes") {
			t.Errorf("private route with %s: %v, want a refusal", name, err)
		}
	}
}

// TestValidateRoutesAlone: a route checked alone (a run-time policy change)
// is not refused for what only the whole configuration can say.
func TestValidateRoutesAlone(t *testing.T) {
	c := Config{Routes: []Route{{Name: "faq", Path: "/faq", API: "chat", Cache: CachePolicy{Shared: true}}}}
	c.Default()
	if err := c.ValidateRoutes(); err != nil {
		t.Errorf("ValidateRoutes: %v", err)
	}
	if err := c.Validate(); err == nil {
		t.Error("Validate accepted a shared route without the edge's key")
	}
	c.Routes[0].Cache.ForwardHeaders = []string{"Authorization"}
	if err := c.ValidateRoutes(); err == nil {
		t.Error("ValidateRoutes accepted a forwarded credential")
	}
}
