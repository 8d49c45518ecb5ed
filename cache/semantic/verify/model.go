package verify

import (
	"math"
	"slices"
)

// DefaultEmbedder is the embedder whose calibration New uses.
const DefaultEmbedder = "use-lite-v1"

// NumInputs is the number of model inputs derived from Features.
const NumInputs = 22

// inputNames names the model inputs, in order.
var inputNames = [NumInputs]string{
	"cosine", "jaccard", "only_max", "only_min", "only_long", "order", "swap",
	"len_ratio", "char_sim", "person", "size", "num_diff", "num_one", "negation",
	"entity", "question_why_how", "question_why", "question_wwh", "question_qty",
	"question_other", "opposite", "substitution",
}

// groups maps each input to the reason it speaks for; rNone inputs
// describe the texts rather than a difference between them.
var groups = [NumInputs]uint8{
	rCosine, rContent, rContent, rContent, rContent, rContent, rContent,
	rContent, rContent, rContent, rNone, rNumbers, rNumbers, rNegation,
	rEntity, rQuestion, rQuestion, rQuestion, rQuestion,
	rQuestion, rOpposite, rContent,
}

const (
	rCosine uint8 = iota
	rContent
	rNumbers
	rNegation
	rEntity
	rQuestion
	rOpposite
	nReasons
	rNone = nReasons
)

var reasonNames = [nReasons]string{"cosine", "content", "numbers", "negation", "entity", "question", "opposite"}

// Inputs are the model's inputs for f.
func (f *Features) Inputs() [NumInputs]float32 {
	return [NumInputs]float32{
		f.Cosine, f.Jaccard, f.OnlyMax, f.OnlyMin, f.OnlyLong, f.Order, f.Swap,
		f.LenRatio, f.CharSim, f.Person, f.Size, f.NumDiff, f.NumOne, f.Negation,
		f.Entity, f.QuestionH, f.QuestionY, f.QuestionW, f.QuestionQ,
		f.QuestionO, f.Opposite, f.Substitution,
	}
}

// InputName names model input i (an index into Features.Inputs).
func InputName(i int) string { return inputNames[i] }

// Cuts returns the fixed points where input i's contribution to the
// log-odds may step (the model is a sum of step functions, one per input:
// boosted stumps on a fixed grid). They are design, not fitted.
func Cuts(i int) []float32 { return slices.Clone(cuts[i]) }

var cuts = [NumInputs][]float32{
	{0.75, 0.8, 0.84, 0.87, 0.89, 0.9, 0.91, 0.92, 0.93, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99, 0.995}, // cosine
	{0.25, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.99},                                                      // jaccard
	{0.5, 1.5, 2.5, 3.5},                      // only_max
	{0.5, 1.5, 2.5},                           // only_min
	{0.5, 1.5, 2.5},                           // only_long
	{0.2, 0.4, 0.6, 0.8, 0.99},                // order
	{0.5},                                     // swap
	{0.1, 0.2, 0.3, 0.45, 0.6, 0.8, 1},        // len_ratio
	{0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.99}, // char_sim
	{0.5},                     // person
	{1.5, 2.5, 3.5, 4.5, 6.5}, // size
	{0.5},                     // num_diff
	{0.5},                     // num_one
	{0.5},                     // negation
	{0.5, 1.5},                // entity
	{0.5},                     // question_why_how
	{0.5},                     // question_why
	{0.5},                     // question_wwh
	{0.5},                     // question_qty
	{0.5},                     // question_other
	{0.5},                     // opposite
	{0.5},                     // substitution
}

// ideal are the inputs of two identical texts.
var ideal = func() [NumInputs]float32 {
	f := Features{Cosine: 1, Jaccard: 1, CharSim: 1}
	return f.Inputs()
}()

// Prior returns the fixed log-odds step of input i (at its first cut) and
// whether it is fixed: the differences that change the answer whatever the
// training labels say. Quora's duplicate labels are loose ("Why does X go
// bad?" and "How does X go bad?" are marked duplicates, and so are "Can I
// get pregnant before my period?" and "…after my period?"), so fitting
// alone would weigh negation, different numbers, swapped roles, "why"
// against "how" and opposite words lightly;
// precision comes first, so these steps are set, not fitted, and fitting
// adjusts the others around them.
func Prior(i int) (w float32, fixed bool) {
	switch inputNames[i] {
	case "negation", "num_diff", "question_why_how", "swap", "opposite":
		return -4, true
	}
	return 0, false
}

// Sign is the direction input i may move the score: +1 for similarities
// (more never lowers it), -1 for differences (more never raises it), 0 for
// context. Fitting keeps every step of input i to its sign, so that each
// contribution is monotone and a difference is never evidence for a match,
// however the training labels fell.
func Sign(i int) int {
	switch inputNames[i] {
	case "cosine", "jaccard", "char_sim":
		return 1
	case "size":
		return 0
	}
	return -1
}

// Model is a logistic model over Inputs: the log-odds are Bias plus, for
// every input, the sum of its Steps at the Cuts it exceeds.
type Model struct {
	Bias  float32
	Steps [NumInputs][]float32 // Steps[i][k] applies when input i > Cuts(i)[k]

	// Threshold is the default minimum score of a hit.
	Threshold float32
	// MinCosine is the retrieval pre-filter (see MinCosine).
	MinCosine float32
	// CosineThreshold is the cosine-only comparison point (see
	// DefaultCosineThreshold).
	CosineThreshold float32
}

func (m Model) clone() Model {
	for i := range m.Steps {
		m.Steps[i] = slices.Clone(m.Steps[i])
	}
	return m
}

// MinCosineAt is the lossless retrieval pre-filter for threshold: the
// highest cosine at or under which no candidate can score threshold,
// whatever its text. The bias, plus every other input at its most
// favourable value (the contributions are monotone, so the most favourable
// is the largest running sum of its steps), plus the cosine's steps up to
// that cosine stay under the threshold's log-odds. It is -1 when any
// cosine can reach threshold and 1 when none can.
func (m *Model) MinCosineAt(threshold float32) float32 {
	switch {
	case threshold <= 0:
		return -1
	case threshold >= 1:
		return 1
	}
	need := math.Log(float64(threshold) / (1 - float64(threshold)))
	best := float64(m.Bias)
	cosine := -1
	for i, st := range m.Steps {
		if inputNames[i] == "cosine" {
			cosine = i
			continue
		}
		sum, top := 0.0, 0.0
		for _, x := range st {
			sum += float64(x)
			top = max(top, sum)
		}
		best += top
	}
	if best >= need {
		return -1
	}
	sum := 0.0
	for k, x := range m.Steps[cosine] {
		sum += float64(x)
		if best+sum >= need && k < len(cuts[cosine]) {
			return cuts[cosine][k] // reachable only above this cut
		}
	}
	return 1
}

// logit returns the model's log-odds for f and each reason's contribution
// relative to identical texts (negative: evidence against).
func (m *Model) logit(f *Features) (z float32, contrib [nReasons]float32) {
	x := f.Inputs()
	z = m.Bias
	for i, steps := range m.Steps {
		cs := cuts[i]
		var got, want float32
		for k := 0; k < len(steps) && k < len(cs); k++ {
			if x[i] > cs[k] {
				got += steps[k]
			}
			if ideal[i] > cs[k] {
				want += steps[k]
			}
		}
		z += got
		if g := groups[i]; g < nReasons {
			contrib[g] += got - want
		}
	}
	return z, contrib
}

// strongestAgainst names the reason with the most negative contribution.
func strongestAgainst(c [nReasons]float32) string {
	best, at := float32(0), -1
	for i, x := range c {
		if x < best {
			best, at = x, i
		}
	}
	if at < 0 {
		return "cosine"
	}
	return reasonNames[at]
}

// The built-in calibrations, fitted on qqp-dev.tsv (see the package doc):
// USE-lite's with `edgecache eval --pairs qqp-dev.tsv --fit` (on the
// training pairs, threshold at training precision 0.92; held out: judged
// precision 0.924 at recall 0.138, known-duplicate precision 0.885; before
// the opposite and substitution inputs and the synonyms, 0.922 at 0.129
// and 0.880), the lexical fallback's with `--embedder lexical --fit
// --fit-on cache --fit-precision 0.90` (on retrieved candidates, which
// suit it better: held out, judged precision 0.913 at recall 0.054, where
// fitting on pairs reached 0.020). The lexical model keeps that fit; its
// opposite step is the prior and its substitution step (-0.83) is from a
// refit with the same command, whose other steps and threshold lost recall
// (held out 0.910 at 0.022), so they were not taken.
var (
	useLiteModel = Model{
		Bias: -0.5608,
		Steps: [NumInputs][]float32{
			{0.5294, 0.4007, 0.3869, 0.2462, 0.1578, 0.0000, 0.0105, 0.1125, 0.0000, 0.0609, 0.2042, 0.0000, 0.0000, 0.3774, 0.2459, 0.0000}, // cosine
			{0.0025, 0.0000, 0.0000, 0.0000, 0.0000, 0.0000, 0.0123, 0.0000},                                                                 // jaccard
			{0.0000, 0.0000, 0.0000, 0.0000},          // only_max
			{0.0000, 0.0000, 0.0000},                  // only_min
			{-0.0965, 0.0000, 0.0000},                 // only_long
			{-0.3374, 0.0000, 0.0000, 0.0000, 0.0000}, // order
			{-4.0000}, // swap
			{0.0000, 0.0000, 0.0000, 0.0000, 0.0000, 0.0000, -0.2527},        // len_ratio
			{0.0000, 0.0000, 0.0000, 0.0000, 0.0000, 0.0000, 0.0000, 0.0935}, // char_sim
			{0.0000}, // person
			{0.2663, 0.2146, -0.0962, 0.1113, 0.0125}, // size
			{-4.0000},          // num_diff
			{-0.3189},          // num_one
			{-4.0000},          // negation
			{-0.4918, -0.5413}, // entity
			{-4.0000},          // question_why_how
			{0.0000},           // question_why
			{-0.1694},          // question_wwh
			{-0.5981},          // question_qty
			{0.0000},           // question_other
			{-4.0000},          // opposite
			{-1.2183},          // substitution
		},
		Threshold:       0.8670,
		MinCosine:       0.9200,
		CosineThreshold: 0.9685,
	}
	lexicalModel = Model{
		Bias: -2.4269,
		Steps: [NumInputs][]float32{
			{0.0107, 0.0000, 0.0000, 0.0000, 0.0000, 0.0000, 0.0000, 0.0000, 0.1954, 0.5434, 0.0000, 0.0000, 0.0000, 0.0000, 1.4540, 1.4540}, // cosine
			{0.7155, 0.4232, 0.0000, 0.0000, 0.0000, 0.0000, 0.2483, 0.1839},                                                                 // jaccard
			{-0.1839, 0.0000, 0.0000, 0.0000},         // only_max
			{-1.0775, -0.5100, 0.0000},                // only_min
			{-0.1125, -0.1320, 0.0000},                // only_long
			{0.0000, 0.0000, 0.0000, 0.0000, -0.0907}, // order
			{-4.0000}, // swap
			{0.0000, 0.0000, 0.0000, 0.0000, 0.0000, 0.0000, -0.6826},        // len_ratio
			{0.7266, 0.0137, 0.1773, 0.0888, 0.1734, 0.0212, 0.0000, 0.3995}, // char_sim
			{-0.0052},                                // person
			{0.3924, 0.5575, 0.3631, 0.3402, 0.1369}, // size
			{-4.0000},                                // num_diff
			{-0.3308},                                // num_one
			{-4.0000},                                // negation
			{-0.7865, -1.1607},                       // entity
			{-4.0000},                                // question_why_how
			{-0.7648},                                // question_why
			{-0.3614},                                // question_wwh
			{-1.3163},                                // question_qty
			{-0.5345},                                // question_other
			{-4.0000},                                // opposite
			{-0.8330},                                // substitution
		},
		Threshold:       0.8870,
		MinCosine:       0.7000,
		CosineThreshold: 0.9123,
	}
)
