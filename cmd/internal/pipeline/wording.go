package pipeline

import (
	"container/list"
	"context"
	"crypto/sha256"
	"slices"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"

	"github.com/edgecache/edgecache/cache/semantic"
	"github.com/edgecache/edgecache/embed"
)

// wordings find indexed prompts by wording: the verifier takes two prompts
// that differ only in letter case, spacing and punctuation at the edges of
// words for the same prompt whatever their cosine, so the cosine
// pre-filter, which bounds the score of texts that differ, does not bound
// theirs. USE-lite gives 22.8 % of such pairs a cosine under its 0.92
// pre-filter ("What is AI?" against "WHAT IS AI": 0.910; see
// verify.AppendWordingKey for the measurement) and some any cosine at all.
//
// So the tier keeps, beside the index, the key and text of the most
// recently indexed prompt of each wording (a digest of the space, the
// filter and the verifier's wording key), and a lookup whose search left
// that prompt out (under the pre-filter, or behind Candidates nearer ones)
// verifies it too. A lower pre-filter measured on same-wording variants
// would not do: no floor holds for every wording (a run of "?!" takes
// USE-lite to 0.26), and a wider search of k candidates still loses the
// prompt to k nearer ones. The lookup costs a digest and a map read; an
// embedding of the stored text (for its cosine) only when it finds a
// prompt the search missed.
//
// It holds what this process indexed, within a memory budget (least
// recently used first out): prompts indexed by another replica into a
// shared Qdrant, or before a restart, are found by cosine only.
type wordings struct {
	mu     sync.Mutex
	byID   map[wordingID]*list.Element // of *worded
	lru    list.List                   // most recently used first
	bytes  int64
	budget int64
}

// wordingID digests a prompt's embedding space, filter and wording key.
type wordingID [16]byte

// worded is one indexed prompt of a wording.
type worded struct {
	id      wordingID
	key     string // the point's key: the exact key of the stored answer
	text    string
	expires time.Time
}

// wordedOverhead approximates the memory of an entry besides its strings.
const wordedOverhead = 192

func (w *worded) cost() int64 { return int64(len(w.key)+len(w.text)) + wordedOverhead }

func newWordings(budget int64) *wordings {
	return &wordings{byID: make(map[wordingID]*list.Element), budget: budget}
}

// put records the prompt indexed under key as the latest of its wording.
// text is kept: it must be the edge's own copy, never a view of a request
// body (semanticTier.index passes the point's).
func (w *wordings) put(id wordingID, key, text string, expires time.Time) {
	e := &worded{id: id, key: key, text: text, expires: expires}
	if e.cost() > w.budget {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if el, ok := w.byID[id]; ok {
		w.remove(el)
	}
	w.byID[id] = w.lru.PushFront(e)
	w.bytes += e.cost()
	for w.bytes > w.budget {
		w.remove(w.lru.Back())
	}
}

// get returns the latest prompt indexed with this wording, unless it has
// expired at now.
func (w *wordings) get(id wordingID, now time.Time) (key, text string, ok bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	el, ok := w.byID[id]
	if !ok {
		return "", "", false
	}
	e := el.Value.(*worded)
	if !now.Before(e.expires) {
		w.remove(el)
		return "", "", false
	}
	w.lru.MoveToFront(el)
	return e.key, e.text, true
}

func (w *wordings) remove(el *list.Element) {
	e := w.lru.Remove(el).(*worded)
	delete(w.byID, e.id)
	w.bytes -= e.cost()
}

// wordingID returns the wording digest of q in sp, or false when sp has
// no wording rule. It only reads q.
func (q *semanticQuery) wordingID(sp Space) (wordingID, bool) {
	if sp.Wording == nil {
		return wordingID{}, false
	}
	bp := keyBufPool.Get().(*[]byte)
	b := append((*bp)[:0], "edgecache-wording-v1"...)
	for _, s := range [...]string{q.space, q.filter.Namespace, q.filter.Route, q.filter.Model, q.filter.Context} {
		b = append(b, 0)
		b = append(b, s...)
	}
	b = append(b, 0)
	b = sp.Wording(b, q.text)
	sum := sha256.Sum256(b)
	*bp = b
	keyBufPool.Put(bp)
	var id wordingID
	copy(id[:], sum[:])
	return id, true
}

// sameWording returns the indexed prompt worded as q when the search's
// matches ms left it out, with its cosine to q (its text is embedded
// again, a memoised embedder permitting, under the embed deadline). Any
// failure leaves the matches as they are.
func (p *Pipeline) sameWording(ctx context.Context, sp Space, q *semanticQuery, ms []semantic.Match) (semantic.Match, bool) {
	id, ok := q.wordingID(sp)
	if !ok {
		return semantic.Match{}, false
	}
	key, text, ok := p.sem.wordings.get(id, p.cfg.Now())
	if !ok || slices.ContainsFunc(ms, func(m semantic.Match) bool { return m.Key == key }) {
		return semantic.Match{}, false
	}
	ectx, span := p.cfg.Tracer.Start(ctx, "semantic.embed")
	span.SetAttributes(attribute.Bool("edgecache.semantic.same_wording", true))
	ectx, cancel := context.WithTimeout(ectx, p.sem.cfg.EmbedTimeout)
	v, err := embed.One(ectx, p.sem.cfg.Embedder, text)
	cancel()
	endSpan(span, err)
	if err != nil {
		return semantic.Match{}, false
	}
	return semantic.Match{Point: semantic.Point{Key: key, Filter: q.filter, Text: text}, Score: embed.Dot(q.vec, v)}, true
}
