// Package telemetry sets up OpenTelemetry for edgecache and names its
// measurements. It is the only package that imports the OTel SDK and the
// Prometheus exporter; everything else takes a metric.Meter or a small
// consumer-side interface.
//
// Metric names follow OTel conventions (dots, units) and appear on /metrics
// in Prometheus form: edgecache.cache.lookups → edgecache_cache_lookups_total.
// Attributes are bounded: route names (from configuration), tiers, results
// and fixed reason words — never keys, prompts or tenants.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/contrib/exporters/autoexport"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/attribute"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

// Telemetry holds the providers and the Prometheus handler.
type Telemetry struct {
	MeterProvider metric.MeterProvider
	// TracerProvider is a no-op unless traces are configured (below).
	TracerProvider trace.TracerProvider
	// Tracing reports whether spans are exported.
	Tracing bool
	// Handler serves the Prometheus text exposition for /metrics.
	Handler  http.Handler
	shutdown []func(context.Context) error
}

// Setup builds the providers from the standard OTEL_* environment:
// metrics are always served on /metrics (Prometheus) and also pushed over
// OTLP when OTEL_METRICS_EXPORTER or an OTLP endpoint is set; traces are
// exported (OTLP by default, per OTEL_TRACES_EXPORTER) when an OTLP
// endpoint or OTEL_TRACES_EXPORTER is set, and cost nothing otherwise.
// OTEL_SDK_DISABLED=true turns both exports off. getenv nil → os.Getenv.
func Setup(ctx context.Context, getenv func(string) string) (*Telemetry, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	disabled := strings.EqualFold(getenv("OTEL_SDK_DISABLED"), "true")
	endpoint := getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != ""
	reg := prometheus.NewRegistry()
	exp, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithoutScopeInfo())
	if err != nil {
		return nil, fmt.Errorf("prometheus exporter: %w", err)
	}
	res, err := resource.New(ctx, resource.WithFromEnv(), resource.WithTelemetrySDK(),
		resource.WithAttributes(attribute.String("service.name", serviceName(getenv))))
	if err != nil {
		return nil, fmt.Errorf("otel resource: %w", err)
	}
	opts := []sdkmetric.Option{sdkmetric.WithReader(exp), sdkmetric.WithResource(res)}
	t := &Telemetry{Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), TracerProvider: tracenoop.NewTracerProvider()}
	if !disabled && (endpoint || getenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") != "" || getenv("OTEL_METRICS_EXPORTER") != "") {
		r, err := autoexport.NewMetricReader(ctx)
		if err != nil {
			return nil, fmt.Errorf("otlp metrics: %w", err)
		}
		opts = append(opts, sdkmetric.WithReader(r))
	}
	mp := sdkmetric.NewMeterProvider(opts...)
	t.MeterProvider = mp
	t.shutdown = append(t.shutdown, mp.Shutdown)
	if !disabled && (endpoint || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "" || getenv("OTEL_TRACES_EXPORTER") != "") {
		se, err := autoexport.NewSpanExporter(ctx)
		if err != nil {
			return nil, fmt.Errorf("otlp traces: %w", err)
		}
		tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(se), sdktrace.WithResource(res))
		t.TracerProvider, t.Tracing = tp, true
		t.shutdown = append(t.shutdown, tp.Shutdown)
	}
	return t, nil
}

func serviceName(getenv func(string) string) string {
	if s := getenv("OTEL_SERVICE_NAME"); s != "" {
		return s
	}
	return "edgecache"
}

// Shutdown flushes and stops the providers.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	var errs []error
	for i := len(t.shutdown) - 1; i >= 0; i-- {
		errs = append(errs, t.shutdown[i](ctx))
	}
	return errors.Join(errs...)
}

// Handler wraps h with a server span per request (named after the matched
// route) when tracing is on; otherwise h is returned as is.
func (t *Telemetry) Wrap(h http.Handler, name string) http.Handler {
	if !t.Tracing {
		return h
	}
	return otelhttp.NewHandler(h, name, otelhttp.WithTracerProvider(t.TracerProvider),
		otelhttp.WithMeterProvider(metricnoop.NewMeterProvider()), // our own HTTP metrics are cheaper
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return r.Method + " " + r.URL.Path }))
}

// LogHandler adds trace_id and span_id to every log record made with a
// context that carries a span.
func LogHandler(h slog.Handler) slog.Handler { return traceLog{h} }

type traceLog struct{ slog.Handler }

func (l traceLog) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return l.Handler.Handle(ctx, r)
}

func (l traceLog) WithAttrs(as []slog.Attr) slog.Handler { return traceLog{l.Handler.WithAttrs(as)} }
func (l traceLog) WithGroup(g string) slog.Handler       { return traceLog{l.Handler.WithGroup(g)} }

// Metrics records the request path's measurements. It implements
// pipeline.Metrics.
type Metrics struct {
	lookups   metric.Int64Counter
	bypasses  metric.Int64Counter
	upstream  metric.Int64Counter
	latency   metric.Float64Histogram
	coalesced metric.Int64Counter
	dropped   metric.Int64Counter
	degraded  metric.Int64Counter
	reqDur    metric.Float64Histogram
	inFlight  metric.Int64UpDownCounter
	ttft      metric.Float64Histogram
	shed      metric.Int64Counter

	mu   sync.RWMutex
	opts map[attrKey]metric.MeasurementOption
}

type attrKey struct {
	kind, a, b, c string
	n             int
}

// NewMetrics creates the instruments on mp's meter.
func NewMetrics(mp metric.MeterProvider) (*Metrics, error) {
	m := mp.Meter("github.com/edgecache/edgecache")
	mm := &Metrics{opts: map[attrKey]metric.MeasurementOption{}}
	var errs [11]error
	mm.lookups, errs[0] = m.Int64Counter("edgecache.cache.lookups", metric.WithDescription("Cache tiers consulted, by route, tier and result (hit or miss)."))
	mm.bypasses, errs[1] = m.Int64Counter("edgecache.cache.bypasses", metric.WithDescription("Requests that skipped the cache, by route and reason."))
	mm.upstream, errs[2] = m.Int64Counter("edgecache.upstream.requests", metric.WithDescription("Calls to the upstream model, by route, status code and error type."))
	mm.latency, errs[3] = m.Float64Histogram("edgecache.upstream.duration", metric.WithUnit("s"),
		metric.WithDescription("Duration of upstream calls until the answer was complete."),
		metric.WithExplicitBucketBoundaries(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
	mm.coalesced, errs[4] = m.Int64Counter("edgecache.requests.coalesced", metric.WithDescription("Requests that joined an identical upstream call in progress."))
	mm.dropped, errs[5] = m.Int64Counter("edgecache.cache.store_dropped", metric.WithDescription("Answers not stored because the write queue was full."))
	mm.degraded, errs[6] = m.Int64Counter("edgecache.degrade.answers", metric.WithDescription("Degraded answers served, by route, rung and reason."))
	mm.reqDur, errs[7] = m.Float64Histogram("http.server.request.duration", metric.WithUnit("s"),
		metric.WithDescription("Duration of HTTP server requests (OpenTelemetry HTTP semantic conventions)."),
		metric.WithExplicitBucketBoundaries(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
	mm.inFlight, errs[8] = m.Int64UpDownCounter("edgecache.requests.in_flight", metric.WithDescription("Proxied requests being served."))
	mm.ttft, errs[9] = m.Float64Histogram("gen_ai.server.time_to_first_token", metric.WithUnit("s"),
		metric.WithDescription("Time to the first token of upstream answers (OpenTelemetry GenAI semantic conventions)."),
		metric.WithExplicitBucketBoundaries(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
	mm.shed, errs[10] = m.Int64Counter("edgecache.admission.shed", metric.WithDescription("Requests refused by admission, by lane and reason."))
	if err := errors.Join(errs[:]...); err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	return mm, nil
}

// opt returns a cached attribute option, so recording does not allocate.
func (m *Metrics) opt(k attrKey, mk func() []attribute.KeyValue) metric.MeasurementOption {
	m.mu.RLock()
	o, ok := m.opts[k]
	m.mu.RUnlock()
	if ok {
		return o
	}
	o = metric.WithAttributeSet(attribute.NewSet(mk()...))
	m.mu.Lock()
	if len(m.opts) < 10000 { // bounded: attribute values come from config and fixed words
		m.opts[k] = o
	}
	m.mu.Unlock()
	return o
}

// CacheLookup implements pipeline.Metrics.
func (m *Metrics) CacheLookup(route, tier, result string) {
	m.lookups.Add(context.Background(), 1, m.opt(attrKey{kind: "l", a: route, b: tier, c: result}, func() []attribute.KeyValue {
		return []attribute.KeyValue{attribute.String("route", route), attribute.String("tier", tier), attribute.String("result", result)}
	}))
}

// Bypass implements pipeline.Metrics.
func (m *Metrics) Bypass(route, reason string) {
	m.bypasses.Add(context.Background(), 1, m.opt(attrKey{kind: "b", a: route, b: reason, c: ""}, func() []attribute.KeyValue {
		return []attribute.KeyValue{attribute.String("route", route), attribute.String("reason", reason)}
	}))
}

// UpstreamCall implements pipeline.Metrics.
func (m *Metrics) UpstreamCall(route string, status int, errKind string, d time.Duration) {
	o := m.opt(attrKey{kind: "u", a: route, c: errKind, n: status}, func() []attribute.KeyValue {
		kv := []attribute.KeyValue{attribute.String("route", route), attribute.Int("http.response.status_code", status)}
		if errKind != "" {
			kv = append(kv, attribute.String("error.type", errKind))
		}
		return kv
	})
	m.upstream.Add(context.Background(), 1, o)
	m.latency.Record(context.Background(), d.Seconds(), o)
}

// Coalesced implements pipeline.Metrics.
func (m *Metrics) Coalesced(route string) {
	m.coalesced.Add(context.Background(), 1, m.opt(attrKey{kind: "c", a: route, b: "", c: ""}, func() []attribute.KeyValue {
		return []attribute.KeyValue{attribute.String("route", route)}
	}))
}

// StoreDropped implements pipeline.Metrics.
func (m *Metrics) StoreDropped(route string) {
	m.dropped.Add(context.Background(), 1, m.opt(attrKey{kind: "d", a: route, b: "", c: ""}, func() []attribute.KeyValue {
		return []attribute.KeyValue{attribute.String("route", route)}
	}))
}

// Degraded implements pipeline.Metrics.
func (m *Metrics) Degraded(route, rung, reason string) {
	m.degraded.Add(context.Background(), 1, m.opt(attrKey{kind: "g", a: route, b: rung, c: reason}, func() []attribute.KeyValue {
		return []attribute.KeyValue{attribute.String("route", route), attribute.String("rung", rung), attribute.String("reason", reason)}
	}))
}

// Begin counts a request in flight; End records it.
func (m *Metrics) Begin() { m.inFlight.Add(context.Background(), 1) }

// End implements server.Observer: the request's duration by route, method
// and status.
func (m *Metrics) End(route, method string, status int, d time.Duration) {
	m.inFlight.Add(context.Background(), -1)
	o := m.opt(attrKey{kind: "h", a: route, b: method, n: status}, func() []attribute.KeyValue {
		return []attribute.KeyValue{attribute.String("http.route", route), attribute.String("http.request.method", method),
			attribute.Int("http.response.status_code", status)}
	})
	m.reqDur.Record(context.Background(), d.Seconds(), o)
}

// TTFT implements pipeline.Metrics: an upstream answer's first token.
func (m *Metrics) TTFT(route, target string, d time.Duration) {
	m.ttft.Record(context.Background(), d.Seconds(), m.opt(attrKey{kind: "t", a: route, b: target, c: ""}, func() []attribute.KeyValue {
		return []attribute.KeyValue{attribute.String("route", route), attribute.String("target", target)}
	}))
}

// Gauges registers callbacks observed at each collection: the state of
// each upstream breaker (0 closed, 1 half-open, 2 open) and whether Redis
// answers (nil redisUp: no Redis, not reported).
func Gauges(mp metric.MeterProvider, breakers func() map[string]int, redisUp func() bool) error {
	m := mp.Meter("github.com/edgecache/edgecache")
	bs, err := m.Int64ObservableGauge("edgecache.upstream.breaker_state",
		metric.WithDescription("Upstream circuit breaker state: 0 closed, 1 half-open, 2 open."))
	if err != nil {
		return err
	}
	insts := []metric.Observable{bs}
	var ru metric.Int64ObservableGauge
	if redisUp != nil {
		if ru, err = m.Int64ObservableGauge("edgecache.redis.up", metric.WithDescription("1 when the shared Redis answers, 0 when its breaker is open.")); err != nil {
			return err
		}
		insts = append(insts, ru)
	}
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		for target, state := range breakers() {
			o.ObserveInt64(bs, int64(state), metric.WithAttributes(attribute.String("target", target)))
		}
		if redisUp != nil {
			v := int64(0)
			if redisUp() {
				v = 1
			}
			o.ObserveInt64(ru, v)
		}
		return nil
	}, insts...)
	return err
}

// Shed implements pipeline.Metrics.
func (m *Metrics) Shed(lane, reason string) {
	m.shed.Add(context.Background(), 1, m.opt(attrKey{kind: "s", a: lane, b: reason, c: ""}, func() []attribute.KeyValue {
		return []attribute.KeyValue{attribute.String("lane", lane), attribute.String("reason", reason)}
	}))
}
