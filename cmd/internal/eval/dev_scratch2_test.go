package eval

import (
	"context"
	"fmt"
	"math/rand"
	"os"
	"testing"

	"github.com/edgecache/edgecache/cache/semantic/verify"
	"github.com/edgecache/edgecache/embed"
)

// TestDevPairs: temporary research helper (removed before hand-off).
func TestDevPairs(t *testing.T) {
	file := os.Getenv("DEV_PAIRS2")
	if file == "" {
		t.Skip()
	}
	ctx := context.Background()
	o := &options{embedder: "use-lite", modelDir: "/work/main/models/use-lite", cacheDir: "/tmp/edgecache-emb", workers: 2}
	f, _ := os.Open(file)
	pairs, _, _ := ReadPairs(f)
	emb, closeFn, _ := openEmbedder(o, os.Stderr)
	defer closeFn()
	va, vb, err := embedPairs(ctx, emb, pairs, 2, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	test := splitByComponent(pairs, 0.3)
	trP, trA, trB := subset(pairs, va, vb, test, false)
	v := verify.NewFor(emb.Name())
	rng := rand.New(rand.NewSource(1))
	var fp, fn []string
	for i, p := range trP {
		c := embed.Dot(trA[i], trB[i])
		s, r := v.Score(p.B, p.A, c)
		line := fmt.Sprintf("%.3f cos %.3f %s\n   A: %s\n   B: %s", s, c, r, p.A, p.B)
		if !p.Duplicate && s > 0.9 {
			fp = append(fp, line)
		}
		if p.Duplicate && c > 0.9 && s < 0.5 {
			fn = append(fn, line)
		}
	}
	rng.Shuffle(len(fp), func(i, j int) { fp[i], fp[j] = fp[j], fp[i] })
	rng.Shuffle(len(fn), func(i, j int) { fn[i], fn[j] = fn[j], fn[i] })
	fmt.Println("FALSE POSITIVES", len(fp))
	for _, l := range fp[:min(60, len(fp))] {
		fmt.Println(l)
	}
	fmt.Println("FALSE NEGATIVES (cos>0.9)", len(fn))
	for _, l := range fn[:min(30, len(fn))] {
		fmt.Println(l)
	}
}
