package pipeline

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/edgecache/edgecache/cache"
	"github.com/edgecache/edgecache/cache/semantic"
	"github.com/edgecache/edgecache/cmd/internal/openai"
	"github.com/edgecache/edgecache/embed"
)

// Scorer is the verification stage: how likely a cached prompt asks the
// same thing as the query, given their cosine (cache/semantic/verify).
type Scorer interface {
	Score(query, candidate string, cosine float32) (score float32, reason string)
}

// SemanticConfig configures the semantic tier (L3).
type SemanticConfig struct {
	Embedder embed.Embedder
	Index    semantic.Index
	Verifier Scorer
	// DefaultThreshold applies to routes that set none.
	DefaultThreshold float32
	// Candidates is how many nearest points are verified. Zero → 5.
	Candidates int
	// MinCosine is the retrieval pre-filter (Index.Search's minScore) for
	// a lookup at threshold: the verifier's lossless bound, so that a
	// route, a request or the degraded floor that lowers the threshold
	// also widens the search. Nil → no pre-filter.
	MinCosine func(threshold float32) float32
	// Wording is the verifier's exact-wording rule as a key
	// (verify.AppendWordingKey): prompts with the query's key are the
	// same prompt to the verifier whatever their cosine, so a lookup also
	// verifies the indexed prompt worded as the query when the pre-filter
	// or Candidates left it out (see wordings). Nil → cosine only.
	Wording func(dst []byte, text string) []byte
	// WordingBytes bounds the memory of the wording lookup. Zero → 64 MiB.
	WordingBytes int64
	// EmbedTimeout and SearchTimeout bound the request-path work; slower
	// means exact only. Zeros → 150ms and 50ms.
	EmbedTimeout, SearchTimeout time.Duration
	// IndexQueue bounds pending index writes. Zero → 1024.
	IndexQueue int
	// Spaces verifies each embedding space (embed.SpaceOf) by its own
	// rules: a Router embeds Chinese prompts with another model than
	// English ones, and each model has its verifier. A space not listed
	// uses Verifier, MinCosine and Wording.
	Spaces map[string]Space
	// MinCoverage is the share of a prompt the embedder must represent
	// (embed.SpaceOf) for the prompt to take part in semantic matching;
	// below it the request is exact-only: no lookup, not indexed, never
	// served by the degraded rung. Zero → embed.MinCoverage.
	MinCoverage float64
}

// Space is the verification of one embedding space.
type Space struct {
	Verifier  Scorer
	MinCosine func(threshold float32) float32
	// Wording is the verifier's exact-wording rule (see
	// SemanticConfig.Wording); nil when the space needs none (its
	// embedder gives texts of the same wording the same vector).
	Wording func(dst []byte, text string) []byte
}

// space returns the verification of the named space.
func (s *semanticTier) space(name string) Space {
	if sp, ok := s.cfg.Spaces[name]; ok {
		return sp
	}
	return Space{Verifier: s.cfg.Verifier, MinCosine: s.cfg.MinCosine, Wording: s.cfg.Wording}
}

// semanticTier wraps the embedder and index with deadlines and a breaker,
// so their failure costs nothing but semantic hits.
type semanticTier struct {
	cfg SemanticConfig
	// cb skips the semantic tier after 5 consecutive failures, for 5 s,
	// then lets one call through. It is gobreaker, as for the remote
	// embedder (embed/remote, which may not import degrade): a plain
	// consecutive-failure breaker is all a best-effort tier needs, and
	// degrade.Breaker's windows, growing open times, Retry-After holds and
	// tenant attribution are about upstream targets.
	cb      *gobreaker.CircuitBreaker[struct{}]
	queue   chan *indexJob // pointers: a buffer of points would be scanned by every GC
	pending atomic.Int64   // queued or being written
	stop    chan struct{}
	// writeCtx is the parent of every index write; close cancels it
	// (giveUp) when its deadline passes, ending the write in flight.
	writeCtx context.Context
	giveUp   context.CancelFunc
	dropped  atomic.Int64 // queued writes the drain at close gave up
	drainErr error        // why the drain gave up; read after wg.Wait
	wg       sync.WaitGroup
	once     sync.Once
	// wordings find indexed prompts worded as a query, whatever their
	// cosine.
	wordings *wordings
}

type indexJob struct {
	point semantic.Point
	// wording is the point's wording digest, recorded once it is
	// indexed, when its space has a wording rule (hasWording).
	wording    wordingID
	hasWording bool
}

func newSemanticTier(cfg SemanticConfig) *semanticTier {
	if cfg.Candidates == 0 {
		cfg.Candidates = 5
	}
	if cfg.EmbedTimeout == 0 {
		cfg.EmbedTimeout = 150 * time.Millisecond
	}
	if cfg.SearchTimeout == 0 {
		cfg.SearchTimeout = 50 * time.Millisecond
	}
	if cfg.IndexQueue == 0 {
		cfg.IndexQueue = 1024
	}
	if cfg.MinCoverage == 0 {
		cfg.MinCoverage = embed.MinCoverage
	}
	if cfg.WordingBytes == 0 {
		cfg.WordingBytes = 64 << 20
	}
	s := &semanticTier{cfg: cfg, queue: make(chan *indexJob, cfg.IndexQueue), stop: make(chan struct{}),
		wordings: newWordings(cfg.WordingBytes)}
	s.writeCtx, s.giveUp = context.WithCancel(context.Background())
	s.cb = gobreaker.NewCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        "semantic",
		MaxRequests: 1,
		Timeout:     5 * time.Second,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= 5 },
		IsSuccessful: func(err error) bool {
			return err == nil || errors.Is(err, context.Canceled)
		},
	})
	s.wg.Add(1)
	go s.indexer()
	return s
}

// semanticQuery is what a request contributes to the semantic tier. Its
// strings may alias the request body (see openai.ParseJSON): index copies
// what the tier keeps.
type semanticQuery struct {
	text   string
	space  string // the embedding space of text (embed.SpaceOf)
	filter semantic.Filter
	vec    embed.Vector // set once embedded
	// under is the lookup's best candidate when it scored under the
	// threshold; near is under when sampled as a near-miss for shadow
	// verification (markNearMiss).
	under, near *semanticCandidate
}

// contextHash identifies everything but the last user turn: the request's
// context material, on a templated route the path (another Azure
// deployment is another model), the headers that join the keys (part:
// a shared route's forwarded ones, a private route's project) and the
// embedding space (vectors of two models are never compared).
func contextHash(req *openai.Request, path, part, space string) string {
	b := append(make([]byte, 0, 512), space...)
	b = append(b, 0)
	b = append(b, path...)
	b = append(b, part...) // "" or starting with a 0 byte
	b = req.AppendContextMaterial(b)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

// semanticQuery reports whether the request may use the semantic tier and
// what it would look up; part is the request's header material
// (Route.partition).
func (p *Pipeline) semanticQuery(rt *Route, r *http.Request, req *openai.Request, ns, part string) *semanticQuery {
	if p.sem == nil || !rt.Semantic || r.Header.Get("X-Edgecache-Semantic") == "off" {
		return nil
	}
	text, ok := req.LastUserText()
	if !ok {
		return nil
	}
	space, coverage := embed.SpaceOf(p.sem.cfg.Embedder, text)
	if coverage < p.sem.cfg.MinCoverage {
		p.m.SemanticSkipped(rt.Name, "coverage")
		return nil
	}
	route := rt.Name
	if rt.Generation != 0 { // a purge leaves older points unmatched
		route += "#" + strconv.FormatInt(rt.Generation, 10)
	}
	return &semanticQuery{text: text, space: space, filter: semantic.Filter{
		Namespace: ns, Route: route, Model: req.Model, Context: contextHash(req, templatedPath(rt, r), part, space),
	}}
}

// templatedPath is r's path on a templated route, else "".
func templatedPath(rt *Route, r *http.Request) string {
	if rt.Templated() {
		return r.URL.Path
	}
	return ""
}

// routeThreshold is the route's threshold, the tier's default when the
// route sets none.
func (s *semanticTier) routeThreshold(rt *Route) float32 {
	if rt.Threshold == 0 {
		return s.cfg.DefaultThreshold
	}
	return rt.Threshold
}

// threshold is the route's, moved by the X-Edgecache-Min-Score header no
// lower than the floor.
func (s *semanticTier) threshold(rt *Route, r *http.Request) float32 {
	t := s.routeThreshold(rt)
	floor := rt.Floor
	if floor == 0 {
		floor = t
	}
	if h := r.Header.Get("X-Edgecache-Min-Score"); h != "" {
		if v, err := strconv.ParseFloat(h, 32); err == nil && v >= 0 && v <= 1 {
			t = max(float32(v), floor)
		}
	}
	return t
}

// semanticCandidate is the best verified candidate of a lookup.
type semanticCandidate struct {
	key    string  // the stored answer's exact key (also its point's key)
	text   string  // the stored prompt the answer belongs to
	cosine float32 // the embeddings' similarity (X-Edgecache-Similarity)
	score  float32 // the verifier's score, which the threshold is held against
	cutoff float32 // the threshold the lookup was held to
}

// semanticHit is a verified candidate and its stored answer.
type semanticHit struct {
	entry cache.Entry
	semanticCandidate
}

// semanticLookup embeds the query and finds the best verified candidate
// at the route's threshold (as the request may move it). Any failure or
// timeout is a miss; q.vec is kept for indexing the answer. A candidate
// just under the threshold may be sampled as a near-miss (markNearMiss).
func (p *Pipeline) semanticLookup(ctx context.Context, rt *Route, r *http.Request, q *semanticQuery) (semanticHit, bool) {
	hit, ok := p.semanticLookupAt(ctx, rt, q, p.sem.threshold(rt, r))
	if !ok {
		p.markNearMiss(rt, q)
	}
	return hit, ok
}

// semanticLookupAt is semanticLookup at an explicit threshold (the
// degraded floor, when the upstream has failed). The hit carries the
// matched prompt and its score, so that a rung serving under the normal
// threshold can say which question the answer belongs to.
func (p *Pipeline) semanticLookupAt(ctx context.Context, rt *Route, q *semanticQuery, threshold float32) (semanticHit, bool) {
	s := p.sem
	sp := s.space(q.space)
	var best semantic.Match
	var bestScore float32 = -1
	_, err := s.cb.Execute(func() (struct{}, error) {
		if q.vec == nil {
			ectx, span := p.cfg.Tracer.Start(ctx, "semantic.embed")
			ectx, cancel := context.WithTimeout(ectx, s.cfg.EmbedTimeout)
			v, err := embed.One(ectx, s.cfg.Embedder, q.text)
			cancel()
			endSpan(span, err)
			if err != nil {
				return struct{}{}, err
			}
			q.vec = v
		}
		v := q.vec
		sctx, span := p.cfg.Tracer.Start(ctx, "semantic.search")
		sctx, cancel := context.WithTimeout(sctx, s.cfg.SearchTimeout)
		minScore := float32(-1)
		if sp.MinCosine != nil {
			minScore = sp.MinCosine(threshold)
		}
		ms, err := s.cfg.Index.Search(sctx, v, q.filter, s.cfg.Candidates, minScore)
		cancel()
		span.SetAttributes(attribute.Int("edgecache.semantic.candidates", len(ms)))
		endSpan(span, err)
		if err != nil {
			return struct{}{}, err
		}
		if m, ok := p.sameWording(ctx, sp, q, ms); ok {
			ms = append(ms, m) // nearest last: under the pre-filter or behind the others
		}
		for _, m := range ms {
			if sc, _ := sp.Verifier.Score(q.text, m.Text, m.Score); sc > bestScore {
				best, bestScore = m, sc
			}
		}
		return struct{}{}, nil
	})
	if err != nil {
		p.m.CacheLookup(rt.Name, "semantic", "error")
		if !errors.Is(err, context.Canceled) {
			p.log.DebugContext(ctx, "semantic lookup", "route", rt.Name, "err", err)
		}
		return semanticHit{}, false
	}
	cand := semanticCandidate{key: best.Key, text: best.Text, cosine: best.Score, score: bestScore, cutoff: threshold}
	if bestScore < threshold {
		if bestScore >= 0 {
			q.under = &cand
		}
		p.m.CacheLookup(rt.Name, "semantic", "miss")
		return semanticHit{}, false
	}
	e, ok := p.entry(ctx, cache.Key(best.Key))
	if !ok { // the answer expired or was evicted from the exact tiers
		p.m.CacheLookup(rt.Name, "semantic", "miss")
		return semanticHit{}, false
	}
	p.m.CacheLookup(rt.Name, "semantic", "hit")
	return semanticHit{entry: e, semanticCandidate: cand}, true
}

// entry reads a stored answer by exact key without counting a lookup.
func (p *Pipeline) entry(ctx context.Context, k cache.Key) (cache.Entry, bool) {
	e, err := p.cfg.Cache.Get(ctx, k)
	if err != nil {
		var ok bool
		if e, ok = p.recent.get(k); !ok {
			return cache.Entry{}, false
		}
	}
	return e, e.TTL(p.cfg.Now()) > 0
}

// index queues the stored answer's prompt for the index; it never blocks.
//
// The point's text is a copy: the query's aliases the request body
// (openai.ParseJSON), which the index and the wordings would otherwise
// keep whole for the point's life (a 200 KB system prompt for a ten-word
// question). The filter's strings are the edge's own (the model is a copy
// already: openai.Request.Model).
func (s *semanticTier) index(q *semanticQuery, key cache.Key, expires time.Time) bool {
	job := &indexJob{point: semantic.Point{Key: string(key), Vector: q.vec, Filter: q.filter, Text: strings.Clone(q.text), ExpiresAt: expires}}
	job.wording, job.hasWording = q.wordingID(s.space(q.space))
	s.pending.Add(1)
	select {
	case s.queue <- job:
		return true
	default:
		s.pending.Add(-1)
		return false
	}
}

// indexer writes queued points, embedding those whose lookup could not.
func (s *semanticTier) indexer() {
	defer s.wg.Done()
	for {
		select { // once closing, drain rather than write on
		case <-s.stop:
			s.drain()
			return
		default:
		}
		select {
		case job := <-s.queue:
			_ = s.write(job)
		case <-s.stop:
			s.drain()
			return
		}
	}
}

// drain writes the points still queued when the tier closes, so answers
// stored just before a shutdown are indexed too. It drops the rest (and
// counts them) after the first write the embedder or index cannot take
// (down or too slow: every other write would wait for its timeout too,
// holding the shutdown for queue × timeout), or once close gives up.
func (s *semanticTier) drain() {
	for {
		select {
		case job := <-s.queue:
			if s.drainErr != nil || s.writeCtx.Err() != nil {
				s.pending.Add(-1)
				s.dropped.Add(1)
				continue
			}
			if err := s.write(job); unavailable(err) {
				s.drainErr = err
			}
		default:
			return
		}
	}
}

// unavailable reports whether an index write failed because the embedder
// or the index cannot answer now (rather than over one bad point).
func unavailable(err error) bool {
	return errors.Is(err, embed.ErrUnavailable) || errors.Is(err, semantic.ErrUnavailable) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
}

func (s *semanticTier) write(job *indexJob) (err error) {
	defer s.pending.Add(-1)
	defer func() { _ = recover() }() // a bad point must not stop the indexer
	ctx, cancel := context.WithTimeout(s.writeCtx, 2*time.Second)
	defer cancel()
	if job.point.Vector == nil {
		v, err := embed.One(ctx, s.cfg.Embedder, job.point.Text)
		if err != nil {
			return err
		}
		job.point.Vector = v
	}
	if err := s.cfg.Index.Upsert(ctx, job.point); err != nil {
		return err
	}
	if job.hasWording {
		s.wordings.put(job.wording, job.point.Key, job.point.Text, job.point.ExpiresAt)
	}
	return nil
}

// close stops the indexer once it has drained the queue, or when ctx is
// done (the write in flight is then cancelled and the rest dropped). It
// reports the queued points that were not written.
func (s *semanticTier) close(ctx context.Context) error {
	s.once.Do(func() { close(s.stop) })
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	var cause error
	select {
	case <-done:
	case <-ctx.Done():
		s.giveUp()
		<-done
		cause = ctx.Err()
	}
	s.giveUp()
	if cause == nil {
		cause = s.drainErr
	}
	if cause == nil {
		return nil
	}
	return fmt.Errorf("semantic tier: %d queued index writes dropped at close: %w", s.dropped.Load(), cause)
}

func endSpan(span trace.Span, err error) {
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
