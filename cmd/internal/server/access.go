package server

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/labstack/echo/v4"
	"go.opentelemetry.io/otel/trace"

	"github.com/edgecache/edgecache/cmd/internal/pipeline"
)

// AccessLog configures the data listener's access log.
type AccessLog struct {
	// Mode is "full" (every request), "sampled" (a SampleRate share, and
	// every 5xx) or "off" (also the zero value).
	Mode       string
	SampleRate float64
	// Out receives the lines (the process log's writer, so access lines
	// and other lines are one stream); nil means os.Stderr.
	Out io.Writer
}

// noteRoute and noteStatus tell the access log the route's name and the
// status it reports, through the request's RequestLog (the requestID
// middleware puts one in every request's context).
func noteRoute(c echo.Context, name string) {
	if rl := pipeline.RequestLogFrom(c.Request().Context()); rl != nil {
		rl.Route = name
	}
}

func noteStatus(c echo.Context, status int) {
	if rl := pipeline.RequestLogFrom(c.Request().Context()); rl != nil {
		rl.Status = status
	}
}

func (a AccessLog) keep(status int) bool {
	switch a.Mode {
	case "full":
		return true
	case "sampled":
		return status >= 500 || rand.Float64() < a.SampleRate
	}
	return false
}

// middleware writes a line per request once it is answered: request id
// (from the context, like every line of the request), route, method, path,
// status, Cache-Status, the tenant's key id (a keyed hash, never the key),
// the last upstream call's target and status, bytes written and latency.
// Unknown paths are logged too, with route "". Lines are dropped when log
// is not enabled at their level (INFO, WARN for 5xx).
func (a AccessLog) middleware(log *slog.Logger) echo.MiddlewareFunc {
	out := a.Out
	if out == nil {
		out = os.Stderr
	}
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		if a.Mode == "" || a.Mode == "off" {
			return next
		}
		return func(c echo.Context) error {
			start := time.Now()
			if err := next(c); err != nil {
				c.Error(err) // answered now, so the line has its status
			}
			// A route handler tells the access log its route and status
			// through the request's RequestLog.
			rl := pipeline.RequestLogFrom(c.Request().Context())
			status := 0
			if rl != nil {
				status = rl.Status
			}
			if status == 0 {
				status = c.Response().Status
			}
			level := slog.LevelInfo
			if status >= http.StatusInternalServerError {
				level = slog.LevelWarn
			}
			if !a.keep(status) || !log.Enabled(c.Request().Context(), level) {
				return nil
			}
			writeAccessLine(out, c, rl, level, status, start)
			return nil
		}
	}
}

// lineBufs holds access-line buffers between requests.
var lineBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// writeAccessLine writes one access line to out, in the JSON shape and key
// order that slog.JSONHandler gives the process's other lines (time, level,
// msg, the fields, request_id, trace_id and span_id when sampled).
//
// Why not slog itself: at 40,000 exact hits/s a slog record with a dozen
// attributes cost about 1.5 µs a line in BenchmarkAccessLog and about 6 µs
// in a loaded server (attribute values boxed and walked, a float through
// json.Marshal, the caller's pc), the largest cost of a hit after the
// socket. Appending the line by hand into a pooled buffer costs a fraction
// (BenchmarkAccessLog says how much).
func writeAccessLine(out io.Writer, c echo.Context, rl *pipeline.RequestLog, level slog.Level, status int, start time.Time) {
	r := c.Request()
	h := c.Response().Header()
	route := ""
	if rl != nil {
		route = rl.Route
	}
	bp := lineBufs.Get().(*[]byte)
	b := append((*bp)[:0], `{"time":"`...)
	b = time.Now().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","level":"`...)
	b = append(b, level.String()...)
	b = append(b, `","msg":"access"`...)
	b = appendField(b, "route", route)
	b = appendField(b, "method", r.Method)
	b = appendField(b, "path", r.URL.Path)
	b = appendInt(b, "status", int64(status))
	b = appendField(b, "cache_status", h.Get("Cache-Status"))
	if rl != nil {
		if t := rl.Tenant(); t != "" {
			b = appendField(b, "tenant", t)
		}
		if target, us := rl.Upstream(); target != "" {
			b = appendField(b, "upstream", target)
			b = appendInt(b, "upstream_status", int64(us))
		}
	}
	if d := h.Get("X-Edgecache-Degraded"); d != "" {
		b = appendField(b, "degraded", d)
		b = appendField(b, "degraded_reason", h.Get("X-Edgecache-Degraded-Reason"))
	}
	b = appendInt(b, "bytes_in", max(r.ContentLength, 0))
	b = appendInt(b, "bytes_out", c.Response().Size)
	b = append(b, `,"duration_ms":`...)
	b = strconv.AppendFloat(b, float64(time.Since(start).Microseconds())/1000, 'f', -1, 64)
	b = appendContext(b, r.Context(), rl)
	b = append(b, "}\n"...)
	_, _ = out.Write(b) // like slog: a log that cannot be written is not the client's error
	*bp = b
	lineBufs.Put(bp)
}

// appendContext appends what pipeline.LogAttrs and telemetry.LogHandler add
// to every line of a request: its id, and the trace's ids when sampled.
func appendContext(b []byte, ctx context.Context, rl *pipeline.RequestLog) []byte {
	if rl != nil && rl.ID != "" {
		b = appendField(b, "request_id", rl.ID)
	}
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() && sc.IsSampled() {
		tid, sid := sc.TraceID(), sc.SpanID()
		b = appendField(b, "trace_id", tid.String())
		b = appendField(b, "span_id", sid.String())
	}
	return b
}

// appendField appends ,"key":"value" (key is a plain literal).
func appendField(b []byte, key, value string) []byte {
	b = append(b, `,"`...)
	b = append(b, key...)
	b = append(b, `":`...)
	return appendJSONString(b, value)
}

// appendInt appends ,"key":n.
func appendInt(b []byte, key string, n int64) []byte {
	b = append(b, `,"`...)
	b = append(b, key...)
	b = append(b, `":`...)
	return strconv.AppendInt(b, n, 10)
}

// appendJSONString appends s as a JSON string. The values are mostly plain
// ASCII, copied as they are; anything else (quotes, control characters,
// invalid UTF-8, which a client's path or header may hold) goes through
// encoding/json.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf {
			q, _ := json.Marshal(s) // a string always marshals
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
