package policy

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/edgecache/edgecache/cache/cachetest"
	"github.com/edgecache/edgecache/cmd/internal/pipeline"
	"github.com/edgecache/edgecache/degrade"
)

func poolTargets() []*pipeline.Target {
	return []*pipeline.Target{{Name: "a", Pool: "fleet", Weight: 2, Breaker: degrade.NewBreaker("a", degrade.BreakerConfig{})},
		{Name: "b", Pool: "fleet", Breaker: degrade.NewBreaker("b", degrade.BreakerConfig{})}}
}

// TestSetTargetValidatesAuditsAndPersists: without Redis, a target's
// run-time weight and drain are validated, put in force on the target,
// audited, and re-applied by a store that reads the same file.
func TestSetTargetValidatesAuditsAndPersists(t *testing.T) {
	ctx := context.Background()
	file := filepath.Join(t.TempDir(), "routes.json")
	targets := poolTargets()
	s, err := New(ctx, Config{Routes: routes(t), File: file, Targets: targets})
	if err != nil {
		t.Fatal(err)
	}
	v, err := s.SetTarget(ctx, "fleet", "a", "alice", []byte(`{"weight":5,"drain":true}`))
	if err != nil {
		t.Fatal(err)
	}
	st := targets[0].Status(time.Now())
	if v.RuntimeWeight != 5 || !v.Drained || v.Weight != 2 || v.UpdatedBy != "alice" || !st.Drained || st.Effective != 5 {
		t.Fatalf("after set: view %+v, target %+v", v, st)
	}
	for name, body := range map[string]string{
		"weight 0":      `{"weight":0}`,
		"weight string": `{"weight":"3"}`,
		"unknown field": `{"colour":"red"}`,
		"drain number":  `{"drain":1}`,
		"not an object": `[1]`,
	} {
		var inv *InvalidError
		if _, err := s.SetTarget(ctx, "fleet", "a", "alice", []byte(body)); !errors.As(err, &inv) {
			t.Errorf("%s: %v, want InvalidError", name, err)
		}
	}
	if _, err := s.SetTarget(ctx, "other", "a", "alice", []byte(`{"drain":true}`)); !errors.Is(err, ErrUnknownTarget) {
		t.Errorf("target in the wrong pool: %v", err)
	}
	if _, err := s.SetTarget(ctx, "fleet", "a", "bob", []byte(`{"weight":null}`)); err != nil {
		t.Fatal(err)
	}
	audit, err := s.Audit(ctx, "fleet/a", time.Time{}, 0)
	if err != nil || len(audit) != 2 || audit[0].Who != "bob" || audit[0].TargetBefore.RuntimeWeight != 5 ||
		audit[0].TargetAfter.RuntimeWeight != 0 || !audit[0].TargetAfter.Drained || audit[1].TargetBefore.Drained {
		t.Fatalf("audit: %+v %v", audit, err)
	}
	if r, _ := s.Audit(ctx, "chat", time.Time{}, 0); len(r) != 0 {
		t.Errorf("a route's audit lists target changes: %+v", r)
	}
	again := poolTargets()
	if _, err := New(ctx, Config{Routes: routes(t), File: file, Targets: again}); err != nil {
		t.Fatal(err)
	}
	if st := again[0].Status(time.Now()); !st.Drained || st.RuntimeWeight != 0 || again[1].Drained() {
		t.Errorf("after a restart: %+v", st)
	}
}

// TestSetTargetAcrossReplicas: a drain on one replica is in force on
// another within a second (pub/sub), and undone the same way.
func TestSetTargetAcrossReplicas(t *testing.T) {
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
	ta, tb := poolTargets(), poolTargets()
	a, err := New(ctx, Config{Routes: routes(t), Redis: client(), Region: "eu", Resync: time.Hour, Targets: ta})
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(ctx, Config{Routes: routes(t), Redis: client(), Region: "eu", Resync: time.Hour, Targets: tb})
	if err != nil {
		t.Fatal(err)
	}
	go a.Run(ctx)
	go b.Run(ctx)
	waitFor(t, 2*time.Second, func() bool {
		n, _ := client().PubSubNumSub(ctx, b.channel()).Result()
		return n[b.channel()] >= 2
	})
	if _, err := a.SetTarget(ctx, "fleet", "b", "alice", []byte(`{"drain":true}`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Second, func() bool { return tb[1].Drained() })
	if tb[0].Drained() {
		t.Error("the other target was drained too")
	}
	if _, err := b.SetTarget(ctx, "fleet", "b", "bob", []byte(`{"drain":false,"weight":3}`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Second, func() bool { return !ta[1].Drained() && ta[1].Status(time.Now()).RuntimeWeight == 3 })
	audit, err := a.Audit(ctx, AuditUpstreams, time.Time{}, 10)
	if err != nil || len(audit) != 2 || audit[0].Who != "bob" || audit[1].Who != "alice" || audit[0].Target != "fleet/b" {
		t.Errorf("audit from the other replica: %+v %v", audit, err)
	}
}
