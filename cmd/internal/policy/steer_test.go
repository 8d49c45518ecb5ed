package policy

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/edgecache/edgecache/cache/cachetest"
	"github.com/edgecache/edgecache/cmd/internal/config"
)

func semanticRoutes(t *testing.T) []config.Route {
	t.Helper()
	c := config.Config{Routes: []config.Route{{Name: "chat", Path: "/v1/chat/completions", Cache: config.CachePolicy{
		Mode: config.ModeSemantic, Semantic: config.SemanticPolicy{Threshold: 0.6, Floor: 0.5, MaxFalseHitRate: 0.02,
			Shadow: config.ShadowPolicy{Sample: 0.05}}}}}}
	c.Default()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	return c.Routes
}

// TestSteer: shadow steering is an audited override by "shadow" with its
// reason, persisted, refused when the threshold moved meanwhile, and the
// configured threshold stays what steering relaxes toward.
func TestSteer(t *testing.T) {
	ctx := context.Background()
	file := filepath.Join(t.TempDir(), "routes.json")
	s, err := New(ctx, Config{Routes: semanticRoutes(t), File: file})
	if err != nil {
		t.Fatal(err)
	}
	rt := s.Route("chat")
	if rt.Configured != 0.6 || rt.Shadow.MaxFalseHitRate != 0.02 || rt.Shadow.Sample != 0.05 {
		t.Fatalf("compiled route: configured %v, shadow %+v", rt.Configured, rt.Shadow)
	}
	if err := s.Steer(ctx, "chat", 0.6, 0.62000001, "upper bound over budget"); err != nil {
		t.Fatal(err)
	}
	if rt := s.Route("chat"); rt.Threshold != 0.62 || rt.Configured != 0.6 {
		t.Errorf("after a step: threshold %v, configured %v; want 0.62, 0.6", rt.Threshold, rt.Configured)
	}
	if err := s.Steer(ctx, "chat", 0.6, 0.62, "stale evidence"); !errors.Is(err, ErrStale) {
		t.Errorf("a step from a threshold no longer in force: %v, want ErrStale", err)
	}
	audit, err := s.Audit(ctx, "chat", time.Time{}, 0)
	if err != nil || len(audit) != 1 || audit[0].Who != ShadowUser || audit[0].Action != "steer" ||
		audit[0].Reason != "upper bound over budget" || audit[0].Before.Threshold != 0.6 || audit[0].After.Threshold != 0.62 {
		t.Fatalf("audit %+v %v", audit, err)
	}
	// A restart keeps the steered threshold; a reset returns to the file.
	s2, err := New(ctx, Config{Routes: semanticRoutes(t), File: file})
	if err != nil {
		t.Fatal(err)
	}
	if rt := s2.Route("chat"); rt.Threshold != 0.62 || rt.Configured != 0.6 {
		t.Errorf("after a restart: threshold %v, configured %v", rt.Threshold, rt.Configured)
	}
	if _, err := s2.Reset(ctx, "chat", "alice"); err != nil || s2.Route("chat").Threshold != 0.6 {
		t.Errorf("reset: %v, threshold %v", err, s2.Route("chat").Threshold)
	}
	if err := s.Steer(ctx, "nope", 0.6, 0.62, ""); !errors.Is(err, ErrUnknownRoute) {
		t.Errorf("unknown route: %v", err)
	}
	if err := s.Steer(ctx, "chat", 0.62, 1.2, ""); err == nil || !strings.Contains(err.Error(), "threshold") {
		t.Errorf("a threshold over 1: %v", err)
	}
}

// TestSteerSharedAcrossReplicas: a step taken by one replica reaches the
// others like any policy change, and a second replica holding the same
// evidence cannot take the same step again.
func TestSteerSharedAcrossReplicas(t *testing.T) {
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
	a, err := New(ctx, Config{Routes: semanticRoutes(t), Redis: client(), Region: "eu", Resync: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(ctx, Config{Routes: semanticRoutes(t), Redis: client(), Region: "eu", Resync: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	go b.Run(ctx)
	if err := a.Steer(ctx, "chat", 0.6, 0.62, "over budget"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 3*time.Second, func() bool { return b.Route("chat").Threshold == 0.62 })
	if err := b.Steer(ctx, "chat", 0.6, 0.62, "over budget"); !errors.Is(err, ErrStale) {
		t.Errorf("the same step from another replica: %v, want ErrStale", err)
	}
	if audit, err := b.Audit(ctx, "chat", time.Time{}, 10); err != nil || len(audit) != 1 || audit[0].Who != ShadowUser {
		t.Errorf("audit seen from the other replica: %+v %v", audit, err)
	}
}
