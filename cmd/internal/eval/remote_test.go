package eval

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgecache/edgecache/cache/semantic/verify"
	"github.com/edgecache/edgecache/cmd/internal/llmsim"
)

// CalibrationPairs is a labelled file for fitting a remote embedder served
// by llmsim with EmbeddingFold: a duplicate's text_b is its text_a in
// other letter case and spacing, which llmsim embeds alike (cosine 1);
// a non-duplicate pairs two unrelated questions (cosine near 0). Every
// text is distinct, so every pair is its own connected question. Eval
// takes a text_b that differs from its text_a only in case and spacing for
// a repeat (the exact tier's), which the judged and known counts leave
// out: fitting and scoring this file use --fit-select pairwise and
// --count own, which count them.
func CalibrationPairs() string {
	var b strings.Builder
	b.WriteString("label\ttext_a\ttext_b\n")
	verbs := []string{"reset", "change", "recover", "update", "verify", "export"}
	nouns := []string{"password", "email address", "billing plan", "profile photo", "phone number",
		"api key", "shipping address", "display name", "security question", "invoice"}
	places := []string{"lisbon", "oslo", "quito", "hanoi", "lagos", "perth"}
	for i, v := range verbs {
		for j, n := range nouns {
			a := fmt.Sprintf("How do I %s my %s?", v, n)
			b.WriteString("1\t" + a + "\t" + strings.ToUpper(a[:1]) + strings.ReplaceAll(strings.ToUpper(a[1:]), " ", "  ") + "\n")
			p := places[(i+j)%len(places)]
			fmt.Fprintf(&b, "0\tWhat does a %s cost in %s (%d)?\tWhere can I buy a %s near %s (%d)?\n", n, p, i, nouns[(j+3)%len(nouns)], p, i)
		}
	}
	return b.String()
}

func startEmbedSim(t *testing.T) *llmsim.Running {
	t.Helper()
	sim, err := llmsim.Start(context.Background(), "127.0.0.1:0", llmsim.Config{EmbeddingFold: true})
	if err != nil {
		t.Fatalf("llmsim.Start: %v", err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	return sim
}

// TestRemoteFit fits the verifier for a remote embedder (llmsim) on a
// labelled file, writes the model file, and scores with it afterwards
// from the embedding cache alone (the embedder stopped); a corrupted file
// and a file fitted for another embedder are refused.
func TestRemoteFit(t *testing.T) {
	sim := startEmbedSim(t)
	pairs := writeFile(t, "pairs.tsv", CalibrationPairs())
	model := filepath.Join(t.TempDir(), "verifier.json")
	cacheDir := t.TempDir()
	t.Setenv(envRemoteURL, sim.URL()) // the flags' fallbacks
	t.Setenv(envRemoteModel, "sim-embed-1")

	var stdout, stderr bytes.Buffer
	args := []string{"--pairs", pairs, "--embedder", "remote", "--remote-batch", "7", "--cache-dir", cacheDir, "--workers", "2",
		"--fit", "--fit-min-cosine", "-1", "--fit-select", "pairwise", "--count", "own", "--fit-out", model}
	if err := Main(context.Background(), args, &stdout, &stderr); err != nil {
		t.Fatalf("Main(%q): %v\nstderr:\n%s", args, err, stderr.String())
	}
	if !strings.Contains(stdout.String(), "wrote "+model+": verifier model for embedder remote:sim-embed-1") {
		t.Errorf("stdout does not say the model was written:\n%s", stdout.String())
	}
	f, err := verify.ReadModelFile(model)
	if err != nil {
		t.Fatal(err)
	}
	if f.Embedder != "remote:sim-embed-1" {
		t.Errorf("embedder %q, want remote:sim-embed-1", f.Embedder)
	}
	fo := f.FittedOn
	if fo == nil || fo.File != "pairs.tsv" || fo.Pairs != 120 || fo.TrainingPairs+fo.HeldOutPairs != 120 || len(fo.SHA256) != 64 ||
		fo.HeldOut == nil || fo.HeldOutPairwise == nil {
		t.Fatalf("fitted_on %+v", fo)
	}
	// The embedder separates the file perfectly: so must the fitted model.
	if h := fo.HeldOut; h.Hits == 0 || h.Precision < 1 || h.Recall < 1 {
		t.Errorf("held out %+v, want every duplicate found and no wrong hit", h)
	}
	if _, err := os.Stat(filepath.Join(cacheDir, "remote_sim-embed-1.vec")); err != nil {
		t.Errorf("embedding cache: %v", err)
	}

	// Without the model, eval warns that the built-in calibration is
	// USE-lite's.
	r, _ := run(t, "--pairs", pairs, "--embedder", "remote", "--cache-dir", cacheDir, "--json")
	if !strings.Contains(strings.Join(r.Warnings, "\n"), "--verifier-model") {
		t.Errorf("warnings %q, want one about the built-in calibration", r.Warnings)
	}

	// Scored with the model, its threshold is the default; every vector is
	// in the cache, so the stopped embedder is not missed.
	if err := sim.Close(); err != nil {
		t.Fatal(err)
	}
	r, _ = run(t, "--pairs", pairs, "--embedder", "remote", "--cache-dir", cacheDir, "--json", "--count", "own", "--verifier-model", model)
	if r.Threshold != round4(float64(f.Model.Threshold)) || r.Embedder != "remote:sim-embed-1" {
		t.Errorf("threshold %v embedder %q, want the model's %v and remote:sim-embed-1", r.Threshold, r.Embedder, f.Model.Threshold)
	}
	if r.Precision != 1 || r.Recall != 1 || r.Hits != 60 {
		t.Errorf("with the fitted model: precision %v recall %v hits %d, want 1, 1, 60", r.Precision, r.Recall, r.Hits)
	}
	if len(r.Warnings) != 0 {
		t.Errorf("warnings %q", r.Warnings)
	}

	b, err := os.ReadFile(model)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, doc, want string }{
		{"truncated", string(b[:len(b)/3]), "unexpected end"},
		{"threshold out of range", strings.Replace(string(b), `"threshold": `, `"threshold": 1`, 1), "threshold"},
		{"another embedder", strings.Replace(string(b), `"remote:sim-embed-1"`, `"remote:other"`, 1), `fitted for embedder "remote:other"`},
	} {
		bad := writeFile(t, "bad.json", tc.doc)
		args := []string{"--pairs", pairs, "--embedder", "remote", "--cache-dir", cacheDir, "--verifier-model", bad}
		err := Main(context.Background(), args, &stdout, &stderr)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Main: %v, want an error saying %q", tc.name, err, tc.want)
		}
	}
}

func TestRemoteFlags(t *testing.T) {
	pairs := writeFile(t, "pairs.tsv", synthetic)
	t.Setenv(envRemoteURL, "")
	t.Setenv(envRemoteModel, "")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--embedder", "remote"}, "--remote-url"},
		{[]string{"--embedder", "remote", "--remote-url", "http://127.0.0.1:1"}, "--remote-model"},
		{[]string{"--embedder", "remote", "--remote-url", "ftp://x", "--remote-model", "m"}, "http(s) URL"},
		{[]string{"--fit-out", "x.json"}, "--fit-out needs --fit"},
		{[]string{"--fit", "--verifier-model", "x.json"}, "one or the other"},
		{[]string{"--embedder", "lexical", "--verifier-model", filepath.Join(t.TempDir(), "missing.json")}, "no such file"},
	} {
		var stdout, stderr bytes.Buffer
		err := Main(context.Background(), append([]string{"--pairs", pairs}, tc.args...), &stdout, &stderr)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want an error saying %q", tc.args, err, tc.want)
		}
	}
}

// TestRemoteFitRefusesWhenNoThresholdReachesThePrecision: a file too
// small to set a threshold on (fewer than 20 training hits) leaves no
// model to write.
func TestRemoteFitRefusesWhenNoThresholdReachesThePrecision(t *testing.T) {
	sim := startEmbedSim(t)
	lines := strings.SplitAfter(CalibrationPairs(), "\n")
	pairs := writeFile(t, "pairs.tsv", strings.Join(lines[:31], "")) // header and 30 pairs, 15 duplicates
	model := filepath.Join(t.TempDir(), "verifier.json")
	var stdout, stderr bytes.Buffer
	args := []string{"--pairs", pairs, "--embedder", "remote", "--remote-url", sim.URL(), "--remote-model", "m",
		"--fit", "--fit-min-cosine", "-1", "--fit-select", "pairwise", "--fit-out", model}
	err := Main(context.Background(), args, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "no model to write") {
		t.Errorf("Main: %v, want no model written", err)
	}
	if _, err := os.Stat(model); !os.IsNotExist(err) {
		t.Errorf("a model file was written: %v", err)
	}
}
