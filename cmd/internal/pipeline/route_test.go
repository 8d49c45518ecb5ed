package pipeline

import (
	"net/http/httptest"
	"testing"

	"github.com/edgecache/edgecache/cmd/internal/config"
)

func TestTemplatedRoute(t *testing.T) {
	cfg := config.Config{Routes: []config.Route{
		{Name: "azure", Path: "/openai/deployments/{deployment}/chat/completions", UpstreamPath: "/openai/deployments/{deployment}/chat/completions"},
		{Name: "renamed", Path: "/d/{deployment}/v/{version}/chat/completions", UpstreamPath: "/{version}/engines/{deployment}/chat/completions"},
		{Name: "plain", Path: "/v1/chat/completions"},
	}}
	cfg.Default()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	rs, err := Compile(cfg.Routes)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		rt        *Route
		url       string
		templated bool
		upstream  string
		scope     string
	}{
		{rs[0], "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21", true, "/openai/deployments/gpt-4o/chat/completions", "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"},
		{rs[1], "/d/eu-1/v/v2/chat/completions", true, "/v2/engines/eu-1/chat/completions", "/d/eu-1/v/v2/chat/completions?"},
		{rs[2], "/v1/chat/completions?x=1", false, "/v1/chat/completions", "x=1"},
	} {
		r := httptest.NewRequest("POST", tc.url, nil)
		if got := tc.rt.Templated(); got != tc.templated {
			t.Errorf("%s: Templated = %v", tc.rt.Name, got)
		}
		if got := tc.rt.upstreamPath(r); got != tc.upstream {
			t.Errorf("%s: upstreamPath(%s) = %s, want %s", tc.rt.Name, tc.url, got, tc.upstream)
		}
		if got := tc.rt.scope(r, ""); got != tc.scope {
			t.Errorf("%s: scope(%s) = %q, want %q", tc.rt.Name, tc.url, got, tc.scope)
		}
		if tc.templated && !tc.rt.matches(r.URL.Path) {
			t.Errorf("%s: %s does not match", tc.rt.Name, r.URL.Path)
		}
	}
	for _, p := range []string{"/openai/deployments/a/b/chat/completions", "/openai/deployments//chat/completions", "/openai/deployments/a/embeddings"} {
		if rs[0].matches(p) {
			t.Errorf("%s matches %s", rs[0].Path, p)
		}
	}
}
