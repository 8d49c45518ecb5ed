package server

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/edgecache/edgecache/cmd/internal/pipeline"
)

type ctxLog struct{ slog.Handler }

func (h ctxLog) Handle(ctx context.Context, r slog.Record) error {
	r.AddAttrs(pipeline.LogAttrs(ctx)...)
	return h.Handler.Handle(ctx, r)
}

type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) { l.mu.Lock(); defer l.mu.Unlock(); return l.b.Write(p) }

func (l *logBuf) lines(t *testing.T) []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range bytes.Split(bytes.TrimSpace(l.b.Bytes()), []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

func accessEcho(log *slog.Logger, a AccessLog) *echo.Echo {
	e := newEcho(log)
	e.Use(a.middleware(log))
	e.POST("/v1/chat/completions", func(c echo.Context) error {
		noteRoute(c, "chat")
		log.InfoContext(c.Request().Context(), "inside")
		status := http.StatusOK
		if c.Request().Header.Get("X-Fail") != "" {
			status = http.StatusBadGateway
		}
		c.Response().Header().Set("Cache-Status", "edgecache; fwd=uri-miss")
		noteStatus(c, status)
		return c.String(status, "hello")
	})
	return e
}

func TestAccessLog(t *testing.T) {
	var buf logBuf
	log := slog.New(ctxLog{slog.NewJSONHandler(&buf, nil)})
	e := accessEcho(log, AccessLog{Mode: "full", Out: &buf})
	do := func(path string, hdr ...string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodPost, path, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			r.Header.Set(hdr[i], hdr[i+1])
		}
		w := httptest.NewRecorder()
		e.ServeHTTP(w, r)
		return w
	}
	do("/v1/chat/completions", "X-Request-Id", "client-1")
	w := do("/nowhere")
	lines := buf.lines(t)
	if len(lines) != 3 {
		t.Fatalf("lines %v", lines)
	}
	if l := lines[0]; l["msg"] != "inside" || l["request_id"] != "client-1" {
		t.Errorf("a line in the request: %v, want its request id", l)
	}
	if l := lines[1]; l["msg"] != "access" || l["request_id"] != "client-1" || l["route"] != "chat" || l["status"] != float64(200) ||
		l["cache_status"] != "edgecache; fwd=uri-miss" || l["bytes_out"] != float64(5) || l["duration_ms"] == nil {
		t.Errorf("access line %v", l)
	}
	if l := lines[2]; l["msg"] != "access" || l["status"] != float64(404) || l["route"] != "" ||
		l["request_id"] != w.Header().Get("X-Request-Id") || l["request_id"] == "" {
		t.Errorf("unknown path's access line %v", l)
	}

	// Sampled at a rate of almost nothing: only 5xx are logged. Off: nothing.
	var buf2 logBuf
	log2 := slog.New(ctxLog{slog.NewJSONHandler(&buf2, nil)})
	e = accessEcho(log2, AccessLog{Mode: "sampled", SampleRate: 1e-12, Out: &buf2})
	for range 20 {
		do("/v1/chat/completions")
	}
	do("/v1/chat/completions", "X-Fail", "1")
	var access []map[string]any
	for _, l := range buf2.lines(t) {
		if l["msg"] == "access" {
			access = append(access, l)
		}
	}
	if len(access) != 1 || access[0]["status"] != float64(502) || access[0]["level"] != "WARN" {
		t.Errorf("sampled: %v, want the 502 only", access)
	}
	var buf3 logBuf
	log3 := slog.New(ctxLog{slog.NewJSONHandler(&buf3, nil)})
	e = accessEcho(log3, AccessLog{Mode: "off", Out: &buf3})
	do("/v1/chat/completions", "X-Fail", "1")
	for _, l := range buf3.lines(t) {
		if l["msg"] == "access" {
			t.Errorf("off: %v", l)
		}
	}
}

// TestAccessLineEscapes: what a client controls (the path) and what an
// upstream or route sets (headers) reach the hand-built line as valid
// JSON strings, whatever bytes they hold.
func TestAccessLineEscapes(t *testing.T) {
	var buf logBuf
	log := slog.New(ctxLog{slog.NewJSONHandler(&buf, nil)})
	e := newEcho(log)
	e.Use(AccessLog{Mode: "full", Out: &buf}.middleware(log))
	odd := "q\"uote\\back\x01ctl\xffbad 中文"
	e.Any("/*", func(c echo.Context) error {
		noteRoute(c, "r\"oute")
		c.Response().Header().Set("Cache-Status", odd)
		return c.String(http.StatusOK, "ok")
	})
	r := httptest.NewRequest(http.MethodPost, "/p%22a%5Cth%01", nil)
	e.ServeHTTP(httptest.NewRecorder(), r)
	lines := buf.lines(t) // fails on a line that is not JSON
	if len(lines) != 1 {
		t.Fatalf("lines %v", lines)
	}
	l := lines[0]
	if l["path"] != "/p\"a\\th\x01" || l["route"] != "r\"oute" || l["cache_status"] != strings.ToValidUTF8(odd, "\uFFFD") {
		t.Errorf("escaped fields: path %q route %q cache_status %q", l["path"], l["route"], l["cache_status"])
	}
	if l["level"] != "INFO" || l["msg"] != "access" || l["time"] == nil || l["request_id"] == "" {
		t.Errorf("line %v", l)
	}
}
