package local

import (
	"context"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgecache/edgecache/embed"
)

// reportRate reports embeddings per second of wall time and, because the
// machine may be shared, per second of this process's CPU time (with -cpu 1
// that is the throughput of one core).
func reportRate(b *testing.B, n int, cpu0 time.Duration) {
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "embeddings/s")
	if cpu := processCPU() - cpu0; cpu > 0 {
		b.ReportMetric(float64(n)/cpu.Seconds(), "embeddings/cpu-s")
	}
}

// shortQuestions are prompt-sized texts of 6–14 tokens.
var shortQuestions = []string{
	"How do I learn Python quickly?",
	"What is the fastest way to learn Python?",
	"How do I cook rice?",
	"What's 15% of 80?",
	"Translate 'good morning' to French.",
	"Why is the sky blue?",
	"How can I improve my English writing skills?",
	"What are the health benefits of green tea?",
	"Explain recursion to a five year old.",
	"Which programming language should I learn first?",
	"How do I reset my router password?",
	"What is the capital of Australia?",
	"How does a vaccine work?",
	"Write a haiku about autumn leaves.",
	"What causes inflation?",
	"How do I center a div in CSS?",
}

func benchEmbed(b *testing.B, batch int) {
	_, m := models(b)
	benchEmbedModel(b, m, batch)
}

func benchEmbedModel(b *testing.B, m *Model, batch int) {
	b.Logf("kernel %s", m.Kernel())
	ctx := context.Background()
	texts := make([]string, batch)
	b.ReportAllocs()
	cpu0 := processCPU()
	for i := 0; b.Loop(); i++ {
		for j := range texts {
			texts[j] = shortQuestions[(i*batch+j)%len(shortQuestions)]
		}
		if _, err := m.Embed(ctx, texts); err != nil {
			b.Fatal(err)
		}
	}
	reportRate(b, b.N*batch, cpu0)
}

// BenchmarkEmbedShort embeds one short question per call.
func BenchmarkEmbedShort(b *testing.B) { benchEmbed(b, 1) }

// BenchmarkEmbedBatch16 embeds sixteen short questions per call.
func BenchmarkEmbedBatch16(b *testing.B) { benchEmbed(b, 16) }

// BenchmarkEmbedLong embeds one text of 128 tokens per call.
func BenchmarkEmbedLong(b *testing.B) {
	_, m := models(b)
	benchEmbedLong(b, m)
}

func benchEmbedLong(b *testing.B, m *Model) {
	long := golden[13].text
	ctx := context.Background()
	b.ReportAllocs()
	cpu0 := processCPU()
	for b.Loop() {
		if _, err := m.Embed(ctx, []string{long}); err != nil {
			b.Fatal(err)
		}
	}
	reportRate(b, b.N, cpu0)
}

func BenchmarkTokenize(b *testing.B) {
	_, m := models(b)
	var sc tokenScratch
	var ids []int32
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		ids = m.tok.encode(shortQuestions[i%len(shortQuestions)], &sc, ids[:0])
	}
}

// BenchmarkEmbedShortKernel compares the float32 matmul kernels on short
// questions, and the int8 kernels (VNNI, portable Go).
func BenchmarkEmbedShortKernel(b *testing.B) {
	_, m := models(b)
	fm := m.WithOptions(Options{Lowercase: true})
	defer func(k int) { useKernel = k }(useKernel)
	for kern := kernelGeneric; kern <= bestKernel; kern++ {
		b.Run(kernelName(kern), func(b *testing.B) {
			useKernel = kern
			benchEmbedModel(b, fm, 1)
		})
	}
	qm := m.WithOptions(Options{Lowercase: true, Int8: true})
	defer func(v bool) { useVNNI = v }(useVNNI)
	for _, vnni := range []bool{false, true} {
		if vnni && !hasVNNI {
			continue
		}
		useVNNI = vnni
		b.Run(qm.Kernel(), func(b *testing.B) {
			useVNNI = vnni
			benchEmbedModel(b, qm, 1)
		})
	}
}

// BenchmarkCoverage is what the router and the coverage gate add per
// prompt before embedding it.
func BenchmarkCoverage(b *testing.B) {
	_, m := models(b)
	b.ReportAllocs()
	for b.Loop() {
		m.Coverage("How do I learn Python quickly?")
	}
}

// BenchmarkPrecision compares the float32 and int8 paths on short
// questions and on 128-token texts. On a busy machine interleave the runs
// (-bench 'Precision/short/float32', then int8, and again) and read
// embeddings/cpu-s.
func BenchmarkPrecision(b *testing.B) {
	_, m := models(b)
	for _, int8 := range []bool{false, true} {
		o := m.opts
		o.Int8 = int8
		mm := m.WithOptions(o)
		name := "float32"
		if int8 {
			name = "int8"
		}
		b.Run("short/"+name, func(b *testing.B) { benchEmbedModel(b, mm, 1) })
		b.Run("long/"+name, func(b *testing.B) { benchEmbedLong(b, mm) })
		b.Run("batch16/"+name, func(b *testing.B) { benchEmbedModel(b, mm, 16) })
	}
}

// BenchmarkConcurrentMisses: 16 goroutines per core embed one short question
// each call, straight into the Model (GOMAXPROCS passes at once) or through
// embed.Batcher as the server does (GOMAXPROCS workers taking whatever is
// queued, at most 16 texts per pass).
func BenchmarkConcurrentMisses(b *testing.B) {
	_, m := models(b)
	for _, batched := range []bool{false, true} {
		name := "direct"
		var e embed.Embedder = m
		if batched {
			name = "batcher"
		}
		b.Run(name, func(b *testing.B) {
			if batched {
				bt := embed.NewBatcher(m, runtime.GOMAXPROCS(0), 16)
				defer bt.Close()
				e = bt
			}
			b.Logf("kernel %s", m.Kernel())
			var n atomic.Int64
			b.SetParallelism(16)
			cpu0 := processCPU()
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				for i := 0; pb.Next(); i++ {
					if _, err := e.Embed(ctx, []string{shortQuestions[i%len(shortQuestions)]}); err != nil {
						b.Error(err)
						return
					}
					n.Add(1)
				}
			})
			reportRate(b, int(n.Load()), cpu0)
		})
	}
}
