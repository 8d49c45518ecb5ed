// Package verify is the second, stricter check a semantic candidate must
// pass before its cached answer is served: nearest-neighbour retrieval finds
// prompts that look alike; verification decides whether they ask the same
// thing (same numbers, same entities, same polarity, same question).
//
// The contract with the pipeline: retrieve the Candidates nearest stored
// prompts whose cosine is at least MinCosine(embedder) (below it no
// candidate worded differently from the query can pass) and any stored
// prompt worded as the query (the same AppendWordingKey: Score takes it for
// the query whatever their cosine), Score each, and serve the
// candidate with the highest score (the nearer one on ties) when that
// score reaches the route's threshold, DefaultThreshold(embedder) unless
// the route sets one.
//
// Score tokenises both texts (NFKC, lowercase, light stemming, small
// built-in lists of stopwords, filler words, question, negation and number
// words, synonyms and opposite words), measures the Features (content
// words on one side only, character overlap, numbers, negation, likely
// names, question type, swapped roles, opposite words, one word swapped
// for another, length) and adds, per input, a monotone step function of it
// to the log-odds: boosted stumps on a fixed grid, fitted per embedder on a
// training split of Quora Question Pairs (cmd/internal/eval, --fit). Five
// differences are set rather than fitted (Prior): negation, different
// numbers, swapped roles, "why" against "how" and opposite words
// ("maximum" against "minimum") each take 4 off the log-odds, which no
// similarity makes up for. The score reads as the probability that serving
// the candidate is right.
package verify

import (
	"math"
	"strings"
	"sync"
)

// Candidates is how many nearest neighbours the pipeline retrieves per
// lookup (k). The verifier picks among them, so a true paraphrase ranked
// below a closer-looking impostor is still found.
const Candidates = 5

// Verifier scores how likely a cached prompt asks the same thing as a query.
// It is safe for concurrent use.
type Verifier struct {
	m    *Model
	pool sync.Pool // of *scratch
}

// New returns a Verifier with the built-in calibration of the default
// embedder (USE-lite).
func New() *Verifier { return NewFor(DefaultEmbedder) }

// NewFor returns a Verifier with the built-in calibration for the named
// embedder (embed.Embedder.Name). Unknown names get USE-lite's.
func NewFor(embedderName string) *Verifier { return NewModel(modelFor(embedderName)) }

// NewModel returns a Verifier using (a copy of) m, for models fitted
// elsewhere.
func NewModel(m Model) *Verifier {
	m = m.clone()
	v := &Verifier{m: &m}
	v.pool.New = func() any { return newScratch() }
	return v
}

// Model returns a copy of the Verifier's model.
func (v *Verifier) Model() Model { return v.m.clone() }

// DefaultThreshold is the minimum score of a semantic hit for the named
// embedder when the route sets none.
func DefaultThreshold(embedderName string) float32 { return modelFor(embedderName).Threshold }

// MinCosine is the retrieval pre-filter for the named embedder at its
// default threshold: below it, the verifier never accepts a candidate
// worded differently from the query at that threshold, so nothing is lost
// by not retrieving them (one worded the same is found by
// AppendWordingKey). A lookup at another threshold uses
// Verifier.MinCosine.
func MinCosine(embedderName string) float32 { return modelFor(embedderName).MinCosine }

// MinCosine is the lossless retrieval pre-filter for threshold (see
// Model.MinCosineAt): the pipeline passes it to Index.Search as minScore
// for the threshold a lookup uses, which a route, a request header or the
// degraded floor may have moved from the default.
func (v *Verifier) MinCosine(threshold float32) float32 { return v.m.MinCosineAt(threshold) }

// DefaultCosineThreshold is the threshold a cache without verification
// would use for the named embedder: the cosine at which nearest-neighbour
// hits reach the same recall as the verifier at its default threshold.
// It is for comparisons (edgecache eval --no-verify), not for serving.
func DefaultCosineThreshold(embedderName string) float32 {
	return modelFor(embedderName).CosineThreshold
}

func modelFor(name string) Model {
	if strings.HasPrefix(name, "lexical") {
		return lexicalModel
	}
	return useLiteModel
}

func (v *Verifier) get() *scratch  { return v.pool.Get().(*scratch) }
func (v *Verifier) put(s *scratch) { v.pool.Put(s) }

// Score returns a match score in [0, 1] for query against candidate, given
// their embedding cosine, and when the score is under the model's default
// threshold, the main reason against the match: "cosine", "content",
// "numbers", "negation", "entity", "question" or "opposite" (a fixed word,
// for logs and metrics). It never panics and
// does not allocate for ASCII texts.
func (v *Verifier) Score(query, candidate string, cosine float32) (score float32, reason string) {
	s := v.get()
	f := s.features(query, candidate, cosine)
	v.put(s)
	z, contrib := v.m.logit(&f)
	score = sigmoid(z)
	if score < v.m.Threshold {
		reason = strongestAgainst(contrib)
	}
	return score, reason
}

func sigmoid(z float32) float32 {
	switch {
	case z != z:
		return 0
	case z > 30:
		return 1
	case z < -30:
		return 0
	}
	return float32(1 / (1 + math.Exp(-float64(z))))
}
