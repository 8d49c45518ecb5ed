package app

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgecache/edgecache/cache/semantic"
	"github.com/edgecache/edgecache/cache/semantic/semantictest"
	"github.com/edgecache/edgecache/cmd/internal/llmsim"
)

// The acceptance criterion of the semantic tier these tests check with
// real parts: "Stopping the remote embedder or the vector store mid-load
// changes no status code." edgecache runs in-process (startEdgecache) in
// front of llmsim; the embedder is a second llmsim serving /v1/embeddings,
// the vector store the embedded index or semantictest's Qdrant stand-in.
// Part-way through a concurrent load of semantic hits, exact repeats and
// new prompts, the embedder or the stand-in is stopped (its port closed):
// every answer before and after is a 200 with the right text, semantic
// hits stop, exact hits go on, nothing hangs, and edgecache still shuts
// down promptly. The ...Hangs variants make the part accept calls and
// never answer instead.
//
// The embedder llmsim runs with EmbeddingFold, as edgebench's semantic
// scenario does: the letter-case variants of a prompt get the vector of the
// prompt, so a fresh variant is an exact miss and a semantic hit. Every
// variant sent is new, so no embedding memoised from an earlier request
// can make a hit after the embedder has gone.

// Sizes and limits of the outage tests. The phases end on outcomes, not
// on time alone (a loaded machine is slow, not wrong); the time limits
// only turn a hang into a failure.
const (
	outagePrompts      = 6  // prompts stored before the load
	outageWorkers      = 8  // concurrent clients
	outageMinBefore    = 16 // semantic hits seen before the stop, at least
	outageMinAfter     = 64 // requests started after the stop, at least
	outageBeforeFor    = 500 * time.Millisecond
	outageAfterFor     = time.Second
	outageSlowest      = 2 * time.Second  // no request may take longer
	outagePhaseTimeout = 60 * time.Second // a phase not over by then is stuck
	outageClientLimit  = 20 * time.Second // one request; a hang fails, it does not stall
	outageShutdown     = 10 * time.Second // edgecache's shutdown after the outage (its drain allows 30 s)
	outageEmbedModel   = "sim-embed-1"
)

// outagePromptTexts are the stored prompts: lower case, distinct words, at
// least 29 letters each (so random case variants do not repeat).
var outagePromptTexts = [outagePrompts]string{
	"can you tell me the capital of france?",
	"can you tell me the population of norway?",
	"can you tell me the official language of iceland?",
	"can you tell me the highest mountain of austria?",
	"can you tell me the national dish of hungary?",
	"can you tell me the longest river of portugal?",
}

// TestSemanticOutageRemoteEmbedder stops the remote embedder (an llmsim
// of its own) mid-load; the index is the embedded one.
func TestSemanticOutageRemoteEmbedder(t *testing.T) {
	o, embedder := startEmbedderOutage(t)
	embedCalls := embedder.Server.Stats()["/v1/embeddings"]
	rep := o.load(t, "the remote embedder", func() {
		if err := embedder.Close(); err != nil {
			t.Errorf("closing the embedder llmsim: %v", err)
		}
	})
	rep.check(t)
	if embedder.Server.Stats()["/v1/embeddings"] <= embedCalls {
		t.Errorf("the embedder received no /v1/embeddings call during the load: the semantic hits came from elsewhere")
	}
}

// TestSemanticOutageRemoteEmbedderHangs makes the remote embedder accept
// /v1/embeddings calls and never answer, mid-load: a host that is up but
// stuck, which costs the embed timeout rather than a refused connection.
func TestSemanticOutageRemoteEmbedderHangs(t *testing.T) {
	o, embedder := startEmbedderOutage(t)
	rep := o.load(t, "the remote embedder (hung)", func() {
		embedder.Server.SetFault(llmsim.Fault{Hang: true, Paths: []string{"/v1/embeddings"}})
	})
	rep.check(t)
}

// TestSemanticOutageQdrant stops the vector store (semantictest's Qdrant
// stand-in, a real gRPC server) mid-load; the embedder stays up.
func TestSemanticOutageQdrant(t *testing.T) {
	o, qd := startQdrantOutage(t)
	rep := o.load(t, "the Qdrant stand-in", qd.Stop)
	rep.check(t)
}

// TestSemanticOutageQdrantHangs makes the vector store accept calls and
// never answer, mid-load. The answers stored meanwhile queue up for the
// index; edgecache's shutdown afterwards must not wait for each of them
// to time out (newOutageEnv checks how long it takes).
func TestSemanticOutageQdrantHangs(t *testing.T) {
	o, qd := startQdrantOutage(t)
	rep := o.load(t, "the Qdrant stand-in (hung)", func() { qd.SetDelay(time.Hour) })
	rep.check(t)
}

// startEmbedderOutage starts an llmsim as the model, another as the remote
// embedder, and edgecache in front with the embedded index, and stores
// the prompts.
func startEmbedderOutage(t *testing.T) (*outageEnv, *llmsim.Running) {
	t.Helper()
	t.Setenv("EDGECACHE_QDRANT_ADDR", "") // the index is the embedded one here
	model := startOutageSim(t, llmsim.Config{})
	embedder := startOutageSim(t, llmsim.Config{EmbeddingFold: true})
	cfg := fmt.Sprintf(`# %s
semantic:
  embedder: remote
  remote: {url: %q, model: %q}
  index: embedded
routes:
  - {name: chat, path: /v1/chat/completions, cache: {mode: semantic}}
`, t.Name(), embedder.URL()+"/v1", outageEmbedModel)
	o := newOutageEnv(t, model, cfg)
	o.warm(t)
	return o, embedder
}

// startQdrantOutage starts semantictest's Qdrant stand-in, an llmsim as
// the model and the remote embedder, and edgecache in front with the
// Qdrant index, and stores the prompts.
func startQdrantOutage(t *testing.T) (*outageEnv, *semantictest.QdrantStandIn) {
	t.Helper()
	qd := semantictest.StartQdrantStandIn(t)
	// The stand-in, not a real Qdrant the environment may name.
	t.Setenv("EDGECACHE_QDRANT_ADDR", "")
	sim := startOutageSim(t, llmsim.Config{EmbeddingFold: true})
	const prefix = "outage_"
	cfg := fmt.Sprintf(`# %s
semantic:
  embedder: remote
  remote: {url: %q, model: %q}
  index: qdrant
  qdrant: {addr: %q, collection_prefix: %q}
routes:
  - {name: chat, path: /v1/chat/completions, cache: {mode: semantic}}
`, t.Name(), sim.URL()+"/v1", outageEmbedModel, qd.Addr(), prefix)
	o := newOutageEnv(t, sim, cfg)
	o.warm(t)
	// The hits came through the stand-in: it holds the stored prompts.
	collection := semantic.CollectionName(prefix, "remote:"+outageEmbedModel, llmsim.DefaultEmbeddingDims)
	if n := qd.PointCount(collection); n < outagePrompts {
		t.Fatalf("the Qdrant stand-in holds %d points in %s, want at least %d (is edgecache using it?)",
			n, collection, outagePrompts)
	}
	return o, qd
}

// startOutageSim starts an llmsim on a free loopback port, closed at
// cleanup (after edgecache, which is started later).
func startOutageSim(t *testing.T, cfg llmsim.Config) *llmsim.Running {
	t.Helper()
	sim, err := llmsim.Start(context.Background(), "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatalf("llmsim.Start: %v", err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	return sim
}

// outageEnv is edgecache in front of an llmsim, and what the test has
// sent it.
type outageEnv struct {
	data, admin string
	client      *http.Client

	mu     sync.Mutex
	used   map[string]bool // every prompt text sent
	family map[string]int  // answer marker (simMarker) of a text sent → prompt index; -1 for new prompts
}

func newOutageEnv(t *testing.T, model *llmsim.Running, config string) *outageEnv {
	t.Helper()
	path := filepath.Join(t.TempDir(), "edgecache.yaml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	// edgecache must shut down promptly after the outage: the cleanup
	// registered before startEdgecache's runs after it has returned.
	var stopping time.Time
	t.Cleanup(func() {
		if stopping.IsZero() {
			return
		}
		if took := time.Since(stopping); took > outageShutdown {
			t.Errorf("edgecache took %v to shut down after the outage, want under %v", took.Round(time.Millisecond), outageShutdown)
		} else {
			t.Logf("edgecache shut down in %v", took.Round(time.Millisecond))
		}
	})
	data, admin := startEdgecache(t, model.URL(), "--config", path)
	t.Cleanup(func() { stopping = time.Now() })
	tr := &http.Transport{MaxIdleConnsPerHost: 2 * outageWorkers}
	t.Cleanup(tr.CloseIdleConnections)
	return &outageEnv{
		data: data, admin: admin,
		client: &http.Client{Transport: tr, Timeout: outageClientLimit},
		used:   map[string]bool{}, family: map[string]int{},
	}
}

// Kinds of request in the load.
const (
	kindVariant = "variant" // a new case variant of a stored prompt
	kindRepeat  = "repeat"  // a stored prompt exactly as stored
	kindNew     = "new"     // a prompt never sent before
)

// outageResult is one request's outcome.
type outageResult struct {
	kind       string
	family     int // index of the stored prompt, -1 for new prompts
	text       string
	start, end time.Time
	afterStop  bool // started once the stop had returned
	status     int
	cs         string // Cache-Status
	answer     string // choices[0].message.content
	err        error
}

func (r outageResult) semanticHit() bool { return strings.Contains(r.cs, "detail=semantic") }

func (r outageResult) exactHit() bool {
	return strings.HasPrefix(r.cs, "edgecache; hit;") && !r.semanticHit()
}

func (r outageResult) took() time.Duration { return r.end.Sub(r.start) }

func (r outageResult) String() string {
	return fmt.Sprintf("%s %q: status %d, Cache-Status %q, %v, answer %.60q, err %v",
		r.kind, r.text, r.status, r.cs, r.took().Round(time.Millisecond), r.answer, r.err)
}

// variant returns a case variant of stored prompt i never sent before.
func (o *outageEnv) variant(i int, rng *rand.Rand) string {
	p := outagePromptTexts[i]
	for {
		b := []byte(p)
		for j, c := range b {
			if 'a' <= c && c <= 'z' && rng.IntN(2) == 1 {
				b[j] = c - 'a' + 'A'
			}
		}
		if v := string(b); v != p && o.claim(v, i) {
			return v
		}
	}
}

// claim records text as sent for prompt family (-1: a new prompt); it
// reports false if the text was sent before.
func (o *outageEnv) claim(text string, family int) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.used[text] {
		return false
	}
	o.used[text] = true
	o.family[simMarker(text)] = family
	return true
}

// familyOf returns the prompt family of the text whose answer starts with
// marker.
func (o *outageEnv) familyOf(marker string) (int, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	f, ok := o.family[marker]
	return f, ok
}

// post sends a chat completion asking text.
func (o *outageEnv) post(kind string, family int, text string) outageResult {
	r := outageResult{kind: kind, family: family, text: text}
	body, _ := json.Marshal(map[string]any{
		"model":    "sim-1",
		"messages": []map[string]string{{"role": "user", "content": text}},
	})
	r.start = time.Now()
	resp, err := o.client.Post(o.data+"/v1/chat/completions", "application/json", strings.NewReader(string(body)))
	if err != nil {
		r.err = err
		r.end = time.Now()
		return r
	}
	defer resp.Body.Close()
	r.status, r.cs = resp.StatusCode, resp.Header.Get("Cache-Status")
	b, err := io.ReadAll(resp.Body)
	r.end = time.Now()
	if err != nil {
		r.err = err
		return r
	}
	var answer struct {
		Choices []struct {
			Message struct {
				Role    string `json:"role"`
				Content string `json:"content"`
			} `json:"message"`
		} `json:"choices"`
	}
	if err := json.Unmarshal(b, &answer); err != nil {
		r.err = fmt.Errorf("answer %.200q: %w", b, err)
		return r
	}
	if len(answer.Choices) > 0 && answer.Choices[0].Message.Role == "assistant" {
		r.answer = answer.Choices[0].Message.Content
	}
	return r
}

// problem returns what is wrong with a response, or "": it must be a 200
// with an assistant answer, and the answer must be llmsim's to the text
// sent, or, for a semantic hit, to a text of the same prompt family
// stored earlier.
func (o *outageEnv) problem(r outageResult) string {
	switch {
	case r.err != nil:
		return "request failed: " + r.err.Error()
	case r.status != http.StatusOK:
		return fmt.Sprintf("status %d, want 200", r.status)
	case strings.TrimSpace(r.answer) == "":
		return "no assistant answer"
	}
	marker, _, _ := strings.Cut(r.answer, " ")
	if !r.semanticHit() {
		if want := simMarker(r.text); marker != want {
			return fmt.Sprintf("answer starts with %q, want llmsim's answer to the text sent (%q)", marker, want)
		}
		return ""
	}
	if f, ok := o.familyOf(marker); !ok || f != r.family || r.family < 0 {
		return fmt.Sprintf("semantic hit answers %q, which is not the answer to a variant of prompt %d", marker, r.family)
	}
	return ""
}

// mustPost sends text and fails the test unless the answer is right.
func (o *outageEnv) mustPost(t *testing.T, kind string, family int, text string) outageResult {
	t.Helper()
	r := o.post(kind, family, text)
	if p := o.problem(r); p != "" {
		t.Fatalf("%s: %s", r, p)
	}
	return r
}

// warm stores the prompts and waits until each is an exact hit and a
// fresh case variant of each is a semantic hit (answers are indexed in the
// background).
func (o *outageEnv) warm(t *testing.T) {
	t.Helper()
	o.wantReady(t, "before the load")
	for i, p := range outagePromptTexts {
		o.claim(p, i)
		if r := o.mustPost(t, kindRepeat, i, p); r.exactHit() || r.semanticHit() {
			t.Fatalf("first request for %q: Cache-Status %q, want a miss", p, r.cs)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	start := time.Now()
	deadline := start.Add(outagePhaseTimeout)
	polls := 0
	for i, p := range outagePromptTexts {
		for {
			polls++
			repeat := o.mustPost(t, kindRepeat, i, p)
			variant := o.mustPost(t, kindVariant, i, o.variant(i, rng))
			if repeat.exactHit() && variant.semanticHit() {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("prompt %d not served from the cache within %v: repeat %q, variant %q",
					i, outagePhaseTimeout, repeat.cs, variant.cs)
			}
			time.Sleep(20 * time.Millisecond) // waiting for the background indexer
		}
	}
	t.Logf("%d prompts stored; all served from the cache after %v (%d polls)",
		outagePrompts, time.Since(start).Round(time.Millisecond), polls)
}

// wantReady checks that /readyz answers 200: the semantic tier's
// dependencies are not the instance's readiness.
func (o *outageEnv) wantReady(t *testing.T, when string) {
	t.Helper()
	resp, err := o.client.Get(o.admin + "/readyz")
	if err != nil {
		t.Fatalf("/readyz %s: %v", when, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/readyz %s: %d %s, want 200", when, resp.StatusCode, b)
	}
}

// outageReport is the outcome of a load.
type outageReport struct {
	o                 *outageEnv
	what              string
	results           []outageResult
	stopStart, stopAt time.Time // when stop was called and returned
}

// load runs outageWorkers clients, each cycling through a case variant, an
// exact repeat and a new prompt, until at least outageMinBefore semantic
// hits were answered and outageBeforeFor passed; then calls stop, and
// goes on until at least outageMinAfter requests started after stop
// returned were answered and outageAfterFor passed.
func (o *outageEnv) load(t *testing.T, what string, stop func()) *outageReport {
	t.Helper()
	var (
		mu        sync.Mutex
		results   []outageResult
		semHits   atomic.Int64
		after     atomic.Int64 // answered, started after the stop
		stopped   atomic.Bool
		done      = make(chan struct{})
		wg        sync.WaitGroup
		newPrompt atomic.Int64
	)
	for w := range outageWorkers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 42))
			for n := 0; ; n++ {
				select {
				case <-done:
					return
				default:
				}
				family := rng.IntN(outagePrompts)
				var kind, text string
				switch n % 3 {
				case 0:
					kind, text = kindVariant, o.variant(family, rng)
				case 1:
					kind, text = kindRepeat, outagePromptTexts[family]
				default:
					kind, family = kindNew, -1
					text = fmt.Sprintf("new question %d during the outage test: what is %d times %d?",
						newPrompt.Add(1), w, n)
					o.claim(text, family)
				}
				afterStop := stopped.Load()
				r := o.post(kind, family, text)
				r.afterStop = afterStop
				if r.semanticHit() {
					semHits.Add(1)
				}
				if afterStop {
					after.Add(1)
				}
				mu.Lock()
				results = append(results, r)
				mu.Unlock()
			}
		})
	}
	finish := func() {
		close(done)
		wg.Wait()
	}
	waitFor := func(phase string, cond func() bool) {
		deadline := time.Now().Add(outagePhaseTimeout)
		for !cond() {
			if time.Now().After(deadline) {
				finish()
				t.Fatalf("%s: not over within %v (semantic hits so far %d, answered after the stop %d)",
					phase, outagePhaseTimeout, semHits.Load(), after.Load())
			}
			time.Sleep(10 * time.Millisecond) // polling the workers' counters
		}
	}
	begin := time.Now()
	waitFor("load before stopping "+what, func() bool {
		return time.Since(begin) >= outageBeforeFor && semHits.Load() >= outageMinBefore
	})
	rep := &outageReport{o: o, what: what, stopStart: time.Now()}
	stop()
	rep.stopAt = time.Now()
	stopped.Store(true)
	waitFor("load after stopping "+what, func() bool {
		return time.Since(rep.stopAt) >= outageAfterFor && after.Load() >= outageMinAfter
	})
	finish()
	rep.results = results
	o.wantReady(t, "after stopping "+what)
	return rep
}

// check asserts the criterion on the load's results and logs its numbers.
func (rep *outageReport) check(t *testing.T) {
	t.Helper()
	type tally struct{ n, semantic, exact, variants, repeats, news int }
	var before, inflight, after tally
	var slowest outageResult
	bad := 0
	for _, r := range rep.results {
		if p := rep.o.problem(r); p != "" {
			if bad++; bad <= 10 {
				t.Errorf("%s: %s", r, p)
			}
		}
		if r.took() > slowest.took() {
			slowest = r
		}
		if r.took() > outageSlowest {
			t.Errorf("%s: took longer than %v", r, outageSlowest)
		}
		tl := &inflight
		switch {
		case r.afterStop:
			tl = &after
		case r.end.Before(rep.stopStart):
			tl = &before
		}
		tl.n++
		switch {
		case r.semanticHit():
			tl.semantic++
		case r.exactHit():
			tl.exact++
		}
		switch r.kind {
		case kindVariant:
			tl.variants++
		case kindRepeat:
			tl.repeats++
			if !r.exactHit() {
				t.Errorf("%s: an exact repeat of a stored prompt, want an exact hit", r)
			}
		case kindNew:
			tl.news++
			if r.exactHit() || r.semanticHit() {
				t.Errorf("%s: a prompt never sent before, want a miss", r)
			}
		}
		if r.afterStop && r.semanticHit() {
			t.Errorf("%s: a semantic hit after %s was stopped", r, rep.what)
		}
	}
	if bad > 10 {
		t.Errorf("... and %d more bad answers", bad-10)
	}
	if before.semantic == 0 {
		t.Errorf("no semantic hit before %s was stopped: the test proves nothing", rep.what)
	}
	if after.variants == 0 || after.repeats == 0 || after.news == 0 {
		t.Errorf("after the stop: %d variants, %d repeats, %d new prompts; want some of each", after.variants, after.repeats, after.news)
	}
	durations := make([]time.Duration, 0, len(rep.results))
	for _, r := range rep.results {
		durations = append(durations, r.took())
	}
	slices.Sort(durations)
	p99 := time.Duration(0)
	if len(durations) > 0 {
		p99 = durations[len(durations)*99/100]
	}
	t.Logf("stopping %s took %v; %d requests (%d bad): before the stop %d (semantic hits %d, exact hits %d); "+
		"in flight at the stop %d (semantic hits %d); after the stop %d (semantic hits %d, exact hits %d of %d repeats, %d variants, %d new); "+
		"p99 %v, slowest %v (%s, %q)",
		rep.what, rep.stopAt.Sub(rep.stopStart).Round(time.Millisecond), len(rep.results), bad,
		before.n, before.semantic, before.exact, inflight.n, inflight.semantic,
		after.n, after.semantic, after.exact, after.repeats, after.variants, after.news,
		p99.Round(time.Millisecond), slowest.took().Round(time.Millisecond), slowest.kind, slowest.cs)
}
