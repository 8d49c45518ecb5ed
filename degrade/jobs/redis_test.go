package jobs

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/edgecache/edgecache/cache/cachetest"
	"github.com/edgecache/edgecache/cache/shared"
)

func redisClient(t *testing.T) redis.UniversalClient {
	t.Helper()
	srv := cachetest.StartRedis(t)
	c, err := shared.NewClient(shared.Conn{Addrs: []string{srv.Addr()}}, shared.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func waitS(t *testing.T, q Service, tenant, id string) Job {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		j, _, _, err := q.Get(tenant, id)
		if err != nil {
			t.Fatal(id, err)
		}
		if j.Status != Queued && j.Status != InProgress {
			return j
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("job %s not finished", id)
	return Job{}
}

func TestJobRedisPaidFirstFairCapIsolation(t *testing.T) {
	c := redisClient(t)
	var mu sync.Mutex
	var order []string
	gate := make(chan struct{})
	q, err := NewRedis(RedisConfig{Client: c, Region: "eu", Workers: 1}, func(ctx context.Context, j *Job) Result {
		<-gate
		mu.Lock()
		order = append(order, j.ID)
		mu.Unlock()
		return Result{Status: 200, Body: []byte(`{"id":"` + j.ID + `"}`)}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	q.Submit(&Job{ID: "f0", Tenant: "a", Lane: LaneFree}, time.Hour, 0)
	time.Sleep(300 * time.Millisecond) // f0 is running
	for _, j := range []*Job{
		{ID: "f1", Tenant: "a", Lane: LaneFree}, {ID: "f2", Tenant: "a", Lane: LaneFree},
		{ID: "g1", Tenant: "b", Lane: LaneFree}, {ID: "p1", Tenant: "c", Lane: LanePaid},
	} {
		if err := q.Submit(j, time.Hour, 3); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.Submit(&Job{ID: "f3", Tenant: "a", Lane: LaneFree}, time.Hour, 3); !errors.Is(err, ErrTenantCap) {
		t.Fatalf("fourth job of a: %v, want the cap", err)
	}
	if _, pos, _, _ := q.Get("c", "p1"); pos != 1 {
		t.Errorf("paid position %d, want 1", pos)
	}
	if _, pos, _, _ := q.Get("a", "f2"); pos != 4 {
		t.Errorf("f2 position %d, want 4", pos)
	}
	if _, _, _, err := q.Get("b", "f1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("another tenant's job: %v", err)
	}
	if _, err := q.Cancel("b", "f1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("another tenant's cancel: %v", err)
	}
	close(gate)
	for id, tn := range map[string]string{"f0": "a", "f1": "a", "f2": "a", "g1": "b", "p1": "c"} {
		if j := waitS(t, q, tn, id); j.Status != Completed || string(j.Result) != `{"id":"`+id+`"}` {
			t.Fatalf("%s: %s %s", id, j.Status, j.Result)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if got := fmt.Sprint(order); got != "[f0 p1 g1 f1 f2]" {
		t.Fatalf("order %s", got)
	}
	if err := q.Delete("a", "f0"); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := q.Get("a", "f0"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted: %v", err)
	}
}

// A replica dies mid-run: its leases expire, a second replica runs the
// jobs, and the first can no longer finish them.
func TestJobRedisDeadReplicaTakenOver(t *testing.T) {
	c := redisClient(t)
	release := make(chan struct{})
	var started atomic.Int64
	q1, _ := NewRedis(RedisConfig{Client: c, Workers: 4, Lease: 300 * time.Millisecond}, func(ctx context.Context, j *Job) Result {
		started.Add(1)
		<-release
		return Result{Status: 200, Body: []byte("q1")}
	})
	for i := range 10 {
		q1.Submit(&Job{ID: fmt.Sprint("j", i), Tenant: "t", Lane: LanePaid}, time.Hour, 0)
	}
	for started.Load() < 4 {
		time.Sleep(5 * time.Millisecond)
	}
	q1.Kill()
	var runs sync.Map
	q2, _ := NewRedis(RedisConfig{Client: c, Workers: 4, Lease: 300 * time.Millisecond}, func(ctx context.Context, j *Job) Result {
		n, _ := runs.LoadOrStore(j.ID, new(atomic.Int64))
		n.(*atomic.Int64).Add(1)
		return Result{Status: 200, Body: []byte("q2")}
	})
	defer q2.Close()
	for i := range 10 {
		if j := waitS(t, q2, "t", fmt.Sprint("j", i)); j.Status != Completed || string(j.Result) != "q2" {
			t.Fatalf("j%d: %s %q", i, j.Status, j.Result)
		}
	}
	runs.Range(func(k, v any) bool {
		if n := v.(*atomic.Int64).Load(); n != 1 {
			t.Errorf("%v ran %d times on the second replica", k, n)
		}
		return true
	})
	close(release)
	// The dead replica's lease holder cannot finish a job again.
	n, err := finishScript.Run(context.Background(), c, []string{q1.jk("j0")}, q1.p, "j0", q1.owner, Completed, 200, "q1", 0, 0).Int()
	if err != nil || n != 0 {
		t.Fatalf("finish by the old owner: %d %v", n, err)
	}
}
