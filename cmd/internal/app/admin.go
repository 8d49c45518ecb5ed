package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgecache/edgecache/cache"
	"github.com/edgecache/edgecache/cache/semantic"
	"github.com/edgecache/edgecache/cmd/internal/policy"

	"github.com/edgecache/edgecache/cmd/internal/pipeline"
	"github.com/edgecache/edgecache/cmd/internal/server"
	"github.com/edgecache/edgecache/cmd/internal/telemetry"
	"github.com/edgecache/edgecache/degrade"
	"github.com/edgecache/edgecache/degrade/journal"
	"github.com/edgecache/edgecache/templates"
)

// journalSink adapts the pipeline's degraded answers to journal records.
type journalSink struct{ j *journal.Journal }

// Degraded implements pipeline.Journal.
func (s journalSink) Degraded(d *pipeline.Degraded) {
	r := journal.Record{
		Time: d.Time, RequestID: d.RequestID, Tenant: d.Tenant, Lane: d.Lane, Route: d.Route,
		ModelRequested: d.Model, Rung: journal.Rung(d.Rung), Reason: d.Reason, Status: d.Status,
		RetryAfterSeconds: int((d.RetryAfter + time.Second - 1) / time.Second), BytesStreamed: d.BytesStreamed,
	}
	if f := d.Failure; f != nil {
		r.UpstreamStatus, r.ErrorClass, r.BreakerState = f.Status, f.Reason, f.Breaker
		for _, a := range f.Attempts {
			r.Attempts = append(r.Attempts, journal.Attempt{Target: a.Target, Pool: a.Pool, Status: a.Status,
				TTFTMillis: a.TTFT.Milliseconds(), DurationMillis: a.Duration.Milliseconds(),
				RetryAfterSeconds: int(a.RetryAfter / time.Second), Error: a.Err})
			r.Upstream = a.Target
		}
	}
	if d.CacheKey != "" || d.Similarity > 0 || d.CacheAge > 0 || d.MatchedHash != "" {
		r.Cache = &journal.Cache{Key: d.CacheKey, AgeSeconds: int64(d.CacheAge / time.Second), Similarity: d.Similarity,
			Score: d.Score, Disclosed: d.Disclosed, MatchedHash: d.MatchedHash}
	}
	if d.SDKRetryCount > 0 || d.ClientTimeout > 0 {
		r.Client = &journal.Client{SDKRetryCount: d.SDKRetryCount, TimeoutMillis: d.ClientTimeout.Milliseconds()}
	}
	s.j.Record(r)
}

// Job implements pipeline.JobJournal: a record of rung job whose reason
// is the state change.
func (s journalSink) Job(e *pipeline.JobEvent) {
	r := journal.Record{
		Time: e.Time, Tenant: e.Tenant, Lane: e.Lane, Route: e.Route, ModelRequested: e.Model,
		Rung: journal.RungJob, Reason: e.Event, Status: e.Status,
		Job: &journal.Job{ID: e.ID, Position: e.Position, WaitMillis: e.Wait.Milliseconds(), RunMillis: e.Run.Milliseconds(),
			Attempts: e.Attempts, Outcome: e.Outcome, ResultStatus: e.Status},
	}
	if e.Event == journal.JobQueued {
		r.Job.ResultStatus = 0 // Status is the acceptance's
	}
	s.j.Record(r)
}

// adminAPI implements server.AdminAPI.
type adminAPI struct {
	targets  []*pipeline.Target
	journal  *journal.Journal
	policies *policy.Store
	cache    *cache.Tiered
	index    semantic.Index // nil without a semantic tier
	stats    *lookupStats
	secret   func() []byte // tenant namespace HMAC key in force (it may change: tenantSecret)
	// shadow reports a route's shadow verification (Pipeline.ShadowStats);
	// nil → none shown.
	shadow func(route string) (pipeline.ShadowStats, bool)
	// pools returns the upstream pools (Pipeline.Pools); nil → none shown.
	pools func() []*pipeline.Pool
	log   *slog.Logger // nil → discard
}

type upstreamView struct {
	Target          string                `json:"target"`
	Breaker         degrade.BreakerStatus `json:"breaker"`
	RequestsActive  int64                 `json:"requests_in_flight"`
	RetriesInFlight int64                 `json:"retries_in_flight"`
	CooldownSeconds float64               `json:"cooldown_remaining_s"`
	Limiter         any                   `json:"limiter,omitempty"`
}

// Upstreams implements server.AdminAPI.
func (a *adminAPI) Upstreams() any {
	out := make([]upstreamView, 0, len(a.targets))
	for _, t := range a.targets {
		req, ret := t.Budget.InFlight()
		v := upstreamView{Target: t.Name, Breaker: t.Breaker.Status(), RequestsActive: req,
			RetriesInFlight: ret, CooldownSeconds: t.Breaker.Remaining().Seconds()}
		if t.Concurrency != nil {
			v.Limiter = t.Concurrency.Stats()
		}
		out = append(out, v)
	}
	res := map[string]any{"upstreams": out}
	if a.pools != nil {
		now := time.Now()
		var pv []pipeline.PoolStatus
		for _, pl := range a.pools() {
			v := pipeline.PoolStatus{Name: pl.Name, Balance: pl.Balance, Targets: []pipeline.PoolTargetStatus{}}
			if h := pl.Health; h.Interval > 0 {
				v.HealthCheck = &pipeline.HealthCheckStatus{Path: h.Path, Interval: h.Interval.Seconds(), Unhealthy: h.Unhealthy, Healthy: h.Healthy}
			}
			for _, t := range pl.Targets {
				tv := pipeline.PoolTargetStatus{TargetStatus: t.Status(now)}
				if a.policies != nil {
					if rt, err := a.policies.Target(pl.Name, t.Name); err == nil {
						tv.UpdatedAt, tv.UpdatedBy = rt.UpdatedAt, rt.UpdatedBy
					}
				}
				v.Targets = append(v.Targets, tv)
			}
			pv = append(pv, v)
		}
		res["pools"] = pv
	}
	return res
}

// Degradations implements server.AdminAPI: since/until take RFC 3339 times
// or durations back from now ("1h"); route, tenant, rung, reason filter
// exactly; limit caps the newest-first list.
func (a *adminAPI) Degradations(ctx context.Context, v url.Values) (any, error) {
	q, err := parseJournalQuery(v, time.Now())
	if err != nil {
		return nil, &server.BadQuery{Msg: err.Error()}
	}
	if q.Rung != "" && !q.Rung.Valid() {
		return nil, &server.BadQuery{Msg: fmt.Sprintf("rung=%q: want one of %v", q.Rung, journal.Rungs())}
	}
	recs, err := a.journal.Query(ctx, q)
	out := map[string]any{}
	switch {
	case errors.Is(err, journal.ErrPartial): // Redis unreadable: the local records, with a warning
		out["warning"] = err.Error()
	case err != nil:
		return nil, err
	}
	if recs == nil {
		recs = []journal.Record{}
	}
	out["degradations"], out["count"] = recs, len(recs)
	return out, nil
}

func parseJournalQuery(v url.Values, now time.Time) (journal.Query, error) {
	q := journal.Query{Route: v.Get("route"), Tenant: v.Get("tenant"), Rung: journal.Rung(v.Get("rung")), Reason: v.Get("reason")}
	parseTime := func(name string) (time.Time, error) {
		s := v.Get(name)
		if s == "" {
			return time.Time{}, nil
		}
		if d, err := time.ParseDuration(s); err == nil {
			return now.Add(-d), nil
		}
		t, err := time.Parse(time.RFC3339, s)
		if err != nil {
			return time.Time{}, fmt.Errorf("%s=%q: want an RFC 3339 time or a duration such as 1h", name, s)
		}
		return t, nil
	}
	var err error
	if q.Since, err = parseTime("since"); err != nil {
		return q, err
	}
	if q.Until, err = parseTime("until"); err != nil {
		return q, err
	}
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 10000 {
			return q, fmt.Errorf("limit=%q: want 1..10000", s)
		}
		q.Limit = n
	}
	return q, nil
}

// templateWords adapts the templates watcher to pipeline.Templates.
type templateWords struct{ w *templates.Watcher }

func (t templateWords) Lang(text string) string { return templates.DetectLang(text) }

func (t templateWords) Match(route, lang, text string) (string, string, bool) {
	m, ok := t.w.Current().Match(route, lang, text)
	if !ok {
		return "", "", false
	}
	return m.Text, m.ID, true
}

func (t templateWords) Busy(route, lang string, retryAfter time.Duration, reason string) string {
	return t.w.Current().Busy(route, lang, retryAfter, reason)
}

// Routes implements server.AdminAPI.
func (a *adminAPI) Routes() any {
	list := a.policies.List()
	out := make([]routeView, 0, len(list))
	for _, v := range list {
		out = append(out, a.withShadow(v))
	}
	return map[string]any{"routes": out}
}

// SetTarget implements server.TargetChanger.
func (a *adminAPI) SetTarget(ctx context.Context, pool, name, who string, body []byte) (any, error) {
	v, err := a.policies.SetTarget(ctx, pool, name, who, body)
	if err != nil {
		return nil, policyErr(err)
	}
	return v, nil
}

var _ server.TargetChanger = (*adminAPI)(nil)

func policyErr(err error) error {
	var inv *policy.InvalidError
	switch {
	case errors.Is(err, policy.ErrUnknownRoute):
		return &server.NotFound{Msg: "no such route"}
	case errors.Is(err, policy.ErrUnknownTarget):
		return &server.NotFound{Msg: "no such target in this upstream pool"}
	case errors.As(err, &inv):
		return &server.BadQuery{Msg: inv.Msg}
	}
	return err
}

// Route implements server.AdminAPI: the policy, and the shadow
// verification of a semantic route.
func (a *adminAPI) Route(name string) (any, error) {
	v, err := a.policies.Get(name)
	if err != nil {
		return nil, policyErr(err)
	}
	return a.withShadow(v), nil
}

// PatchRoute implements server.AdminAPI.
func (a *adminAPI) PatchRoute(ctx context.Context, name, who string, body []byte) (any, error) {
	v, err := a.policies.Patch(ctx, name, who, body)
	return v, policyErr(err)
}

// PurgeRoute implements server.AdminAPI: the route's exact entries become
// unreachable (key generation) and its semantic points are deleted.
func (a *adminAPI) PurgeRoute(ctx context.Context, name, who string) (any, error) {
	v, err := a.policies.Purge(ctx, name, who)
	if err != nil {
		return nil, policyErr(err)
	}
	out := map[string]any{"route": v}
	if pr, ok := a.index.(semantic.Purger); ok && a.index != nil {
		n, err := pr.Purge(ctx, "", name)
		out["semantic_points_deleted"] = n
		if err != nil {
			out["warning"] = "semantic index purge: " + err.Error()
		}
	}
	return out, nil
}

// RouteAudit implements server.AdminAPI.
func (a *adminAPI) RouteAudit(ctx context.Context, v url.Values) (any, error) {
	var since time.Time
	if s := v.Get("since"); s != "" {
		q, err := parseJournalQuery(url.Values{"since": {s}}, time.Now())
		if err != nil {
			return nil, &server.BadQuery{Msg: err.Error()}
		}
		since = q.Since
	}
	limit, _ := strconv.Atoi(v.Get("limit"))
	recs, err := a.policies.Audit(ctx, v.Get("route"), since, limit)
	if err != nil {
		return nil, err
	}
	return map[string]any{"audit": recs, "count": len(recs)}, nil
}

// CacheEntry implements server.AdminAPI.
func (a *adminAPI) CacheEntry(ctx context.Context, key string) (any, error) {
	if !validKey(key) {
		return nil, &server.BadQuery{Msg: "a cache key is 64 hex characters"}
	}
	e, err := a.cache.GetStale(ctx, cache.Key(key), 365*24*time.Hour)
	if err != nil {
		return nil, &server.NotFound{Msg: "no entry under this key"}
	}
	now := time.Now()
	preview := e.Body
	if len(preview) > 2048 {
		preview = preview[:2048]
	}
	return map[string]any{"key": key, "status": e.Status, "headers": e.Header, "bytes": len(e.Body),
		"stored_at": e.StoredAt, "expires_at": e.ExpiresAt, "age_s": int64(e.Age(now) / time.Second),
		"fresh": e.TTL(now) > 0, "tier": e.Tier, "body_preview": string(preview)}, nil
}

// EvictEntry implements server.AdminAPI.
func (a *adminAPI) EvictEntry(ctx context.Context, key string) error {
	if !validKey(key) {
		return &server.BadQuery{Msg: "a cache key is 64 hex characters"}
	}
	err := a.cache.Delete(ctx, cache.Key(key))
	if a.index != nil {
		_ = a.index.Delete(ctx, key)
	}
	return err
}

func validKey(k string) bool {
	if len(k) != 64 {
		return false
	}
	for _, c := range k {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// lookupStats counts cache lookups per route and tier for the review page
// (the same events /metrics exports), on top of the telemetry metrics.
type lookupStats struct {
	pipeline.Metrics
	since time.Time
	mu    sync.RWMutex
	order []routeTier
	m     map[routeTier]*[2]atomic.Int64 // hits, misses
}

type routeTier struct{ route, tier string }

func newLookupStats(m pipeline.Metrics) *lookupStats {
	return &lookupStats{Metrics: m, since: time.Now().UTC(), m: map[routeTier]*[2]atomic.Int64{}}
}

// CacheLookup implements pipeline.Metrics.
func (l *lookupStats) CacheLookup(route, tier, result string) {
	l.Metrics.CacheLookup(route, tier, result)
	k := routeTier{route, tier}
	l.mu.RLock()
	c := l.m[k]
	l.mu.RUnlock()
	if c == nil {
		l.mu.Lock()
		if c = l.m[k]; c == nil {
			c = new([2]atomic.Int64)
			l.m[k] = c
			l.order = append(l.order, k)
		}
		l.mu.Unlock()
	}
	if result == "hit" {
		c[0].Add(1)
	} else {
		c[1].Add(1)
	}
}

type tierStats struct {
	Route    string  `json:"route"`
	Tier     string  `json:"tier"`
	Hits     int64   `json:"hits"`
	Misses   int64   `json:"misses"`
	HitRatio float64 `json:"hit_ratio"`
}

// CacheStats is what server.CacheStatser asks for: hits and misses per
// route and tier since start, in first-seen order.
func (a *adminAPI) CacheStats() any {
	out := map[string]any{"since": a.stats.since.Format(time.RFC3339)}
	a.stats.mu.RLock()
	defer a.stats.mu.RUnlock()
	rows := make([]tierStats, 0, len(a.stats.order))
	for _, k := range a.stats.order {
		c := a.stats.m[k]
		h, m := c[0].Load(), c[1].Load()
		r := tierStats{Route: k.route, Tier: k.tier, Hits: h, Misses: m}
		if h+m > 0 {
			r.HitRatio = float64(h) / float64(h+m)
		}
		rows = append(rows, r)
	}
	out["tiers"] = rows
	if s, ok := a.stats.Metrics.(interface{ Saved() []telemetry.Saved }); ok {
		saved := []map[string]any{}
		for _, r := range s.Saved() {
			saved = append(saved, map[string]any{"route": r.Route, "tenant": r.Tenant, "hits": r.Hits,
				"input_tokens": r.InputTokens, "output_tokens": r.OutputTokens, "cost": r.Cost, "currency": r.Currency})
		}
		out["saved"] = saved
	}
	return out
}

// PurgeCache implements server.AdminAPI: body {"route": R} purges a route;
// {"namespace": NS} or {"api_key": K} purges one tenant's answers on every
// route (exact entries by key generation, semantic points deleted).
func (a *adminAPI) PurgeCache(ctx context.Context, who string, body []byte) (any, error) {
	var req struct {
		Route     string `json:"route"`
		Namespace string `json:"namespace"`
		APIKey    string `json:"api_key"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, &server.BadQuery{Msg: "the body must be a JSON object with route, namespace or api_key"}
	}
	if req.APIKey != "" {
		req.Namespace = pipeline.Namespace(a.secret(), req.APIKey)
	}
	switch {
	case req.Route != "" && req.Namespace == "":
		return a.PurgeRoute(ctx, req.Route, who)
	case req.Namespace != "" && req.Route == "":
		gen, err := a.policies.PurgeNamespace(ctx, req.Namespace, who)
		if err != nil {
			return nil, err
		}
		out := map[string]any{"namespace": req.Namespace, "generation": gen}
		if pr, ok := a.index.(semantic.Purger); ok && a.index != nil {
			n, err := pr.Purge(ctx, req.Namespace, "")
			out["semantic_points_deleted"] = n
			if err != nil {
				out["warning"] = "semantic index purge: " + err.Error()
			}
		}
		return out, nil
	}
	return nil, &server.BadQuery{Msg: "give either route, or namespace (or api_key)"}
}
