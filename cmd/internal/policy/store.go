package policy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/edgecache/edgecache/cmd/internal/config"
	"github.com/edgecache/edgecache/cmd/internal/pipeline"
)

// Config configures a Store.
type Config struct {
	Routes []config.Route // validated, defaults applied
	// File persists overrides and the audit trail without Redis. Empty →
	// nothing persists.
	File string
	// Redis, when set, stores overrides per region and propagates them.
	Redis  redis.UniversalClient
	Region string
	// Resync is how often the Redis hash is re-read. Zero → 3s.
	Resync time.Duration
	// Targets are the upstream targets whose weight and drain operators
	// may change at run time (SetTarget).
	Targets []*pipeline.Target
	Logger  *slog.Logger
}

// Store is the route policies in force. It is safe for concurrent use.
type Store struct {
	cfg   Config
	base  map[string]config.Route
	names []string
	cur   atomic.Pointer[map[string]*pipeline.Route]
	nsGen atomic.Pointer[map[string]int64] // purged tenant namespaces
	log   *slog.Logger

	targets map[string]*pipeline.Target // by name (names are unique)

	mu      sync.Mutex // serialises changes
	entries map[string]Entry
	audit   []Audit // newest last, bounded (local mode)
	// Bumped generation per tenant namespace (purges), kept like routes.
	onApply func() // test hook
}

const maxAudit = 1000

func (s *Store) hashKey() string     { return "edgecache:v1:routes:{" + s.cfg.Region + "}" }
func (s *Store) channel() string     { return "edgecache:v1:routes:{" + s.cfg.Region + "}:changed" }
func (s *Store) auditStream() string { return "edgecache:v1:routes-audit:{" + s.cfg.Region + "}" }

// New builds the store and applies persisted overrides (from Redis when
// configured, else from the file). A persisted override that no longer
// validates against the configuration is skipped with a warning.
func New(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.Resync == 0 {
		cfg.Resync = 3 * time.Second
	}
	if cfg.Region == "" {
		cfg.Region = "default"
	}
	s := &Store{cfg: cfg, base: map[string]config.Route{}, entries: map[string]Entry{}, log: cfg.Logger,
		targets: map[string]*pipeline.Target{}}
	for _, t := range cfg.Targets {
		s.targets[t.Name] = t
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	for _, r := range cfg.Routes {
		s.base[r.Name] = r
		s.names = append(s.names, r.Name)
	}
	entries := map[string]Entry{}
	switch {
	case cfg.Redis != nil:
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		e, err := s.readRedis(rctx)
		cancel()
		if err != nil {
			s.log.Warn("route policies: Redis unreachable at start, using the configured policies until it answers", "err", err)
		}
		entries = e
	case cfg.File != "":
		st, err := readFile(cfg.File)
		if err != nil {
			return nil, err
		}
		entries, s.audit = st.Routes, st.Audit
	}
	if err := s.install(entries); err != nil {
		return nil, err
	}
	return s, nil
}

// install compiles base+overrides for every route and swaps them in.
func (s *Store) install(entries map[string]Entry) error {
	next := make(map[string]*pipeline.Route, len(s.base))
	kept := map[string]Entry{}
	for _, name := range s.names {
		base := s.base[name]
		e, ok := entries[name]
		r := base
		gen := int64(0)
		if ok {
			applied, err := apply(base, e.Override)
			if err != nil {
				s.log.Warn("route policies: stored override no longer valid, ignored", "route", name, "err", err)
				ok = false
			} else {
				r, gen = applied, e.Override.Generation
			}
		}
		rt, err := compile(r, gen)
		if err != nil {
			return fmt.Errorf("route %q: %w", name, err)
		}
		// What shadow steering relaxes toward: the file's threshold, not
		// an override's.
		rt.Configured = float32(base.Cache.Semantic.Threshold)
		next[name] = rt
		if ok {
			kept[name] = e
		}
	}
	gens := map[string]int64{}
	for k, e := range entries {
		if ns, ok := strings.CutPrefix(k, nsPrefix); ok {
			kept[k] = e
			gens[ns] = e.Override.Generation
		}
	}
	s.installTargets(entries, kept)
	s.entries = kept
	s.nsGen.Store(&gens)
	s.cur.Store(&next)
	if s.onApply != nil {
		s.onApply()
	}
	return nil
}

// nsPrefix marks the entries that record tenant namespace purges.
const nsPrefix = "ns:"

// NamespaceGeneration is how many times a tenant namespace was purged; it
// is part of the namespace's cache keys (pipeline.Config.NamespaceGeneration).
func (s *Store) NamespaceGeneration(ns string) int64 {
	m := s.nsGen.Load()
	if m == nil {
		return 0
	}
	return (*m)[ns]
}

// PurgeNamespace makes every cached answer of a tenant namespace, on every
// route, unreachable (its key generation is bumped), and audits it.
func (s *Store) PurgeNamespace(ctx context.Context, ns, who string) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := nsPrefix + ns
	old := s.entries[k]
	e := Entry{Override: Override{Generation: old.Override.Generation + 1}, Version: old.Version + 1,
		UpdatedAt: time.Now().UTC(), UpdatedBy: who}
	if s.cfg.Redis != nil {
		var err error
		if e.Version, err = s.writeRedis(ctx, k, e); err != nil {
			return 0, fmt.Errorf("route policies: store in Redis: %w", err)
		}
	}
	entries := maps(s.entries)
	entries[k] = e
	if err := s.install(entries); err != nil {
		return 0, err
	}
	a := Audit{Time: e.UpdatedAt, Who: who, Route: "*", Action: "purge-namespace " + ns}
	if err := s.recordLocked(ctx, a); err != nil {
		return 0, err
	}
	return e.Override.Generation, nil
}

// Route implements server.Routes: the snapshot in force.
func (s *Store) Route(name string) *pipeline.Route { return (*s.cur.Load())[name] }

// Routes returns the snapshots in configuration order.
func (s *Store) Routes() []*pipeline.Route {
	m := *s.cur.Load()
	out := make([]*pipeline.Route, 0, len(s.names))
	for _, n := range s.names {
		out = append(out, m[n])
	}
	return out
}

// List returns every route's policy.
func (s *Store) List() []View {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]View, 0, len(s.names))
	for _, n := range s.names {
		out = append(out, s.viewLocked(n))
	}
	return out
}

// Get returns one route's policy.
func (s *Store) Get(name string) (View, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.base[name]; !ok {
		return View{}, ErrUnknownRoute
	}
	return s.viewLocked(name), nil
}

func (s *Store) viewLocked(name string) View {
	base := s.base[name]
	e, ok := s.entries[name]
	if !ok {
		return view(base, nil)
	}
	r, err := apply(base, e.Override)
	if err != nil {
		r = base
	}
	return view(r, &e)
}

// Patch changes a route's policy: patch is a JSON object of Override
// fields (null resets one to the configured value). who is the admin
// token's name, for the audit trail.
func (s *Store) Patch(ctx context.Context, name, who string, patch []byte) (View, error) {
	return s.change(ctx, name, who, "set", "", func(o Override) (Override, error) { return merge(o, patch) })
}

// Reset drops every override of a route.
func (s *Store) Reset(ctx context.Context, name, who string) (View, error) {
	return s.change(ctx, name, who, "reset", "", func(o Override) (Override, error) {
		return Override{Generation: o.Generation}, nil
	})
}

// Purge makes every cached answer of the route unreachable (its key
// generation is bumped; the old entries expire on their own).
func (s *Store) Purge(ctx context.Context, name, who string) (View, error) {
	return s.change(ctx, name, who, "purge", "", func(o Override) (Override, error) {
		o.Generation++
		return o, nil
	})
}

// ShadowUser is who the audit trail names for the threshold changes of
// shadow verification.
const ShadowUser = "shadow"

// ErrStale is returned by Steer when the threshold in force is no longer
// the one the evidence was measured at (the pipeline's ErrThresholdMoved).
var ErrStale = pipeline.ErrThresholdMoved

// Steer moves a route's semantic threshold from → to on the evidence of
// shadow verification (why, kept in the audit record), as a change by
// ShadowUser: an override like an operator's, stored and propagated to
// every replica the same way, undone by Reset. It refuses with ErrStale
// when the threshold in force is no longer from (an operator or another
// replica changed it meanwhile), so two replicas reading the same evidence
// do not both take a step. A route on the tier's default threshold (none
// set) is taken to be at from. to is kept to 4 decimals.
func (s *Store) Steer(ctx context.Context, name string, from, to float32, why string) error {
	t := math.Round(float64(to)*1e4) / 1e4
	_, err := s.change(ctx, name, ShadowUser, "steer", why, func(o Override) (Override, error) {
		if cur := (*s.cur.Load())[name]; cur != nil && cur.Threshold != 0 && math.Abs(float64(cur.Threshold-from)) > 1e-6 {
			return o, ErrStale
		}
		o.Threshold = &t
		return o, nil
	})
	return err
}

func (s *Store) change(ctx context.Context, name, who, action, reason string, f func(Override) (Override, error)) (View, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	base, ok := s.base[name]
	if !ok {
		return View{}, ErrUnknownRoute
	}
	before := s.viewLocked(name)
	old := s.entries[name]
	o, err := f(old.Override)
	if err != nil {
		return View{}, err
	}
	if _, err := apply(base, o); err != nil {
		return View{}, err
	}
	e := Entry{Override: o, Version: old.Version + 1, UpdatedAt: time.Now().UTC(), UpdatedBy: who}
	if s.cfg.Redis != nil {
		if e.Version, err = s.writeRedis(ctx, name, e); err != nil {
			return View{}, fmt.Errorf("route policies: store in Redis: %w", err)
		}
	}
	entries := maps(s.entries)
	entries[name] = e
	if err := s.install(entries); err != nil {
		return View{}, err
	}
	after := s.viewLocked(name)
	a := Audit{Time: e.UpdatedAt, Who: who, Route: name, Action: action, Reason: reason, Before: &before, After: &after}
	if err := s.recordLocked(ctx, a); err != nil {
		return View{}, err
	}
	s.log.Info("route policy changed", "route", name, "by", who, "action", action, "version", e.Version)
	return after, nil
}

// recordLocked appends a to the audit trail (Redis's stream, or the local
// list persisted with the overrides in the file); s.mu is held.
func (s *Store) recordLocked(ctx context.Context, a Audit) error {
	if s.cfg.Redis != nil {
		s.appendAuditRedis(ctx, a)
		return nil
	}
	s.audit = append(s.audit, a)
	if len(s.audit) > maxAudit {
		s.audit = slices.Clone(s.audit[len(s.audit)-maxAudit:])
	}
	if s.cfg.File != "" {
		if err := writeFile(s.cfg.File, fileState{Routes: s.entries, Audit: s.audit}); err != nil {
			return fmt.Errorf("route policies: persist: %w", err)
		}
	}
	return nil
}

func maps(m map[string]Entry) map[string]Entry {
	out := make(map[string]Entry, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// Audit returns changes, newest first, optionally for one route (or one
// upstream target, "<pool>/<name>"; "upstreams" for every target) and
// since a time, at most limit (0 → 100).
func (s *Store) Audit(ctx context.Context, route string, since time.Time, limit int) ([]Audit, error) {
	if limit <= 0 {
		limit = 100
	}
	var all []Audit
	if s.cfg.Redis != nil {
		var err error
		if all, err = s.readAuditRedis(ctx, limit*4); err != nil {
			return nil, err
		}
	} else {
		s.mu.Lock()
		all = slices.Clone(s.audit)
		s.mu.Unlock()
		slices.Reverse(all)
	}
	out := []Audit{}
	for _, a := range all {
		match := route == "" || a.Route == route || a.Target == route || route == AuditUpstreams && a.Target != ""
		if match && !a.Time.Before(since) {
			out = append(out, a)
			if len(out) == limit {
				break
			}
		}
	}
	return out, nil
}

// fileState is the local persistence format.
type fileState struct {
	Version int              `json:"version"`
	Routes  map[string]Entry `json:"routes"`
	Audit   []Audit          `json:"audit"`
}

func readFile(path string) (fileState, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return fileState{Routes: map[string]Entry{}}, nil
	}
	if err != nil {
		return fileState{}, fmt.Errorf("route policies %s: %w", path, err)
	}
	var st fileState
	if err := json.Unmarshal(b, &st); err != nil {
		return fileState{}, fmt.Errorf("route policies %s: %w", path, err)
	}
	if st.Routes == nil {
		st.Routes = map[string]Entry{}
	}
	return st, nil
}

// writeFile replaces the file atomically (temp file + rename).
func writeFile(path string, st fileState) error {
	st.Version = 1
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".routes-*")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), path)
}
