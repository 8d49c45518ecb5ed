package eval

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/edgecache/edgecache/cache/semantic/verify"
	"github.com/edgecache/edgecache/cmd/internal/config"
	"github.com/edgecache/edgecache/embed"
	"github.com/edgecache/edgecache/embed/lexical"
	"github.com/edgecache/edgecache/embed/local"
	"github.com/edgecache/edgecache/embed/zh"
)

// spaceScorer verifies each query with the verifier of its embedding
// space, as the server does: a Router embeds Chinese prompts with the
// Chinese model, which has its own verifier.
type spaceScorer struct {
	e           embed.Embedder
	primary, zh scorer
}

// scorerFor is the verification the server uses for e, whose name is name:
// the Chinese verifier for texts in a zh-ngram space, the first model's
// otherwise (a Router's name joins its members' with "+"). fitted, when
// not nil, is the first model's verifier (a --verifier-model file's), in
// place of its built-in calibration.
func scorerFor(e embed.Embedder, name string, fitted scorer) (scorer, error) {
	first, _, routed := strings.Cut(name, "+")
	isZh := strings.HasPrefix(name, zh.Family)
	primary := fitted
	if primary == nil {
		primary = verify.NewFor(first)
	}
	if !routed && (!isZh || fitted != nil) {
		return primary, nil
	}
	zm, err := verify.BuiltInZh()
	if err != nil {
		return nil, err
	}
	if isZh {
		return verify.NewZh(zm), nil
	}
	return &spaceScorer{e: e, primary: primary, zh: verify.NewZh(zm)}, nil
}

func (s *spaceScorer) pick(query string) scorer {
	if space, _ := embed.SpaceOf(s.e, query); strings.HasPrefix(space, zh.Family) {
		return s.zh
	}
	return s.primary
}

// Score implements scorer.
func (s *spaceScorer) Score(query, candidate string, cosine float32) (float32, string) {
	return s.pick(query).Score(query, candidate, cosine)
}

// MinCosine implements scorer: the lower of the two pre-filters, which is
// lossless for both.
func (s *spaceScorer) MinCosine(threshold float32) float32 {
	return min(s.primary.MinCosine(threshold), s.zh.MinCosine(threshold))
}

// DefaultModelDir is where `make model` puts USE-lite.
const DefaultModelDir = config.DefaultModelDir

// openEmbedder returns the embedder named by o (falling back to lexical,
// loudly, when the USE-lite model cannot be loaded, as the server does) and
// a function that releases it.
func openEmbedder(o *options, stderr io.Writer) (embed.Embedder, func() error, error) {
	var e embed.Embedder
	cacheSuffix := "" // USE-lite's int8 vectors are cached apart
	switch o.embedder {
	case "lexical":
		e = lexical.New(0)
	case "zh":
		z, err := zh.New()
		if err != nil {
			return nil, nil, err
		}
		e = z
	case "use-lite", "local":
		lo := local.DefaultOptions()
		lo.Int8 = o.int8
		m, err := local.LoadOptions(o.modelDir, lo)
		if err != nil {
			fmt.Fprintf(stderr, "eval: cannot load the USE-lite model from %s (%v); run `make model`. Falling back to the lexical embedder.\n", o.modelDir, err)
			e = lexical.New(0)
		} else {
			e = m
			if lo.Int8 {
				cacheSuffix = "-int8"
			}
		}
	case "remote":
		r, err := o.remote.open()
		if err != nil {
			return nil, nil, err
		}
		e = r
	default:
		return nil, nil, fmt.Errorf("--embedder %q: want local, use-lite, zh, lexical or remote", o.embedder)
	}
	if o.embedder == "local" && e.Dim() == zh.Dim { // as the server: Chinese prompts to the Chinese model
		z, err := zh.New()
		if err != nil {
			return nil, nil, err
		}
		if e, err = embed.NewRouter(e, z); err != nil {
			return nil, nil, err
		}
	}
	var top embed.Embedder = e // remote: embedAll's concurrent chunks make its batches
	closeFn := func() error { return nil }
	if o.embedder != "remote" {
		b := embed.NewBatcher(e, o.workers, 32)
		top = withSpace{b, e}
		closeFn = func() error { b.Close(); return nil }
	}
	if o.cacheDir != "" {
		d, err := openDiskCache(o.cacheDir, top, cacheSuffix)
		if err != nil {
			_ = closeFn()
			return nil, nil, err
		}
		top = d
		closeInner := closeFn
		closeFn = func() error { err := d.Close(); _ = closeInner(); return err }
	}
	return top, closeFn, nil
}

// withSpace is an embedder wrapper (the Batcher) with the coverage and
// the spaces of the embedder it wraps, which it does not state itself
// (embed.Batcher forwards Coverage, not Space: a Router behind it would
// put every text in one space).
type withSpace struct {
	embed.Embedder
	base embed.Embedder
}

var (
	_ embed.Coverer = withSpace{}
	_ embed.Spacer  = withSpace{}
)

// Coverage implements embed.Coverer for the wrapped embedder.
func (w withSpace) Coverage(text string) float64 { return embed.CoverageOf(w.base, text) }

// Space implements embed.Spacer for the wrapped embedder.
func (w withSpace) Space(text string) (string, float64) { return embed.SpaceOf(w.base, text) }

// modelDir picks the model directory: the flag when given, then
// EDGECACHE_MODEL_DIR, then config.ModelDir (the working directory's
// models/use-lite, or the one beside the executable's bin/).
func modelDir(flagValue string, flagSet bool) string {
	if flagSet {
		return flagValue
	}
	if d := os.Getenv("EDGECACHE_MODEL_DIR"); d != "" {
		return d
	}
	return config.ModelDir()
}

// embedPairs embeds every distinct text of pairs once and returns the
// vectors of each pair's A and B texts.
func embedPairs(ctx context.Context, e embed.Embedder, pairs []Pair, workers int, stderr io.Writer) (va, vb []embed.Vector, err error) {
	index := make(map[string]int, 2*len(pairs))
	var texts []string
	at := func(s string) int {
		i, ok := index[s]
		if !ok {
			i = len(texts)
			index[s] = i
			texts = append(texts, s)
		}
		return i
	}
	ia, ib := make([]int, len(pairs)), make([]int, len(pairs))
	for i, p := range pairs {
		ia[i], ib[i] = at(p.A), at(p.B)
	}
	vecs, err := embedAll(ctx, e, texts, workers, newProgress(stderr, "embedding", len(texts)))
	if err != nil {
		return nil, nil, err
	}
	va, vb = make([]embed.Vector, len(pairs)), make([]embed.Vector, len(pairs))
	for i := range pairs {
		va[i], vb[i] = vecs[ia[i]], vecs[ib[i]]
	}
	return va, vb, nil
}

// embedAll embeds texts in chunks from a few goroutines, so that the
// batcher's workers stay busy.
func embedAll(ctx context.Context, e embed.Embedder, texts []string, workers int, bar *progress) ([]embed.Vector, error) {
	const chunk = 64
	out := make([]embed.Vector, len(texts))
	var next atomic.Int64
	var wg sync.WaitGroup
	var once sync.Once
	var firstErr error
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range max(2*workers, 2) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				lo := int(next.Add(chunk)) - chunk
				if lo >= len(texts) || ctx.Err() != nil {
					return
				}
				hi := min(lo+chunk, len(texts))
				vs, err := e.Embed(ctx, texts[lo:hi])
				if err == nil && len(vs) != hi-lo {
					err = fmt.Errorf("embedder %s returned %d vectors for %d texts", e.Name(), len(vs), hi-lo)
				}
				if err != nil {
					once.Do(func() { firstErr = err; cancel() })
					return
				}
				copy(out[lo:hi], vs)
				bar.Add(hi - lo)
			}
		}()
	}
	wg.Wait()
	bar.Finish()
	if firstErr != nil {
		return nil, fmt.Errorf("embed: %w", firstErr)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return out, nil
}
