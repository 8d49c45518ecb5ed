package pipeline

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgecache/edgecache/cache/semantic"
	"github.com/edgecache/edgecache/cmd/internal/config"
	"github.com/edgecache/edgecache/cmd/internal/llmsim"
	"github.com/edgecache/edgecache/embed"
	"github.com/edgecache/edgecache/embed/lexical"
)

// flaky wraps an embedder or index and fails on demand.
type flakyEmbedder struct {
	embed.Embedder
	fail atomic.Bool
}

func (f *flakyEmbedder) Embed(ctx context.Context, texts []string) ([]embed.Vector, error) {
	if f.fail.Load() {
		return nil, embed.ErrUnavailable
	}
	return f.Embedder.Embed(ctx, texts)
}

type flakyIndex struct {
	semantic.Index
	fail atomic.Bool
}

func (f *flakyIndex) Search(ctx context.Context, v []float32, fl semantic.Filter, k int, min float32) ([]semantic.Match, error) {
	if f.fail.Load() {
		return nil, semantic.ErrUnavailable
	}
	return f.Index.Search(ctx, v, fl, k, min)
}

// cosineScorer serves on cosine alone, so these tests exercise the
// pipeline's rules, not the verifier's calibration.
type cosineScorer struct{}

func (cosineScorer) Score(_, _ string, cos float32) (float32, string) { return cos, "" }

func newSemanticEdge(t *testing.T) (*edge, *flakyEmbedder, *flakyIndex) {
	t.Helper()
	return newSemanticEdgeWith(t, func(float32) float32 { return 0.5 })
}

// newSemanticEdgeWith is newSemanticEdge with the given pre-filter.
func newSemanticEdgeWith(t *testing.T, minCosine func(threshold float32) float32) (*edge, *flakyEmbedder, *flakyIndex) {
	t.Helper()
	idx, err := semantic.NewEmbedded(semantic.EmbeddedConfig{Dim: lexical.DefaultDim})
	if err != nil {
		t.Fatal(err)
	}
	fe := &flakyEmbedder{Embedder: lexical.New(0)}
	fi := &flakyIndex{Index: idx}
	t.Cleanup(func() { idx.Close() })
	e := newEdge(t, edgeOpts{
		// The degraded floor is set under the default (verify.DegradedFloor):
		// cosineScorer scores lexical cosines, not calibrated scores.
		routes: []config.Route{{Name: "chat", Path: "/v1/chat/completions", Cache: config.CachePolicy{
			Mode: config.ModeSemantic, Semantic: config.SemanticPolicy{Threshold: 0.8, Floor: 0.7}, DegradedFloor: 0.5}}},
		semantic: &SemanticConfig{Embedder: fe, Index: fi, Verifier: cosineScorer{}, MinCosine: minCosine},
	})
	return e, fe, fi
}

// waitIndexed waits until the semantic tier has written every queued point.
func (e *edge) waitIndexed() {
	e.t.Helper()
	e.settle()
	waitFor(e.t, func() bool { return e.p.sem.pending.Load() == 0 })
}

func TestSemanticHitAndIsolation(t *testing.T) {
	e, _, _ := newSemanticEdge(t)
	auth := []string{"Authorization", "Bearer sk-a"}
	seed := e.post("/v1/chat/completions", chat("How do I reset my password?"), auth...)
	if seed.status != 200 {
		t.Fatal(seed.status)
	}
	e.waitIndexed()
	r := e.post("/v1/chat/completions", chat("my password: how do I reset it"), auth...)
	if !strings.HasPrefix(r.header.Get("Cache-Status"), "edgecache; hit; detail=semantic") || r.header.Get("X-Edgecache-Similarity") == "" {
		t.Fatalf("paraphrase: %q sim %q", r.header.Get("Cache-Status"), r.header.Get("X-Edgecache-Similarity"))
	}
	if content(t, r.body) != content(t, seed.body) {
		t.Errorf("semantic hit served another answer")
	}
	para := "how do i reset my password"
	misses := map[string]struct {
		body string
		hdr  []string
	}{
		"other tenant":        {chat(para), []string{"Authorization", "Bearer sk-b"}},
		"other system prompt": {strings.Replace(chat(para), "Be brief.", "Be verbose.", 1), auth},
		"earlier turn":        {`{"model":"sim-1","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"hi"},{"role":"assistant","content":"hello"},{"role":"user","content":"how do i reset my password"}]}`, auth},
		"other model":         {strings.Replace(chat(para), "sim-1", "sim-2", 1), auth},
		"opted out":           {chat(para), append(auth, "X-Edgecache-Semantic", "off")},
		"stricter request":    {chat("password reset: how do I do it"), append(auth, "X-Edgecache-Min-Score", "0.999")}, // the lexical embedder reads para as the seed itself
		"unrelated":           {chat("What is the capital of France?"), auth},
	}
	for name, m := range misses {
		r := e.post("/v1/chat/completions", m.body, m.hdr...)
		if r.status != 200 || strings.Contains(r.header.Get("Cache-Status"), "semantic") {
			t.Errorf("%s: %d %q, want a miss", name, r.status, r.header.Get("Cache-Status"))
		}
	}
}

func TestSemanticFloorCannotBeLowered(t *testing.T) {
	e, _, _ := newSemanticEdge(t)
	rt := &Route{Name: "chat", Semantic: true, Threshold: 0.8, Floor: 0.7}
	for _, tt := range []struct {
		hdr  string
		want float32
	}{{"", 0.8}, {"0.95", 0.95}, {"0.75", 0.75}, {"0.1", 0.7}, {"junk", 0.8}, {"-1", 0.8}} {
		r := httptestRequest(tt.hdr)
		if got := e.p.sem.threshold(rt, r); got != tt.want {
			t.Errorf("X-Edgecache-Min-Score %q: threshold %v, want %v", tt.hdr, got, tt.want)
		}
	}
	noFloor := &Route{Name: "chat", Semantic: true, Threshold: 0.8}
	if got := e.p.sem.threshold(noFloor, httptestRequest("0.5")); got != 0.8 {
		t.Errorf("without a floor, a request lowered the threshold to %v", got)
	}
}

func TestSemanticFailuresAreExactOnly(t *testing.T) {
	e, fe, fi := newSemanticEdge(t)
	e.post("/v1/chat/completions", chat("What are your opening hours?"))
	e.waitIndexed()
	for name, breakIt := range map[string]func(bool){
		"embedder down": func(b bool) { fe.fail.Store(b) },
		"index down":    func(b bool) { fi.fail.Store(b) },
	} {
		breakIt(true)
		for i := range 10 {
			r := e.post("/v1/chat/completions", chat("what are your opening hours"))
			if r.status != 200 || strings.Contains(r.header.Get("Cache-Status"), "semantic") {
				t.Fatalf("%s #%d: %d %q", name, i, r.status, r.header.Get("Cache-Status"))
			}
			// exact hits still work
			if r := e.post("/v1/chat/completions", chat("What are your opening hours?")); !strings.Contains(r.header.Get("Cache-Status"), "hit") {
				t.Fatalf("%s: exact repeat %q", name, r.header.Get("Cache-Status"))
			}
		}
		breakIt(false)
	}
}

// TestSemanticPrefilterFollowsThreshold: the retrieval pre-filter is asked
// for the threshold each lookup uses, so a lower threshold (here the
// route's degraded floor, 0.5, under the route's 0.8) also searches
// wider. With a pre-filter fixed for the default threshold, the nearest
// answer the degraded floor allows would never be retrieved.
func TestSemanticPrefilterFollowsThreshold(t *testing.T) {
	var asked []float32
	var mu sync.Mutex
	e, _, _ := newSemanticEdgeWith(t, func(thr float32) float32 {
		mu.Lock()
		asked = append(asked, thr)
		mu.Unlock()
		return thr // cosineScorer scores the cosine: the lossless bound is the threshold itself
	})
	tail := func(n int) []float32 {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(asked[max(0, len(asked)-n):])
	}
	seed := e.post("/v1/chat/completions", chat("What are your opening hours?"))
	e.waitIndexed()

	if r := e.post("/v1/chat/completions", chat("What are your opening hours?!"), "X-Edgecache-Min-Score", "0.9"); !strings.Contains(r.header.Get("Cache-Status"), "semantic") {
		t.Fatalf("the seed in other punctuation: %q, want a semantic hit", r.header.Get("Cache-Status"))
	}
	if got := tail(1); !slices.Equal(got, []float32{0.9}) {
		t.Errorf("pre-filter asked for thresholds %v, want the request's 0.9", got)
	}

	// Lexical cosine of the seed and this query: 0.67, under the route's
	// threshold (0.8) and over the degraded floor (0.5).
	e.sim.Server.SetFault(llmsim.Fault{Status: 503})
	r := e.post("/v1/chat/completions", chat("your opening hours please"))
	if r.status != 200 || r.header.Get("X-Edgecache-Degraded") != "semantic-nearest" {
		t.Fatalf("upstream down: %d degraded %q %s, want the nearest semantic answer", r.status, r.header.Get("X-Edgecache-Degraded"), r.body)
	}
	if got := content(t, r.body); !strings.HasSuffix(got, "\n\n"+content(t, seed.body)) {
		t.Errorf("the degraded answer %q is not the seed's (after its notice)", got)
	}
	if got := tail(2); !slices.Equal(got, []float32{0.8, 0.5}) {
		t.Errorf("pre-filter asked for thresholds %v, want the route's 0.8, then the degraded floor 0.5", got)
	}
}

func httptestRequest(minScore string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", nil)
	if minScore != "" {
		r.Header.Set("X-Edgecache-Min-Score", minScore)
	}
	return r
}

// downIndex is a vector store that has gone away: every write blocks until
// release is closed or the write's context ends, then fails as
// unavailable.
type downIndex struct {
	semantic.Index
	release chan struct{}
	upserts atomic.Int64
}

func (d *downIndex) Upsert(ctx context.Context, _ semantic.Point) error {
	d.upserts.Add(1)
	select {
	case <-d.release:
	case <-ctx.Done():
	}
	return fmt.Errorf("index down: %w", semantic.ErrUnavailable)
}

// A vector store that is down or hangs when edgecache shuts down must not
// hold the drain: Close stops writing at the first write the store cannot
// take, and gives up at its deadline. (Before, the drain wrote every
// queued point, each waiting for its timeout: with a hung Qdrant, 1024
// queued points × the 50 ms search timeout held edgecache's shutdown past
// its 30 s drain budget.)
func TestSemanticCloseWithIndexDown(t *testing.T) {
	const queued = 10
	// setup stores queued answers: the first write hangs in the index, the
	// others wait in the queue.
	setup := func(t *testing.T) (*edge, *downIndex) {
		t.Helper()
		idx, err := semantic.NewEmbedded(semantic.EmbeddedConfig{Dim: lexical.DefaultDim})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { idx.Close() })
		di := &downIndex{Index: idx, release: make(chan struct{})}
		e := newEdge(t, edgeOpts{
			routes: []config.Route{{Name: "chat", Path: "/v1/chat/completions", Cache: config.CachePolicy{Mode: config.ModeSemantic}}},
			semantic: &SemanticConfig{Embedder: lexical.New(0), Index: di, Verifier: cosineScorer{},
				DefaultThreshold: 0.8, MinCosine: func(float32) float32 { return 0.5 }},
		})
		for i := range queued {
			if r := e.post("/v1/chat/completions", chat(fmt.Sprintf("question number %d", i))); r.status != 200 {
				t.Fatalf("request %d: %d", i, r.status)
			}
		}
		waitFor(t, func() bool { return e.p.sem.pending.Load() == queued && di.upserts.Load() == 1 })
		return e, di
	}
	wantDropped := func(t *testing.T, err error, cause error) {
		t.Helper()
		if want := fmt.Sprintf("%d queued index writes dropped", queued-2); !errors.Is(err, cause) || !strings.Contains(err.Error(), want) {
			t.Errorf("Close = %v, want an error wrapping %v saying %q", err, cause, want)
		}
	}

	t.Run("Hung", func(t *testing.T) {
		e, di := setup(t)
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		start := time.Now()
		err := e.p.Close(ctx)
		// A write's own timeout is 2 s: returning before proves the write
		// in flight was cancelled at the deadline.
		if took := time.Since(start); took > 1500*time.Millisecond {
			t.Errorf("Close with a 200ms deadline took %v", took)
		}
		if n := di.upserts.Load(); n != 1 {
			t.Errorf("%d writes reached the hung index, want 1 (the one in flight)", n)
		}
		if want := fmt.Sprintf("%d queued index writes dropped", queued-1); !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), want) {
			t.Errorf("Close = %v, want an error wrapping the deadline saying %q", err, want)
		}
	})

	t.Run("Down", func(t *testing.T) {
		e, di := setup(t)
		errc := make(chan error, 1)
		go func() { errc <- e.p.Close(context.Background()) }()
		waitFor(t, func() bool {
			select {
			case <-e.p.sem.stop:
				return true
			default:
				return false
			}
		})
		close(di.release) // the store now fails at once
		select {
		case err := <-errc:
			wantDropped(t, err, semantic.ErrUnavailable)
		case <-time.After(10 * time.Second):
			t.Fatal("Close did not return within 10s")
		}
		if n := di.upserts.Load(); n != 2 {
			t.Errorf("the drain sent %d writes to a down index, want 2 (the one in flight, then one that failed)", n)
		}
	})
}
