package verify_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"unicode"

	"github.com/edgecache/edgecache/cache/semantic/verify"
	"github.com/edgecache/edgecache/embed"
	"github.com/edgecache/edgecache/embed/lexical"
	"github.com/edgecache/edgecache/embed/local"
)

// TestSameWordingCosines measures the cosines the built-in embedders give
// prompts of the same wording (only letter case, white space and sentence
// punctuation at the edges of words differ), the pairs the verifier takes
// for the same prompt whatever their cosine: for each of the first n
// questions of qqp-dev.tsv (evaluation data outside the repository), the
// variants below, every pair of them. It only logs; it is what the README
// quotes, and it takes minutes, so it runs only when asked:
//
//	EDGECACHE_WORDING_N=3000 go test -count=1 -run TestSameWordingCosines -v ./cache/semantic/verify/
func TestSameWordingCosines(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("EDGECACHE_WORDING_N"))
	if n <= 0 || testing.Short() {
		t.Skip("set EDGECACHE_WORDING_N to the number of questions to measure")
	}
	questions := qqpQuestions(t, n)
	use, err := local.Load(repoModelDir(t))
	if err != nil {
		t.Fatal(err)
	}
	v := verify.New()
	var groups [][]variant
	for _, q := range questions {
		g := variants(q)
		for _, x := range g[1:] {
			if f := v.Extract(g[0].text, x.text, 0); f.Cosine != 1 {
				t.Fatalf("%s variant %q of %q is not worded the same", x.kind, x.text, g[0].text)
			}
		}
		groups = append(groups, g)
	}
	for _, e := range []embed.Embedder{use, lexical.New(0)} {
		measureWording(t, e, groups, verify.MinCosine(e.Name()))
	}
}

type variant struct{ kind, text string }

// variants are q and texts worded as q: case, end punctuation, edge
// punctuation removed, white space.
func variants(q string) []variant {
	const punct = "?!.,;:\"'()[]¿¡…«»“”‘’—–"
	bare := strings.TrimRight(q, punct+" ")
	var words []string
	for _, w := range strings.Fields(q) {
		if w = strings.Trim(w, punct); w != "" {
			words = append(words, w)
		}
	}
	title := []rune(strings.ToLower(q))
	for i, r := range title {
		if i == 0 || unicode.IsSpace(title[i-1]) {
			title[i] = unicode.ToUpper(r)
		}
	}
	return []variant{
		{"original", q},
		{"lower", strings.ToLower(q)},
		{"upper", strings.ToUpper(q)},
		{"title", string(title)},
		{"no end punct", bare},
		{"?", bare + "?"},
		{"!", bare + "!"},
		{".", bare + "."},
		{" ?", bare + " ?"},
		{"??", bare + "??"},
		{"?!", bare + "?!"},
		{"!!!", bare + "!!!"},
		{"...", bare + "..."},
		{"no edge punct", strings.Join(words, " ")},
		{"upper no edge punct", strings.ToUpper(strings.Join(words, " "))},
		{"double spaces", strings.Join(strings.Fields(q), "  ")},
		{"trailing space", q + " "},
		{"trailing newline", q + "\n"},
		{"padded", "  " + q + "  "},
		{"quoted", "\"" + q + "\""},
	}
}

func measureWording(t *testing.T, e embed.Embedder, groups [][]variant, prefilter float32) {
	var texts []string
	at := map[string]int{}
	for _, g := range groups {
		for _, x := range g {
			if _, ok := at[x.text]; !ok {
				at[x.text] = len(texts)
				texts = append(texts, x.text)
			}
		}
	}
	vecs := make([]embed.Vector, 0, len(texts))
	for i := 0; i < len(texts); i += 64 {
		vs, err := e.Embed(context.Background(), texts[i:min(i+64, len(texts))])
		if err != nil {
			t.Fatal(err)
		}
		vecs = append(vecs, vs...)
	}
	type pair struct {
		cos  float32
		a, b variant
	}
	var all []pair
	byKinds := map[string]float32{}
	below := 0
	for _, g := range groups {
		for i := range g {
			for j := i + 1; j < len(g); j++ {
				c := embed.Dot(vecs[at[g[i].text]], vecs[at[g[j].text]])
				all = append(all, pair{c, g[i], g[j]})
				k := g[i].kind + " / " + g[j].kind
				if m, ok := byKinds[k]; !ok || c < m {
					byKinds[k] = c
				}
				if c < prefilter {
					below++
				}
			}
		}
	}
	slices.SortFunc(all, func(x, y pair) int {
		switch {
		case x.cos < y.cos:
			return -1
		case x.cos > y.cos:
			return 1
		}
		return 0
	})
	q := func(p float64) float32 { return all[int(p*float64(len(all)-1))].cos }
	t.Logf("%s: %d questions, %d texts, %d same-wording pairs; cosine min %.4f, 0.1%% %.4f, 1%% %.4f, 5%% %.4f, median %.4f; under the pre-filter %.2f: %d (%.1f%%)",
		e.Name(), len(groups), len(texts), len(all), all[0].cos, q(0.001), q(0.01), q(0.05), q(0.5),
		prefilter, below, 100*float64(below)/float64(len(all)))
	kinds := make([]string, 0, len(byKinds))
	for k := range byKinds {
		kinds = append(kinds, k)
	}
	sort.Slice(kinds, func(i, j int) bool { return byKinds[kinds[i]] < byKinds[kinds[j]] })
	var b strings.Builder
	for _, k := range kinds[:min(12, len(kinds))] {
		fmt.Fprintf(&b, "\n  %.4f  %s", byKinds[k], k)
	}
	t.Logf("%s: lowest cosine per pair of variants:%s", e.Name(), b.String())
	b.Reset()
	for _, p := range all[:min(8, len(all))] {
		fmt.Fprintf(&b, "\n  %.4f  %q / %q", p.cos, p.a.text, p.b.text)
	}
	t.Logf("%s: lowest pairs:%s", e.Name(), b.String())
}

// qqpQuestions returns the first n distinct text_a of qqp-dev.tsv, found
// in shared/data above the working directory (EDGECACHE_QQP overrides it).
func qqpQuestions(t *testing.T, n int) []string {
	t.Helper()
	path := os.Getenv("EDGECACHE_QQP")
	wd, _ := os.Getwd()
	for d := wd; path == "" && filepath.Dir(d) != d; d = filepath.Dir(d) {
		if p := filepath.Join(d, "shared", "data", "qqp-dev.tsv"); fileExists(p) {
			path = p
		}
	}
	f, err := os.Open(path)
	if err != nil {
		t.Skipf("no QQP data (set EDGECACHE_QQP): %v", err)
	}
	defer f.Close()
	seen := map[string]bool{}
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for first := true; sc.Scan() && len(out) < n; first = false {
		fields := strings.Split(sc.Text(), "\t")
		if first || len(fields) != 3 || seen[fields[1]] {
			continue
		}
		seen[fields[1]] = true
		out = append(out, fields[1])
	}
	return out
}

// repoModelDir is models/use-lite at the repository root
// (EDGECACHE_MODEL_DIR overrides it).
func repoModelDir(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("EDGECACHE_MODEL_DIR"); d != "" {
		return d
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for d := wd; filepath.Dir(d) != d; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return filepath.Join(d, "models", "use-lite")
		}
	}
	t.Fatalf("no go.mod above %s", wd)
	return ""
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }
