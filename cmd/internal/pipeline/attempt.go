package pipeline

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/edgecache/edgecache/cmd/internal/openai"
	"github.com/edgecache/edgecache/cmd/internal/upstream"
	"github.com/edgecache/edgecache/degrade/admission"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// upstreamCall is one attempt: one call to one target for one request, with
// the timers that bound it and what it has relayed into the shared call so
// far. It lives for the attempt only; the request's state across attempts
// is the upstreamRequest.
type upstreamCall struct {
	p  *Pipeline
	c  *call // where the answer goes
	t  *Target
	ur *upstreamRequest

	start  time.Time
	cancel context.CancelFunc // ends the attempt's context
	// ttft abandons the attempt when its answer has not started by then
	// (streams) or has not arrived (otherwise).
	ttft     *time.Timer
	timedOut atomic.Bool
	// idle ends a committed stream that stalls for StreamIdleTimeout.
	idle    *time.Timer
	stalled atomic.Bool

	o outcome
	// limiter is the adaptive concurrency limit that admitted the attempt
	// (nil: none); commit feeds it the stream's time to first token at
	// once, and fed says it did.
	limiter *admission.Concurrency
	fed     bool
	// ttl is how long the answer may be stored (responseTTL), set by
	// cacheable.
	ttl time.Duration
	// body is what was sent, released once a stream commits
	// (releaseRequest).
	body *upstream.Body
}

// admitAttempt takes a slot of t's adaptive concurrency limit for the
// request's lane (waiting in its priority queue no longer than the
// deadline allows), makes the attempt, and reports its time to first token
// and whether it showed overload.
func (p *Pipeline) admitAttempt(ctx context.Context, c *call, t *Target, ur *upstreamRequest, source string) outcome {
	a := &upstreamCall{p: p, c: c, t: t, ur: ur}
	a.o.source = source
	if t.Concurrency == nil {
		return a.tracked(ctx)
	}
	rel, err := t.Concurrency.Acquire(ctx, ur.lane, ur.deadline)
	if err != nil {
		o := outcome{admission: true, reason: admissionReason(err)}
		p.m.Shed(ur.lane.String(), o.reason)
		if ctx.Err() != nil {
			o.reason = "canceled"
		}
		if d, ok := admission.RetryAfter(err); ok {
			o.retryAfter = d
		}
		if o.reason != "canceled" {
			p.logShed(ctx, ur.lane.String(), o.reason, o.retryAfter)
		}
		o.att.Target, o.source = t.Name, source
		return o
	}
	a.limiter = t.Concurrency
	o := a.tracked(ctx)
	ttft := o.att.TTFT
	if a.fed { // a stream's TTFT went in at its first token
		ttft = 0
	}
	rel(ttft, !overloadSymptom(o))
	return o
}

// failurePenalty is the least latency a failed attempt counts as: a target
// that fails fast must not look fast to least_latency.
const failurePenalty = time.Second

// tracked makes the attempt counted in its target's in-flight requests,
// and feeds its time to first token (or a penalty, when it failed) to the
// target's latency estimate.
func (a *upstreamCall) tracked(ctx context.Context) outcome {
	st := &a.t.st
	st.inflight.Add(1)
	o := a.do(ctx)
	st.inflight.Add(-1)
	now := a.p.cfg.Now()
	switch {
	case o.reason == "" && o.att.TTFT > 0:
		st.observe(now, o.att.TTFT)
	case o.reason != "" && o.reason != "canceled":
		st.observe(now, max(o.att.Duration, failurePenalty))
	}
	return o
}

var spanKindClient = trace.WithSpanKind(trace.SpanKindClient)

// do makes the call and, when it yields an answer, relays it into a.c.
// Failures before the first byte reaches the client are returned for the
// caller to retry or fail over.
func (a *upstreamCall) do(ctx context.Context) outcome {
	p, t, rt := a.p, a.t, a.ur.rt
	a.start = p.cfg.Now()
	a.o.att.Target, a.o.att.Pool = t.Name, t.Pool
	end := t.Budget.Begin()
	defer end()
	ctx, span := p.cfg.Tracer.Start(ctx, "upstream.attempt", spanKindClient)
	recording := span.IsRecording() // attributes cost allocations: only for a sampled span
	if recording {
		span.SetAttributes(attribute.String("edgecache.upstream.target", t.Name), attribute.String("edgecache.route", rt.Name))
	}
	ctx, a.cancel = context.WithCancel(ctx)
	defer a.cancel()
	ttft := min(a.ur.deadline.Sub(a.start), p.cfg.Guard.TTFTTimeout)
	a.ttft = time.AfterFunc(ttft, func() { a.timedOut.Store(true); a.cancel() })
	defer a.ttft.Stop()
	a.call(ctx)
	noteUpstream(ctx, t.Name, a.o.att.Status)
	a.o.att.Duration = p.cfg.Now().Sub(a.start)
	if a.o.att.Err == "" && a.o.reason != "" {
		a.o.att.Err = a.o.reason
	}
	p.m.UpstreamCall(rt.Name, a.o.att.Status, a.o.reason, a.o.att.Duration)
	p.callFailed(a.ur, a.o.reason, a.o.att.Duration)
	if a.o.att.TTFT > 0 {
		p.m.TTFT(rt.Name, t.Name, a.o.att.TTFT)
	}
	if recording {
		span.SetAttributes(attribute.Int("http.response.status_code", a.o.att.Status))
		if a.o.reason != "" {
			span.SetStatus(codes.Error, a.o.reason)
		}
	}
	span.End()
	return a.o
}

// call sends the request and reads the answer into a.o.
func (a *upstreamCall) call(ctx context.Context) {
	ur := a.ur
	if ur.released {
		// Cannot happen (a committed stream is never retried); sending the
		// request again without its body must not happen either.
		a.o.reason, a.o.att.Err = "internal_error", "request body already released"
		return
	}
	if b := requestBody(a.t, ur.body, ur.req); b != nil {
		a.body = upstream.NewBody(b)
	}
	resp, err := a.t.Client.DoBody(ctx, ur.in, ur.rt.upstreamPath(ur.in), a.body)
	if err != nil {
		a.fail(ctx, err)
		return
	}
	defer resp.Body.Close()
	a.o.att.Status = resp.StatusCode
	resp.Header.Del("Content-Length")
	if a.o.source != "" && aboutTheKey(resp.StatusCode) {
		// The upstream's answer about the caller's own key: that caller's,
		// passed on as it came (Retry-After included), never retried
		// elsewhere and never held against the target.
		a.o.retryAfter = parseRetryAfter(resp.Header)
		a.o.att.RetryAfter = a.o.retryAfter
		a.readWhole(ctx, resp)
		a.o.tenantAnswer = a.o.reason == "" // else unreadable: a failure like any other
		return
	}
	if retryableStatus(resp.StatusCode) {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		a.o.reason = "upstream_" + strconv.Itoa(resp.StatusCode)
		a.o.retryAfter = parseRetryAfter(resp.Header)
		a.o.att.RetryAfter = a.o.retryAfter
		return
	}
	if a.c.stream && resp.StatusCode == http.StatusOK && openai.IsEventStream(resp.Header) {
		a.relay(ctx, resp)
		return
	}
	a.readWhole(ctx, resp)
}

// aboutTheKey reports whether an upstream status speaks of the caller's
// key rather than of the upstream: rate-limited, or not allowed.
func aboutTheKey(status int) bool {
	return status == http.StatusTooManyRequests || status == http.StatusUnauthorized || status == http.StatusForbidden
}

// cacheable reports whether a complete answer in resp may be stored, and
// sets how long (the upstream's Cache-Control: pipeline/directives.go).
func (a *upstreamCall) cacheable(resp *http.Response) bool {
	if !a.ur.store || resp.StatusCode < 200 || resp.StatusCode >= 300 {
		return false
	}
	ttl, why := responseTTL(resp.Header, a.ur.rt, a.ur.tenantNS)
	if why != "" {
		a.p.m.Bypass(a.ur.rt.Name, "upstream-"+why)
		return false
	}
	a.ttl = ttl
	return true
}

// fail records why the attempt produced no answer: its own timer, the
// request going away, or the upstream.
func (a *upstreamCall) fail(ctx context.Context, err error) {
	var ue *upstream.Error
	switch {
	case a.timedOut.Load():
		a.o.reason = "timeout"
	case ctx.Err() != nil: // not the timer: every client went away
		a.o.reason = "canceled"
	case errors.As(err, &ue) && ue.Kind == upstream.KindLocal:
		a.o.reason = reasonEdgeResources
	case errors.As(err, &ue) && ue.Kind == upstream.KindDial:
		a.o.reason = "unreachable"
	case errors.As(err, &ue) && ue.Kind == upstream.KindTimeout:
		a.o.reason = "timeout"
	default:
		a.o.reason = "upstream_error"
	}
	if err != nil {
		a.o.att.Err = err.Error()
	}
}

// readWhole reads a non-streamed answer and hands it to the call whole.
func (a *upstreamCall) readWhole(ctx context.Context, resp *http.Response) {
	p, ur := a.p, a.ur
	b, err := readAnswer(resp.Body, resp.ContentLength)
	if err != nil {
		a.fail(ctx, upstream.Classify(ctx, err))
		return
	}
	a.ttft.Stop()
	a.o.att.TTFT = p.cfg.Now().Sub(a.start)
	ok2xx := resp.StatusCode >= 200 && resp.StatusCode < 300
	complete, usage := false, int64(-1)
	if ur.req != nil && ok2xx {
		complete, usage = openai.Inspect(ur.req.API, b)
	}
	if ok2xx && !complete && ur.req != nil && (ur.req.API == openai.APIChat || ur.req.API == openai.APICompletions || ur.req.API == openai.APIAnthropic ||
		ur.req.API == openai.APIResponses && openai.EmptyResponse(b)) {
		a.o.reason = "empty_answer" // an empty or unfinished answer is a failure, never a 200
		return
	}
	if complete {
		p.tokenUsage(ur, b, p.cfg.Now().Sub(a.start))
	}
	if a.cacheable(resp) && complete {
		a.o.stored = p.store(ur.rt, ur.key, ur.q, b, a.ttl)
	}
	c := a.c
	c.mu.Lock()
	c.status, c.header, c.events = resp.StatusCode, resp.Header, [][]byte{b}
	c.usage = usage
	c.mu.Unlock()
}

var errAnswerTooLarge = errors.New("upstream answer larger than 64 MiB")

// readAnswer reads a whole answer of at most maxAnswerBytes: in one exact
// allocation when the upstream declared its length (net/http reads no
// further than that), else growing as it arrives.
func readAnswer(body io.Reader, declared int64) ([]byte, error) {
	if declared > maxAnswerBytes {
		return nil, errAnswerTooLarge
	}
	if declared > 0 {
		b := make([]byte, declared)
		if _, err := io.ReadFull(body, b); err != nil {
			return nil, err
		}
		return b, nil
	}
	b, err := io.ReadAll(io.LimitReader(body, maxAnswerBytes+1))
	if err == nil && len(b) > maxAnswerBytes {
		err = errAnswerTooLarge
	}
	return b, err
}

// relay reads a streamed answer. Events are held back until the first
// token arrives, so a stream that fails or is empty before that can still be
// retried elsewhere; from the first token on they go to the client as they
// arrive, and a failure then ends the stream with an error event.
func (a *upstreamCall) relay(ctx context.Context, resp *http.Response) {
	er := openai.NewEventReader(resp.Body)
	defer er.Release()
	var arena eventArena // the call keeps the events: copies share slabs
	acc := openai.NewStreamAccumulator(a.ur.req.API)
	cacheable := a.cacheable(resp)
	if !cacheable {
		acc.DropText() // only relayed: its text is never stored
	}
	var held [][]byte
	storedAt := false
	// The stall timer starts when the stream commits; stop the one in force
	// at return, or its closure keeps the call (every event relayed) alive
	// until the idle timeout.
	defer func() {
		if a.idle != nil {
			a.idle.Stop()
		}
	}()
	for {
		raw, data, err := er.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			a.broken(ctx, err)
			return
		}
		acc.Add(data)
		if a.idle != nil { // committed
			a.idle.Reset(a.p.cfg.StreamIdleTimeout)
			if acc.Done() && !storedAt {
				// Store before the client sees [DONE]: its next request,
				// streamed or not, must find the answer.
				storedAt = true
				a.o.stored = a.storeStream(acc, cacheable)
			}
			if a.c.onAppend != nil {
				// Relayed inline: written to the client and let go of
				// within append, before the reader's buffer is reused.
				a.c.append(raw)
				continue
			}
			a.c.append(arena.copy(raw))
			continue
		}
		held = append(held, arena.copy(raw))
		if acc.Broken() && !acc.HasContent() {
			a.o.reason = "upstream_error" // an error event before any token
			return
		}
		if acc.HasContent() {
			a.commit(resp, held)
			held = nil
			if a.c.onAppend != nil {
				// Relayed inline from here on: the held events are
				// written, and their slab (4 KiB) would stay live for the
				// rest of the stream, every stream.
				arena = eventArena{}
			}
		}
	}
	a.ended(acc, cacheable, storedAt)
}

// commit hands the held events to the client once the first token is in:
// from here only the stall timer bounds the stream (a whole-request timeout
// must not kill a stream that is flowing), and the attempt can no longer be
// retried.
func (a *upstreamCall) commit(resp *http.Response, held [][]byte) {
	a.ttft.Stop()
	a.o.att.TTFT = a.p.cfg.Now().Sub(a.start)
	if a.limiter != nil {
		// The limit learns from the first token, not from the stream's end
		// tens of seconds later: slow start grows on it, and a rising TTFT
		// clamps the limit while the slow streams are still open.
		a.limiter.FirstToken(a.o.att.TTFT)
		a.fed = true
	}
	a.c.setHeader(resp.StatusCode, resp.Header)
	for _, h := range held {
		a.c.append(h)
	}
	c := a.c
	a.idle = time.AfterFunc(a.p.cfg.StreamIdleTimeout, func() { a.stalled.Store(true); c.cancel() })
	a.releaseRequest()
}

// releaseRequest lets go of the request's body once a stream has
// committed. No retry can follow, and what the rest of the call reads of
// the request (its API and model, the key, the semantic query's text) lives
// outside the body. Before, an open stream held its whole prompt to the
// end: in the transport's copy of the request (for a retry before an
// answer), in the upstream request, and through the parsed request, whose
// strings are views of the body. A 16 KiB prompt cost about 18 KiB per
// open stream (README, "Long streams").
//
// The call's own parsed request and query are released here only when they
// are its own (upstreamRequest.own: a call on a goroutine of its own);
// otherwise they are the handler's, released on the handler's goroutine
// when its client's stream starts (callWriter.step).
func (a *upstreamCall) releaseRequest() {
	ur := a.ur
	ur.released, ur.body = true, nil
	if ur.own {
		releaseViews(ur.req, ur.q)
	}
	if a.body != nil {
		a.body.Release()
	}
}

// broken handles a read error in the middle of a stream: before the commit
// the attempt failed; after it the client's stream is cut.
func (a *upstreamCall) broken(ctx context.Context, err error) {
	if a.idle == nil {
		a.fail(ctx, upstream.Classify(ctx, err))
		return
	}
	if a.stalled.Load() {
		err = &upstream.Error{Kind: upstream.KindTimeout, Err: errors.New("stream stalled")}
	}
	a.o.err = &Failure{Reason: "stream_cut", Status: http.StatusOK}
	a.o.att.Err = err.Error()
}

// ended judges a stream that reached its end of file.
func (a *upstreamCall) ended(acc openai.StreamAccumulator, cacheable, storedAt bool) {
	if a.idle == nil { // never committed: no token arrived
		if acc.Done() {
			a.o.reason = "empty_answer"
		} else {
			a.o.reason = "stream_cut"
		}
		return
	}
	if err := acc.Err(); err != nil {
		if !acc.Done() {
			a.o.err = &Failure{Reason: "stream_cut", Status: http.StatusOK}
			a.o.att.Err = err.Error()
		}
		return // complete but not storable (an error event): passed on as is
	}
	if !storedAt {
		a.o.stored = a.storeStream(acc, cacheable)
	}
}

// storeStream records the stream's usage and stores its assembled answer
// when it is complete.
func (a *upstreamCall) storeStream(acc openai.StreamAccumulator, cacheable bool) bool {
	c := a.c
	c.mu.Lock()
	c.usage = acc.TotalTokens()
	c.mu.Unlock()
	if acc.Err() != nil {
		return false
	}
	answer, err := acc.Body()
	ur := a.ur
	if err == nil {
		a.p.tokenUsage(ur, answer, a.p.cfg.Now().Sub(a.start))
	}
	if !cacheable {
		return false
	}
	return err == nil && a.p.store(ur.rt, ur.key, ur.q, answer, a.ttl)
}
