package pipeline

// Shadow verification: measured live precision of the semantic tier.
//
// Held-out files say how the verifier does on Quora questions; they say
// nothing about an operator's own traffic. So on routes that enable it a
// share of semantic hits is also asked upstream, in the background, after
// the client got the cached answer, and the judge (judge.go) compares the
// fresh answer with the one served. A share of near-misses (the best
// candidate scored just under the threshold) is judged too, at no upstream
// cost: the request went upstream anyway, so its own answer is compared
// with the candidate's. The judgements make a per-route estimate of the
// false-hit rate with an interval, and steer the threshold against the
// route's error budget (shadow_estimate.go).
//
// Shadow traffic must never hurt the traffic it measures:
//   - the client's answer is written before a hit is sampled, and sampling
//     costs a random draw and, when sampled, a header copy and a
//     non-blocking send into a bounded queue (a full queue drops the
//     sample and counts it);
//   - a route's shadow calls stay within max_share of all its upstream
//     calls (shadowBudget);
//   - no shadow call goes out while any upstream breaker is not closed, or
//     within ShadowConfig.Quiet of a degraded or shed answer or of a
//     failed shadow call; a shadow call's outcome never feeds a breaker or
//     the retry budget (it takes a concurrency slot at the lowest lane,
//     only when one is free at once);
//   - requests with Cache-Control: no-store and requests that ask for
//     variety (temperature above 0, n > 1) are not sampled unless the
//     route says so: their fresh answer would differ by design;
//   - a shadow call sends what the route's own upstream call would: on a
//     shared route the forwarded headers only, the canonical body, the
//     edge's own upstream key.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgecache/edgecache/cache"
	"github.com/edgecache/edgecache/cmd/internal/openai"
	"github.com/edgecache/edgecache/degrade/admission"
)

// ShadowConfig turns on shadow verification for routes whose policy
// samples (Route.Shadow).
type ShadowConfig struct {
	// Judge compares answers. Nil → a judge on the semantic tier's embedder.
	Judge *Judge
	// Route returns the policy in force, so that steering starts from the
	// threshold an operator or another replica set since a sampled request
	// began. Nil → the request's own snapshot.
	Route func(name string) *Route
	// Steer moves a route's threshold from → to as an audited policy
	// change (policy.Store.Steer), refusing with ErrThresholdMoved when
	// the threshold in force is no longer from. Nil → estimates only.
	Steer func(ctx context.Context, route string, from, to float32, reason string) error
	// Journal receives the disagreements of served hits. Nil → none.
	Journal ShadowJournal
	// Queue bounds the samples waiting for a worker. Zero → 256.
	Queue int
	// Workers make shadow calls and judge, each one at a time. Zero → 2.
	Workers int
	// Timeout bounds one shadow call and its judgement. Zero → 60s.
	Timeout time.Duration
	// Quiet keeps shadow calls off after a degraded or shed answer on any
	// route and after a failed shadow call. Zero → 30s.
	Quiet time.Duration
	// Metrics receives counts; nil → none.
	Metrics ShadowMetrics
	// Rand draws samples in [0, 1); nil → math/rand/v2. Tests seed it.
	Rand func() float64
}

// ErrThresholdMoved is ShadowConfig.Steer's refusal when the threshold in
// force is no longer the one the evidence was measured at: an operator,
// another worker or another replica moved it meanwhile. Steering then
// waits for the next judgements.
var ErrThresholdMoved = errors.New("the threshold changed since it was measured")

// ShadowJournal receives one record per served semantic hit the judge
// found wrong. It must not block.
type ShadowJournal interface {
	Disagreement(d *Disagreement)
}

// Disagreement is a served semantic hit that the judge found wrong.
type Disagreement struct {
	Time      time.Time
	RequestID string
	Route     string
	Tenant    string // the namespace: an HMAC of the client's key
	Model     string
	// CacheKey is the served entry's exact key, which is also its semantic
	// point's key: what a purge of disagreements deletes from the index.
	CacheKey    string
	QueryHash   string  // questionHash of the client's question
	MatchedHash string  // questionHash of the stored question answered
	Similarity  float32 // the questions' embedding cosine
	Score       float32 // the verifier's score of the match
	Threshold   float32 // the threshold the request was held to
	Judgement   Judgement
	// The texts, only where the route stores them (ShadowPolicy.StoreText).
	Query, Matched, CachedAnswer, FreshAnswer string
}

// ShadowMetrics receives shadow verification's counts. Attribute values
// are route names and fixed words.
type ShadowMetrics interface {
	// ShadowJudgement counts a judged hit, or a judged near-miss.
	ShadowJudgement(route, verdict string, nearMiss bool)
	// ShadowCall counts what became of a sampled hit: ok, failed,
	// skipped_budget, skipped_degraded, skipped_request or dropped.
	ShadowCall(route, result string)
}

// shadower runs shadow verification for a Pipeline.
type shadower struct {
	p      *Pipeline
	cfg    ShadowConfig
	jobs   chan *shadowJob
	routes sync.Map // route name → *shadowRoute
	// quietUntil (unix ns) holds shadow calls off (ShadowConfig.Quiet).
	quietUntil atomic.Int64
	pending    atomic.Int64 // jobs queued or being processed
	randMu     sync.Mutex
	ctx        context.Context // canceled by close
	cancel     context.CancelFunc
	wg         sync.WaitGroup
}

// shadowJob is one sampled hit or near-miss.
type shadowJob struct {
	rt   *Route
	near bool // a near-miss: fresh is the client's own answer
	// The request to ask again (hits).
	in   *http.Request
	body []byte
	req  *openai.Request
	// The answers: cached is the body served (hits; a near-miss reads its
	// candidate's entry by key), fresh the client's answer (near-misses).
	cached, fresh []byte
	key           string
	cand          semanticCandidate
	query, ns     string
	requestID     string
	at            time.Time
}

func newShadower(p *Pipeline, cfg ShadowConfig) *shadower {
	if cfg.Queue == 0 {
		cfg.Queue = 256
	}
	if cfg.Workers == 0 {
		cfg.Workers = 2
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 60 * time.Second
	}
	if cfg.Quiet == 0 {
		cfg.Quiet = 30 * time.Second
	}
	if cfg.Judge == nil {
		cfg.Judge = newJudge(p.sem.cfg.Embedder)
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Float64
	}
	s := &shadower{p: p, cfg: cfg, jobs: make(chan *shadowJob, cfg.Queue)}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	for range cfg.Workers {
		s.wg.Add(1)
		go s.work()
	}
	return s
}

// close stops the workers: queued samples are dropped, the calls in
// flight canceled.
func (s *shadower) close() {
	s.cancel()
	s.wg.Wait()
}

func (s *shadower) draw() float64 {
	s.randMu.Lock()
	defer s.randMu.Unlock()
	return s.cfg.Rand()
}

func (s *shadower) route(name string) *shadowRoute {
	if r, ok := s.routes.Load(name); ok {
		return r.(*shadowRoute)
	}
	r, _ := s.routes.LoadOrStore(name, new(shadowRoute))
	return r.(*shadowRoute)
}

// current is the policy in force for rt's route.
func (s *shadower) current(rt *Route) *Route {
	if s.cfg.Route != nil {
		if cur := s.cfg.Route(rt.Name); cur != nil {
			return cur
		}
	}
	return rt
}

func (s *shadower) count(route, result string) {
	if s.cfg.Metrics != nil {
		s.cfg.Metrics.ShadowCall(route, result)
	}
}

// quiet holds shadow calls off for ShadowConfig.Quiet from now.
func (s *shadower) quiet() {
	s.quietUntil.Store(s.p.cfg.Now().Add(s.cfg.Quiet).UnixNano())
}

// calm reports whether a shadow call may go out now: no breaker other than
// closed, nothing degraded or failed lately.
func (s *shadower) calm() bool {
	if s.p.cfg.Now().UnixNano() < s.quietUntil.Load() {
		return false
	}
	for _, t := range s.p.cfg.Targets {
		if t.Breaker.Status().State != "closed" {
			return false
		}
	}
	return true
}

// asksVariety reports whether a request asks for answers that differ from
// one call to the next.
func asksVariety(req *openai.Request) bool {
	return req == nil || (req.Temperature != nil && *req.Temperature > 0) || req.N > 1
}

// shadowHit samples a semantic hit just served to the client (hit is what
// was served) for a shadow call. It never blocks.
func (p *Pipeline) shadowHit(r *http.Request, pd *pending, body []byte, hit semanticHit) {
	s := p.shadow
	if s == nil || pd.rt.Shadow.Sample <= 0 || s.draw() >= pd.rt.Shadow.Sample {
		return
	}
	rt := pd.rt
	switch {
	case hasDirective(r.Header, "no-store") || (!rt.Shadow.Nondeterministic && asksVariety(pd.req)):
		s.count(rt.Name, "skipped_request")
		return
	case !s.calm():
		s.count(rt.Name, "skipped_degraded")
		return
	}
	sr := s.route(rt.Name)
	if !sr.budget.take(rt.Shadow.maxShare()) {
		s.count(rt.Name, "skipped_budget")
		return
	}
	in, body := shadowRequest(r, rt, pd.req, body)
	j := &shadowJob{rt: rt, in: in, body: body, req: pd.req, cached: hit.entry.Body,
		key: hit.key, cand: hit.semanticCandidate, query: pd.q.text, ns: pd.ns,
		requestID: r.Header.Get("X-Request-Id"), at: p.cfg.Now()}
	if !s.enqueue(j) {
		sr.budget.refund()
		s.count(rt.Name, "dropped")
	}
}

// shadowNearMiss queues the judgement of a sampled near-miss (q.near) once
// the request's own answer, body, has been stored.
func (p *Pipeline) shadowNearMiss(rt *Route, q *semanticQuery, body []byte) {
	s := p.shadow
	if s == nil || q.near == nil {
		return
	}
	j := &shadowJob{rt: rt, near: true, fresh: body, key: q.near.key, cand: *q.near, query: q.text, at: p.cfg.Now()}
	if !s.enqueue(j) {
		s.count(rt.Name, "dropped")
	}
}

// markNearMiss samples the lookup's best candidate when it scored just
// under the threshold (q.under), for shadowNearMiss.
func (p *Pipeline) markNearMiss(rt *Route, q *semanticQuery) {
	c := q.under
	if p.shadow == nil || c == nil || rt.Shadow.NearMissSample <= 0 || c.score < c.cutoff-nearMissBand {
		return
	}
	if p.shadow.draw() < rt.Shadow.NearMissSample {
		q.near = c
	}
}

func (s *shadower) enqueue(j *shadowJob) bool {
	s.pending.Add(1)
	select {
	case s.jobs <- j:
		return true
	default:
		s.pending.Add(-1)
		return false
	}
}

// shadowRequest is what a shadow call sends: what the upstream call of a
// miss would send (outbound: on a shared route only the forwarded headers,
// the canonical body and the edge's own key), marked in X-Request-Id.
func shadowRequest(r *http.Request, rt *Route, req *openai.Request, body []byte) (*http.Request, []byte) {
	out := outbound(r, rt, body != nil)
	u := *out.URL
	out.URL, out.Header = &u, out.Header.Clone()
	if id := out.Header.Get("X-Request-Id"); id != "" {
		out.Header.Set("X-Request-Id", id+"-shadow")
	}
	if rt.Shared && req != nil {
		body = req.Body.AppendCanonical(make([]byte, 0, len(body)))
	}
	return out, body
}

func (s *shadower) work() {
	defer s.wg.Done()
	for {
		select {
		case j := <-s.jobs:
			s.process(j)
			s.pending.Add(-1)
		case <-s.ctx.Done():
			return
		}
	}
}

// process makes a job's shadow call (hits), judges the two answers and
// records the judgement.
func (s *shadower) process(j *shadowJob) {
	defer func() {
		if v := recover(); v != nil {
			s.p.log.Error("shadow judgement panicked", "route", j.rt.Name, "panic", v)
		}
	}()
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.Timeout)
	defer cancel()
	cached, fresh := j.cached, j.fresh
	if j.near {
		e, ok := s.p.entry(ctx, cache.Key(j.key))
		if !ok {
			return // the candidate's answer expired meanwhile
		}
		cached = e.Body
	} else {
		var ok bool
		if fresh, ok = s.call(ctx, j); !ok {
			return
		}
	}
	ct, ok1 := answerText(cached)
	ft, ok2 := answerText(fresh)
	if !ok1 || !ok2 {
		return
	}
	jd := s.cfg.Judge.Judge(ctx, ct, ft)
	s.record(ctx, j, jd, ct, ft)
}

// call asks the upstream again for a sampled hit. Its outcome is the
// shadow's alone: no breaker or retry budget hears of it; a failure holds
// shadow calls off (the upstream may be struggling).
func (s *shadower) call(ctx context.Context, j *shadowJob) ([]byte, bool) {
	sr := s.route(j.rt.Name)
	if !s.calm() {
		sr.budget.refund()
		s.count(j.rt.Name, "skipped_degraded")
		return nil, false
	}
	t := s.p.cfg.Targets[0]
	release := func(time.Duration, bool) {}
	if t.Concurrency != nil {
		rel, err := t.Concurrency.Acquire(ctx, admission.Batch, s.p.cfg.Now())
		if err != nil { // no free slot at once: clients first
			sr.budget.refund()
			s.count(j.rt.Name, "skipped_degraded")
			return nil, false
		}
		release = rel
	}
	start := s.p.cfg.Now()
	b, err := s.fetch(ctx, t, j)
	release(s.p.cfg.Now().Sub(start), err == nil)
	if err != nil {
		if s.ctx.Err() == nil { // not closing: the upstream failed or was too slow
			s.quiet()
		}
		s.count(j.rt.Name, "failed")
		s.p.log.Debug("shadow call failed", "route", j.rt.Name, "err", err)
		return nil, false
	}
	s.count(j.rt.Name, "ok")
	return b, true
}

// fetch makes the call and returns the complete answer as one JSON body
// (a stream, when the client asked for one, is assembled).
func (s *shadower) fetch(ctx context.Context, t *Target, j *shadowJob) ([]byte, error) {
	resp, err := t.Client.Do(ctx, j.in, j.rt.upstreamPath(j.in), requestBody(t, j.body, j.req))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return nil, fmt.Errorf("upstream status %d", resp.StatusCode)
	}
	if openai.IsEventStream(resp.Header) {
		er, acc := openai.NewEventReader(resp.Body), openai.NewAccumulator(j.req.API)
		defer er.Release()
		for {
			_, data, err := er.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				return nil, err
			}
			acc.Add(data)
		}
		if !acc.Done() || acc.Err() != nil {
			return nil, errors.New("shadow stream incomplete")
		}
		return acc.Body()
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes))
	if err != nil {
		return nil, err
	}
	if complete, _ := openai.Inspect(j.req.API, b); !complete {
		return nil, errors.New("shadow answer incomplete")
	}
	return b, nil
}

// record keeps a judgement, counts it, journals a served hit found wrong
// and lets the route's threshold follow its budget.
func (s *shadower) record(ctx context.Context, j *shadowJob, jd Judgement, cachedText, freshText string) {
	sr := s.route(j.rt.Name)
	sr.record(judged{score: j.cand.score, cutoff: j.cand.cutoff, verdict: jd.Verdict, near: j.near})
	if s.cfg.Metrics != nil {
		s.cfg.Metrics.ShadowJudgement(j.rt.Name, jd.Verdict.String(), j.near)
	}
	if !j.near && jd.Verdict == Disagree && s.cfg.Journal != nil {
		d := &Disagreement{Time: j.at, RequestID: j.requestID, Route: j.rt.Name, Tenant: j.ns, CacheKey: j.key,
			QueryHash: questionHash(j.query), MatchedHash: questionHash(j.cand.text), Similarity: j.cand.cosine,
			Score: j.cand.score, Threshold: j.cand.cutoff, Judgement: jd}
		if j.req != nil {
			d.Model = j.req.Model
		}
		if j.rt.Shadow.StoreText {
			d.Query, d.Matched, d.CachedAnswer, d.FreshAnswer = j.query, j.cand.text, cachedText, freshText
		}
		s.cfg.Journal.Disagreement(d)
	}
	s.steer(ctx, j.rt)
}

// steer moves the route's threshold one step when its judgements say so
// (decideSteer), at most once per steerEvery judgements.
func (s *shadower) steer(ctx context.Context, rt *Route) {
	rt = s.current(rt)
	if s.cfg.Steer == nil || rt.Shadow.MaxFalseHitRate <= 0 {
		return
	}
	sr := s.route(rt.Name)
	sr.mu.Lock()
	due := sr.n-sr.changed >= steerEvery
	sr.mu.Unlock()
	if !due {
		return
	}
	t := s.p.sem.routeThreshold(rt)
	at, band := sr.countsAt(t)
	configured := rt.Configured
	if configured == 0 {
		configured = s.p.sem.cfg.DefaultThreshold
	}
	to, why, ok := decideSteer(steerInput{threshold: t, configured: configured, floor: rt.Floor,
		budget: rt.Shadow.MaxFalseHitRate, at: at, band: band})
	if !ok {
		return
	}
	if err := s.cfg.Steer(ctx, rt.Name, t, to, why); err != nil {
		level := slog.LevelWarn
		if errors.Is(err, ErrThresholdMoved) {
			level = slog.LevelDebug // a race another step won: expected
		}
		s.p.log.Log(ctx, level, "shadow: threshold not steered", "route", rt.Name, "from", t, "to", to, "err", err)
		return
	}
	sr.mu.Lock()
	sr.changed = sr.n
	sr.mu.Unlock()
	s.p.log.Info("shadow: route threshold steered", "route", rt.Name, "from", t, "to", to, "why", why)
}

// ShadowStats is a route's shadow verification as the admin API, the CLI
// and the review page show it. The counts are the judged hits the
// estimate rests on: those that would be hits at the threshold in force
// (see shadow_estimate.go); the totals count every judgement since start.
type ShadowStats struct {
	Judged    int     `json:"judged"`
	Agreed    int     `json:"agreed"`
	Disagreed int     `json:"disagreed"`
	Unsure    int     `json:"unsure"`
	Estimate  float64 `json:"estimate"`
	Lower     float64 `json:"lower"`
	Upper     float64 `json:"upper"`
	Threshold float64 `json:"threshold"`
	// MaxFalseHitRate is the route's budget (0: no steering).
	MaxFalseHitRate float64 `json:"max_false_hit_rate"`
	Sample          float64 `json:"sample"`
	NearMissSample  float64 `json:"near_miss_sample"`
	MaxShare        float64 `json:"max_share"`
	HitsJudged      int64   `json:"hits_judged_total"`
	NearMissJudged  int64   `json:"near_misses_judged_total"`
	// ShadowCalls and UpstreamCalls are the route's shadow calls and the
	// upstream calls made for its clients (the budget's base).
	ShadowCalls   int64 `json:"shadow_calls"`
	UpstreamCalls int64 `json:"upstream_calls"`
	// Pending is the samples of every route waiting or being judged.
	Pending int64 `json:"pending"`
}

// ShadowStats returns the shadow verification of the named route as its
// policy stands, or false when the route has no semantic tier or shadow
// verification is not configured.
func (p *Pipeline) ShadowStats(name string) (ShadowStats, bool) {
	if p.shadow == nil || p.shadow.cfg.Route == nil {
		return ShadowStats{}, false
	}
	rt := p.shadow.cfg.Route(name)
	if rt == nil || !rt.Semantic {
		return ShadowStats{}, false
	}
	t := p.sem.routeThreshold(rt)
	sr := p.shadow.route(name)
	at, _ := sr.countsAt(t)
	st := ShadowStats{Judged: at.judged, Agreed: at.agreed, Disagreed: at.disagreed, Unsure: at.unsure,
		Threshold: shortFloat(t), MaxFalseHitRate: rt.Shadow.MaxFalseHitRate, Sample: rt.Shadow.Sample,
		NearMissSample: rt.Shadow.NearMissSample, MaxShare: rt.Shadow.maxShare()}
	st.Estimate, st.Lower, st.Upper = at.interval()
	sr.mu.Lock()
	for v := range numVerdicts {
		st.HitsJudged += sr.totals[0][v]
		st.NearMissJudged += sr.totals[1][v]
	}
	sr.mu.Unlock()
	st.ShadowCalls, st.UpstreamCalls = sr.budget.used()
	st.Pending = p.shadow.pending.Load()
	return st, true
}

// shortFloat is f as float64 with the digits f prints: 0.29, not the
// 0.28999999165534973 a plain conversion shows operators.
func shortFloat(f float32) float64 {
	v, _ := strconv.ParseFloat(strconv.FormatFloat(float64(f), 'g', -1, 32), 64)
	return v
}

// shadowObserver counts, for the shadow budget and calm, what the pipeline
// reports to its Metrics.
type shadowObserver struct {
	Metrics
	s *shadower
}

func (o shadowObserver) UpstreamCall(route string, status int, errKind string, d time.Duration) {
	o.Metrics.UpstreamCall(route, status, errKind, d)
	o.s.route(route).budget.client.Add(1)
}

func (o shadowObserver) Degraded(route, rung, reason string) {
	o.Metrics.Degraded(route, rung, reason)
	o.s.quiet()
}

func (o shadowObserver) Shed(lane, reason string) {
	o.Metrics.Shed(lane, reason)
	o.s.quiet()
}
