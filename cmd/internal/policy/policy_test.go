package policy

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/edgecache/edgecache/cache/cachetest"
	"github.com/edgecache/edgecache/cmd/internal/config"
)

func routes(t *testing.T) []config.Route {
	t.Helper()
	c := config.Config{Routes: []config.Route{
		{Name: "chat", Path: "/v1/chat/completions"},
		{Name: "emb", Path: "/v1/embeddings"},
	}}
	c.Default()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	return c.Routes
}

func TestPatchValidatesAuditsAndPersists(t *testing.T) {
	ctx := context.Background()
	file := filepath.Join(t.TempDir(), "routes.json")
	s, err := New(ctx, Config{Routes: routes(t), File: file})
	if err != nil {
		t.Fatal(err)
	}
	if !s.Route("chat").Cache || s.Route("chat").TTL != time.Hour {
		t.Fatalf("base policy: %+v", s.Route("chat"))
	}
	v, err := s.Patch(ctx, "chat", "alice", []byte(`{"mode":"off","ttl":"10m"}`))
	if err != nil {
		t.Fatal(err)
	}
	if v.Mode != "off" || v.TTL != "10m0s" || !v.Overridden || v.UpdatedBy != "alice" || s.Route("chat").Cache {
		t.Fatalf("after patch: %+v / %+v", v, s.Route("chat"))
	}
	bad := map[string]string{
		"unknown field":   `{"colour":"red"}`,
		"bad mode":        `{"mode":"fuzzy"}`,
		"bad duration":    `{"ttl":"soon"}`,
		"wrong type":      `{"templates":"yes"}`,
		"semantic on emb": `{"mode":"semantic"}`,
		"threshold range": `{"threshold":1.5}`,
		"not an object":   `[1]`,
	}
	for name, body := range bad {
		route := "chat"
		if name == "semantic on emb" {
			route = "emb"
		}
		var inv *InvalidError
		if _, err := s.Patch(ctx, route, "alice", []byte(body)); !errors.As(err, &inv) {
			t.Errorf("%s: err = %v, want InvalidError", name, err)
		}
	}
	if _, err := s.Patch(ctx, "nope", "alice", []byte(`{}`)); !errors.Is(err, ErrUnknownRoute) {
		t.Errorf("unknown route: %v", err)
	}
	if s.Route("chat").Cache {
		t.Error("a rejected patch changed the policy")
	}
	// null resets a field to the configured value.
	if v, err := s.Patch(ctx, "chat", "bob", []byte(`{"mode":null}`)); err != nil || v.Mode != "exact" || v.TTL != "10m0s" {
		t.Fatalf("reset mode: %+v %v", v, err)
	}
	if _, err := s.Purge(ctx, "chat", "bob"); err != nil || s.Route("chat").Generation != 1 {
		t.Fatalf("purge: %v gen %d", err, s.Route("chat").Generation)
	}
	audit, err := s.Audit(ctx, "chat", time.Time{}, 0)
	if err != nil || len(audit) != 3 || audit[0].Action != "purge" || audit[2].Who != "alice" ||
		audit[2].Before.Mode != "exact" || audit[2].After.Mode != "off" {
		t.Fatalf("audit %+v %v", audit, err)
	}
	// A restart re-applies the change and keeps the audit trail.
	s2, err := New(ctx, Config{Routes: routes(t), File: file})
	if err != nil {
		t.Fatal(err)
	}
	if r := s2.Route("chat"); r.TTL != 10*time.Minute || r.Generation != 1 || !r.Cache {
		t.Errorf("after restart: %+v", r)
	}
	if a, _ := s2.Audit(ctx, "", time.Time{}, 0); len(a) != 3 {
		t.Errorf("audit after restart: %d records", len(a))
	}
}

func TestRedisPropagationAndConvergence(t *testing.T) {
	if testing.Short() {
		t.Skip("starts redis-server")
	}
	rds := cachetest.StartRedis(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	client := func() redis.UniversalClient {
		c := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{rds.Addr()}})
		t.Cleanup(func() { c.Close() })
		return c
	}
	a, err := New(ctx, Config{Routes: routes(t), Redis: client(), Region: "eu", Resync: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(ctx, Config{Routes: routes(t), Redis: client(), Region: "eu", Resync: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	go a.Run(ctx)
	go b.Run(ctx)
	// Wait until b's subscription is live (a change before it is still
	// caught by the resync, but this test measures the pub/sub path).
	waitFor(t, 2*time.Second, func() bool {
		n, _ := client().PubSubNumSub(ctx, b.channel()).Result()
		return n[b.channel()] >= 2
	})
	start := time.Now()
	if _, err := a.Patch(ctx, "chat", "alice", []byte(`{"mode":"off"}`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Second, func() bool { return !b.Route("chat").Cache })
	t.Logf("propagated in %v", time.Since(start))
	// A replica that missed messages converges on its resync.
	c, err := New(ctx, Config{Routes: routes(t), Redis: client(), Region: "eu", Resync: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if c.Route("chat").Cache {
		t.Error("a new replica did not read the region's policies at start")
	}
	rds.Stop()
	if _, err := a.Patch(ctx, "chat", "alice", []byte(`{"mode":"exact"}`)); err == nil {
		t.Error("a change while Redis is down reported success")
	}
	rds.Restart()
	if _, err := a.Patch(ctx, "chat", "alice", []byte(`{"ttl":"5m"}`)); err != nil {
		t.Fatal(err)
	}
	go c.Run(ctx) // c subscribes only now: it missed the message
	waitFor(t, 3*time.Second, func() bool { return c.Route("chat").TTL == 5*time.Minute })
	// Other regions are separate.
	d, _ := New(ctx, Config{Routes: routes(t), Redis: client(), Region: "us"})
	if !d.Route("chat").Cache {
		t.Error("a change in region eu reached region us")
	}
	audit, err := b.Audit(ctx, "chat", time.Time{}, 10)
	// (the test Redis keeps nothing across its restart, so only the last change is left)
	if err != nil || len(audit) == 0 || audit[0].After.TTL != "5m0s" || audit[0].Who != "alice" {
		t.Errorf("audit from another replica: %+v %v", audit, err)
	}
}

func waitFor(t *testing.T, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", within)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
