package telemetry

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/trace"
)

// collect returns the int64 sums by metric name and the attribute value of
// attr, after one collection by the manual reader.
func collect(t *testing.T, r *sdkmetric.ManualReader, attr attribute.Key) map[string]map[string]int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			s, ok := m.Data.(metricdata.Sum[int64])
			if !ok {
				continue
			}
			out[m.Name] = map[string]int64{}
			for _, dp := range s.DataPoints {
				v, _ := dp.Attributes.Value(attr)
				out[m.Name][v.AsString()] += dp.Value
			}
		}
	}
	return out
}

// Counters kept in atomic cells add up exactly under concurrent use, keep
// their attribute sets apart, and are cumulative across collections.
func TestCountersAddUp(t *testing.T) {
	r := sdkmetric.NewManualReader()
	m, err := NewMetrics(sdkmetric.NewMeterProvider(sdkmetric.WithReader(r)))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 1000 {
				m.Begin()
				result := "hit"
				if i%4 == 0 {
					result = "miss"
				}
				m.CacheLookup("chat", "l1", result)
				if g == 0 {
					m.Bypass("chat", "no-store")
				}
				m.End("chat", "POST", 200, time.Millisecond)
			}
		})
	}
	m.Begin() // one still in flight
	wg.Wait()
	got := collect(t, r, "result")
	if h, miss := got["edgecache.cache.lookups"]["hit"], got["edgecache.cache.lookups"]["miss"]; h != 6000 || miss != 2000 {
		t.Errorf("lookups: hit %d miss %d, want 6000 and 2000", h, miss)
	}
	if n := got["edgecache.requests.in_flight"][""]; n != 1 {
		t.Errorf("in flight %d, want 1", n)
	}
	m.CacheLookup("chat", "l1", "hit")
	if h := collect(t, r, "reason")["edgecache.cache.bypasses"]["no-store"]; h != 1000 {
		t.Errorf("bypasses %d, want 1000", h)
	}
	if h := collect(t, r, "result")["edgecache.cache.lookups"]["hit"]; h != 6001 {
		t.Errorf("lookups after one more hit: %d, want 6001 (cumulative)", h)
	}
}

// The shadow verification metrics reach /metrics under the names operators
// and alerts rely on: edgecache_semantic_shadow_judgements_total{route,
// verdict} and edgecache_semantic_false_hit_rate{route, bound}.
func TestShadowMetricsOnPrometheus(t *testing.T) {
	tel, err := Setup(context.Background(), func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(context.Background())
	m, err := NewMetrics(tel.MeterProvider)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		m.ShadowJudgement("faq", "agree", false)
	}
	m.ShadowJudgement("faq", "disagree", false)
	m.ShadowJudgement("faq", "unsure", true)
	m.ShadowCall("faq", "skipped_budget")
	if err := FalseHitRates(tel.MeterProvider, func() []FalseHitRate {
		return []FalseHitRate{{Route: "faq", Estimate: 0.25, Lower: 0.0456, Upper: 0.6994}}
	}); err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	tel.Handler.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	body := rec.Body.String()
	for _, want := range []string{
		`edgecache_semantic_shadow_judgements_total{route="faq",verdict="agree"} 3`,
		`edgecache_semantic_shadow_judgements_total{route="faq",verdict="disagree"} 1`,
		`edgecache_semantic_shadow_near_miss_judgements_total{route="faq",verdict="unsure"} 1`,
		`edgecache_semantic_shadow_calls_total{result="skipped_budget",route="faq"} 1`,
		`edgecache_semantic_false_hit_rate{bound="estimate",route="faq"} 0.25`,
		`edgecache_semantic_false_hit_rate{bound="lower",route="faq"} 0.0456`,
		`edgecache_semantic_false_hit_rate{bound="upper",route="faq"} 0.6994`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", body)
	}
}

func TestPropagatorsFromEnv(t *testing.T) {
	for env, want := range map[string]string{
		"":                     "baggage,traceparent,tracestate",
		"tracecontext":         "traceparent,tracestate",
		"none":                 "",
		"tracecontext,baggage": "baggage,traceparent,tracestate",
	} {
		p, err := propagators(func(string) string { return env })
		if err != nil {
			t.Fatalf("%q: %v", env, err)
		}
		f := p.Fields()
		sort.Strings(f)
		if got := strings.Join(f, ","); got != want {
			t.Errorf("OTEL_PROPAGATORS=%q: fields %q, want %q", env, got, want)
		}
	}
	if _, err := propagators(func(string) string { return "nonsense" }); err == nil {
		t.Error("an unknown propagator was accepted")
	}
}

func TestLogHandlerAddsRequestAndSampledTrace(t *testing.T) {
	var buf strings.Builder
	log := slog.New(LogHandler(slog.NewTextHandler(&buf, nil), func(context.Context) []slog.Attr {
		return []slog.Attr{slog.String("request_id", "r1")}
	}))
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	sampled := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled})
	log.With("k", "v").InfoContext(trace.ContextWithSpanContext(context.Background(), sampled), "a")
	log.InfoContext(trace.ContextWithSpanContext(context.Background(), sampled.WithTraceFlags(0)), "b")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "request_id=r1") || !strings.Contains(lines[0], "trace_id=4bf92f3577b34da6a3ce929d0e0e4736") ||
		!strings.Contains(lines[0], "k=v") {
		t.Errorf("sampled: %q", lines)
	}
	if strings.Contains(lines[len(lines)-1], "trace_id") || !strings.Contains(lines[len(lines)-1], "request_id=r1") {
		t.Errorf("not sampled: %q", lines[len(lines)-1])
	}
}

// TestRedisUnitsDropped: go-redis' ms and ns instruments never reach
// /metrics (promtool check metrics wants base units); its counts do.
func TestRedisUnitsDropped(t *testing.T) {
	tel, err := Setup(context.Background(), func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(context.Background())
	m := tel.MeterProvider.Meter(redisotelScope)
	h, _ := m.Float64Histogram("db.client.connections.use_time", metric.WithUnit("ms"))
	h.Record(context.Background(), 3)
	c, _ := m.Int64Counter("db.client.connections.timeouts")
	c.Add(context.Background(), 1)
	rec := httptest.NewRecorder()
	tel.Handler.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	b := rec.Body.String()
	if strings.Contains(b, "use_time") || !strings.Contains(b, "db_client_connections_timeouts") {
		t.Errorf("/metrics:\n%s", b)
	}
}

// TestCacheSaved: tokens and cost saved per route and tenant, priced by
// exact model name or the longest prefix, tenants bounded by MaxTenants.
func TestCacheSaved(t *testing.T) {
	r := sdkmetric.NewManualReader()
	m, err := NewMetrics(sdkmetric.NewMeterProvider(sdkmetric.WithReader(r)))
	if err != nil {
		t.Fatal(err)
	}
	m.SetPricing(map[string]Price{"deepseek-chat": {InputPerMillion: 0.27, OutputPerMillion: 1.10}, "deepseek": {InputPerMillion: 100}})
	m.CacheSaved("chat", "t:a", "deepseek-chat", 1000, 2000)
	m.CacheSaved("chat", "t:a", "deepseek-chat-v3", 1000000, 0) // prefix deepseek-chat, not deepseek
	m.CacheSaved("chat", "", "unpriced", 5, 5)
	for i := range MaxTenants + 5 {
		m.CacheSaved("bulk", fmt.Sprint("t:", i), "unpriced", 1, 0)
	}
	got := collect(t, r, "tenant")["edgecache.tokens_saved"]
	if got["t:a"] != 1001000+2000 || got["anonymous"] != 10 || got["other"] != 6 { // t:a and 99 of bulk have their own series
		t.Errorf("tokens saved by tenant: %v", got)
	}
	var cost float64
	for _, s := range m.Saved() {
		if s.Route == "chat" && s.Tenant == "t:a" {
			cost = s.Cost
			if s.Hits != 2 || s.InputTokens != 1001000 || s.OutputTokens != 2000 || s.Currency != "USD" {
				t.Errorf("saved: %+v", s)
			}
		}
	}
	if want := 0.27*1.001 + 1.10*0.002; math.Abs(cost-want) > 1e-9 {
		t.Errorf("cost saved %v, want %v", cost, want)
	}
}

// The embedding counter reaches /metrics as edgecache_embed_texts_total
// with result computed and memo, whatever counts returns at collection.
func TestEmbedTextsOnPrometheus(t *testing.T) {
	tel, err := Setup(context.Background(), func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(context.Background())
	computed, memo := int64(7), int64(3)
	if err := EmbedTexts(tel.MeterProvider, func() (int64, int64) { return computed, memo }); err != nil {
		t.Fatal(err)
	}
	scrape := func() string {
		rec := httptest.NewRecorder()
		tel.Handler.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
		return rec.Body.String()
	}
	body := scrape()
	for _, want := range []string{`edgecache_embed_texts_total{result="computed"} 7`, `edgecache_embed_texts_total{result="memo"} 3`} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s:\n%s", want, body)
		}
	}
	computed = 12
	if body := scrape(); !strings.Contains(body, `edgecache_embed_texts_total{result="computed"} 12`) {
		t.Errorf("the counter does not follow counts:\n%s", body)
	}
}

// Recording a request's metrics allocates nothing once its attribute sets
// exist: these run several times for every request.
func TestRecordingDoesNotAllocate(t *testing.T) {
	m, err := NewMetrics(sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader())))
	if err != nil {
		t.Fatal(err)
	}
	record := func() {
		m.Begin()
		m.UpstreamCall("chat", 200, "", time.Millisecond)
		m.TTFT("chat", "primary", time.Millisecond)
		m.TokenUsage("chat", "chat", "m", "m-2024", 10, 20, time.Millisecond, "")
		m.CacheLookup("chat", "l1", "hit")
		m.End("chat", "POST", 200, time.Millisecond)
	}
	record()
	if n := testing.AllocsPerRun(100, record); n != 0 {
		t.Errorf("%.1f allocations per request's recording, want 0", n)
	}
}
