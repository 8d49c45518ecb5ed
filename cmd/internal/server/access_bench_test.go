package server

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/edgecache/edgecache/cmd/internal/pipeline"
	"github.com/edgecache/edgecache/cmd/internal/telemetry"
)

// BenchmarkAccessLog is the access log's cost per request: the same echo
// stack (recoverer, request id) with the log off and on, the production
// log handler (JSON, request id from the context) writing to io.Discard.
func BenchmarkAccessLog(b *testing.B) {
	for _, mode := range []string{"off", "full"} {
		b.Run(mode, func(b *testing.B) {
			log := slog.New(telemetry.LogHandler(slog.NewJSONHandler(io.Discard, nil), pipeline.LogAttrs))
			e := newEcho(log)
			e.Use(AccessLog{Mode: mode, Out: io.Discard}.middleware(log))
			e.POST("/v1/chat/completions", func(c echo.Context) error {
				noteRoute(c, "chat")
				c.Response().Header().Set("Cache-Status", "edgecache; hit; detail=l1; ttl=3590")
				noteStatus(c, http.StatusOK)
				return c.String(http.StatusOK, "hello")
			})
			r := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", nil)
			b.ReportAllocs()
			for b.Loop() {
				r.Header.Del("X-Request-Id")
				w := httptest.NewRecorder()
				e.ServeHTTP(w, r)
			}
		})
	}
}
