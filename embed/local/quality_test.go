package local

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/edgecache/edgecache/embed"
)

// qqpPath is evaluation data kept outside the repository (Quora's terms);
// EDGECACHE_QQP overrides it.
func qqpPath(t *testing.T) string {
	if p := os.Getenv("EDGECACHE_QQP"); p != "" {
		return p
	}
	wd, _ := os.Getwd()
	for d := wd; filepath.Dir(d) != d; d = filepath.Dir(d) {
		p := filepath.Join(d, "shared", "data", "qqp-dev.tsv")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return "/work/shared/data/qqp-dev.tsv"
}

// TestQQPSanity logs the pairwise ROC-AUC of cosine similarity on the first
// 5,000 Quora question pairs, cased and lower-cased. It only logs (the bar
// is SEMANTIC.md's 0.827 / 0.830); it is skipped in -short mode, under the
// race detector (too slow) and when the data is absent.
func TestQQPSanity(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("slow; run without -short and -race")
	}
	f, err := os.Open(qqpPath(t))
	if err != nil {
		t.Skipf("no QQP data: %v", err)
	}
	defer f.Close()
	var labels []bool
	var a, b []string
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for first := true; sc.Scan() && len(labels) < 5000; first = false {
		if first {
			continue
		}
		fields := strings.Split(sc.Text(), "\t")
		if len(fields) != 3 {
			continue
		}
		labels = append(labels, fields[0] == "1")
		a = append(a, fields[1])
		b = append(b, fields[2])
	}
	casedModel, lowerModel := models(t)
	for _, m := range []*Model{casedModel, lowerModel} {
		va, err := m.Embed(context.Background(), a)
		if err != nil {
			t.Fatal(err)
		}
		vb, err := m.Embed(context.Background(), b)
		if err != nil {
			t.Fatal(err)
		}
		scores := make([]float64, len(labels))
		for i := range scores {
			scores[i] = float64(embed.Dot(va[i], vb[i]))
		}
		t.Logf("%s: %d pairs, ROC-AUC %.4f", m.Name(), len(labels), rocAUC(scores, labels))
	}
}

// rocAUC is the Mann–Whitney estimate: the probability that a positive
// scores above a negative, ties counting half.
func rocAUC(scores []float64, pos []bool) float64 {
	idx := make([]int, len(scores))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(i, j int) int {
		switch {
		case scores[i] < scores[j]:
			return -1
		case scores[i] > scores[j]:
			return 1
		}
		return 0
	})
	var rankSum float64
	var nPos, nNeg float64
	for i := 0; i < len(idx); {
		j := i
		for j < len(idx) && scores[idx[j]] == scores[idx[i]] {
			j++
		}
		avg := float64(i+j+1) / 2 // ranks are 1-based
		for k := i; k < j; k++ {
			if pos[idx[k]] {
				rankSum += avg
				nPos++
			} else {
				nNeg++
			}
		}
		i = j
	}
	if nPos == 0 || nNeg == 0 {
		return 0
	}
	return (rankSum - nPos*(nPos+1)/2) / (nPos * nNeg)
}

func TestROCAUC(t *testing.T) {
	if got := rocAUC([]float64{0.1, 0.4, 0.35, 0.8}, []bool{false, false, true, true}); got != 0.75 {
		t.Fatalf("AUC = %v, want 0.75", got)
	}
	if got := rocAUC([]float64{1, 1}, []bool{true, false}); got != 0.5 {
		t.Fatalf("AUC with a tie = %v, want 0.5", got)
	}
}
