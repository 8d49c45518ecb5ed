package embed

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// counting is a deterministic fake embedder that records its calls.
type counting struct {
	calls, texts atomic.Int64
	maxBatch     atomic.Int64
	block        chan struct{} // when set, each call waits on it
	fail         atomic.Bool
}

func (c *counting) Name() string { return "counting" }
func (c *counting) Dim() int     { return 4 }
func (c *counting) Embed(ctx context.Context, texts []string) ([]Vector, error) {
	c.calls.Add(1)
	c.texts.Add(int64(len(texts)))
	for {
		m := c.maxBatch.Load()
		if int64(len(texts)) <= m || c.maxBatch.CompareAndSwap(m, int64(len(texts))) {
			break
		}
	}
	if c.block != nil {
		<-c.block
	}
	if c.fail.Load() {
		return nil, ErrUnavailable
	}
	out := make([]Vector, len(texts))
	for i, t := range texts {
		v := Vector{float32(len(t)), 1, 0, 0}
		Normalize(v)
		out[i] = v
	}
	return out, nil
}

func TestMemo(t *testing.T) {
	inner := &counting{}
	m, err := NewMemo(inner, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx := context.Background()
	if _, err := m.Embed(ctx, []string{"a", "bb"}); err != nil {
		t.Fatal(err)
	}
	m.c.Wait()
	vs, err := m.Embed(ctx, []string{"bb", "ccc", "a"})
	if err != nil {
		t.Fatal(err)
	}
	if inner.texts.Load() != 3 {
		t.Errorf("embedded %d texts, want 3 (a, bb once each, then ccc)", inner.texts.Load())
	}
	if c, r := m.Counts(); c != 3 || r != 2 {
		t.Errorf("Counts = %d computed, %d remembered; want 3 and 2 (bb and a from the memo)", c, r)
	}
	if vs[0][0] != vs[0][0] || len(vs) != 3 || Dot(vs[2], vs[2]) < 0.999 {
		t.Errorf("vectors %v", vs)
	}
	inner.fail.Store(true)
	if _, err := m.Embed(ctx, []string{"dddd"}); !errors.Is(err, ErrUnavailable) {
		t.Errorf("failure not passed on: %v", err)
	}
	if _, err := m.Embed(ctx, []string{"a"}); err != nil {
		t.Errorf("cached text failed while the embedder is down: %v", err)
	}
	if c, r := m.Counts(); c != 3 || r != 3 {
		t.Errorf("after a failed call and a remembered text: Counts = %d, %d; want 3 and 3", c, r)
	}
}

func TestBatcherBatchesUnderLoad(t *testing.T) {
	inner := &counting{block: make(chan struct{})}
	b := NewBatcher(inner, 1, 8)
	defer b.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, err := One(context.Background(), b, string(rune('a'+i)))
			if err == nil && len(v) != 4 {
				err = errors.New("bad vector")
			}
			errs <- err
		}()
	}
	// The first call blocks the only worker while the others queue up.
	deadline := time.Now().Add(5 * time.Second)
	for len(b.queue) < 19 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	close(inner.block)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if inner.maxBatch.Load() < 2 || inner.maxBatch.Load() > 8 {
		t.Errorf("largest batch %d, want 2..8", inner.maxBatch.Load())
	}
	if inner.calls.Load() >= 20 {
		t.Errorf("%d calls for 20 texts: no batching", inner.calls.Load())
	}
}

func TestBatcherCallerLeaves(t *testing.T) {
	inner := &counting{block: make(chan struct{})}
	b := NewBatcher(inner, 1, 4)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := One(ctx, b, "x"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want the caller's deadline", err)
	}
	close(inner.block)
	b.Close()
	if _, err := One(context.Background(), b, "y"); !errors.Is(err, ErrUnavailable) {
		t.Errorf("after Close: %v", err)
	}
}
