package jobs

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"
)

// eventLog collects a queue's events per job.
type eventLog struct {
	mu sync.Mutex
	m  map[string][]string
}

func (l *eventLog) add(e string, j *Job) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.m[j.ID] = append(l.m[j.ID], e)
}

func (l *eventLog) of(id string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.m[id])
}

// busyOnce answers busy on a's first run, then 200; b and d run until
// cancelled (so they cannot finish before their Cancel or Delete).
func busyOnce(ctx context.Context, j *Job) Result {
	if j.ID == "b" || j.ID == "d" {
		select {
		case <-ctx.Done():
		case <-time.After(10 * time.Second):
		}
		return Result{Status: 200, Body: []byte(`{"id":"b"}`)}
	}
	if j.Attempts == 1 && j.ID == "a" {
		return Result{Status: 503, RetryAfter: 50 * time.Millisecond}
	}
	return Result{Status: 200, Body: []byte(`{"id":"x"}`)}
}

// Every state change the journal records is reported, in order, by both
// queues: busy then completed then expired after the ttl; cancelled;
// deleted when finished; cancelled then deleted when active.
func TestJobEvents(t *testing.T) {
	for _, kind := range []string{"memory", "redis"} {
		t.Run(kind, func(t *testing.T) {
			log := &eventLog{m: map[string][]string{}}
			var q Service
			var err error
			if kind == "memory" {
				q, err = New(Config{Workers: 3, Events: log.add}, busyOnce)
			} else {
				q, err = NewRedis(RedisConfig{Client: redisClient(t), Workers: 3, Lease: 300 * time.Millisecond, Events: log.add}, busyOnce)
			}
			if err != nil {
				t.Fatal(err)
			}
			defer q.Close()
			for _, id := range []string{"a", "c"} {
				if err := q.Submit(&Job{ID: id, Tenant: "t"}, 500*time.Millisecond, 0); err != nil {
					t.Fatal(err)
				}
			}
			if err := q.Submit(&Job{ID: "b", Tenant: "t"}, time.Hour, 0); err != nil {
				t.Fatal(err)
			}
			if _, err := q.Cancel("t", "b"); err != nil {
				t.Fatal(err)
			}
			if err := q.Submit(&Job{ID: "d", Tenant: "t"}, time.Hour, 0); err != nil {
				t.Fatal(err)
			}
			if err := q.Delete("t", "d"); err != nil {
				t.Fatal(err)
			}
			waitS(t, q, "t", "c")
			if err := q.Delete("t", "c"); err != nil {
				t.Fatal(err)
			}
			if j := waitS(t, q, "t", "a"); j.Status != Completed || j.Attempts != 2 {
				t.Fatalf("a: %s after %d attempts", j.Status, j.Attempts)
			}
			want := map[string][]string{
				"a": {"queued", "started", "requeued", "started", "finished", "expired"},
				"c": {"queued", "started", "finished", "deleted"},
			}
			deadline := time.Now().Add(5 * time.Second)
			for !slices.Equal(log.of("a"), want["a"]) && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			for id, w := range want {
				if got := log.of(id); !slices.Equal(got, w) {
					t.Errorf("%s: events %v, want %v", id, got, w)
				}
			}
			// b was cancelled queued or already running: either way one
			// cancelled event, and no finish after it.
			if got := log.of("b"); len(got) < 2 || got[0] != "queued" || got[len(got)-1] != "cancelled" || slices.Contains(got, "finished") {
				t.Errorf("b: events %v, want queued, [started,] cancelled", got)
			}
			if got := log.of("d"); len(got) < 3 || got[0] != "queued" || !slices.Equal(got[len(got)-2:], []string{"cancelled", "deleted"}) {
				t.Errorf("d: events %v, want queued, [started,] cancelled, deleted", got)
			}
			if _, _, _, err := q.Get("t", "a"); err != ErrNotFound {
				t.Errorf("a after expiry: %v, want ErrNotFound", err)
			}
		})
	}
}
