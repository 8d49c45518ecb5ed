package templates

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultPollInterval is the Watcher's interval when none is given.
const DefaultPollInterval = 2 * time.Second

// Watcher keeps the current Set of a directory: it polls the names, sizes
// and modification times of the template files and reloads when they
// change. A reload that fails keeps the previous Set and is logged once per
// change of the files; the Set never goes back to nothing. Current is safe
// to call from any goroutine.
type Watcher struct {
	dir      string
	interval time.Duration
	log      *slog.Logger

	cur atomic.Pointer[Set]

	mu      sync.Mutex // serialises reloads and guards the fields below
	fp      string     // fingerprint of the files last loaded or tried
	lastErr error      // error of the last reload, nil if it succeeded
	reloads uint64     // successful reloads after the first load
	fails   uint64     // failed reloads

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

// NewWatcher loads dir (see Load) and, if dir is not empty, starts a
// goroutine that polls it every interval (DefaultPollInterval if zero or
// negative). The first load must succeed. A nil logger means
// slog.Default(). Close stops the goroutine.
func NewWatcher(dir string, interval time.Duration, logger *slog.Logger) (*Watcher, error) {
	if interval <= 0 {
		interval = DefaultPollInterval
	}
	if logger == nil {
		logger = slog.Default()
	}
	w := &Watcher{
		dir:      dir,
		interval: interval,
		log:      logger,
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	fp, _ := fingerprint(dir)
	s, err := Load(dir)
	if err != nil {
		return nil, err
	}
	w.cur.Store(s)
	w.fp = fp
	if dir == "" {
		close(w.done)
		return w, nil
	}
	go w.run()
	return w, nil
}

// Current returns the Set in use. It is never nil.
func (w *Watcher) Current() *Set { return w.cur.Load() }

// Reload loads the directory now, whether or not the files changed, and
// swaps the Set in if it validates. It returns the load error (the previous
// Set stays in use).
func (w *Watcher) Reload() error {
	fp, _ := fingerprint(w.dir)
	return w.reload(fp)
}

// Err returns the error of the last reload, nil if it succeeded (then
// Current reflects the files on disk).
func (w *Watcher) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lastErr
}

// WatcherStats counts reloads since NewWatcher.
type WatcherStats struct {
	Reloads uint64 // successful reloads, the first load excluded
	Fails   uint64 // failed reloads
}

// Stats returns the reload counters.
func (w *Watcher) Stats() WatcherStats {
	w.mu.Lock()
	defer w.mu.Unlock()
	return WatcherStats{Reloads: w.reloads, Fails: w.fails}
}

// Close stops polling and waits for the goroutine to return. Current keeps
// working. It is safe to call more than once.
func (w *Watcher) Close() error {
	w.closeOnce.Do(func() { close(w.stop) })
	<-w.done
	return nil
}

func (w *Watcher) run() {
	defer close(w.done)
	t := time.NewTicker(w.interval)
	defer t.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
			w.poll()
		}
	}
}

// poll reloads when the fingerprint changed. A panic is logged and the
// loop goes on.
func (w *Watcher) poll() {
	defer func() {
		if r := recover(); r != nil {
			w.log.Error("templates: panic while polling; keeping the current set",
				"dir", w.dir, "panic", r, "stack", string(debug.Stack()))
		}
	}()
	fp, err := fingerprint(w.dir)
	w.mu.Lock()
	same := fp == w.fp
	w.mu.Unlock()
	if same {
		return
	}
	if err != nil {
		// The directory is unreadable (e.g. being replaced); reload reports it.
		w.log.Debug("templates: fingerprint", "dir", w.dir, "err", err)
	}
	_ = w.reload(fp) // logged
}

func (w *Watcher) reload(fp string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.fp = fp // a broken state is reported once, not at every poll
	s, err := Load(w.dir)
	if err != nil {
		w.fails++
		w.lastErr = err
		w.log.Error("templates: reload failed; keeping the previous templates", "dir", w.dir, "err", err)
		return err
	}
	w.reloads++
	w.lastErr = nil
	w.cur.Store(s)
	w.log.Info("templates: reloaded", "dir", w.dir, "templates", len(s.templates), "busy_messages", len(s.busy))
	return nil
}

// fingerprint hashes the names, sizes and modification times of the
// template files of dir. An unreadable directory has a fingerprint of its
// own, so that its recovery triggers a reload.
func fingerprint(dir string) (string, error) {
	if dir == "" {
		return "", nil
	}
	files, err := listFiles(dir)
	if err != nil {
		return "error: " + err.Error(), err
	}
	h := sha256.New()
	for _, f := range files {
		fmt.Fprintf(h, "%s\x00%d\x00%d\n", f.name, f.size, f.mtime)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
