package jobs

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func wait(t *testing.T, q *Queue, tenant, id string) Job {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		j, _, _, err := q.Get(tenant, id)
		if err != nil {
			t.Fatal(err)
		}
		if j.Status != Queued && j.Status != InProgress {
			return j
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("job %s not finished", id)
	return Job{}
}

func TestJobPaidBeforeFreeAndTenantFair(t *testing.T) {
	var mu sync.Mutex
	var order []string
	gate := make(chan struct{})
	q, err := New(Config{Workers: 1}, func(ctx context.Context, j *Job) Result {
		<-gate
		mu.Lock()
		order = append(order, j.ID)
		mu.Unlock()
		return Result{Status: 200, Body: []byte(`{"ok":true}`)}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	// The first job occupies the one worker while the rest queue.
	q.Submit(&Job{ID: "f0", Tenant: "a", Lane: LaneFree}, time.Hour, 0)
	time.Sleep(50 * time.Millisecond)
	for _, j := range []*Job{
		{ID: "f1", Tenant: "a", Lane: LaneFree}, {ID: "f2", Tenant: "a", Lane: LaneFree},
		{ID: "g1", Tenant: "b", Lane: LaneFree}, {ID: "p1", Tenant: "c", Lane: LanePaid},
	} {
		if err := q.Submit(j, time.Hour, 0); err != nil {
			t.Fatal(err)
		}
	}
	if _, pos, _, _ := q.Get("c", "p1"); pos != 1 {
		t.Fatalf("paid position %d, want 1", pos)
	}
	close(gate)
	for _, id := range []string{"f0", "f1", "f2", "g1"} {
		tn := "a"
		if id == "g1" {
			tn = "b"
		}
		wait(t, q, tn, id)
	}
	wait(t, q, "c", "p1")
	mu.Lock()
	defer mu.Unlock()
	want := []string{"f0", "p1", "g1", "f1", "f2"} // b was not served yet: before a's second
	for i := range want {
		if order[i] != want[i] {
			t.Fatalf("order %v, want %v", order, want)
		}
	}
}

func TestJobTenantCapAndIsolation(t *testing.T) {
	block := make(chan struct{})
	q, _ := New(Config{Workers: 1}, func(ctx context.Context, j *Job) Result {
		select {
		case <-block:
		case <-ctx.Done():
		}
		return Result{Status: 200}
	})
	defer q.Close()
	defer close(block)
	for i, id := range []string{"a", "b"} {
		if err := q.Submit(&Job{ID: id, Tenant: "t"}, time.Hour, 2); err != nil {
			t.Fatal(i, err)
		}
	}
	if err := q.Submit(&Job{ID: "c", Tenant: "t"}, time.Hour, 2); !errors.Is(err, ErrTenantCap) {
		t.Fatalf("third job: %v, want cap", err)
	}
	if _, _, _, err := q.Get("other", "a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("other tenant: %v", err)
	}
	if _, err := q.Cancel("other", "b"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("other tenant cancel: %v", err)
	}
	j, err := q.Cancel("t", "b")
	if err != nil || j.Status != Cancelled {
		t.Fatalf("cancel: %v %v", j.Status, err)
	}
}

func TestJobFileSurvivesRestart(t *testing.T) {
	file := filepath.Join(t.TempDir(), "jobs.json")
	started := make(chan struct{}, 1)
	q, err := New(Config{Workers: 1, File: file}, func(ctx context.Context, j *Job) Result {
		started <- struct{}{}
		<-ctx.Done() // the replica dies mid-run
		return Result{}
	})
	if err != nil {
		t.Fatal(err)
	}
	q.Submit(&Job{ID: "x", Tenant: "t"}, time.Hour, 0)
	q.Submit(&Job{ID: "y", Tenant: "t"}, time.Hour, 0)
	<-started
	q.Close()
	runs := 0
	var mu sync.Mutex
	q2, err := New(Config{Workers: 2, File: file}, func(ctx context.Context, j *Job) Result {
		mu.Lock()
		runs++
		mu.Unlock()
		return Result{Status: 200, Body: []byte(j.ID)}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer q2.Close()
	for _, id := range []string{"x", "y"} {
		if j := wait(t, q2, "t", id); j.Status != Completed || string(j.Result) != id {
			t.Fatalf("%s: %s %q", id, j.Status, j.Result)
		}
	}
	if runs != 2 {
		t.Fatalf("runs %d", runs)
	}
}
