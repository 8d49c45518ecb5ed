package pipeline

import (
	"fmt"
	"math/rand/v2"
)

// Test traffic for shadow verification: families of questions asked the
// same way about different things. The canonical questions of the first
// seeded entities are asked first and stored; their paraphrases are right
// to serve from them, the canonical question of another entity (a hard
// negative: "learn Java" against "learn Python") is wrong to serve from
// them. The verifier (USE-lite's built-in calibration) scores these
// paraphrases 0.77–0.94 and these hard negatives 0.05–0.29 against the
// stored questions: a loose threshold serves both, a calibrated one only
// the paraphrases.
var shadowFamilies = []struct {
	canon string
	paras []string
	ents  []string
}{
	{"How do I learn %s quickly?",
		[]string{"What is the fastest way to learn %s?", "How can I learn %s fast?", "How do I quickly learn %s?", "How should I learn %s quickly?"},
		[]string{"Python", "Java", "Rust", "Ruby", "Kotlin", "Haskell", "Scala", "Swift", "Perl", "Elixir", "Erlang", "Clojure"}},
	{"What is the weather like in %s today?",
		[]string{"How is the weather in %s today?", "What's the weather like in %s today?", "What is today's weather in %s?"},
		[]string{"Paris", "London", "Tokyo", "Berlin", "Madrid", "Rome", "Vienna", "Prague", "Oslo", "Dublin", "Lisbon", "Athens"}},
	{"How do I reset my %s password?",
		[]string{"How can I reset my %s password?", "I forgot my %s password, how do I reset it?", "How do I reset the password of my %s account?"},
		[]string{"Gmail", "Outlook", "Netflix", "Spotify", "Amazon", "PayPal", "Dropbox", "Slack", "Zoom", "GitHub", "Steam", "Twitter"}},
}

// seededEntities is how many entities of each family have their canonical
// question stored first.
const seededEntities = 6

// shadowTraffic is the test traffic: the seeds, the queries in a seeded
// random order, and for every question the canonical question whose answer
// is the right one (its own for seeds and hard negatives).
type shadowTraffic struct {
	seeds, queries []string
	canonOf        map[string]string
	hard           map[string]bool
}

func newShadowTraffic(seed uint64) shadowTraffic {
	tr := shadowTraffic{canonOf: map[string]string{}, hard: map[string]bool{}}
	for _, f := range shadowFamilies {
		for i, e := range f.ents {
			c := fmt.Sprintf(f.canon, e)
			tr.canonOf[c] = c
			if i >= seededEntities {
				tr.queries = append(tr.queries, c)
				tr.hard[c] = true
				continue
			}
			tr.seeds = append(tr.seeds, c)
			for _, p := range f.paras {
				q := fmt.Sprintf(p, e)
				tr.canonOf[q] = c
				tr.queries = append(tr.queries, q)
			}
		}
	}
	r := rand.New(rand.NewPCG(seed, 1))
	r.Shuffle(len(tr.queries), func(i, j int) { tr.queries[i], tr.queries[j] = tr.queries[j], tr.queries[i] })
	return tr
}

// canonicalMap is llmsim's canonical question map for the traffic:
// paraphrases answered as their canonical question.
func (tr shadowTraffic) canonicalMap() map[string]string {
	m := map[string]string{}
	for q, c := range tr.canonOf {
		if q != c {
			m[q] = c
		}
	}
	return m
}
