package pipeline

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/edgecache/edgecache/cmd/internal/llmsim"
	"github.com/edgecache/edgecache/embed"
)

// judgePair is a cached answer, a fresh answer and whether serving the
// cached one for the fresh one's question was right.
type judgePair struct {
	cached, fresh string
	agree         bool
}

// realisticPairs are answers as a chat model writes them: rewordings of
// one answer (right to serve) and answers to a neighbouring question
// (wrong to serve) — another entity, another number, the opposite action,
// another topic.
var realisticPairs = []judgePair{
	{"The capital of France is Paris.", "Paris is the capital city of France, on the Seine.", true},
	{"The capital of France is Paris.", "The capital of Germany is Berlin.", false},
	{"To learn Python quickly, start with the official tutorial, write small programs every day, and read other people's code.",
		"The fastest way to learn Python is to practise daily: work through the official tutorial and build small projects.", true},
	{"To learn Python quickly, start with the official tutorial, write small programs every day, and read other people's code.",
		"To learn Java quickly, start with the official Java tutorial, write small programs every day, and read other people's code.", false},
	{"15% of 80 is 12.", "Fifteen percent of 80 equals 12.", true},
	{"15% of 80 is 12.", "15% of 90 is 13.5.", false},
	{"Go to Settings > Security and turn on two-factor authentication.", "Open Settings, then Security, and enable two-factor authentication.", true},
	{"Go to Settings > Security and enable two-factor authentication.", "Open Settings, then Security, and disable two-factor authentication.", false},
	{"Rinse one cup of rice, add two cups of water, bring to a boil and simmer covered for 18 minutes.",
		"To reset your password, click Forgot password on the sign-in page and follow the link in the email.", false},
	{"To reset your password, click Forgot password on the sign-in page and follow the link we email you.",
		"Click Forgot password on the sign-in page; we will email you a link to choose a new password.", true},
	{"Water boils at 100 degrees Celsius at sea level.", "At sea level, water boils at 100 °C (212 °F).", true},
	{"Water boils at 100 degrees Celsius at sea level.", "Water freezes at 0 degrees Celsius at sea level.", false},
	{"Mount Everest is 8,849 metres high.", "Everest stands 8849 m above sea level.", true},
	{"Mount Everest is 8,849 metres high.", "K2 is 8,611 metres high.", false},
	{"Python 3.12 was released in October 2023.", "Python 3.12 came out in October 2023.", true},
	{"Python 3.12 was released in October 2023.", "Python 3.11 was released in October 2022.", false},
	{"A week has seven days.", "There are seven days in a week.", true},
	{"The Great Wall of China is about 21,196 km long.", "The Amazon River is about 6,400 km long.", false},
	{"Use git checkout -b feature to create a branch and switch to it.", "Run git checkout -b feature: it creates the branch and switches to it.", true},
	{"Use git branch -d feature to delete a branch.", "Use git checkout -b feature to create a branch.", false},
	{"You can cancel your subscription under Account > Billing.", "Go to Account, then Billing, and choose Cancel subscription.", true},
	{"You can cancel your subscription under Account > Billing.", "You can renew your subscription under Account > Billing.", false},
	{"Tokyo is the capital of Japan and its largest city.", "Japan's capital is Tokyo, which is also its biggest city.", true},
	{"Tokyo is the capital of Japan and its largest city.", "Canberra is the capital of Australia, though Sydney is larger.", false},
	{"Shakespeare wrote Hamlet around 1600.", "Hamlet was written by William Shakespeare in about 1600.", true},
	{"Shakespeare wrote Hamlet around 1600.", "Shakespeare wrote Macbeth around 1606.", false},
	{"Boil the eggs for 9 minutes for a firm yolk.", "For a hard yolk, cook the eggs in boiling water for 9 minutes.", true},
	{"Boil the eggs for 9 minutes for a firm yolk.", "Boil the eggs for 6 minutes for a runny yolk.", false},
	{"Press Ctrl+Shift+T to reopen the last closed tab in Chrome.", "In Chrome, Ctrl+Shift+T brings back the tab you closed last.", true},
	{"Press Ctrl+Shift+T to reopen the last closed tab in Chrome.", "Press Ctrl+Shift+N to open an incognito window in Chrome.", false},
	{"The speed of light is about 299,792 km per second.", "Light travels at roughly 299,792 kilometres per second in a vacuum.", true},
	{"The speed of light is about 299,792 km per second.", "The speed of sound is about 343 metres per second in air.", false},
	{"Photosynthesis turns light, water and carbon dioxide into sugar and oxygen.", "Plants use sunlight to make glucose and oxygen from water and CO2.", true},
	{"Photosynthesis turns light, water and carbon dioxide into sugar and oxygen.", "Respiration breaks sugar down with oxygen, releasing energy, water and carbon dioxide.", false},
	{"To exit Vim, press Esc and type :q! to quit without saving.", "Hit Esc, then enter :q! and Vim closes without saving your changes.", true},
	{"To exit Vim, press Esc and type :wq to save and quit.", "To exit Vim, press Esc and type :q! to quit without saving.", false},
	{"You can pay by credit card at checkout.", "You cannot pay by credit card at checkout.", false},
	{"You can pay by credit card at checkout.", "Credit cards are accepted when you check out.", true},
}

// hardPairs are answers the judge is known to get wrong or leave unsure:
// the same numbers in another unit, a negation without a listed opposite,
// the same facts about another drug. They are measured and reported (the
// README's figures), not required.
var hardPairs = []judgePair{
	{"Store cooked rice in the fridge for up to 3 days.", "Store cooked rice in the freezer for up to 3 months.", false},
	{"Aspirin thins the blood and can cause stomach bleeding.", "Paracetamol relieves pain and fever but does not thin the blood.", false},
	{"Yes, you can take ibuprofen with food to avoid stomach upset.", "No, you should not take ibuprofen on an empty stomach.", true},
	{"The meeting is on Tuesday at 10 am.", "The meeting is on Thursday at 10 am.", false},
	{"The museum is closed on Mondays.", "The museum does not open on Mondays.", true},
}

// TestJudgeRealisticPairs runs the judge with USE-lite on realisticPairs:
// no answer to a different question may be judged agree, no rewording
// disagree (unsure is allowed: it widens the interval, it does not bias
// the estimate). The judge's thresholds were set on these pairs; the
// README reports the figures with that caveat.
func TestJudgeRealisticPairs(t *testing.T) {
	j := newJudge(loadUseLite(t))
	acc := judgeAccuracy(t, j, realisticPairs)
	t.Logf("realistic pairs: %s", acc)
	if acc.falseAgree > 0 || acc.falseDisagree > 0 {
		t.Errorf("the judge got %d wrong answers judged agree and %d right answers judged disagree", acc.falseAgree, acc.falseDisagree)
	}
	t.Logf("known hard pairs: %s", judgeAccuracy(t, j, hardPairs))
}

// accuracy counts a judge's verdicts against labels, and what decided them.
type accuracy struct {
	pairs, correct, unsure, falseAgree, falseDisagree int
	reasons                                           map[string]int
}

func (a accuracy) String() string {
	return fmt.Sprintf("%d pairs: %d correct (%.1f %%), %d unsure, %d wrong judged agree, %d right judged disagree; decided by %v",
		a.pairs, a.correct, 100*float64(a.correct)/float64(max(a.pairs, 1)), a.unsure, a.falseAgree, a.falseDisagree, a.reasons)
}

func judgeAccuracy(t *testing.T, j *Judge, pairs []judgePair) accuracy {
	t.Helper()
	a := accuracy{reasons: map[string]int{}}
	for _, p := range pairs {
		jd := j.Judge(context.Background(), p.cached, p.fresh)
		a.pairs++
		a.reasons[jd.Reason]++
		switch {
		case jd.Verdict == Unsure:
			a.unsure++
		case (jd.Verdict == Agree) == p.agree:
			a.correct++
		case jd.Verdict == Agree:
			a.falseAgree++
		default:
			a.falseDisagree++
		}
		if (jd.Verdict == Agree) != p.agree {
			t.Logf("%v (%s, cosine %.3f): %.60q | %.60q (labelled agree=%v)", jd.Verdict, jd.Reason, jd.Cosine, p.cached, p.fresh, p.agree)
		}
	}
	return a
}

func TestExtractFacts(t *testing.T) {
	for _, c := range []struct {
		text                   string
		numbers, ids, entities []string
	}{
		{"15% of 1,000 is 150.00 dollars.", []string{"15", "1000", "150"}, nil, nil},
		{"sim:3fa2b1c0d9e8 lorem ipsum", nil, []string{"3fa2b1c0d9e8"}, nil},
		{"Paris is the capital of France. The Seine flows through it.", nil, nil, []string{"france", "seine"}},
		{"Use the AWS CLI v2 and the NASA API, OK?", nil, []string{"v2"}, []string{"aws", "cli", "nasa", "api"}},
		{"Press Ctrl+Shift+T, or run git log -p in ~/src.", nil, []string{"ctrl+shift+t", "-p", "~/src"}, nil},
		{"Japan's capital is Tokyo.", nil, nil, []string{"tokyo"}},
	} {
		f := extractFacts(c.text)
		for name, pair := range map[string]struct {
			got  map[string]bool
			want []string
		}{"numbers": {f.numbers, c.numbers}, "ids": {f.ids, c.ids}, "entities": {f.entities, c.entities}} {
			if len(pair.got) != len(pair.want) {
				t.Errorf("%q: %s %v, want %v", c.text, name, pair.got, pair.want)
				continue
			}
			for _, w := range pair.want {
				if !pair.got[w] {
					t.Errorf("%q: %s %v, want %v", c.text, name, pair.got, pair.want)
				}
			}
		}
	}
}

// TestJudgeAccuracy measures the judge on a labelled set of answer pairs
// built with llmsim (the README reports the figures): for every seeded
// question of shadowTraffic, its answer against the answer to each of its
// paraphrases (llmsim's canonical map: labelled agree) and against the
// answer to each hard negative of its family (labelled disagree), with
// paraphrase answers byte for byte the canonical one and reworded (same
// first word, other filler), plus realisticPairs. The judge must get every
// hard negative right (no wrong hit judged agree) and at least 95 % of all
// pairs.
func TestJudgeAccuracy(t *testing.T) {
	tr := newShadowTraffic(1)
	sim, err := llmsim.Start(t.Context(), "127.0.0.1:0", llmsim.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	j := newJudge(embed.Embedder(loadUseLite(t)))
	ask := func(q string) string {
		t.Helper()
		resp, err := http.Post(sim.URL()+"/v1/chat/completions", "application/json", strings.NewReader(chat(q)))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return content(t, b)
	}
	var total accuracy
	for _, reword := range []bool{false, true} {
		if err := sim.Server.SetCanonical(tr.canonicalMap(), reword); err != nil {
			t.Fatal(err)
		}
		var pairs []judgePair
		for _, seed := range tr.seeds {
			cached := ask(seed)
			for q, c := range tr.canonOf {
				switch {
				case c == seed && q != seed:
					pairs = append(pairs, judgePair{cached, ask(q), true})
				case tr.hard[q] && sameFamily(q, seed):
					pairs = append(pairs, judgePair{cached, ask(q), false})
				}
			}
		}
		acc := judgeAccuracy(t, j, pairs)
		t.Logf("llmsim pairs (reword %v): %s", reword, acc)
		total = total.plus(acc)
	}
	acc := judgeAccuracy(t, j, realisticPairs)
	total = total.plus(acc)
	t.Logf("all labelled pairs: %s", total)
	if total.falseAgree > 0 || float64(total.correct) < 0.95*float64(total.pairs) {
		t.Errorf("judge accuracy: %s; want no wrong answer judged agree and at least 95 %% correct", total)
	}
}

func (a accuracy) plus(b accuracy) accuracy {
	sum := accuracy{a.pairs + b.pairs, a.correct + b.correct, a.unsure + b.unsure, a.falseAgree + b.falseAgree,
		a.falseDisagree + b.falseDisagree, map[string]int{}}
	for _, m := range []map[string]int{a.reasons, b.reasons} {
		for k, v := range m {
			sum.reasons[k] += v
		}
	}
	return sum
}

// sameFamily reports whether two questions of shadowFamilies share a
// template (their words before the entity).
func sameFamily(a, b string) bool {
	for _, f := range shadowFamilies {
		prefix, _, _ := strings.Cut(f.canon, "%s")
		if strings.HasPrefix(a, prefix) && strings.HasPrefix(b, prefix) {
			return true
		}
	}
	return false
}
