package pipeline

import (
	"context"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgecache/edgecache/degrade"
)

// logEvery is the window of the guard's rate-limited logs: at most one line
// per target and reason per window; the next line says how many were
// suppressed in between.
const logEvery = 10 * time.Second

// logLimiter lets one line per key through per window and counts the rest.
type logLimiter struct {
	every time.Duration
	now   func() time.Time

	mu    sync.Mutex
	slots map[string]*logSlot
}

type logSlot struct {
	last       time.Time
	suppressed int
}

// maxLogSlots bounds the keys remembered (targets × reasons: a few dozen).
const maxLogSlots = 1024

// allow reports whether a line for key may be written now, and how many
// were suppressed since the last one that was.
func (l *logLimiter) allow(key string) (ok bool, suppressed int) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.slots[key]
	switch {
	case s == nil:
		if l.slots == nil || len(l.slots) >= maxLogSlots {
			l.slots = make(map[string]*logSlot)
		}
		s = &logSlot{}
		l.slots[key] = s
	case now.Sub(s.last) < l.every:
		s.suppressed++
		return false, 0
	}
	suppressed, s.last, s.suppressed = s.suppressed, now, 0
	return true, suppressed
}

// logUpstreamFailure logs an attempt that failed, or an upstream answer
// about a caller's own key, at most once per target and reason per window.
// Keys and key ids are never logged: whose failure it was is "tenant" or
// "target".
func (p *Pipeline) logUpstreamFailure(ctx context.Context, t *Target, o outcome) {
	reason := o.reason
	if o.tenantAnswer {
		reason = "tenant_" + strconv.Itoa(o.att.Status)
	}
	ok, suppressed := p.logs.allow(t.Name + "\x00" + reason)
	if !ok {
		return
	}
	whose := "target"
	if o.tenantAnswer || o.evidence() != "" {
		whose = "tenant"
	}
	attrs := []any{slog.String("target", t.Name), slog.String("reason", reason), slog.Int("status", o.att.Status),
		slog.String("whose", whose)}
	if o.retryAfter > 0 {
		attrs = append(attrs, slog.Duration("retry_after", o.retryAfter))
	}
	if o.att.Err != "" && o.att.Err != reason {
		attrs = append(attrs, slog.String("err", o.att.Err))
	}
	if suppressed > 0 {
		attrs = append(attrs, slog.Int("suppressed", suppressed), slog.Duration("window", p.logs.every))
	}
	p.log.WarnContext(ctx, "upstream failure", attrs...)
}

// transitions holds breaker changes until the request whose call caused
// them (or one served at the same moment) logs them with its request id:
// the breaker reports them on the goroutine that caused them, without its
// context, and that goroutine flushes right after its breaker calls.
type transitions struct {
	n       atomic.Int32
	mu      sync.Mutex
	pending []degrade.Transition
}

// maxPendingTransitions bounds the queue when no request flushes it.
const maxPendingTransitions = 64

func (ts *transitions) add(tr degrade.Transition) {
	ts.mu.Lock()
	if len(ts.pending) < maxPendingTransitions {
		ts.pending = append(ts.pending, tr)
		ts.n.Add(1)
	}
	ts.mu.Unlock()
}

func (ts *transitions) take() []degrade.Transition {
	if ts.n.Load() == 0 {
		return nil
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	out := ts.pending
	ts.pending = nil
	ts.n.Store(0)
	return out
}

// flushTransitions logs the breaker changes reported since the last flush
// with ctx (its request id and trace).
func (p *Pipeline) flushTransitions(ctx context.Context) {
	for _, tr := range p.trs.take() {
		p.logTransition(ctx, tr)
	}
}

// logShed logs a request refused by admission, at most once per lane and
// reason per window.
func (p *Pipeline) logShed(ctx context.Context, lane, reason string, retry time.Duration) {
	ok, suppressed := p.logs.allow("shed\x00" + lane + "\x00" + reason)
	if !ok {
		return
	}
	attrs := []any{slog.String("lane", lane), slog.String("reason", reason), slog.Duration("retry_after", retry)}
	if suppressed > 0 {
		attrs = append(attrs, slog.Int("suppressed", suppressed), slog.Duration("window", p.logs.every))
	}
	p.log.WarnContext(ctx, "request shed", attrs...)
}

// logTransition logs a breaker's change of state, at most once per target
// and new state per window.
func (p *Pipeline) logTransition(ctx context.Context, tr degrade.Transition) {
	ok, suppressed := p.logs.allow(tr.Target + "\x00breaker " + tr.To.String())
	if !ok {
		return
	}
	attrs := []any{slog.String("target", tr.Target), slog.String("from", tr.From.String()), slog.String("to", tr.To.String())}
	if tr.To == degrade.Open {
		attrs = append(attrs, slog.String("reason", tr.Reason), slog.Time("until", tr.Until))
	}
	if suppressed > 0 {
		attrs = append(attrs, slog.Int("suppressed", suppressed), slog.Duration("window", p.logs.every))
	}
	if tr.To == degrade.Open {
		p.log.WarnContext(ctx, "upstream breaker opened", attrs...)
		return
	}
	p.log.InfoContext(ctx, "upstream breaker "+tr.To.String(), attrs...)
}

// RequestLog is what the server's access log says about a request that
// the pipeline knows: set by the server in the request's context
// (WithRequestLog), filled in as the request is served.
type RequestLog struct {
	// ID is the request id (X-Request-Id).
	ID string
	// Route and Status are the route's name and the status the access log
	// reports, set by the route's handler; both are written and read on
	// the request's own goroutine. (They live here rather than in echo's
	// per-request map, which cost an allocation per request.)
	Route  string
	Status int

	mu       sync.Mutex
	tenant   string
	target   string
	upstream int
}

type requestLogKey struct{}

// NewRequestLog returns ctx carrying a new RequestLog of request id, in
// one allocation for both (this runs for every request): the log lines made
// with it carry the id (LogAttrs), and the pipeline records in the
// RequestLog what the access log reports.
func NewRequestLog(ctx context.Context, id string) (context.Context, *RequestLog) {
	c := &requestLogCtx{Context: ctx}
	c.rl.ID = id
	return c, &c.rl
}

// requestLogCtx is a context carrying a RequestLog under requestLogKey.
type requestLogCtx struct {
	context.Context
	rl RequestLog
}

func (c *requestLogCtx) Value(key any) any {
	if _, ok := key.(requestLogKey); ok {
		return &c.rl
	}
	return c.Context.Value(key)
}

// RequestLogFrom returns the RequestLog in ctx, or nil.
func RequestLogFrom(ctx context.Context) *RequestLog {
	rl, _ := ctx.Value(requestLogKey{}).(*RequestLog)
	return rl
}

// LogAttrs returns the attributes every log line of the request in ctx
// carries: its request id.
func LogAttrs(ctx context.Context) []slog.Attr {
	if rl := RequestLogFrom(ctx); rl != nil && rl.ID != "" {
		return []slog.Attr{slog.String("request_id", rl.ID)}
	}
	return nil
}

// Tenant is the caller's key id (a keyed hash, never the key); "" when the
// request was not identified.
func (rl *RequestLog) Tenant() string {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	return rl.tenant
}

// Upstream is the last upstream call's target and status (0: no call, or
// no answer).
func (rl *RequestLog) Upstream() (target string, status int) {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	return rl.target, rl.upstream
}

func noteTenant(ctx context.Context, keyID string) {
	if rl := RequestLogFrom(ctx); rl != nil {
		rl.mu.Lock()
		rl.tenant = keyID
		rl.mu.Unlock()
	}
}

func noteUpstream(ctx context.Context, target string, status int) {
	if rl := RequestLogFrom(ctx); rl != nil {
		rl.mu.Lock()
		rl.target, rl.upstream = target, status
		rl.mu.Unlock()
	}
}
