package verify

import "strings"

// The built-in word lists: small, English, lowercase, matched before
// stemming. They are tables, not learned data.

const stopWords = `a an the this that these those there here
of to in on at for from by with about as into onto over under upon within via per
and or but if then than so because while whether though although
i me my mine myself we us our ours you your yours yourself he him his she her hers
it its they them their theirs one ones someone something anyone anything everyone
is am are was were be been being do does did done doing have has had having
can could will would shall should may might must
get gets got getting go goes going make makes made
what's which's who's
also just only even still ever very too quite really actually exactly
some any all each every other another such same own more most much many
s t`

// fillerWords are content-looking words that paraphrases add or drop
// without changing what is asked ("What is the best way to learn Python?"
// and "How do I learn Python?").
const fillerWords = `best good better great easy easiest effective simple possible
way ways method methods thing things tip tips idea ideas
please know tell explain suggest recommend help want wish need
like kind sort type types basically generally usually
quora question questions answer answers people person`

const questionWords = `what which who whom whose when where why how`

const negationWords = `not no non never nothing none nobody nowhere neither nor cannot without`

// numberWords map to their digits so that "five" meets "5".
var numberWords = map[string]string{
	"zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
	"six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
	"eleven": "11", "twelve": "12", "thirteen": "13", "fourteen": "14",
	"fifteen": "15", "sixteen": "16", "seventeen": "17", "eighteen": "18",
	"nineteen": "19", "twenty": "20", "thirty": "30", "forty": "40",
	"fifty": "50", "sixty": "60", "seventy": "70", "eighty": "80",
	"ninety": "90", "hundred": "100", "thousand": "1000", "million": "1000000",
	"billion": "1000000000", "half": "0.5", "twice": "2", "double": "2",
}

type lexEntry struct {
	kind  uint8
	value string // digits, for numbers
}

// lexicon classifies the listed words. "one" is a stopword ("which one"),
// not a number. It is built once and never modified.
var lexicon = func() map[string]lexEntry {
	m := make(map[string]lexEntry, 300)
	for w, v := range numberWords {
		m[w] = lexEntry{kindNumber, v}
	}
	add := func(list string, k uint8) {
		for _, w := range strings.Fields(list) {
			m[w] = lexEntry{kind: k}
		}
	}
	add(fillerWords, kindFiller)
	add(stopWords, kindStop)
	add(questionWords, kindQuestion)
	add(negationWords, kindNegation)
	return m
}()

// Question classes: the kind of answer a question asks for.
const (
	qNone     uint8 = iota
	qWhat           // what, which
	qHow            // how
	qWhy            // why
	qWhen           // when
	qWhere          // where
	qWho            // who, whom, whose
	qQuantity       // how many, how much, how long, how old, how far, how often
	qYesNo          // starts with an auxiliary: "Is", "Can", "Should", ...
)

// questionClass is the class of the text's first question word, or qYesNo
// when the text starts with an auxiliary verb.
func questionClass(s *scratch, sd *side) uint8 {
	for i, t := range sd.toks {
		if t.kind != kindQuestion {
			continue
		}
		switch string(s.stem(t)) {
		case "what", "which":
			return qWhat
		case "why":
			return qWhy
		case "when":
			return qWhen
		case "where":
			return qWhere
		case "who", "whom", "whose":
			return qWho
		case "how":
			if i+1 < len(sd.toks) {
				switch string(s.stem(sd.toks[i+1])) {
				case "many", "much", "long", "old", "far", "often", "big", "tall":
					return qQuantity
				}
			}
			return qHow
		}
	}
	if len(sd.toks) > 0 && sd.toks[0].kind == kindStop {
		switch string(s.stem(sd.toks[0])) {
		case "is", "am", "are", "was", "were", "do", "does", "did", "have", "has", "had",
			"can", "could", "will", "would", "shall", "should", "may", "might", "must":
			return qYesNo
		}
	}
	return qNone
}

// synonymWords are groups of words that paraphrases swap for one another
// ("kids" and "children", "film" and "movie"): within a group they count
// as the same word, so that such a swap is neither a word on one side only
// nor a substitution. One group a line, the first word names it; words as
// people type them, matched as stems. Only words that mean the same in
// nearly every prompt: "laptop" and "computer", or "cure" and "treat",
// ask different things.
const synonymWords = `
big large huge enormous massive giant
biggest largest
small little tiny
smallest tiniest
child children kid kids
fast quick quickly rapid rapidly speedy
fastest quickest
film films movie movies
see seen watch watched
afraid scared frightened fearful
site sites website websites webpage
cost costs price prices
hate dislike
smart intelligent clever
rich wealthy
hard difficult tough
create build construct develop
stop prevent avoid
job jobs employment
company companies firm firms corporation
car cars vehicle vehicles automobile
phone phones cellphone smartphone mobile
picture pictures photo photos photograph pic pics image images
mistake mistakes error errors
problem problems issue issues trouble
begin start commence
finish complete
buy purchase
fix repair solve resolve
learn study
improve enhance
obtain acquire
choose select pick
use utilize utilise
show display
happen occur
meaning definition
woman women lady ladies
man men guy guys
country countries nation nations
world earth globe
famous popular renowned
weird strange bizarre unusual
funny hilarious humorous
amazing incredible awesome fantastic terrific wonderful
interesting fascinating intriguing
beautiful attractive gorgeous
important significant crucial essential vital
main primary principal chief
common usual typical
different various
angry mad furious
sad unhappy
happy glad joyful
tired exhausted
sick ill
doctor physician
lawyer attorney
toilet bathroom restroom washroom
shop store
salary wage wages
cheap inexpensive affordable
expensive costly pricey
effect effects impact
advantage advantages benefit benefits
disadvantage disadvantages drawback drawbacks downside downsides
girlfriend gf
boyfriend bf
usa america
uk britain
tv television
info information
govt government
bike bicycle
plane airplane aeroplane
fridge refrigerator
talk speak
find locate
hurt harm
change alter modify
delete remove erase
close shut
allow permit
try attempt
enough sufficient
whole entire
correct accurate
rude impolite
`

// synonyms maps the stem hash of each word of synonymWords to its
// group's first word's; built once, never modified.
var synonyms = func() map[uint64]uint64 {
	m := make(map[uint64]uint64, 400)
	for _, line := range strings.Split(synonymWords, "\n") {
		ws := strings.Fields(line)
		if len(ws) < 2 {
			continue
		}
		head := fnv(stem([]byte(ws[0])))
		for _, w := range ws[1:] {
			if h := fnv(stem([]byte(w))); h != head {
				m[h] = head
			}
		}
	}
	return m
}()
