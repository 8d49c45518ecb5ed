package eval

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/edgecache/edgecache/cache/semantic/verify"
)

func TestFitStepsKeepsPriorsAndSigns(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	idx := map[string]int{}
	for i := range verify.NumInputs {
		idx[verify.InputName(i)] = i
	}
	var ss []sample
	for range 4000 {
		var x [verify.NumInputs]float32
		x[idx["cosine"]] = 0.7 + 0.3*rng.Float32()
		x[idx["jaccard"]] = rng.Float32()
		x[idx["char_sim"]] = rng.Float32()
		x[idx["only_max"]] = float32(rng.IntN(4))
		x[idx["size"]] = float32(rng.IntN(10))
		if rng.IntN(10) == 0 {
			x[idx["negation"]] = 1
		}
		// Duplicates: high cosine and overlap; the noise makes some
		// inputs look useful the wrong way round, which fitting must not
		// believe.
		p := 0.1
		if x[idx["cosine"]] > 0.9 && x[idx["jaccard"]] > 0.5 {
			p = 0.9
		}
		ss = append(ss, sample{x: x, label: rng.Float64() < p})
	}
	bias, steps := fitSteps(ss, 1)
	for i, st := range steps {
		if len(st) != len(verify.Cuts(i)) {
			t.Fatalf("%s: %d steps for %d cuts", verify.InputName(i), len(st), len(verify.Cuts(i)))
		}
		if w, fixed := verify.Prior(i); fixed {
			if st[0] != w {
				t.Errorf("%s: step %v, want the prior %v", verify.InputName(i), st[0], w)
			}
			continue
		}
		for k, x := range st {
			if float64(x)*float64(verify.Sign(i)) < 0 {
				t.Errorf("%s: step %d is %v, against its sign %d", verify.InputName(i), k, x, verify.Sign(i))
			}
		}
	}
	m := verify.Model{Bias: bias, Steps: steps, Threshold: 0.5}
	v := verify.NewModel(m)
	hi, _ := v.Score("how do I learn python", "how can I learn python", 0.97)
	lo, _ := v.Score("how do I learn python", "how can I learn python", 0.75)
	if hi <= lo || hi < 0.5 {
		t.Errorf("fitted model scores %.3f at cosine 0.97 and %.3f at 0.75", hi, lo)
	}
	if mc := m.MinCosineAt(m.Threshold); mc < 0.7 || mc > 0.95 {
		t.Errorf("lossless min cosine %v, want within the region where duplicates start", mc)
	}
}

func TestSplitByComponent(t *testing.T) {
	var pairs []Pair
	// A chain a0–a1–…–a9 (one component) and 200 separate pairs.
	for i := range 9 {
		pairs = append(pairs, Pair{A: "chain " + string(rune('a'+i)), B: "chain " + string(rune('a'+i+1))})
	}
	for i := range 200 {
		pairs = append(pairs, Pair{A: "q" + string(rune(1000+i)), B: "r" + string(rune(1000+i))})
	}
	test := splitByComponent(pairs, 0.3)
	for i := 1; i < 9; i++ {
		if test[i] != test[0] {
			t.Fatalf("the chain is split across training and test")
		}
	}
	n := 0
	for _, x := range test[9:] {
		if x {
			n++
		}
	}
	if n < 30 || n > 90 {
		t.Errorf("%d of 200 separate pairs in test, want about 60", n)
	}
	if again := splitByComponent(pairs, 0.3); !slices.Equal(again, test) {
		t.Error("the split is not stable across runs")
	}
}
