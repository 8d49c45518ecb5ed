package semantic

import (
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"testing"
	"time"

	coderhnsw "github.com/coder/hnsw"
)

// BenchmarkHNSWVersusCoder is the evidence for writing our own graph
// instead of using github.com/coder/hnsw v0.6.1: both graphs are built
// over the same clustered 512-d data with M=16 and a construction beam of
// 100, then searched with a beam of 64 for the same near and fresh
// queries (see bench_test.go), k=1, recall against exact search. Latency
// is the searching thread's CPU time, so a busy machine does not decide
// the comparison.
//
// coder/hnsw is run twice: as shipped (its CosineDistance computes norms
// on every comparison) and with our dot-product kernel as its distance, to
// separate the graph algorithm from the arithmetic.
//
// EDGECACHE_BENCH_COMPARE_N sets the size (default 20,000: coder/hnsw
// builds slowly).
func BenchmarkHNSWVersusCoder(b *testing.B) {
	n := 20_000
	if v, err := strconv.Atoi(os.Getenv("EDGECACHE_BENCH_COMPARE_N")); err == nil && v > 0 {
		n = v
	}
	set := makeBenchSet("clustered", n)
	const m, efC, ef = 16, 100, 64

	type searcher func(q []float32) int // nearest stored index, or -1
	run := func(b *testing.B, build func() searcher) {
		before := heapInUse()
		start := time.Now()
		search := build()
		buildTime := time.Since(start)
		perEntry := float64(heapInUse()-before) / float64(n)
		var all []time.Duration // CPU time of the searching thread
		measure := func(qs [][]float32, truth []int) float64 {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			hits := 0
			for i, q := range qs {
				c0 := threadCPU()
				got := search(q)
				all = append(all, time.Duration(threadCPU()-c0))
				if got == truth[i] {
					hits++
				}
			}
			return float64(hits) / float64(len(qs))
		}
		nearRecall := measure(set.near, set.truthNear)
		freshRecall := measure(set.fresh, set.truthFresh)
		slices.Sort(all)
		i := 0
		for b.Loop() {
			search(set.near[i%benchQueries])
			i++
		}
		b.ReportMetric(buildTime.Seconds(), "build-s")
		b.ReportMetric(perEntry, "B/entry")
		b.ReportMetric(us(pct(all, 0.50)), "cpu-p50-us")
		b.ReportMetric(us(pct(all, 0.99)), "cpu-p99-us")
		b.ReportMetric(nearRecall, "recall-near")
		b.ReportMetric(freshRecall, "recall-fresh")
	}

	b.Run(fmt.Sprintf("ours/n=%d", n), func(b *testing.B) {
		run(b, func() searcher {
			g := newHNSW(benchDim, m, efC, 1)
			for _, v := range set.data {
				g.add(v)
			}
			all := func(uint32) bool { return true }
			return func(q []float32) int {
				if res := g.search(q, ef, 1, all); len(res) > 0 {
					return int(res[0].id)
				}
				return -1
			}
		})
	})
	coder := func(dist coderhnsw.DistanceFunc) func() searcher {
		return func() searcher {
			g := coderhnsw.NewGraph[int]()
			g.M, g.EfSearch, g.Distance = m, efC, dist
			for i, v := range set.data {
				g.Add(coderhnsw.MakeNode(i, v))
			}
			g.EfSearch = ef
			runtime.GC()
			return func(q []float32) int {
				if res := g.Search(q, 1); len(res) > 0 {
					return res[0].Key
				}
				return -1
			}
		}
	}
	b.Run(fmt.Sprintf("coder/n=%d", n), func(b *testing.B) {
		run(b, coder(coderhnsw.CosineDistance))
	})
	b.Run(fmt.Sprintf("coder-dot/n=%d", n), func(b *testing.B) {
		run(b, coder(func(a, b []float32) float32 { return 1 - dot(a, b) }))
	})
}
