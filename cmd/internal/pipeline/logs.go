package pipeline

import (
	"context"
	"log/slog"
	"strconv"
	"sync"
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

// logTransition logs a breaker's change of state, at most once per target
// and new state per window.
func (p *Pipeline) logTransition(tr degrade.Transition) {
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
		p.log.Warn("upstream breaker opened", attrs...)
		return
	}
	p.log.Info("upstream breaker "+tr.To.String(), attrs...)
}
