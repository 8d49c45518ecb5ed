package app

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/edgecache/edgecache/cache/semantic"
	"github.com/edgecache/edgecache/embed"
)

// Retry bounds of lazyIndex: the first retry comes after lazyRetryMin, and
// each failure doubles the wait up to lazyRetryMax.
const (
	lazyRetryMin = time.Second
	lazyRetryMax = 30 * time.Second
)

// transient reports whether a failure to build the vector index is one
// that waiting can cure: the vector store or the embedder (probed for its
// dimension) is unreachable or too slow. Anything else (a collection of
// another dimension, a rejected payload index, a bad address) is a
// configuration error that start-up reports.
func transient(err error) bool {
	return errors.Is(err, semantic.ErrUnavailable) || errors.Is(err, embed.ErrUnavailable) ||
		errors.Is(err, context.DeadlineExceeded)
}

// lazyIndex is a vector index that could not be built at start-up because
// a dependency was down (Qdrant not reachable yet, the remote embedder not
// answering the dimension probe). A replica must not crash-loop over that:
// until a background retry builds the index, every call fails with
// semantic.ErrUnavailable, which the pipeline serves as exact-only, and
// State says why.
type lazyIndex struct {
	build func(context.Context) (semantic.Index, error)
	log   *slog.Logger

	mu      sync.RWMutex
	idx     semantic.Index // nil until built
	lastErr error

	cancel context.CancelFunc
	done   chan struct{}
}

var (
	_ semantic.Index  = (*lazyIndex)(nil)
	_ semantic.Purger = (*lazyIndex)(nil)
)

// startLazyIndex retries build in the background (first after
// lazyRetryMin, backing off to lazyRetryMax) until it succeeds or Close is
// called; firstErr is why the first attempt failed.
func startLazyIndex(build func(context.Context) (semantic.Index, error), firstErr error, log *slog.Logger) *lazyIndex {
	ctx, cancel := context.WithCancel(context.Background())
	l := &lazyIndex{build: build, log: log, lastErr: firstErr, cancel: cancel, done: make(chan struct{})}
	go l.retry(ctx, lazyRetryMin, lazyRetryMax)
	return l
}

func (l *lazyIndex) retry(ctx context.Context, wait, maxWait time.Duration) {
	defer close(l.done)
	for attempt := 2; ; attempt++ {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		idx, err := l.build(ctx)
		if err == nil {
			l.mu.Lock()
			l.idx, l.lastErr = idx, nil
			l.mu.Unlock()
			l.log.Info("semantic tier: vector index ready; semantic matching on", "attempt", attempt)
			return
		}
		if ctx.Err() != nil {
			return
		}
		l.mu.Lock()
		l.lastErr = err
		l.mu.Unlock()
		wait = min(2*wait, maxWait)
		l.log.Warn("semantic tier: vector index still unavailable; exact caching only", "err", err, "attempt", attempt, "retry_in", wait)
	}
}

// get returns the index, or ErrUnavailable while it is not built.
func (l *lazyIndex) get() (semantic.Index, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.idx == nil {
		return nil, semantic.ErrUnavailable
	}
	return l.idx, nil
}

// State is "up" once the index is built, else why it is not yet.
func (l *lazyIndex) State() string {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.idx != nil {
		return "up"
	}
	return "unavailable, retrying: " + l.lastErr.Error()
}

func (l *lazyIndex) Upsert(ctx context.Context, p semantic.Point) error {
	idx, err := l.get()
	if err != nil {
		return err
	}
	return idx.Upsert(ctx, p)
}

func (l *lazyIndex) Search(ctx context.Context, v []float32, f semantic.Filter, k int, minScore float32) ([]semantic.Match, error) {
	idx, err := l.get()
	if err != nil {
		return nil, err
	}
	return idx.Search(ctx, v, f, k, minScore)
}

func (l *lazyIndex) Delete(ctx context.Context, key string) error {
	idx, err := l.get()
	if err != nil {
		return err
	}
	return idx.Delete(ctx, key)
}

// Close stops the retries and closes the index if it was built.
func (l *lazyIndex) Close() error {
	l.cancel()
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.idx == nil {
		return nil
	}
	err := l.idx.Close()
	l.idx = nil
	l.lastErr = errors.New("closed")
	return err
}

// Purge purges the built index (both kinds are Purgers).
func (l *lazyIndex) Purge(ctx context.Context, namespace, route string) (int, error) {
	idx, err := l.get()
	if err != nil {
		return 0, err
	}
	pr, ok := idx.(semantic.Purger)
	if !ok {
		return 0, errors.New("the vector index cannot purge")
	}
	return pr.Purge(ctx, namespace, route)
}
