package eval

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/edgecache/edgecache/cache/semantic/verify"
	"github.com/edgecache/edgecache/embed"
	"github.com/edgecache/edgecache/embed/lexical"
)

// synthetic is a small pairs file whose outcome can be worked out by hand
// with the lexical embedder: a text_b that repeats its text_a (ignoring
// case and punctuation) embeds identically and is a hit; one that shares
// no word with any text_a is never retrieved.
//
//	line 2  dup  repeat     hit, correct
//	line 3  dup  repeat     hit, correct
//	line 4  not  repeat     hit, wrong (the label says not a duplicate)
//	line 5  dup  unrelated  miss
//	line 6  not  unrelated  miss
//	line 7  dup  repeat     hit, correct
//
// hits 4, correct 3, duplicates 4: precision 0.75, recall 0.75.
const synthetic = "label\ttext_a\ttext_b\n" +
	"1\tHow do I bake sourdough bread at home?\thow do i bake sourdough bread at home\n" +
	"1\tWhat is the capital city of Mongolia?\twhat is the capital city of mongolia\n" +
	"0\tWhich telescope should an amateur astronomer buy?\tWHICH TELESCOPE SHOULD AN AMATEUR ASTRONOMER BUY\n" +
	"1\tHow tall is the Eiffel tower in Paris?\tZebra stripes: evolutionary purpose explained\n" +
	"0\tBest recipe for vegan chocolate cake\tQuantum entanglement basics, physics lecture notes\n" +
	"1\tWhy do cats purr when they are happy?\twhy do cats purr when they are happy\n"

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// run calls Main and decodes its one JSON object.
func run(t *testing.T, args ...string) (Report, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if err := Main(context.Background(), args, &stdout, &stderr); err != nil {
		t.Fatalf("Main(%q): %v\nstderr:\n%s", args, err, stderr.String())
	}
	dec := json.NewDecoder(&stdout)
	var r Report
	if err := dec.Decode(&r); err != nil {
		t.Fatalf("decode JSON: %v\nstdout:\n%s", err, stdout.String())
	}
	var extra json.RawMessage
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		t.Fatalf("stdout holds more than one JSON object (%v)", err)
	}
	return r, stderr.String()
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-4 }

func checkHeadline(t *testing.T, r Report, hits, correct, pairs, dups int) {
	t.Helper()
	if r.Hits != hits || r.Correct != correct || r.Pairs != pairs || r.Duplicates != dups {
		t.Errorf("hits %d correct %d pairs %d duplicates %d, want %d %d %d %d", r.Hits, r.Correct, r.Pairs, r.Duplicates, hits, correct, pairs, dups)
	}
	wantP, wantR := float64(correct)/float64(hits), float64(correct)/float64(dups)
	if !near(r.Precision, wantP) || !near(r.Recall, wantR) {
		t.Errorf("precision %.4f recall %.4f, want %.4f %.4f", r.Precision, r.Recall, wantP, wantR)
	}
}

func TestCacheModeJSON(t *testing.T) {
	path := writeFile(t, "pairs.tsv", synthetic)
	for _, args := range [][]string{
		{"--pairs", path, "--embedder", "lexical", "--json"},                                      // verifier, default threshold
		{"--pairs", path, "--embedder", "lexical", "--json", "--no-verify", "--threshold", "0.9"}, // cosine only
	} {
		r, _ := run(t, args...)
		checkHeadline(t, r, 4, 3, 6, 4)
		if r.Mode != "cache" || r.Embedder != "lexical-v1" || r.Candidates != verify.Candidates {
			t.Errorf("mode %q embedder %q candidates %d", r.Mode, r.Embedder, r.Candidates)
		}
		noVerify := slices.Contains(args, "--no-verify")
		if r.Verify == noVerify {
			t.Errorf("verify = %v with args %q", r.Verify, args)
		}
		wantThr := float64(verify.DefaultThreshold("lexical-v1"))
		if noVerify {
			wantThr = 0.9
		}
		if !near(r.Threshold, wantThr) {
			t.Errorf("threshold %v, want %v", r.Threshold, wantThr)
		}
		// Every text_a is unique, so every way of counting agrees.
		for _, row := range r.Rows {
			if row.Score == "cosine, same recall" {
				continue
			}
			if row.Correct != 3 || row.Hits != 4 {
				t.Errorf("row %+v, want 3 correct of 4 hits", row)
			}
		}
	}
}

func TestPairwiseModeJSON(t *testing.T) {
	path := writeFile(t, "pairs.tsv", synthetic)
	r, _ := run(t, "--pairs", path, "--embedder", "lexical", "--json", "--mode", "pairwise", "--no-verify", "--threshold", "0.9")
	checkHeadline(t, r, 4, 3, 6, 4)

	// AUC by hand: the share of (duplicate, other) pairs of lines in which
	// the duplicate has the higher cosine, ties counting half.
	pairs, _, err := ReadPairs(strings.NewReader(synthetic))
	if err != nil {
		t.Fatal(err)
	}
	e := lexical.New(0)
	var dupCos, otherCos []float32
	for _, p := range pairs {
		vs, err := e.Embed(context.Background(), []string{p.A, p.B})
		if err != nil {
			t.Fatal(err)
		}
		if c := embed.Dot(vs[0], vs[1]); p.Duplicate {
			dupCos = append(dupCos, c)
		} else {
			otherCos = append(otherCos, c)
		}
	}
	won := 0.0
	for _, d := range dupCos {
		for _, o := range otherCos {
			switch {
			case d > o:
				won++
			case d == o:
				won += 0.5
			}
		}
	}
	want := won / float64(len(dupCos)*len(otherCos))
	if !near(r.CosineAUC, want) || !near(r.AUC, want) {
		t.Errorf("AUC %v, cosine AUC %v, want %v", r.AUC, r.CosineAUC, want)
	}
}

func TestSameTextCount(t *testing.T) {
	// Lines 2 and 3 store the same text_a; either copy is the right text.
	content := "1\tHow do I bake sourdough bread at home?\thow do i bake sourdough bread at home\n" +
		"1\tHow do I bake sourdough bread at home?\tHOW DO I BAKE SOURDOUGH BREAD AT HOME!\n" +
		"0\tWhat is the capital city of Mongolia?\tQuantum entanglement basics, physics lecture notes\n"
	r, _ := run(t, "--pairs", writeFile(t, "pairs.tsv", content), "--embedder", "lexical", "--json", "--no-verify", "--threshold", "0.9")
	if r.Hits != 2 || r.Correct > 2 {
		t.Errorf("hits %d correct %d, want 2 hits", r.Hits, r.Correct)
	}
	var same *Row
	for i := range r.Rows {
		if r.Rows[i].Count == "same text" {
			same = &r.Rows[i]
		}
	}
	if same == nil || same.Hits != 2 || same.Correct != 2 || !near(same.Precision, 1) || !near(same.Recall, 1) {
		t.Errorf("same-text row %+v, want 2 correct of 2 hits, recall 1", same)
	}
}

func TestHeadlineCount(t *testing.T) {
	// Both queries are the same text and hit line 1's text_a. Line 1's
	// label makes that right; line 2's own text_a is another question, so
	// the literal count takes its hit for wrong, while the labels (line 1)
	// say it is a duplicate.
	content := "1\tHow do I bake sourdough bread at home?\thow do i bake sourdough bread at home\n" +
		"0\tWhat is the capital city of Mongolia?\thow do i bake sourdough bread at home\n"
	path := writeFile(t, "pairs.tsv", content)
	for _, tc := range []struct {
		args      []string
		count     string
		correct   int
		precision float64
	}{
		{nil, "judged hits only, repeats left out", 2, 1},
		{[]string{"--count", "judged"}, "judged hits only, repeats left out", 2, 1},
		{[]string{"--count", "known"}, "known duplicate, repeats left out", 2, 1},
		{[]string{"--count", "own"}, "own text_a", 1, 0.5},
	} {
		args := append([]string{"--pairs", path, "--embedder", "lexical", "--json", "--no-verify", "--threshold", "0.9"}, tc.args...)
		r, _ := run(t, args...)
		if r.Count != tc.count || r.Rows[0].Count != tc.count || r.Hits != 2 || r.Correct != tc.correct || !near(r.Precision, tc.precision) {
			t.Errorf("%q: count %q (first row %q) hits %d correct %d precision %.4f, want %q 2 %d %.4f",
				tc.args, r.Count, r.Rows[0].Count, r.Hits, r.Correct, r.Precision, tc.count, tc.correct, tc.precision)
		}
		if len(r.Rows) != 4 {
			t.Errorf("%q: %d rows, want one per count (4)", tc.args, len(r.Rows))
		}
	}
	var stderr bytes.Buffer
	if err := Main(context.Background(), []string{"--pairs", path, "--count", "all"}, io.Discard, &stderr); err == nil || !strings.Contains(err.Error(), "--count") {
		t.Errorf("--count all: err %v, want a --count error", err)
	}
}

func TestHeaderOptional(t *testing.T) {
	body := synthetic[strings.Index(synthetic, "\n")+1:]
	for name, content := range map[string]string{"with header": synthetic, "without header": body, "CRLF": strings.ReplaceAll(body, "\n", "\r\n")} {
		t.Run(name, func(t *testing.T) {
			r, stderr := run(t, "--pairs", writeFile(t, "p.tsv", content), "--embedder", "lexical", "--json", "--no-verify", "--threshold", "0.9")
			checkHeadline(t, r, 4, 3, 6, 4)
			if r.BadLines != 0 || stderr != "" {
				t.Errorf("bad lines %d, stderr %q", r.BadLines, stderr)
			}
		})
	}
}

func TestBadLinesReported(t *testing.T) {
	content := "label\ttext_a\ttext_b\n" + // 1: header
		"1\tHow do I bake bread?\thow do i bake bread\n" + // 2
		"x\tfoo\tbar\n" + // 3: bad label
		"1\tonly two fields\n" + // 4: two fields
		"\n" + // 5: blank, skipped
		"0\t \tbar\n" + // 6: empty text
		"1\ta\tb\tc\n" + // 7: four fields
		"0\tWhy is the sky blue?\tQuantum entanglement basics\n" // 8
	path := writeFile(t, "bad.tsv", content)
	r, stderr := run(t, "--pairs", path, "--embedder", "lexical", "--json")
	if r.Pairs != 2 || r.BadLines != 4 {
		t.Errorf("pairs %d bad lines %d, want 2 and 4", r.Pairs, r.BadLines)
	}
	for _, line := range []string{":3: ", ":4: ", ":6: ", ":7: "} {
		if !strings.Contains(stderr, path+line) {
			t.Errorf("stderr does not report %s%s:\n%s", path, line, stderr)
		}
	}
	if strings.Contains(stderr, path+":5:") || strings.Contains(stderr, path+":1:") {
		t.Errorf("stderr reports the blank line or the header:\n%s", stderr)
	}
}

func TestReadPairsRejects(t *testing.T) {
	var many strings.Builder
	for range maxBadLines + 1 {
		many.WriteString("2\ta\tb\n")
	}
	for name, content := range map[string]string{
		"empty":          "",
		"header only":    "label\ttext_a\ttext_b\n",
		"all bad":        many.String(),
		"no valid pairs": "label\ta\tb\n1\tonly\n",
	} {
		if _, _, err := ReadPairs(strings.NewReader(content)); err == nil {
			t.Errorf("%s: ReadPairs accepted it", name)
		}
	}
}

func TestFlags(t *testing.T) {
	path := writeFile(t, "pairs.tsv", synthetic)
	for _, args := range [][]string{
		{},
		{"--pairs", path, "--mode", "both"},
		{"--pairs", path, "--embedder", "bert"},
		{"--pairs", path, "--limit", "-1"},
		{"--pairs", path, "extra"},
		{"--pairs", filepath.Join(t.TempDir(), "missing.tsv")},
	} {
		var stdout, stderr bytes.Buffer
		if err := Main(context.Background(), args, &stdout, &stderr); err == nil {
			t.Errorf("Main(%q) succeeded", args)
		}
	}
	var stdout, stderr bytes.Buffer
	if err := Main(context.Background(), []string{"--help"}, &stdout, &stderr); err != nil || !strings.Contains(stderr.String(), "--pairs") {
		t.Errorf("--help: err %v, usage %q", err, stderr.String())
	}
}

func TestLimit(t *testing.T) {
	r, _ := run(t, "--pairs", writeFile(t, "pairs.tsv", synthetic), "--embedder", "lexical", "--json", "--limit", "3", "--no-verify", "--threshold", "0.9")
	checkHeadline(t, r, 3, 2, 3, 2)
}

func TestMissingModelFallsBackToLexical(t *testing.T) {
	path := writeFile(t, "pairs.tsv", synthetic)
	r, stderr := run(t, "--pairs", path, "--model-dir", filepath.Join(t.TempDir(), "nope"), "--json")
	if r.Embedder != "lexical-v1" || !strings.Contains(stderr, "lexical") || !strings.Contains(stderr, "make model") {
		t.Errorf("embedder %q, stderr %q: want a loud fallback to lexical", r.Embedder, stderr)
	}
	t.Setenv("EDGECACHE_MODEL_DIR", filepath.Join(t.TempDir(), "also-nope"))
	_, stderr = run(t, "--pairs", path, "--json")
	if !strings.Contains(stderr, "also-nope") {
		t.Errorf("EDGECACHE_MODEL_DIR not used: %q", stderr)
	}
}

func TestTableAndSweep(t *testing.T) {
	path := writeFile(t, "pairs.tsv", synthetic)
	var stdout, stderr bytes.Buffer
	if err := Main(context.Background(), []string{"--pairs", path, "--embedder", "lexical", "--sweep"}, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	out := stdout.String()
	for _, want := range []string{"own text_a", "same text", "known duplicate", "precision", "recall", "0.75"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if stderr.Len() != 0 {
		t.Errorf("progress or noise on a non-terminal stderr: %q", stderr.String())
	}
	r, _ := run(t, "--pairs", path, "--embedder", "lexical", "--json", "--sweep")
	if len(r.Sweep) < 10 {
		t.Fatalf("sweep has %d rows", len(r.Sweep))
	}
	for i := 1; i < len(r.Sweep); i++ {
		if r.Sweep[i].Threshold <= r.Sweep[i-1].Threshold || r.Sweep[i].Hits > r.Sweep[i-1].Hits {
			t.Errorf("sweep rows %d and %d out of order: %+v %+v", i-1, i, r.Sweep[i-1], r.Sweep[i])
		}
	}
}

func TestEmbeddingCache(t *testing.T) {
	path := writeFile(t, "pairs.tsv", synthetic)
	dir := t.TempDir()
	first, _ := run(t, "--pairs", path, "--embedder", "lexical", "--json", "--cache-dir", dir)
	fi, err := os.Stat(filepath.Join(dir, "lexical-v1.vec"))
	if err != nil || fi.Size() == 0 {
		t.Fatalf("no embedding cache file: %v", err)
	}
	// A torn last record (an interrupted run) is dropped, not fatal.
	f, err := os.OpenFile(filepath.Join(dir, "lexical-v1.vec"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte{1, 2, 3})
	f.Close()
	second, _ := run(t, "--pairs", path, "--embedder", "lexical", "--json", "--cache-dir", dir)
	if first.Hits != second.Hits || first.Correct != second.Correct {
		t.Errorf("cached run differs: %+v against %+v", second, first)
	}
	if fi2, _ := os.Stat(filepath.Join(dir, "lexical-v1.vec")); fi2.Size() != fi.Size() {
		t.Errorf("cache file grew from %d to %d bytes on a second run", fi.Size(), fi2.Size())
	}
}

func TestAUC(t *testing.T) {
	cases := []struct {
		scores []float32
		dup    []bool
		want   float64
	}{
		{[]float32{0.9, 0.8, 0.3, 0.1}, []bool{true, true, false, false}, 1},
		{[]float32{0.1, 0.2, 0.8, 0.9}, []bool{true, true, false, false}, 0},
		{[]float32{0.5, 0.5}, []bool{true, false}, 0.5},
		{[]float32{0.9, 0.4, 0.6, 0.1}, []bool{true, true, false, false}, 0.75},
	}
	for _, tc := range cases {
		if got := auc(tc.scores, tc.dup); !near(got, tc.want) {
			t.Errorf("auc(%v, %v) = %v, want %v", tc.scores, tc.dup, got, tc.want)
		}
	}
}

func TestAtRecall(t *testing.T) {
	// Cosine-only picks: scores 0.99 (right), 0.95 (wrong), 0.9 (right),
	// 0.8 (right); 4 duplicates.
	var os []outcome
	for _, x := range []struct {
		s     float32
		right bool
	}{{0.99, true}, {0.95, false}, {0.9, true}, {0.8, true}} {
		o := outcome{dup: true}
		o.c = served{score: x.s, own: x.right}
		os = append(os, o)
	}
	c := atRecall(os, defOwn, 0.5)
	if !near(c.Threshold, 0.9) || c.Hits != 3 || c.Correct != 2 || !near(c.Recall, 0.5) {
		t.Errorf("atRecall(0.5) = %+v, want threshold 0.9, 3 hits, 2 correct", c)
	}
}
