package upstream

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// TestTraceHeadersAreEdgecaches: with a span in the context, the upstream
// sees its trace context instead of the client's; without one (tracing
// off) the client's passes through.
func TestTraceHeadersAreEdgecaches(t *testing.T) {
	var got http.Header
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got = r.Header.Clone() }))
	defer srv.Close()
	c, err := New(Config{URL: srv.URL, Propagator: propagation.TraceContext{}})
	if err != nil {
		t.Fatal(err)
	}
	const client = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	in := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", nil)
	in.Header.Set("Traceparent", client)
	in.Header.Set("Tracestate", "vendor=x")
	do := func(ctx context.Context) {
		t.Helper()
		resp, err := c.Do(ctx, in, "/v1/chat/completions", []byte("{}"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	do(context.Background())
	if got.Get("Traceparent") != client || got.Get("Tracestate") != "vendor=x" {
		t.Errorf("without a span: traceparent %q tracestate %q, want the client's", got.Get("Traceparent"), got.Get("Tracestate"))
	}
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("1111111111111111")
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled})
	do(trace.ContextWithSpanContext(context.Background(), sc))
	if tp := got.Get("Traceparent"); !strings.Contains(tp, "-1111111111111111-") || len(got["Traceparent"]) != 1 {
		t.Errorf("with a span: traceparent %q, want edgecache's span 1111111111111111", got["Traceparent"])
	}
	if ts := got.Get("Tracestate"); ts != "" {
		t.Errorf("with a span: tracestate %q, want the span's (empty)", ts)
	}
	if in.Header.Get("Traceparent") != client {
		t.Error("the inbound request's header was changed")
	}
}

// TestParseURL: http, https and h2c base URLs are taken; h2c comes back as
// http with h2c set, and the Client's URLs use http.
func TestParseURL(t *testing.T) {
	for in, want := range map[string]struct {
		url string
		h2c bool
	}{
		"http://m:8000/v1":        {"http://m:8000/v1", false},
		"https://api.example.com": {"https://api.example.com", false},
		"h2c://vllm.svc:8000":     {"http://vllm.svc:8000", true},
	} {
		u, h2c, err := ParseURL(in)
		if err != nil || u.String() != want.url || h2c != want.h2c {
			t.Errorf("ParseURL(%q) = %v, %v, %v; want %s, %v", in, u, h2c, err, want.url, want.h2c)
		}
	}
	for _, bad := range []string{"ftp://m", "h2c:///v1", "m:8000", ""} {
		if _, _, err := ParseURL(bad); err == nil || !strings.Contains(err.Error(), "h2c") {
			t.Errorf("ParseURL(%q): err %v, want one naming the schemes", bad, err)
		}
	}
	c, err := New(Config{URL: "h2c://127.0.0.1:1/v1"})
	if err != nil {
		t.Fatal(err)
	}
	if got := c.URL("/v1/chat/completions", "").String(); got != "http://127.0.0.1:1/v1/chat/completions" {
		t.Errorf("URL = %s", got)
	}
}

// TestBodyRelease: a Body is sent whole, can be read again for a retry
// until it is released, and not after.
func TestBodyRelease(t *testing.T) {
	var got []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, _ = io.ReadAll(r.Body)
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	c, err := New(Config{URL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	b := NewBody([]byte(`{"model":"m"}`))
	resp, err := c.DoBody(context.Background(), httptest.NewRequest(http.MethodPost, "/v1/chat/completions", nil), "/v1/chat/completions", b)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if string(got) != `{"model":"m"}` || resp.Request.ContentLength != int64(len(got)) {
		t.Fatalf("upstream got %q (Content-Length %d)", got, resp.Request.ContentLength)
	}
	again, err := resp.Request.GetBody()
	if err != nil {
		t.Fatal(err)
	}
	sent, err := resp.Request.GetBody()
	if err != nil {
		t.Fatal(err)
	}
	if got, err := io.ReadAll(sent); err != nil || string(got) != `{"model":"m"}` {
		t.Fatalf("GetBody reads %q, %v", got, err)
	}
	b.Release()
	// net/http reads once more past Content-Length: a reader that has
	// given everything says EOF even after the release.
	if n, err := sent.Read(make([]byte, 8)); n != 0 || err != io.EOF {
		t.Errorf("read of a fully read body after Release: %d, %v; want 0, EOF", n, err)
	}
	if _, err := resp.Request.GetBody(); err == nil {
		t.Error("GetBody after Release: no error")
	}
	if _, err := io.ReadAll(again); err == nil {
		t.Error("a reader made before Release still reads the released bytes")
	}
}
