package telemetry

import (
	"context"
	"math"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Price is what a model's tokens cost, per million, in Currency (empty →
// USD).
type Price struct {
	InputPerMillion  float64
	OutputPerMillion float64
	Currency         string
}

// MaxTenants bounds the tenant label of the tokens- and cost-saved
// counters: the first MaxTenants tenant namespaces seen by a process get
// their own series, later ones are counted under tenant="other". With R
// routes, 2 token types and one currency, the counters hold at most
// R × (MaxTenants+1) × 3 series per replica.
const MaxTenants = 100

// genai holds the GenAI semantic-convention histograms and the saved
// counters.
type genai struct {
	usage    metric.Int64Histogram   // gen_ai.client.token.usage
	duration metric.Float64Histogram // gen_ai.client.operation.duration
	saved    *counter                // edgecache.tokens_saved
	cost     metric.Float64ObservableCounter

	mu      sync.RWMutex
	tenants map[string]bool
	prices  map[string]Price
	costs   map[attrKey]*costCell
	savedBy map[savedKey]*savedTotals // for the review page
}

type costCell struct {
	nano atomic.Int64 // billionths of the currency unit
	set  attribute.Set
}

type savedKey struct{ route, tenant string }

type savedTotals struct {
	hits, input, output atomic.Int64
	nanoCost            atomic.Int64
	currency            string
}

func newGenAI(m metric.Meter, newCounter func(name, desc string) *counter) (*genai, []metric.Observable, error) {
	g := &genai{tenants: map[string]bool{}, costs: map[attrKey]*costCell{}, savedBy: map[savedKey]*savedTotals{}}
	var err1, err2, err3 error
	g.usage, err1 = m.Int64Histogram("gen_ai.client.token.usage", metric.WithUnit("{token}"),
		metric.WithDescription("Tokens used by upstream answers, by gen_ai.token.type (input, output), model and operation (OpenTelemetry GenAI semantic conventions)."),
		metric.WithExplicitBucketBoundaries(1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864))
	g.duration, err2 = m.Float64Histogram("gen_ai.client.operation.duration", metric.WithUnit("s"),
		metric.WithDescription("Duration of upstream model calls, by model and operation, with error.type when the call failed (OpenTelemetry GenAI semantic conventions)."),
		metric.WithExplicitBucketBoundaries(0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92))
	g.saved = newCounter("edgecache.tokens_saved", "Tokens the model did not have to process because the answer came from the cache (the usage stored with it), by route, tenant (namespace hash; at most 100 per replica, then other) and type (input, output).")
	g.cost, err3 = m.Float64ObservableCounter("edgecache.cost_saved",
		metric.WithDescription("Estimated cost of the tokens saved by cache hits, at the configured per-model prices, by route, tenant and currency."))
	if err := joinErrs(err1, err2, err3); err != nil {
		return nil, nil, err
	}
	return g, []metric.Observable{g.cost}, nil
}

func joinErrs(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

func (g *genai) observe(o metric.Observer) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	for _, c := range g.costs {
		o.ObserveFloat64(g.cost, float64(c.nano.Load())/1e9, metric.WithAttributeSet(c.set))
	}
}

// SetPricing sets the per-model prices for the cost-saved figures. A model
// is priced by its exact name, else by the longest configured name it
// starts with ("gpt-4o" prices "gpt-4o-2024-08-06"); unpriced models save
// tokens but no cost.
func (m *Metrics) SetPricing(p map[string]Price) {
	c := make(map[string]Price, len(p))
	for k, v := range p {
		if v.Currency == "" {
			v.Currency = "USD"
		}
		c[k] = v
	}
	m.g.mu.Lock()
	m.g.prices = c
	m.g.mu.Unlock()
}

func (g *genai) price(model string) (Price, bool) {
	if p, ok := g.prices[model]; ok {
		return p, true
	}
	best, found := "", false
	for k := range g.prices {
		if strings.HasPrefix(model, k) && len(k) > len(best) {
			best, found = k, true
		}
	}
	return g.prices[best], found
}

// tenant bounds the tenant label (MaxTenants).
func (g *genai) tenant(t string) string {
	if t == "" {
		return "anonymous"
	}
	g.mu.RLock()
	ok := g.tenants[t]
	n := len(g.tenants)
	g.mu.RUnlock()
	if ok {
		return t
	}
	if n >= MaxTenants {
		return "other"
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.tenants) >= MaxTenants && !g.tenants[t] {
		return "other"
	}
	g.tenants[t] = true
	return t
}

// TokenUsage implements pipeline.Metrics: an upstream answer's reported
// usage (input or output -1: not reported) and the call's duration; a
// failed call (errType set) has a duration only, with error.type.
func (m *Metrics) TokenUsage(route, operation, requestModel, responseModel string, input, output int64, d time.Duration, errType string) {
	ctx := context.Background()
	k := attrKey{a: route, b: requestModel, c: responseModel, d: operation, e: errType}
	if input >= 0 {
		k.kind = "gi"
		m.g.usage.Record(ctx, input, m.opt(k, func() []attribute.KeyValue {
			return genaiAttrs(route, operation, requestModel, responseModel, "input", errType)
		})...)
	}
	if output >= 0 {
		k.kind = "go"
		m.g.usage.Record(ctx, output, m.opt(k, func() []attribute.KeyValue {
			return genaiAttrs(route, operation, requestModel, responseModel, "output", errType)
		})...)
	}
	k.kind = "gd"
	m.g.duration.Record(ctx, d.Seconds(), m.opt(k, func() []attribute.KeyValue {
		return genaiAttrs(route, operation, requestModel, responseModel, "", errType)
	})...)
}

// genaiAttrs are the attributes of the gen_ai client metrics (typ and the
// optional ones left out when "").
func genaiAttrs(route, operation, requestModel, responseModel, typ, errType string) []attribute.KeyValue {
	kv := []attribute.KeyValue{attribute.String("route", route), attribute.String("gen_ai.operation.name", operation),
		attribute.String("gen_ai.request.model", requestModel)}
	if responseModel != "" {
		kv = append(kv, attribute.String("gen_ai.response.model", responseModel))
	}
	if typ != "" {
		kv = append(kv, attribute.String("gen_ai.token.type", typ))
	}
	if errType != "" {
		kv = append(kv, attribute.String("error.type", errType))
	}
	return kv
}

// CacheSaved implements pipeline.Metrics: a cache hit on route for tenant
// (its namespace hash; "" anonymous) whose stored answer reported input and
// output tokens (-1 unknown) for model.
func (m *Metrics) CacheSaved(route, tenant, model string, input, output int64) {
	g := m.g
	t := g.tenant(tenant)
	for _, x := range [...]struct {
		typ string
		n   int64
	}{{"input", input}, {"output", output}} {
		if x.n <= 0 {
			continue
		}
		g.saved.addN(attrKey{kind: "s", a: route, b: t, c: x.typ}, x.n, func() []attribute.KeyValue {
			return []attribute.KeyValue{attribute.String("route", route), attribute.String("tenant", t), attribute.String("type", x.typ)}
		})
	}
	g.mu.RLock()
	p, priced := g.price(model)
	tot := g.savedBy[savedKey{route, t}]
	g.mu.RUnlock()
	if tot == nil {
		g.mu.Lock()
		if tot = g.savedBy[savedKey{route, t}]; tot == nil {
			tot = &savedTotals{}
			g.savedBy[savedKey{route, t}] = tot
		}
		g.mu.Unlock()
	}
	tot.hits.Add(1)
	tot.input.Add(max(input, 0))
	tot.output.Add(max(output, 0))
	if !priced {
		return
	}
	nano := int64(math.Round((float64(max(input, 0))*p.InputPerMillion + float64(max(output, 0))*p.OutputPerMillion) * 1e3)) // per million → billionths
	if nano <= 0 {
		return
	}
	tot.nanoCost.Add(nano)
	k := attrKey{kind: "c", a: route, b: t, c: p.Currency}
	g.mu.RLock()
	c := g.costs[k]
	g.mu.RUnlock()
	if c == nil {
		g.mu.Lock()
		if c = g.costs[k]; c == nil {
			c = &costCell{set: attribute.NewSet(attribute.String("route", route), attribute.String("tenant", t), attribute.String("currency", p.Currency))}
			g.costs[k] = c
		}
		if tot.currency == "" {
			tot.currency = p.Currency
		}
		g.mu.Unlock()
	}
	c.nano.Add(nano)
}

// Saved is what cache hits saved on a route for a tenant, since start.
type Saved struct {
	Route, Tenant string
	Hits          int64
	InputTokens   int64
	OutputTokens  int64
	Cost          float64
	Currency      string
}

// Saved returns the tokens and cost saved per route and tenant, most
// tokens first.
func (m *Metrics) Saved() []Saved {
	g := m.g
	g.mu.RLock()
	out := make([]Saved, 0, len(g.savedBy))
	for k, t := range g.savedBy {
		out = append(out, Saved{Route: k.route, Tenant: k.tenant, Hits: t.hits.Load(), InputTokens: t.input.Load(),
			OutputTokens: t.output.Load(), Cost: float64(t.nanoCost.Load()) / 1e9, Currency: t.currency})
	}
	g.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].InputTokens+out[i].OutputTokens, out[j].InputTokens+out[j].OutputTokens
		if a != b {
			return a > b
		}
		return out[i].Route+out[i].Tenant < out[j].Route+out[j].Tenant
	})
	return out
}
