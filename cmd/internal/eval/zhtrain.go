package eval

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strings"

	"github.com/edgecache/edgecache/cache/semantic/verify"
	"github.com/edgecache/edgecache/embed"
	"github.com/edgecache/edgecache/embed/zh"
)

// TrainZh is `edgecache train-zh`: it builds the Chinese embedder's weight
// table and learns the Chinese verifier from labelled pairs, reporting
// held-out figures. It exists so that the checked-in weights
// (embed/zh/idf.bin, cache/semantic/verify/zh_model.bin) can be rebuilt,
// and their quality re-measured, by anyone with the data.
//
// Each file is split by connected component (as --fit does): --holdout of
// it is held out, never seen by the table or the model, and scored at the
// end, pairwise and in cache mode. The default threshold is set from
// out-of-fold scores of the training part (5 folds): the score at which
// their pairwise precision reaches --precision is mapped to the verifier's
// default threshold by shifting the bias, so one threshold serves both
// languages with a stated meaning. With --holdout 0 every pair trains (for
// the shipped weights) and only the out-of-fold estimate is reported.
func TrainZh(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("train-zh", flag.ContinueOnError)
	fs.SetOutput(stderr)
	files := fs.String("pairs", "", "comma-separated labelled pair files (label<TAB>text_a<TAB>text_b)")
	holdout := fs.Float64("holdout", 0.3, "share of each file held out (by connected component); 0: train on all")
	precision := fs.Float64("precision", 0.95, "out-of-fold pairwise precision the default threshold is set to")
	epochs := fs.Int("epochs", 6, "passes over the training pairs")
	l2 := fs.Float64("l2", 1e-4, "L2 penalty")
	negWeight := fs.Float64("neg-weight", 2, "weight of a non-duplicate pair in the loss (precision first: > 1)")
	outModel := fs.String("out-model", "", "write the verifier model here (cache/semantic/verify/zh_model.bin)")
	outTable := fs.String("out-table", "", "write the embedder's weight table here (embed/zh/idf.bin)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *files == "" {
		return errors.New("train-zh: --pairs is required")
	}
	var train, test [][]Pair
	var names []string
	for _, f := range strings.Split(*files, ",") {
		ps, err := readPairFile(f)
		if err != nil {
			return err
		}
		tr, te := ps, []Pair(nil)
		if *holdout > 0 {
			side := splitByComponent(ps, *holdout)
			tr, te = nil, nil
			for i, p := range ps {
				if side[i] {
					te = append(te, p)
				} else {
					tr = append(tr, p)
				}
			}
		}
		train, test, names = append(train, tr), append(test, te), append(names, f)
		fmt.Fprintf(stdout, "%s: %d training pairs, %d held out\n", f, len(tr), len(te))
	}
	all := slices.Concat(train...)
	fileOf := make([]int, 0, len(all))
	for i, tr := range train {
		for range tr {
			fileOf = append(fileOf, i)
		}
	}
	var texts []string
	for _, p := range all {
		texts = append(texts, p.A, p.B)
	}
	table := zh.Table(texts)
	e, err := zh.FromTable(table)
	if err != nil {
		return err
	}
	tc := zhTrainConfig{epochs: *epochs, l2: *l2, negWeight: *negWeight}
	samples, err := zhSamples(ctx, e, all)
	if err != nil {
		return err
	}
	oof := zhOutOfFold(samples, tc, 5)
	// The threshold must reach the precision on every file: one pooled
	// figure would let the larger or easier file carry the other.
	raw := float32(0)
	for f := range train {
		var sc []float64
		var ss []zhSample
		for i, s := range samples {
			if fileOf[i] == f {
				sc, ss = append(sc, oof[i]), append(ss, s)
			}
		}
		t := thresholdAt(sc, ss, *precision)
		fmt.Fprintf(stdout, "out-of-fold %s: precision %.2f from raw score %.4f\n", names[f], *precision, t)
		if f == 0 {
			raw = t
		}
	}
	m := zhTrain(samples, tc)
	m.MinCosine = zhMinCosine
	shift := logit(verify.DefaultThreshold(verify.DefaultEmbedder)) - logit(raw)
	m.Bias += shift
	fmt.Fprintf(stdout, "out-of-fold: raw threshold %.4f for pairwise precision %.2f; bias shifted by %+.3f\n", raw, *precision, shift)
	v := verify.NewZh(m)
	for i, te := range test {
		if len(te) == 0 {
			continue
		}
		if err := zhReport(ctx, stdout, names[i], te, e, v); err != nil {
			return err
		}

	}
	if *outModel != "" {
		b, _ := m.MarshalBinary()
		if err := os.WriteFile(*outModel, b, 0o644); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "wrote %s (%d bytes)\n", *outModel, len(b))
	}
	if *outTable != "" {
		if err := os.WriteFile(*outTable, table, 0o644); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "wrote %s (%d bytes)\n", *outTable, len(table))
	}
	return nil
}

// zhMinCosine is the Chinese model's cosine gate: below it a candidate
// scores 0 (the lossless pre-filter). Held-out duplicates under it are
// rare (see the README's figures).
const zhMinCosine = 0.3

func readPairFile(path string) ([]Pair, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ps, _, err := ReadPairs(f)
	return ps, err
}

type zhSample struct {
	in  []verify.ZhInput
	y   float32
	opp bool
}

type zhTrainConfig struct {
	epochs    int
	l2        float64
	negWeight float64
}

func zhSamples(ctx context.Context, e embed.Embedder, ps []Pair) ([]zhSample, error) {
	out := make([]zhSample, len(ps))
	for i, p := range ps {
		vs, err := e.Embed(ctx, []string{p.A, p.B})
		if err != nil {
			return nil, err
		}
		cos := embed.Dot(vs[0], vs[1])
		in, opp, _ := verify.ZhFeatures(p.B, p.A, cos, nil)
		y := float32(0)
		if p.Duplicate {
			y = 1
		}
		out[i] = zhSample{in: slices.Clone(in), y: y, opp: opp}
	}
	return out, nil
}

// zhTrain fits the logistic model with AdaGrad, holding each weight to its
// sign (verify.ZhSign; one-side units ≤ 0).
func zhTrain(ss []zhSample, tc zhTrainConfig) *verify.ZhModel {
	w := make([]float64, verify.ZhInputs)
	g2 := make([]float64, verify.ZhInputs)
	sign := verify.ZhSignTable()
	var bias, gb float64
	order := make([]int, len(ss))
	for i := range order {
		order[i] = i
	}
	rng := rand.New(rand.NewPCG(1, 2))
	const lr = 0.1
	for range tc.epochs {
		rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		for _, k := range order {
			s := ss[k]
			if s.opp {
				continue // a set rule decides it; learning around the rule would undo it
			}
			z := bias
			for _, x := range s.in {
				z += w[x.Index] * float64(x.Value)
			}
			g := 1/(1+math.Exp(-z)) - float64(s.y)
			if s.y == 0 {
				g *= tc.negWeight
			}
			gb += g * g
			bias -= lr * g / math.Sqrt(gb+1e-8)
			for _, x := range s.in {
				i := x.Index
				gi := g*float64(x.Value) + tc.l2*w[i]
				g2[i] += gi * gi
				w[i] -= lr * gi / math.Sqrt(g2[i]+1e-8)
				switch {
				case sign[i] > 0 && w[i] < 0, sign[i] < 0 && w[i] > 0:
					w[i] = 0
				}
			}
		}
	}
	m := &verify.ZhModel{Bias: float32(bias), Weights: make([]float32, verify.ZhInputs)}
	for i, x := range w {
		m.Weights[i] = float32(x)
	}
	return m
}

func (s zhSample) prob(m *verify.ZhModel) float64 {
	z := float64(m.Logit(s.in))
	if s.opp {
		z = min(z, -math.Log(3)) // verify's rule cap
	}
	return 1 / (1 + math.Exp(-z))
}

// zhOutOfFold returns every sample's score from a model trained without
// its fold.
func zhOutOfFold(ss []zhSample, tc zhTrainConfig, folds int) []float64 {
	out := make([]float64, len(ss))
	for f := range folds {
		var tr []zhSample
		for i, s := range ss {
			if i%folds != f {
				tr = append(tr, s)
			}
		}
		m := zhTrain(tr, tc)
		for i, s := range ss {
			if i%folds == f {
				out[i] = s.prob(m)
			}
		}
	}
	return out
}

// thresholdAt is the lowest score at which the samples' precision is at
// least p (scanning from the top, the last point still at p).
func thresholdAt(scores []float64, ss []zhSample, p float64) float32 {
	idx := make([]int, len(scores))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int {
		switch {
		case scores[a] > scores[b]:
			return -1
		case scores[a] < scores[b]:
			return 1
		}
		return 0
	})
	best := 1.0
	tp := 0
	for n, i := range idx {
		if ss[i].y == 1 {
			tp++
		}

		if n >= 50 && float64(tp)/float64(n+1) >= p {
			best = scores[i]
		}
	}
	return float32(best)
}

func logit(p float32) float32 { return float32(math.Log(float64(p) / (1 - float64(p)))) }

// zhReport scores held-out pairs pairwise and in cache mode at the default
// threshold and at the degraded floor.
func zhReport(ctx context.Context, w io.Writer, name string, ps []Pair, e embed.Embedder, v *verify.ZhVerifier) error {
	va, vb, err := embedPairs(ctx, e, ps, 2, io.Discard)
	if err != nil {
		return err
	}
	thr := verify.DefaultThreshold(verify.DefaultEmbedder)
	var dups, under [3]int
	for i, p := range ps {
		if p.Duplicate {
			for k, g := range []float32{0.3, 0.4, 0.5} {
				dups[k]++
				if embed.Dot(va[i], vb[i]) < g {
					under[k]++
				}
			}
		}
	}
	fmt.Fprintf(w, "%s held out: duplicates under cosine 0.3/0.4/0.5: %d/%d/%d of %d\n", name, under[0], under[1], under[2], dups[0])
	sp := spacesOf(e, ps)
	pw, err := scorePairsAt(ctx, ps, va, vb, sp, v, false, v.MinCosine(0.5), v.MinCosine(thr), 2)
	if err != nil {
		return err
	}
	ms, err := retrieve(ctx, ps, va, vb, sp, e.Name(), v.MinCosine(0.5), 2, io.Discard)
	if err != nil {
		return err
	}
	cm := judgeAll(ctx, ps, ms, v, false, v.MinCosine(0.5), 2)
	for _, t := range []float32{thr, verify.DegradedFloor, 0.9, 0.93, 0.95, 0.97, 0.98} {
		a := countAt(pw, t, defOwn, false)
		b := countAt(cm, t, defJudged, false)
		lb := countAt(cm, t, defKnown, false)
		fmt.Fprintf(w, "%s held out @%.3f: pairwise P %.3f R %.3f (%d hits) | cache judged P %.3f R %.3f (%d hits), known-dup P %.3f (%d hits)\n",
			name, t, a.Precision, a.Recall, a.Hits, b.Precision, b.Recall, b.Hits, lb.Precision, lb.Hits)
	}
	return nil
}
