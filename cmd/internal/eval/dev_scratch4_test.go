package eval

import (
	"context"
	"fmt"
	"os"
	"sort"
	"testing"

	"github.com/edgecache/edgecache/cache/semantic/verify"
	"github.com/edgecache/edgecache/embed"
)

// precAt returns the precision at the score threshold reaching recall r.
func precAt(scores []float64, y []bool, r float64) (float64, float64) {
	idx := make([]int, len(scores))
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(a, b int) bool { return scores[idx[a]] > scores[idx[b]] })
	pos := 0
	for _, v := range y {
		if v {
			pos++
		}
	}
	tp, n := 0, 0
	for _, i := range idx {
		n++
		if y[i] {
			tp++
		}
		if float64(tp)/float64(pos) >= r {
			return float64(tp) / float64(n), scores[i]
		}
	}
	return 0, 0
}

func TestDevLR(t *testing.T) {
	file := os.Getenv("DEV_PAIRS4")
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
	v := verify.NewFor(emb.Name())
	var tr, te []sample
	var teCos []float64
	for i, p := range pairs {
		c := embed.Dot(va[i], vb[i])
		fe := v.Extract(p.B, p.A, c)
		s := sample{x: fe.Inputs(), label: p.Duplicate}
		if test[i] {
			te = append(te, s)
			teCos = append(teCos, float64(c))
		} else if float64(c) >= devMin {
			tr = append(tr, s)
		}
	}
	l2 := 1.0
	fmt.Sscan(os.Getenv("DEV_L2"), &l2)
	b, steps := fitSteps(tr, l2)
	m := v.Model()
	m.Bias, m.Steps = b, steps
	vm := verify.NewModel(m)
	for j := range steps {
		fmt.Printf("%-18s %v\n", verify.InputNames[j], steps[j])
	}
	sc := make([]float64, len(te))
	y := make([]bool, len(te))
	ti := 0
	for i, p := range pairs {
		if !test[i] {
			continue
		}
		c := embed.Dot(va[i], vb[i])
		s, _ := vm.Score(p.B, p.A, c)
		if float64(c) < devMin {
			s = 0
		}
		sc[ti] = float64(s)
		y[ti] = p.Duplicate
		ti++
	}
	for _, r := range []float64{0.1, 0.15, 0.2, 0.25, 0.3} {
		p1, _ := precAt(teCos, y, r)
		p2, th := precAt(sc, y, r)
		fmt.Printf("recall %.2f: cosine P %.4f   steps P %.4f (p=%.3f)\n", r, p1, p2, th)
	}
}

var devMin = func() float64 {
	x := 0.8
	fmt.Sscan(os.Getenv("DEV_MIN"), &x)
	return x
}()
