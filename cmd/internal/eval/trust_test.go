package eval

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgecache/edgecache/cache/semantic/verify"
	"github.com/edgecache/edgecache/embed"
	"github.com/edgecache/edgecache/embed/lexical"
)

// useLiteDir finds models/use-lite: EDGECACHE_MODEL_DIR, or the repository
// root (the directory of go.mod) above the working directory. It fails,
// not skips, without the model, as embed/local's tests do.
func useLiteDir(t *testing.T) string {
	t.Helper()
	d := os.Getenv("EDGECACHE_MODEL_DIR")
	if d == "" {
		wd, err := os.Getwd()
		if err != nil {
			t.Fatal(err)
		}
		for d = wd; ; d = filepath.Dir(d) {
			if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
				break
			}
			if filepath.Dir(d) == d {
				t.Fatalf("no go.mod above %s; set EDGECACHE_MODEL_DIR", wd)
			}
		}
		d = filepath.Join(d, "models", "use-lite")
	}
	if _, err := os.Stat(filepath.Join(d, "model.json")); err != nil {
		t.Fatalf("model not found in %s: run `make model` (or set EDGECACHE_MODEL_DIR): %v", d, err)
	}
	return d
}

// worded holds pairs whose texts differ only in case and sentence
// punctuation, which USE-lite embeds at cosines under its pre-filter
// (0.92 at the default threshold: "hello" against "HELLO!!!" is 0.856,
// "What is AI?" against "WHAT IS AI" 0.910), beside pairs that differ in
// one word and unrelated ones.
const worded = "label\ttext_a\ttext_b\n" +
	"1\thello\tHELLO!!!\n" +
	"1\tWhat is AI?\tWHAT IS AI\n" +
	"1\tHow do I learn Python quickly?\t\"how do I learn python quickly\"\n" +
	"1\tIs it safe?\tIS IT SAFE\n" +
	"0\tWrite a SQL query to find the maximum salary.\tWrite a SQL query to find the minimum salary.\n" +
	"1\tWhat is the fastest way to learn Python?\tHow do I learn Python fast?\n" +
	"0\tHow do I cook rice?\tHow do I cook pasta?\n" +
	"1\tHow tall is the Eiffel tower in Paris?\tZebra stripes: evolutionary purpose explained\n"

// TestSweepAgreesWithPlainRun: the sweep's row at the run's threshold is
// the plain run's headline, and a sweep does not change the plain run's
// rows or reasons, in every mode, with and without the verifier, with
// either embedder.
func TestSweepAgreesWithPlainRun(t *testing.T) {
	dir := useLiteDir(t)
	files := map[string]string{"synthetic": synthetic, "worded": worded}
	for _, emb := range []string{"lexical", "use-lite"} {
		for fname, content := range files {
			path := writeFile(t, fname+".tsv", content)
			for _, extra := range [][]string{
				nil,
				{"--mode", "pairwise"},
				{"--no-verify"},
				{"--threshold", "0.7"},
				{"--count", "own"},
			} {
				args := append([]string{"--pairs", path, "--embedder", emb, "--model-dir", dir, "--json"}, extra...)
				plain, _ := run(t, args...)
				swept, _ := run(t, append(args, "--sweep")...)
				var row *SweepRow
				for i := range swept.Sweep {
					if swept.Sweep[i].Threshold == plain.Threshold {
						row = &swept.Sweep[i]
					}
				}
				if row == nil {
					t.Errorf("%s %s %q: no sweep row at the threshold %v", emb, fname, extra, plain.Threshold)
					continue
				}
				if row.Hits != plain.Hits || row.Correct != plain.Correct || row.Precision != plain.Precision || row.Recall != plain.Recall ||
					row.JudgedShare != plain.JudgedShare || row.PrecisionLowerBound != plain.PrecisionLowerBound {
					t.Errorf("%s %s %q: sweep row %+v, plain headline %d hits %d correct %.4f %.4f judged %.4f bound %.4f",
						emb, fname, extra, *row, plain.Hits, plain.Correct, plain.Precision, plain.Recall, plain.JudgedShare, plain.PrecisionLowerBound)
				}
				if len(plain.Rows) != len(swept.Rows) {
					t.Fatalf("%s %s %q: %d rows, %d with --sweep", emb, fname, extra, len(plain.Rows), len(swept.Rows))
				}
				for i := range plain.Rows {
					if plain.Rows[i] != swept.Rows[i] {
						t.Errorf("%s %s %q: row %+v, with --sweep %+v", emb, fname, extra, plain.Rows[i], swept.Rows[i])
					}
				}
				if plain.AUC != swept.AUC || len(plain.Reasons) != len(swept.Reasons) {
					t.Errorf("%s %s %q: AUC %v reasons %v, with --sweep %v %v", emb, fname, extra, plain.AUC, plain.Reasons, swept.AUC, swept.Reasons)
				}
				for k, n := range plain.Reasons {
					if swept.Reasons[k] != n {
						t.Errorf("%s %s %q: reasons %v, with --sweep %v", emb, fname, extra, plain.Reasons, swept.Reasons)
					}
				}
			}
		}
	}
}

// TestSameWordingUnderPreFilter: texts worded the same are a hit at the
// default threshold even though USE-lite puts them under the pre-filter;
// the pre-filter used to drop them (the plain run missed what --sweep,
// retrieving down to its lowest threshold, counted).
func TestSameWordingUnderPreFilter(t *testing.T) {
	path := writeFile(t, "worded.tsv", worded)
	for _, mode := range []string{"cache", "pairwise"} {
		r, _ := run(t, "--pairs", path, "--model-dir", useLiteDir(t), "--embedder", "use-lite", "--json", "--mode", mode, "--count", "own")
		if r.Embedder == "lexical-v1" || r.MinCosine < 0.9 {
			t.Fatalf("embedder %s, min cosine %v: want USE-lite and its pre-filter", r.Embedder, r.MinCosine)
		}
		// The four worded pairs are right hits (before: 1 of them).
		if r.Correct < 4 {
			t.Errorf("%s: %d hits, %d correct, want at least the 4 worded pairs right", mode, r.Hits, r.Correct)
		}
	}
}

// TestRetrieveAddsSameWording: at the retrieval level, with vectors that
// put the texts far apart, a stored text worded as the query is a
// candidate whatever its cosine, and the verifier serves it.
func TestRetrieveAddsSameWording(t *testing.T) {
	pairs := []Pair{
		{Line: 1, Duplicate: true, A: "What is AI?", B: "WHAT IS AI"},
		{Line: 2, Duplicate: false, A: "What is ML?", B: "what is ai today"},
	}
	va := []embed.Vector{{1, 0, 0}, {0, 1, 0}}
	vb := []embed.Vector{{0, 0, 1}, {0, 0, 1}}
	sp := &spaces{a: []string{"s", "s"}, b: []string{"s", "s"}}
	ms, err := retrieve(context.Background(), pairs, va, vb, sp, "test", 0.9, 1, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if len(ms[0]) != 1 || ms[0][0].Key != "0" || ms[0][0].Score != 0 {
		t.Errorf("query 1 candidates %+v, want text_a 0 at cosine 0", ms[0])
	}
	if len(ms[1]) != 0 {
		t.Errorf("query 2 candidates %+v, want none", ms[1])
	}
	v := verify.New()
	outs := judgeAll(context.Background(), pairs, ms, v, false, 0.9, 1)
	if c := countAt(outs, verify.DefaultThreshold(verify.DefaultEmbedder), defOwn, false); c.Hits != 1 || c.Correct != 1 {
		t.Errorf("%+v, want the worded pair served", c)
	}
	// Under cosine alone it is no hit: the rule is the verifier's.
	outs = judgeAll(context.Background(), pairs, ms, v, true, 0.9, 1)
	if c := countAt(outs, 0.9, defOwn, false); c.Hits != 0 {
		t.Errorf("cosine only: %+v, want no hit", c)
	}
}

// TestWordingKeyIsTheVerifiers: two texts have the same wordingKey exactly
// when the verifier takes them for the same prompt (cosine read as 1).
func TestWordingKeyIsTheVerifiers(t *testing.T) {
	v := verify.New()
	for _, tc := range [][2]string{
		{"How do I reset my password?", "how do i reset my password"},
		{"What is AI?", "WHAT IS AI"},
		{"hello", "HELLO!!!"},
		{"\"quoted\" (text)", "quoted text"},
		{"C++ or C#?", "c++ or c#"},
		{"C++ or C#?", "c or c"},
		{"-5 degrees", "5 degrees"},
		{"don't stop", "dont stop"},
		{"Node.js", "node js"},
		{"a ... b", "a b"},
		{"ſtraße", "STRASSE"},
		{"Straße", "strasse"},
		{"Kelvin K", "kelvin k"},
		{"如何重置我的密码？", "如何重置我的密码"},
		{"如何重置我的密码", "今天北京的天气怎么样"},
		{"one two", "one  two three"},
		{"", "?!"},
	} {
		same := verify.WordingKey(tc[0]) == verify.WordingKey(tc[1])
		f := v.Extract(tc[0], tc[1], 0.5)
		if same != (f.Cosine == 1) {
			t.Errorf("%q, %q: wordingKey same %v, verifier cosine %v", tc[0], tc[1], same, f.Cosine)
		}
	}
}

// unjudged is a file whose hits the labels mostly do not judge: queries 2
// and 3 hit the text_a of another pair that no label relates to them,
// only query 4's hit (its own text_a) is judged.
const unjudged = "1\tHow do I bake sourdough bread at home?\tZebra stripes evolutionary purpose explained\n" +
	"0\tWhat is the capital city of Mongolia?\thow do I bake sourdough bread at home quickly\n" +
	"0\tWhich telescope should an amateur astronomer buy?\twhat is the capital city of Mongolia today\n" +
	"1\tWhy do cats purr when they are happy?\twhy do cats purr when they are happy\n"

func TestJudgedShareAndWarning(t *testing.T) {
	path := writeFile(t, "unjudged.tsv", unjudged)
	args := []string{"--pairs", path, "--embedder", "lexical", "--no-verify", "--threshold", "0.5"}
	r, stderr := run(t, append(args, "--json", "--sweep")...)
	// The judged headline says 1.0 on 1 hit; 3 hits were served.
	if r.Hits != 1 || r.Correct != 1 || !near(r.Precision, 1) || !near(r.JudgedShare, 1.0/3) || !near(r.PrecisionLowerBound, 1.0/3) {
		t.Errorf("hits %d correct %d precision %v judged share %v lower bound %v, want 1 1 1 0.3333 0.3333",
			r.Hits, r.Correct, r.Precision, r.JudgedShare, r.PrecisionLowerBound)
	}
	if len(r.Warnings) != 1 || !strings.Contains(r.Warnings[0], "33.3 % of hits are judged") || !strings.Contains(r.Warnings[0], "precision_lower_bound") {
		t.Errorf("warnings %q", r.Warnings)
	}
	if !strings.Contains(stderr, "warning: only 33.3 % of hits") {
		t.Errorf("stderr lacks the warning: %q", stderr)
	}
	for _, row := range r.Rows {
		want := 1.0 // own text_a and same text judge every hit
		if strings.HasPrefix(row.Count, "known") || strings.HasPrefix(row.Count, "judged") {
			want = 1.0 / 3
		}
		if !near(row.JudgedShare, want) || !near(row.PrecisionLowerBound, 1.0/3) {
			t.Errorf("row %+v: want judged share %.4f, lower bound 0.3333", row, want)
		}
	}
	for _, row := range r.Sweep {
		if row.Threshold == r.Threshold && (row.JudgedShare != r.JudgedShare || row.PrecisionLowerBound != r.PrecisionLowerBound) {
			t.Errorf("sweep row %+v disagrees with the headline", row)
		}
	}

	var stdout, errb bytes.Buffer
	if err := Main(context.Background(), args, &stdout, &errb); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"judged share", "precision lower bound", "0.3333", "warning: only 33.3 %"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, stdout.String())
		}
	}

	// Every hit judged: no warning; pairwise judges every hit.
	r, stderr = run(t, "--pairs", writeFile(t, "s.tsv", synthetic), "--embedder", "lexical", "--json")
	if len(r.Warnings) != 0 || strings.Contains(stderr, "warning") || !near(r.JudgedShare, 1) || r.PrecisionLowerBound != r.Precision {
		t.Errorf("synthetic: warnings %q, judged share %v, lower bound %v, precision %v", r.Warnings, r.JudgedShare, r.PrecisionLowerBound, r.Precision)
	}
	r, _ = run(t, append(args, "--json", "--mode", "pairwise")...)
	if !near(r.JudgedShare, 1) || r.PrecisionLowerBound != r.Precision || len(r.Warnings) != 0 {
		t.Errorf("pairwise: judged share %v, lower bound %v, precision %v, warnings %q", r.JudgedShare, r.PrecisionLowerBound, r.Precision, r.Warnings)
	}
}

// chinese holds unrelated Chinese prompts (labelled not duplicates) and a
// Chinese prompt repeated with other punctuation, beside English pairs.
const chinese = "0\t如何重置我的密码？\t今天北京的天气怎么样？\n" +
	"0\t花呗怎么开通\t借呗为什么关闭了\n" +
	"1\t我的订单什么时候发货\t我的订单什么时候发货？\n" +
	"1\tHow do I bake sourdough bread at home?\thow do i bake sourdough bread at home\n" +
	"0\tBest recipe for vegan chocolate cake\tQuantum entanglement basics, physics lecture notes\n"

// TestCoverageSkipped: texts the embedder covers under embed.MinCoverage
// are exact-only: never stored, never looked up, never a semantic hit,
// and counted. Neither embedder represents Chinese.
func TestCoverageSkipped(t *testing.T) {
	path := writeFile(t, "zh.tsv", chinese)
	for _, emb := range []string{"lexical", "use-lite"} {
		for _, args := range [][]string{{}, {"--no-verify", "--threshold", "0.5"}, {"--mode", "pairwise"}, {"--sweep"}} {
			args = append([]string{"--pairs", path, "--embedder", emb, "--model-dir", useLiteDir(t), "--json", "--count", "own"}, args...)
			r, _ := run(t, args...)
			if r.SkippedCoverage.Queries != 3 || r.SkippedCoverage.Stored != 3 || r.SkippedCoverage.MinCoverage != embed.MinCoverage {
				t.Errorf("%q: skipped %+v, want 3 queries and 3 stored texts", args, r.SkippedCoverage)
			}
			// Only the English repeat is a hit.
			if r.Hits != 1 || r.Correct != 1 {
				t.Errorf("%q: %d hits, %d correct, want 1 and 1", args, r.Hits, r.Correct)
			}
			if len(r.Warnings) != 1 || !strings.Contains(r.Warnings[0], "3 of 5 queries are under the embedder's coverage floor") {
				t.Errorf("%q: warnings %q", args, r.Warnings)
			}
		}
	}
	var stdout, stderr bytes.Buffer
	if err := Main(context.Background(), []string{"--pairs", path, "--embedder", "lexical"}, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stdout.String(), "3 queries and 3 stored texts under the embedder's coverage floor") {
		t.Errorf("table lacks the coverage line:\n%s", stdout.String())
	}
}

// TestSpacesNeverMix: a query only finds stored texts of its own space,
// however near their vectors.
func TestSpacesNeverMix(t *testing.T) {
	pairs := []Pair{
		{Line: 1, Duplicate: true, A: "alpha beta", B: "alpha beta gamma"},
		{Line: 2, Duplicate: true, A: "delta", B: "delta epsilon"},
	}
	va := []embed.Vector{{1, 0}, {0, 1}}
	vb := []embed.Vector{{1, 0}, {0, 1}}
	sp := &spaces{a: []string{"en", "en"}, b: []string{"zh", "en"}}
	ms, err := retrieve(context.Background(), pairs, va, vb, sp, "test", -1, 1, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if len(ms[0]) != 0 {
		t.Errorf("a zh query found %+v in the en space", ms[0])
	}
	if len(ms[1]) != 2 || ms[1][0].Key != "1" {
		t.Errorf("an en query found %+v, want both en texts, text_a 1 first", ms[1])
	}
	outs, err := scorePairs(context.Background(), pairs, va, vb, sp, "test", verify.New(), true, -1, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(outs[0].cands) != 0 || len(outs[1].cands) != 1 {
		t.Errorf("pairwise: candidates %d and %d, want 0 and 1", len(outs[0].cands), len(outs[1].cands))
	}
}

// han is a stand-in for a Chinese model: it covers Han text only.
type han struct{ dim int }

func (h han) Name() string { return "han-test" }
func (h han) Dim() int     { return h.dim }
func (h han) Embed(_ context.Context, texts []string) ([]embed.Vector, error) {
	out := make([]embed.Vector, len(texts))
	for i := range out {
		out[i] = make(embed.Vector, h.dim)
		out[i][0] = 1
	}
	return out, nil
}
func (h han) Coverage(text string) float64 { return embed.HanShare(text) }

// TestWrappersForwardSpace: behind the Batcher and the disk cache, the
// eval still sees the Router's choice of space and its coverage.
func TestWrappersForwardSpace(t *testing.T) {
	lex := lexical.New(0)
	r, err := embed.NewRouter(lex, han{lex.Dim()})
	if err != nil {
		t.Fatal(err)
	}
	b := embed.NewBatcher(r, 1, 8)
	defer b.Close()
	d, err := openDiskCache(t.TempDir(), withSpace{b, r}, "")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for _, tc := range []struct {
		text  string
		space string
		cov   float64
	}{
		{"How do I reset my password?", lex.Name(), 1},
		{"如何重置我的密码", "han-test", 1},
		{"如何 reset 我的密码", "han-test", 6.0 / 11},
	} {
		s, c := embed.SpaceOf(d, tc.text)
		if s != tc.space || !near(c, tc.cov) || !near(embed.CoverageOf(d, tc.text), tc.cov) {
			t.Errorf("%q: space %q coverage %v, want %q %v", tc.text, s, c, tc.space, tc.cov)
		}
	}
	sp := spacesOf(d, []Pair{{A: "How do I reset my password?", B: "如何重置我的密码"}, {A: "如何 reset 我的密码", B: "hello"}})
	if sp.a[0] != lex.Name() || sp.b[0] != "han-test" || sp.a[1] != "" || sp.b[1] != lex.Name() {
		t.Errorf("spaces %+v", sp)
	}
	if q, s := sp.skipped(); q != 0 || s != 1 {
		t.Errorf("skipped %d queries %d stored, want 0 and 1", q, s)
	}
}
