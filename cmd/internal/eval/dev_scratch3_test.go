package eval

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/edgecache/edgecache/cache/semantic/verify"
	"github.com/edgecache/edgecache/embed"
)

// TestDevStats: temporary research helper (removed before hand-off).
func TestDevStats(t *testing.T) {
	file := os.Getenv("DEV_PAIRS3")
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
	v := verify.NewFor(emb.Name())
	type st struct{ n, d [2]int }
	stats := make([]st, verify.NumInputs)
	for i, p := range pairs {
		c := embed.Dot(va[i], vb[i])
		if c < 0.9 {
			continue
		}
		f := v.Extract(p.B, p.A, c)
		x := f.Inputs()
		for j := range x {
			k := 0
			if x[j] != verify.Ideal()[j] {
				k = 1
			}
			stats[j].n[k]++
			if p.Duplicate {
				stats[j].d[k]++
			}
		}
	}
	for j, s := range stats {
		fmt.Printf("%-18s ideal: n=%6d dup=%.3f   other: n=%6d dup=%.3f\n", verify.InputNames[j], s.n[0], float64(s.d[0])/float64(max(s.n[0], 1)), s.n[1], float64(s.d[1])/float64(max(s.n[1], 1)))
	}
}
