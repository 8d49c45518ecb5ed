package app

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"

	"github.com/edgecache/edgecache/cache/semantic"
	"github.com/edgecache/edgecache/cache/semantic/verify"
	"github.com/edgecache/edgecache/cmd/internal/config"
	"github.com/edgecache/edgecache/cmd/internal/pipeline"
	"github.com/edgecache/edgecache/embed"
	"github.com/edgecache/edgecache/embed/lexical"
	"github.com/edgecache/edgecache/embed/local"
	"github.com/edgecache/edgecache/embed/remote"
	"github.com/edgecache/edgecache/embed/zh"
)

// semanticParts is the built semantic tier and what /readyz says of it.
type semanticParts struct {
	cfg      *pipeline.SemanticConfig
	embedder string // name in use
	fallback string // why the configured embedder is not in use, or ""
	// verifier names the calibration of the primary embedder's verifier
	// (calibration.source); threshold is its default threshold.
	verifier  string
	threshold float32
	index     string
	// indexState is "up", or why the vector index is not built yet.
	indexState func() string
	// memo is the embedder's memo of recent texts, whose counts
	// edgecache.embed.texts reports.
	memo  *embed.Memo
	close func()
}

// buildEmbedder returns the configured embedder, or the lexical one with the
// reason when the local model cannot be loaded (never a start-up failure:
// semantic matching degrades, exact caching goes on).
func buildEmbedder(sc config.Semantic, log *slog.Logger) (e embed.Embedder, fallback string, err error) {
	switch sc.Embedder {
	case "lexical":
		return lexical.New(0), "", nil
	case "remote":
		r, err := remote.New(remote.Config{URL: sc.Remote.URL, Model: sc.Remote.Model, APIKey: sc.Remote.APIKey,
			Timeout: sc.Remote.Timeout.D()})
		if err != nil {
			return nil, "", err
		}
		return r, "", nil // its dimension is learnt when the index is built
	default:
		lo := local.DefaultOptions()
		switch sc.LocalPrecision {
		case "int8":
			lo.Int8 = true
		case "float32":
			lo.Int8 = false
		}
		m, err := local.LoadOptions(sc.ModelDir, lo)
		if err != nil {
			why := fmt.Sprintf("local model not loaded from %s (%v); run `make model`", sc.ModelDir, err)
			log.Warn("semantic tier: falling back to the lexical embedder", "reason", why)
			return lexical.New(0), why, nil
		}
		log.Info("semantic tier: local model loaded", "dir", sc.ModelDir, "precision", sc.LocalPrecision, "kernel", m.Kernel())
		return m, "", nil
	}
}

func buildSemantic(ctx context.Context, sc config.Semantic, log *slog.Logger) (*semanticParts, error) {
	e, fallback, err := buildEmbedder(sc, log)
	if err != nil {
		return nil, err
	}
	cal, err := loadCalibration(sc, e.Name(), fallback, log)
	if err != nil {
		return nil, err
	}
	closers := []func(){}
	if _, isLocal := e.(*local.Model); isLocal {
		b := embed.NewBatcher(e, runtime.GOMAXPROCS(0), 16)
		closers = append(closers, b.Close)
		e = b
	}
	spaces, e, err := withChinese(e, cal.space)
	if err != nil {
		return nil, err
	}
	name := e.Name()
	memo, err := embed.NewMemo(e, 64<<20)
	if err != nil {
		return nil, err
	}
	closers = append(closers, memo.Close)
	build := func(ctx context.Context) (semantic.Index, error) {
		if e.Dim() == 0 { // a remote embedder: learn its dimension, which the index needs
			pctx, cancel := context.WithTimeout(ctx, 4*sc.Remote.Timeout.D())
			_, err := e.Embed(pctx, []string{"dimension probe"})
			cancel()
			if err != nil {
				return nil, fmt.Errorf("remote embedder %s: %w", sc.Remote.URL, err)
			}
		}
		if sc.Index == "qdrant" {
			return semantic.NewQdrant(ctx, semantic.QdrantConfig{Addr: sc.Qdrant.Addr, APIKey: sc.Qdrant.APIKey,
				UseTLS: sc.Qdrant.TLS, CollectionPrefix: sc.Qdrant.CollectionPrefix, Model: name, Dim: e.Dim(),
				Timeout: sc.SearchTimeout.D(), Logger: log})
		}
		return semantic.NewEmbedded(semantic.EmbeddedConfig{Dim: e.Dim(), MaxPoints: sc.MaxPoints,
			SnapshotPath: sc.SnapshotPath, Logger: log})
	}
	indexState := func() string { return "up" }
	idx, err := build(ctx)
	switch {
	case err == nil:
	case transient(err):
		// Qdrant or the remote embedder is down at start-up: serve exact
		// only and build the index once it answers, rather than refuse to
		// start (a region's replicas would crash-loop over a dependency
		// that exact caching does not need).
		log.Warn("semantic tier: vector index unavailable at start-up; exact caching only until it is built", "err", err)
		l := startLazyIndex(build, err, log)
		idx, indexState = l, l.State
	default:
		for _, c := range closers {
			c()
		}
		return nil, fmt.Errorf("semantic index: %w", err)
	}
	closers = append(closers, func() { _ = idx.Close() })
	return &semanticParts{
		cfg: &pipeline.SemanticConfig{
			Embedder: memo, Index: idx, Verifier: cal.space.Verifier, Spaces: spaces,
			DefaultThreshold: cal.threshold,
			Candidates:       verify.Candidates,
			MinCosine:        cal.space.MinCosine,
			Wording:          cal.space.Wording,
			EmbedTimeout:     sc.EmbedTimeout.D(), SearchTimeout: sc.SearchTimeout.D(),
			MinCoverage: sc.MinCoverage,
		},
		embedder: name, fallback: fallback, index: sc.Index, indexState: indexState, memo: memo,
		verifier: cal.source, threshold: cal.threshold,
		close: func() {
			for i := len(closers) - 1; i >= 0; i-- {
				closers[i]()
			}
		},
	}, nil
}

// withChinese routes Chinese prompts (and Chinese mixed with English terms)
// to the built-in Chinese model beside e, each model with its own verifier
// (the returned spaces; primary is e's). A remote embedder is left alone:
// the operator chose it for their languages, and its dimension is not
// known until it answers.
func withChinese(e embed.Embedder, primary pipeline.Space) (map[string]pipeline.Space, embed.Embedder, error) {
	if e.Dim() != zh.Dim {
		return nil, e, nil
	}
	z, err := zh.New()
	if err != nil {
		return nil, nil, err
	}
	zm, err := verify.BuiltInZh()
	if err != nil {
		return nil, nil, err
	}
	r, err := embed.NewRouter(e, z)
	if err != nil {
		return nil, nil, err
	}
	zv := verify.NewZh(zm)
	return map[string]pipeline.Space{
		e.Name(): primary,
		// embed/zh canonicalises: texts of the same wording embed alike.
		z.Name(): {Verifier: zv, MinCosine: zv.MinCosine},
	}, r, nil
}

// calibration is the verifier of the primary embedder's prompts (every
// prompt but those the Chinese model embeds) and what /readyz says of it.
type calibration struct {
	space     pipeline.Space // the verifier, the retrieval pre-filter, the wording rule
	threshold float32        // the default threshold of routes that set none
	// source is "built-in NAME" (verify.BuiltInCalibration), with a note
	// when it was not fitted for the embedder, or "file PATH".
	source string
}

// loadCalibration returns the verifier for the embedder named name (the
// model itself, before batching or routing), from sc.VerifierModel when
// set. A file must have been fitted for that embedder: its scores mean
// nothing for another embedder's cosines, so a mismatch fails start-up
// (refusing is safer than serving on a wrong scale). Only when the local
// model could not be loaded (fallback says why) is a file fitted for it
// set aside, loudly, in favour of the fallback's built-in calibration:
// the fallback keeps the service up, and so should its calibration.
//
// A file's pre-filter is the lossless one of its model at the lookup's
// threshold, but never under the file's min_cosine (at least the cosine
// under which fitting saw no pairs, eval --fit-min-cosine, where the
// model's scores would be extrapolation). A degraded floor under the
// threshold thus cannot widen the search below it.
func loadCalibration(sc config.Semantic, name, fallback string, log *slog.Logger) (calibration, error) {
	builtIn := func(note string) calibration {
		v := verify.NewFor(name)
		return calibration{space: pipeline.Space{Verifier: v, MinCosine: v.MinCosine, Wording: verify.AppendWordingKey},
			threshold: verify.DefaultThreshold(name),
			source:    "built-in " + verify.BuiltInCalibration(name) + note}
	}
	path := sc.VerifierModel
	if path == "" {
		if sc.Embedder != "remote" {
			return builtIn(""), nil
		}
		log.Warn("semantic tier: the remote embedder is verified with the built-in calibration, fitted for another embedder; "+
			"its scores and default threshold mean little here: fit one on labelled pairs with "+
			"`edgecache eval --embedder remote --fit --fit-out FILE` and set semantic.verifier_model",
			"embedder", name, "calibration", verify.BuiltInCalibration(name))
		return builtIn(" (not fitted for " + name + ")"), nil
	}
	f, err := verify.ReadModelFile(path)
	if err != nil {
		return calibration{}, fmt.Errorf("semantic.verifier_model: %w", err)
	}
	if f.Embedder != name {
		if fallback != "" {
			log.Warn("semantic tier: semantic.verifier_model set aside: it was fitted for another embedder than the fallback in use",
				"file", path, "fitted_for", f.Embedder, "embedder", name)
			return builtIn(fmt.Sprintf(" (%s, fitted for %s, set aside: the embedder fell back)", path, f.Embedder)), nil
		}
		return calibration{}, fmt.Errorf("semantic.verifier_model %s was fitted for embedder %q, but the configured embedder is %q: "+
			"its scores would mean nothing for this embedder's cosines; refit it on your pairs (edgecache eval --fit --fit-out) "+
			"with this embedder, or, if both names are the same model, correct the file's \"embedder\"", path, f.Embedder, name)
	}
	log.Info("semantic tier: verifier calibration loaded", "file", path, "embedder", name, "threshold", f.Model.Threshold)
	v, floor := verify.NewModel(f.Model), f.Model.MinCosine
	return calibration{
		space: pipeline.Space{Verifier: v, MinCosine: func(t float32) float32 { return max(v.MinCosine(t), floor) },
			Wording: verify.AppendWordingKey},
		threshold: f.Model.Threshold, source: "file " + path,
	}, nil
}
