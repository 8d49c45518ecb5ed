package pipeline

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/edgecache/edgecache/cache"
	"github.com/edgecache/edgecache/cmd/internal/openai"
	"github.com/edgecache/edgecache/cmd/internal/upstream"
	"github.com/edgecache/edgecache/degrade"
	"github.com/edgecache/edgecache/degrade/admission"
)

// Target is one upstream the route may call: the primary or a backup.
type Target struct {
	Name    string
	Client  *upstream.Client
	Breaker *degrade.Breaker
	Budget  *degrade.RetryBudget
	// Models renames the requested model for this target.
	Models map[string]string
	// Concurrency is the target's adaptive concurrency limit with lane
	// partitions and a priority queue; nil → unlimited.
	Concurrency *admission.Concurrency
	// Holds keeps API keys the target rate-limited away from it for their
	// Retry-After (the zero value holds nothing).
	Holds degrade.Holds
	// Pool names the upstream pool the target belongs to ("" without
	// pools), for the journal.
	Pool string
	// Weight is the target's share in its pool (zero → 1).
	Weight int
	// SlowStart ramps a target back up over this time after its health
	// check passes again (zero → full share at once).
	SlowStart time.Duration
	// MaxConcurrency is a hard cap on requests in flight (zero → none). It
	// is enforced by Concurrency (its HardLimit); balancing prefers the
	// targets below it so that a full target's queue is the last resort.
	MaxConcurrency int

	st targetState
}

// GuardConfig bounds retries and failover (DEGRADATION.md, rungs 5 and 6).
type GuardConfig struct {
	// MaxAttempts per request across retries and failover. Zero → 3.
	MaxAttempts int
	// BackoffBase and BackoffCap shape full-jitter backoff. Zeros → 100ms, 2s.
	BackoffBase, BackoffCap time.Duration
	// TTFTTimeout bounds the wait for an attempt's first token (streams)
	// or whole answer (otherwise). Zero → Config.Timeout.
	TTFTTimeout time.Duration
	// DeadlineMargin is kept from the client's X-Stainless-Timeout hint.
	// Zero → 500ms.
	DeadlineMargin time.Duration
	// RetryWhenClientRetries allows more than one attempt when the client
	// SDK says it is retrying (X-Stainless-Retry-Count > 0).
	RetryWhenClientRetries bool
	// MaxRetryWait is the longest a request waits before a retry — a
	// backoff, or an upstream's Retry-After — and only when the wait fits
	// the deadline. A longer Retry-After is a reason to go elsewhere: the
	// request fails over at once, or is answered by the ladder at once
	// (DEGRADATION.md rule 6). Busy answers whose Retry-After is longer
	// carry X-Should-Retry: false, so the OpenAI SDKs do not hold the
	// caller either. Zero → 1s.
	MaxRetryWait time.Duration
}

// Attempt is one call to a target, as the journal records it.
type Attempt struct {
	Target     string
	Pool       string // "" without upstreams: pools
	Status     int
	TTFT       time.Duration
	Duration   time.Duration
	RetryAfter time.Duration
	Err        string
}

// Failure is why a call produced no answer for the client. The ladder
// answers it; its Reason is what X-Edgecache-Degraded-Reason says.
type Failure struct {
	// Reason: upstream_<status>, timeout, unreachable, breaker_open,
	// unhealthy (every target left failed its active health checks),
	// empty_answer, stream_cut, retry_budget, or key_rate_limited (the
	// target holds the caller's own key: answered 429, not by the ladder).
	Reason     string
	Status     int           // the last upstream status, 0 when none
	RetryAfter time.Duration // the upstream's, or the breakers' remaining open time
	Attempts   []Attempt
	Breaker    string // state of the last target's breaker
}

func (f *Failure) Error() string {
	return fmt.Sprintf("upstream failed: %s after %d attempt(s)", f.Reason, len(f.Attempts))
}

// retryable statuses: the request may succeed elsewhere or later.
func retryableStatus(s int) bool {
	return s == http.StatusTooManyRequests || s == http.StatusRequestTimeout || s >= 500 && s != http.StatusNotImplemented
}

// deadline is when an answer must have started: the client's hint minus a
// margin, or the configured timeout.
func (p *Pipeline) deadline(in *http.Request, start time.Time) time.Time {
	d := p.cfg.Timeout
	if h := in.Header.Get("X-Stainless-Timeout"); h != "" {
		if s, err := strconv.ParseFloat(h, 64); err == nil && s > 0 {
			hint := time.Duration(s*float64(time.Second)) - p.cfg.Guard.DeadlineMargin
			d = min(d, max(hint, 100*time.Millisecond))
		}
	}
	return start.Add(d)
}

func clientRetrying(in *http.Request) bool {
	v := in.Header.Get("X-Stainless-Retry-Count")
	if v == "" {
		return false // the common case: no error value to allocate
	}
	n, err := strconv.Atoi(v)
	return err == nil && n > 0
}

// upstreamRequest is what every attempt of one request sends, and what
// bounds them all.
type upstreamRequest struct {
	in   *http.Request // the client's method, URL and headers (outbound)
	rt   *Route
	body []byte
	// released: the body has been let go of (upstreamCall.releaseRequest).
	released bool
	// own: req and q are the call's own copies (ownRequest), not the
	// handler's pending ones.
	own   bool
	req   *openai.Request
	key   cache.Key // where a complete answer is stored ("" → nowhere)
	q     *semanticQuery
	store bool
	// tenantNS: key is in one tenant's own namespace, where an answer
	// marked private may be stored.
	tenantNS bool
	lane     admission.Lane
	// deadline is when an answer must have started (Pipeline.deadline).
	deadline time.Time

	tenant   string // the caller's key id ("" without a key), once known
	tenantOK bool

	pools []*Pool // the pools that may serve it, in order (Pipeline.chain)
}

// ownRequest gives the call copies of the parsed request and semantic
// query of its own, for a call run on its own goroutine: each side then
// lets go of its views of the body when the stream starts without touching
// the other's (releaseViews).
func (ur *upstreamRequest) ownRequest() {
	ur.own = true
	if ur.req != nil {
		rc := *ur.req
		ur.req = &rc
	}
	if ur.q != nil {
		qc := *ur.q
		ur.q = &qc
	}
}

// reasonKeyHeld is the Failure of a request whose own key the target holds.
const reasonKeyHeld = "key_rate_limited"

// source is whose failure a call to t would be (degrade.Breaker): the
// caller's, identified by its key id, when t forwards the caller's key;
// "" (the target's) when t sends the edge's own key or the caller sent
// none.
func (p *Pipeline) source(t *Target, ur *upstreamRequest) string {
	if t.Client.ReplacesKey() {
		return ""
	}
	if !ur.tenantOK {
		if c := p.identify(ur.in); c.known {
			ur.tenant = c.keyID()
		}
		ur.tenantOK = true
	}
	return ur.tenant
}

// run performs the upstream call for c: attempts across targets inside the
// retry budget, then the answer is relayed into c (and stored when
// complete), or c finishes with a *Failure for the ladder. It owns the
// call's context and is tracked by p.wg.
func (p *Pipeline) run(ctx context.Context, c *call, ur *upstreamRequest) {
	defer p.wg.Done()
	defer c.cancel()
	var err error
	stored := false
	defer func() {
		if v := recover(); v != nil {
			p.log.ErrorContext(ctx, "upstream call panicked", "route", ur.rt.Name, "panic", v)
			err, stored = &Failure{Reason: "internal_error"}, false
		}
		c.finish(err, stored)
		if c.key != "" {
			p.flights.forget(c)
		}
	}()
	ur.deadline = p.deadline(ur.in, p.cfg.Now())
	stored, err = p.attempts(ctx, c, ur)
}

// attempts calls the targets until one answers, at most MaxAttempts times:
// a retry or a failover after a real call is taken from the target's retry
// budget, after a backoff that must fit the deadline.
func (p *Pipeline) attempts(ctx context.Context, c *call, ur *upstreamRequest) (stored bool, err error) {
	maxAttempts := p.cfg.Guard.MaxAttempts
	if clientRetrying(ur.in) && !p.cfg.Guard.RetryWhenClientRetries {
		maxAttempts = 1
	}
	f := &Failure{}
	failed, refusedBy := map[*Target]bool{}, map[*Target]bool{}
	asked := map[*Target]time.Duration{} // the Retry-After each target sent
	for n := 0; n < maxAttempts; n++ {
		t, refused := p.pick(ur, failed, refusedBy)
		p.flushTransitions(ctx)
		if t == nil {
			if f.Reason == "" {
				f.Reason = "breaker_open"
				if refused == noneRefused { // no breaker refused: every target left is unhealthy
					f.Reason, refused = "unhealthy", time.Second
				}
			}
			if refused == noneRefused {
				refused = time.Second
			}
			if len(refusedBy) == 0 { // the breakers' open time; else the queue's estimate stands
				f.RetryAfter = max(f.RetryAfter, refused)
			}
			break
		}
		if held := p.heldKey(t, ur); held > 0 {
			t.Breaker.Release()
			return false, &Failure{Reason: reasonKeyHeld, Status: http.StatusTooManyRequests, RetryAfter: held, Attempts: f.Attempts}
		}
		release := func() {}
		if n > 0 && len(f.Attempts) > 0 {
			r, ok := t.Budget.TryRetry()
			if !ok {
				t.Breaker.Release()
				f.Reason = "retry_budget"
				break
			}
			release = r
			// The same target may have asked for longer than a backoff. A
			// wait that is not short, or does not fit the deadline, is not
			// made: the ladder answers now (pick has already preferred any
			// target that has not failed).
			wait := max(degrade.Backoff(n, p.cfg.Guard.BackoffBase, p.cfg.Guard.BackoffCap), asked[t])
			if wait > p.cfg.Guard.MaxRetryWait || p.cfg.Now().Add(wait).After(ur.deadline) || !degrade.Sleep(ctx, wait) {
				release()
				t.Breaker.Release()
				break
			}
		}
		o := p.admitAttempt(ctx, c, t, ur, p.source(t, ur))
		release()
		if o.admission {
			refusedBy[t] = true
		}
		settled := p.settle(ctx, t, o, f, failed)
		p.flushTransitions(ctx)
		if settled {
			return o.stored, o.err
		}
		if o.reason == reasonEdgeResources {
			break
		}
		asked[t] = o.retryAfter
		if o.reason == "canceled" {
			break
		}
	}
	if ctx.Err() != nil && f.Reason == "" {
		f.Reason = "canceled"
	}
	return false, f
}

// pick returns the first target whose breaker lets a call through,
// preferring targets that have not failed this request; refused is the
// shortest time until a refusing breaker reopens.
//
// A target whose concurrency limiter refused this request is not tried
// again for it: waiting out the queue estimate would hold the client and
// spend the retry budget on a request that admission already answered.
// A target at its max_concurrency is passed over like an open breaker
// while another can take the request; only when every target left is at
// its cap does the request queue in one's admission (pickPass).
func (p *Pipeline) pick(ur *upstreamRequest, failed map[*Target]bool, refusedBy map[*Target]bool) (t *Target, refused time.Duration) {
	refused = noneRefused
	now := p.cfg.Now()
	var buf [8]*Target // most pools have fewer targets: no allocation
	cands := buf[:0]
	for pass := pickFresh; pass <= pickFull; pass++ {
		for _, pl := range p.chain(ur) {
			cands = cands[:0]
			for _, cand := range pl.Targets {
				if pickable(cand, pass, failed, refusedBy) {
					cands = append(cands, cand)
				}
			}
			for _, cand := range pl.order(cands, now) {
				err := cand.Breaker.Allow()
				if err == nil {
					return cand, 0
				}
				var oe *degrade.OpenError
				if errors.As(err, &oe) {
					refused = min(refused, max(time.Until(oe.Until), time.Second))
				}
			}
		}
	}
	return nil, refused
}

// pickPass is which targets one pass of pick considers.
type pickPass int

const (
	pickFresh  pickPass = iota // not failed this request, below their cap
	pickFailed                 // failed this request, below their cap
	// pickFull: any, at its cap or not (one may have freed a slot since
	// the passes before): the request waits in its admission if full.
	pickFull
)

// pickable reports whether pick's pass may consider cand: a target out of
// its health checks, drained by an operator or refused by its limiter is
// never considered.
func pickable(cand *Target, pass pickPass, failed, refusedBy map[*Target]bool) bool {
	switch {
	case refusedBy[cand] || !cand.Healthy() || cand.Drained():
		return false
	case pass == pickFull:
		return true
	case cand.full():
		return false
	}
	return failed[cand] == (pass == pickFailed)
}

// reasonEdgeResources is the Failure of a call the edge could not make for
// want of its own resources (upstream.KindLocal): a 503 busy.
const reasonEdgeResources = "edge_resources"

// noneRefused is pick's refused when no breaker refused.
const noneRefused = time.Duration(1<<63 - 1)

// heldKey is how long t still holds the caller's own key (0: not held).
func (p *Pipeline) heldKey(t *Target, ur *upstreamRequest) time.Duration {
	if !t.Holds.Any() {
		return 0
	}
	if src := p.source(t, ur); src != "" {
		return t.Holds.Remaining(src)
	}
	return 0
}

// settle records an attempt's outcome with its target's breaker and in f;
// it reports whether the call is over (answered or passed through).
//
// A stream cut after its first token is over for the client (it got the
// bytes and an error event) but counts as the target's failure, as an empty
// answer does: an upstream that always truncates trips the breaker, and
// the requests after the trip fail over.
func (p *Pipeline) settle(ctx context.Context, t *Target, o outcome, f *Failure, failed map[*Target]bool) bool {
	f.Attempts = append(f.Attempts, o.att)
	if o.reason == reasonEdgeResources {
		// The edge's own limit, not the target's health: no breaker
		// sample, an honest busy with a short Retry-After, and no retry
		// (another dial would meet the same limit).
		t.Breaker.Release()
		p.logUpstreamFailure(ctx, t, o)
		f.Reason, f.RetryAfter = o.reason, max(f.RetryAfter, time.Second)
		return false
	}
	if o.reason == "canceled" || o.admission || o.tenantAnswer {
		t.Breaker.Release() // says nothing about the upstream's health
		if o.admission {
			f.Reason, f.RetryAfter = o.reason, max(f.RetryAfter, o.retryAfter)
			f.Attempts = f.Attempts[:len(f.Attempts)-1] // no call was made
		}
		if o.tenantAnswer {
			if o.att.Status == http.StatusTooManyRequests {
				p.logUpstreamFailure(ctx, t, o)
			}
			t.Holds.Hold(o.source, o.retryAfter) // that key, never the target
			return true
		}
		return false
	}
	health := o.reason
	if health == "" && o.err != nil {
		health = "stream_cut"
	}
	t.Breaker.RecordFor(o.evidence(), health == "", o.retryAfter, health)
	if health != "" {
		p.logUpstreamFailure(ctx, t, outcomeWithReason(o, health))
	}
	if o.reason == "" {
		return true
	}
	if o.att.Status == http.StatusTooManyRequests && o.retryAfter > 0 {
		t.Breaker.Hold(o.retryAfter, "upstream_429") // the edge's own key: honour it, no calls until then
	}
	failed[t] = true
	f.Reason, f.Status, f.Breaker = o.reason, o.att.Status, t.Breaker.Status().State
	if o.retryAfter > 0 {
		f.RetryAfter = o.retryAfter
	}
	return false
}

func outcomeWithReason(o outcome, reason string) outcome {
	o.reason = reason
	return o
}

// outcome of one attempt. reason is empty when the client got an answer
// from it (committed): a success, a pass-through error, or a stream that
// started and then broke (err set).
type outcome struct {
	admission  bool // refused by the target's concurrency limit: no call made
	reason     string
	retryAfter time.Duration
	stored     bool
	err        error
	att        Attempt
	// source is whose key the call carried ("" → the edge's, or none).
	source string
	// tenantAnswer: the upstream answered 429, 401 or 403 about the
	// caller's own key; it was passed to the caller as it came.
	tenantAnswer bool
}

// evidence is whose failure the outcome is for the breaker: a connection
// that could not be made carried no key, so it is the target's whoever
// asked.
func (o outcome) evidence() string {
	if o.reason == "unreachable" {
		return ""
	}
	return o.source
}

func parseRetryAfter(h http.Header) time.Duration {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseFloat(v, 64); err == nil && s >= 0 {
		return time.Duration(s * float64(time.Second))
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0)
	}
	return 0
}

// requestBody returns the body for target t, with the model renamed when
// the target maps it.
func requestBody(t *Target, body []byte, req *openai.Request) []byte {
	if req == nil || len(t.Models) == 0 || req.API == openai.APIJSON {
		return body
	}
	to, ok := t.Models[req.Model]
	if !ok {
		return body
	}
	b, err := req.WithModel(to)
	if err != nil {
		return body
	}
	return b
}
