// Package pipeline is edgecache's request flow, free of any HTTP framework:
//
//	validate → route policy → exact key → L1 → L2 → coalesced upstream call
//	→ respond (streaming as events arrive) → store complete answers
//
// The server hands each request to Serve with the route's immutable policy
// snapshot. Cache trouble is a miss, never an error; upstream failures are
// answered with a true status in the OpenAI error shape; only complete 2xx
// answers are stored, through the cache's bounded write queue.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgecache/edgecache/cache"
	"github.com/edgecache/edgecache/cmd/internal/openai"
	"github.com/edgecache/edgecache/degrade/admission"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// Getter is the read side of the tiered cache.
type Getter interface {
	Get(ctx context.Context, k cache.Key) (cache.Entry, error)
}

// Storer is the write side of the tiered cache: Store enqueues and never
// blocks; false means the write was dropped.
type Storer interface {
	Store(k cache.Key, e cache.Entry, ttl time.Duration) bool
}

// Cache is what the pipeline needs of the tiered cache.
type Cache interface {
	Getter
	Storer
}

// Metrics receives the pipeline's measurements. Implementations must be
// cheap and safe for concurrent use; attribute values are route names and
// fixed words, never keys or prompts.
type Metrics interface {
	// CacheLookup counts one tier consulted: result is "hit" or "miss".
	CacheLookup(route, tier, result string)
	// Bypass counts a request that skipped the cache, with the reason.
	Bypass(route, reason string)
	// SemanticSkipped counts a request on a semantic route that stayed
	// exact-only, with the reason ("coverage").
	SemanticSkipped(route, reason string)
	// UpstreamCall records one call to the model: status 0 means no
	// response (errKind says why).
	UpstreamCall(route string, status int, errKind string, d time.Duration)
	// Coalesced counts a request that joined another request's call.
	Coalesced(route string)
	// StoreDropped counts an answer the full write queue could not take.
	StoreDropped(route string)
	// Degraded counts a degraded answer by rung and reason.
	Degraded(route, rung, reason string)
	// TTFT records an upstream answer's time to first token.
	TTFT(route, target string, d time.Duration)
	// Shed counts a request refused by admission, by lane and reason
	// (shed, rate_limit_exceeded, insufficient_quota, queued_timeout).
	Shed(lane, reason string)
	// TokenUsage records a model call's duration, with the GenAI operation
	// name and the requested and answering model, and a complete answer's
	// token usage (-1: not reported). errType is "" for a complete answer,
	// else why the call failed (input, output -1; no response model).
	TokenUsage(route, operation, requestModel, responseModel string, input, output int64, d time.Duration, errType string)
	// CacheSaved records the usage stored with an answer served from the
	// cache: tokens the model did not process, for tenant (the caller's
	// namespace hash, "" anonymous).
	CacheSaved(route, tenant, model string, input, output int64)
}

// Config configures a Pipeline.
type Config struct {
	Cache Cache    // nil → no caching
	Tiers []string // names of the cache's tiers in lookup order, for metrics
	// Targets are the upstreams, primary first; at least one.
	Targets []*Target
	// Pools group the targets and balance within each; empty → one pool
	// of Targets tried in order (failover). The first is the default for
	// requests no model route matches. Every pool's targets must also be
	// in Targets.
	Pools []*Pool
	// Models routes requests by model to pools; when set, a model no
	// route matches is answered 404 model_not_found.
	Models []ModelRoute
	Guard  GuardConfig
	// Secret keys tenant namespaces (HMAC of the client's API key); see
	// also Pipeline.SetSecret.
	Secret []byte
	// MaxBodyBytes bounds request bodies (413 above). Zero → 8 MiB.
	MaxBodyBytes int64
	// Timeout bounds a non-streamed upstream answer. Zero → 120s.
	Timeout time.Duration
	// StreamIdleTimeout bounds silence between stream events. Zero → 60s.
	StreamIdleTimeout time.Duration
	// RecentFor keeps a just-stored answer in memory for the time its
	// write takes to reach the cache tiers. Zero → 2s.
	RecentFor time.Duration
	// Semantic enables the semantic tier for routes in mode semantic.
	Semantic *SemanticConfig
	// Shadow verifies sampled semantic hits upstream (shadow.go); nil, or
	// no semantic tier → off.
	Shadow *ShadowConfig
	// Templates gives words to the template and busy rungs; nil → built-in
	// English busy message, no templates.
	Templates Templates
	// Journal receives every degraded answer; nil → none.
	Journal Journal
	// Admission applies quotas, lanes and self-protection; nil → none.
	Admission *AdmissionConfig
	// Tracer makes the spans of embedding, vector search and each upstream
	// attempt; nil → no spans.
	Tracer trace.Tracer
	// Jobs runs the background requests of routes that enable jobs at
	// the edge (pipeline/jobs.go); nil → they are passed through.
	Jobs *JobsConfig
	// NamespaceGeneration returns how often a tenant namespace was purged
	// (part of its keys); nil → never.
	NamespaceGeneration func(ns string) int64
	Metrics             Metrics      // nil → none
	Logger              *slog.Logger // nil → discard
	Now                 func() time.Time
}

// Pipeline serves proxied requests. It is safe for concurrent use.
type Pipeline struct {
	cfg     Config
	flights flights
	recent  recent
	aliases *aliases
	sem     *semanticTier // nil: no semantic tier
	shadow  *shadower     // nil: no shadow verification
	wg      sync.WaitGroup
	log     *slog.Logger
	logs    logLimiter  // the guard's rate-limited lines
	trs     transitions // breaker changes waiting for a request's log line
	m       Metrics
	keys    atomic.Pointer[keyring] // the secret of tenant namespaces and key ids (SetSecret)
	legacy  *Pool                   // Targets in order, when no Pools are configured
	// legacyChain is []*Pool{legacy}, made once (defaultChain).
	legacyChain []*Pool
	jobs        *jobRunner // nil: background requests passed through
	models      modelLists // the pools' own model lists (models.go)
	started     int64      // unix seconds: "created" of configured models
}

// New returns a Pipeline for cfg.
func New(cfg Config) *Pipeline {
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = 8 << 20
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 120 * time.Second
	}
	g := &cfg.Guard
	if g.MaxAttempts == 0 {
		g.MaxAttempts = 3
	}
	if g.TTFTTimeout == 0 {
		g.TTFTTimeout = cfg.Timeout
	}
	if g.DeadlineMargin == 0 {
		g.DeadlineMargin = 500 * time.Millisecond
	}
	if g.MaxRetryWait == 0 {
		g.MaxRetryWait = time.Second
	}
	if cfg.StreamIdleTimeout == 0 {
		cfg.StreamIdleTimeout = 60 * time.Second
	}
	if cfg.RecentFor == 0 {
		cfg.RecentFor = 2 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	p := &Pipeline{cfg: cfg, log: cfg.Logger, m: cfg.Metrics,
		legacy: &Pool{Name: "default", Balance: BalanceFailover, Targets: cfg.Targets}}
	p.legacyChain = []*Pool{p.legacy}
	p.keys.Store(newKeyring(cfg.Secret))
	p.started = cfg.Now().Unix()
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	if p.m == nil {
		p.m = nopMetrics{}
	}
	p.logs = logLimiter{every: logEvery, now: cfg.Now}
	for _, t := range cfg.Targets {
		t.Breaker.Observe(p.trs.add)
	}
	if p.cfg.Tracer == nil {
		p.cfg.Tracer = tracenoop.NewTracerProvider().Tracer("")
	}
	if cfg.Semantic != nil && cfg.Cache != nil {
		p.sem = newSemanticTier(*cfg.Semantic)
		if cfg.Shadow != nil {
			p.shadow = newShadower(p, *cfg.Shadow)
			p.m = shadowObserver{Metrics: p.m, s: p.shadow}
		}
	}
	if cfg.Cache != nil {
		p.aliases = newAliases()
	}
	if cfg.Jobs != nil {
		if err := p.startJobs(cfg.Jobs); err != nil {
			p.log.Error("background jobs off: background requests are passed through", "err", err)
		}
	}
	return p
}

// Close waits for upstream calls still running (their answers may still be
// stored), then for the semantic index writes still queued, until ctx is
// done.
func (p *Pipeline) Close(ctx context.Context) error {
	if p.jobs != nil {
		if err := p.jobs.q.Close(); err != nil {
			p.log.Error("background jobs not saved", "err", err)
		}
	}
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("pipeline close: %w", ctx.Err())
	}
	var err error
	if p.shadow != nil {
		p.shadow.close()
	}
	if p.sem != nil {
		err = p.sem.close(ctx)
	}
	for _, t := range p.cfg.Targets {
		t.Client.CloseIdle()
	}
	return err
}

// Serve answers one proxied request for route rt.
func (p *Pipeline) Serve(w http.ResponseWriter, r *http.Request, rt *Route) {
	w = errorShape(w, rt)
	if p.jobsOn(rt) {
		if id, action, ok := jobID(rt, r); ok {
			p.serveJob(w, r, rt, id, action)
			return
		}
	}
	if storedResponse(rt, r) {
		p.passStoredResponse(w, r, rt)
		return
	}
	if rt.API == openai.APIModels && len(p.cfg.Models) > 0 && r.Method == http.MethodGet {
		p.serveModels(w, r, rt) // the models this edge routes (models.go)
		return
	}
	if rt.API == openai.APIModels || r.Method == http.MethodGet {
		p.forward(w, r, &pending{rt: rt, usage: -1}, nil, passThrough, "edgecache; fwd=bypass; detail=passthrough")
		return
	}
	if rt.Templated() && !rt.matches(r.URL.Path) {
		// An escaped "/" inside a {name} segment: its value would not be
		// one segment upstream.
		openai.WriteError(w, http.StatusBadRequest, 0, openai.NewError(openai.TypeInvalidRequest, "invalid_path", "",
			fmt.Sprintf("The path %q does not match %s: a path parameter must not contain /.", r.URL.Path, rt.Path)))
		return
	}
	if err := checkContentType(r); err != nil {
		openai.WriteError(w, http.StatusUnsupportedMediaType, 0,
			openai.NewError(openai.TypeInvalidRequest, "unsupported_media_type", "", err.Error()))
		return
	}
	body, status, err := readBody(w, r, p.cfg.MaxBodyBytes)
	if err != nil {
		code := "invalid_body"
		switch status {
		case http.StatusRequestEntityTooLarge:
			code = "request_too_large"
		case http.StatusRequestTimeout:
			code = "request_timeout"
		}
		openai.WriteError(w, status, 0, openai.NewError(openai.TypeInvalidRequest, code, "", err.Error()))
		return
	}
	c := p.identify(r)
	if c.known {
		noteTenant(r.Context(), c.keyID())
	}
	ns := p.namespace(rt, c)
	part := rt.partition(r.Header)
	scope := rt.scope(r, part)
	var ak string
	if p.aliasable(rt, r) {
		ak = aliasKey(rt, ns, scope, body)
		if al, ok := p.aliases.c.Get(ak); ok && p.serveAlias(w, r, rt, al, len(body), c) {
			return
		}
	}
	req, err := openai.ParseRequestFor(rt.API, body, rt.Templated()) // a templated path may name the model
	if err != nil {
		var ie *openai.InvalidRequestError
		if errors.As(err, &ie) {
			openai.WriteError(w, http.StatusBadRequest, 0, openai.NewError(openai.TypeInvalidRequest, ie.Code, ie.Param, ie.Msg))
		} else {
			openai.WriteError(w, http.StatusBadRequest, 0, openai.NewError(openai.TypeInvalidRequest, "invalid_request", "", err.Error()))
		}
		return
	}
	if rt.API == openai.APIJSON {
		req.Stream = req.StreamRequested() // relayed, never stored (bypass)
	}
	if p.unknownModel(req.Model) {
		openai.WriteError(w, http.StatusNotFound, 0, openai.NewError(openai.TypeInvalidRequest, "model_not_found", "model",
			fmt.Sprintf("The model %q does not exist or you do not have access to it.", req.Model)))
		return
	}
	if p.jobsOn(rt) && c.known && wantsJob(rt, r, req) {
		p.submitJob(w, r, rt, req, body, c) // run later, through Serve
		return
	}
	adm, ok := p.admit(w, r, rt, req, len(body), c)
	if !ok {
		return
	}
	pd := &pending{rt: rt, req: req, adm: adm, lane: adm.lane.String(), ns: ns, usage: -1}
	defer func() { p.done(r.Context(), adm, pd.usage) }()
	dir := requestDirectives(r.Header)
	if reason := p.bypass(rt, r, req); reason != "" {
		if dir.onlyIfCached {
			writeOnlyIfCached(w, rt)
			return
		}
		p.m.Bypass(rt.Name, reason)
		p.forward(w, r, pd, body, passThrough, "edgecache; fwd=bypass; detail="+reason)
		return
	}
	pd.key = exactKey(rt, pd.ns, scope, req)
	if dir.onlyIfCached && rt.hidden() {
		// A route that does not say whether an answer was cached does not
		// answer only-if-cached either: 200 or 504 would tell.
		writeOnlyIfCached(w, rt)
		return
	}
	if noCache(r) {
		// Not served from the cache; the fresh complete answer replaces
		// the stored one (on a shared route, for every tenant).
		if dir.onlyIfCached {
			writeOnlyIfCached(w, rt)
			return
		}
		p.m.Bypass(rt.Name, "no-cache")
		pd.q = p.semanticQuery(rt, r, req, pd.ns, part)
		p.forward(w, r, pd, body, refresh, "edgecache; fwd=request; detail=no-cache")
		return
	}
	if ak != "" {
		p.aliases.c.Set(ak, alias{key: pd.key, api: req.API, stream: req.Stream, includeUsage: req.IncludeUsage}, 1)
	}
	if e, ok := p.lookup(r.Context(), rt, pd.key); ok {
		why := dir.refuses(e, p.cfg.Now())
		if why == "" {
			pd.usage = 0 // the model did no work
			p.hit(w, r, rt, req, e, e.Tier, -1)
			p.saved(rt, c, e)
			return
		}
		if dir.onlyIfCached {
			writeOnlyIfCached(w, rt)
			return
		}
		// Too old for this request (pipeline/directives.go): a call of its
		// own, whose answer replaces the entry.
		p.m.Bypass(rt.Name, why)
		pd.q = p.semanticQuery(rt, r, req, pd.ns, part)
		p.forward(w, r, pd, body, refresh, "edgecache; fwd=stale; detail="+why)
		return
	}
	pd.q = p.semanticQuery(rt, r, req, pd.ns, part)
	if pd.q != nil {
		if hit, ok := p.semanticLookup(r.Context(), rt, r, pd.q); ok && dir.refuses(hit.entry, p.cfg.Now()) == "" {
			pd.usage = 0
			p.hit(w, r, rt, req, hit.entry, "semantic", hit.cosine)
			p.saved(rt, c, hit.entry)
			p.shadowHit(r, pd, body, hit) // after the answer: never in its way
			return
		}
	}
	if dir.any() {
		if e, ok := p.staleEntry(r.Context(), rt, pd.key, dir); ok {
			pd.usage = 0
			p.hit(w, r, rt, req, e, "max-stale", -1)
			return
		}
		if dir.onlyIfCached {
			writeOnlyIfCached(w, rt)
			return
		}
	}
	p.forward(w, r, pd, body, fill, "")
}

// serveAlias answers a byte-identical repeat from the cache without
// parsing it; it reports false (nothing written) when the entry is gone.
func (p *Pipeline) serveAlias(w http.ResponseWriter, r *http.Request, rt *Route, al alias, bodyLen int, c caller) bool {
	e, err := p.get(r.Context(), rt, al.key)
	if err != nil {
		return false // the full path looks up (and counts) again
	}
	p.count(rt, e, nil)
	req := &openai.Request{API: al.api, Stream: al.stream, IncludeUsage: al.includeUsage}
	adm, ok := p.admit(w, r, rt, req, bodyLen, c)
	if !ok {
		return true // refused: the honest answer is written
	}
	defer p.done(r.Context(), adm, 0)
	p.hit(w, r, rt, req, e, e.Tier, -1)
	p.saved(rt, c, e)
	return true
}

// bypass returns why the request must not be served from or stored in the
// cache, or "".
func (p *Pipeline) bypass(rt *Route, r *http.Request, req *openai.Request) string {
	switch {
	case !rt.Cache || p.cfg.Cache == nil:
		return "off"
	case req.ServerState() != "":
		return req.ServerState() // Responses: server-side state (pipeline/responses.go)
	case hasDirective(r.Header, "no-store"):
		return "no-store"
	case req.Temperature != nil && *req.Temperature > rt.MaxTemperature:
		return "temperature"
	case req.N > 1 && !rt.AllowN:
		return "n"
	case req.Stream && req.API == openai.APIJSON:
		return "stream" // events of an unknown format: completeness cannot be judged
	}
	return ""
}

// lookup consults the exact tiers. Each remote tier bounds its own calls
// (cache/shared has a per-operation budget), so no deadline is set here.
func (p *Pipeline) lookup(ctx context.Context, rt *Route, key cache.Key) (cache.Entry, bool) {
	e, err := p.get(ctx, rt, key)
	p.count(rt, e, err)
	return e, err == nil
}

// get reads a fresh entry from the tiers or the recently stored answers,
// without counting.
func (p *Pipeline) get(ctx context.Context, rt *Route, key cache.Key) (cache.Entry, error) {
	e, err := p.cfg.Cache.Get(ctx, key)
	if err != nil {
		if r, ok := p.recent.get(key); ok {
			e, err = r, nil
			e.Tier = p.cfg.Tiers[0] // in process, on its way into L1
		}
	}
	if err == nil && e.TTL(p.cfg.Now()) <= 0 {
		err = cache.ErrMiss
	}
	if err != nil && !errors.Is(err, cache.ErrMiss) {
		p.log.WarnContext(ctx, "cache lookup", "route", rt.Name, "err", err)
	}
	return e, err
}

// count records one lookup: a miss in every tier before the one that hit.
func (p *Pipeline) count(rt *Route, e cache.Entry, err error) {
	for _, t := range p.cfg.Tiers {
		if err == nil && t == e.Tier {
			p.m.CacheLookup(rt.Name, t, "hit")
			return
		}
		p.m.CacheLookup(rt.Name, t, "miss")
	}
}

// writeHit answers from a cached entry: the stored bytes as they are, or the
// stored answer replayed as a stream when the client asked for one.
//
// detail names the tier for Cache-Status; similarity ≥ 0 (semantic hits)
// is sent as X-Edgecache-Similarity.
func (p *Pipeline) writeHit(w http.ResponseWriter, r *http.Request, req *openai.Request, e cache.Entry, detail string, similarity float32) {
	p.writeEntry(w, r, req, e, detail, similarity, false)
}

// hit is writeHit for a normal hit on rt: on a shared route that does not
// reveal, the answer does not say it is one.
func (p *Pipeline) hit(w http.ResponseWriter, r *http.Request, rt *Route, req *openai.Request, e cache.Entry, detail string, similarity float32) {
	p.writeEntry(w, r, req, e, detail, similarity, rt.hidden())
}

func (p *Pipeline) writeEntry(w http.ResponseWriter, r *http.Request, req *openai.Request, e cache.Entry, detail string, similarity float32, hide bool) {
	now := p.cfg.Now()
	h := headerValues{h: w.Header(), v: make([]string, 0, 4)}
	if hide {
		h.set("Cache-Status", hiddenStatus)
	} else {
		h.set("Cache-Status", "edgecache; hit; detail="+detail+"; ttl="+strconv.FormatInt(int64(e.TTL(now)/time.Second), 10))
		if similarity >= 0 {
			h.set("X-Edgecache-Similarity", strconv.FormatFloat(float64(similarity), 'f', 4, 32))
		}
		h.set("Age", strconv.FormatInt(int64(e.Age(now)/time.Second), 10))
	}
	if req.Stream {
		h.set("Content-Type", "text/event-stream")
		h.set("Cache-Control", "no-cache")
		w.WriteHeader(http.StatusOK)
		rc := http.NewResponseController(w)
		flush := func() { _ = rc.Flush() }
		if err := openai.WriteStream(w, flush, req.API, e.Body, req.IncludeUsage); err != nil {
			p.log.WarnContext(r.Context(), "replay stream", "err", err)
		}
		return
	}
	for k, v := range e.Header {
		h.h[k] = v
	}
	h.set("Content-Length", strconv.Itoa(len(e.Body)))
	w.WriteHeader(e.Status)
	_, _ = w.Write(e.Body)
}

// headerValues sets header values from one backing array: Header.Set
// allocates a one-element slice per header, and a hit sets four or five.
// Keys must be in canonical form. Each value's slice has capacity one, so
// a later Add copies instead of writing into its neighbour.
type headerValues struct {
	h http.Header
	v []string
}

func (hv *headerValues) set(key, value string) {
	hv.v = append(hv.v, value)
	n := len(hv.v)
	hv.h[key] = hv.v[n-1 : n : n]
}

// flightKey separates calls whose upstream answers differ in shape.
func flightKey(key cache.Key, req *openai.Request) string {
	switch {
	case !req.Stream:
		return string(key) + "/json"
	case req.IncludeUsage:
		return string(key) + "/sse+usage"
	default:
		return string(key) + "/sse"
	}
}

// use is what an upstream call does for the cache.
type use int

const (
	passThrough use = iota // nothing stored
	fill                   // a miss: joins an identical call in progress (unless the route says not to), stores the answer
	refresh                // the client's no-cache: a call of its own, whose answer replaces the stored one
)

// forward sends the request upstream and answers from the call; u says
// whether it may join an identical call in progress and whether a complete
// answer is stored under pd.key. cacheStatus, when set, overrides the miss
// status.
//
// pd.q, when set, is the request's semantic query: a stored answer is
// indexed under it.
func (p *Pipeline) forward(w http.ResponseWriter, r *http.Request, pd *pending, body []byte, u use, cacheStatus string) {
	rt, req, key, q := pd.rt, pd.req, pd.key, pd.q
	store := key != "" && u != passThrough
	coalesce := u == fill && rt.Coalesce
	stream := req != nil && req.Stream
	in := outbound(r, rt, body != nil)
	if rt.Shared && req != nil {
		// The upstream reads exactly what the key was made of.
		body = req.Body.AppendCanonical(make([]byte, 0, len(body)))
	}
	var runCtx context.Context
	mk := func() *call {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithCancel(context.WithoutCancel(r.Context()))
		return newCall("", stream, cancel)
	}
	var c *call
	created, inline, inlineStream := true, false, false
	if coalesce && store {
		fk := flightKey(key, req)
		c, created = p.flights.join(fk, func() *call { c := mk(); c.key = fk; return c },
			func() bool { _, ok := p.recent.get(key); return ok })
		if c == nil { // the answer landed between our lookup and now
			if e, ok := p.recent.get(key); ok {
				p.hit(w, r, rt, req, e, p.cfg.Tiers[0], -1)
				return
			}
			c, created = mk(), true
			c.waiters = 1
		}
	} else if !stream {
		// Nobody else can join this call and its answer arrives whole: run
		// it on the handler's goroutine under the client's own context (its
		// only reader leaving cancels it either way). This spares a
		// pass-through request a goroutine, its stack growth and a wake-up.
		runCtx = r.Context()
		c = newCall("", false, func() {})
		c.waiters, inline = 1, true
	} else {
		// A stream nobody else can join: relayed on the handler's
		// goroutine (serveInline says why), under the client's context.
		var cancel context.CancelFunc
		runCtx, cancel = context.WithCancel(r.Context())
		c = newCall("", true, cancel)
		c.waiters, inlineStream = 1, true
	}
	if cacheStatus == "" {
		cacheStatus = "edgecache; fwd=uri-miss"
		if !created {
			cacheStatus += "; collapsed"
		}
	}
	if created {
		p.wg.Add(1)
		lane := admission.Paid
		if pd.adm != nil {
			lane = pd.adm.lane
		}
		ur := &upstreamRequest{in: in, rt: rt, body: body, req: req, key: key, q: q, store: store, lane: lane,
			tenantNS: !rt.Shared && pd.ns != "" && !strings.HasPrefix(pd.ns, anonymous)}
		switch {
		case inlineStream:
			p.serveInline(runCtx, w, r, c, ur, cacheStatus, pd)
			return
		case inline:
			p.run(runCtx, c, ur)
		default:
			if stream {
				ur.ownRequest() // the handler releases its views on its own goroutine
			}
			go p.run(runCtx, c, ur)
		}
	} else {
		p.m.Coalesced(rt.Name)
	}
	p.serveCall(w, r, c, cacheStatus, pd)
}

// outbound copies what the upstream call needs from the inbound request, so
// the call can outlive the handler. On a shared route it carries only the
// headers the route forwards and no client address: the call must be the
// same whoever made it (see sharedHeader).
func outbound(r *http.Request, rt *Route, hasBody bool) *http.Request {
	// The header is shared, not copied: nobody writes it after the handler
	// has read the body, and the upstream client clones it per attempt.
	out := &http.Request{Method: r.Method, URL: r.URL, Header: r.Header, RemoteAddr: r.RemoteAddr}
	if rt.Shared {
		out.Header, out.RemoteAddr = sharedHeader(r.Header, rt.ForwardHeaders, hasBody), ""
	}
	if out.Method == "" {
		out.Method = http.MethodGet
	}
	return out
}

// maxAnswerBytes bounds a non-streamed upstream answer held in memory.
const maxAnswerBytes = 64 << 20

// store stores a complete answer under key, fresh for ttl (the route's
// TTL, or less: responseTTL).
func (p *Pipeline) store(rt *Route, key cache.Key, q *semanticQuery, body []byte, ttl time.Duration) bool {
	if body == nil || ttl <= 0 {
		return false
	}
	now := p.cfg.Now()
	e := cache.Entry{
		Status:    http.StatusOK,
		Header:    http.Header{"Content-Type": {"application/json"}},
		Body:      body,
		StoredAt:  now,
		ExpiresAt: now.Add(ttl),
		Usage:     entryUsage(body),
	}
	// Tiers keep the entry past its freshness for the stale-if-error window;
	// lookups judge freshness by ExpiresAt.
	if !p.cfg.Cache.Store(key, e, ttl+rt.StaleIfError) {
		p.m.StoreDropped(rt.Name)
		return false
	}
	p.recent.put(key, e, p.cfg.RecentFor)
	if q != nil && !p.sem.index(q, key, e.ExpiresAt) {
		p.m.StoreDropped(rt.Name)
	}
	if q != nil && q.near != nil {
		p.shadowNearMiss(rt, q, body)
	}
	return true
}

// serveCall writes c's answer to one client as it arrives.
//
// A call that ends without an answer is answered by the ladder for this
// client (pd says what the request was).
func (p *Pipeline) serveCall(w http.ResponseWriter, r *http.Request, c *call, cacheStatus string, pd *pending) {
	defer c.leave()
	cw := callWriter{p: p, w: w, r: r, c: c, cacheStatus: cacheStatus, pd: pd}
	if cw.step() {
		return // answered already (a call run on the handler's goroutine): nothing to wait for
	}
	wake := c.watch() // step runs again before the first wait: nothing appended in between is missed
	defer c.unwatch(wake)
	for !cw.step() {
		select {
		case <-wake:
		case <-r.Context().Done():
			return
		}
	}
}

// serveInline runs a streamed call nobody else can join on the handler's
// goroutine, writing each event to the client as the relay appends it. A
// stream served by serveCall costs a goroutine for the upstream call (its
// stack grows past 8 KiB) and a hand-off between two goroutines per event;
// this is the path of every stream that is not coalesced. A client that
// goes away cancels the call, as its leaving does in serveCall.
func (p *Pipeline) serveInline(ctx context.Context, w http.ResponseWriter, r *http.Request, c *call, ur *upstreamRequest, cacheStatus string, pd *pending) {
	defer c.leave()
	cw := callWriter{p: p, w: w, r: r, c: c, cacheStatus: cacheStatus, pd: pd}
	c.onAppend = func() {
		if cw.over {
			return
		}
		if cw.step() {
			c.cancel() // the client is gone: stop the upstream call
			return
		}
		c.dropWritten(cw.next)
	}
	p.run(ctx, c, ur)
	if !cw.over {
		cw.step()
	}
}

// callWriter writes a call's answer to one client, step by step: the
// header once the answer commits (or the ladder's answer when the call
// failed without one), then each event not yet written.
type callWriter struct {
	p           *Pipeline
	w           http.ResponseWriter
	r           *http.Request
	c           *call
	cacheStatus string
	pd          *pending
	next        int   // events written
	sent        int64 // bytes written
	wrote       bool  // the header is out
	over        bool  // step reported true
}

// flush sends what is buffered to the client. The controller is made at
// each call, on the stack: one kept in callWriter was an allocation of
// every request, streamed or not.
func (cw *callWriter) flush() { _ = http.NewResponseController(cw.w).Flush() }

// step writes what the call has that the client has not seen yet; true
// means this client's answer is over (complete, failed, or the client is
// gone).
func (cw *callWriter) step() bool {
	c, w, pd := cw.c, cw.w, cw.pd
	v := c.read(cw.next)
	if !cw.wrote && v.status == 0 && v.done {
		cw.over = true
		f, ok := v.err.(*Failure)
		if !ok {
			f = &Failure{Reason: "upstream_error"}
		}
		if f.Reason == "canceled" && cw.r.Context().Err() != nil {
			return true // nobody is listening
		}
		cw.p.serveFailure(w, cw.r, pd, f)
		return true
	}
	if !cw.wrote && v.status != 0 && (c.stream || v.done) {
		cw.writeHeader(v)
		if c.stream {
			releaseViews(pd.req, pd.q) // the answer is under way: no ladder, no retry for this client
		}
	}
	if cw.wrote {
		for _, ev := range v.events {
			if _, err := w.Write(ev); err != nil {
				cw.over = true
				return true // client gone
			}
			cw.sent += int64(len(ev))
		}
		cw.next += len(v.events)
		if c.stream {
			cw.flush()
		}
	}
	if v.done {
		cw.over = true
		pd.usage = v.usage
		if v.err != nil && cw.wrote && c.stream {
			writeStreamError(w, pd.req, cw.next)
			cw.flush()
			f, _ := v.err.(*Failure)
			cw.p.journal(cw.r, pd, "stream-truncated", f, http.StatusOK, 0, func(d *Degraded) { d.BytesStreamed = cw.sent })
		}
		return true
	}
	return false
}

// writeHeader writes the upstream's header as the route shows it, with
// the request's Cache-Status.
func (cw *callWriter) writeHeader(v view) {
	c := cw.c
	h := cw.w.Header()
	hdr := v.header
	hide := cw.pd.rt.hidden()
	if hide {
		hdr = hideHeader(hdr, c.stream && openai.IsEventStream(hdr))
	}
	for k, vv := range hdr {
		h[k] = vv
	}
	cs := cw.cacheStatus
	if v.stored && !strings.Contains(cs, "fwd=bypass") {
		cs += "; stored"
	}
	if hide && (strings.HasPrefix(cs, "edgecache; fwd=uri-miss") || strings.HasPrefix(cs, "edgecache; fwd=stale")) {
		cs = hiddenStatus // a miss, collapsed or not, stored or not, or an entry too old for the request
	}
	h.Set("Cache-Status", cs)
	if !c.stream || !openai.IsEventStream(v.header) {
		n := 0
		for _, ev := range v.events {
			n += len(ev)
		}
		h.Set("Content-Length", strconv.Itoa(n))
	}
	cw.w.WriteHeader(v.status)
	cw.wrote = true
}

// writeStreamError ends a stream cut after its first token with the error
// event of the request's API; n is the number of events relayed.
func writeStreamError(w io.Writer, req *openai.Request, n int) {
	const msg = "The model's stream was interrupted before the answer was complete. The partial answer above is incomplete; retry the request."
	if req != nil && req.API == openai.APIResponses {
		_ = openai.WriteResponsesErrorEvent(w, n, "stream_interrupted", msg)
		return
	}
	_ = openai.WriteErrorEvent(w, openai.NewError(openai.TypeServer, "stream_interrupted", "", msg))
}

func checkContentType(r *http.Request) error {
	ct := r.Header.Get("Content-Type")
	if ct == "" || ct == "application/json" {
		return nil // lenient: a body without a type is read as JSON
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
		return fmt.Errorf("Content-Type %q is not supported: send application/json", ct)
	}
	return nil
}

// exactReadMax is the largest declared body length read into one buffer
// allocated up front.
const exactReadMax = 64 << 10

// readBody reads at most max bytes of the request body.
func readBody(w http.ResponseWriter, r *http.Request, max int64) ([]byte, int, error) {
	if r.ContentLength > max {
		return nil, http.StatusRequestEntityTooLarge, fmt.Errorf("The request body (%d bytes) exceeds the limit of %d bytes.", r.ContentLength, max)
	}
	if r.ContentLength > 0 && r.ContentLength <= exactReadMax {
		// The declared length is within the limit and net/http reads no
		// further than it: one exact allocation, no growing. Larger
		// bodies grow as they arrive, so a declared length alone cannot
		// make the server allocate the limit.
		b := make([]byte, r.ContentLength)
		if _, err := io.ReadFull(r.Body, b); err != nil {
			return nil, bodyErrorStatus(err), bodyError(err)
		}
		// Read to its end, the body closes at no cost; left open,
		// net/http drains it after the handler through io.CopyN (two
		// allocations a request).
		_ = r.Body.Close()
		return b, 0, nil
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, max))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, http.StatusRequestEntityTooLarge, fmt.Errorf("The request body exceeds the limit of %d bytes.", max)
		}
		return nil, bodyErrorStatus(err), bodyError(err)
	}
	if len(b) == 0 {
		return nil, http.StatusBadRequest, errors.New("The request body is empty: send a JSON object.")
	}
	return b, 0, nil
}

// bodyErrorStatus is 408 when the body did not arrive before the server's
// read deadline (server.read_timeout), else 400.
func bodyErrorStatus(err error) int {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return http.StatusRequestTimeout
	}
	return http.StatusBadRequest
}

func bodyError(err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return errors.New("The request body did not arrive in time; send it at once.")
	}
	return fmt.Errorf("The request body could not be read: %v.", err)
}

func hasDirective(h http.Header, directive string) bool {
	for _, v := range h.Values("Cache-Control") {
		for d := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(d), directive) {
				return true
			}
		}
	}
	return false
}

func noCache(r *http.Request) bool {
	return hasDirective(r.Header, "no-cache") || strings.EqualFold(r.Header.Get("Pragma"), "no-cache")
}

type nopMetrics struct{}

func (nopMetrics) CacheLookup(string, string, string)              {}
func (nopMetrics) Bypass(string, string)                           {}
func (nopMetrics) SemanticSkipped(string, string)                  {}
func (nopMetrics) UpstreamCall(string, int, string, time.Duration) {}
func (nopMetrics) Coalesced(string)                                {}
func (nopMetrics) StoreDropped(string)                             {}
func (nopMetrics) Degraded(string, string, string)                 {}
func (nopMetrics) TTFT(string, string, time.Duration)              {}
func (nopMetrics) Shed(string, string)                             {}
func (nopMetrics) TokenUsage(string, string, string, string, int64, int64, time.Duration, string) {
}
func (nopMetrics) CacheSaved(string, string, string, int64, int64) {}
