package pipeline

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgecache/edgecache/cache/semantic"
	"github.com/edgecache/edgecache/cache/semantic/verify"
	"github.com/edgecache/edgecache/cmd/internal/config"
	"github.com/edgecache/edgecache/cmd/internal/llmsim"
	"github.com/edgecache/edgecache/cmd/internal/openai"
	"github.com/edgecache/edgecache/embed"
)

// Shadow verification end to end at the pipeline: the real USE-lite
// model, its verifier and the embedded index, llmsim answering
// shadowTraffic's paraphrases alike (reworded: the fresh answer to a
// paraphrase never equals the cached one byte for byte, so a shadow answer
// reaching a client would show) and hard negatives with their own answer.

// routeTable is the route policies in force, which steering changes the
// way policy.Store.Steer does: only from the threshold in force.
type routeTable struct {
	mu      sync.Mutex
	m       map[string]*Route
	changes []float32 // thresholds steered to, in order
}

func (tb *routeTable) Route(name string) *Route {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	return tb.m[name]
}

func (tb *routeTable) steer(_ context.Context, name string, from, to float32, why string) error {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	cur := tb.m[name]
	if cur.Threshold != from {
		return fmt.Errorf("threshold is %v, not %v: %w", cur.Threshold, from, ErrThresholdMoved)
	}
	next := *cur
	next.Threshold = to
	tb.m[name] = &next
	tb.changes = append(tb.changes, to)
	return nil
}

func (tb *routeTable) threshold() float32 { return tb.Route("chat").Threshold }

// shadowCounts counts ShadowMetrics events.
type shadowMetricsRec struct {
	mu    sync.Mutex
	calls map[string]int // result → n
	hits  map[string]int // verdict → n
}

func (m *shadowMetricsRec) ShadowJudgement(_, verdict string, near bool) {
	if near {
		return
	}
	m.mu.Lock()
	m.hits[verdict]++
	m.mu.Unlock()
}

func (m *shadowMetricsRec) ShadowCall(_, result string) {
	m.mu.Lock()
	m.calls[result]++
	m.mu.Unlock()
}

func (m *shadowMetricsRec) call(result string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.calls[result]
}

type disagreements struct {
	mu   sync.Mutex
	recs []*Disagreement
}

func (d *disagreements) Disagreement(r *Disagreement) {
	d.mu.Lock()
	d.recs = append(d.recs, r)
	d.mu.Unlock()
}

// shadowEdge is an edge with shadow verification on route "chat".
type shadowEdge struct {
	*edge
	tr      shadowTraffic
	table   *routeTable
	metrics *shadowMetricsRec
	journal *disagreements
	// fromUpstream are the answers clients got from the upstream: every
	// cached answer is one of them.
	fromUpstream map[string]bool
	clientCalls  int // requests answered by an upstream call
}

func newShadowEdge(t *testing.T, sp config.SemanticPolicy, seed uint64) *shadowEdge {
	t.Helper()
	m := loadUseLite(t)
	memo, err := embed.NewMemo(m, 16<<20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(memo.Close)
	idx, err := semantic.NewEmbedded(semantic.EmbeddedConfig{Dim: m.Dim()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { idx.Close() })
	v := verify.NewFor(m.Name())
	routes := []config.Route{{Name: "chat", Path: "/v1/chat/completions", Cache: config.CachePolicy{Mode: config.ModeSemantic, Semantic: sp}}}
	c := config.Config{Routes: routes}
	c.Default()
	compiled, err := Compile(c.Routes)
	if err != nil {
		t.Fatal(err)
	}
	se := &shadowEdge{tr: newShadowTraffic(seed), table: &routeTable{m: map[string]*Route{"chat": compiled[0]}},
		metrics: &shadowMetricsRec{calls: map[string]int{}, hits: map[string]int{}}, journal: &disagreements{},
		fromUpstream: map[string]bool{}}
	rng := rand.New(rand.NewPCG(seed, 2))
	se.edge = newEdge(t, edgeOpts{routes: routes, route: se.table.Route,
		semantic: &SemanticConfig{Embedder: memo, Index: idx, Verifier: v, DefaultThreshold: verify.DefaultThreshold(m.Name()),
			Candidates: verify.Candidates, MinCosine: v.MinCosine, Wording: verify.AppendWordingKey},
		shadow: &ShadowConfig{Route: se.table.Route, Steer: se.table.steer, Journal: se.journal,
			Metrics: se.metrics, Rand: rng.Float64, Timeout: 10 * time.Second}})
	if err := se.sim.Server.SetCanonical(se.tr.canonicalMap(), true); err != nil {
		t.Fatal(err)
	}
	return se
}

// clientGot is what a client got for one question.
type clientGot struct {
	cacheStatus, content string
	semantic, wrong      bool // a semantic hit; serving another question's answer
}

func (se *shadowEdge) ask(q string, extra ...string) clientGot {
	se.t.Helper()
	return se.askWith(q, extra, "Authorization", "Bearer sk-shadow")
}

func (se *shadowEdge) askWith(q string, extra []string, hdr ...string) clientGot {
	se.t.Helper()
	r := se.post("/v1/chat/completions", chat(q, extra...), hdr...)
	if r.status != http.StatusOK {
		se.t.Fatalf("%q: status %d %s", q, r.status, r.body)
	}
	cs, _, _ := strings.Cut(r.header.Get("Cache-Status"), "; ttl=") // the seconds left differ from run to run
	o := clientGot{cacheStatus: cs, content: content(se.t, r.body)}
	o.semantic = strings.Contains(o.cacheStatus, "detail=semantic")
	o.wrong = !strings.HasPrefix(o.content, simPrefix(se.tr.canonOf[q])+" ")
	if strings.Contains(o.cacheStatus, "fwd=") {
		se.clientCalls++
		se.fromUpstream[o.content] = true
	} else if !se.fromUpstream[o.content] {
		se.t.Errorf("%q: a cached answer no client got from the upstream (%s): %.40q", q, o.cacheStatus, o.content)
	}
	return o
}

// seed asks the seeded questions, each answered by the upstream (at the
// loose thresholds of these tests the seeds would match one another), and
// waits until they are indexed.
func (se *shadowEdge) seed() {
	for _, q := range se.tr.seeds {
		if o := se.askWith(q, nil, "Authorization", "Bearer sk-shadow", "X-Edgecache-Min-Score", "0.999"); o.semantic {
			se.t.Fatalf("seed %q: %s", q, o.cacheStatus)
		}
	}
	se.waitIndexed()
}

// roundTruth is what the clients of a round got.
type roundTruth struct{ hits, wrong, hardHits int }

func (r roundTruth) rate() float64 { return float64(r.wrong) / float64(max(r.hits, 1)) }

func (se *shadowEdge) round() (roundTruth, []clientGot) {
	var rt roundTruth
	var outs []clientGot
	for _, q := range se.tr.queries {
		o := se.ask(q)
		// Each question finds every earlier answer indexed (indexing is
		// asynchronous): the same traffic then meets the same index with
		// shadow verification on and off.
		se.waitIndexed()
		outs = append(outs, o)
		if o.semantic {
			rt.hits++
			if o.wrong {
				rt.wrong++
			}
			if se.tr.hard[q] {
				rt.hardHits++
			}
		}
	}
	se.waitShadow()
	return rt, outs
}

// waitShadow waits until every sample is judged and every answer indexed.
func (se *shadowEdge) waitShadow() {
	se.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for se.p.shadow.pending.Load() != 0 {
		if time.Now().After(deadline) {
			se.t.Fatalf("%d shadow samples still pending after 60s", se.p.shadow.pending.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
	se.waitIndexed()
}

// shadowCalls is the upstream calls clients did not cause, from llmsim's
// own counter.
func (se *shadowEdge) shadowCalls() int {
	return int(se.upstreamCalls("/v1/chat/completions")) - se.clientCalls
}

// TestShadowEstimateCoversTruth: at a loose threshold that serves hard
// negatives, with half the hits sampled (a seeded draw: the test is
// deterministic) and no steering, the estimate's interval covers the
// false-hit rate the clients got, known from the test's labels; the
// clients get exactly what they get with shadow verification off; shadow
// calls stay within the budget; wrong hits are journaled with hashes only.
func TestShadowEstimateCoversTruth(t *testing.T) {
	sp := config.SemanticPolicy{Threshold: 0.05, Shadow: config.ShadowPolicy{Sample: 0.5, MaxShare: 0.9}}
	se := newShadowEdge(t, sp, 7)
	se.seed()
	var truth roundTruth
	var got [][]clientGot
	for range 2 {
		r, outs := se.round()
		truth.hits, truth.wrong, truth.hardHits = truth.hits+r.hits, truth.wrong+r.wrong, truth.hardHits+r.hardHits
		got = append(got, outs)
	}
	st, ok := se.p.ShadowStats("chat")
	if !ok {
		t.Fatal("no shadow stats for a semantic route")
	}
	t.Logf("truth: %d of %d semantic hits wrong (%.3f); shadow: %d judged (%d agreed, %d disagreed, %d unsure), estimate %.3f in [%.3f, %.3f]; %d shadow calls for %d client calls",
		truth.wrong, truth.hits, truth.rate(), st.Judged, st.Agreed, st.Disagreed, st.Unsure, st.Estimate, st.Lower, st.Upper, se.shadowCalls(), se.clientCalls)
	if truth.hardHits == 0 || truth.rate() < 0.1 {
		t.Fatalf("the loose threshold served %d hard negatives (%.3f wrong): the test tests nothing", truth.hardHits, truth.rate())
	}
	if st.Judged < 30 || st.Disagreed == 0 {
		t.Errorf("%d judged, %d disagreed: too few to estimate", st.Judged, st.Disagreed)
	}
	if truth.rate() < st.Lower || truth.rate() > st.Upper {
		t.Errorf("the true false-hit rate %.4f is outside the estimate's interval [%.4f, %.4f]", truth.rate(), st.Lower, st.Upper)
	}
	if n := se.shadowCalls(); n != int(st.ShadowCalls) || n == 0 || float64(n) > 0.9*float64(n+se.clientCalls) {
		t.Errorf("%d shadow calls seen by llmsim (%d counted) for %d client calls: want some, within 0.9 of all", n, st.ShadowCalls, se.clientCalls)
	}
	if len(se.table.changes) != 0 {
		t.Errorf("steered without a budget: %v", se.table.changes)
	}
	se.journal.mu.Lock()
	wrongJudged := len(se.journal.recs)
	for _, d := range se.journal.recs {
		if d.Query != "" || d.CachedAnswer != "" || len(d.QueryHash) != 32 || len(d.MatchedHash) != 32 || d.CacheKey == "" || d.Judgement.Verdict != Disagree {
			t.Errorf("disagreement record %+v: want hashes and key, no text", d)
			break
		}
	}
	se.journal.mu.Unlock()
	if wrongJudged != st.Disagreed {
		t.Errorf("%d disagreements journaled, %d counted", wrongJudged, st.Disagreed)
	}

	// The same traffic without shadow verification: every client gets the
	// same answer from the same place.
	off := newShadowEdge(t, config.SemanticPolicy{Threshold: 0.05}, 7)
	off.seed()
	for i := range 2 {
		_, outs := off.round()
		for j := range outs {
			if outs[j] != got[i][j] {
				t.Errorf("round %d, %q: with shadow verification on, the client got %s %.30q; off: %s %.30q",
					i+1, off.tr.queries[j], got[i][j].cacheStatus, got[i][j].content, outs[j].cacheStatus, outs[j].content)
			}
		}
	}
}

// TestShadowSteersThreshold: a route seeded with hard-negative traffic at a
// loose threshold, with a 10 % budget, raises its threshold in steps until
// the measured false-hit rate is under budget; then hard negatives are no
// longer served, the estimate's interval covers the rate the clients got,
// and shadow calls stayed within their share.
func TestShadowSteersThreshold(t *testing.T) {
	sp := config.SemanticPolicy{Threshold: 0.05, MaxFalseHitRate: 0.1,
		Shadow: config.ShadowPolicy{Sample: 1, NearMissSample: 0.5, MaxShare: 0.9, StoreText: true}}
	se := newShadowEdge(t, sp, 11)
	se.seed()
	var last roundTruth
	for i := range 8 {
		before := se.table.threshold()
		r, _ := se.round()
		st, _ := se.p.ShadowStats("chat")
		t.Logf("round %d: threshold %.2f → %.2f; clients: %d of %d hits wrong; shadow: %d judged at the threshold, estimate %.3f [%.3f, %.3f]",
			i+1, before, se.table.threshold(), r.wrong, r.hits, st.Judged, st.Estimate, st.Lower, st.Upper)
		last = r
		if i > 0 && se.table.threshold() == before && st.Upper <= sp.MaxFalseHitRate {
			break
		}
	}
	st, _ := se.p.ShadowStats("chat")
	if st.Upper > sp.MaxFalseHitRate {
		t.Errorf("after 8 rounds the upper bound is %.4f, over the budget %.2f", st.Upper, sp.MaxFalseHitRate)
	}
	if len(se.table.changes) < 2 || se.table.threshold() <= float32(sp.Threshold) {
		t.Errorf("threshold changes %v: want it raised in steps", se.table.changes)
	}
	for i, to := range se.table.changes {
		from := float32(sp.Threshold)
		if i > 0 {
			from = se.table.changes[i-1]
		}
		if d := to - from; d < raiseStep-1e-6 || d > raiseStep+1e-6 {
			t.Errorf("change %d: %.2f → %.2f, want a step of %v", i+1, from, to, raiseStep)
		}
	}
	if last.hardHits > 0 || last.rate() > sp.MaxFalseHitRate {
		t.Errorf("last round: %d hard negatives served, %d of %d hits wrong", last.hardHits, last.wrong, last.hits)
	}
	if last.rate() < st.Lower || last.rate() > st.Upper {
		t.Errorf("the last round's false-hit rate %.4f is outside the estimate's interval [%.4f, %.4f]", last.rate(), st.Lower, st.Upper)
	}
	if n := se.shadowCalls(); n != int(st.ShadowCalls) || float64(n) > 0.9*float64(n+se.clientCalls) {
		t.Errorf("%d shadow calls seen by llmsim (%d counted) for %d client calls: over 0.9 of all", n, st.ShadowCalls, se.clientCalls)
	}
	if st.NearMissJudged == 0 {
		t.Error("no near-miss judged (hard negatives just under the raised threshold, sampled at 0.5)")
	}
	se.journal.mu.Lock()
	defer se.journal.mu.Unlock()
	if len(se.journal.recs) == 0 || se.journal.recs[0].Query == "" || se.journal.recs[0].FreshAnswer == "" {
		t.Error("no disagreement journaled with its text (store_text is on)")
	}
}

// TestShadowHoldsOff: no shadow call while the upstream fails, nor for a
// request asking for variety; shadow calls within a small share.
func TestShadowHoldsOff(t *testing.T) {
	sp := config.SemanticPolicy{Threshold: 0.05, Shadow: config.ShadowPolicy{Sample: 1, MaxShare: 0.2}}
	se := newShadowEdge(t, sp, 3)
	se.seed()
	se.round()
	if n := se.shadowCalls(); n == 0 || float64(n) > 0.2*float64(n+se.clientCalls)+1e-9 {
		t.Errorf("%d shadow calls for %d client calls: want some, at most 0.2 of all", n, se.clientCalls)
	}
	if se.metrics.call("skipped_budget") == 0 {
		t.Error("sampling every hit at max_share 0.2 never met the budget")
	}

	// Variety: a hit at temperature 0.7 (of a question stored at 0.7:
	// sampling parameters are part of the context) is served, not sampled.
	var canon, para string
	for q, c := range se.tr.canonOf {
		if q != c {
			canon, para = c, q
			break
		}
	}
	se.ask(canon, `"temperature":0.7`)
	se.waitIndexed()
	before := se.upstreamCalls("/v1/chat/completions")
	if o := se.ask(para, `"temperature":0.7`); !o.semantic {
		t.Fatalf("%q at temperature 0.7: %s, want a semantic hit", para, o.cacheStatus)
	}
	se.waitShadow()
	if se.metrics.call("skipped_request") != 1 || se.upstreamCalls("/v1/chat/completions") != before {
		t.Errorf("a hit at temperature 0.7: %d skipped, %d upstream calls: want it skipped, none made",
			se.metrics.call("skipped_request"), se.upstreamCalls("/v1/chat/completions")-before)
	}

	// Degradation: once a client got a degraded answer, hits are served
	// and not shadowed, though the upstream answers again.
	se.sim.Server.SetFault(llmsim.Fault{Status: 503})
	r := se.post("/v1/chat/completions", chat("What is the capital of Australia?"))
	if r.header.Get("X-Edgecache-Degraded") == "" {
		t.Fatalf("during a 503 storm: %d %q, want a degraded answer", r.status, r.header.Get("Cache-Status"))
	}
	se.sim.Server.ClearFault()
	se.metrics.mu.Lock()
	se.metrics.calls = map[string]int{}
	se.metrics.mu.Unlock()
	before, clients := se.upstreamCalls("/v1/chat/completions"), se.clientCalls
	hits := 0
	for _, q := range se.tr.queries[:20] {
		if se.ask(q).semantic {
			hits++
		}
	}
	se.waitShadow()
	calls := se.upstreamCalls("/v1/chat/completions") - before
	if hits == 0 || calls != int64(se.clientCalls-clients) || se.metrics.call("skipped_degraded") == 0 {
		t.Errorf("after a degraded answer: %d hits, %d upstream calls for %d client calls, %d skipped for degradation: want hits, no shadow call",
			hits, calls, se.clientCalls-clients, se.metrics.call("skipped_degraded"))
	}
}

// TestShadowRequest: a shadow call sends what the route's upstream call
// would, marked in X-Request-Id: the client's request on a private route;
// on a shared route only the forwarded headers, no credentials (the
// upstream client adds the edge's own key) and the canonical body. The
// client's request is left as it was.
func TestShadowRequest(t *testing.T) {
	body := []byte(`{"model":"m", "messages":[{"role":"user","content":"hi"}]}`)
	req, err := openai.ParseRequest(openai.APIChat, body)
	if err != nil {
		t.Fatal(err)
	}
	in, _ := http.NewRequest(http.MethodPost, "http://edge/v1/chat/completions?api-version=1", nil)
	for k, v := range map[string]string{"Authorization": "Bearer sk-client", "X-Api-Key": "k",
		"OpenAI-Project": "p", "X-Request-Id": "ec-1", "X-Persona": "pirate", "X-Stainless-Lang": "js"} {
		in.Header.Set(k, v)
	}
	for _, shared := range []bool{false, true} {
		out, b := shadowRequest(in, &Route{Name: "faq", Shared: shared, ForwardHeaders: []string{"X-Persona"}}, req, body)
		if out.URL.String() != in.URL.String() || out.Method != in.Method || out.Header.Get("X-Request-Id") != "ec-1-shadow" ||
			out.Header.Get("X-Persona") != "pirate" {
			t.Errorf("shared %v: %s %s %v", shared, out.Method, out.URL, out.Header)
		}
		for _, h := range []string{"Authorization", "X-Api-Key", "OpenAI-Project", "X-Stainless-Lang"} {
			// On a shared route the client's value never goes upstream; an
			// Anthropic-style key header may stay as the marker the
			// upstream client fills with the edge's own key.
			if got := out.Header.Get(h) == in.Header.Get(h); got == shared {
				t.Errorf("shared %v: %s carries the client's value: %v", shared, h, got)
			}
		}
		if canonical := !bytes.Equal(b, body); canonical != shared {
			t.Errorf("shared %v: body %s", shared, b)
		}
	}
	if in.Header.Get("Authorization") == "" || in.Header.Get("X-Request-Id") != "ec-1" {
		t.Errorf("the client's request changed: %v", in.Header)
	}
}
