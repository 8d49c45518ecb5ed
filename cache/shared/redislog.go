package shared

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// LogRedisTo routes go-redis's own log lines (a failed dial, a pool
// problem: one line per attempt, so a dead Redis under load writes
// thousands) to log as warnings, at most one per distinct message per
// window; the next one says how many were suppressed. The breakers already
// log each Redis outage once, in structured form. It replaces the
// process-wide go-redis logger.
func LogRedisTo(log *slog.Logger, window time.Duration) {
	redis.SetLogger(newRedisLog(log, window, time.Now))
}

type redisLog struct {
	log    *slog.Logger
	window time.Duration
	now    func() time.Time

	mu   sync.Mutex
	seen map[string]*logSlot // by format string: the message without its values
}

type logSlot struct {
	last       time.Time
	suppressed int
}

// maxLogSlots bounds the distinct formats remembered (go-redis has a few
// dozen).
const maxLogSlots = 256

func newRedisLog(log *slog.Logger, window time.Duration, now func() time.Time) *redisLog {
	return &redisLog{log: log, window: window, now: now, seen: map[string]*logSlot{}}
}

func (l *redisLog) Printf(ctx context.Context, format string, v ...any) {
	now := l.now()
	l.mu.Lock()
	s := l.seen[format]
	if s == nil {
		if len(l.seen) >= maxLogSlots {
			clear(l.seen)
		}
		s = &logSlot{}
		l.seen[format] = s
	} else if now.Sub(s.last) < l.window {
		s.suppressed++
		l.mu.Unlock()
		return
	}
	suppressed := s.suppressed
	s.last, s.suppressed = now, 0
	l.mu.Unlock()
	msg := strings.TrimPrefix(fmt.Sprintf(format, v...), "redis: ")
	attrs := []any{slog.String("component", "go-redis")}
	if suppressed > 0 {
		attrs = append(attrs, slog.Int("suppressed", suppressed), slog.String("window", l.window.String()))
	}
	l.log.WarnContext(ctx, "redis client: "+msg, attrs...)
}
