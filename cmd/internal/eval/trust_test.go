package eval

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

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
