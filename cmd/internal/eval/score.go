package eval

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/edgecache/edgecache/cache/semantic"
	"github.com/edgecache/edgecache/cache/semantic/verify"
	"github.com/edgecache/edgecache/embed"
)

// served is the candidate one scoring would serve for a query, and how
// the file judges it.
type served struct {
	score  float32 // -1: nothing retrieved
	cos    float32
	reason string // the verifier's, when it scored under its threshold
	own    bool   // the pair's own text_a, and the pair is a duplicate (SEMANTIC.md)
	same   bool   // the pair's text_a (ignoring case), any pair's point, and the pair is a duplicate
	known  bool   // a duplicate of the query by the file's labels (see labels)
	judged bool   // the file's labels say whether it is a duplicate of the query, either way
	exact  bool   // worded as the query (see wordingKey): a candidate whatever its cosine
}

// outcome is what one query (cache mode) or one pair (pairwise mode)
// produced: what the verifier serves and what cosine alone serves.
type outcome struct {
	dup        bool // the pair is labelled duplicate
	answerable bool // some stored text is a known duplicate of the query
	repeat     bool // the query's text is stored verbatim (ignoring case and spacing)
	v, c       served
	// cands are the candidates v was picked from, as the verifier scored
	// them, nearest first: at picks v again at a higher threshold's
	// pre-filter.
	cands []served

	raw, rawCos float32 // pairwise: the pair's ranking score and cosine, retrieved or not
}

// at is o as a lookup at a threshold whose retrieval pre-filter is minCos
// would have it (the pipeline's procedure): the verifier's pick among the
// candidates at or above minCos or worded as the query, and the nearest
// candidate at or above minCos. o must have been judged at a pre-filter at
// or under minCos; then o.at(minCos) for that pre-filter is o itself.
func (o *outcome) at(minCos float32) outcome {
	r := *o
	r.v = served{score: -1}
	for _, s := range o.cands {
		if (s.cos >= minCos || s.exact) && s.score > r.v.score {
			r.v = s
		}
	}
	if r.c.score >= 0 && r.c.cos < minCos {
		r.c = served{score: -1}
	}
	return r
}

// outcomesAt is every outcome at minCos (see outcome.at), in buf.
func outcomesAt(os []outcome, minCos float32, buf []outcome) []outcome {
	buf = buf[:0]
	for i := range os {
		buf = append(buf, os[i].at(minCos))
	}
	return buf
}

// definition is a way to count a hit as correct.
type definition uint8

const (
	defOwn    definition = iota // SEMANTIC.md: the pair's own text_a
	defSame                     // the same text as the pair's text_a, ignoring case
	defKnown                    // any text the file's labels make a duplicate of the query; repeats left out
	defJudged                   // as defKnown, counting only hits the labels judge either way
)

// countDef is the definition a --count value names.
func countDef(name string) definition {
	switch name {
	case "own":
		return defOwn
	case "same":
		return defSame
	case "known":
		return defKnown
	}
	return defJudged
}

func (s *served) right(d definition) bool {
	switch d {
	case defOwn:
		return s.own
	case defSame:
		return s.same
	}
	return s.known // defKnown, defJudged
}

// pipelineFilter is the partition a text embedded in space goes into: as
// if all prompts came from one tenant, route, model and context, with the
// embedding space as the context, so that vectors of different models
// (embed.Spacer) are never compared.
func pipelineFilter(model, space string) semantic.Filter {
	return semantic.Filter{Namespace: "eval", Route: "eval", Model: model, Context: space}
}

// spaces is, per pair, the embedding space (embed.SpaceOf) of its text_a
// and its text_b; "" for a text the embedder covers under
// embed.MinCoverage. Such a text is exact-only, as in the server: a text_a
// is not stored in the index, a text_b is not looked up, and neither is
// ever part of a semantic hit.
type spaces struct {
	a, b []string
}

// spacesOf is the space of every text of pairs under e.
func spacesOf(e embed.Embedder, pairs []Pair) *spaces {
	sp := &spaces{a: make([]string, len(pairs)), b: make([]string, len(pairs))}
	memo := make(map[string]string, 2*len(pairs))
	of := func(t string) string {
		s, ok := memo[t]
		if !ok {
			var c float64
			if s, c = embed.SpaceOf(e, t); c < embed.MinCoverage {
				s = ""
			}
			memo[t] = s
		}
		return s
	}
	for i, p := range pairs {
		sp.a[i], sp.b[i] = of(p.A), of(p.B)
	}
	return sp
}

// skipped counts the queries and the stored texts under the coverage floor.
func (sp *spaces) skipped() (queries, stored int) {
	for i := range sp.a {
		if sp.a[i] == "" {
			stored++
		}
		if sp.b[i] == "" {
			queries++
		}
	}
	return queries, stored
}

// subset is the spaces of the pairs whose keep is want (see subset).
func (sp *spaces) subset(keep []bool, want bool) *spaces {
	out := &spaces{}
	for i := range sp.a {
		if keep[i] == want {
			out.a, out.b = append(out.a, sp.a[i]), append(out.b, sp.b[i])
		}
	}
	return out
}

// scorer is the verification stage: the USE-lite or lexical verifier
// (*verify.Verifier) or the Chinese one (*verify.ZhVerifier).
type scorer interface {
	Score(query, candidate string, cosine float32) (float32, string)
	MinCosine(threshold float32) float32
}

// scoreCache inserts every text_a into an embedded index and queries it
// with every text_b, retrieving verify.Candidates candidates with a cosine
// of at least minCos, as the pipeline does (the verifier's lossless
// pre-filter for the lowest threshold reported), plus the stored texts
// worded as the query.
func scoreCache(ctx context.Context, pairs []Pair, va, vb []embed.Vector, sp *spaces, name string, v scorer, noVerify bool, minCos float32, workers int, stderr io.Writer) ([]outcome, error) {
	ms, err := retrieve(ctx, pairs, va, vb, sp, name, minCos, workers, stderr)
	if err != nil {
		return nil, err
	}
	return judgeAll(ctx, pairs, ms, v, noVerify, minCos, workers), nil
}

// judgeAll judges every query's candidates (those with a cosine of at
// least minCos, and those worded as the query) against the file's labels.
func judgeAll(ctx context.Context, pairs []Pair, ms [][]semantic.Match, v scorer, noVerify bool, minCos float32, workers int) []outcome {
	lab := newLabels(pairs)
	stored := lab.storedComponents(pairs)
	out := make([]outcome, len(pairs))
	parallel(ctx, len(pairs), workers, func(i int) error {
		out[i] = judge(pairs[i], strconv.Itoa(i), ms[i], minCos, lab, v, noVerify)
		out[i].answerable = stored[lab.comp(pairs[i].B)]
		out[i].repeat = lab.stored(pairs[i].B)
		return nil
	})
	return out
}

// retrieve inserts every text_a covered by the embedder into the partition
// of its space in an embedded index (keyed by the pair's index) and
// returns, for every covered text_b, the candidates the pipeline would
// retrieve from its space's partition, without their vectors: the
// verify.Candidates nearest with a cosine of at least minCos, then every
// stored text worded as the query (wordingKey) that the pre-filter or k
// left out, nearest first. The verifier takes a text worded as the query
// for the same prompt whatever its cosine (it scores it as cosine 1), so
// a pre-filter that dropped it would not be lossless.
func retrieve(ctx context.Context, pairs []Pair, va, vb []embed.Vector, sp *spaces, name string, minCos float32, workers int, stderr io.Writer) ([][]semantic.Match, error) {
	if len(va) == 0 {
		return nil, nil
	}
	idx, err := semantic.NewEmbedded(semantic.EmbeddedConfig{
		Dim:       len(va[0]),
		MaxPoints: len(pairs) + 1,
		Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		return nil, err
	}
	defer idx.Close()

	// worded holds the stored pairs by space and wording.
	type spaceWording struct{ space, key string }
	worded := make(map[spaceWording][]int)
	bar := newProgress(stderr, "indexing", len(pairs))
	for i, p := range pairs {
		bar.Add(1)
		if sp.a[i] == "" {
			continue
		}
		pt := semantic.Point{Key: strconv.Itoa(i), Vector: va[i], Filter: pipelineFilter(name, sp.a[i]), Text: p.A}
		if err := idx.Upsert(ctx, pt); err != nil {
			return nil, fmt.Errorf("index text_a of line %d: %w", p.Line, err)
		}
		k := spaceWording{sp.a[i], verify.WordingKey(p.A)}
		worded[k] = append(worded[k], i)
	}
	bar.Finish()

	out := make([][]semantic.Match, len(pairs))
	bar = newProgress(stderr, "querying", len(pairs))
	err = parallel(ctx, len(pairs), workers, func(i int) error {
		defer bar.Add(1)
		if sp.b[i] == "" {
			return nil
		}
		ms, err := idx.Search(ctx, vb[i], pipelineFilter(name, sp.b[i]), verify.Candidates, minCos)
		if err != nil {
			return fmt.Errorf("query text_b of line %d: %w", pairs[i].Line, err)
		}
		for j := range ms {
			ms[j].Vector = nil
		}
		n := len(ms)
		for _, j := range worded[spaceWording{sp.b[i], verify.WordingKey(pairs[i].B)}] {
			key := strconv.Itoa(j)
			if !slices.ContainsFunc(ms[:n], func(m semantic.Match) bool { return m.Key == key }) {
				ms = append(ms, semantic.Match{Point: semantic.Point{Key: key, Text: pairs[j].A}, Score: embed.Dot(va[j], vb[i])})
			}
		}
		slices.SortStableFunc(ms[n:], func(a, b semantic.Match) int { return cmp.Compare(b.Score, a.Score) })
		out[i] = ms
		return nil
	})
	bar.Finish()
	return out, err
}

// judge picks the candidate the pipeline would serve: the one with the
// highest verifier score (the nearer one on ties) among those with a
// cosine of at least minCos or worded as the query, and separately the
// one cosine alone would serve (the nearest at or above minCos).
func judge(p Pair, ownKey string, ms []semantic.Match, minCos float32, lab *labels, v scorer, noVerify bool) outcome {
	o := outcome{dup: p.Duplicate}
	o.v.score, o.c.score = -1, -1
	query := verify.WordingKey(p.B)
	for _, m := range ms {
		s := served{score: m.Score, cos: m.Score, exact: verify.WordingKey(m.Text) == query}
		if s.cos < minCos && !s.exact {
			continue
		}
		if !noVerify {
			s.score, s.reason = v.Score(p.B, m.Text, m.Score)
		}
		s.own = p.Duplicate && m.Key == ownKey
		s.same = p.Duplicate && normText(m.Text) == normText(p.A)
		s.known = lab.dup(p.B, m.Text)
		s.judged = s.known || lab.notDup(p.B, m.Text)
		o.cands = append(o.cands, s)
		if s.score > o.v.score {
			o.v = s
		}
		if o.c.score < 0 && s.cos >= minCos {
			o.c = s
			o.c.score, o.c.reason = s.cos, ""
		}
	}
	return o
}

// scorePairs scores each pair on its own: the cosine of its two texts and
// the verifier's score. A pair under minCos is never a hit, as the
// pipeline would not retrieve it, unless its texts are worded the same;
// nor is a pair with a text under the embedder's coverage floor or texts
// of different spaces (sp). The AUC ranks pairs as the pipeline does at
// the default threshold: by the verifier's score above that threshold's
// pre-filter (or worded the same), by cosine under it (below every pair
// above), and the pairs that can never match last, so the area does not
// depend on --threshold or --sweep.
func scorePairs(ctx context.Context, pairs []Pair, va, vb []embed.Vector, sp *spaces, name string, v scorer, noVerify bool, minCos float32, workers int) ([]outcome, error) {
	return scorePairsAt(ctx, pairs, va, vb, sp, v, noVerify, minCos, v.MinCosine(verify.DefaultThreshold(name)), workers)
}

// scorePairsWith scores pairs with v, gated and ranked at minCos.
func scorePairsWith(ctx context.Context, pairs []Pair, va, vb []embed.Vector, sp *spaces, v scorer, minCos float32, workers int) ([]outcome, error) {
	return scorePairsAt(ctx, pairs, va, vb, sp, v, false, minCos, minCos, workers)
}

func scorePairsAt(ctx context.Context, pairs []Pair, va, vb []embed.Vector, sp *spaces, v scorer, noVerify bool, minCos, rankCos float32, workers int) ([]outcome, error) {
	out := make([]outcome, len(pairs))
	lab := newLabels(pairs)
	err := parallel(ctx, len(pairs), workers, func(i int) error {
		p := pairs[i]
		c := embed.Dot(va[i], vb[i])
		comparable := sp.a[i] != "" && sp.a[i] == sp.b[i]
		var ms []semantic.Match
		if comparable {
			ms = []semantic.Match{{Point: semantic.Point{Key: "own", Text: p.A}, Score: c}}
		}
		out[i] = judge(p, "own", ms, minCos, lab, v, noVerify)
		out[i].answerable = p.Duplicate
		// For the AUC: the verifier's score at or above rankCos (or for
		// texts worded the same), the cosine, ranked under every such
		// pair, below it; last, pairs that can never match.
		out[i].rawCos, out[i].raw = c, c
		if !noVerify {
			out[i].raw = c - 3
			switch {
			case !comparable:
				out[i].raw = -5
			case c < rankCos && verify.WordingKey(p.A) != verify.WordingKey(p.B):
			case len(out[i].cands) > 0:
				out[i].raw = out[i].v.score
			default:
				out[i].raw, _ = v.Score(p.B, p.A, c)
			}
		} else if !comparable {
			out[i].raw = -5
		}
		return nil
	})
	return out, err
}

// parallel runs fn(0..n-1) on workers goroutines and returns the first
// error.
func parallel(ctx context.Context, n, workers int, fn func(i int) error) error {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := ctx.Err(); err != nil {
					errs[w] = err
					return
				}
				if err := fn(i); err != nil {
					errs[w] = err
					next.Store(int64(n))
					return
				}
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// Counts are hits and their precision and recall at one threshold.
type Counts struct {
	Threshold float64 `json:"threshold"`
	Hits      int     `json:"hits"`
	Correct   int     `json:"correct"`
	Precision float64 `json:"precision"`
	Recall    float64 `json:"recall"`
	// Of is the recall's denominator: duplicate pairs, or for the
	// known-duplicate count, queries with a known duplicate stored.
	Of int `json:"of"`
	// JudgedShare is the share of the hits (repeats left out, for the
	// known-duplicate and judged counts) that the file's labels judge
	// either way; the own-text_a, same-text and pairwise counts judge
	// every hit themselves (1). 0 when there is no hit.
	JudgedShare float64 `json:"judged_share"`
	// PrecisionLowerBound is the correct hits over all hits, the hits
	// the labels do not judge counted wrong: the judged count's precision
	// can only overstate a cache whose hits the labels mostly do not
	// judge (on a file in a script the embedder does not represent, every
	// prompt matches every other). For the other counts, the precision.
	PrecisionLowerBound float64 `json:"precision_lower_bound"`

	all, judged int // hits before leaving out the unjudged, and the judged among them
}

// denominator is the number of queries that could have a correct hit
// under d.
func denominator(os []outcome, d definition) int {
	n := 0
	for i := range os {
		if d >= defKnown && os[i].answerable && !os[i].repeat || d < defKnown && os[i].dup {
			n++
		}
	}
	return n
}

// countAt counts the hits scoring at least t, by the verifier's pick or
// (cosOnly) the nearest neighbour's, judged by d.
func countAt(os []outcome, t float32, d definition, cosOnly bool) Counts {
	c := Counts{Threshold: round4(float64(t)), Of: denominator(os, d)}
	for i := range os {
		if d >= defKnown && os[i].repeat {
			continue
		}
		s := &os[i].v
		if cosOnly {
			s = &os[i].c
		}
		if s.score < 0 || s.score < t {
			continue
		}
		c.all++
		if d < defKnown || s.judged {
			c.judged++
		} else if d == defJudged {
			continue
		}
		c.Hits++
		if s.right(d) {
			c.Correct++
		}
	}
	c.fill()
	return c
}

func (c *Counts) fill() {
	if c.Hits > 0 {
		c.Precision = round4(float64(c.Correct) / float64(c.Hits))
	}
	if c.Of > 0 {
		c.Recall = round4(float64(c.Correct) / float64(c.Of))
	}
	if c.all > 0 {
		c.JudgedShare = round4(float64(c.judged) / float64(c.all))
		c.PrecisionLowerBound = round4(float64(c.Correct) / float64(c.all))
	}
}

// atRecall finds the highest cosine-only threshold whose recall under d
// reaches target: the static threshold a cache without verification would
// need for the same recall.
func atRecall(os []outcome, d definition, target float64) Counts {
	type sc struct {
		s     float32
		right bool
	}
	var all []sc
	for i := range os {
		if d >= defKnown && os[i].repeat {
			continue
		}
		if s := &os[i].c; s.score >= 0 && (d != defJudged || s.judged) {
			all = append(all, sc{s.score, s.right(d)})
		}
	}
	slices.SortFunc(all, func(a, b sc) int { return cmp.Compare(b.s, a.s) })
	of := denominator(os, d)
	if len(all) == 0 {
		return Counts{Of: of}
	}
	var t float32
	correct := 0
	for i := 0; i < len(all); {
		j := i
		for j < len(all) && all[j].s == all[i].s {
			if all[j].right {
				correct++
			}
			j++
		}
		t = all[i].s
		i = j
		if of > 0 && float64(correct)/float64(of) >= target {
			break
		}
	}
	// The hits at t, with the judged share of all hits at t.
	return countAt(os, t, d, true)
}

// auc is the ROC area of score for telling duplicates from the rest
// (Mann–Whitney, ties counted half).
func auc(scores []float32, dup []bool) float64 {
	type sd struct {
		s float32
		d bool
	}
	xs := make([]sd, len(scores))
	for i := range scores {
		xs[i] = sd{scores[i], dup[i]}
	}
	slices.SortFunc(xs, func(a, b sd) int {
		switch {
		case a.s < b.s:
			return -1
		case a.s > b.s:
			return 1
		}
		return 0
	})
	var pos, neg, rankSum float64
	for i := 0; i < len(xs); {
		j := i
		for j < len(xs) && xs[j].s == xs[i].s {
			j++
		}
		mid := float64(i+j+1) / 2 // average 1-based rank of the tie group
		for k := i; k < j; k++ {
			if xs[k].d {
				pos++
				rankSum += mid
			} else {
				neg++
			}
		}
		i = j
	}
	if pos == 0 || neg == 0 {
		return 0
	}
	return round4((rankSum - pos*(pos+1)/2) / (pos * neg))
}

// labels is what a pairs file says about which texts ask the same thing:
// texts (compared ignoring case and surrounding space) joined by duplicate
// labels, transitively. Quora duplicates are close to transitive; a text
// is always a duplicate of itself.
type labels struct {
	ids    map[string]int32
	parent []int32
	isA    []bool            // the text is some pair's text_a
	not    map[[2]int32]bool // components some pair labels not duplicates
}

func newLabels(pairs []Pair) *labels {
	l := &labels{ids: make(map[string]int32, 2*len(pairs))}
	for _, p := range pairs {
		a, b := l.id(p.A), l.id(p.B)
		if p.Duplicate {
			l.union(a, b)
		}
	}
	l.isA = make([]bool, len(l.parent))
	l.not = make(map[[2]int32]bool)
	for _, p := range pairs {
		l.isA[l.ids[normText(p.A)]] = true
		if !p.Duplicate {
			l.not[compPair(l.comp(p.A), l.comp(p.B))] = true
		}
	}
	return l
}

func normText(s string) string { return strings.ToLower(strings.Join(strings.Fields(s), " ")) }

func (l *labels) id(s string) int32 {
	k := normText(s)
	if i, ok := l.ids[k]; ok {
		return i
	}
	i := int32(len(l.parent))
	l.ids[k] = i
	l.parent = append(l.parent, i)
	return i
}

func (l *labels) find(i int32) int32 {
	for l.parent[i] != i {
		l.parent[i] = l.parent[l.parent[i]]
		i = l.parent[i]
	}
	return i
}

func (l *labels) union(a, b int32) {
	if ra, rb := l.find(a), l.find(b); ra != rb {
		l.parent[ra] = rb
	}
}

// comp returns the component of s, or -1 for a text not in the file. It
// only reads, so it is safe for concurrent use once newLabels returns.
func (l *labels) comp(s string) int32 {
	i, ok := l.ids[normText(s)]
	if !ok {
		return -1
	}
	for l.parent[i] != i {
		i = l.parent[i]
	}
	return i
}

// stored reports whether s is some pair's text_a (ignoring case and
// spacing): in cache mode, a query repeating a stored prompt.
func (l *labels) stored(s string) bool {
	i, ok := l.ids[normText(s)]
	return ok && l.isA[i]
}

func compPair(a, b int32) [2]int32 {
	if a > b {
		a, b = b, a
	}
	return [2]int32{a, b}
}

// notDup reports whether some pair labels a text of a's component and a
// text of b's not duplicates.
func (l *labels) notDup(a, b string) bool {
	ca, cb := l.comp(a), l.comp(b)
	return ca >= 0 && cb >= 0 && l.not[compPair(ca, cb)]
}

func (l *labels) dup(a, b string) bool {
	ca := l.comp(a)
	return ca >= 0 && ca == l.comp(b)
}

// storedComponents marks the components holding some pair's text_a, and
// compresses every path so that comp is read-only afterwards.
func (l *labels) storedComponents(pairs []Pair) map[int32]bool {
	for i := range l.parent {
		l.parent[i] = l.find(int32(i))
	}
	m := make(map[int32]bool, len(pairs))
	for _, p := range pairs {
		m[l.comp(p.A)] = true
	}
	return m
}

func round4(x float64) float64 {
	if x < 0 {
		return -float64(int64(-x*10000+0.5)) / 10000
	}
	return float64(int64(x*10000+0.5)) / 10000
}
