package app

import (
	"context"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/edgecache/edgecache/cmd/internal/llmsim"
)

// otlpReceiver is an in-test OTLP/HTTP endpoint that keeps the spans it
// receives (metrics pushes are accepted and ignored).
type otlpReceiver struct {
	mu    sync.Mutex
	spans []*tracepb.Span
}

func (o *otlpReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	if r.URL.Path == "/v1/traces" {
		var req coltracepb.ExportTraceServiceRequest
		if err := proto.Unmarshal(b, &req); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		o.mu.Lock()
		for _, rs := range req.ResourceSpans {
			for _, ss := range rs.ScopeSpans {
				o.spans = append(o.spans, ss.Spans...)
			}
		}
		o.mu.Unlock()
	}
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.WriteHeader(http.StatusOK)
}

func (o *otlpReceiver) byName() map[string]*tracepb.Span {
	o.mu.Lock()
	defer o.mu.Unlock()
	m := map[string]*tracepb.Span{}
	for _, s := range o.spans {
		m[s.Name] = s
	}
	return m
}

func TestOneRequestProducesTheSpanTree(t *testing.T) {
	recv := &otlpReceiver{}
	srv := httptest.NewServer(recv)
	defer srv.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", srv.URL)
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
	t.Setenv("OTEL_METRIC_EXPORT_INTERVAL", "100000")
	sim, err := llmsim.Start(context.Background(), "127.0.0.1:0", llmsim.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	cfg := filepath.Join(t.TempDir(), "edgecache.yaml")
	if err := os.WriteFile(cfg, []byte("semantic: {embedder: lexical}\nroutes:\n  - {name: chat, path: /v1/chat/completions, cache: {mode: semantic}}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	data, _ := startEdgecache(t, sim.URL(), "--config", cfg)
	resp, err := http.Post(data+"/v1/chat/completions", "application/json",
		strings.NewReader(`{"model":"m","messages":[{"role":"user","content":"trace me"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	want := []string{"cache.l1.get", "semantic.embed", "semantic.search", "upstream.attempt"}
	waitUntil(t, func() bool {
		m := recv.byName()
		for _, n := range want {
			if m[n] == nil {
				return false
			}
		}
		for _, s := range m {
			if strings.HasPrefix(s.Name, "POST ") {
				return true
			}
		}
		return false
	})
	m := recv.byName()
	var root *tracepb.Span
	for _, s := range m {
		if strings.HasPrefix(s.Name, "POST ") {
			root = s
		}
	}
	if root.Kind != tracepb.Span_SPAN_KIND_SERVER || len(root.ParentSpanId) != 0 {
		t.Errorf("root span %q kind %v parent %x", root.Name, root.Kind, root.ParentSpanId)
	}
	for _, n := range want {
		s := m[n]
		if string(s.TraceId) != string(root.TraceId) || string(s.ParentSpanId) != string(root.SpanId) {
			t.Errorf("span %s is not a child of %s", n, root.Name)
		}
	}
	if m["upstream.attempt"].Kind != tracepb.Span_SPAN_KIND_CLIENT {
		t.Errorf("upstream.attempt kind %v", m["upstream.attempt"].Kind)
	}
}

// TestTraceContextIsContinuedAndReplacedUpstream: a request with a
// traceparent continues the caller's trace (the server span is its child),
// and the upstream sees edgecache's span as its parent, not the caller's.
func TestTraceContextIsContinuedAndReplacedUpstream(t *testing.T) {
	recv := &otlpReceiver{}
	srv := httptest.NewServer(recv)
	defer srv.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", srv.URL)
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
	t.Setenv("OTEL_METRIC_EXPORT_INTERVAL", "100000")
	t.Setenv("OTEL_PROPAGATORS", "tracecontext,baggage")
	sim, err := llmsim.Start(context.Background(), "127.0.0.1:0", llmsim.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	// The upstream: llmsim behind a proxy that keeps the trace headers it sees.
	simURL, _ := url.Parse(sim.URL())
	var mu sync.Mutex
	var seen []http.Header
	rp := httputil.NewSingleHostReverseProxy(simURL)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Clone())
		mu.Unlock()
		rp.ServeHTTP(w, r)
	}))
	defer up.Close()
	data, _, log := startEdgecacheLog(t, up.URL)

	const traceID, callerSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	req, _ := http.NewRequest(http.MethodPost, data+"/v1/chat/completions",
		strings.NewReader(`{"model":"m","messages":[{"role":"user","content":"continue my trace"}]}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Traceparent", "00-"+traceID+"-"+callerSpan+"-01")
	req.Header.Set("Baggage", "tenant.tier=gold")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	var root *tracepb.Span
	waitUntil(t, func() bool {
		m := recv.byName()
		for _, s := range m {
			if strings.HasPrefix(s.Name, "POST ") {
				root = s
			}
		}
		return root != nil && m["upstream.attempt"] != nil
	})
	if got := hex.EncodeToString(root.TraceId); got != traceID {
		t.Errorf("server span trace id %s, want the caller's %s", got, traceID)
	}
	if got := hex.EncodeToString(root.ParentSpanId); got != callerSpan {
		t.Errorf("server span parent %s, want the caller's span %s", got, callerSpan)
	}
	mine := map[string]bool{}
	for _, s := range recv.byName() {
		if hex.EncodeToString(s.TraceId) == traceID {
			mine[hex.EncodeToString(s.SpanId)] = true
		}
	}
	attempt := hex.EncodeToString(recv.byName()["upstream.attempt"].SpanId)
	mu.Lock()
	defer mu.Unlock()
	if len(seen) == 0 {
		t.Fatal("the upstream saw no request")
	}
	tp := seen[0].Get("Traceparent")
	parts := strings.Split(tp, "-")
	if len(parts) != 4 || parts[1] != traceID {
		t.Fatalf("upstream traceparent %q, want trace %s", tp, traceID)
	}
	if parts[2] == callerSpan || !mine[parts[2]] {
		t.Errorf("upstream traceparent parent %s: want an edgecache span (attempt %s), not the caller's %s", parts[2], attempt, callerSpan)
	}
	if parts[2] != attempt {
		t.Errorf("upstream traceparent parent %s, want the upstream.attempt span %s", parts[2], attempt)
	}
	if b := seen[0].Get("Baggage"); b != "tenant.tier=gold" {
		t.Errorf("upstream baggage %q", b)
	}
	// The request's log lines carry the caller's trace id.
	var access map[string]any
	waitUntil(t, func() bool {
		for _, l := range logLines(t, log.String()) {
			if l["msg"] == "access" {
				access = l
			}
		}
		return access != nil
	})
	if access["trace_id"] != traceID || access["request_id"] != resp.Header.Get("X-Request-Id") {
		t.Errorf("access line %v, want trace_id %s and the request id", access, traceID)
	}
}
