package pipeline

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// BenchmarkServeHit measures the exact-hit path without the network:
// validation, canonical key, L1 lookup and the response write.
func BenchmarkServeHit(b *testing.B) {
	t := &testing.T{}
	e := newEdge(t, edgeOpts{})
	body := chat("What is the capital of France?", `"temperature":0`)
	e.post("/v1/chat/completions", body)
	e.settle()
	rt := &Route{Name: "chat", Path: "/v1/chat/completions", UpstreamPath: "/v1/chat/completions", API: "chat", Cache: true, TTL: 3600e9, MaxTemperature: 1, Coalesce: true}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", strings.NewReader(body))
			r.Header.Set("Content-Type", "application/json")
			w := httptest.NewRecorder()
			e.p.Serve(w, r, rt)
			if w.Code != 200 || !strings.HasPrefix(w.Header().Get("Cache-Status"), "edgecache; hit") {
				b.Fatalf("not a hit: %d %q", w.Code, w.Header().Get("Cache-Status"))
			}
		}
	})
}

// BenchmarkServePassThrough measures a bypassed request to an in-process
// llmsim (which shares the CPU, so read it relative to llmsim alone).
func BenchmarkServePassThrough(b *testing.B) {
	t := &testing.T{}
	e := newEdge(t, edgeOpts{})
	body := chat("What is the capital of France?", `"temperature":0`)
	rt := &Route{Name: "chat", Path: "/v1/chat/completions", UpstreamPath: "/v1/chat/completions", API: "chat", Cache: true, TTL: 3600e9, MaxTemperature: 1, Coalesce: true}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", strings.NewReader(body))
			r.Header.Set("Content-Type", "application/json")
			r.Header.Set("Cache-Control", "no-store")
			w := httptest.NewRecorder()
			e.p.Serve(w, r, rt)
			if w.Code != 200 {
				b.Fatalf("status %d", w.Code)
			}
		}
	})
}
