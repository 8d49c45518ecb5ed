package eval

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"

	"github.com/edgecache/edgecache/cache/semantic/verify"
)

// TestDevDump: temporary research helper (removed before hand-off).
func TestDevDump(t *testing.T) {
	file := os.Getenv("DEV_PAIRS")
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
	teP, teA, teB := subset(pairs, va, vb, test, true)
	ms, _ := retrieve(ctx, teP, teA, teB, emb.Name(), 0.8, 2, os.Stderr)
	lab := newLabels(teP)
	v := verify.NewFor(emb.Name())
	// explicit labels
	type key struct{ a, b string }
	explicit := map[key]bool{}
	for _, p := range teP {
		explicit[key{normText(p.A), normText(p.B)}] = p.Duplicate
		explicit[key{normText(p.B), normText(p.A)}] = p.Duplicate
	}
	lo, _ := strconv.ParseFloat(os.Getenv("DEV_LO"), 64)
	n := 0
	cats := map[string]int{}
	for i, p := range teP {
		if lab.stored(p.B) {
			continue
		}
		best, bs := -1, float32(-1)
		for j, m := range ms[i] {
			s, _ := v.Score(p.B, m.Text, m.Score)
			if s > bs {
				best, bs = j, s
			}
		}
		if best < 0 || float64(bs) < lo {
			continue
		}
		m := ms[i][best]
		cat := "unknown"
		if lab.dup(p.B, m.Text) {
			cat = "dup"
		} else if d, ok := explicit[key{normText(p.B), normText(m.Text)}]; ok && !d {
			cat = "labelled-not"
		}
		cats[cat]++
		if cat != "dup" && n < 60 {
			n++
			fmt.Printf("%s %.3f cos %.3f\n   Q: %s\n   C: %s\n", cat, bs, m.Score, p.B, m.Text)
		}
	}
	fmt.Println(cats)
}
