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

// of returns id's events, queued first: Submit reports it once its
// script has run, and in Redis a worker may have claimed the job and
// reported its start by then (the journal orders records by time; the
// pipeline records acceptance itself).
func (l *eventLog) of(id string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := slices.Clone(l.m[id])
	if i := slices.Index(out, "queued"); i > 0 {
		out = append([]string{"queued"}, slices.Delete(out, i, i+1)...)
	}
	return out
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
			// b and d were cancelled queued or already running: either way
			// no finish. A start is reported by the worker that claimed the
			// job, concurrently with the owner's cancel: in any place.
			noStart := func(ev []string) []string {
				return slices.DeleteFunc(ev, func(e string) bool { return e == "started" })
			}
			if got := log.of("b"); !slices.Equal(noStart(got), []string{"queued", "cancelled"}) {
				t.Errorf("b: events %v, want queued, cancelled (and perhaps started)", got)
			}
			if got := log.of("d"); !slices.Equal(noStart(got), []string{"queued", "cancelled", "deleted"}) {
				t.Errorf("d: events %v, want queued, cancelled, deleted (and perhaps started)", got)
			}
			if _, _, _, err := q.Get("t", "a"); err != ErrNotFound {
				t.Errorf("a after expiry: %v, want ErrNotFound", err)
			}
		})
	}
}
