// Package zh is the local embedder for Chinese prompts, and Chinese mixed
// with English terms: hashed character n-grams, weighted by how rare they
// are in Chinese questions, in 512 signed buckets.
//
// Why not a neural model: none that fits in a few MB and runs at USE-lite's
// speed was measured better here, and none can be fetched on our machines.
// This one needs no download (its weight table is checked in, built by
// `edgecache train-zh`), embeds in microseconds, and is used only to
// retrieve candidates: whether a candidate asks the same thing is decided
// by the Chinese verifier (cache/semantic/verify), which learned from the
// labelled pairs what a difference in a character means.
//
// Features: every Han character, every pair of adjacent Han characters
// (within a run of them), and every word of ASCII letters or digits,
// after NFKC normalisation and lower-casing. Each is weighted by its
// inverse document frequency's square root in the training texts (a 65,536-bucket table,
// features unseen in training get the table's top weight) and hashed to one
// of Dim buckets with a sign, and the vector is L2-normalised: the cosine of
// two vectors approximates the weighted overlap of their n-grams.
package zh

import (
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"

	"github.com/edgecache/edgecache/embed"
)

// Dim is the vector length: USE-lite's, so one index holds both (never
// compared: the space joins the filter).
const Dim = 512

// Family names the model; Name adds the weight table's version.
const Family = "zh-ngram-v1"

// idfBuckets is the size of the weight table.
const idfBuckets = 1 << 16

// The Han characters the training texts held, one bit each, over the CJK
// Unified Ideographs block (U+4E00–U+9FFF), after the weights in the table.
const (
	hanFirst   = 0x4E00
	hanLast    = 0x9FFF
	hanBytes   = (hanLast - hanFirst + 1 + 7) / 8
	tableBytes = 2*idfBuckets + hanBytes
)

// maxInputBytes bounds the text read.
const maxInputBytes = 16 << 10

//go:embed idf.bin
var idfTable []byte

// Embedder is the Chinese embedder. It is safe for concurrent use.
type Embedder struct {
	idf   [idfBuckets]float32
	known []byte // hanBytes: the Han characters seen in training
	name  string
}

var (
	_ embed.Embedder = (*Embedder)(nil)
	_ embed.Coverer  = (*Embedder)(nil)
)

// New returns the embedder with the built-in weight table.
func New() (*Embedder, error) { return FromTable(idfTable) }

// FromTable returns an embedder with the weight table t (see Table).
func FromTable(t []byte) (*Embedder, error) {
	if len(t) != tableBytes {
		return nil, fmt.Errorf("zh: weight table of %d bytes, want %d", len(t), tableBytes)
	}
	sum := sha256.Sum256(t)
	e := &Embedder{name: Family + "-" + hex.EncodeToString(sum[:3]), known: t[2*idfBuckets:]}
	for i := range e.idf {
		e.idf[i] = float32(binary.LittleEndian.Uint16(t[2*i:])) / 1000
	}
	return e, nil
}

// Table builds a weight table, and the set of Han characters held, from
// the document frequencies of features in n texts (see Features): the square root of idf = ln((n+1)/(df+1)) + 1
// (unseen features: of ln(n+1) + 1). The square root, because full idf
// weighs a domain's own words ("花呗", "还款" in payment questions) so
// little that paraphrases in that domain fell under the verifier's cosine
// gate: on ATEC held out, 948 of 1,141 duplicates under cosine 0.5 with
// full idf, 245 under 0.3 with its root.
func Table(texts []string) []byte {
	var df [idfBuckets]int32
	seen := map[uint32]bool{}
	for _, t := range texts {
		clear(seen)
		Features(t, func(h uint32, _ float32) { seen[h%idfBuckets] = true })
		for h := range seen {
			df[h]++
		}
	}
	n := float64(len(texts))
	out := make([]byte, tableBytes)
	for _, t := range texts {
		for _, r := range Canonical(t) {
			if r >= hanFirst && r <= hanLast {
				out[2*idfBuckets+(r-hanFirst)/8] |= 1 << ((r - hanFirst) % 8)
			}
		}
	}
	for i, d := range df {
		w := math.Sqrt(math.Log((n+1)/(float64(d)+1)) + 1)
		binary.LittleEndian.PutUint16(out[2*i:], uint16(min(w*1000, 65535)))
	}
	return out
}

// Name implements embed.Embedder: the family and the first 6 hex digits
// of the weight table's SHA-256, so that vectors of another table (which
// differ) are never compared with these.
func (e *Embedder) Name() string { return e.name }

// Dim implements embed.Embedder.
func (e *Embedder) Dim() int { return Dim }

// Coverage implements embed.Coverer: ASCII, punctuation and the Han
// characters the training texts held are represented; other Han characters
// (rare ones, most traditional forms), kana, Hangul, other scripts and
// emoji are not. The verifier learned nothing of a character it never saw,
// so a prompt made of such characters must not be matched on their
// account.
func (e *Embedder) Coverage(text string) float64 {
	return embed.ShareOf(Canonical(clip(text)), func(r rune) bool {
		return r < 0x80 || unicode.IsPunct(r) || e.knows(r)
	})
}

// knows reports whether r is a Han character seen in training.
func (e *Embedder) knows(r rune) bool {
	if r < hanFirst || r > hanLast {
		return false
	}
	return e.known[(r-hanFirst)/8]&(1<<((r-hanFirst)%8)) != 0
}

// Embed implements embed.Embedder.
func (e *Embedder) Embed(ctx context.Context, texts []string) ([]embed.Vector, error) {
	out := make([]embed.Vector, len(texts))
	for i, t := range texts {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("%w: %w", embed.ErrUnavailable, err)
		}
		out[i] = e.vector(t)
	}
	return out, nil
}

func (e *Embedder) vector(text string) embed.Vector {
	v := make(embed.Vector, Dim)
	Features(text, func(h uint32, w float32) {
		w *= e.idf[h%idfBuckets]
		i := (h >> 16) % Dim
		if h&(1<<15) != 0 {
			w = -w
		}
		v[i] += w
	})
	var sq float32
	for _, x := range v {
		sq += x * x
	}
	if sq == 0 {
		v[0] = 1 // nothing to represent: one fixed direction (coverage gates such text anyway)
	}
	embed.Normalize(v)
	return v
}

// Features calls emit with the hash and base weight of each feature of
// text: Han characters (1), pairs of Han characters adjacent but for
// punctuation and spaces (1), words of letters or digits (1.5; a change
// between letters and digits starts a new word).
func Features(text string, emit func(h uint32, w float32)) {
	text = Canonical(clip(text))
	var prev rune
	word := make([]byte, 0, 32)
	flush := func() {
		if len(word) > 0 {
			emit(hash('w', word), 1.5)
			word = word[:0]
		}
	}
	var pair [8]byte
	for _, r := range text {
		switch {
		case embed.IsHan(r):
			flush()
			emit(hash('u', putRune(pair[:0], r)), 1)
			if prev != 0 {
				emit(hash('b', putRune(putRune(pair[:0], prev), r)), 1)
			}
			prev = r
		case unicode.IsLetter(r) || unicode.IsDigit(r):
			if len(word) > 0 && isDigit(word[len(word)-1]) != unicode.IsDigit(r) {
				flush() // "iphone12": a word and a number
			}
			word = putRune(word, r)
			prev = 0
		default:
			// Punctuation and spaces end a word but not a run of Han
			// characters: texts of the same wording, whatever their
			// punctuation, embed alike (the verifier's same-wording rule
			// relies on it).
			flush()
		}
	}
	flush()
}

func isDigit(b byte) bool { return b >= '0' && b <= '9' }

func putRune(b []byte, r rune) []byte { return utf8.AppendRune(b, r) }

// Canonical is text NFKC-normalised, lower-cased, with question words and
// pronouns spelled one way ("如何"/"怎样" → "怎么", "为何" → "为什么", "您" →
// "你"...): paraphrases that differ only there embed alike, and the
// Chinese verifier compares them as the same words. Both use it, so that
// they agree on what "the same wording" is.
func Canonical(text string) string {
	return synonyms.Replace(strings.ToLower(norm.NFKC.String(text)))
}

var synonyms = strings.NewReplacer(
	"如何", "怎么", "怎样", "怎么", "咋样", "怎么样", "咋", "怎么",
	"为何", "为什么", "为啥", "为什么", "干嘛", "为什么",
	"啥", "什么", "哪儿", "哪里", "您", "你", "与", "和",
	"能否", "能不能", "可否", "可不可以", "是否", "是不是",
)

// hash is FNV-1a 32 over a kind byte and b: stable across processes, so
// vectors stored by one replica match queries embedded by another.
func hash(kind byte, b []byte) uint32 {
	h := uint32(2166136261)
	h = (h ^ uint32(kind)) * 16777619
	for _, c := range b {
		h = (h ^ uint32(c)) * 16777619
	}
	return h
}

func clip(s string) string {
	if len(s) > maxInputBytes {
		return s[:maxInputBytes]
	}
	return s
}
