package zh

import (
	"context"
	"math"
	"strings"
	"testing"

	"github.com/edgecache/edgecache/embed"
)

func cos(t *testing.T, e *Embedder, a, b string) float32 {
	t.Helper()
	vs, err := e.Embed(context.Background(), []string{a, b})
	if err != nil {
		t.Fatal(err)
	}
	return embed.Dot(vs[0], vs[1])
}

func TestEmbedder(t *testing.T) {
	e, err := New()
	if err != nil {
		t.Fatal(err)
	}
	if e.Dim() != 512 || !strings.HasPrefix(e.Name(), "zh-ngram-v1-") {
		t.Fatalf("Dim %d Name %q", e.Dim(), e.Name())
	}
	vs, _ := e.Embed(context.Background(), []string{"花呗怎么还款", "", "!!!"})
	for i, v := range vs {
		var n float64
		for _, x := range v {
			n += float64(x) * float64(x)
		}
		if math.Abs(n-1) > 1e-4 {
			t.Errorf("vector %d has norm² %v, want 1", i, n)
		}
	}
	// The same wording whatever the punctuation, spacing and case: the
	// verifier's same-wording rule relies on these embedding alike.
	if c := cos(t, e, "如何重置我的密码？", "如何重置 我的密码"); c < 0.9999 {
		t.Errorf("same wording: cosine %v, want 1", c)
	}
	if c := cos(t, e, "iPhone12怎么截屏", "iphone 12 怎么截屏"); c < 0.9999 {
		t.Errorf("same wording (letters, digits): cosine %v, want 1", c)
	}
	near := cos(t, e, "花呗怎么还款", "花呗如何还款")
	far := cos(t, e, "花呗怎么还款", "今天北京的天气怎么样")
	if !(near > 0.6 && far < near-0.3) {
		t.Errorf("paraphrase cosine %v, unrelated %v: want the paraphrase near and the unrelated far", near, far)
	}
}

func TestCoverage(t *testing.T) {
	e, _ := New()
	for _, c := range []struct {
		text string
		min  float64
		max  float64
	}{
		{"今天北京的天气怎么样？", 1, 1},
		{"如何在Python中读取CSV文件", 1, 1},
		{"How do I reset my password?", 1, 1},
		{"こんにちは", 0, 0},
		{"龘龘龘是什么", 0, 0.5}, // characters the training texts never held
		{"😀😀😀", 0, 0},
		{"", 1, 1},
	} {
		if got := e.Coverage(c.text); got < c.min || got > c.max {
			t.Errorf("Coverage(%q) = %v, want in [%v, %v]", c.text, got, c.min, c.max)
		}
	}
}

func TestTableRoundTrip(t *testing.T) {
	tab := Table([]string{"花呗怎么还款", "借呗怎么还款", "今天天气怎么样"})
	e, err := FromTable(tab)
	if err != nil {
		t.Fatal(err)
	}
	if c := e.Coverage("花呗怎么还款"); c != 1 {
		t.Errorf("coverage of a training text %v, want 1", c)
	}
	if c := e.Coverage("密码怎么还款"); math.Abs(c-4.0/6) > 1e-9 {
		t.Errorf("coverage of a text two of whose six characters training never held: %v, want 4/6", c)
	}
	if _, err := FromTable(tab[:10]); err == nil {
		t.Error("a short table was accepted")
	}
	// A character in every text weighs less than one in a single text.
	var common, rare float32
	Features("怎", func(h uint32, _ float32) { common = e.idf[h%idfBuckets] })
	Features("花", func(h uint32, _ float32) { rare = e.idf[h%idfBuckets] })
	if !(common < rare) {
		t.Errorf("idf of a character in every text %v, in one text %v", common, rare)
	}
}

func BenchmarkEmbedShort(b *testing.B) {
	e, _ := New()
	ctx := context.Background()
	texts := []string{"花呗怎么开通？我想用花呗付款"}
	b.ReportAllocs()
	for b.Loop() {
		_, _ = e.Embed(ctx, texts)
	}
}
