package verify

import (
	"slices"
	"testing"
)

// nearMisses are prompts one word away from asking the opposite, or about
// another thing of the same kind. USE-lite puts such pairs at cosines of
// 0.75–0.995 ("…minimum salary." against "…maximum salary.": 0.9949), so
// they must fail verification at any cosine, under the default threshold
// and under the degraded floor alike.
var nearMisses = []struct {
	query, hit string
	reasons    []string // acceptable reasons
}{
	{"Write a SQL query to find the minimum salary.", "Write a SQL query to find the maximum salary.", []string{"opposite"}},
	{"What is the maximum speed of a car?", "What is the minimum speed of a car?", []string{"opposite"}},
	{"What is the max value of int in Java?", "What is the min value of int in Java?", []string{"opposite"}},
	{"Which country has the highest GDP?", "Which country has the lowest GDP?", []string{"opposite"}},
	{"How do I enable two-factor authentication?", "How do I disable two-factor authentication?", []string{"opposite"}},
	{"How do I cancel my subscription?", "How do I renew my subscription?", []string{"opposite"}},
	{"How can I increase my credit score?", "How can I decrease my credit score?", []string{"opposite"}},
	{"What should I eat before a workout?", "What should I eat after a workout?", []string{"opposite"}},
	{"How do I import a CSV file into Excel?", "How do I export a CSV file into Excel?", []string{"opposite"}},
	{"How do I upload files to Google Drive?", "How do I download files to Google Drive?", []string{"opposite"}},
	{"How do I encrypt a file in Linux?", "How do I decrypt a file in Linux?", []string{"opposite"}},
	{"Is it a good time to buy bitcoin?", "Is it a good time to sell bitcoin?", []string{"opposite"}},
	{"How do I open a bank account?", "How do I close a bank account?", []string{"opposite"}},
	{"How do I start a Windows service?", "How do I stop a Windows service?", []string{"opposite"}},
	{"How do I add a user to a group in Linux?", "How do I remove a user from a group in Linux?", []string{"opposite"}},
	{"Should I accept the job offer?", "Should I reject the job offer?", []string{"opposite"}},
	{"Why can't I login to my account?", "Why can't I logout of my account?", []string{"opposite"}},
	{"Why can't I log in to my account?", "Why can't I log out of my account?", []string{"opposite"}},
	{"How do I win at chess?", "How do I lose at chess?", []string{"opposite"}},
	{"Why is my laptop fan enabled?", "Why is my laptop fan disabling itself?", []string{"opposite"}},
	{"Can you disable 2FA for me?", "Can you enable 2FA for me?", []string{"opposite"}},
	{"disable 2FA", "enable 2FA", []string{"opposite"}},
	// One lower-case term swapped for another of its kind.
	{"What are the side effects of aspirin?", "What are the side effects of warfarin?", []string{"cosine", "content", "entity"}},
	{"side effects of acetaminophen", "side effects of ibuprofen", []string{"cosine", "content", "entity"}},
	{"What are the side effects of acetaminophen?", "What are the side effects of ibuprofen?", []string{"cosine", "content", "entity"}},
	{"how do i learn python", "how do i learn java", []string{"cosine", "content", "entity"}},
	{"How do I learn Python?", "How do I learn Java?", []string{"cosine", "content", "entity"}},
	{"How do I get from Paris to Berlin?", "How do I get from Paris to Madrid?", []string{"cosine", "content", "entity"}},
	{"how do i get from paris to berlin", "how do i get from paris to madrid", []string{"cosine", "content", "entity"}},
}

// degradedFloor is about the lowest threshold the degraded rung serves
// at: near misses stay under it too.
const degradedFloor = DegradedFloor

func TestNearMissesScoreUnderTheDegradedFloor(t *testing.T) {
	v := New()
	for _, tc := range nearMisses {
		for _, order := range [][2]string{{tc.query, tc.hit}, {tc.hit, tc.query}} {
			for _, cos := range []float32{0.95, 0.99, 0.999} {
				s, reason := v.Score(order[0], order[1], cos)
				if s >= degradedFloor {
					t.Errorf("Score(%q, %q, %v) = %.3f, want < %v", order[0], order[1], cos, s, degradedFloor)
				}
				if !slices.Contains(tc.reasons, reason) {
					t.Errorf("Score(%q, %q, %v) reason %q, want one of %q", order[0], order[1], cos, reason, tc.reasons)
				}
			}
		}
	}
}

// Paraphrases still pass at the cosines USE-lite gives them (measured,
// and 0.97 for all): the opposite and substitution inputs leave them
// alone, "without" meets "with no", and synonyms count as the same word.
func TestParaphrasesStillPass(t *testing.T) {
	v := New()
	thr := DefaultThreshold(DefaultEmbedder)
	for _, tc := range []struct {
		query, hit string
		cosine     float32
	}{
		{"How do I reset my password?", "How can I reset my password?", 0.9892},
		{"How can I lose weight fast?", "How do I lose weight fast?", 0.9908},
		{"What is the capital of France?", "What's the capital of France?", 0.9843},
		{"How do I improve my English?", "How can I improve my English?", 0.9888},
		{"How do I teach my kids to read?", "How do I teach my children to read?", 0.9891},
		{"How do I delete my Facebook account?", "How can I remove my Facebook account?", 0.9557},
		{"How can I start a business without money?", "How can I start a business with no money?", 0.9896},
		{"What are some amazing facts about space?", "What are some incredible facts about space?", 0.9944},
	} {
		for _, order := range [][2]string{{tc.query, tc.hit}, {tc.hit, tc.query}} {
			for _, cos := range []float32{tc.cosine, 0.97} {
				s, reason := v.Score(order[0], order[1], cos)
				if s < thr || reason != "" {
					t.Errorf("Score(%q, %q, %v) = %.3f %q, want >= %.3f and no reason", order[0], order[1], cos, s, reason, thr)
				}
			}
		}
	}
}

func TestOppositeAndSubstitutionFeatures(t *testing.T) {
	v := New()
	for _, tc := range []struct {
		q, c                   string
		opposite, substitution float32
		want                   string
	}{
		{"How do I enable notifications?", "How do I disable notifications?", 1, 1, "a pole against the other (and a word swapped)"},
		{"Notifications enabled", "disabling notifications", 1, 0, "stems: enabled and disabling"},
		{"How do I add a printer?", "Adding a printer", 0, 0, "adding is add"},
		{"How do I log in?", "How do I log out?", 1, 0, "phrases"},
		{"How do I reduce high blood pressure?", "How do I lower blood pressure?", 0, 0, "both poles on one side: no opposite"},
		{"What are the pros and cons of Go?", "What are the cons of Go?", 0, 0, "pros and cons against cons"},
		{"Is coffee good for you?", "Is coffee bad for you?", 1, 0, "filler words have opposites too"},
		{"What is the most populated country?", "What is the least populated country?", 1, 0, "and stop words"},
		{"Can I live with diabetes?", "Can I live without diabetes?", 0, 0, "without is a negation (Negation), not an opposite"},
		{"What are the side effects of aspirin?", "What are the side effects of warfarin?", 0, 1, "one term swapped for another"},
		{"how do i learn python", "how do i learn java", 0, 1, "at the end of the text"},
		{"learn python fast", "learn java fast", 0, 1, "between shared words"},
		{"What is your favourite colour?", "What is your favorite colour?", 0, 0, "a respelling is no substitution"},
		{"Where can I download a tv show?", "Where can I download a television show?", 0, 0, "nor an abbreviation"},
		{"How do I teach my kids to read?", "How do I teach my children to read?", 0, 0, "nor a synonym"},
		{"How do I learn python?", "What is python used for in data science?", 0, 0, "nor many words changed"},
	} {
		f := v.Extract(tc.q, tc.c, 0.95)
		g := v.Extract(tc.c, tc.q, 0.95)
		if f.Opposite != tc.opposite || f.Substitution != tc.substitution || g.Opposite != f.Opposite || g.Substitution != f.Substitution {
			t.Errorf("%s: Extract(%q, %q): opposite %v (reversed %v), substitution %v (reversed %v), want %v and %v",
				tc.want, tc.q, tc.c, f.Opposite, g.Opposite, f.Substitution, g.Substitution, tc.opposite, tc.substitution)
		}
	}
}

func TestSynonymsCountAsTheSameWord(t *testing.T) {
	v := New()
	f := v.Extract("How do I teach my kids to read?", "How do I teach my children to read?", 0.95)
	if f.Jaccard != 1 || f.OnlyMax != 0 {
		t.Errorf("kids against children: %+v, want Jaccard 1 and no one-side word", f)
	}
}

func TestOppositeLexicon(t *testing.T) {
	// Every line has two poles, and the pairs the issue names are in it.
	for _, pair := range [][2]string{
		{"maximum", "minimum"}, {"max", "min"}, {"highest", "lowest"}, {"enable", "disable"},
		{"cancel", "renew"}, {"increase", "decrease"}, {"before", "after"}, {"import", "export"},
		{"upload", "download"}, {"encrypt", "decrypt"}, {"buy", "sell"}, {"open", "close"},
		{"start", "stop"}, {"add", "remove"}, {"accept", "reject"}, {"login", "logout"}, {"win", "lose"},
	} {
		a, b := opposites[wordHash(pair[0])], opposites[wordHash(pair[1])]
		found := false
		for _, x := range a {
			for _, y := range b {
				if x != 0 && y != 0 && x>>1 == y>>1 && x&1 != y&1 {
					found = true
				}
			}
		}
		if !found {
			t.Errorf("%s and %s are not opposite poles of one dimension", pair[0], pair[1])
		}
	}
}
