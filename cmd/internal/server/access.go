package server

import (
	"log/slog"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/edgecache/edgecache/cmd/internal/pipeline"
)

// AccessLog configures the data listener's access log.
type AccessLog struct {
	// Mode is "full" (every request), "sampled" (a SampleRate share, and
	// every 5xx) or "off" (also the zero value).
	Mode       string
	SampleRate float64
}

// Keys of what a route handler tells the access log.
const (
	ctxRoute  = "edgecache.route"
	ctxStatus = "edgecache.status"
)

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
// Unknown paths are logged too, with route "".
func (a AccessLog) middleware(log *slog.Logger) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		if a.Mode == "" || a.Mode == "off" {
			return next
		}
		return func(c echo.Context) error {
			start := time.Now()
			if err := next(c); err != nil {
				c.Error(err) // answered now, so the line has its status
			}
			status, _ := c.Get(ctxStatus).(int)
			if status == 0 {
				status = c.Response().Status
			}
			if !a.keep(status) {
				return nil
			}
			r := c.Request()
			route, _ := c.Get(ctxRoute).(string)
			attrs := make([]slog.Attr, 0, 12)
			attrs = append(attrs, slog.String("route", route), slog.String("method", r.Method), slog.String("path", r.URL.Path),
				slog.Int("status", status), slog.String("cache_status", c.Response().Header().Get("Cache-Status")))
			if rl := pipeline.RequestLogFrom(r.Context()); rl != nil {
				if t := rl.Tenant(); t != "" {
					attrs = append(attrs, slog.String("tenant", t))
				}
				if target, us := rl.Upstream(); target != "" {
					attrs = append(attrs, slog.String("upstream", target), slog.Int("upstream_status", us))
				}
			}
			if d := c.Response().Header().Get("X-Edgecache-Degraded"); d != "" {
				attrs = append(attrs, slog.String("degraded", d), slog.String("degraded_reason", c.Response().Header().Get("X-Edgecache-Degraded-Reason")))
			}
			attrs = append(attrs, slog.Int64("bytes_in", max(r.ContentLength, 0)), slog.Int64("bytes_out", c.Response().Size),
				slog.Float64("duration_ms", float64(time.Since(start).Microseconds())/1000))
			level := slog.LevelInfo
			if status >= http.StatusInternalServerError {
				level = slog.LevelWarn
			}
			log.LogAttrs(r.Context(), level, "access", attrs...)
			return nil
		}
	}
}
