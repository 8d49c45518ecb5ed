package policy

import (
	"context"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/edgecache/edgecache/cmd/internal/config"
)

// TestPatchSharedRoute: a run-time change to a shared route is validated
// as a route (the edge's key was checked at start-up) and keeps what only
// the configuration file may set: shared, forward_headers, reveal.
func TestPatchSharedRoute(t *testing.T) {
	ctx := context.Background()
	hide := false
	c := config.Config{Upstream: config.Upstream{APIKey: "sk-edge"}, Routes: []config.Route{
		{Name: "faq", Path: "/faq/chat", API: "chat", Cache: config.CachePolicy{Shared: true, ForwardHeaders: []string{"x-persona"}, Reveal: &hide}},
	}}
	c.Default()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	s, err := New(ctx, Config{Routes: c.Routes, File: filepath.Join(t.TempDir(), "routes.json")})
	if err != nil {
		t.Fatal(err)
	}
	v, err := s.Patch(ctx, "faq", "alice", []byte(`{"ttl":"10m"}`))
	if err != nil {
		t.Fatalf("patch a shared route: %v", err)
	}
	r := s.Route("faq")
	if !v.Shared || !r.Shared || r.TTL != 10*time.Minute || r.Reveal || !slices.Equal(r.ForwardHeaders, []string{"X-Persona"}) {
		t.Errorf("after patch: view %+v, route %+v", v, r)
	}
}
