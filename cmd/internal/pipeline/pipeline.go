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
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/edgecache/edgecache/cache"
	"github.com/edgecache/edgecache/cmd/internal/openai"
	"github.com/edgecache/edgecache/cmd/internal/upstream"
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
	// UpstreamCall records one call to the model: status 0 means no
	// response (errKind says why).
	UpstreamCall(route string, status int, errKind string, d time.Duration)
	// Coalesced counts a request that joined another request's call.
	Coalesced(route string)
	// StoreDropped counts an answer the full write queue could not take.
	StoreDropped(route string)
}

// Config configures a Pipeline.
type Config struct {
	Cache    Cache            // nil → no caching
	Tiers    []string         // names of the cache's tiers in lookup order, for metrics
	Upstream *upstream.Client // required
	// Secret keys tenant namespaces (HMAC of the client's API key).
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
	Metrics  Metrics      // nil → none
	Logger   *slog.Logger // nil → discard
	Now      func() time.Time
}

// Pipeline serves proxied requests. It is safe for concurrent use.
type Pipeline struct {
	cfg     Config
	flights flights
	recent  recent
	sem     *semanticTier // nil: no semantic tier
	wg      sync.WaitGroup
	log     *slog.Logger
	m       Metrics
}

// New returns a Pipeline for cfg.
func New(cfg Config) *Pipeline {
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = 8 << 20
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 120 * time.Second
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
	p := &Pipeline{cfg: cfg, log: cfg.Logger, m: cfg.Metrics}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	if p.m == nil {
		p.m = nopMetrics{}
	}
	if cfg.Semantic != nil && cfg.Cache != nil {
		p.sem = newSemanticTier(*cfg.Semantic)
	}
	return p
}

// Close waits for upstream calls still running (their answers may still be
// stored) until ctx is done.
func (p *Pipeline) Close(ctx context.Context) error {
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("pipeline close: %w", ctx.Err())
	}
	if p.sem != nil {
		p.sem.close()
	}
	return nil
}

// Serve answers one proxied request for route rt.
func (p *Pipeline) Serve(w http.ResponseWriter, r *http.Request, rt *Route) {
	if rt.API == openai.APIModels || r.Method == http.MethodGet {
		p.forward(w, r, rt, nil, nil, "", nil, false, "edgecache; fwd=bypass; detail=passthrough")
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
		if status == http.StatusRequestEntityTooLarge {
			code = "request_too_large"
		}
		openai.WriteError(w, status, 0, openai.NewError(openai.TypeInvalidRequest, code, "", err.Error()))
		return
	}
	req, err := openai.ParseRequest(rt.API, body)
	if err != nil {
		var ie *openai.InvalidRequestError
		if errors.As(err, &ie) {
			openai.WriteError(w, http.StatusBadRequest, 0, openai.NewError(openai.TypeInvalidRequest, ie.Code, ie.Param, ie.Msg))
		} else {
			openai.WriteError(w, http.StatusBadRequest, 0, openai.NewError(openai.TypeInvalidRequest, "invalid_request", "", err.Error()))
		}
		return
	}
	if rt.API == openai.APIJSON || rt.API == openai.APIEmbeddings {
		req.Stream = false // never streamed: the upstream answers JSON
	}
	if reason := p.bypass(rt, r, req); reason != "" {
		p.m.Bypass(rt.Name, reason)
		p.forward(w, r, rt, body, req, "", nil, false, "edgecache; fwd=bypass; detail="+reason)
		return
	}
	ns := p.namespace(rt, r)
	key := exactKey(rt, ns, r.URL.RawQuery, req)
	if noCache(r) {
		p.m.Bypass(rt.Name, "no-cache")
		p.forward(w, r, rt, body, req, key, nil, false, "edgecache; fwd=request; detail=no-cache")
		return
	}
	if e, ok := p.lookup(r.Context(), rt, key); ok {
		p.writeHit(w, r, req, e, e.Tier, -1)
		return
	}
	q := p.semanticQuery(rt, r, req, ns)
	if q != nil {
		if e, sim, ok := p.semanticLookup(r.Context(), rt, r, q); ok {
			p.writeHit(w, r, req, e, "semantic", sim)
			return
		}
	}
	p.forward(w, r, rt, body, req, key, q, rt.Coalesce, "")
}

// bypass returns why the request must not be served from or stored in the
// cache, or "".
func (p *Pipeline) bypass(rt *Route, r *http.Request, req *openai.Request) string {
	switch {
	case !rt.Cache || p.cfg.Cache == nil:
		return "off"
	case hasDirective(r.Header, "no-store"):
		return "no-store"
	case req.Temperature != nil && *req.Temperature > rt.MaxTemperature:
		return "temperature"
	case req.N > 1 && !rt.AllowN:
		return "n"
	}
	return ""
}

// lookup consults the exact tiers. Each remote tier bounds its own calls
// (cache/shared has a per-operation budget), so no deadline is set here.
func (p *Pipeline) lookup(ctx context.Context, rt *Route, key cache.Key) (cache.Entry, bool) {
	e, err := p.cfg.Cache.Get(ctx, key)
	if err != nil {
		if r, ok := p.recent.get(key); ok {
			e, err = r, nil
			e.Tier = p.cfg.Tiers[0] // in process, on its way into L1
		}
	}
	now := p.cfg.Now()
	if err == nil && e.TTL(now) <= 0 {
		err = cache.ErrMiss
	}
	for _, t := range p.cfg.Tiers {
		if err == nil && t == e.Tier {
			p.m.CacheLookup(rt.Name, t, "hit")
			break
		}
		p.m.CacheLookup(rt.Name, t, "miss")
	}
	if err != nil && !errors.Is(err, cache.ErrMiss) {
		p.log.WarnContext(ctx, "cache lookup", "route", rt.Name, "err", err)
	}
	return e, err == nil
}

// writeHit answers from a cached entry: the stored bytes as they are, or the
// stored answer replayed as a stream when the client asked for one.
//
// detail names the tier for Cache-Status; similarity ≥ 0 (semantic hits)
// is sent as X-Edgecache-Similarity.
func (p *Pipeline) writeHit(w http.ResponseWriter, r *http.Request, req *openai.Request, e cache.Entry, detail string, similarity float32) {
	now := p.cfg.Now()
	h := w.Header()
	h.Set("Cache-Status", "edgecache; hit; detail="+detail+"; ttl="+strconv.FormatInt(int64(e.TTL(now)/time.Second), 10))
	if similarity >= 0 {
		h.Set("X-Edgecache-Similarity", strconv.FormatFloat(float64(similarity), 'f', 4, 32))
	}
	h.Set("Age", strconv.FormatInt(int64(e.Age(now)/time.Second), 10))
	if req.Stream {
		h.Set("Content-Type", "text/event-stream")
		h.Set("Cache-Control", "no-cache")
		w.WriteHeader(http.StatusOK)
		rc := http.NewResponseController(w)
		flush := func() { _ = rc.Flush() }
		if err := openai.WriteStream(w, flush, req.API, e.Body, req.IncludeUsage); err != nil {
			p.log.WarnContext(r.Context(), "replay stream", "err", err)
		}
		return
	}
	for k, v := range e.Header {
		h[k] = v
	}
	h.Set("Content-Length", strconv.Itoa(len(e.Body)))
	w.WriteHeader(e.Status)
	_, _ = w.Write(e.Body)
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

// forward sends the request upstream (joining an identical call in progress
// when coalesce is set) and answers from the call. A non-empty key with
// store set means a complete answer is stored under it; cacheStatus, when
// set, overrides the miss status.
//
// q, when set, is the request's semantic query: a stored answer is indexed
// under it.
func (p *Pipeline) forward(w http.ResponseWriter, r *http.Request, rt *Route, body []byte, req *openai.Request, key cache.Key, q *semanticQuery, coalesce bool, cacheStatus string) {
	store := key != "" && cacheStatus == ""
	stream := req != nil && req.Stream
	in := outbound(r)
	var runCtx context.Context
	mk := func() *call {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithCancel(context.WithoutCancel(r.Context()))
		return newCall("", stream, cancel)
	}
	var c *call
	created := true
	if coalesce && store {
		fk := flightKey(key, req)
		c, created = p.flights.join(fk, func() *call { c := mk(); c.key = fk; return c },
			func() bool { _, ok := p.recent.get(key); return ok })
		if c == nil { // the answer landed between our lookup and now
			if e, ok := p.recent.get(key); ok {
				p.writeHit(w, r, req, e, p.cfg.Tiers[0], -1)
				return
			}
			c, created = mk(), true
			c.waiters = 1
		}
	} else {
		c = mk()
		c.waiters = 1
	}
	if created {
		p.wg.Add(1)
		go p.run(runCtx, c, in, rt, body, req, key, q, store)
	} else {
		p.m.Coalesced(rt.Name)
	}
	if cacheStatus == "" {
		cacheStatus = "edgecache; fwd=uri-miss"
		if !created {
			cacheStatus += "; collapsed"
		}
	}
	p.serveCall(w, r, c, cacheStatus)
}

// outbound copies what the upstream call needs from the inbound request, so
// the call can outlive the handler.
func outbound(r *http.Request) *http.Request {
	out := &http.Request{Method: r.Method, URL: r.URL, Header: r.Header.Clone(), RemoteAddr: r.RemoteAddr}
	if out.Method == "" {
		out.Method = http.MethodGet
	}
	return out
}

// maxAnswerBytes bounds a non-streamed upstream answer held in memory.
const maxAnswerBytes = 64 << 20

// run performs the upstream call for c and stores a complete answer. It owns
// the call's context and is tracked by p.wg.
func (p *Pipeline) run(ctx context.Context, c *call, in *http.Request, rt *Route, body []byte, req *openai.Request, key cache.Key, q *semanticQuery, store bool) {
	defer p.wg.Done()
	defer c.cancel()
	var err error
	stored := false
	defer func() {
		if v := recover(); v != nil {
			p.log.Error("upstream call panicked", "route", rt.Name, "panic", v)
			err = fmt.Errorf("internal error: %v", v)
			stored = false
		}
		c.finish(err, stored)
		if c.key != "" {
			p.flights.forget(c)
		}
	}()
	start := p.cfg.Now()
	callCtx := ctx
	if !c.stream {
		var cancel context.CancelFunc
		callCtx, cancel = context.WithTimeout(ctx, p.cfg.Timeout)
		defer cancel()
	}
	resp, err := p.cfg.Upstream.Do(callCtx, in, rt.UpstreamPath, body)
	if err != nil {
		p.m.UpstreamCall(rt.Name, 0, errKind(err), p.cfg.Now().Sub(start))
		if !isCanceled(err) {
			p.log.Warn("upstream call", "route", rt.Name, "err", err)
		}
		return
	}
	defer resp.Body.Close()
	hdr := resp.Header
	hdr.Del("Content-Length")
	cacheable := store && resp.StatusCode >= 200 && resp.StatusCode < 300 && !hasDirective(hdr, "no-store")
	if c.stream && resp.StatusCode == http.StatusOK && isEventStream(hdr) {
		c.setHeader(resp.StatusCode, hdr)
		var answer []byte
		answer, err = p.relay(ctx, c, resp.Body, req.API)
		p.m.UpstreamCall(rt.Name, resp.StatusCode, errKind(err), p.cfg.Now().Sub(start))
		if err == nil && cacheable {
			stored = p.store(rt, key, q, answer)
		}
		return
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes+1))
	if err == nil && len(b) > maxAnswerBytes {
		err = errors.New("upstream answer larger than 64 MiB")
	}
	if err != nil {
		err = upstream.Classify(callCtx, err)
		p.m.UpstreamCall(rt.Name, resp.StatusCode, errKind(err), p.cfg.Now().Sub(start))
		return
	}
	p.m.UpstreamCall(rt.Name, resp.StatusCode, "", p.cfg.Now().Sub(start))
	if cacheable && req != nil && openai.Complete(req.API, b) {
		stored = p.store(rt, key, q, b)
	}
	c.mu.Lock()
	c.status, c.header, c.events = resp.StatusCode, hdr, [][]byte{b}
	c.mu.Unlock()
}

// relay copies stream events into c as they arrive and assembles the
// answer; it returns the assembled answer, or why the stream is unusable.
func (p *Pipeline) relay(ctx context.Context, c *call, body io.Reader, api openai.API) ([]byte, error) {
	idle := time.AfterFunc(p.cfg.StreamIdleTimeout, c.cancel)
	defer idle.Stop()
	er := openai.NewEventReader(body)
	acc := openai.NewAccumulator(api)
	for {
		raw, data, err := er.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			if ctx.Err() != nil && !idle.Stop() {
				return nil, &upstream.Error{Kind: upstream.KindTimeout, Err: errors.New("stream stalled")}
			}
			return nil, upstream.Classify(ctx, err)
		}
		idle.Reset(p.cfg.StreamIdleTimeout)
		c.append(append([]byte(nil), raw...))
		acc.Add(data)
	}
	if err := acc.Err(); err != nil {
		if !acc.Done() {
			return nil, &upstream.Error{Kind: upstream.KindOther, Err: err}
		}
		return nil, nil // complete but not storable (e.g. empty): not an error for the client
	}
	return acc.Body()
}

func (p *Pipeline) store(rt *Route, key cache.Key, q *semanticQuery, body []byte) bool {
	if body == nil {
		return false
	}
	now := p.cfg.Now()
	e := cache.Entry{
		Status:    http.StatusOK,
		Header:    http.Header{"Content-Type": {"application/json"}},
		Body:      body,
		StoredAt:  now,
		ExpiresAt: now.Add(rt.TTL),
	}
	if !p.cfg.Cache.Store(key, e, rt.TTL) {
		p.m.StoreDropped(rt.Name)
		return false
	}
	p.recent.put(key, e, p.cfg.RecentFor)
	if q != nil && !p.sem.index(q, key, e.ExpiresAt) {
		p.m.StoreDropped(rt.Name)
	}
	return true
}

// serveCall writes c's answer to one client as it arrives.
func (p *Pipeline) serveCall(w http.ResponseWriter, r *http.Request, c *call, cacheStatus string) {
	defer c.leave()
	rc := http.NewResponseController(w)
	next, wrote := 0, false
	for {
		v := c.read(next)
		if !wrote && v.status == 0 && v.done {
			p.writeUpstreamError(w, v.err)
			return
		}
		if !wrote && v.status != 0 && (c.stream || v.done) {
			h := w.Header()
			for k, vv := range v.header {
				h[k] = vv
			}
			cs := cacheStatus
			if v.stored && !strings.Contains(cs, "fwd=bypass") {
				cs += "; stored"
			}
			h.Set("Cache-Status", cs)
			if !c.stream || !isEventStream(v.header) {
				n := 0
				for _, ev := range v.events {
					n += len(ev)
				}
				h.Set("Content-Length", strconv.Itoa(n))
			}
			w.WriteHeader(v.status)
			wrote = true
		}
		if wrote {
			for _, ev := range v.events {
				if _, err := w.Write(ev); err != nil {
					return // client gone
				}
			}
			next += len(v.events)
			if c.stream {
				_ = rc.Flush()
			}
		}
		if v.done {
			if v.err != nil && wrote && c.stream {
				_ = openai.WriteErrorEvent(w, openai.NewError(openai.TypeServer, "stream_interrupted", "",
					"The upstream stream was interrupted before the answer was complete ("+v.err.Error()+"). The partial answer above is incomplete; retry the request."))
				_ = rc.Flush()
			}
			return
		}
		select {
		case <-v.wait:
		case <-r.Context().Done():
			return
		}
	}
}

// writeUpstreamError answers a call that produced no response, with a true
// status: 504 for a timeout, 503 with Retry-After when the upstream cannot be
// reached, 502 otherwise.
func (p *Pipeline) writeUpstreamError(w http.ResponseWriter, err error) {
	var ue *upstream.Error
	kind := upstream.KindOther
	if errors.As(err, &ue) {
		kind = ue.Kind
	}
	switch kind {
	case upstream.KindTimeout:
		openai.WriteError(w, http.StatusGatewayTimeout, 0, openai.NewError(openai.TypeServer, "upstream_timeout", "",
			"The model did not answer in time. Retry the request, perhaps with a shorter prompt or max_tokens."))
	case upstream.KindDial, upstream.KindCanceled:
		openai.WriteError(w, http.StatusServiceUnavailable, 1, openai.NewError(openai.TypeUnavailable, "upstream_unavailable", "",
			"The model is unreachable right now. Retry in 1 second."))
	default:
		openai.WriteError(w, http.StatusBadGateway, 0, openai.NewError(openai.TypeServer, "upstream_error", "",
			"The model's answer could not be read. Retry the request."))
	}
}

func errKind(err error) string {
	var ue *upstream.Error
	if err == nil {
		return ""
	}
	if errors.As(err, &ue) {
		switch ue.Kind {
		case upstream.KindDial:
			return "dial"
		case upstream.KindTimeout:
			return "timeout"
		case upstream.KindCanceled:
			return "canceled"
		}
	}
	return "other"
}

func isCanceled(err error) bool {
	var ue *upstream.Error
	return errors.As(err, &ue) && ue.Kind == upstream.KindCanceled
}

func isEventStream(h http.Header) bool {
	mt, _, _ := mime.ParseMediaType(h.Get("Content-Type"))
	return mt == "text/event-stream"
}

func checkContentType(r *http.Request) error {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return nil // lenient: a body without a type is read as JSON
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
		return fmt.Errorf("Content-Type %q is not supported: send application/json", ct)
	}
	return nil
}

// readBody reads at most max bytes of the request body.
func readBody(w http.ResponseWriter, r *http.Request, max int64) ([]byte, int, error) {
	if r.ContentLength > max {
		return nil, http.StatusRequestEntityTooLarge, fmt.Errorf("The request body (%d bytes) exceeds the limit of %d bytes.", r.ContentLength, max)
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, max))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, http.StatusRequestEntityTooLarge, fmt.Errorf("The request body exceeds the limit of %d bytes.", max)
		}
		return nil, http.StatusBadRequest, fmt.Errorf("The request body could not be read: %v.", err)
	}
	if len(b) == 0 {
		return nil, http.StatusBadRequest, errors.New("The request body is empty: send a JSON object.")
	}
	return b, 0, nil
}

func hasDirective(h http.Header, directive string) bool {
	for _, v := range h.Values("Cache-Control") {
		for _, d := range strings.Split(v, ",") {
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
func (nopMetrics) UpstreamCall(string, int, string, time.Duration) {}
func (nopMetrics) Coalesced(string)                                {}
func (nopMetrics) StoreDropped(string)                             {}
