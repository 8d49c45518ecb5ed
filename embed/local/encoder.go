package local

import (
	"math"
)

// Network dimensions, checked against the weights at Load.
const (
	vocabRows  = 8002 // rows of the embedding table (the vocabulary has 8000)
	embedDim   = 256
	modelDim   = 512
	ffnDim     = 1536
	numHeads   = 4
	timingDims = embedDim / 2
	outDim     = 512
	lnEpsilon  = 1e-6
	l2Epsilon  = 1e-12
	// maxRows bounds the tokens of one batched pass (and so a workspace).
	maxRows = 256
)

// layer is one pre-norm transformer layer.
type layer struct {
	in         int // width of the layer's input: 256 for layer 0, 512 for layer 1
	ln1s, ln1b []float32
	qkv        matrix // in × 3·in, then bias
	qkvb       []float32
	qScale     float32
	out        matrix // in × 512
	outb       []float32
	resid      *matrix // layer 0 only: projects the 256-wide input to 512
	residb     []float32
	ln2s, ln2b []float32
	ff1        matrix // 512 × 1536
	ff1b       []float32
	ff2        matrix // 1536 × 512
	ff2b       []float32
	// The same five matrices quantised to int8 (see gemm_int8.go), used
	// by Models with Options.Int8.
	qqkv, qout, qresid, qff1, qff2 *qmatrix
}

// network holds the weights of the encoder; it is read-only after Load.
type network struct {
	emb    []float32 // vocabRows × embedDim
	timing []float32 // maxTokens × embedDim: sin | cos of position × inverse timescale
	layers [2]layer
	tanh   matrix // 512 × 512
	tanhb  []float32
}

// workspace is the scratch memory of one batched pass, about 6 MB. A Model
// keeps at most GOMAXPROCS of them; concurrent Embed calls never share one.
type workspace struct {
	x      []float32 // maxRows × embedDim: layer 0 input
	y      []float32 // maxRows × modelDim: residual stream
	h      []float32 // maxRows × modelDim: normalised input of a block
	qkv    []float32 // maxRows × 3·modelDim
	ctx    []float32 // maxRows × modelDim: attention output
	ff     []float32 // maxRows × ffnDim
	pack   []float32 // 2 × ffnDim: scratch of the portable matmul kernel
	q      qrows     // maxRows × ffnDim bytes: quantised input of an int8 matmul
	scores []float32 // maxTokens × maxTokens: attention weights of one head
	kt, vt []float32 // maxTokens × modelDim/numHeads: one head's keys and values, packed
	pooled []float32 // maxRows × modelDim
	out    []float32 // maxRows × outDim
	ids    []int32
	tok    tokenScratch
}

func newWorkspace() *workspace {
	return &workspace{
		x:      make([]float32, maxRows*embedDim),
		y:      make([]float32, maxRows*modelDim),
		h:      make([]float32, maxRows*modelDim),
		qkv:    make([]float32, maxRows*3*modelDim),
		ctx:    make([]float32, maxRows*modelDim),
		ff:     make([]float32, maxRows*ffnDim),
		pack:   make([]float32, 2*ffnDim),
		q:      qrows{data: make([]uint8, maxRows*ffnDim), scale: make([]float32, maxRows)},
		scores: make([]float32, maxTokens*maxTokens),
		kt:     make([]float32, maxTokens*modelDim/numHeads),
		vt:     make([]float32, maxTokens*modelDim/numHeads),
		pooled: make([]float32, maxRows*modelDim),
		out:    make([]float32, maxRows*outDim),
	}
}

// segment is one text's run of rows in a batched pass.
type segment struct{ start, n int }

// forward encodes the texts whose tokens are ids, cut into segs (rows in
// order, at most maxRows in all, at most maxRows texts), and writes one unit
// vector per segment into dst. With int8 the dense matmuls of the two layers
// run on quantised weights and activations; attention's products and the
// final tanh projection stay in float32.
func (nw *network) forward(ws *workspace, ids []int32, segs []segment, dst [][]float32, int8 bool) {
	rows := len(ids)
	// mulAdd adds a·w to c, on w's int8 copy qw when int8 is set (nonneg:
	// a is a ReLU output, quantised to the full byte).
	mulAdd := func(w *matrix, qw *qmatrix, c []float32, ldc int, a []float32, lda int, relu, nonneg bool) {
		if int8 && qw != nil {
			quantizeRows(&ws.q, a, lda, rows, w.k, !nonneg)
			qw.mulAdd(c, ldc, &ws.q, relu)
			return
		}
		w.mulAdd(c, ldc, a, lda, rows, ws.pack, relu)
	}

	// Input: embedding + (embedding + timing), as the graph adds them.
	for _, s := range segs {
		for pos := 0; pos < s.n; pos++ {
			r := s.start + pos
			e := nw.emb[int(ids[r])*embedDim : (int(ids[r])+1)*embedDim]
			t := nw.timing[pos*embedDim : (pos+1)*embedDim]
			x := ws.x[r*embedDim : (r+1)*embedDim]
			for j := range x {
				x[j] = e[j] + (e[j] + t[j])
			}
		}
	}

	for li := range nw.layers {
		l := &nw.layers[li]
		in := l.in
		// Attention block.
		src, lds := ws.y, modelDim
		if li == 0 {
			src, lds = ws.x, embedDim
		}
		layerNorm(ws.h, modelDim, src, lds, rows, in, l.ln1s, l.ln1b)
		fillRows(ws.qkv, 3*modelDim, rows, l.qkvb)
		mulAdd(&l.qkv, l.qqkv, ws.qkv, 3*modelDim, ws.h, modelDim, false, false)
		for _, s := range segs {
			attention(ws, s, in, l.qScale, int8)
		}
		if l.resid != nil {
			fillRows2(ws.y, modelDim, rows, l.residb, l.outb)
			mulAdd(l.resid, l.qresid, ws.y, modelDim, ws.x, embedDim, false, false)
		} else {
			addRows(ws.y, modelDim, rows, l.outb)
		}
		mulAdd(&l.out, l.qout, ws.y, modelDim, ws.ctx, modelDim, false, false)

		// Feed-forward block.
		layerNorm(ws.h, modelDim, ws.y, modelDim, rows, modelDim, l.ln2s, l.ln2b)
		fillRows(ws.ff, ffnDim, rows, l.ff1b)
		mulAdd(&l.ff1, l.qff1, ws.ff, ffnDim, ws.h, modelDim, true, false)
		addRows(ws.y, modelDim, rows, l.ff2b)
		mulAdd(&l.ff2, l.qff2, ws.y, modelDim, ws.ff, ffnDim, false, true)
	}

	// Mean over each text's tokens (an empty text pools to zeros).
	for t, s := range segs {
		p := ws.pooled[t*modelDim : (t+1)*modelDim]
		clear(p)
		for r := s.start; r < s.start+s.n; r++ {
			y := ws.y[r*modelDim : (r+1)*modelDim]
			for j := range p {
				p[j] += y[j]
			}
		}
		div := float32(max(s.n, 1))
		for j := range p {
			p[j] /= div
		}
	}
	n := len(segs)
	fillRows(ws.out, outDim, n, nw.tanhb)
	nw.tanh.mulAdd(ws.out, outDim, ws.pooled, modelDim, n, ws.pack, false)
	for t := range segs {
		o := ws.out[t*outDim : (t+1)*outDim]
		var sum float64
		for j, v := range o {
			v = float32(math.Tanh(float64(v)))
			o[j] = v
			sum += float64(v) * float64(v)
		}
		inv := float32(1 / math.Sqrt(max(sum, l2Epsilon)))
		d := dst[t]
		for j, v := range o {
			d[j] = v * inv
		}
	}
}

// attention runs multi-head self-attention over one segment: queries, keys
// and values are the three width-wide thirds of ws.qkv rows, split into
// numHeads heads; the result goes to ws.ctx (width columns). Both products
// run on the matmul kernels: scores = Q·Kᵀ with Kᵀ packed as a matrix of
// lpad columns (the token count rounded up to the kernels' 32), then
// ctx = softmax(scores)·V.
//
// With fast (the int8 path) the softmax runs in AVX-512 assembly with a
// polynomial exp when the CPU has the int8 kernels.
func attention(ws *workspace, s segment, width int, qScale float32, fast bool) {
	L := s.n
	if L == 0 {
		return
	}
	dh := width / numHeads
	lpad := (L + 31) &^ 31
	const ld = 3 * modelDim
	rows := ws.qkv[s.start*ld:]
	for h := 0; h < numHeads; h++ {
		qo, ko, vo := h*dh, width+h*dh, 2*width+h*dh
		kt := matrix{k: dh, n: lpad, data: ws.kt[:dh*lpad]}
		clear(kt.data)
		for j := 0; j < L; j++ {
			key := rows[j*ld+ko : j*ld+ko+dh]
			panel := kt.data[(j/panelWidth)*dh*panelWidth+j%panelWidth:]
			for p, v := range key {
				panel[p*panelWidth] = v
			}
		}
		vt := matrix{k: L, n: dh, data: ws.vt[:L*dh]}
		for p := 0; p < L; p++ {
			val := rows[p*ld+vo : p*ld+vo+dh]
			for j0 := 0; j0 < dh; j0 += panelWidth {
				copy(vt.data[j0*L+p*panelWidth:j0*L+(p+1)*panelWidth], val[j0:j0+panelWidth])
			}
		}

		sc := ws.scores[:L*lpad]
		clear(sc)
		kt.mulAdd(sc, lpad, rows[qo:], ld, L, ws.pack, false)
		if fast && hasVNNI {
			// The int8 path: softmax over whole padded rows, the padding
			// at −Inf so that it weighs 0.
			for i := 0; i < L; i++ {
				row := sc[i*lpad : (i+1)*lpad]
				for j := L; j < lpad; j++ {
					row[j] = float32(math.Inf(-1))
				}
				softmaxAVX512(&row[0], lpad, qScale)
			}
		}
		for i := 0; i < L && !(fast && hasVNNI); i++ {
			row := sc[i*lpad : i*lpad+L]
			mx := float32(math.Inf(-1))
			for j, v := range row {
				v *= qScale
				row[j] = v
				mx = max(mx, v)
			}
			var sum float32
			for j, v := range row {
				e := float32(math.Exp(float64(v - mx)))
				row[j] = e
				sum += e
			}
			inv := 1 / sum
			for j := range row {
				row[j] *= inv
			}
		}
		ctx := ws.ctx[s.start*modelDim+qo:]
		for i := 0; i < L; i++ {
			clear(ctx[i*modelDim : i*modelDim+dh])
		}
		vt.mulAdd(ctx, modelDim, sc, lpad, L, ws.pack, false)
	}
}

// layerNorm normalises rows of width n from src (stride lds) into dst
// (stride ldd): scale·(x−mean)/sqrt(var+ε) + bias, in float32 like the
// graph, with four partial sums per pass.
func layerNorm(dst []float32, ldd int, src []float32, lds, rows, n int, scale, bias []float32) {
	scale, bias = scale[:n], bias[:n]
	for r := 0; r < rows; r++ {
		x := src[r*lds : r*lds+n]
		d := dst[r*ldd : r*ldd+n]
		var s0, s1, s2, s3 float32
		for j := 0; j+4 <= n; j += 4 {
			v := x[j : j+4 : j+4]
			s0 += v[0]
			s1 += v[1]
			s2 += v[2]
			s3 += v[3]
		}
		mean := ((s0 + s1) + (s2 + s3)) / float32(n)
		s0, s1, s2, s3 = 0, 0, 0, 0
		for j := 0; j+4 <= n; j += 4 {
			v := x[j : j+4 : j+4]
			d0, d1, d2, d3 := v[0]-mean, v[1]-mean, v[2]-mean, v[3]-mean
			s0 += d0 * d0
			s1 += d1 * d1
			s2 += d2 * d2
			s3 += d3 * d3
		}
		variance := ((s0 + s1) + (s2 + s3)) / float32(n)
		inv := float32(1 / math.Sqrt(float64(variance)+lnEpsilon))
		for j, v := range x {
			d[j] = scale[j]*inv*(v-mean) + bias[j]
		}
	}
}

func fillRows(dst []float32, ld, rows int, v []float32) {
	for r := 0; r < rows; r++ {
		copy(dst[r*ld:r*ld+len(v)], v)
	}
}

func fillRows2(dst []float32, ld, rows int, a, b []float32) {
	for r := 0; r < rows; r++ {
		d := dst[r*ld : r*ld+len(a)]
		for j := range d {
			d[j] = a[j] + b[j]
		}
	}
}

func addRows(dst []float32, ld, rows int, v []float32) {
	for r := 0; r < rows; r++ {
		d := dst[r*ld : r*ld+len(v)]
		for j := range d {
			d[j] += v[j]
		}
	}
}
