package bench

// Scenario (j): semantic hits with fresh wordings and the local model, the
// honest row of issue 16. Row (e) measures the gateway around a remote
// embedder (llmsim, which hashes texts); (j) measures what an operator
// running the defaults gets: edgecache with its default embedder (USE-lite,
// found in models/use-lite the way `make run` finds it, int8 where the CPU
// has VNNI), a route in mode semantic at the shipped verifier threshold, and
// every request a text edgecache has never seen, so that neither the exact
// tier nor the embedding memo can help: each request pays one embedding by
// the local model on the gateway's CPU, a search and the verification.
// llmsim (the model) runs on CPU 0 with wrk, edgecache on CPU 1.
//
// The wordings. semanticPlaces × semanticTopics give 200 stored questions
// ("what is the capital of france?"). Each is asked in one of the rewordings
// of freshTemplates, the ones the shipped verifier accepts for the stored
// questions (see freshTemplates for what it rejects: most rewordings), so
// there are only 1,200 of them. To make every request's text new without
// changing what the model and the verifier see, each is sent in one of
// 1,024 letter-case patterns of the "mostly upper case" kind: the text upper
// case, with a pattern of its first freshCaseBits letters in lower case.
// USE-lite lower-cases its input (local.DefaultOptions), so the embedding
// is the lower-case text's; the verifier reads capitals inside a sentence
// as names (an entity on one side only rejects a hit), except in text that
// is mostly upper case, which it takes for shouting; random case as in (e)
// would thus fail hits here. A new text is an exact miss and a memo miss:
// the local model computes its embedding.
//
// The wrk script enumerates the space (texts × case patterns, 1,228,800)
// with a stride coprime to its size, continuing from a counter it keeps in
// a state file across wrk runs (warm-up, measured runs, both connection
// counts), so no text repeats within a run or across the row's runs until
// the whole space has been used (a default `make bench` uses about 150,000);
// the harness's own probes take their texts from the same counter. A row
// whose counter shows that the space wrapped fails.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// ScenarioSemanticFresh is (j).
const ScenarioSemanticFresh = "semantic-fresh-local"

// MinSemanticFreshRPS: semantic hits with fresh wordings and the local
// model ≥ 2,000 req/s at each connection count (issue 16).
const MinSemanticFreshRPS = 2000

// freshStoredTemplate is how (j) stores its questions (topic, place).
const freshStoredTemplate = "what is the %s of %s?"

// freshTemplates are the rewordings of freshStoredTemplate that (j) asks.
// They are the ones that, measured on 2026-12-07 with USE-lite (int8) and
// the built-in verifier at its default threshold (0.867, cosine pre-filter
// 0.92, 5 candidates), were semantic hits for at least 98 % of the 200
// stored questions with a score at least 0.01 over the threshold, and for
// which no other stored question scored within 0.01 of it (a wrong hit
// would be a defect, not a number). freshWordingCheck asks every one of
// them at the start of each (j) and fails the row otherwise.
//
// Rejected then (hits for most questions, or none): every opener tried
// ("hi, ", "hello, ", "hey, ", "quick question: ", "excuse me, ", "sorry, ",
// "so, ", "please, ", "one question: ", …), every thanks or please closer
// ("thanks", "thank you", "cheers", "please", …), and the reframings "can
// you tell me the …", "do you know the …", "tell me the … .", "i'd like to
// know the … .", "which is the …", "name the … .": USE-lite's cosine with
// the stored question falls under the pre-filter or the verifier's cosine
// steps. The accepted rewordings add or move an adverb or contract "what
// is". "what is the %s of %s" (no question mark) is left out: it has the
// stored question's wording key, so it is served by the exact-wording rule,
// not by a comparison of meanings.
var freshTemplates = []string{
	"what's the %s of %s?",
	"what is the %s of %s exactly?",
	"what is the %s of %s, exactly?",
	"what is the %s of %s? exactly",
	"what is the %s of %s? then",
	"what is the %s of %s? actually",
}

// freshCaseBits is how many leading letters a case pattern may leave in
// lower case in the upper-cased text; with at most that many lower-case
// letters, a text of at least 2 × freshCaseBits letters stays mostly upper
// case (the verifier's shouting rule: no letter case marks a name).
const freshCaseBits = 10

// freshMinTemplateHits is the share of (template, question) pairs that must
// be semantic hits in freshWordingCheck.
const freshMinTemplateHits = 0.98

// freshQuestion is one stored question.
type freshQuestion struct{ topic, place string }

// freshQuestions are the stored questions, in semanticPrompts' order.
func freshQuestions() []freshQuestion {
	var qs []freshQuestion
	for _, place := range semanticPlaces {
		for _, topic := range semanticTopics {
			qs = append(qs, freshQuestion{topic, place})
		}
	}
	return qs
}

func (q freshQuestion) stored() string { return fmt.Sprintf(freshStoredTemplate, q.topic, q.place) }

// freshSpace enumerates the wordings of (j): texts (every template of
// every question, lower case) × case patterns 0 … cases − 1, index n of the
// enumeration being text i mod len(texts) in pattern i div len(texts),
// where i = n × stride mod size.
type freshSpace struct {
	texts  []string
	owner  []int // the index of the stored question each text rewords
	cases  int64 // case patterns: 2^freshCaseBits
	size   int64 // len(texts) × cases
	stride int64 // coprime to size: n ↦ n × stride mod size is a bijection
}

// newFreshSpace builds the space of qs and templates.
func newFreshSpace(qs []freshQuestion, templates []string) freshSpace {
	s := freshSpace{cases: 1 << freshCaseBits}
	for _, t := range templates {
		for i, q := range qs {
			s.texts = append(s.texts, fmt.Sprintf(t, q.topic, q.place))
			s.owner = append(s.owner, i)
		}
	}
	s.size = int64(len(s.texts)) * s.cases
	s.stride = coprimeNear(s.size, s.size*618/1000)
	return s
}

// coprimeNear returns the first number from near up that is coprime to n
// (near ≥ 1).
func coprimeNear(n, near int64) int64 {
	s := max(near, 1)
	for gcd(s, n) != 1 {
		s++
	}
	return s
}

func gcd(a, b int64) int64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// at returns wording n (0 ≤ n < size) and the stored question it rewords.
func (s freshSpace) at(n int64) (text string, owner int) {
	i := n % s.size * s.stride % s.size
	t := i % int64(len(s.texts))
	return applyCase(s.texts[t], i/int64(len(s.texts))), s.owner[t]
}

// applyCase returns the lower-case text upper-cased but for its k-th letter
// (k from 0) wherever bit k of pattern is set; the Lua script does the
// same.
func applyCase(text string, pattern int64) string {
	b := []byte(text)
	k := 0
	for i, c := range b {
		if 'a' <= c && c <= 'z' {
			if k >= 63 || pattern>>k&1 == 0 {
				b[i] = c - 'a' + 'A'
			}
			k++
		}
	}
	return string(b)
}

// freshCounter is the state file the wrk script and the harness share: how
// many wordings of the space have been used.
type freshCounter string

func (f freshCounter) read() (int64, error) {
	b, err := os.ReadFile(string(f))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("wording counter %s: %w", f, err)
	}
	return n, nil
}

func (f freshCounter) write(n int64) error {
	return os.WriteFile(string(f), []byte(strconv.FormatInt(n, 10)+"\n"), 0o644)
}

// take returns the next k wordings (and their questions) and advances the
// counter; it fails once the space is used up.
func (f freshCounter) take(s freshSpace, k int) ([]string, []int, error) {
	n, err := f.read()
	if err != nil {
		return nil, nil, err
	}
	if n+int64(k) > s.size {
		return nil, nil, fmt.Errorf("the wording space (%d) is used up: %d used", s.size, n)
	}
	texts, owners := make([]string, k), make([]int, k)
	for j := range k {
		texts[j], owners[j] = s.at(n + int64(j))
	}
	return texts, owners, f.write(n + int64(k))
}

// FreshLuaScript returns the wrk script of (j): each request POSTs prefix +
// the next wording of s + suffix, continuing from the count in the state
// file counter (none: 0), which done() writes back. wrk -t1 is assumed
// (one thread keeps the count). wrk builds a thread's first request without
// sending it: that wording is counted and skipped, never sent twice. Texts must need no escaping in JSON
// (checkCasePrompt).
func FreshLuaScript(prefix, suffix string, s freshSpace, counter string) (string, error) {
	if len(s.texts) == 0 || s.cases < 1 || s.size != int64(len(s.texts))*s.cases || gcd(s.stride, s.size) != 1 {
		return "", errors.New("fresh script: an empty or inconsistent wording space")
	}
	for _, t := range s.texts {
		if err := checkCasePrompt(t); err != nil {
			return "", fmt.Errorf("fresh script: %w", err)
		}
	}
	first, _ := s.at(0)
	var b strings.Builder
	b.WriteString(LuaScript(prefix+first+suffix, nil))
	b.WriteString("-- each request: the next wording of the space, never one asked before\n")
	b.WriteString("texts = {\n")
	for _, t := range s.texts {
		fmt.Fprintf(&b, "  %s,\n", luaQuote(t))
	}
	b.WriteString("}\n")
	fmt.Fprintf(&b, "local prefix, suffix = %s, %s\n", luaQuote(prefix), luaQuote(suffix))
	fmt.Fprintf(&b, "local ntexts, size, stride, caseBits = %d, %d, %d, %d\n", len(s.texts), s.size, s.stride, freshCaseBits)
	fmt.Fprintf(&b, "local counter = %s\n", luaQuote(counter))
	b.WriteString(freshLuaBody)
	return b.String(), nil
}

// freshLuaBody is the enumeration of freshSpace.at in Lua (LuaJIT's
// doubles hold every product below 2^53: size × stride stays under it for
// the spaces used here). n is a global so that done() can read it from the
// thread.
const freshLuaBody = `local function readCount()
  local f = io.open(counter, "r")
  if not f then return 0 end
  local v = tonumber(f:read("*l"))
  f:close()
  return v or 0
end
local thread1
function setup(thread) thread1 = thread end
function init(args)
  n = readCount()
  i = n * stride % size
end
local upper, sub, floor, byte = string.upper, string.sub, math.floor, string.byte
local function cased(t, pattern)
  local out, k = {}, 0
  for p = 1, #t do
    local c = sub(t, p, p)
    local b = byte(c)
    if b >= 97 and b <= 122 then
      if k >= caseBits or pattern % 2 == 0 then c = upper(c) end
      if k < caseBits then pattern = floor(pattern / 2) end
      k = k + 1
    end
    out[p] = c
  end
  return table.concat(out)
end
request = function()
  local t = i % ntexts
  local v = cased(texts[t + 1], floor(i / ntexts))
  n = n + 1
  i = (i + stride) % size
  return wrk.format(nil, nil, nil, prefix .. v .. suffix)
end
function done(summary, latency, requests)
  local f = io.open(counter, "w")
  f:write(string.format("%d\n", thread1:get("n")))
  f:close()
end
`

// freshConfigYAML is edgecache's configuration for (j): llmsim at simURL
// as the model and nothing else; the semantic tier as shipped (the local
// embedder, from models/use-lite under the working directory or beside
// the binaries' directory, as for `make run`).
func freshConfigYAML(simURL string) string {
	return "# generated by edgebench run, scenario (j)\n" +
		"upstream:\n  url: " + yamlQuote(simURL) + "\n" +
		"# no semantic: section: the default (local) embedder and index, as shipped\n" + semanticRouteYAML
}

// checkLocalEmbedder fails unless edgecache's /readyz says the semantic
// tier embeds with the local model (USE-lite) and did not fall back.
func (r *runner) checkLocalEmbedder(ctx context.Context, adminURL string) error {
	a, err := getBody(ctx, r.client, adminURL+"/readyz")
	if err != nil {
		return err
	}
	var st struct {
		Embedder string `json:"embedder"`
		Fallback string `json:"embedder_fallback"`
	}
	if err := json.Unmarshal(a, &st); err != nil {
		return fmt.Errorf("edgecache's /readyz: %w", err)
	}
	if st.Fallback != "" || !strings.HasPrefix(st.Embedder, "use-lite") {
		return fmt.Errorf("edgecache does not embed with the local model (embedder %q, fallback %q): run `make model`, "+
			"and run edgebench from the project's root or with --bin beside models/", st.Embedder, st.Fallback)
	}
	return nil
}

// freshPrecheckSamples is how many wordings must each be a semantic hit
// before every measured run of (j).
const freshPrecheckSamples = 5

// scenarioSemanticFresh is (j).
func (r *runner) scenarioSemanticFresh(ctx context.Context) ([]Result, error) {
	_, url, adminURL, stop, err := r.semanticStack(ctx, "edgecache-fresh.yaml", freshConfigYAML)
	if err != nil {
		return nil, err
	}
	if err := r.checkLocalEmbedder(ctx, adminURL); err != nil {
		return nil, errors.Join(err, stop())
	}
	qs := freshQuestions()
	space := newFreshSpace(qs, freshTemplates)
	counter := freshCounter(filepath.Join(r.dir, "fresh-counter"))
	script, err := FreshLuaScript(semanticBodyPrefix, semanticBodySuffix, space, string(counter))
	if err != nil {
		return nil, errors.Join(err, stop())
	}
	scriptPath := filepath.Join(r.dir, "fresh.lua")
	if err := os.WriteFile(scriptPath, []byte(script), 0o644); err != nil {
		return nil, errors.Join(err, stop())
	}
	answers, err := r.primeFresh(ctx, url, qs)
	if err != nil {
		return nil, errors.Join(err, stop())
	}
	if err := r.freshWordingCheck(ctx, url, qs, answers); err != nil {
		return nil, errors.Join(err, stop())
	}
	check := func(ctx context.Context) error {
		texts, owners, err := counter.take(space, freshPrecheckSamples)
		if err != nil {
			return err
		}
		for j, v := range texts {
			if err := r.askFresh(ctx, url, v, answers, owners[j]); err != nil {
				return err
			}
		}
		return nil
	}
	rows := r.measure(ctx, ScenarioSemanticFresh, url, scriptPath, check, r.freshObserver(adminURL, counter, space))
	return rows, stop()
}

// answerContent is the assistant's text in a chat completion (llmsim's
// starts with "sim:" and a hash of the question it answered).
func answerContent(body []byte) (string, error) {
	var c struct {
		Choices []struct {
			Message struct {
				Content string `json:"content"`
			} `json:"message"`
		} `json:"choices"`
	}
	if err := json.Unmarshal(body, &c); err != nil || len(c.Choices) == 0 {
		return "", fmt.Errorf("not a chat completion: %.200s", body)
	}
	return c.Choices[0].Message.Content, nil
}

// primeFresh stores every question through edgecache at url and returns
// the answer each got, then waits until the indexer has caught up (the
// last question, reworded, is a semantic hit).
func (r *runner) primeFresh(ctx context.Context, url string, qs []freshQuestion) ([]string, error) {
	fmt.Fprintf(r.log, "edgebench: %s: storing %d questions through edgecache\n", scenarioLabel[ScenarioSemanticFresh], len(qs))
	answers := make([]string, len(qs))
	for i, q := range qs {
		a, err := r.postBody(ctx, url, semanticBody(q.stored()), false)
		if err != nil {
			return nil, fmt.Errorf("storing %q: %w", q.stored(), err)
		}
		if answers[i], err = answerContent(a.body); err != nil {
			return nil, err
		}
	}
	last := len(qs) - 1
	probe := fmt.Sprintf(freshTemplates[0], qs[last].topic, qs[last].place)
	const indexWait = 20 * time.Second
	deadline := time.Now().Add(indexWait)
	for {
		a, err := r.postCC(ctx, url, semanticBody(probe), "only-if-cached")
		if err != nil {
			return nil, err
		}
		if isSemanticHit(a.cacheStatus) {
			return answers, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no semantic hit within %s of storing %d questions: %q answers Cache-Status %q "+
				"(see edgecache's log)", indexWait, len(qs), probe, a.cacheStatus)
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return nil, err
		}
	}
}

// askFresh asks text (a rewording of question owner) and fails unless it
// is a semantic hit with that question's answer.
func (r *runner) askFresh(ctx context.Context, url, text string, answers []string, owner int) error {
	a, err := r.postBody(ctx, url, semanticBody(text), false)
	if err != nil {
		return err
	}
	if !isSemanticHit(a.cacheStatus) {
		return fmt.Errorf("not a semantic hit: %q answers Cache-Status %q, want \"edgecache; hit; detail=semantic\"", text, a.cacheStatus)
	}
	got, err := answerContent(a.body)
	if err != nil {
		return err
	}
	if got != answers[owner] {
		return fmt.Errorf("WRONG semantic hit: %q was answered %.40q, the answer of another question (want %.40q)", text, got, answers[owner])
	}
	return nil
}

// freshWordingCheck asks every template of every question once, with
// Cache-Control: only-if-cached (a miss is not stored, so it cannot help
// the next), and fails on any hit with another question's answer, or when
// a template is a semantic hit for less than freshMinTemplateHits of the
// questions: the verifier as shipped must accept the row's wordings, and
// only for the right question.
func (r *runner) freshWordingCheck(ctx context.Context, url string, qs []freshQuestion, answers []string) error {
	var bad []string
	for _, t := range freshTemplates {
		hits := 0
		var missed []string
		for i, q := range qs {
			text := fmt.Sprintf(t, q.topic, q.place)
			a, err := r.postCC(ctx, url, semanticBody(text), "only-if-cached")
			if err != nil {
				return err
			}
			if !isSemanticHit(a.cacheStatus) {
				missed = append(missed, text)
				continue
			}
			got, err := answerContent(a.body)
			if err != nil {
				return err
			}
			if got != answers[i] {
				return fmt.Errorf("WRONG semantic hit: %q was answered %.40q, not the answer of %q", text, got, q.stored())
			}
			hits++
		}
		share := float64(hits) / float64(len(qs))
		fmt.Fprintf(r.log, "edgebench: %s: template %q: %d of %d questions semantic hits\n",
			scenarioLabel[ScenarioSemanticFresh], t, hits, len(qs))
		if share < freshMinTemplateHits {
			bad = append(bad, fmt.Sprintf("%q: %s (e.g. %q missed)", t, pct(share), missed[0]))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("the verifier no longer accepts these wordings for ≥ %.0f %% of the questions: %s",
			freshMinTemplateHits*100, strings.Join(bad, "; "))
	}
	return nil
}

// embedCounts are edgecache_embed_texts_total's two series.
type embedCounts struct{ computed, memo float64 }

// parseEmbedTexts reads edgecache_embed_texts_total from /metrics text.
func parseEmbedTexts(text []byte) (embedCounts, error) {
	var c embedCounts
	seen := false
	for _, line := range strings.Split(string(text), "\n") {
		name, l, v, ok := parseMetricLine(line)
		if !ok || name != "edgecache_embed_texts_total" {
			continue
		}
		seen = true
		switch l["result"] {
		case "computed":
			c.computed += v
		case "memo":
			c.memo += v
		}
	}
	if !seen {
		return c, errors.New("edgecache's /metrics has no edgecache_embed_texts_total")
	}
	return c, nil
}

// freshSnapshot is what (j) reads before and after a measured run.
type freshSnapshot struct {
	lookups lookupCounts
	embed   embedCounts
	used    int64 // the wording counter
}

func (r *runner) freshSnapshot(ctx context.Context, adminURL string, counter freshCounter) (freshSnapshot, error) {
	var s freshSnapshot
	text, err := getBody(ctx, r.client, adminURL+"/metrics")
	if err != nil {
		return s, err
	}
	if s.lookups, err = lookupsOf(text); err != nil {
		return s, err
	}
	if s.embed, err = parseEmbedTexts(text); err != nil {
		return s, err
	}
	s.used, err = counter.read()
	return s, err
}

// freshObserver fills in (j)'s row: the semantic-hit share and the texts
// the local model embedded per request, from edgecache's counters; it
// fails the row under MinSemanticHitShare, when the wrk script did not
// count its wordings, or when the space wrapped.
func (r *runner) freshObserver(adminURL string, counter freshCounter, space freshSpace) observer {
	return func(ctx context.Context) (func(context.Context, *Result) error, error) {
		before, err := r.freshSnapshot(ctx, adminURL, counter)
		if err != nil {
			return nil, err
		}
		return func(ctx context.Context, row *Result) error {
			after, err := r.freshSnapshot(ctx, adminURL, counter)
			if err != nil {
				return err
			}
			label := scenarioLabel[row.Scenario]
			if used := after.used - before.used; used < row.Requests {
				return fmt.Errorf("the wrk script counted %d wordings for %d requests: its counter %s was not written", used, row.Requests, counter)
			}
			if after.used > space.size {
				return fmt.Errorf("the wording space wrapped: %d wordings used of %d, so some repeated", after.used, space.size)
			}
			computed, memo := after.embed.computed-before.embed.computed, after.embed.memo-before.embed.memo
			if row.Requests > 0 {
				per := computed / float64(row.Requests)
				row.EmbeddingsPerRequest = &per
			}
			d := after.lookups.sub(before.lookups)
			row.SemanticHitShare = semanticHitShare(d, row.Requests)
			fmt.Fprintf(r.log, "edgebench: %s @%d: %d requests: %.0f texts embedded by the local model, %.0f from the memo; "+
				"semantic hits %.0f, other semantic lookups %.0f, exact hits %.0f: %s semantic hits; %d of %d wordings used\n",
				label, row.Conns, row.Requests, computed, memo, d.semanticHit, d.semanticOther, d.exactHit,
				pct(row.SemanticHitShare), after.used, space.size)
			return checkHitShare(d, *row)
		}, nil
	}
}

// semanticFreshTargets is the goal of (j) at each count, when the results
// have its rows.
func semanticFreshTargets(rs []Result, conns []int) []Target {
	if !hasScenario(rs, ScenarioSemanticFresh) {
		return nil
	}
	return rpsTargets(rs, conns, ScenarioSemanticFresh, "semantic hits, fresh wordings, local model", MinSemanticFreshRPS)
}
