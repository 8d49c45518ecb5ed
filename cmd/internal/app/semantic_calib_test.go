package app

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgecache/edgecache/cache/semantic/verify"
	"github.com/edgecache/edgecache/cmd/internal/config"
	"github.com/edgecache/edgecache/cmd/internal/llmsim"
)

// The verifier calibration of a remote embedder, with real parts: an
// llmsim serves /v1/embeddings with EmbeddingFold (letter-case and spacing
// variants embed alike, anything else is unrelated); `edgecache eval
// --embedder remote --fit --fit-out` fits a model on a labelled file
// through it; edgecache loads the file with semantic.verifier_model.

const calibEmbedModel = "sim-embed-calib"

// calibPairs is a labelled file llmsim's embedder separates: duplicates
// are case and spacing variants, non-duplicates unrelated questions.
func calibPairs() string {
	var b strings.Builder
	b.WriteString("label\ttext_a\ttext_b\n")
	verbs := []string{"reset", "change", "recover", "update", "verify", "export"}
	nouns := []string{"password", "email address", "billing plan", "profile photo", "phone number",
		"api key", "shipping address", "display name", "security question", "invoice"}
	for i, v := range verbs {
		for j, n := range nouns {
			a := fmt.Sprintf("How do I %s my %s?", v, n)
			fmt.Fprintf(&b, "1\t%s\t%s\n", a, strings.ToUpper(a))
			fmt.Fprintf(&b, "0\tWhat does a %s cost (%d)?\tWhere can I buy a %s (%d)?\n", n, i, nouns[(j+3)%len(nouns)], i)
		}
	}
	return b.String()
}

// fitCalibration runs `edgecache eval` (through Run, as the command
// line does) to fit a verifier model for the remote embedder at
// embedURL, and returns the file. Duplicates that differ only in case
// are repeats to eval's judged count, so the fit selects its threshold
// pairwise and counts own text_a.
func fitCalibration(t *testing.T, embedURL string) string {
	t.Helper()
	dir := t.TempDir()
	pairs, model := filepath.Join(dir, "pairs.tsv"), filepath.Join(dir, "verifier.json")
	if err := os.WriteFile(pairs, []byte(calibPairs()), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	args := []string{"eval", "--pairs", pairs, "--embedder", "remote", "--remote-url", embedURL, "--remote-model", calibEmbedModel,
		"--fit", "--fit-min-cosine", "-1", "--fit-select", "pairwise", "--count", "own", "--fit-out", model}
	if err := Run(context.Background(), args, &stdout, &stderr); err != nil {
		t.Fatalf("Run(%q): %v\nstdout:\n%s\nstderr:\n%s", args, err, stdout.String(), stderr.String())
	}
	if !strings.Contains(stdout.String(), "wrote "+model) {
		t.Fatalf("eval did not say it wrote the model:\n%s", stdout.String())
	}
	return model
}

func calibConfig(t *testing.T, embedURL, model string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "edgecache.yaml")
	doc := fmt.Sprintf(`# %s
semantic:
  embedder: remote
  remote: {url: %q, model: %q}
  index: embedded
  verifier_model: %q
routes:
  - {name: chat, path: /v1/chat/completions, cache: {mode: semantic}}
`, t.Name(), embedURL, calibEmbedModel, model)
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

type readyVerifier struct {
	Embedder  string  `json:"embedder"`
	Verifier  string  `json:"verifier"`
	Threshold float32 `json:"verifier_threshold"`
}

func readyz(t *testing.T, admin string) readyVerifier {
	t.Helper()
	code, b := get(t, admin+"/readyz", "")
	var r readyVerifier
	if code != 200 || json.Unmarshal(b, &r) != nil {
		t.Fatalf("/readyz: %d %s", code, b)
	}
	return r
}

// TestSemanticVerifierModel fits a model for the remote embedder, starts
// edgecache with it, and checks that /readyz reports it and that its
// threshold is the one in force: a variant hits at the fitted threshold
// and misses once the file's threshold is raised above the variant's
// score.
func TestSemanticVerifierModel(t *testing.T) {
	t.Setenv("EDGECACHE_QDRANT_ADDR", "")
	t.Setenv("EDGECACHE_VERIFIER_MODEL", "")
	embedder := startOutageSim(t, llmsim.Config{EmbeddingFold: true})
	model := startOutageSim(t, llmsim.Config{})
	embedURL := embedder.URL() + "/v1"
	file := fitCalibration(t, embedURL)
	f, err := verify.ReadModelFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if f.Embedder != "remote:"+calibEmbedModel {
		t.Fatalf("fitted for %q", f.Embedder)
	}
	variant, _ := verify.NewModel(f.Model).Score("how do i reset my password?", "HOW DO I RESET MY PASSWORD?", 1)
	if variant < f.Model.Threshold {
		t.Fatalf("the fitted model scores a case variant %v, under its threshold %v", variant, f.Model.Threshold)
	}

	t.Run("fitted", func(t *testing.T) {
		data, admin := startEdgecache(t, model.URL(), "--config", calibConfig(t, embedURL, file))
		r := readyz(t, admin)
		if r.Verifier != "file "+file || r.Threshold != f.Model.Threshold || r.Embedder != "remote:"+calibEmbedModel {
			t.Errorf("/readyz %+v, want verifier \"file %s\" at threshold %v", r, file, f.Model.Threshold)
		}
		if cs := chatPost(t, data, "How do I reset my password?"); !strings.Contains(cs, "stored") {
			t.Errorf("first request: %q, want a stored miss", cs)
		}
		if cs := chatPost(t, data, "HOW DO I RESET MY PASSWORD?"); !strings.HasPrefix(cs, "edgecache; hit; detail=semantic") {
			t.Errorf("a case variant: %q, want a semantic hit", cs)
		}
		if cs := chatPost(t, data, "Where can I buy a password?"); strings.Contains(cs, "hit") {
			t.Errorf("an unrelated question: %q, want a miss", cs)
		}
	})

	t.Run("threshold in force", func(t *testing.T) {
		strict := f
		strict.Model.Threshold = min(0.99999, (1+variant)/2) // above the variant's score, still valid
		path := filepath.Join(t.TempDir(), "strict.json")
		if err := verify.WriteModelFile(path, strict); err != nil {
			t.Fatal(err)
		}
		data, admin := startEdgecache(t, model.URL(), "--config", calibConfig(t, embedURL, path))
		if r := readyz(t, admin); r.Threshold != strict.Model.Threshold {
			t.Errorf("/readyz threshold %v, want the file's %v", r.Threshold, strict.Model.Threshold)
		}
		chatPost(t, data, "How do I reset my password?")
		if cs := chatPost(t, data, "HOW DO I RESET MY PASSWORD?"); strings.Contains(cs, "semantic") {
			t.Errorf("a case variant scoring %v under the file's threshold %v: %q, want no semantic hit", variant, strict.Model.Threshold, cs)
		}
	})

	t.Run("built-in", func(t *testing.T) {
		_, admin := startEdgecache(t, model.URL(), "--config", calibConfig(t, embedURL, ""))
		if r := readyz(t, admin); !strings.HasPrefix(r.Verifier, "built-in "+verify.DefaultEmbedder+" (not fitted for remote:") {
			t.Errorf("/readyz verifier %q without a file, want the built-in one, said to be not fitted for the remote embedder", r.Verifier)
		}
	})
}

// TestSemanticVerifierModelRefused: a corrupted model file, or one fitted
// for another embedder, fails start-up with an error naming the file.
func TestSemanticVerifierModelRefused(t *testing.T) {
	t.Setenv("EDGECACHE_QDRANT_ADDR", "")
	t.Setenv("EDGECACHE_VERIFIER_MODEL", "")
	t.Setenv("EDGECACHE_POLICY_FILE", filepath.Join(t.TempDir(), "routes.json"))
	embedder := startOutageSim(t, llmsim.Config{EmbeddingFold: true})
	model := startOutageSim(t, llmsim.Config{})
	embedURL := embedder.URL() + "/v1"
	good := fitCalibration(t, embedURL)
	b, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, doc, want string }{
		{"truncated", string(b[:len(b)/2]), "unexpected end"},
		{"step counts", strings.Replace(string(b), "[-4],", "[-4, -4],", 1), "want one per cut"},
		{"other embedder", strings.Replace(string(b), `"remote:`+calibEmbedModel+`"`, `"use-lite-v1"`, 1),
			`fitted for embedder "use-lite-v1", but the configured embedder is "remote:` + calibEmbedModel + `"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "verifier.json")
			if err := os.WriteFile(path, []byte(tc.doc), 0o600); err != nil {
				t.Fatal(err)
			}
			var stdout, stderr bytes.Buffer
			args := []string{"--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--journal-dir", t.TempDir(),
				"--upstream", model.URL(), "--config", calibConfig(t, embedURL, path)}
			err := Run(context.Background(), args, &stdout, &stderr)
			if err == nil {
				t.Fatalf("edgecache started with a bad verifier model (%s)", tc.name)
			}
			if !strings.Contains(err.Error(), "semantic.verifier_model") || !strings.Contains(err.Error(), path) ||
				!strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want it to name semantic.verifier_model, the file and say %q", err, tc.want)
			}
		})
	}
}

// TestSemanticCalibrationLoading checks loadCalibration's decisions
// without a server: a file's pre-filter never goes under its min_cosine,
// a file fitted for the local model is set aside when the embedder fell
// back to lexical, and refused when it was not.
func TestSemanticCalibrationLoading(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	builtIn := verify.New().Model()
	m := builtIn
	m.MinCosine = 0.95
	path := filepath.Join(t.TempDir(), "verifier.json")
	if err := verify.WriteModelFile(path, verify.ModelFile{Embedder: "use-lite-v1", Model: m}); err != nil {
		t.Fatal(err)
	}
	sc := config.Semantic{Embedder: "local", VerifierModel: path}

	cal, err := loadCalibration(sc, "use-lite-v1", "", log)
	if err != nil {
		t.Fatal(err)
	}
	if cal.source != "file "+path || cal.threshold != m.Threshold {
		t.Errorf("calibration %q at %v", cal.source, cal.threshold)
	}
	low := float32(0.3) // a degraded floor far under the threshold
	if got, lossless := cal.space.MinCosine(low), verify.New().MinCosine(low); got != 0.95 || lossless >= 0.95 {
		t.Errorf("pre-filter at %v: %v (lossless %v), want the file's min_cosine 0.95", low, got, lossless)
	}

	cal, err = loadCalibration(sc, "lexical-v1", "local model not loaded", log)
	if err != nil || !strings.Contains(cal.source, "built-in lexical-v1 (") || !strings.Contains(cal.source, "set aside") {
		t.Errorf("after the fallback: %q, %v; want the lexical built-in, the file set aside", cal.source, err)
	}
	if _, err := loadCalibration(sc, "lexical-v1", "", log); err == nil {
		t.Error("a file fitted for use-lite-v1 was accepted for the lexical embedder")
	}
	sc.VerifierModel = ""
	if cal, err := loadCalibration(sc, "use-lite-v1", "", log); err != nil || cal.source != "built-in use-lite-v1" ||
		cal.space.MinCosine(low) != verify.New().MinCosine(low) {
		t.Errorf("without a file: %q, %v", cal.source, err)
	}
}
