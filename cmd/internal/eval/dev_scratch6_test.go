package eval

import (
	"context"
	"fmt"
	"math"
	"os"
	"sort"
	"testing"

	"github.com/edgecache/edgecache/cache/semantic/verify"
	"github.com/edgecache/edgecache/embed"
)

type gnode struct {
	feat  int
	thr   float32
	left  int
	right int
	leaf  bool
	val   float64
}

type gtree []gnode

func (t gtree) eval(x []float32) float64 {
	i := 0
	for !t[i].leaf {
		if x[t[i].feat] <= t[i].thr {
			i = t[i].left
		} else {
			i = t[i].right
		}
	}
	return t[i].val
}

func buildTree(X [][]float32, g, h []float64, idx []int, depth int, lambda float64, t *gtree, cands [][]float32) int {
	var G, H float64
	for _, i := range idx {
		G += g[i]
		H += h[i]
	}
	me := len(*t)
	*t = append(*t, gnode{leaf: true, val: -G / (H + lambda)})
	if depth == 0 || len(idx) < 40 {
		return me
	}
	bestGain, bf, bthr := 0.0, -1, float32(0)
	base := G * G / (H + lambda)
	for f := range cands {
		for _, thr := range cands[f] {
			var GL, HL float64
			nl := 0
			for _, i := range idx {
				if X[i][f] <= thr {
					GL += g[i]
					HL += h[i]
					nl++
				}
			}
			if nl < 20 || len(idx)-nl < 20 {
				continue
			}
			GR, HR := G-GL, H-HL
			gain := GL*GL/(HL+lambda) + GR*GR/(HR+lambda) - base
			if gain > bestGain {
				bestGain, bf, bthr = gain, f, thr
			}
		}
	}
	if bf < 0 {
		return me
	}
	var li, ri []int
	for _, i := range idx {
		if X[i][bf] <= bthr {
			li = append(li, i)
		} else {
			ri = append(ri, i)
		}
	}
	(*t)[me].leaf = false
	(*t)[me].feat, (*t)[me].thr = bf, bthr
	l := buildTree(X, g, h, li, depth-1, lambda, t, cands)
	r := buildTree(X, g, h, ri, depth-1, lambda, t, cands)
	(*t)[me].left, (*t)[me].right = l, r
	return me
}

func TestDevGBDT(t *testing.T) {
	file := os.Getenv("DEV_PAIRS6")
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
	test := splitByComponent(pairs, 0.3)
	v := verify.NewFor(emb.Name())
	var X, Xt [][]float32
	var y, yt []bool
	var teCos []float64
	for i, p := range pairs {
		c := embed.Dot(va[i], vb[i])
		fe := v.Extract(p.B, p.A, c)
		x := fe.Inputs()
		if test[i] {
			Xt = append(Xt, x[:])
			yt = append(yt, p.Duplicate)
			teCos = append(teCos, float64(c))
		} else if c >= 0.8 {
			X = append(X, x[:])
			y = append(y, p.Duplicate)
		}
	}
	nf := len(X[0])
	cands := make([][]float32, nf)
	for fi := range nf {
		vals := make([]float32, len(X))
		for i := range X {
			vals[i] = X[i][fi]
		}
		sort.Slice(vals, func(a, b int) bool { return vals[a] < vals[b] })
		seen := map[float32]bool{}
		for q := 1; q < 32; q++ {
			x := vals[q*len(vals)/32]
			if !seen[x] {
				seen[x] = true
				cands[fi] = append(cands[fi], x)
			}
		}
	}
	F := make([]float64, len(X))
	pos := 0
	for _, v := range y {
		if v {
			pos++
		}
	}
	f0 := math.Log(float64(pos) / float64(len(y)-pos))
	for i := range F {
		F[i] = f0
	}
	var trees []gtree
	idx := make([]int, len(X))
	for i := range idx {
		idx[i] = i
	}
	g, h := make([]float64, len(X)), make([]float64, len(X))
	const lr = 0.1
	for round := 0; round < devRounds; round++ {
		for i := range X {
			p := 1 / (1 + math.Exp(-F[i]))
			yy := 0.0
			if y[i] {
				yy = 1
			}
			g[i], h[i] = p-yy, p*(1-p)
		}
		var tr gtree
		buildTree(X, g, h, idx, devDepth, 1, &tr, cands)
		for i := range tr {
			tr[i].val *= lr
		}
		trees = append(trees, tr)
		for i := range X {
			F[i] += tr.eval(X[i])
		}
	}
	sc := make([]float64, len(Xt))
	for i := range Xt {
		s := f0
		for _, tr := range trees {
			s += tr.eval(Xt[i])
		}
		sc[i] = s
	}
	for _, r := range []float64{0.1, 0.15, 0.2, 0.25, 0.3} {
		p1, _ := precAt(teCos, yt, r)
		p2, th := precAt(sc, yt, r)
		fmt.Printf("recall %.2f: cosine P %.4f   GBDT P %.4f (p=%.3f)\n", r, p1, p2, 1/(1+math.Exp(-th)))
	}
}

var devDepth, devRounds = func() (int, int) {
	var d, r int
	fmt.Sscan(os.Getenv("DEV_DEPTH"), &d)
	fmt.Sscan(os.Getenv("DEV_ROUNDS"), &r)
	return d, r
}()
