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
	"sync/atomic"
	"time"

	"go.opentelemetry.io/contrib/exporters/autoexport"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/contrib/propagators/autoprop"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
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
	Handler http.Handler
	// Propagator reads and writes trace context and baggage in headers,
	// per OTEL_PROPAGATORS (default tracecontext,baggage; "none" turns
	// propagation off).
	Propagator propagation.TextMapPropagator
	shutdown   []func(context.Context) error
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
	// Go runtime and process metrics (go_*, process_*), from client_golang
	// itself: no further module.
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	exp, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithoutScopeInfo())
	if err != nil {
		return nil, fmt.Errorf("prometheus exporter: %w", err)
	}
	res, err := resource.New(ctx, resource.WithFromEnv(), resource.WithTelemetrySDK(),
		resource.WithAttributes(attribute.String("service.name", serviceName(getenv))))
	if err != nil {
		return nil, fmt.Errorf("otel resource: %w", err)
	}
	prop, err := propagators(getenv)
	if err != nil {
		return nil, err
	}
	opts := []sdkmetric.Option{sdkmetric.WithReader(exp), sdkmetric.WithResource(res)}
	opts = append(opts, redisUnitViews()...)
	t := &Telemetry{Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), TracerProvider: tracenoop.NewTracerProvider(),
		Propagator: prop}
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

// propagators builds the propagator OTEL_PROPAGATORS names (tracecontext,
// baggage, b3, b3multi, jaeger, xray, ottrace, none); unset or empty →
// tracecontext,baggage.
func propagators(getenv func(string) string) (propagation.TextMapPropagator, error) {
	v := strings.TrimSpace(getenv("OTEL_PROPAGATORS"))
	if v == "" {
		return propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}), nil
	}
	var ps []propagation.TextMapPropagator
	for _, name := range strings.Split(v, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		if name == "none" {
			return propagation.NewCompositeTextMapPropagator(), nil
		}
		p, err := autoprop.TextMapPropagator(name)
		if err != nil {
			return nil, fmt.Errorf("OTEL_PROPAGATORS: %w", err)
		}
		ps = append(ps, p)
	}
	return propagation.NewCompositeTextMapPropagator(ps...), nil
}

// redisotelScope is the instrumentation scope of go-redis' OTel metrics.
const redisotelScope = "github.com/redis/go-redis/extra/redisotel"

// redisUnitViews drops go-redis' instruments measured in milliseconds
// (db.client.connections.create_time, use_time) and nanoseconds
// (waits_duration): Prometheus wants base units, promtool check metrics
// rejects them, and a view cannot rescale. The pool counts (usage,
// timeouts, hits, misses, idle and max connections) stay.
func redisUnitViews() []sdkmetric.Option {
	var vs []sdkmetric.View
	for _, unit := range []string{"ms", "ns", "us"} {
		vs = append(vs, sdkmetric.NewView(
			sdkmetric.Instrument{Name: "*", Unit: unit, Scope: instrumentation.Scope{Name: redisotelScope}},
			sdkmetric.Stream{Aggregation: sdkmetric.AggregationDrop{}}))
	}
	return []sdkmetric.Option{sdkmetric.WithView(vs...)}
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
	return otelhttp.NewHandler(h, name, otelhttp.WithTracerProvider(t.TracerProvider), otelhttp.WithPropagators(t.Propagator),
		otelhttp.WithMeterProvider(metricnoop.NewMeterProvider()), // our own HTTP metrics are cheaper
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return r.Method + " " + r.URL.Path }))
}

// LogHandler adds to every log record made with a request's context the
// attributes ctxAttrs find there (the request id) and, when the request's
// span is sampled, its trace_id and span_id.
func LogHandler(h slog.Handler, ctxAttrs ...func(context.Context) []slog.Attr) slog.Handler {
	return traceLog{h, ctxAttrs}
}

type traceLog struct {
	slog.Handler
	ctxAttrs []func(context.Context) []slog.Attr
}

func (l traceLog) Handle(ctx context.Context, r slog.Record) error {
	if ctx != nil {
		for _, f := range l.ctxAttrs {
			r.AddAttrs(f(ctx)...)
		}
		if sc := trace.SpanContextFromContext(ctx); sc.IsValid() && sc.IsSampled() {
			r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
		}
	}
	return l.Handler.Handle(ctx, r)
}

func (l traceLog) WithAttrs(as []slog.Attr) slog.Handler {
	return traceLog{l.Handler.WithAttrs(as), l.ctxAttrs}
}
func (l traceLog) WithGroup(g string) slog.Handler {
	return traceLog{l.Handler.WithGroup(g), l.ctxAttrs}
}

// Metrics records the request path's measurements. It implements
// pipeline.Metrics.
//
// Counters are atomic cells, one per attribute set, that the SDK reads at
// each collection through observable instruments: a hit costs a read-locked
// map lookup and an atomic add instead of the SDK's synchronous path (about
// 0.6 µs a call, measured with the hit-path CPU profile). Durations go to
// the SDK's histograms as usual.
type Metrics struct {
	lookups   *counter
	bypasses  *counter
	skipped   *counter
	upstream  *counter
	coalesced *counter
	dropped   *counter
	degraded  *counter
	shed      *counter
	judged    *counter // shadow judgements of semantic hits
	nearMiss  *counter // shadow judgements of near-misses
	shadow    *counter // what became of sampled hits
	inFlight  atomic.Int64
	g         *genai

	latency metric.Float64Histogram
	reqDur  metric.Float64Histogram
	ttft    metric.Float64Histogram

	mu   sync.RWMutex
	opts map[attrKey][]metric.RecordOption
}

type attrKey struct {
	kind, a, b, c, d, e string
	n                   int
}

// counter is a monotonic counter whose values live in atomic cells keyed
// by attribute set.
type counter struct {
	inst  metric.Int64ObservableCounter
	mu    sync.RWMutex
	cells map[attrKey]*cell
}

type cell struct {
	n   atomic.Int64
	set attribute.Set
}

// maxCells bounds the attribute sets per counter: their values come from
// configuration and fixed words, so this is a guard, not a limit in use.
const maxCells = 10000

// add adds 1 to the cell of k, creating it (attributes from mk) on first use.
func (c *counter) add(k attrKey, mk func() []attribute.KeyValue) {
	c.mu.RLock()
	x := c.cells[k]
	c.mu.RUnlock()
	if x == nil {
		c.mu.Lock()
		if x = c.cells[k]; x == nil {
			x = &cell{set: attribute.NewSet(mk()...)}
			if len(c.cells) < maxCells {
				c.cells[k] = x
			}
		}
		c.mu.Unlock()
	}
	x.n.Add(1)
}

// addN adds n to the cell of k (as add).
func (c *counter) addN(k attrKey, n int64, mk func() []attribute.KeyValue) {
	c.mu.RLock()
	x := c.cells[k]
	c.mu.RUnlock()
	if x == nil {
		c.mu.Lock()
		if x = c.cells[k]; x == nil {
			x = &cell{set: attribute.NewSet(mk()...)}
			if len(c.cells) < maxCells {
				c.cells[k] = x
			}
		}
		c.mu.Unlock()
	}
	x.n.Add(n)
}

func (c *counter) observe(o metric.Observer) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	for _, x := range c.cells {
		o.ObserveInt64(c.inst, x.n.Load(), metric.WithAttributeSet(x.set))
	}
}

// NewMetrics creates the instruments on mp's meter.
func NewMetrics(mp metric.MeterProvider) (*Metrics, error) {
	m := mp.Meter("github.com/edgecache/edgecache")
	mm := &Metrics{opts: map[attrKey][]metric.RecordOption{}}
	var errs []error
	newCounter := func(name, desc string) *counter {
		inst, err := m.Int64ObservableCounter(name, metric.WithDescription(desc))
		errs = append(errs, err)
		return &counter{inst: inst, cells: map[attrKey]*cell{}}
	}
	mm.lookups = newCounter("edgecache.cache.lookups", "Cache tiers consulted, by route, tier and result (hit or miss).")
	mm.bypasses = newCounter("edgecache.cache.bypasses", "Requests that skipped the cache, by route and reason.")
	mm.skipped = newCounter("edgecache.semantic.skipped", "Requests on semantic routes that were exact-only, by route and reason (coverage: the embedder does not represent the prompt).")
	mm.upstream = newCounter("edgecache.upstream.requests", "Calls to the upstream model, by route, status code and error type.")
	mm.coalesced = newCounter("edgecache.requests.coalesced", "Requests that joined an identical upstream call in progress.")
	mm.dropped = newCounter("edgecache.cache.store_dropped", "Answers not stored because the write queue was full.")
	mm.degraded = newCounter("edgecache.degrade.answers", "Degraded answers served, by route, rung and reason.")
	mm.shed = newCounter("edgecache.admission.shed", "Requests refused by admission, by lane and reason.")
	mm.judged = newCounter("edgecache.semantic.shadow.judgements", "Semantic hits asked upstream again in the background and judged, by route and verdict (agree, disagree, unsure).")
	mm.nearMiss = newCounter("edgecache.semantic.shadow.near_miss_judgements", "Near-misses (best candidate just under the threshold) judged against the request's own answer, by route and verdict.")
	mm.shadow = newCounter("edgecache.semantic.shadow.calls", "Sampled semantic hits by route and result: ok and failed shadow calls, skipped_budget, skipped_degraded, skipped_request, dropped.")
	inFlight, err := m.Int64ObservableUpDownCounter("edgecache.requests.in_flight", metric.WithDescription("Proxied requests being served."))
	errs = append(errs, err)
	var err1, err2, err3 error
	mm.latency, err1 = m.Float64Histogram("edgecache.upstream.duration", metric.WithUnit("s"),
		metric.WithDescription("Duration of upstream calls until the answer was complete."),
		metric.WithExplicitBucketBoundaries(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
	mm.reqDur, err2 = m.Float64Histogram("http.server.request.duration", metric.WithUnit("s"),
		metric.WithDescription("Duration of HTTP server requests (OpenTelemetry HTTP semantic conventions)."),
		metric.WithExplicitBucketBoundaries(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
	mm.ttft, err3 = m.Float64Histogram("gen_ai.server.time_to_first_token", metric.WithUnit("s"),
		metric.WithDescription("Time to the first token of upstream answers (OpenTelemetry GenAI semantic conventions)."),
		metric.WithExplicitBucketBoundaries(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
	errs = append(errs, err1, err2, err3)
	g, gInsts, err := newGenAI(m, newCounter)
	errs = append(errs, err)
	mm.g = g
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	counters := []*counter{mm.lookups, mm.bypasses, mm.skipped, mm.upstream, mm.coalesced, mm.dropped, mm.degraded, mm.shed,
		mm.judged, mm.nearMiss, mm.shadow, g.saved}
	insts := append([]metric.Observable{inFlight}, gInsts...)
	for _, c := range counters {
		insts = append(insts, c.inst)
	}
	if _, err := m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		for _, c := range counters {
			c.observe(o)
		}
		o.ObserveInt64(inFlight, mm.inFlight.Load())
		g.observe(o)
		return nil
	}, insts...); err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	return mm, nil
}

// opt returns the cached options of a histogram's recording with the
// attributes mk makes, so recording does not allocate: the attribute set
// is built once per key, and the options are a slice to pass on with
// "opts..." (a lone option would be boxed into a new variadic slice at
// each call of the instrument's Record). mk is called only on the key's
// first use; callers pass a closure literal, which then stays on the stack.
func (m *Metrics) opt(k attrKey, mk func() []attribute.KeyValue) []metric.RecordOption {
	m.mu.RLock()
	o, ok := m.opts[k]
	m.mu.RUnlock()
	if ok {
		return o
	}
	o = []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(mk()...))}
	m.mu.Lock()
	if len(m.opts) < maxCells { // bounded: attribute values come from config and fixed words
		m.opts[k] = o
	}
	m.mu.Unlock()
	return o
}

// CacheLookup implements pipeline.Metrics.
func (m *Metrics) CacheLookup(route, tier, result string) {
	m.lookups.add(attrKey{a: route, b: tier, c: result}, func() []attribute.KeyValue {
		return []attribute.KeyValue{attribute.String("route", route), attribute.String("tier", tier), attribute.String("result", result)}
	})
}

// Bypass implements pipeline.Metrics.
func (m *Metrics) Bypass(route, reason string) {
	m.bypasses.add(attrKey{a: route, b: reason}, func() []attribute.KeyValue {
		return []attribute.KeyValue{attribute.String("route", route), attribute.String("reason", reason)}
	})
}

// SemanticSkipped implements pipeline.Metrics.
func (m *Metrics) SemanticSkipped(route, reason string) {
	m.skipped.add(attrKey{a: route, b: reason}, func() []attribute.KeyValue {
		return []attribute.KeyValue{attribute.String("route", route), attribute.String("reason", reason)}
	})
}

// UpstreamCall implements pipeline.Metrics.
func (m *Metrics) UpstreamCall(route string, status int, errKind string, d time.Duration) {
	mk := func() []attribute.KeyValue {
		kv := []attribute.KeyValue{attribute.String("route", route), attribute.Int("http.response.status_code", status)}
		if errKind != "" {
			kv = append(kv, attribute.String("error.type", errKind))
		}
		return kv
	}
	k := attrKey{kind: "u", a: route, c: errKind, n: status}
	m.upstream.add(k, mk)
	m.latency.Record(context.Background(), d.Seconds(), m.opt(k, mk)...)
}

// Coalesced implements pipeline.Metrics.
func (m *Metrics) Coalesced(route string) {
	m.coalesced.add(attrKey{a: route}, func() []attribute.KeyValue {
		return []attribute.KeyValue{attribute.String("route", route)}
	})
}

// StoreDropped implements pipeline.Metrics.
func (m *Metrics) StoreDropped(route string) {
	m.dropped.add(attrKey{a: route}, func() []attribute.KeyValue {
		return []attribute.KeyValue{attribute.String("route", route)}
	})
}

// Degraded implements pipeline.Metrics.
func (m *Metrics) Degraded(route, rung, reason string) {
	m.degraded.add(attrKey{a: route, b: rung, c: reason}, func() []attribute.KeyValue {
		return []attribute.KeyValue{attribute.String("route", route), attribute.String("rung", rung), attribute.String("reason", reason)}
	})
}

// Begin counts a request in flight; End records it.
func (m *Metrics) Begin() { m.inFlight.Add(1) }

// End implements server.Observer: the request's duration by route, method
// and status.
func (m *Metrics) End(route, method string, status int, d time.Duration) {
	m.inFlight.Add(-1)
	o := m.opt(attrKey{kind: "h", a: route, b: method, n: status}, func() []attribute.KeyValue {
		return []attribute.KeyValue{attribute.String("http.route", route), attribute.String("http.request.method", method),
			attribute.Int("http.response.status_code", status)}
	})
	m.reqDur.Record(context.Background(), d.Seconds(), o...)
}

// TTFT implements pipeline.Metrics: an upstream answer's first token.
func (m *Metrics) TTFT(route, target string, d time.Duration) {
	m.ttft.Record(context.Background(), d.Seconds(), m.opt(attrKey{kind: "t", a: route, b: target, c: ""}, func() []attribute.KeyValue {
		return []attribute.KeyValue{attribute.String("route", route), attribute.String("target", target)}
	})...)
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
	m.shed.add(attrKey{a: lane, b: reason}, func() []attribute.KeyValue {
		return []attribute.KeyValue{attribute.String("lane", lane), attribute.String("reason", reason)}
	})
}

// ShadowJudgement implements pipeline.ShadowMetrics.
func (m *Metrics) ShadowJudgement(route, verdict string, nearMiss bool) {
	c := m.judged
	if nearMiss {
		c = m.nearMiss
	}
	c.add(attrKey{a: route, b: verdict}, func() []attribute.KeyValue {
		return []attribute.KeyValue{attribute.String("route", route), attribute.String("verdict", verdict)}
	})
}

// ShadowCall implements pipeline.ShadowMetrics.
func (m *Metrics) ShadowCall(route, result string) {
	m.shadow.add(attrKey{a: route, b: result}, func() []attribute.KeyValue {
		return []attribute.KeyValue{attribute.String("route", route), attribute.String("result", result)}
	})
}

// FalseHitRate is a route's estimated false-hit rate of semantic hits and
// its 95 % interval, from shadow verification.
type FalseHitRate struct {
	Route                  string
	Estimate, Lower, Upper float64
}

// FalseHitRates registers the gauge edgecache.semantic.false_hit_rate
// (edgecache_semantic_false_hit_rate{route, bound="estimate|lower|upper"}
// on /metrics), read from rates at each collection. A route appears once
// something has been judged: before that its interval is [0, 1], which an
// alert on the upper bound would take for a route over budget.
func FalseHitRates(mp metric.MeterProvider, rates func() []FalseHitRate) error {
	m := mp.Meter("github.com/edgecache/edgecache")
	g, err := m.Float64ObservableGauge("edgecache.semantic.false_hit_rate",
		metric.WithDescription("Estimated share of semantic hits that served a wrong answer, from shadow verification: the estimate and its 95 % Wilson interval (bound lower, upper)."))
	if err != nil {
		return err
	}
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		for _, r := range rates() {
			for _, b := range [...]struct {
				bound string
				v     float64
			}{{"estimate", r.Estimate}, {"lower", r.Lower}, {"upper", r.Upper}} {
				o.ObserveFloat64(g, b.v, metric.WithAttributes(attribute.String("route", r.Route), attribute.String("bound", b.bound)))
			}
		}
		return nil
	}, g)
	return err
}

// EmbedTexts registers the counter edgecache.embed.texts
// (edgecache_embed_texts_total{result="computed|memo"} on /metrics): texts
// the embedder computed and texts the embedding memo answered, read from
// counts at each collection. It exists so that what semantic lookups cost
// can be seen per request (a fresh wording pays one embedding, a repeated
// one none); the counts are the memo's own atomic counters, so the request
// path pays nothing more for them.
func EmbedTexts(mp metric.MeterProvider, counts func() (computed, memo int64)) error {
	m := mp.Meter("github.com/edgecache/edgecache")
	c, err := m.Int64ObservableCounter("edgecache.embed.texts",
		metric.WithDescription("Texts the semantic tier embedded, by result: computed by the embedder, or answered from the memo of recent texts."))
	if err != nil {
		return err
	}
	computedAttr := metric.WithAttributeSet(attribute.NewSet(attribute.String("result", "computed")))
	memoAttr := metric.WithAttributeSet(attribute.NewSet(attribute.String("result", "memo")))
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		computed, memo := counts()
		o.ObserveInt64(c, computed, computedAttr)
		o.ObserveInt64(c, memo, memoAttr)
		return nil
	}, c)
	return err
}
