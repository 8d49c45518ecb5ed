package semantic

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"
)

// Benchmark data: n unit vectors of benchDim dimensions in one partition.
//
//   - uniform: independent uniform directions. The hardest case for any
//     graph index: in 512 dimensions every point is nearly orthogonal to
//     every other, so "the" nearest neighbour of a fresh query is barely
//     nearer than the next thousand.
//   - clustered: points scattered around 1,000 random centres (cosine to
//     their centre ≈ 0.7, to a sibling ≈ 0.5), closer to how sentence
//     embeddings fill their space.
//
// Two kinds of query, each scored against exact search over all n points:
//
//   - near: a stored vector perturbed to cosine ≈ 0.89 with it (a
//     paraphrase of a cached prompt: the case a semantic cache serves);
//   - fresh: a new draw from the same distribution (a prompt unlike any
//     cached one; for uniform data this is the pathological case).
//
// EDGECACHE_BENCH_N sets n (default 100,000); EDGECACHE_BENCH_1M=1 sets it
// to 1,000,000, which needs about 4 GB (2 GB of float32 test data, the
// index, a reloaded copy while the snapshot load is timed) and, on 2
// cores, about 15 minutes of CPU for the exact answers and the build.
// EDGECACHE_BENCH_BUILD=upsert builds through Upsert instead of
// UpsertBatch (see benchBuild).
// EDGECACHE_BENCH_CENTRES sets the number of centres (default 1,000): the
// search inside one isotropic cluster is as hard as uniform data of the
// cluster's size, so n/centres, not n, sets the difficulty; 100 centres at
// n=100,000 reproduce the density of 1,000 centres at n=1,000,000.
// EDGECACHE_BENCH_M and EDGECACHE_BENCH_EFC override the graph's M and
// EfConstruction (defaults: EmbeddedConfig's).
const (
	benchDim     = 512
	benchQueries = 2000
	benchCentres = 1000
)

func benchN() int {
	if os.Getenv("EDGECACHE_BENCH_1M") == "1" {
		return 1_000_000
	}
	if n, err := strconv.Atoi(os.Getenv("EDGECACHE_BENCH_N")); err == nil && n > 0 {
		return n
	}
	return 100_000
}

type benchSet struct {
	data        [][]float32
	near, fresh [][]float32
	truthNear   []int // exact nearest stored index per query
	truthFresh  []int
	centres     [][]float32
}

func makeBenchSet(kind string, n int) *benchSet {
	r := rand.New(rand.NewPCG(42, uint64(len(kind))))
	s := &benchSet{data: make([][]float32, n)}
	draw := func() []float32 { return unitVec(r, benchDim) }
	if kind == "clustered" {
		centres := benchCentres
		if c, err := strconv.Atoi(os.Getenv("EDGECACHE_BENCH_CENTRES")); err == nil && c > 0 {
			centres = c
		}
		s.centres = make([][]float32, centres)
		for i := range s.centres {
			s.centres[i] = unitVec(r, benchDim)
		}
		draw = func() []float32 { return nearVec(r, s.centres[r.IntN(centres)], 1.0) }
	}
	for i := range s.data {
		s.data[i] = draw()
	}
	for range benchQueries {
		s.near = append(s.near, nearVec(r, s.data[r.IntN(n)], 0.5))
		s.fresh = append(s.fresh, draw())
	}
	s.truthNear = exactAll(s.data, s.near)
	s.truthFresh = exactAll(s.data, s.fresh)
	return s
}

// exactAll brute-forces the nearest stored vector of each query, on every
// core.
func exactAll(data, queries [][]float32) []int {
	out := make([]int, len(queries))
	var wg sync.WaitGroup
	workers := runtime.GOMAXPROCS(0)
	for w := range workers {
		wg.Go(func() {
			for i := w; i < len(queries); i += workers {
				out[i] = exactBest(data, queries[i], nil)
			}
		})
	}
	wg.Wait()
	return out
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// BenchmarkEmbeddedSearch builds an Embedded index of n points in one
// partition (timing the build, wall clock and CPU time, and measuring heap
// per entry), writes and reloads its snapshot (timing the load), then for
// several EfSearch values reports p50/p99 latency of single searches (k=1)
// and recall@1 against exact search, for near and fresh queries. Latency
// is wall clock (p50-us, p99-us: includes waiting for a CPU on a shared
// machine) and the searching thread's CPU time (cpu-p50-us, cpu-p99-us:
// the search's own cost). ns/op is the mean over near and fresh queries
// alternately.
func BenchmarkEmbeddedSearch(b *testing.B) {
	n := benchN()
	for _, kind := range []string{"clustered", "uniform"} {
		b.Run(fmt.Sprintf("%s/n=%d", kind, n), func(b *testing.B) {
			set := makeBenchSet(kind, n)
			f := Filter{Namespace: "bench", Route: "chat", Model: "m", Context: "c"}
			before := heapInUse()
			m, _ := strconv.Atoi(os.Getenv("EDGECACHE_BENCH_M"))
			efC, _ := strconv.Atoi(os.Getenv("EDGECACHE_BENCH_EFC"))
			e, err := NewEmbedded(EmbeddedConfig{Dim: benchDim, MaxPoints: n, SweepInterval: time.Hour, M: m, EfConstruction: efC})
			if err != nil {
				b.Fatal(err)
			}
			defer e.Close()
			ctx := context.Background()
			exp := time.Now().Add(24 * time.Hour)
			start, cpu0 := time.Now(), processCPU()
			how := benchBuild(b, e, f, set.data, exp)
			build, buildCPU := time.Since(start), time.Duration(processCPU()-cpu0)
			perEntry := float64(heapInUse()-before) / float64(n)
			b.Logf("%s n=%d: build %v %s (%.0f inserts/s, %.0f per CPU-second), %.0f heap bytes per entry (int8 vector and scale alone: %d)",
				kind, n, build.Round(time.Millisecond), how, float64(n)/build.Seconds(), float64(n)/buildCPU.Seconds(),
				perEntry, rowBytes(benchDim))
			loadS, snapMB := benchSnapshot(b, e)
			b.Logf("%s n=%d: snapshot %.1f MB, loaded in %.2f s (%.0f points/s)", kind, n, snapMB, loadS, float64(n)/loadS)

			for _, ef := range []int{32, 64, 128} {
				b.Run(fmt.Sprintf("ef=%d", ef), func(b *testing.B) {
					e.cfg.EfSearch = ef
					nearLat, nearCPU, nearRecall := benchQueriesRun(b, e, f, set.near, set.truthNear)
					freshLat, freshCPU, freshRecall := benchQueriesRun(b, e, f, set.fresh, set.truthFresh)
					all := append(slices.Clone(nearLat), freshLat...)
					slices.Sort(all)
					allCPU := append(slices.Clone(nearCPU), freshCPU...)
					slices.Sort(allCPU)
					i := 0
					for b.Loop() {
						q := set.near[i%benchQueries]
						if i&1 == 1 {
							q = set.fresh[i%benchQueries]
						}
						if _, err := e.Search(ctx, q, f, 1, 0); err != nil {
							b.Fatal(err)
						}
						i++
					}
					b.ReportMetric(us(pct(all, 0.50)), "p50-us")
					b.ReportMetric(us(pct(all, 0.99)), "p99-us")
					b.ReportMetric(us(pct(allCPU, 0.50)), "cpu-p50-us")
					b.ReportMetric(us(pct(allCPU, 0.99)), "cpu-p99-us")
					b.ReportMetric(nearRecall, "recall-near")
					b.ReportMetric(freshRecall, "recall-fresh")
					b.ReportMetric(perEntry, "B/entry")
					b.ReportMetric(build.Seconds(), "build-s")
					b.ReportMetric(float64(n)/build.Seconds(), "inserts/s")
					b.ReportMetric(float64(n)/buildCPU.Seconds(), "inserts/cpu-s")
					b.ReportMetric(loadS, "load-s")
					b.ReportMetric(snapMB, "snap-MB")
				})
			}
		})
	}
}

// benchBuild fills e with data in partition f: by default with one
// UpsertBatch (parallel linking on every core); with
// EDGECACHE_BENCH_BUILD=upsert through Upsert from one writer per CPU
// (inserts into one graph plan their links in parallel and commit them
// one at a time). It says which.
func benchBuild(b *testing.B, e *Embedded, f Filter, data [][]float32, exp time.Time) string {
	ctx := context.Background()
	writers := runtime.GOMAXPROCS(0)
	if os.Getenv("EDGECACHE_BENCH_BUILD") == "upsert" {
		var wg sync.WaitGroup
		for w := range writers {
			wg.Go(func() {
				for i := w; i < len(data); i += writers {
					p := Point{Key: "k" + strconv.Itoa(i), Vector: data[i], Filter: f, ExpiresAt: exp}
					if err := e.Upsert(ctx, p); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		return fmt.Sprintf("with Upsert from %d writers", writers)
	}
	ps := make([]Point, len(data))
	for i, v := range data {
		ps[i] = Point{Key: "k" + strconv.Itoa(i), Vector: v, Filter: f, ExpiresAt: exp}
	}
	if err := e.UpsertBatch(ctx, ps); err != nil {
		b.Fatal(err)
	}
	return fmt.Sprintf("with UpsertBatch on %d cores", writers)
}

// benchSnapshot writes e's snapshot to a temporary file and loads it into
// a second index (then dropped), returning the load time and the file's
// size.
func benchSnapshot(b *testing.B, e *Embedded) (loadS, sizeMB float64) {
	path := filepath.Join(b.TempDir(), "bench.snap")
	e.cfg.SnapshotPath = path
	defer func() { e.cfg.SnapshotPath = "" }()
	if err := e.Snapshot(); err != nil {
		b.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	cfg := e.cfg
	cfg.SnapshotInterval = -1
	start := time.Now()
	loaded, err := NewEmbedded(cfg)
	loadS = time.Since(start).Seconds()
	if err != nil {
		b.Fatal(err)
	}
	if got, want := loaded.Stats().Points, e.Stats().Points; got != want {
		b.Fatalf("loaded %d points, want %d", got, want)
	}
	loaded.cfg.SnapshotPath = "" // Close need not write it again
	loaded.Close()
	os.Remove(path)
	return loadS, float64(fi.Size()) / 1e6
}

// benchQueriesRun times each query (wall clock, and the CPU time of the
// thread running it) and scores recall@1; latencies come back sorted.
func benchQueriesRun(b *testing.B, e *Embedded, f Filter, qs [][]float32, truth []int) (wall, cpu []time.Duration, recall float64) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	wall = make([]time.Duration, len(qs))
	cpu = make([]time.Duration, len(qs))
	hits := 0
	for i, q := range qs {
		c0, start := threadCPU(), time.Now()
		ms, err := e.Search(context.Background(), q, f, 1, 0)
		wall[i], cpu[i] = time.Since(start), time.Duration(threadCPU()-c0)
		if err != nil {
			b.Fatal(err)
		}
		if len(ms) == 1 && ms[0].Key == "k"+strconv.Itoa(truth[i]) {
			hits++
		}
	}
	slices.Sort(wall)
	slices.Sort(cpu)
	return wall, cpu, float64(hits) / float64(len(qs))
}

func pct(sorted []time.Duration, p float64) time.Duration {
	return sorted[min(len(sorted)-1, int(p*float64(len(sorted))))]
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// BenchmarkHNSWBuild links n clustered 512-d points into one graph with
// addBatch on every core (EDGECACHE_BENCH_BUILD_N, default 20,000; M and
// EfConstruction from EDGECACHE_BENCH_M and EDGECACHE_BENCH_EFC, else
// EmbeddedConfig's defaults), reporting inserts per second of wall clock
// and of process CPU time.
func BenchmarkHNSWBuild(b *testing.B) {
	n := 20_000
	if v, err := strconv.Atoi(os.Getenv("EDGECACHE_BENCH_BUILD_N")); err == nil && v > 0 {
		n = v
	}
	set := makeBenchSet("clustered", n)
	cfg := EmbeddedConfig{Dim: benchDim}
	cfg.M, _ = strconv.Atoi(os.Getenv("EDGECACHE_BENCH_M"))
	cfg.EfConstruction, _ = strconv.Atoi(os.Getenv("EDGECACHE_BENCH_EFC"))
	cfg = cfg.withDefaults()
	var wall, cpu time.Duration
	for b.Loop() {
		g := newHNSW(benchDim, cfg.M, cfg.EfConstruction, 1)
		start, c0 := time.Now(), processCPU()
		g.addBatch(n, func(i int, row []int8) { putRow(row, set.data[i], benchDim) }, batchWorkers())
		wall += time.Since(start)
		cpu += time.Duration(processCPU() - c0)
	}
	b.ReportMetric(float64(n*b.N)/wall.Seconds(), "inserts/s")
	b.ReportMetric(float64(n*b.N)/cpu.Seconds(), "inserts/cpu-s")
}
