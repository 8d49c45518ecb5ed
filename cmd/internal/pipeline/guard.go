package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/edgecache/edgecache/cache"
	"github.com/edgecache/edgecache/cmd/internal/openai"
	"github.com/edgecache/edgecache/cmd/internal/upstream"
	"github.com/edgecache/edgecache/degrade"
	"github.com/edgecache/edgecache/degrade/admission"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
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
}

// Attempt is one call to a target, as the journal records it.
type Attempt struct {
	Target     string
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
	// empty_answer, stream_cut, retry_budget.
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

// run performs the upstream call for c: attempts across targets inside the
// retry budget, then the answer is relayed into c (and stored when
// complete), or c finishes with a *Failure for the ladder. It owns the
// call's context and is tracked by p.wg.
func (p *Pipeline) run(ctx context.Context, c *call, in *http.Request, rt *Route, body []byte, req *openai.Request, key cache.Key, q *semanticQuery, store bool, lane admission.Lane) {
	defer p.wg.Done()
	defer c.cancel()
	var err error
	stored := false
	defer func() {
		if v := recover(); v != nil {
			p.log.Error("upstream call panicked", "route", rt.Name, "panic", v)
			err, stored = &Failure{Reason: "internal_error"}, false
		}
		c.finish(err, stored)
		if c.key != "" {
			p.flights.forget(c)
		}
	}()
	start := p.cfg.Now()
	deadline := p.deadline(in, start)
	maxAttempts := p.cfg.Guard.MaxAttempts
	if clientRetrying(in) && !p.cfg.Guard.RetryWhenClientRetries {
		maxAttempts = 1
	}
	f := &Failure{}
	failed, refusedBy := map[*Target]bool{}, map[*Target]bool{}
	for n := 0; n < maxAttempts; n++ {
		t, refused := p.pick(failed, refusedBy)
		if t == nil {
			if f.Reason == "" {
				f.Reason = "breaker_open"
			}
			if len(refusedBy) == 0 { // the breakers' open time; else the queue's estimate stands
				f.RetryAfter = max(f.RetryAfter, refused)
			}
			break
		}
		release := func() {}
		if n > 0 && len(f.Attempts) > 0 { // a retry or a failover after a real call: inside the budget, after a backoff
			r, ok := t.Budget.TryRetry()
			if !ok {
				t.Breaker.Release()
				f.Reason = "retry_budget"
				break
			}
			release = r
			wait := degrade.Backoff(n, p.cfg.Guard.BackoffBase, p.cfg.Guard.BackoffCap)
			if failed[t] && f.RetryAfter > wait {
				wait = f.RetryAfter // the same target asked us to wait this long
			}
			if p.cfg.Now().Add(wait).After(deadline) || !degrade.Sleep(ctx, wait) {
				release()
				t.Breaker.Release()
				break
			}
		}
		o := p.admitAttempt(ctx, c, t, lane, in, rt, body, req, key, q, store, deadline)
		release()
		if o.admission {
			refusedBy[t] = true
		}
		if p.settle(t, o, f, failed) {
			stored, err = o.stored, o.err
			return
		}
		if o.reason == "canceled" {
			break
		}
	}
	if ctx.Err() != nil && f.Reason == "" {
		f.Reason = "canceled"
	}
	err = f
}

// pick returns the first target whose breaker lets a call through,
// preferring targets that have not failed this request; refused is the
// shortest time until a refusing breaker reopens.
//
// A target whose concurrency limiter refused this request is not tried
// again for it: waiting out the queue estimate would hold the client and
// spend the retry budget on a request that admission already answered.
func (p *Pipeline) pick(failed map[*Target]bool, refusedBy map[*Target]bool) (t *Target, refused time.Duration) {
	refused = time.Duration(1<<63 - 1)
	for pass := 0; pass < 2; pass++ {
		for _, cand := range p.cfg.Targets {
			if failed[cand] != (pass == 1) || refusedBy[cand] {
				continue
			}
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
	return nil, refused
}

// settle records an attempt's outcome with its target's breaker and in f;
// it reports whether the call is over (answered or passed through).
func (p *Pipeline) settle(t *Target, o outcome, f *Failure, failed map[*Target]bool) bool {
	f.Attempts = append(f.Attempts, o.att)
	if o.reason == "canceled" || o.admission {
		t.Breaker.Release() // says nothing about the upstream's health
		if o.admission {
			f.Reason, f.RetryAfter = o.reason, max(f.RetryAfter, o.retryAfter)
			f.Attempts = f.Attempts[:len(f.Attempts)-1] // no call was made
		}
		return false
	}
	t.Breaker.Record(o.reason == "", o.retryAfter, o.reason)
	if o.reason == "" {
		return true
	}
	if o.att.Status == http.StatusTooManyRequests && o.retryAfter > 0 {
		t.Breaker.Hold(o.retryAfter, "upstream_429") // honour it: no calls until then
	}
	failed[t] = true
	f.Reason, f.Status, f.Breaker = o.reason, o.att.Status, t.Breaker.Status().State
	if o.retryAfter > 0 {
		f.RetryAfter = o.retryAfter
	}
	return false
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

// admitAttempt takes a slot of t's adaptive concurrency limit for the
// request's lane (waiting in its priority queue no longer than the
// deadline allows), makes the attempt, and reports its time to first token
// and whether it showed overload.
func (p *Pipeline) admitAttempt(ctx context.Context, c *call, t *Target, lane admission.Lane, in *http.Request, rt *Route, body []byte, req *openai.Request, key cache.Key, q *semanticQuery, store bool, deadline time.Time) outcome {
	if t.Concurrency == nil {
		return p.attempt(ctx, c, t, in, rt, body, req, key, q, store, deadline)
	}
	rel, err := t.Concurrency.Acquire(ctx, lane, deadline)
	if err != nil {
		o := outcome{admission: true, reason: admissionReason(err)}
		p.m.Shed(lane.String(), o.reason)
		if ctx.Err() != nil {
			o.reason = "canceled"
		}
		if d, ok := admission.RetryAfter(err); ok {
			o.retryAfter = d
		}
		o.att.Target = t.Name
		return o
	}
	o := p.attempt(ctx, c, t, in, rt, body, req, key, q, store, deadline)
	rel(o.att.TTFT, !overloadSymptom(o))
	return o
}

var spanKindClient = trace.WithSpanKind(trace.SpanKindClient)

// attempt makes one call to t and, when it yields an answer, relays it into
// c. Failures before the first byte reaches the client are returned for the
// caller to retry or fail over.
func (p *Pipeline) attempt(ctx context.Context, c *call, t *Target, in *http.Request, rt *Route, body []byte, req *openai.Request, key cache.Key, q *semanticQuery, store bool, deadline time.Time) (o outcome) {
	start := p.cfg.Now()
	o.att.Target = t.Name
	end := t.Budget.Begin()
	defer end()
	ctx, span := p.cfg.Tracer.Start(ctx, "upstream.attempt", spanKindClient)
	recording := span.IsRecording() // attributes cost allocations: only for a sampled span
	if recording {
		span.SetAttributes(attribute.String("edgecache.upstream.target", t.Name), attribute.String("edgecache.route", rt.Name))
	}
	defer func() {
		if recording {
			span.SetAttributes(attribute.Int("http.response.status_code", o.att.Status))
			if o.reason != "" {
				span.SetStatus(codes.Error, o.reason)
			}
		}
		span.End()
	}()
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The first-token timer: the attempt is abandoned when the answer has
	// not started by then (or, not streamed, has not arrived).
	ttft := min(deadline.Sub(start), p.cfg.Guard.TTFTTimeout)
	var timedOut atomic.Bool
	timer := time.AfterFunc(ttft, func() { timedOut.Store(true); cancel() })
	defer timer.Stop()
	defer func() {
		o.att.Duration = p.cfg.Now().Sub(start)
		if o.att.Err == "" && o.reason != "" {
			o.att.Err = o.reason
		}
		p.m.UpstreamCall(rt.Name, o.att.Status, o.reason, o.att.Duration)
		if o.att.TTFT > 0 {
			p.m.TTFT(rt.Name, t.Name, o.att.TTFT)
		}
	}()
	fail := func(err error) outcome {
		switch {
		case timedOut.Load():
			o.reason = "timeout"
		case ctx.Err() != nil:
			o.reason = "canceled"
		default:
			var ue *upstream.Error
			switch {
			case errors.As(err, &ue) && ue.Kind == upstream.KindDial:
				o.reason = "unreachable"
			case errors.As(err, &ue) && ue.Kind == upstream.KindTimeout:
				o.reason = "timeout"
			default:
				o.reason = "upstream_error"
			}
		}
		if err != nil {
			o.att.Err = err.Error()
		}
		return o
	}
	resp, err := t.Client.Do(actx, in, rt.upstreamPath(in), requestBody(t, body, req))
	if err != nil {
		return fail(err)
	}
	defer resp.Body.Close()
	o.att.Status = resp.StatusCode
	hdr := resp.Header
	hdr.Del("Content-Length")
	if retryableStatus(resp.StatusCode) {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		o.reason = "upstream_" + strconv.Itoa(resp.StatusCode)
		o.retryAfter = parseRetryAfter(hdr)
		o.att.RetryAfter = o.retryAfter
		return o
	}
	cacheable := store && resp.StatusCode >= 200 && resp.StatusCode < 300 && !hasDirective(hdr, "no-store")
	if c.stream && resp.StatusCode == http.StatusOK && isEventStream(hdr) {
		return p.relay(actx, c, t, resp, rt, req, key, q, cacheable, timer, &timedOut, start, o, fail)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes+1))
	if err == nil && len(b) > maxAnswerBytes {
		err = errors.New("upstream answer larger than 64 MiB")
	}
	if err != nil {
		return fail(upstream.Classify(actx, err))
	}
	timer.Stop()
	o.att.TTFT = p.cfg.Now().Sub(start)
	ok2xx := resp.StatusCode >= 200 && resp.StatusCode < 300
	complete, usage := false, int64(-1)
	if req != nil && ok2xx {
		complete, usage = openai.Inspect(req.API, b)
	}
	if ok2xx && !complete && req != nil && (req.API == openai.APIChat || req.API == openai.APICompletions) {
		o.reason = "empty_answer" // an empty or unfinished answer is a failure, never a 200
		return o
	}
	if cacheable && complete {
		o.stored = p.store(rt, key, q, b)
	}
	c.mu.Lock()
	c.status, c.header, c.events = resp.StatusCode, hdr, [][]byte{b}
	c.usage = usage
	c.mu.Unlock()
	return o
}

// relay reads a streamed answer. Events are held back until the first
// token arrives, so a stream that fails or is empty before that can still be
// retried elsewhere; from the first token on they go to the client as they
// arrive, and a failure then ends the stream with an error event.
func (p *Pipeline) relay(ctx context.Context, c *call, t *Target, resp *http.Response, rt *Route, req *openai.Request, key cache.Key, q *semanticQuery, cacheable bool,
	ttft *time.Timer, timedOut *atomic.Bool, start time.Time, o outcome, fail func(error) outcome) outcome {
	er := openai.NewEventReader(resp.Body)
	acc := openai.NewAccumulator(req.API)
	var held [][]byte
	committed, storedAt := false, false
	var stalled atomic.Bool
	idle := time.AfterFunc(time.Hour, func() {})
	idle.Stop()
	// The stall timer is replaced once the stream commits: stop the one in
	// force at return, or its closure keeps the call (every event relayed)
	// alive until the idle timeout.
	defer func() { idle.Stop() }()
	for {
		raw, data, err := er.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			if !committed {
				return fail(upstream.Classify(ctx, err))
			}
			if stalled.Load() {
				err = &upstream.Error{Kind: upstream.KindTimeout, Err: errors.New("stream stalled")}
			}
			o.err = &Failure{Reason: "stream_cut", Status: http.StatusOK}
			o.att.Err = err.Error()
			return o
		}
		ev := append([]byte(nil), raw...)
		acc.Add(data)
		if committed {
			idle.Reset(p.cfg.StreamIdleTimeout)
			if acc.Done() && !storedAt {
				// Store before the client sees [DONE]: its next request,
				// streamed or not, must find the answer.
				storedAt = true
				o.stored = p.storeStream(c, acc, rt, key, q, cacheable)
			}
			c.append(ev)
			continue
		}
		held = append(held, ev)
		if acc.Broken() && !acc.HasContent() {
			o.reason = "upstream_error" // an error event before any token
			return o
		}
		if acc.HasContent() {
			ttft.Stop()
			o.att.TTFT = p.cfg.Now().Sub(start)
			committed = true
			c.setHeader(resp.StatusCode, resp.Header)
			for _, h := range held {
				c.append(h)
			}
			held = nil
			// From here only the stall timer bounds the stream: a whole-request
			// timeout must not kill a stream that is flowing.
			idle = time.AfterFunc(p.cfg.StreamIdleTimeout, func() { stalled.Store(true); c.cancel() })
		}
	}
	if !committed {
		if acc.Done() {
			o.reason = "empty_answer"
		} else {
			o.reason = "stream_cut"
		}
		return o
	}
	if err := acc.Err(); err != nil {
		if !acc.Done() {
			o.err = &Failure{Reason: "stream_cut", Status: http.StatusOK}
			o.att.Err = err.Error()
		}
		return o // complete but not storable (an error event): passed on as is
	}
	if !storedAt {
		o.stored = p.storeStream(c, acc, rt, key, q, cacheable)
	}
	return o
}

// storeStream records the stream's usage and stores its assembled answer
// when it is complete.
func (p *Pipeline) storeStream(c *call, acc *openai.Accumulator, rt *Route, key cache.Key, q *semanticQuery, cacheable bool) bool {
	c.mu.Lock()
	c.usage = acc.TotalTokens()
	c.mu.Unlock()
	if !cacheable || acc.Err() != nil {
		return false
	}
	answer, err := acc.Body()
	return err == nil && p.store(rt, key, q, answer)
}
