package app

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgecache/edgecache/cmd/internal/llmsim"
)

// Shadow verification end to end: edgecache in-process with the real
// USE-lite model, llmsim answering paraphrases alike (its canonical map)
// and hard negatives ("learn Java" against a stored "learn Python") with
// their own answer, a semantic route at a loose threshold with a 10 %
// error budget. The route steers its own threshold through audited policy
// changes until the measured false-hit rate is under budget; the estimate,
// interval and budget show on /metrics, the admin API, `edgecache routes
// show` and the review page; shadow calls stay within their share by
// llmsim's own count and stop after a degraded answer; the answers found
// wrong leave the index in one admin action.

// shadowFamilies are questions asked the same way about different things:
// the first shadowSeeded entities' canonical questions are stored, their
// paraphrases are right to serve from them, the canonical questions of the
// other entities are hard negatives. (USE-lite's verifier scores these
// paraphrases 0.77–0.94 and these hard negatives 0.05–0.29.)
var shadowFamilies = []struct {
	canon string
	paras []string
	ents  []string
}{
	{"How do I learn %s quickly?",
		[]string{"What is the fastest way to learn %s?", "How can I learn %s fast?", "How do I quickly learn %s?"},
		[]string{"Python", "Java", "Rust", "Ruby", "Kotlin", "Haskell", "Scala", "Swift", "Perl", "Elixir"}},
	{"What is the weather like in %s today?",
		[]string{"How is the weather in %s today?", "What's the weather like in %s today?", "What is today's weather in %s?"},
		[]string{"Paris", "London", "Tokyo", "Berlin", "Madrid", "Vienna", "Prague", "Oslo", "Dublin", "Lisbon"}},
	{"How do I reset my %s password?",
		[]string{"How can I reset my %s password?", "I forgot my %s password, how do I reset it?"},
		[]string{"Gmail", "Outlook", "Netflix", "Spotify", "Amazon", "Dropbox", "Slack", "Zoom", "GitHub", "Steam"}},
}

const shadowSeeded = 5

type shadowEnv struct {
	data, admin string
	sim         *llmsim.Running
	seeds       []string
	queries     []string          // paraphrases and hard negatives, interleaved
	canonOf     map[string]string // the question whose answer is right
	parasOf     map[string][]string
	clientCalls int // requests the upstream answered
}

func newShadowEnv(t *testing.T) *shadowEnv {
	t.Helper()
	t.Setenv("EDGECACHE_QDRANT_ADDR", "")
	dir := repoModelDir(t)
	if _, err := os.Stat(filepath.Join(dir, "model.json")); err != nil {
		t.Fatalf("the USE-lite model is missing from %s (run make model): %v", dir, err)
	}
	e := &shadowEnv{canonOf: map[string]string{}, parasOf: map[string][]string{}}
	canonical := map[string]string{}
	var paras, hard []string
	for _, f := range shadowFamilies {
		for i, ent := range f.ents {
			c := fmt.Sprintf(f.canon, ent)
			e.canonOf[c] = c
			if i >= shadowSeeded {
				hard = append(hard, c)
				continue
			}
			e.seeds = append(e.seeds, c)
			for _, p := range f.paras {
				q := fmt.Sprintf(p, ent)
				e.canonOf[q], canonical[q] = c, c
				e.parasOf[c] = append(e.parasOf[c], q)
				paras = append(paras, q)
			}
		}
	}
	for i := range max(len(paras), len(hard)) { // a hard negative every few paraphrases
		if i < len(paras) {
			e.queries = append(e.queries, paras[i])
		}
		if i < len(hard) {
			e.queries = append(e.queries, hard[i])
		}
	}
	e.sim = startOutageSim(t, llmsim.Config{})
	if err := e.sim.Server.SetCanonical(canonical, false); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`# %s
semantic: {embedder: local, model_dir: %q, index: embedded}
routes:
  - name: chat
    path: /v1/chat/completions
    cache:
      mode: semantic
      semantic:
        threshold: 0.05
        max_false_hit_rate: 0.1
        shadow: {sample: 1, near_miss_sample: 0.5, max_share: 0.9}
`, t.Name(), dir)
	path := filepath.Join(t.TempDir(), "edgecache.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	e.data, e.admin = startEdgecache(t, e.sim.URL(), "--config", path)
	return e
}

// answer is what a client got.
type answer struct {
	cacheStatus, content string
	semantic             bool
}

func (e *shadowEnv) ask(t *testing.T, q string, hdr ...string) answer {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"model": "sim-1", "messages": []map[string]string{{"role": "user", "content": q}}})
	req, _ := http.NewRequest(http.MethodPost, e.data+"/v1/chat/completions", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer sk-shadow")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var cc struct {
		Choices []struct {
			Message struct{ Content string } `json:"message"`
		} `json:"choices"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &cc) != nil || len(cc.Choices) == 0 {
		t.Fatalf("%q: %d %s", q, resp.StatusCode, b)
	}
	a := answer{cacheStatus: resp.Header.Get("Cache-Status"), content: cc.Choices[0].Message.Content}
	a.semantic = strings.Contains(a.cacheStatus, "detail=semantic")
	if strings.Contains(a.cacheStatus, "fwd=") {
		e.clientCalls++
	}
	return a
}

// wrong reports whether a is another question's answer than q's.
func (e *shadowEnv) wrong(q string, a answer) bool {
	return !strings.HasPrefix(a.content, "sim:"+hash12(e.canonOf[q])+" ")
}

func hash12(text string) string { return questionHash16(text)[:12] }

// shadowJSON is the "shadow" object of GET /admin/routes/{name}, as the
// issue's contract names its fields.
type shadowStats struct {
	Judged, Agreed, Disagreed, Unsure int
	Estimate, Lower, Upper, Threshold float64
	Budget                            float64 `json:"max_false_hit_rate"`
	ShadowCalls                       int64   `json:"shadow_calls"`
	Pending                           int64   `json:"pending"`
}

func (e *shadowEnv) shadow(t *testing.T) shadowStats {
	t.Helper()
	status, b := get(t, e.admin+"/admin/routes/chat", "")
	var v struct {
		Threshold float64                    `json:"threshold"`
		Shadow    map[string]json.RawMessage `json:"shadow"`
	}
	if status != http.StatusOK || json.Unmarshal(b, &v) != nil || v.Shadow == nil {
		t.Fatalf("GET /admin/routes/chat: %d %s", status, b)
	}
	for _, k := range []string{"judged", "agreed", "disagreed", "unsure", "estimate", "lower", "upper", "threshold"} {
		if _, ok := v.Shadow[k]; !ok {
			t.Fatalf("GET /admin/routes/chat: shadow lacks %q: %s", k, b)
		}
	}
	raw, _ := json.Marshal(v.Shadow)
	var st shadowStats
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatal(err)
	}
	if float32(st.Threshold) != float32(v.Threshold) {
		t.Errorf("shadow threshold %v, route threshold %v", st.Threshold, v.Threshold)
	}
	return st
}

// settle waits until every shadow sample is judged.
func (e *shadowEnv) settle(t *testing.T) shadowStats {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		st := e.shadow(t)
		if st.Pending == 0 {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d shadow samples pending after 90s", st.Pending)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *shadowEnv) upstreamCalls() int { return int(e.sim.Server.Stats()["/v1/chat/completions"]) }

func TestShadowSteersRouteEndToEnd(t *testing.T) {
	e := newShadowEnv(t)
	for _, q := range e.seeds { // at 0.05 the seeds would match one another
		if a := e.ask(t, q, "X-Edgecache-Min-Score", "0.999"); a.semantic {
			t.Fatalf("seed %q: %s", q, a.cacheStatus)
		}
	}
	waitUntil(t, func() bool { // the seeds are indexed in the background
		return e.ask(t, e.parasOf[e.seeds[len(e.seeds)-1]][0]).semantic
	})

	var hits, wrong, hardHits int
	for round := 1; round <= 6; round++ {
		before := e.shadow(t).Threshold
		hits, wrong, hardHits = 0, 0, 0
		for _, q := range e.queries {
			a := e.ask(t, q)
			if a.semantic {
				hits++
				if e.wrong(q, a) {
					wrong++
				}
				if e.canonOf[q] == q {
					hardHits++
				}
			}
		}
		st := e.settle(t)
		t.Logf("round %d: threshold %.2f → %.2f; clients: %d of %d semantic hits wrong; shadow: %d judged at the threshold, estimate %.4f [%.4f, %.4f]",
			round, before, st.Threshold, wrong, hits, st.Judged, st.Estimate, st.Lower, st.Upper)
		if round > 1 && st.Threshold == before && st.Upper <= 0.1 {
			break
		}
	}
	st := e.shadow(t)
	rate := float64(wrong) / float64(max(hits, 1))
	if st.Threshold <= 0.05 || st.Upper > 0.1 || hardHits > 0 {
		t.Errorf("after steering: threshold %.2f, upper bound %.4f (budget 0.1), %d hard negatives served: want it raised until under budget",
			st.Threshold, st.Upper, hardHits)
	}
	if rate < st.Lower || rate > st.Upper {
		t.Errorf("the last round's false-hit rate %.4f is outside the estimate's interval [%.4f, %.4f]", rate, st.Lower, st.Upper)
	}
	if shadowCalls := e.upstreamCalls() - e.clientCalls; shadowCalls != int(st.ShadowCalls) || shadowCalls == 0 ||
		float64(shadowCalls) > 0.9*float64(e.upstreamCalls()) {
		t.Errorf("llmsim counted %d shadow calls (edgecache %d) of %d upstream calls: want some, within max_share 0.9",
			shadowCalls, st.ShadowCalls, e.upstreamCalls())
	}
	checkShadowAudit(t, e.admin, st.Threshold)
	checkShadowSurfaces(t, e.admin, st)
	checkShadowPurge(t, e)

	// After a degraded answer, hits are served and not shadowed.
	e.sim.Server.SetFault(llmsim.Fault{Status: 503})
	postDegraded(t, e.data+"/v1/chat/completions", `{"model":"sim-1","messages":[{"role":"user","content":"What is the capital of Australia?"}]}`)
	e.sim.Server.ClearFault()
	before, clients, semantic := e.upstreamCalls(), e.clientCalls, 0
	for _, q := range e.queries[:20] {
		if e.ask(t, q).semantic {
			semantic++
		}
	}
	e.settle(t)
	if calls := e.upstreamCalls() - before; semantic == 0 || calls != e.clientCalls-clients {
		t.Errorf("after a degraded answer: %d semantic hits, %d upstream calls for %d client calls: want no shadow call",
			semantic, calls, e.clientCalls-clients)
	}
}

// checkShadowAudit: every threshold change is an audited policy change by
// "shadow", one step at a time, with its reason.
func checkShadowAudit(t *testing.T, admin string, final float64) {
	t.Helper()
	_, b := get(t, admin+"/admin/routes/audit?route=chat&limit=100", "")
	var res struct {
		Audit []struct {
			Who, Action, Reason string
			Before, After       struct{ Threshold float64 }
		} `json:"audit"`
	}
	if err := json.Unmarshal(b, &res); err != nil || len(res.Audit) < 2 {
		t.Fatalf("audit: %v %s", err, b)
	}
	if a := res.Audit[0]; a.After.Threshold != final {
		t.Errorf("the last audited threshold is %v, the route's %v", a.After.Threshold, final)
	}
	for _, a := range res.Audit {
		if step := a.After.Threshold - a.Before.Threshold; a.Who != "shadow" || a.Action != "steer" || a.Reason == "" ||
			step < 0.0199 || step > 0.0201 {
			t.Errorf("audit record %+v: want a step of 0.02 steered by shadow with a reason", a)
		}
	}
}

// checkShadowSurfaces: /metrics, `edgecache routes show`, the review page
// and the journal show what the admin API says.
func checkShadowSurfaces(t *testing.T, admin string, st shadowStats) {
	t.Helper()
	_, m := get(t, admin+"/metrics", "")
	for _, re := range []string{
		`edgecache_semantic_shadow_judgements_total\{route="chat",verdict="agree"\} [1-9]`,
		`edgecache_semantic_shadow_judgements_total\{route="chat",verdict="disagree"\} [1-9]`,
		`edgecache_semantic_false_hit_rate\{bound="estimate",route="chat"\} `,
		`edgecache_semantic_false_hit_rate\{bound="lower",route="chat"\} `,
		`edgecache_semantic_false_hit_rate\{bound="upper",route="chat"\} ` + regexp.QuoteMeta(strconv.FormatFloat(st.Upper, 'g', -1, 64)),
	} {
		if !regexp.MustCompile(re).Match(m) {
			t.Errorf("/metrics lacks %s", re)
		}
	}

	var out, errOut bytes.Buffer
	if err := Run(context.Background(), []string{"routes", "--admin", admin, "show", "chat"}, &out, &errOut); err != nil {
		t.Fatalf("edgecache routes show chat: %v\n%s", err, errOut.String())
	}
	summary := fmt.Sprintf("%.2f%% [%.2f%%, %.2f%%], budget 10.00%%", 100*st.Estimate, 100*st.Lower, 100*st.Upper)
	if !strings.Contains(out.String(), summary) || !strings.Contains(out.String(), "false-hit rate") {
		t.Errorf("edgecache routes show chat:\n%s\nwant the estimate, interval and budget %q", out.String(), summary)
	}

	_, page := get(t, admin+"/admin/ui", "")
	cell := regexp.MustCompile(`<td class="shadow" id="shadow-chat" data-state="under" data-judged="(\d+)" data-estimate="([^"]+)" data-lower="([^"]+)" data-upper="([^"]+)" data-budget="0.1"`).FindSubmatch(page)
	if cell == nil || string(cell[1]) != strconv.Itoa(st.Judged) || string(cell[4]) != strconv.FormatFloat(st.Upper, 'g', -1, 64) {
		t.Errorf("the review page's shadow cell for chat: %q; want judged %d, upper %v, budget 0.1, under", cell, st.Judged, st.Upper)
	}
	for _, want := range []string{fmt.Sprintf("%.2f %%", 100*st.Estimate), fmt.Sprintf("[%.2f – %.2f %%]", 100*st.Lower, 100*st.Upper), "budget 10.00 %", "Purge disagreements"} {
		if !strings.Contains(string(page), want) {
			t.Errorf("the review page lacks %q", want)
		}
	}

	_, b := get(t, admin+"/admin/degradations?rung=shadow-disagreement&route=chat&since=1h", "")
	var j struct {
		Count        int `json:"count"`
		Degradations []struct {
			Shadow map[string]any `json:"shadow"`
			Cache  struct{ Key string }
		} `json:"degradations"`
	}
	if json.Unmarshal(b, &j) != nil || j.Count == 0 {
		t.Fatalf("journal of disagreements: %s", b)
	}
	for _, r := range j.Degradations {
		if len(r.Cache.Key) != 64 || r.Shadow["query_hash"] == nil || r.Shadow["judge_score"] == nil || r.Shadow["query"] != nil {
			t.Errorf("disagreement record %+v: want the key, hashes and judge score, no text", r)
			break
		}
	}
}

// checkShadowPurge: one admin action deletes the answers found wrong from
// the index; a paraphrase of such a question is no longer served its
// answer semantically (before, every one was).
func checkShadowPurge(t *testing.T, e *shadowEnv) {
	t.Helper()
	_, b := get(t, e.admin+"/admin/degradations?rung=shadow-disagreement&route=chat&since=1h&limit=1000", "")
	var j struct {
		Degradations []struct {
			Shadow struct {
				MatchedHash string `json:"matched_hash"`
			} `json:"shadow"`
		} `json:"degradations"`
	}
	if err := json.Unmarshal(b, &j); err != nil {
		t.Fatal(err)
	}
	purged := map[string]bool{} // seeds whose answers were served wrongly
	for _, r := range j.Degradations {
		for _, s := range e.seeds {
			if questionHash16(s) == r.Shadow.MatchedHash {
				purged[s] = true
			}
		}
	}
	resp, err := http.Post(e.admin+"/admin/routes/chat/shadow/purge", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	var res struct {
		Disagreements, Answers int
		Deleted                int `json:"semantic_points_deleted"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &res) != nil || res.Disagreements != len(j.Degradations) ||
		res.Answers < len(purged) || res.Deleted != res.Answers || len(purged) == 0 {
		t.Fatalf("purge: %d %s; %d disagreements on %d seeds", resp.StatusCode, b, len(j.Degradations), len(purged))
	}
	// Only one paraphrase per seed: its own answer, if it goes upstream, is
	// stored and may then serve the next one.
	for s := range purged {
		q := e.parasOf[s][0]
		if a := e.ask(t, q); a.semantic && !e.wrong(q, a) {
			t.Errorf("%q after the purge of %q: %s, still served its answer semantically", q, s, a.cacheStatus)
		}
	}
}
