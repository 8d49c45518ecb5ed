package verify

import "math"

// DefaultEmbedder is the embedder whose calibration New uses.
const DefaultEmbedder = "use-lite-v1"

// NumInputs is the number of model inputs derived from Features.
const NumInputs = 18

// InputNames names the model inputs, in order.
var InputNames = [NumInputs]string{
	"cosine", "cosine_log", "jaccard", "only_max", "only_min", "only_long",
	"order", "swap", "len_ratio", "num_diff", "num_one", "negation", "entity",
	"question_why_how", "question_why", "question_wwh", "question_qty", "question_other",
}

// groups maps each input to the reason it speaks for.
var groups = [NumInputs]uint8{
	rCosine, rCosine, rContent, rContent, rContent, rContent,
	rContent, rContent, rContent, rNumbers, rNumbers, rNegation, rEntity,
	rQuestion, rQuestion, rQuestion, rQuestion, rQuestion,
}

const (
	rCosine uint8 = iota
	rContent
	rNumbers
	rNegation
	rEntity
	rQuestion
	nReasons
)

var reasonNames = [nReasons]string{"cosine", "content", "numbers", "negation", "entity", "question"}

// Inputs are the model's inputs for f: the features plus a steep transform
// of the cosine that separates 0.95 from 0.99.
func (f *Features) Inputs() [NumInputs]float32 {
	return [NumInputs]float32{
		f.Cosine, cosLog(f.Cosine), f.Jaccard, f.OnlyMax, f.OnlyMin, f.OnlyLong,
		f.Order, f.Swap, f.LenRatio, f.NumDiff, f.NumOne, f.Negation, f.Entity,
		f.QuestionH, f.QuestionY, f.QuestionW, f.QuestionQ, f.QuestionO,
	}
}

// ideal are the inputs of two identical texts.
var ideal = func() [NumInputs]float32 {
	f := Features{Cosine: 1, Jaccard: 1}
	return f.Inputs()
}()

func cosLog(c float32) float32 { return float32(-math.Log(1.01 - float64(c))) }

// Model is a logistic model over Inputs with its operating points.
type Model struct {
	Bias    float32
	Weights [NumInputs]float32

	// Threshold is the default minimum score of a hit.
	Threshold float32
	// MinCosine is the retrieval pre-filter (see MinCosine).
	MinCosine float32
	// CosineThreshold is the cosine-only comparison point (see
	// DefaultCosineThreshold).
	CosineThreshold float32
}

// logit returns the model's log-odds for f and each reason's contribution
// relative to identical texts (negative: evidence against).
func (m *Model) logit(f *Features) (z float32, contrib [nReasons]float32) {
	x := f.Inputs()
	z = m.Bias
	for i, w := range m.Weights {
		z += w * x[i]
		contrib[groups[i]] += w * (x[i] - ideal[i])
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

// The built-in calibrations, fitted with `edgecache eval --fit` (see the
// package doc). Weights apply to Inputs.
var (
	useLiteModel = Model{
		Bias:            -40,
		Weights:         [NumInputs]float32{40},
		Threshold:       0.919,
		MinCosine:       0.94,
		CosineThreshold: 0.9938,
	}
	lexicalModel = Model{
		Bias:            -40,
		Weights:         [NumInputs]float32{40},
		Threshold:       0.5,
		MinCosine:       0.5,
		CosineThreshold: 0.93,
	}
)
