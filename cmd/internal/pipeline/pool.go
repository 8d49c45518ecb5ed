package pipeline

import (
	"cmp"
	"context"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"path"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Balance policies of a Pool.
const (
	// BalanceFailover tries the targets in their order: the legacy
	// upstream + backups.
	BalanceFailover = "failover"
	// BalanceRoundRobin spreads requests by weight (smooth weighted round
	// robin).
	BalanceRoundRobin = "round_robin"
	// BalanceLeastRequests prefers the fewest requests in flight per unit
	// of weight.
	BalanceLeastRequests = "least_requests"
	// BalanceLeastLatency prefers the lowest peak-EWMA of time to first
	// token times requests in flight, per unit of weight.
	BalanceLeastLatency = "least_latency"
)

// Pool is a named group of targets serving the same models, balanced by
// one policy.
type Pool struct {
	Name    string
	Balance string
	Targets []*Target
	// Health, when its Interval is set, checks every target actively.
	Health HealthCheck

	mu      sync.Mutex
	current map[*Target]float64 // smooth weighted round robin state
}

// HealthCheck configures a pool's active health checks.
type HealthCheck struct {
	Path      string        // GET on every target; "" → /v1/models
	Interval  time.Duration // zero → no active checks
	Timeout   time.Duration // zero → Interval/2
	Unhealthy int           // failed checks in a row that take a target out; zero → 2
	Healthy   int           // passed checks in a row that bring it back; zero → 2
	// Jitter spreads each wait by up to this share of Interval; zero → 0.1.
	Jitter float64
}

// ModelRoute sends requests for models matching Match (exact, or a glob
// such as "deepseek-*") to Pool, then to the Fallback pools in order.
type ModelRoute struct {
	Match    string
	Pool     *Pool
	Fallback []*Pool
}

// ewmaDecay is the peak-EWMA's time constant: an estimate older than that
// has mostly faded toward newer samples (or toward zero when idle, so
// that a slow target is tried again after a while).
const ewmaDecay = 10 * time.Second

// targetState is a target's load, latency estimate and health.
type targetState struct {
	inflight atomic.Int64
	down     atomic.Bool  // the active health check took it out
	upSince  atomic.Int64 // unix nanos it came back (slow start), 0 → never down
	checksOK atomic.Int64 // health checks in a row (positive: passed, negative: failed)
	// Run-time changes by an operator (SetOverride), shared across the
	// region's replicas: a drained target gets no new requests; a weight
	// above zero replaces the configured one.
	drained  atomic.Bool
	weightRT atomic.Int64
	ewmaMu   sync.Mutex
	ewma     float64 // nanoseconds
	ewmaAt   time.Time
}

func (s *targetState) observe(now time.Time, d time.Duration) {
	s.ewmaMu.Lock()
	defer s.ewmaMu.Unlock()
	v := float64(d)
	if v > s.ewma || s.ewmaAt.IsZero() {
		s.ewma = v // peak: a slow answer counts at once
	} else {
		w := math.Exp(-float64(now.Sub(s.ewmaAt)) / float64(ewmaDecay))
		s.ewma = s.ewma*w + v*(1-w)
	}
	s.ewmaAt = now
}

// latency is the estimate at now: the EWMA decayed by the time since its
// last sample.
func (s *targetState) latency(now time.Time) time.Duration {
	s.ewmaMu.Lock()
	defer s.ewmaMu.Unlock()
	if s.ewmaAt.IsZero() {
		return 0
	}
	w := math.Exp(-float64(now.Sub(s.ewmaAt)) / float64(ewmaDecay))
	return time.Duration(s.ewma * w)
}

// weight is t's weight at now (an operator's run-time weight, else the
// configured one), reduced while it ramps up after recovering.
func (t *Target) weight(now time.Time) float64 {
	w := float64(max(t.Weight, 1))
	if rt := t.st.weightRT.Load(); rt > 0 {
		w = float64(rt)
	}
	if up := t.st.upSince.Load(); up != 0 && t.SlowStart > 0 {
		if since := now.Sub(time.Unix(0, up)); since < t.SlowStart {
			w *= max(0.05, float64(since)/float64(t.SlowStart))
		}
	}
	return w
}

// Healthy reports whether the active health check lets traffic reach t.
func (t *Target) Healthy() bool { return !t.st.down.Load() }

// Drained reports whether an operator drained t: it gets no new requests;
// those in flight finish.
func (t *Target) Drained() bool { return t.st.drained.Load() }

// full reports whether t has as many requests in flight as its
// MaxConcurrency allows.
func (t *Target) full() bool {
	return t.MaxConcurrency > 0 && t.st.inflight.Load() >= int64(t.MaxConcurrency)
}

// Override is an operator's run-time change to a target: Weight (zero →
// the configured one) and Drain.
type Override struct {
	Weight int  `json:"weight,omitempty"`
	Drain  bool `json:"drain,omitempty"`
}

// SetOverride puts o in force on t (the zero Override restores the
// configuration).
func (t *Target) SetOverride(o Override) {
	t.st.weightRT.Store(int64(max(o.Weight, 0)))
	t.st.drained.Store(o.Drain)
}

// TargetStatus is a target's state for /admin/upstreams.
type TargetStatus struct {
	Name string `json:"name"`
	// Weight is the configured weight; RuntimeWeight an operator's, in
	// force instead (0 → none); Effective the one balancing uses now
	// (lower during slow start).
	Weight         int     `json:"weight"`
	RuntimeWeight  int     `json:"runtime_weight,omitempty"`
	Effective      float64 `json:"effective_weight"`
	Drained        bool    `json:"drained"`
	Healthy        bool    `json:"healthy"`
	InFlight       int64   `json:"in_flight"`
	MaxConcurrency int     `json:"max_concurrency,omitempty"`
	LatencyMS      float64 `json:"latency_ewma_ms"`
	Breaker        string  `json:"breaker"`
}

// PoolStatus is a pool's state in /admin/upstreams: the admin API writes
// it, the CLI and the review page read it.
type PoolStatus struct {
	Name        string             `json:"name"`
	Balance     string             `json:"balance"`
	HealthCheck *HealthCheckStatus `json:"health_check,omitempty"`
	Targets     []PoolTargetStatus `json:"targets"`
}

// PoolTargetStatus is a pool target's state with who last changed it at
// run time (the audit trail has every change).
type PoolTargetStatus struct {
	TargetStatus
	UpdatedAt time.Time `json:"updated_at,omitzero"`
	UpdatedBy string    `json:"updated_by,omitempty"`
}

// HealthCheckStatus is a pool's active health check (nil: none).
type HealthCheckStatus struct {
	Path      string  `json:"path"`
	Interval  float64 `json:"interval_s"`
	Unhealthy int     `json:"unhealthy"`
	Healthy   int     `json:"healthy"`
}

// Status is t's state at now.
func (t *Target) Status(now time.Time) TargetStatus {
	return TargetStatus{Name: t.Name, Weight: max(t.Weight, 1), RuntimeWeight: int(t.st.weightRT.Load()), Effective: t.weight(now),
		Drained: t.Drained(), Healthy: t.Healthy(), InFlight: t.st.inflight.Load(), MaxConcurrency: t.MaxConcurrency,
		LatencyMS: float64(t.st.latency(now)) / 1e6, Breaker: t.Breaker.Status().State}
}

// order returns the candidates of pool in the order the policy prefers.
func (pl *Pool) order(cands []*Target, now time.Time) []*Target {
	if len(cands) < 2 {
		return cands
	}
	switch pl.Balance {
	case BalanceRoundRobin:
		pl.mu.Lock()
		if pl.current == nil {
			pl.current = map[*Target]float64{}
		}
		var total float64
		best := -1
		for i, t := range cands {
			w := t.weight(now)
			total += w
			pl.current[t] += w
			if best < 0 || pl.current[t] > pl.current[cands[best]] {
				best = i
			}
		}
		pl.current[cands[best]] -= total
		pl.mu.Unlock()
		cands[0], cands[best] = cands[best], cands[0]
		return cands
	case BalanceLeastRequests, BalanceLeastLatency:
		score := make(map[*Target]float64, len(cands))
		lat := map[*Target]time.Duration{}
		if pl.Balance == BalanceLeastLatency {
			// A target not measured yet is assumed as fast as the pool's
			// average, not free: it would draw every request until its
			// first answer.
			var sum time.Duration
			n := 0
			for _, t := range cands {
				if l := t.st.latency(now); l > 0 {
					lat[t], sum, n = l, sum+l, n+1
				}
			}
			prior := time.Millisecond
			if n > 0 {
				prior = max(sum/time.Duration(n), prior)
			}
			for _, t := range cands {
				if lat[t] == 0 {
					lat[t] = prior
				}
			}
		}
		for _, t := range cands {
			s := float64(t.st.inflight.Load()+1) / t.weight(now)
			if pl.Balance == BalanceLeastLatency {
				s *= float64(max(lat[t], time.Millisecond))
			}
			score[t] = s
		}
		rand.Shuffle(len(cands), func(i, j int) { cands[i], cands[j] = cands[j], cands[i] }) // ties
		slices.SortStableFunc(cands, func(a, b *Target) int { return cmp.Compare(score[a], score[b]) })
		return cands
	}
	return cands
}

// defaultChain is the pools a request of rt without a model route uses:
// the pool rt names, else the first.
func (p *Pipeline) defaultChain(rt *Route) []*Pool {
	if len(p.cfg.Pools) == 0 {
		return p.legacyChain
	}
	if rt != nil && rt.Pool != "" {
		for i, pl := range p.cfg.Pools {
			if pl.Name == rt.Pool {
				return p.cfg.Pools[i : i+1]
			}
		}
	}
	return p.cfg.Pools[:1]
}

// chain is the pools that may serve ur, in order; nil when models are
// routed and none matches ur's model.
func (p *Pipeline) chain(ur *upstreamRequest) []*Pool {
	if ur.pools != nil {
		return ur.pools
	}
	ur.pools = p.defaultChain(ur.rt)
	if ur.req != nil && ur.req.Model != "" {
		if m := p.modelRoute(ur.req.Model); m != nil {
			ur.pools = append([]*Pool{m.Pool}, m.Fallback...)
		}
	}
	return ur.pools
}

// modelRoute is the first route matching model, or nil.
func (p *Pipeline) modelRoute(model string) *ModelRoute {
	for i := range p.cfg.Models {
		m := &p.cfg.Models[i]
		if m.Match == model {
			return m
		}
		if ok, _ := path.Match(m.Match, model); ok {
			return m
		}
	}
	return nil
}

// unknownModel reports whether models are routed and none serves model.
func (p *Pipeline) unknownModel(model string) bool {
	return len(p.cfg.Models) > 0 && model != "" && p.modelRoute(model) == nil
}

// Pools returns the pools, the legacy one when none is configured.
func (p *Pipeline) Pools() []*Pool {
	if len(p.cfg.Pools) == 0 {
		return p.legacyChain
	}
	return p.cfg.Pools
}

// StartHealthChecks runs the pools' active health checks until ctx ends
// (Close does not wait for them).
func (p *Pipeline) StartHealthChecks(ctx context.Context) {
	seen := map[*Target]bool{}
	for _, pl := range p.Pools() {
		if pl.Health.Interval <= 0 {
			continue
		}
		for _, t := range pl.Targets {
			if seen[t] {
				continue
			}
			seen[t] = true
			go p.healthLoop(ctx, t, pl.Health)
		}
	}
}

func (p *Pipeline) healthLoop(ctx context.Context, t *Target, hc HealthCheck) {
	if hc.Path == "" {
		hc.Path = "/v1/models"
	}
	if hc.Timeout <= 0 {
		hc.Timeout = hc.Interval / 2
	}
	if hc.Unhealthy <= 0 {
		hc.Unhealthy = 2
	}
	if hc.Healthy <= 0 {
		hc.Healthy = 2
	}
	if hc.Jitter <= 0 {
		hc.Jitter = 0.1
	}
	for {
		wait := hc.Interval + time.Duration((rand.Float64()*2-1)*hc.Jitter*float64(hc.Interval))
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		ok := p.probe(ctx, t, hc)
		n := t.st.checksOK.Load()
		if ok {
			n = max(n, 0) + 1
		} else {
			n = min(n, 0) - 1
		}
		t.st.checksOK.Store(n)
		switch {
		case !ok && -n >= int64(hc.Unhealthy) && !t.st.down.Load():
			t.st.down.Store(true)
			p.log.Warn("upstream target unhealthy", "target", t.Name, "checks_failed", -n)
		case ok && n >= int64(hc.Healthy) && t.st.down.Load():
			t.st.upSince.Store(p.cfg.Now().UnixNano())
			t.st.down.Store(false)
			p.log.Info("upstream target healthy again", "target", t.Name)
		}
	}
}

// probe makes one health check: a GET answered 2xx in time.
func (p *Pipeline) probe(ctx context.Context, t *Target, hc HealthCheck) bool {
	ctx, cancel := context.WithTimeout(ctx, hc.Timeout)
	defer cancel()
	in := &http.Request{Method: http.MethodGet, URL: &url.URL{}, Header: http.Header{}}
	resp, err := t.Client.Do(ctx, in, hc.Path, nil)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // keeps the connection
	return resp.StatusCode >= 200 && resp.StatusCode < 300
}
