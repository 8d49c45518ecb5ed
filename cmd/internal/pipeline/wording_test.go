package pipeline

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgecache/edgecache/cache/semantic"
	"github.com/edgecache/edgecache/cache/semantic/verify"
	"github.com/edgecache/edgecache/cmd/internal/config"
	"github.com/edgecache/edgecache/embed"
	uselite "github.com/edgecache/edgecache/embed/local"
)

var (
	useLiteOnce sync.Once
	useLite     *uselite.Model
	useLiteErr  error
)

// loadUseLite loads the real USE-lite model from models/use-lite at the
// repository root (make model puts it there; EDGECACHE_MODEL_DIR
// overrides it).
func loadUseLite(t *testing.T) *uselite.Model {
	t.Helper()
	dir := os.Getenv("EDGECACHE_MODEL_DIR")
	if dir == "" {
		wd, err := os.Getwd()
		if err != nil {
			t.Fatal(err)
		}
		for d := wd; filepath.Dir(d) != d; d = filepath.Dir(d) {
			if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
				dir = filepath.Join(d, "models", "use-lite")
				break
			}
		}
	}
	useLiteOnce.Do(func() { useLite, useLiteErr = uselite.Load(dir) })
	if useLiteErr != nil {
		t.Fatalf("the USE-lite model (run make model): %v", useLiteErr)
	}
	return useLite
}

// newUseLiteEdge is a semantic route at the defaults the server uses with
// USE-lite: its verifier, threshold, candidates and pre-filter, and the
// verifier's wording rule when wording is set.
func newUseLiteEdge(t *testing.T, wording bool) (*edge, *uselite.Model) {
	t.Helper()
	m := loadUseLite(t)
	idx, err := semantic.NewEmbedded(semantic.EmbeddedConfig{Dim: m.Dim()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { idx.Close() })
	v := verify.NewFor(m.Name())
	cfg := &SemanticConfig{Embedder: m, Index: idx, Verifier: v,
		DefaultThreshold: verify.DefaultThreshold(m.Name()), Candidates: verify.Candidates, MinCosine: v.MinCosine}
	if wording {
		cfg.Wording = verify.AppendWordingKey
	}
	e := newEdge(t, edgeOpts{
		routes: []config.Route{{Name: "chat", Path: "/v1/chat/completions", Cache: config.CachePolicy{
			Mode: config.ModeSemantic}}},
		semantic: cfg,
	})
	return e, m
}

// sameWordingUnderPrefilter are prompts USE-lite embeds under the
// verifier's pre-filter (0.92 at the default threshold) from the prompt
// stored, though only case, spacing or edge punctuation differ: the
// verifier takes each for the stored prompt.
var sameWordingUnderPrefilter = [][2]string{
	{"What is AI?", "WHAT IS AI"}, // 0.910
	{"hello", "HELLO!!!"},         // 0.856
	{"  Why is ISRO very successful?  ", `"Why is ISRO very successful?"`}, // 0.368
}

// TestSemanticSameWordingUnderPrefilter: a stored prompt worded as the
// query is a semantic hit whatever cosine USE-lite gives the pair, with
// that cosine as the similarity; before the wording lookup the pre-filter
// dropped it and the query went upstream. It stays within its tenant.
func TestSemanticSameWordingUnderPrefilter(t *testing.T) {
	e, m := newUseLiteEdge(t, true)
	minCos := verify.NewFor(m.Name()).MinCosine(verify.DefaultThreshold(m.Name()))
	for _, p := range sameWordingUnderPrefilter {
		cos := cosine(t, m, p[0], p[1])
		if cos >= minCos {
			t.Fatalf("%q, %q: cosine %.4f is not under the pre-filter %.2f: the test no longer tests it", p[0], p[1], cos, minCos)
		}
		seed := e.post("/v1/chat/completions", chat(p[0]))
		if seed.status != 200 {
			t.Fatal(seed.status)
		}
		e.waitIndexed()
		r := e.post("/v1/chat/completions", chat(p[1]))
		if !strings.HasPrefix(r.header.Get("Cache-Status"), "edgecache; hit; detail=semantic") {
			t.Errorf("%q stored, %q asked (cosine %.4f): %q, want a semantic hit", p[0], p[1], cos, r.header.Get("Cache-Status"))
			continue
		}
		if content(t, r.body) != content(t, seed.body) {
			t.Errorf("%q: served another answer", p[1])
		}
		if sim, _ := strconv.ParseFloat(r.header.Get("X-Edgecache-Similarity"), 32); sim > float64(cos)+1e-3 || sim < float64(cos)-1e-3 {
			t.Errorf("%q: X-Edgecache-Similarity %v, want the pair's cosine %.4f", p[1], sim, cos)
		}
		other := e.post("/v1/chat/completions", chat(p[1]), "Authorization", "Bearer sk-other")
		if strings.Contains(other.header.Get("Cache-Status"), "semantic") {
			t.Errorf("%q from another tenant: %q, want a miss", p[1], other.header.Get("Cache-Status"))
		}
	}
	if r := e.post("/v1/chat/completions", chat("What is AI used for?")); strings.Contains(r.header.Get("Cache-Status"), "semantic") {
		t.Errorf("another wording: %q, want a miss", r.header.Get("Cache-Status"))
	}
}

// TestSemanticPrefilterAloneLosesSameWording is the failure the wording
// lookup fixes: by cosine alone, the pre-filter drops these pairs.
func TestSemanticPrefilterAloneLosesSameWording(t *testing.T) {
	e, _ := newUseLiteEdge(t, false)
	p := sameWordingUnderPrefilter[0]
	e.post("/v1/chat/completions", chat(p[0]))
	e.waitIndexed()
	if r := e.post("/v1/chat/completions", chat(p[1])); strings.Contains(r.header.Get("Cache-Status"), "hit") {
		t.Errorf("%q: %q; the pre-filter no longer drops it, so TestSemanticSameWordingUnderPrefilter tests nothing", p[1], r.header.Get("Cache-Status"))
	}
}

func cosine(t *testing.T, e embed.Embedder, a, b string) float32 {
	t.Helper()
	vs, err := e.Embed(context.Background(), []string{a, b})
	if err != nil {
		t.Fatal(err)
	}
	return embed.Dot(vs[0], vs[1])
}

func TestWordingsBudgetAndExpiry(t *testing.T) {
	now := time.Unix(1e9, 0)
	later := now.Add(time.Hour)
	one := (&worded{key: "k0", text: "t0"}).cost()
	w := newWordings(3 * one)
	id := func(i byte) wordingID { return wordingID{i} }
	for i := range byte(3) {
		w.put(id(i), "k"+string('0'+rune(i)), "t"+string('0'+rune(i)), later)
	}
	if _, _, ok := w.get(id(0), now); !ok { // now the most recently used
		t.Fatal("entry 0 missing")
	}
	w.put(id(3), "k3", "t3", later)
	if _, _, ok := w.get(id(1), now); ok {
		t.Error("over budget, the least recently used entry (1) was kept")
	}
	for _, i := range []byte{0, 2, 3} {
		if k, _, ok := w.get(id(i), now); !ok || k != "k"+string('0'+rune(i)) {
			t.Errorf("entry %d: %q %v", i, k, ok)
		}
	}
	w.put(id(2), "k9", "t9", later)
	if k, text, _ := w.get(id(2), now); k != "k9" || text != "t9" {
		t.Errorf("a newer prompt of the same wording: got %q %q", k, text)
	}
	if _, _, ok := w.get(id(3), later); ok {
		t.Error("an expired entry was returned")
	}
	if w.bytes != 2*one || len(w.byID) != 2 || w.lru.Len() != 2 {
		t.Errorf("accounting: %d bytes (want %d), %d ids, %d in the list", w.bytes, 2*one, len(w.byID), w.lru.Len())
	}
	w.put(id(7), "k7", strings.Repeat("x", int(3*one)), later)
	if _, _, ok := w.get(id(7), now); ok || len(w.byID) != 2 {
		t.Error("an entry over the whole budget was stored")
	}
}
