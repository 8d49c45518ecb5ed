package verify

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestBuiltInModelsValidate(t *testing.T) {
	for name, m := range map[string]Model{"use-lite": useLiteModel, "lexical": lexicalModel} {
		if err := m.Validate(); err != nil {
			t.Errorf("built-in %s model: %v", name, err)
		}
	}
}

func testModelFile() ModelFile {
	return ModelFile{
		Embedder: "remote:bge-m3",
		Model:    useLiteModel.clone(),
		FittedOn: &FitInfo{File: "pairs.tsv", Pairs: 100, TrainingPairs: 70, HeldOutPairs: 30, TargetPrecision: 0.92,
			HeldOut: &FitScore{Count: "judged", Hits: 10, Correct: 9, Precision: 0.9, Recall: 0.3}},
	}
}

func TestModelFileRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "verifier.json")
	want := testModelFile()
	if err := WriteModelFile(path, want); err != nil {
		t.Fatal(err)
	}
	got, err := ReadModelFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("read back\n%+v\nwant\n%+v", got, want)
	}
	b, _ := os.ReadFile(path)
	if !strings.Contains(string(b), `"format": "`+ModelFormat+`"`) || !strings.Contains(string(b), "\n    [-4],\n") {
		t.Errorf("file layout:\n%s", b)
	}
	// The loaded model scores as the built-in one.
	a, _ := NewModel(got.Model).Score("Write a SQL query to find the minimum salary.", "Write a SQL query to find the maximum salary.", 0.9949)
	c, _ := New().Score("Write a SQL query to find the minimum salary.", "Write a SQL query to find the maximum salary.", 0.9949)
	if a != c {
		t.Errorf("loaded model scores %v, built-in %v", a, c)
	}

	// Model alone round-trips too.
	mb, err := json.Marshal(useLiteModel)
	if err != nil {
		t.Fatal(err)
	}
	var m Model
	if err := json.Unmarshal(mb, &m); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(m, useLiteModel) {
		t.Errorf("Model round trip: %+v", m)
	}
}

func TestModelFileRefusesBadFiles(t *testing.T) {
	good := testModelFile()
	b, err := good.encode()
	if err != nil {
		t.Fatal(err)
	}
	edit := func(f func(map[string]any)) string {
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		f(m)
		out, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return string(out)
	}
	step := func(input, k int, x any) func(map[string]any) {
		return func(m map[string]any) { m["steps"].([]any)[input].([]any)[k] = x }
	}
	idx := func(name string) int {
		for i, n := range inputNames {
			if n == name {
				return i
			}
		}
		t.Fatalf("no input %s", name)
		return -1
	}
	for _, tc := range []struct {
		name, doc, want string
	}{
		{"empty", "", "unexpected end"},
		{"truncated", string(b[:len(b)/2]), "unexpected end"},
		{"not an object", "[1,2]", "not a verifier model file"},
		{"no format", edit(func(m map[string]any) { delete(m, "format") }), "no \"format\""},
		{"other format", edit(func(m map[string]any) { m["format"] = "edgecache-verifier-v2" }), `format "edgecache-verifier-v2"`},
		{"no embedder", edit(func(m map[string]any) { m["embedder"] = "" }), "missing field embedder"},
		{"no threshold", edit(func(m map[string]any) { delete(m, "threshold") }), "missing field threshold"},
		{"misspelt field", edit(func(m map[string]any) { m["treshold"] = 0.9 }), "unknown field"},
		{"threshold 1", edit(func(m map[string]any) { m["threshold"] = 1 }), "threshold 1: want a score in (0, 1)"},
		{"threshold 0", edit(func(m map[string]any) { m["threshold"] = 0 }), "threshold 0"},
		{"min cosine 2", edit(func(m map[string]any) { m["min_cosine"] = 2 }), "min_cosine 2"},
		{"a step too few", edit(func(m map[string]any) {
			s := m["steps"].([]any)
			s[0] = s[0].([]any)[1:]
		}), "steps of cosine: 15, want one per cut (16)"},
		{"an input too few", edit(func(m map[string]any) { m["steps"] = m["steps"].([]any)[1:] }), "steps: 21 inputs"},
		{"inputs renamed", edit(func(m map[string]any) { m["inputs"].([]any)[0] = "cos" }), "refit"},
		{"cuts moved", edit(func(m map[string]any) { m["cuts"].([]any)[0].([]any)[0] = 0.7 }), "cuts of cosine"},
		{"negation weakened", edit(step(idx("negation"), 0, 0)), "fixed difference"},
		{"difference counts for a match", edit(step(idx("entity"), 0, 0.5)), "against its sign"},
		{"huge bias", edit(func(m map[string]any) { m["bias"] = 1e6 }), "bias"},
		{"number out of range", strings.Replace(string(b), `"bias": -0.5608`, `"bias": 1e999`, 1), "bias"},
		{"trailing data", string(b) + "{}", "after top-level value"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "verifier.json")
			if err := os.WriteFile(path, []byte(tc.doc), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := ReadModelFile(path)
			if err == nil {
				t.Fatalf("read without error:\n%s", tc.doc)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) {
				t.Errorf("error %q, want it to name the file and say %q", err, tc.want)
			}
		})
	}
	if _, err := ReadModelFile(filepath.Join(t.TempDir(), "missing.json")); err == nil {
		t.Error("a missing file read without error")
	}
}

func TestWriteModelFileRefusesInvalidModels(t *testing.T) {
	f := testModelFile()
	f.Model.Threshold = 1 // what fitting gives when no threshold reaches the precision
	path := filepath.Join(t.TempDir(), "verifier.json")
	if err := WriteModelFile(path, f); err == nil || !strings.Contains(err.Error(), "threshold") {
		t.Errorf("WriteModelFile with threshold 1: %v", err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("a refused model left a file: %v", err)
	}
	f = testModelFile()
	f.Embedder = ""
	if err := WriteModelFile(path, f); err == nil {
		t.Error("WriteModelFile without an embedder name succeeded")
	}
}

func TestBuiltInCalibrationNamesModelFor(t *testing.T) {
	byName := map[string]Model{DefaultEmbedder: useLiteModel, "lexical-v1": lexicalModel}
	for _, name := range []string{"use-lite-v1", "use-lite-v1-cased", "lexical-v1", "remote:bge-m3", "", "zh-ngram-v1"} {
		want, ok := byName[BuiltInCalibration(name)]
		if !ok || !reflect.DeepEqual(modelFor(name), want) {
			t.Errorf("BuiltInCalibration(%q) = %q, which is not the model NewFor uses", name, BuiltInCalibration(name))
		}
	}
}
