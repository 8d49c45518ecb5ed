package verify

import (
	_ "embed"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sort"
	"sync"
)

// The Chinese verifier. Chinese is written without spaces and paraphrased
// by swapping characters ("怎么"/"如何", "花呗"/"蚂蚁花呗"), so the English
// verifier's word features do not apply. This one compares the two prompts'
// characters and words (zhAnalyze) and is a logistic model over:
//
//   - dense inputs, as cumulative steps on fixed cuts: the embedding cosine,
//     the Jaccard overlap of units and of adjacent-unit pairs, the count of
//     content units on one side only, the length ratio, differing numbers,
//     negation parity, question-type differences, the shorter side's size;
//   - sparse inputs, hashed: each unit on one side only ("d", what it costs
//     when that character differs: 的 nothing, 花 a lot) and each pair of
//     one-side units when few differ ("s", what swapping x for y costs:
//     如/怎 little, 开/关 much).
//
// The weights are learned from labelled pairs (LCQMC and ATEC, see the
// README) by `edgecache train-zh`, with the signs of every difference input
// held at ≤ 0 so that a difference is never evidence for a match. Two rules
// are set, not learned: opposite words (zhOpposites), swapped roles
// (zhSwapped), a different negation parity and different numbers cap the
// score at 0.25 (zhRuleCap: under any threshold an operator would serve
// at), and a candidate below the model's MinCosine scores 0, which
// makes MinCosine a lossless retrieval pre-filter. Prompts of the same
// wording (ignoring case, spaces and punctuation) score 1.

// zhRuleCap is the log-odds a set rule caps the score at: 0.25.
var zhRuleCap = float32(-math.Log(3))

// ZhDense is the number of dense inputs; sparse inputs are hashed into
// ZhBuckets slots after them.
const (
	ZhDense   = 64
	ZhBuckets = 1 << 18
	ZhInputs  = ZhDense + ZhBuckets
)

// zhCuts are the dense inputs: a name, a sign and the cuts whose
// indicators (input > cut) are the model's dense inputs, in order.
var zhCuts = []struct {
	name string
	sign int
	cuts []float32
}{
	{"cosine", 1, []float32{0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.995}},
	{"jaccard", 1, []float32{0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.99}},
	{"bigram_jaccard", 1, []float32{0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9}},
	{"only_max", -1, []float32{0.5, 1.5, 2.5, 3.5, 5.5}},
	{"only_min", -1, []float32{0.5, 1.5, 2.5}},
	{"len_ratio", -1, []float32{0.1, 0.2, 0.4, 0.7}},
	{"num_diff", -1, []float32{0.5}},
	{"num_one", -1, []float32{0.5}},
	{"negation", -1, []float32{0.5}},
	{"question_why_how", -1, []float32{0.5}},
	{"question_other", -1, []float32{0.5}},
	{"size", 0, []float32{3.5, 6.5, 10.5, 15.5}},
	{"multiset", -1, []float32{0.5, 1.5}},
}

// ZhInput is one non-zero input of the Chinese model.
type ZhInput struct {
	Index uint32
	Value float32
}

// ZhSign is the sign dense input i's weight is held to: +1 (≥ 0), -1
// (≤ 0) or 0. Sparse inputs: see ZhSparseSign; kind 'd' slots are the
// first half of the buckets, 's' the second.
func ZhSign(i uint32) int {
	if i >= ZhDense {
		return 0
	}
	k := uint32(0)
	for _, c := range zhCuts {
		if i < k+uint32(len(c.cuts)) {
			return c.sign
		}
		k += uint32(len(c.cuts))
	}
	return 0
}

// ZhModel is the Chinese verifier's model.
type ZhModel struct {
	Bias      float32
	Weights   []float32 // ZhInputs
	MinCosine float32   // below it a candidate scores 0
}

// zhCandidate holds what zhFeatures measured.
type zhPair struct {
	inputs   []ZhInput
	opposite bool
	same     bool
}

func zhHash(kind byte, a, b string) uint32 {
	h := uint32(2166136261)
	h = (h ^ uint32(kind)) * 16777619
	for i := 0; i < len(a); i++ {
		h = (h ^ uint32(a[i])) * 16777619
	}
	h = (h ^ 0xff) * 16777619
	for i := 0; i < len(b); i++ {
		h = (h ^ uint32(b[i])) * 16777619
	}
	half := uint32(ZhBuckets / 2)
	if kind == 'd' {
		return ZhDense + h%half
	}
	return ZhDense + half + h%half
}

// ZhSparseSign is the sign the trainer holds a sparse input of the given
// kind to: a unit on one side only ('d') never speaks for a match; a swap
// ('s') may (synonyms).
func ZhSparseSign(kind byte) int {
	if kind == 'd' {
		return -1
	}
	return 0
}

// ZhFeatures returns the inputs of the Chinese model for query against
// candidate at cosine, appended to dst, with whether an opposite-word rule
// applies and whether the two have the same wording. Sparse inputs of kind
// 'd' come first after the dense ones, then kind 's' (see ZhKindOf).
func ZhFeatures(query, candidate string, cosine float32, dst []ZhInput) (in []ZhInput, opposite, same bool) {
	p := zhFeatures(zhAnalyze(query), zhAnalyze(candidate), cosine, dst)
	return p.inputs, p.opposite, p.same
}

func zhFeatures(a, b zhText, cosine float32, dst []ZhInput) zhPair {
	p := zhPair{inputs: dst[:0]}
	p.same = a.same == b.same
	negA, negB := zhNegationCount(a.norm), zhNegationCount(b.norm)
	numDiff := len(a.nums) > 0 && len(b.nums) > 0 && !sameStrings(a.nums, b.nums)
	p.opposite = zhOpposite(a.norm, b.norm) || zhSwapped(a.units, b.units) || negA%2 != negB%2 || numDiff
	onlyA, sizeA := zhOnly(a.units, b.units)
	onlyB, sizeB := zhOnly(b.units, a.units)
	contentA, contentB := zhContent(onlyA), zhContent(onlyB)
	shared := len(zhSet(a.units)) - len(onlyA)
	jac := float32(1)
	if u := shared + len(onlyA) + len(onlyB); u > 0 {
		jac = float32(shared) / float32(u)
	}
	la, lb := max(len(a.units), 1), max(len(b.units), 1)
	vals := []float32{
		cosine, jac, zhBigramJaccard(a.units, b.units),
		float32(max(contentA, contentB)), float32(min(contentA, contentB)),
		float32(math.Abs(math.Log(float64(la) / float64(lb)))),
		b2f(numDiff),
		b2f((len(a.nums) > 0) != (len(b.nums) > 0)),
		b2f(negA%2 != negB%2),
		0, 0,
		float32(min(sizeA, sizeB)),
		float32(zhMultisetDiff(a.units, b.units)),
	}
	qa, qb := zhQuestionClass(a.norm), zhQuestionClass(b.norm)
	if qa != qb && qa != zqNone && qb != zqNone {
		if (qa == zqWhy && qb == zqHow) || (qa == zqHow && qb == zqWhy) {
			vals[9] = 1
		} else if !((qa == zqHow && qb == zqWhat) || (qa == zqWhat && qb == zqHow)) {
			vals[10] = 1
		}
	}
	k := uint32(0)
	for j, c := range zhCuts {
		for _, cut := range c.cuts {
			if vals[j] > cut {
				p.inputs = append(p.inputs, ZhInput{Index: k, Value: 1})
			}
			k++
		}
	}
	for _, u := range onlyA {
		p.inputs = append(p.inputs, ZhInput{Index: zhHash('d', u, ""), Value: 1})
	}
	for _, u := range onlyB {
		p.inputs = append(p.inputs, ZhInput{Index: zhHash('d', u, ""), Value: 1})
	}
	for i, u := range a.units {
		if indexOf(a.units[:i], u) < 0 && indexOf(b.units, u) >= 0 {
			p.inputs = append(p.inputs, ZhInput{Index: zhHash('c', u, ""), Value: 1})
		}
	}
	if len(onlyA)*len(onlyB) <= 9 {
		for _, x := range onlyA {
			for _, y := range onlyB {
				if x > y {
					x, y = y, x
				}
				p.inputs = append(p.inputs, ZhInput{Index: zhHash('s', x, y), Value: 1})
			}
		}
	}
	return p
}

func b2f(b bool) float32 {
	if b {
		return 1
	}
	return 0
}

// zhOnly returns a's distinct units absent from b, and a's distinct count.
func zhOnly(a, b []string) (only []string, distinct int) {
	for i, u := range a {
		if indexOf(a[:i], u) >= 0 {
			continue
		}
		distinct++
		if indexOf(b, u) < 0 {
			only = append(only, u)
		}
	}
	return only, distinct
}

func zhSet(a []string) []string {
	var out []string
	for _, u := range a {
		if indexOf(out, u) < 0 {
			out = append(out, u)
		}
	}
	return out
}

// zhContent counts the units that are not function characters.
func zhContent(us []string) int {
	n := 0
	for _, u := range us {
		if !(len(u) == 3 && containsRune(zhFunction, u)) {
			n++
		}
	}
	return n
}

func containsRune(set, u string) bool {
	for i := 0; i+len(u) <= len(set); i += 3 {
		if set[i:i+len(u)] == u {
			return true
		}
	}
	return false
}

func indexOf(s []string, x string) int {
	for i, y := range s {
		if y == x {
			return i
		}
	}
	return -1
}

func sameStrings(a, b []string) bool {
	x, y := append([]string(nil), a...), append([]string(nil), b...)
	sort.Strings(x)
	sort.Strings(y)
	x, y = dedup(x), dedup(y)
	if len(x) != len(y) {
		return false
	}
	for i := range x {
		if x[i] != y[i] {
			return false
		}
	}
	return true
}

func dedup(s []string) []string {
	out := s[:0]
	for i, x := range s {
		if i == 0 || x != s[i-1] {
			out = append(out, x)
		}
	}
	return out
}

func zhBigramJaccard(a, b []string) float32 {
	ga, gb := zhBigrams(a), zhBigrams(b)
	if len(ga) == 0 && len(gb) == 0 {
		return 1
	}
	shared := 0
	for _, g := range ga {
		if indexOf(gb, g) >= 0 {
			shared++
		}
	}
	return float32(shared) / float32(len(ga)+len(gb)-shared)
}

func zhBigrams(u []string) []string {
	var out []string
	for i := 1; i < len(u); i++ {
		g := u[i-1] + u[i]
		if indexOf(out, g) < 0 {
			out = append(out, g)
		}
	}
	return out
}

// Logit is the model's log-odds for the inputs, before the set rules.
func (m *ZhModel) Logit(in []ZhInput) float32 {
	z := m.Bias
	for _, x := range in {
		z += m.Weights[x.Index] * x.Value
	}
	return z
}

// Score is the calibrated probability that candidate asks what query asks.
func (m *ZhModel) Score(query, candidate string, cosine float32) (float32, string) {
	if cosine != cosine {
		cosine = 0
	}
	var buf [96]ZhInput
	p := zhFeatures(zhAnalyze(query), zhAnalyze(candidate), cosine, buf[:0])
	switch {
	case p.same:
		return 1, ""
	case cosine < m.MinCosine:
		return 0, "cosine"
	}
	z := m.Logit(p.inputs)
	reason := "content"
	if p.opposite {
		z = min(z, zhRuleCap)
		reason = "opposite"
	}
	return sigmoid(z), reason
}

// The model file: "ZHV1", bias, min cosine (float32), count, then count
// (uint32 index, float32 weight) pairs of the non-zero weights; little
// endian.

// MarshalBinary encodes m.
func (m *ZhModel) MarshalBinary() ([]byte, error) {
	out := []byte("ZHV1")
	out = binary.LittleEndian.AppendUint32(out, math.Float32bits(m.Bias))
	out = binary.LittleEndian.AppendUint32(out, math.Float32bits(m.MinCosine))
	n := 0
	for _, w := range m.Weights {
		if w != 0 {
			n++
		}
	}
	out = binary.LittleEndian.AppendUint32(out, uint32(n))
	for i, w := range m.Weights {
		if w != 0 {
			out = binary.LittleEndian.AppendUint32(out, uint32(i))
			out = binary.LittleEndian.AppendUint32(out, math.Float32bits(w))
		}
	}
	return out, nil
}

// UnmarshalBinary decodes a model written by MarshalBinary.
func (m *ZhModel) UnmarshalBinary(b []byte) error {
	if len(b) < 16 || string(b[:4]) != "ZHV1" {
		return errors.New("verify: not a Chinese verifier model")
	}
	m.Bias = math.Float32frombits(binary.LittleEndian.Uint32(b[4:]))
	m.MinCosine = math.Float32frombits(binary.LittleEndian.Uint32(b[8:]))
	n := int(binary.LittleEndian.Uint32(b[12:]))
	b = b[16:]
	if len(b) != 8*n {
		return fmt.Errorf("verify: Chinese model: %d bytes of weights, want %d", len(b), 8*n)
	}
	m.Weights = make([]float32, ZhInputs)
	for i := 0; i < n; i++ {
		idx := binary.LittleEndian.Uint32(b[8*i:])
		if idx >= ZhInputs {
			return fmt.Errorf("verify: Chinese model: weight index %d out of range", idx)
		}
		m.Weights[idx] = math.Float32frombits(binary.LittleEndian.Uint32(b[8*i+4:]))
	}
	return nil
}

//go:embed zh_model.bin
var zhModelFile []byte

var zhBuiltIn = sync.OnceValues(func() (*ZhModel, error) {
	m := &ZhModel{}
	return m, m.UnmarshalBinary(zhModelFile)
})

// BuiltInZh is the built-in Chinese model.
func BuiltInZh() (*ZhModel, error) { return zhBuiltIn() }

// ZhSignTable is, per input, the sign its weight is held to in training.
func ZhSignTable() []int8 {
	t := make([]int8, ZhInputs)
	for i := uint32(0); i < ZhDense; i++ {
		t[i] = int8(ZhSign(i))
	}
	for i := uint32(ZhDense); i < ZhDense+ZhBuckets/2; i++ {
		t[i] = int8(ZhSparseSign('d'))
	}
	return t
}

// ZhVerifier is the verification stage for Chinese prompts.
type ZhVerifier struct{ m *ZhModel }

// NewZh returns a verifier using m.
func NewZh(m *ZhModel) *ZhVerifier { return &ZhVerifier{m: m} }

// Score implements the pipeline's Scorer (see ZhModel.Score).
func (v *ZhVerifier) Score(query, candidate string, cosine float32) (float32, string) {
	return v.m.Score(query, candidate, cosine)
}

// MinCosine is the lossless pre-filter: the model's cosine gate, whatever
// the threshold (0 or less: no filter).
func (v *ZhVerifier) MinCosine(threshold float32) float32 {
	if threshold <= 0 {
		return -1
	}
	return v.m.MinCosine
}
