package llmsim

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

type embeddingList struct {
	Object string `json:"object"`
	Data   []struct {
		Object    string          `json:"object"`
		Index     int             `json:"index"`
		Embedding json.RawMessage `json:"embedding"`
	} `json:"data"`
	Model string `json:"model"`
	Usage struct {
		PromptTokens int `json:"prompt_tokens"`
		TotalTokens  int `json:"total_tokens"`
	} `json:"usage"`
}

// getEmbeddings requests the embeddings of inputs in format ("" sends no
// encoding_format) and decodes them whatever the format.
func getEmbeddings(t *testing.T, ts *httptest.Server, inputs any, format string, extra ...any) ([][]float32, embeddingList) {
	t.Helper()
	body := with(map[string]any{"model": "sim-embed-1", "input": inputs}, extra...)
	if format != "" {
		body["encoding_format"] = format
	}
	resp, b := post(t, ts, "/v1/embeddings", body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	list := decode[embeddingList](t, b)
	var out [][]float32
	for i, d := range list.Data {
		if d.Object != "embedding" || d.Index != i {
			t.Errorf("data[%d] = object %q index %d", i, d.Object, d.Index)
		}
		var vec []float32
		if format == "base64" {
			var s string
			if err := json.Unmarshal(d.Embedding, &s); err != nil {
				t.Fatalf("base64 embedding is not a string: %.80s", d.Embedding)
			}
			raw, err := base64.StdEncoding.DecodeString(s)
			if err != nil || len(raw)%4 != 0 {
				t.Fatalf("bad base64 embedding (%v, %d bytes)", err, len(raw))
			}
			for j := 0; j < len(raw); j += 4 {
				vec = append(vec, math.Float32frombits(binary.LittleEndian.Uint32(raw[j:])))
			}
		} else {
			var fs []float64
			if err := json.Unmarshal(d.Embedding, &fs); err != nil {
				t.Fatalf("float embedding is not an array of numbers: %.80s", d.Embedding)
			}
			for _, f := range fs {
				vec = append(vec, float32(f))
			}
		}
		out = append(out, vec)
	}
	return out, list
}

func norm(v []float32) float64 {
	var n float64
	for _, x := range v {
		n += float64(x) * float64(x)
	}
	return math.Sqrt(n)
}

func TestEmbeddings(t *testing.T) {
	_, ts := newSim(t, Config{})
	inputs := []string{"the cat sat", "the cat sat", "a dog ran far"}
	floats, list := getEmbeddings(t, ts, inputs, "float")
	b64, _ := getEmbeddings(t, ts, inputs, "base64")
	plain, _ := getEmbeddings(t, ts, inputs, "")

	if list.Object != "list" || list.Model != "sim-embed-1" || list.Usage.PromptTokens != 10 || list.Usage.TotalTokens != 10 {
		t.Errorf("list object %q model %q usage %+v", list.Object, list.Model, list.Usage)
	}
	if len(floats) != 3 || len(b64) != 3 || len(plain) != 3 {
		t.Fatalf("got %d/%d/%d embeddings, want 3", len(floats), len(b64), len(plain))
	}
	for i := range inputs {
		if len(floats[i]) != DefaultEmbeddingDims {
			t.Errorf("input %d: %d dimensions, want %d", i, len(floats[i]), DefaultEmbeddingDims)
		}
		if !slices.Equal(floats[i], b64[i]) || !slices.Equal(floats[i], plain[i]) {
			t.Errorf("input %d: float, base64 and default encodings differ", i)
		}
		if n := norm(floats[i]); math.Abs(n-1) > 1e-5 {
			t.Errorf("input %d: norm %v, want 1", i, n)
		}
		want := make([]float32, DefaultEmbeddingDims)
		Vector(want, inputs[i])
		if !slices.Equal(floats[i], want) {
			t.Errorf("input %d: the answer is not Vector(input)", i)
		}
	}
	if !slices.Equal(floats[0], floats[1]) {
		t.Error("equal inputs, different vectors")
	}
	if slices.Equal(floats[0], floats[2]) {
		t.Error("different inputs, equal vectors")
	}

	one, _ := getEmbeddings(t, ts, "the cat sat", "base64", "dimensions", 12)
	if len(one) != 1 || len(one[0]) != 12 || math.Abs(norm(one[0])-1) > 1e-5 {
		t.Fatalf("dimensions 12: got %v", one)
	}
}

func TestEmbeddingDimsConfig(t *testing.T) {
	s, ts := newSim(t, Config{EmbeddingDims: 8})
	v, _ := getEmbeddings(t, ts, "x", "float")
	if len(v[0]) != 8 {
		t.Errorf("%d dimensions, want 8", len(v[0]))
	}
	s.SetConfig(Config{EmbeddingDims: 5})
	v, _ = getEmbeddings(t, ts, "x", "float")
	if len(v[0]) != 5 {
		t.Errorf("after SetConfig: %d dimensions, want 5", len(v[0]))
	}
}

func TestFoldEmbeddingText(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"", ""},
		{" \t\n ", ""},
		{"What is the capital of France?", "what is the capital of france?"},
		{"  wHaT   IS\tthe\r\ncapital of   FRANCE? ", "what is the capital of france?"},
		{"ÉCOLE\u00a0Normale\u2003SUPÉRIEURE", "école normale supérieure"},
		{"a\xffB  \xfeC", "a\xffb \xfec"}, // invalid UTF-8 bytes are kept
	} {
		if got := FoldEmbeddingText(tt.in); got != tt.want {
			t.Errorf("FoldEmbeddingText(%q) = %q, want %q", tt.in, got, tt.want)
		}
		// Valid UTF-8 folds as lower-case + strings.Fields would.
		if utf8.ValidString(tt.in) {
			if ref := strings.Join(strings.Fields(strings.ToLower(tt.in)), " "); FoldEmbeddingText(tt.in) != ref {
				t.Errorf("FoldEmbeddingText(%q) = %q, reference %q", tt.in, FoldEmbeddingText(tt.in), ref)
			}
		}
	}
}

// foldVariants are one prompt in different letter cases and spacings.
var foldVariants = []string{
	"What is the capital of France?",
	"what is the capital of france?",
	"WHAT IS THE CAPITAL OF FRANCE?",
	"  wHaT iS\tthe   CaPiTaL\nof fRANCE? ",
}

func TestEmbeddingFold(t *testing.T) {
	others := []string{"what is the capital of spain?", "whatis the capital of france?", "what is the capital of france"}

	// Default: every distinct text has its own vector, Vector(text) as before.
	_, ts := newSim(t, Config{})
	plain, _ := getEmbeddings(t, ts, foldVariants, "float")
	for i := range foldVariants {
		want := make([]float32, DefaultEmbeddingDims)
		Vector(want, foldVariants[i])
		if !slices.Equal(plain[i], want) {
			t.Errorf("default: variant %d is not Vector(text)", i)
		}
		for j := range i {
			if slices.Equal(plain[i], plain[j]) {
				t.Errorf("default: variants %d and %d have equal vectors", i, j)
			}
		}
	}

	// Folded: every variant gets the vector of the folded text; other texts
	// still differ from it and from each other.
	_, ts = newSim(t, Config{EmbeddingFold: true})
	folded, _ := getEmbeddings(t, ts, append(slices.Clone(foldVariants), others...), "base64")
	want := make([]float32, DefaultEmbeddingDims)
	Vector(want, "what is the capital of france?")
	for i := range foldVariants {
		if !slices.Equal(folded[i], want) {
			t.Errorf("fold: variant %d %q differs from Vector(folded text)", i, foldVariants[i])
		}
	}
	if math.Abs(norm(want)-1) > 1e-5 {
		t.Errorf("fold: norm %v, want 1", norm(want))
	}
	rest := folded[len(foldVariants):]
	for i := range rest {
		if slices.Equal(rest[i], want) {
			t.Errorf("fold: %q got the variants' vector", others[i])
		}
		for j := range i {
			if slices.Equal(rest[i], rest[j]) {
				t.Errorf("fold: %q and %q have equal vectors", others[i], others[j])
			}
		}
	}
}

func TestEmbeddingFoldConfig(t *testing.T) {
	s, ts := newSim(t, Config{})
	resp, b := do(t, ts, http.MethodPut, "/_sim/config", `{"embedding_fold":true}`)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), `"embedding_fold":true`) || !s.Config().EmbeddingFold {
		t.Fatalf("PUT embedding_fold true: %d %s, config %+v", resp.StatusCode, b, s.Config())
	}
	v, _ := getEmbeddings(t, ts, []string{foldVariants[0], foldVariants[2]}, "float")
	if !slices.Equal(v[0], v[1]) {
		t.Error("embedding_fold on: case variants differ")
	}
	resp, b = do(t, ts, http.MethodPut, "/_sim/config", `{"embedding_fold":false}`)
	if resp.StatusCode != http.StatusOK || strings.Contains(string(b), "embedding_fold") || s.Config().EmbeddingFold {
		t.Fatalf("PUT embedding_fold false: %d %s, config %+v", resp.StatusCode, b, s.Config())
	}
	v, _ = getEmbeddings(t, ts, []string{foldVariants[0], foldVariants[2]}, "float")
	if slices.Equal(v[0], v[1]) {
		t.Error("embedding_fold off again: case variants still equal")
	}
	if resp, b := do(t, ts, http.MethodPut, "/_sim/config", `{"embedding_fold":"yes"}`); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("PUT embedding_fold \"yes\": %d %s, want 400", resp.StatusCode, b)
	}
}
