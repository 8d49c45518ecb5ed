package local

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/edgecache/edgecache/embed"
)

// The model is large (28 MB of weights), so the tests share one load.
var (
	loadOnce  sync.Once
	loadedErr error
	cased     *Model // the TF.js reference behaviour
	lowered   *Model // DefaultOptions
)

// modelDir finds models/use-lite: EDGECACHE_MODEL_DIR, or the repository
// root (the directory of go.mod) above the working directory.
func modelDir(t testing.TB) string {
	t.Helper()
	if d := os.Getenv("EDGECACHE_MODEL_DIR"); d != "" {
		return d
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return filepath.Join(d, "models", "use-lite")
		}
		if filepath.Dir(d) == d {
			t.Fatalf("no go.mod above %s; set EDGECACHE_MODEL_DIR", wd)
		}
	}
}

// models returns the shared models, failing (not skipping) the test when the
// model files are missing.
func models(t testing.TB) (casedModel, defaultModel *Model) {
	t.Helper()
	dir := modelDir(t)
	if _, err := os.Stat(filepath.Join(dir, "model.json")); err != nil {
		t.Fatalf("model not found in %s: run `make model` (or set EDGECACHE_MODEL_DIR): %v", dir, err)
	}
	loadOnce.Do(func() {
		lowered, loadedErr = Load(dir)
		if loadedErr == nil {
			cased = lowered.WithOptions(Options{})
		}
	})
	if loadedErr != nil {
		t.Fatal(loadedErr)
	}
	return cased, lowered
}

// tokens returns the token ids of text.
func (m *Model) tokens(text string) []int {
	var sc tokenScratch
	ids := m.tok.encode(text, &sc, nil)
	out := make([]int, len(ids))
	for i, id := range ids {
		out[i] = int(id)
	}
	return out
}

func embedAll(t testing.TB, m *Model, texts ...string) []embed.Vector {
	t.Helper()
	vs, err := m.Embed(context.Background(), texts)
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) != len(texts) {
		t.Fatalf("got %d vectors for %d texts", len(vs), len(texts))
	}
	return vs
}

func checkUnit(t testing.TB, what string, v embed.Vector) {
	t.Helper()
	if len(v) != 512 {
		t.Fatalf("%s: %d values", what, len(v))
	}
	var s float64
	for _, x := range v {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			t.Fatalf("%s: non-finite value %v", what, x)
		}
		s += float64(x) * float64(x)
	}
	if math.Abs(s-1) > 1e-4 {
		t.Fatalf("%s: squared norm %v", what, s)
	}
}

// TestParity reproduces the reference numbers of SEMANTIC.md, computed with
// TF.js, on every matmul kernel this machine can run. They hold for the
// reference (cased) tokenisation.
func TestParity(t *testing.T) {
	m, _ := models(t)
	defer func(k int) { useKernel = k }(useKernel)
	for kern := kernelGeneric; kern <= bestKernel; kern++ {
		useKernel = kern
		t.Run(kernelName(kern), func(t *testing.T) {
			vs := embedAll(t, m,
				"How do I learn Python quickly?",
				"What is the fastest way to learn Python?",
				"How do I cook rice?",
				"hello world")
			for i, want := range []float64{0.9599, 0.3476, 0.1341} {
				got := float64(embed.Dot(vs[0], vs[i+1]))
				t.Logf("cos(0,%d) = %.6f", i+1, got)
				if math.Abs(got-want) > 0.00005 {
					t.Errorf("cos(0,%d) = %.6f, want %.4f", i+1, got, want)
				}
			}
			for i, want := range []float64{-0.003334, -0.056710, -0.052770, -0.055012, -0.025656} {
				if got := float64(vs[0][i]); math.Abs(got-want) > 1e-6 {
					t.Errorf("v[%d] = %.7f, want %.6f", i, got, want)
				}
			}
			for _, v := range vs {
				checkUnit(t, "parity", v)
			}
		})
	}
}

// golden holds token ids (the first ones) and the first vector components
// that the TF.js reference (tfjs-models tokenizer + graph model on the CPU
// backend) gives for inputs with unknown symbols, control characters,
// surrogate pairs, NFKC rewrites, null-score and duplicate pieces, and more
// than 128 tokens.
var golden = []struct {
	text string
	nTok int // before the cut at 128
	ids  []int
	vec  [4]float32
}{
	{"", 0, []int{}, [4]float32{0.002355, -0.034875, 0.013102, -0.021176}},
	{" ", 2, []int{30, 30}, [4]float32{0.012216, -0.049313, 0.049306, 0.049046}},
	{"  leading and  double  spaces ", 10, []int{30, 30, 2428, 12, 30, 1991, 30, 1016, 7, 30}, [4]float32{0.030344, -0.058723, 0.058452, 0.041262}},
	{"a\x00b\x09c\x0ad\x0d\x07e", 9, []int{11, 0, 151, 0, 131, 0, 29, 0, 59}, [4]float32{-0.032803, 0.051575, 0.034804, -0.042909}},
	{"😀😀😀 smile 😀", 5, []int{30, 0, 3084, 30, 0}, [4]float32{0.056347, 0.041378, -0.026196, 0.002981}},
	{"Ünïcödé ﬁ ligature ㍻ full-width ＡＢＣ", 21, []int{30, 0, 85, 0, 131, 6781, 29, 1133, 1480, 30, 3994, 4129, 30, 0, 650, 24, 1580, 29, 128, 74, 2512}, [4]float32{-0.055229, -0.060691, -0.021076, -0.023324}},
	{"http://example.com: see :) ok :-( :(", 15, []int{290, 255, 773, 1563, 147, 6, 167, 57, 158, 658, 2303, 604, 24, 234, 4258}, [4]float32{-0.059749, -0.073830, 0.017176, 0.041418}},
	{"x", 1, []int{649}, [4]float32{0.045262, -0.047781, 0.048940, 0.048022}},
	{"HELLO World", 4, []int{341, 6740, 287, 1369}, [4]float32{-0.041707, -0.054622, 0.030543, -0.047219}},
	{"日本語のテキスト", 2, []int{30, 0}, [4]float32{-0.032406, -0.039111, 0.049875, 0.039640}},
	{"Ελληνικά και русский", 16, []int{30, 0, 7970, 0, 30, 0, 7941, 7970, 30, 7976, 0, 7979, 7979, 0, 7955, 0}, [4]float32{0.018070, 0.025345, -0.042968, -0.051026}},
	{"\u200b\ufeffzero width", 5, []int{30, 0, 1175, 310, 7916}, [4]float32{0.045478, -0.051985, -0.037210, 0.005587}},
	{"cafe\u0301 vs café", 7, []int{976, 209, 1133, 3181, 976, 209, 1133}, [4]float32{-0.029362, 0.020259, -0.048773, 0.023025}},
	{strings.Repeat("The quick brown fox jumps over the lazy dog, again and again; ", 29) + "The quick brown fox jumps over the lazy dog, again and again;", 480, []int{34, 2280, 3744, 1394, 152, 2009, 7, 132, 9, 6266, 959, 8, 480, 12, 480, 138, 34, 2280, 3744, 1394, 152, 2009, 7, 132}, [4]float32{-0.057046, -0.065647, 0.037036, -0.032301}},
	{strings.Repeat("a", 500), 126, []int{30, 6865, 6865, 6865, 6865, 6865, 6865, 6865, 6865, 6865, 6865, 6865, 6865, 6865, 6865, 6865, 6865, 6865, 6865, 6865, 6865, 6865, 6865, 6865}, [4]float32{-0.054213, 0.023938, 0.032837, -0.048208}},
	{"What's 15% of 80?", 8, []int{379, 13, 7, 693, 388, 14, 2714, 54}, [4]float32{0.060932, 0.006140, -0.012453, 0.045729}},
	{"Translate 'good morning' to French.", 9, []int{4099, 2997, 220, 5628, 1453, 13, 10, 2724, 6}, [4]float32{-0.036757, -0.039529, 0.039862, -0.013899}},
	{"”5 ”5", 4, []int{30, 4464, 30, 4464}, [4]float32{0.014923, -0.046186, 0.052295, -0.028154}},
}

func TestGoldenReference(t *testing.T) {
	m, _ := models(t)
	for _, g := range golden {
		ids := m.tokens(g.text)
		if len(ids) != min(g.nTok, maxTokens) || !slices.Equal(ids[:len(g.ids)], g.ids) {
			t.Errorf("tokens(%.40q) = %v (%d), want %v… (%d)", g.text, ids, len(ids), g.ids, min(g.nTok, maxTokens))
		}
		v := embedAll(t, m, g.text)[0]
		checkUnit(t, g.text, v)
		for i, want := range g.vec {
			if math.Abs(float64(v[i]-want)) > 3e-6 {
				t.Errorf("embed(%.40q)[%d] = %.6f, want %.6f", g.text, i, v[i], want)
			}
		}
	}
}

// TestLowercase checks that DefaultOptions lower-cases and that the two
// behaviours carry different names.
func TestLowercase(t *testing.T) {
	c, l := models(t)
	if c.Name() == l.Name() || l.Name() != "use-lite-v1" || l.Dim() != 512 {
		t.Fatalf("names %q %q, dim %d", c.Name(), l.Name(), l.Dim())
	}
	if got, want := l.tokens("How do I learn Python?"), c.tokens("how do i learn python?"); !slices.Equal(got, want) {
		t.Fatalf("lower-cased tokens %v, want %v", got, want)
	}
	a := embedAll(t, l, "How do I learn Python quickly?")[0]
	b := embedAll(t, c.WithOptions(Options{Int8: l.opts.Int8}), "how do i learn python quickly?")[0]
	if d := embed.Dot(a, b); d < 0.99999 {
		t.Fatalf("lower-cased vector differs from the vector of the lower-cased text: cos %v", d)
	}
}

// TestBatchEqualsSingle checks that batching (including batches cut at
// maxRows tokens and at maxRows texts) does not change any vector.
// Both paths, float32 and int8.
func TestBatchEqualsSingle(t *testing.T) {
	for _, m := range bothPaths(t) {
		t.Run(pathName(m), func(t *testing.T) { testBatchEqualsSingle(t, m) })
	}
}

// bothPaths returns the default model on the float32 path and on the int8
// path.
func bothPaths(t testing.TB) []*Model {
	_, m := models(t)
	o := m.opts
	o.Int8 = !o.Int8
	if m.opts.Int8 {
		return []*Model{m.WithOptions(o), m}
	}
	return []*Model{m, m.WithOptions(o)}
}

func pathName(m *Model) string {
	if m.opts.Int8 {
		return "int8"
	}
	return "float32"
}

func testBatchEqualsSingle(t *testing.T, m *Model) {
	var texts []string
	for i := range 300 {
		switch i % 5 {
		case 0:
			texts = append(texts, "")
		case 1:
			texts = append(texts, strings.Repeat("word ", i))
		default:
			texts = append(texts, golden[i%len(golden)].text)
		}
	}
	batch := embedAll(t, m, texts...)
	for i, text := range texts {
		one := embedAll(t, m, text)[0]
		for j := range one {
			if math.Abs(float64(one[j]-batch[i][j])) > 1e-5 {
				t.Fatalf("text %d: batched[%d] = %v, alone %v", i, j, batch[i][j], one[j])
			}
		}
	}
}

// TestOddInputs: any string gives a unit vector, quickly.
func TestOddInputs(t *testing.T) {
	for _, m := range bothPaths(t) {
		t.Run(pathName(m), func(t *testing.T) { testOddInputs(t, m) })
	}
}

func testOddInputs(t *testing.T, m *Model) {
	odd := []string{
		"",
		" ",
		strings.Repeat(" ", 10000),
		strings.Repeat("😀", 2500), // 10 KB of emoji
		strings.Repeat("😀 ", 2500),
		"\x00\x01\x02\x1b[31m\x7f",
		string([]byte{0xff, 0xfe, 0xc3, 0x28, 0xe2, 0x82}), // invalid UTF-8
		strings.Repeat("a", 1<<20),
		strings.Repeat("ab cd ", 200000),
		"\ufdfa\ufdfa\ufdfa",           // NFKC expands each to 18 runes
		strings.Repeat("\u0301", 5000), // combining marks only
		"İstanbul ΣΊΣΥΦΟΣ",
	}
	vs := embedAll(t, m, odd...)
	for i, v := range vs {
		checkUnit(t, strings.ToValidUTF8(odd[i][:min(len(odd[i]), 20)], "?"), v)
	}
	if vs, err := m.Embed(context.Background(), nil); err != nil || len(vs) != 0 {
		t.Fatalf("Embed(nil) = %v, %v", vs, err)
	}
}

func TestContextCanceled(t *testing.T) {
	_, m := models(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := m.Embed(ctx, []string{"hello"})
	if !errors.Is(err, embed.ErrUnavailable) || !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want ErrUnavailable and context.Canceled", err)
	}
}

// countdownCtx reports cancellation after its Err has been asked n times.
type countdownCtx struct {
	context.Context
	n atomic.Int32
}

func (c *countdownCtx) Err() error {
	if c.n.Add(-1) < 0 {
		return context.Canceled
	}
	return nil
}

// TestContextBetweenTexts: Embed notices cancellation part way through.
func TestContextBetweenTexts(t *testing.T) {
	_, m := models(t)
	ctx := &countdownCtx{Context: context.Background()}
	ctx.n.Store(3)
	_, err := m.Embed(ctx, []string{"one", "two", "three", "four", "five"})
	if !errors.Is(err, embed.ErrUnavailable) || !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want ErrUnavailable and context.Canceled", err)
	}
}

// TestConcurrent runs Embed from several goroutines (run with -race).
func TestConcurrent(t *testing.T) {
	_, m := models(t)
	texts := []string{"How do I learn Python quickly?", "hello world", "", "What is the fastest way to learn Python?"}
	want := embedAll(t, m, texts...)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 5 {
				k := (g + i) % len(texts)
				v, err := embed.One(context.Background(), m, texts[k])
				if err != nil {
					t.Error(err)
					return
				}
				if d := embed.Dot(v, want[k]); d < 0.99999 {
					t.Errorf("goroutine %d: cos %v with the serial result", g, d)
				}
			}
		}()
	}
	wg.Wait()
}

func TestLoadErrors(t *testing.T) {
	if _, err := Load(t.TempDir()); err == nil || !strings.Contains(err.Error(), "make model") {
		t.Fatalf("Load of an empty directory: %v", err)
	}
	// A vocabulary of the wrong size is refused.
	dir := modelDir(t)
	tmp := t.TempDir()
	for _, name := range []string{"model.json", "group1-shard1of7", "group1-shard2of7", "group1-shard3of7", "group1-shard4of7", "group1-shard5of7", "group1-shard6of7", "group1-shard7of7"} {
		if err := os.Symlink(filepath.Join(dir, name), filepath.Join(tmp, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(tmp, "vocab.json"), []byte(`[["a", -1], ["b", null]]`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(tmp); err == nil || !strings.Contains(err.Error(), "vocabulary") {
		t.Fatalf("Load with a short vocabulary: %v", err)
	}
}
