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

func TestDevJ1(t *testing.T) {
	file := os.Getenv("DEV_PAIRS5")
	if file == "" {
		t.Skip()
	}
	ctx := context.Background()
	o := &options{embedder: "use-lite", modelDir: "/work/main/models/use-lite", cacheDir: "/tmp/edgecache-emb", workers: 2}
	f, _ := os.Open(file)
	pairs, _, _ := ReadPairs(f)
	emb, closeFn, _ := openEmbedder(o, os.Stderr)
	defer closeFn()
	va, vb, _ := embedPairs(ctx, emb, pairs, 2, os.Stderr)
	v := verify.NewFor(emb.Name())
	var lines []string
	n, d := 0, 0
	for i, p := range pairs {
		c := embed.Dot(va[i], vb[i])
		if c < 0.9 {
			continue
		}
		fe := v.Extract(p.B, p.A, c)
		if fe.Swap > 0.3 && fe.Jaccard > 0.7 {
			n++
			if p.Duplicate {
				d++
			}
			{
				lines = append(lines, fmt.Sprintf("%v %.3f | %s | %s", p.Duplicate, c, p.A, p.B))
			}
		}
	}
	fmt.Println(n, d)
	rand.New(rand.NewSource(3)).Shuffle(len(lines), func(i, j int) { lines[i], lines[j] = lines[j], lines[i] })
	for _, l := range lines[:50] {
		fmt.Println(l)
	}
}
