package lexical

import (
	"context"
	"math"
	"reflect"
	"testing"

	"github.com/edgecache/edgecache/embed"
)

func TestWords(t *testing.T) {
	got := Words("Don't PANIC: ﬁle 42 times—now! 你好")
	want := []string{"don't", "panic", "file", "42", "times", "now", "你", "好"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Words = %q, want %q", got, want)
	}
}

func TestLexicalSimilarity(t *testing.T) {
	e := New(0)
	vs, err := e.Embed(context.Background(), []string{
		"How do I reset my password?",
		"how do i reset my pasword",       // typo
		"my password: how do I reset it?", // order
		"What is the capital of France?",
		"",
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range vs[:4] {
		var n float64
		for _, x := range v {
			n += float64(x) * float64(x)
		}
		if math.Abs(n-1) > 1e-4 || len(v) != DefaultDim {
			t.Errorf("vector %d: norm² %v, len %d", i, n, len(v))
		}
	}
	typo, order, other := embed.Dot(vs[0], vs[1]), embed.Dot(vs[0], vs[2]), embed.Dot(vs[0], vs[3])
	if typo < 0.6 || order < 0.6 || other > 0.3 {
		t.Errorf("similarities: typo %.3f, order %.3f (want high), unrelated %.3f (want low)", typo, order, other)
	}
	if embed.Dot(vs[4], vs[4]) != 0 {
		t.Errorf("empty text should embed to the zero vector")
	}
	// Deterministic across instances (replicas must agree).
	v2, _ := New(0).Embed(context.Background(), []string{"How do I reset my password?"})
	if !reflect.DeepEqual(v2[0], vs[0]) {
		t.Error("not deterministic")
	}
}

func BenchmarkLexical(b *testing.B) {
	e := New(0)
	texts := []string{"How do I learn Python quickly as a beginner?"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.Embed(context.Background(), texts); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "embeddings/s")
}
