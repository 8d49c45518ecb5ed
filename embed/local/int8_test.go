package local

import (
	"bufio"
	"context"
	"math"
	"os"
	"strings"
	"testing"

	"github.com/edgecache/edgecache/embed"
)

// int8Tolerance is the published parity of the int8 path: every text's
// int8 vector has cosine at least this to its float32 vector, and a pair's
// cosine moves by at most int8PairTolerance.
const (
	int8Tolerance     = 0.995
	int8PairTolerance = 0.02
)

// parityTexts are the golden and benchmark texts, and with the QQP data the
// questions of its first pairs (limit of them).
func parityTexts(t *testing.T, limit int) (texts []string, pairs int) {
	for _, g := range golden {
		texts = append(texts, g.text)
	}
	texts = append(texts, shortQuestions...)
	f, err := os.Open(qqpPath(t))
	if err != nil {
		t.Logf("no QQP data (%v): golden and benchmark texts only", err)
		return texts, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	var a, b []string
	for first := true; sc.Scan() && len(a) < limit; first = false {
		fields := strings.Split(sc.Text(), "\t")
		if first || len(fields) != 3 {
			continue
		}
		a, b = append(a, fields[1]), append(b, fields[2])
	}
	// The pairs first: texts[2i], texts[2i+1].
	pt := make([]string, 0, 2*len(a)+len(texts))
	for i := range a {
		pt = append(pt, a[i], b[i])
	}
	return append(pt, texts...), len(a)
}

// TestInt8Parity compares the int8 path with the float32 one.
func TestInt8Parity(t *testing.T) {
	limit := 5000
	if testing.Short() || raceEnabled {
		limit = 200
	}
	texts, pairs := parityTexts(t, limit)
	_, m := models(t)
	fm := m.WithOptions(Options{Lowercase: true})
	qm := m.WithOptions(Options{Lowercase: true, Int8: true})
	ctx := context.Background()
	vf, err := fm.Embed(ctx, texts)
	if err != nil {
		t.Fatal(err)
	}
	vq, err := qm.Embed(ctx, texts)
	if err != nil {
		t.Fatal(err)
	}
	minCos, worst := 1.0, ""
	var sum float64
	for i := range texts {
		checkUnit(t, "int8", vq[i])
		c := float64(embed.Dot(vf[i], vq[i]))
		sum += c
		if c < minCos {
			minCos, worst = c, texts[i]
		}
	}
	maxPair, sumPair := 0.0, 0.0
	for i := 0; i < pairs; i++ {
		d := math.Abs(float64(embed.Dot(vq[2*i], vq[2*i+1]) - embed.Dot(vf[2*i], vf[2*i+1])))
		sumPair += d
		maxPair = max(maxPair, d)
	}
	t.Logf("%d texts: cosine int8 vs float32 min %.5f (%.60q), mean %.6f; %d pairs: |Δ pair cosine| max %.5f, mean %.6f",
		len(texts), minCos, worst, sum/float64(len(texts)), pairs, maxPair, sumPair/float64(max(pairs, 1)))
	if minCos < int8Tolerance {
		t.Errorf("min cosine %.5f < %v", minCos, int8Tolerance)
	}
	if maxPair > int8PairTolerance {
		t.Errorf("pair cosine moved by %.5f > %v", maxPair, int8PairTolerance)
	}
}
