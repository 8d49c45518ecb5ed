package verify

import "strings"

// oppositeWords are pairs of opposite poles, one dimension per line: the
// words before the bar against the words after it. A prompt that uses one
// pole where its candidate uses the other asks the opposite thing
// ("minimum salary" against "maximum salary", "enable 2FA" against
// "disable 2FA"), however close the embedding puts them. Words are written
// as people type them; they are matched as the tokenizer reads them (stems,
// so "enabled" and "disabling" count, and stop and filler words as they
// are). Two words joined by _ are a phrase ("log_in"), matched as adjacent
// words. A word may stand in two dimensions ("old": against new, and
// against young). The list is a table, not learned data; each
// line was checked against Quora's duplicate pairs, where a line that
// fired on true paraphrases was dropped or narrowed.
const oppositeWords = `
maximum max maxima maximal maximize maximise highest high higher upper increase increment raise boost | minimum min minima minimal minimize minimise lowest low lower decrease decrement reduce reduction
enable activate turn_on switch_on | disable deactivate turn_off switch_off
cancel cancellation | renew renewal
before prior | after
import imports | export exports
upload | download
encrypt encryption encode encoding compress compression zip | decrypt decryption decode decoding decompress decompression unzip
buy buying bought purchase buyer | sell selling sold seller
open opening opened | close closing closed shut
start starting started begin beginning began | stop stopping stopped end ending ended finish
add adding added insert install create | remove removing removed delete deleting uninstall erase
accept accepted acceptance approve approved approval | reject rejected rejection decline deny denied refuse disapprove
login log_in logon signin sign_in | logout log_out logoff signout sign_out
win winning won winner gain profit | lose losing lost loser loss
subscribe subscription | unsubscribe
lock locked | unlock
block blocked | unblock
follow | unfollow
connect connected connection | disconnect disconnected
mount | unmount
attach | detach
include | exclude
show | hide
visible | invisible hidden
online | offline
public | private
internal | external
inner inside | outer outside
inbound incoming | outbound outgoing
input | output
send sending sent sender | receive receiving received receiver recipient
push | pull
ascending asc | descending desc
upgrade | downgrade
upvote | downvote
mute | unmute
freeze | unfreeze
arrive arrival | depart departure
enter entry entrance | exit
join | leave
borrow borrower | lend lender
deposit | withdraw withdrawal
credit | debit
hire hiring | fire firing
employer | employee
earn save saving | spend spending
true | false
correct right | incorrect wrong
positive | negative
pros pro | cons con
advantage advantages | disadvantage disadvantages drawback drawbacks
best | worst
better | worse
good | bad evil
love | hate
like | dislike
agree | disagree
legal | illegal
possible | impossible
happy | sad unhappy
easy easier | hard harder difficult
fast faster fastest | slow slower slowest
cheap cheaper cheapest inexpensive | expensive costly
big bigger biggest large larger largest | small smaller smallest tiny
long longer longest | short shorter shortest
old older oldest | new newer newest
old older oldest | young younger youngest
north northern | south southern
east eastern | west western
left | right
top | bottom
above over | below under
overweight | underweight
overrated | underrated
overestimate | underestimate
overpaid | underpaid
early earlier earliest | late later latest
past previous yesterday | future next tomorrow upcoming
first | last
success successful succeed | failure fail failed unsuccessful
strong stronger strength | weak weaker weakness
safe safety | dangerous unsafe danger
healthy | unhealthy
rich richer richest wealthy | poor poorer poorest
hot hotter hottest | cold colder coldest
wet | dry
full | empty
heavy | light
dark | light
sunrise | sunset
summer | winter
alive | dead
birth | death
marriage married marry | divorce divorced
introvert introverted | extrovert extroverted
optimist optimistic | pessimist pessimistic
bull bullish | bear bearish
rise rising | fall falling
attack offense offensive | defend defense defensive
friend | enemy
heaven | hell
male | female
man men | woman women
boy boys | girl girls
husband | wife
boyfriend | girlfriend
father dad | mother mom
son | daughter
brother | sister
more | less fewer
most | least
majority | minority
horizontal horizontally | vertical vertically
uppercase | lowercase
synchronous sync | asynchronous async
static | dynamic
client | server
frontend | backend
read reading | write writing
plus | minus
addition | subtraction
multiply multiplication | divide division
inhale | exhale
appreciate appreciation | depreciate depreciation
inflation | deflation
up | down
`

// oppEntry is one dimension (from 1) and pole (0 or 1) of a word.
type oppEntry uint16

// opposites maps the hash of a word's stem as the tokenizer computes it
// (or of a phrase, see phraseHash) to the dimensions it stands in; built
// once, never modified.
var opposites = func() map[uint64][2]oppEntry {
	m := make(map[uint64][2]oppEntry, 600)
	dim := 0
	for _, line := range strings.Split(oppositeWords, "\n") {
		left, right, ok := strings.Cut(line, "|")
		if !ok {
			continue
		}
		dim++
		for pole, words := range []string{left, right} {
			for _, w := range strings.Fields(words) {
				var h uint64
				if a, b, phrase := strings.Cut(w, "_"); phrase {
					h = phraseHash(wordHash(a), wordHash(b))
				} else {
					h = wordHash(w)
				}
				e := m[h]
				at := 0
				if e[0] != 0 {
					at = 1
				}
				e[at] = oppEntry(dim<<1 | pole)
				m[h] = e
			}
		}
	}
	return m
}()

// wordHash is the hash the tokenizer gives the lowercase word w.
func wordHash(w string) uint64 {
	b := []byte(w)
	if c, ok := lexicon[w]; ok {
		if c.kind == kindNegation {
			return negHash
		}
		return fnv(b)
	}
	h := fnv(stem(b))
	if c, ok := synonyms[h]; ok {
		return c
	}
	return h
}

// phraseHash is the hash of two adjacent words.
func phraseHash(a, b uint64) uint64 { return (a*31 + b) ^ 0x9e3779b97f4a7c15 }

// poles records, per dimension met, which poles a text uses: bit 1 for
// pole 0, bit 2 for pole 1. Dimensions are few per text, so a short list
// does.
type poles struct {
	dims [16]uint16
	set  [16]uint8
	n    int
}

func (p *poles) add(e oppEntry) {
	if e == 0 {
		return
	}
	d, bit := uint16(e>>1), uint8(1)<<(e&1)
	for i := 0; i < p.n; i++ {
		if p.dims[i] == d {
			p.set[i] |= bit
			return
		}
	}
	if p.n < len(p.dims) {
		p.dims[p.n], p.set[p.n] = d, bit
		p.n++
	}
}

func (p *poles) of(d uint16) uint8 {
	for i := 0; i < p.n; i++ {
		if p.dims[i] == d {
			return p.set[i]
		}
	}
	return 0
}

func (s *scratch) polesOf(sd *side, p *poles) {
	p.n = 0
	for i, t := range sd.toks {
		if e, ok := opposites[t.hash]; ok {
			p.add(e[0])
			p.add(e[1])
		}
		if i > 0 {
			if e, ok := opposites[phraseHash(sd.toks[i-1].hash, t.hash)]; ok {
				p.add(e[0])
				p.add(e[1])
			}
		}
	}
}

// opposite reports whether, in some dimension, one text uses only one pole
// and the other only the other pole: "highest" against "lowest", but not
// "reduce high blood pressure" against "lower blood pressure", nor "pros
// and cons" against "cons".
func (s *scratch) opposite() bool {
	var pq, pc poles
	s.polesOf(&s.q, &pq)
	s.polesOf(&s.c, &pc)
	for i := 0; i < pq.n; i++ {
		a, b := pq.set[i], pc.of(pq.dims[i])
		if (a == 1 && b == 2) || (a == 2 && b == 1) {
			return true
		}
	}
	return false
}
