package pipeline

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/edgecache/edgecache/cache"
	"github.com/edgecache/edgecache/cmd/internal/openai"
)

// Templates gives the template and busy rungs their words
// (the templates package, adapted by the application).
type Templates interface {
	// Lang detects the language of a prompt ("en", "zh", …).
	Lang(text string) string
	// Match returns a predefined answer for the route and prompt.
	Match(route, lang, text string) (answer, id string, ok bool)
	// Busy is the honest busy message.
	Busy(route, lang string, retryAfter time.Duration, reason string) string
}

// Journal receives one record per degraded answer. It must not block.
type Journal interface {
	Degraded(d *Degraded)
}

// Degraded describes one degraded answer for the journal.
type Degraded struct {
	Time          time.Time
	RequestID     string
	Route         string
	Tenant        string // the namespace: an HMAC of the client's key, never the key
	Model         string
	Rung          string // stale | semantic-nearest | template | busy | stream-truncated | shed
	Reason        string
	Status        int
	RetryAfter    time.Duration
	Failure       *Failure
	CacheKey      string
	CacheAge      time.Duration
	Similarity    float32 // semantic-nearest: the embeddings' cosine
	Score         float32 // semantic-nearest: the verifier's score
	MatchedHash   string  // semantic-nearest: the stored question answered (questionHash)
	Disclosed     bool    // semantic-nearest: under the normal threshold, the body said so
	Template      string
	BytesStreamed int64
	SDKRetryCount int
	ClientTimeout time.Duration
	Lane          string
}

// pending is what the ladder needs to know about a request.
type pending struct {
	rt  *Route
	req *openai.Request
	key cache.Key
	q   *semanticQuery
	ns  string
	// lane of the request (admission), and the tokens its answer used
	// (-1 unknown), for settling quotas.
	lane  string
	adm   *admitted
	usage int64
}

// releaseViews lets go of what a parsed request and its semantic query
// hold of the request body, once the stream has started: the request's
// views (from here on only its API, flags and copied model are read) and
// the query's text (copied: the index needs it when the answer is
// stored). With the call's own release (upstreamCall.releaseRequest) this
// leaves an open stream holding none of its prompt.
func releaseViews(req *openai.Request, q *semanticQuery) {
	if req != nil {
		req.Body = openai.Value{}
	}
	if q != nil {
		q.text = strings.Clone(q.text)
	}
}

// Staler reads expired entries for the stale rung.
type Staler interface {
	GetStale(ctx context.Context, k cache.Key, maxStale time.Duration) (cache.Entry, error)
}

// serveFailure answers a request whose upstream call failed, with the first
// rung that applies: the stale exact answer, the nearest semantic answer
// above the route's degraded floor (disclosed in its body under the normal
// threshold: serveNearest), a template, or an honest busy answer. Every
// rung is marked in headers and journaled.
func (p *Pipeline) serveFailure(w http.ResponseWriter, r *http.Request, pd *pending, f *Failure) {
	if f.Reason == reasonKeyHeld {
		serveKeyHeld(w, f)
		return
	}
	rt, req := pd.rt, pd.req
	ctx := r.Context()
	h := w.Header()
	reason := f.Reason
	if req != nil && pd.key != "" && rt.StaleIfError > 0 {
		if st, ok := p.cfg.Cache.(Staler); ok {
			if e, err := st.GetStale(ctx, pd.key, rt.StaleIfError); err == nil {
				h.Set("X-Edgecache-Degraded", "stale")
				h.Set("X-Edgecache-Degraded-Reason", reason)
				p.writeHit(w, r, req, e, "stale", -1)
				p.journal(r, pd, "stale", f, e.Status, 0, func(d *Degraded) { d.CacheKey, d.CacheAge = string(pd.key), e.Age(p.cfg.Now()) })
				return
			}
		}
	}
	if p.serveNearest(w, r, pd, f) {
		return
	}
	lang := "en"
	text := ""
	if req != nil {
		text, _ = req.LastUserText()
	}
	if p.cfg.Templates != nil && text != "" {
		lang = p.cfg.Templates.Lang(text)
	}
	if p.cfg.Templates != nil && req != nil && (req.API == openai.APIChat || req.API == openai.APIResponses || req.API == openai.APIAnthropic) && rt.Templates && text != "" {
		if answer, id, ok := p.cfg.Templates.Match(rt.Name, lang, text); ok {
			body := syntheticAnswer(req, id, answer, p.cfg.Now())
			e := cache.Entry{Status: http.StatusOK, Header: http.Header{"Content-Type": {"application/json"}},
				Body: body, StoredAt: p.cfg.Now(), ExpiresAt: p.cfg.Now()}
			h.Set("X-Edgecache-Degraded", "template")
			h.Set("X-Edgecache-Degraded-Reason", reason)
			h.Set("Cache-Status", "edgecache; fwd=uri-miss; detail=template")
			p.writeAnswer(w, r, req, e)
			p.journal(r, pd, "template", f, http.StatusOK, 0, func(d *Degraded) { d.Template = id })
			return
		}
	}
	retry := p.retryAfter(f)
	msg := "The model is busy or unavailable right now (" + reason + "). Please retry in " + strconv.Itoa(retry) + " seconds."
	if p.cfg.Templates != nil {
		msg = p.cfg.Templates.Busy(rt.Name, lang, time.Duration(retry)*time.Second, reason)
	}
	h.Set("X-Edgecache-Degraded", "busy")
	h.Set("X-Edgecache-Degraded-Reason", reason)
	h.Set("Cache-Status", "edgecache; fwd=uri-miss; detail="+reason)
	if time.Duration(retry)*time.Second > p.cfg.Guard.MaxRetryWait {
		// The edge has retried and failed over inside its budget already;
		// an SDK that waited out Retry-After would only hold its caller
		// (the OpenAI SDKs obey this header). Retry-After still says when
		// to come back.
		h.Set("X-Should-Retry", "false")
	}
	status, typ, code := busyStatus(reason)
	openai.WriteError(w, status, retry, openai.NewError(typ, code, "", msg))
	p.journal(r, pd, "busy", f, status, time.Duration(retry)*time.Second, nil)
}

// busyStatus is the true status of the busy answer to a failure, with the
// error's type and code:
//
//   - 504 upstream_timeout: the model did not start answering (streams) or
//     did not answer (otherwise) before the attempt's deadline — the first
//     token timer, the client's X-Stainless-Timeout hint minus the margin,
//     or the upstream client's header timeout;
//   - 502 upstream_bad_response: the model answered but the answer was
//     unusable — empty or unfinished (empty_answer), a stream that broke
//     or ended before its first token (stream_cut), a connection reset or
//     an unreadable body, or an error event before any token
//     (upstream_error);
//   - 503 upstream_unavailable: everything else — the upstream's own
//     5xx/429 (upstream_<status>), unreachable, breaker_open,
//     retry_budget, and admission's shed and queued_timeout.
//
// The last attempt's reason decides. Every one carries Retry-After.
func busyStatus(reason string) (status int, typ, code string) {
	switch reason {
	case "timeout":
		return http.StatusGatewayTimeout, openai.TypeServer, "upstream_timeout"
	case "empty_answer", "stream_cut", "upstream_error":
		return http.StatusBadGateway, openai.TypeServer, "upstream_bad_response"
	}
	return http.StatusServiceUnavailable, openai.TypeUnavailable, "upstream_unavailable"
}

// serveKeyHeld answers a caller whose own API key the upstream rate-limited
// (DEGRADATION.md rule 8): the 429 the upstream would give, with the rest
// of its Retry-After, without calling it. It is that caller's answer, not a
// degradation: no ladder, no journal record.
func serveKeyHeld(w http.ResponseWriter, f *Failure) {
	retry := max(1, int(math.Ceil(f.RetryAfter.Seconds())))
	w.Header().Set("Cache-Status", "edgecache; fwd=uri-miss; detail="+reasonKeyHeld)
	openai.WriteError(w, http.StatusTooManyRequests, retry, openai.NewError(openai.TypeRateLimit, "rate_limit_exceeded", "",
		"The model's provider rate-limited this API key. Please retry in "+strconv.Itoa(retry)+" seconds."))
}

// retryAfter is the honest wait in whole seconds: the upstream's own
// Retry-After or a breaker's remaining open time, else the shortest
// remaining open time of any target, else 1.
func (p *Pipeline) retryAfter(f *Failure) int {
	d := f.RetryAfter
	if d <= 0 {
		for _, t := range p.cfg.Targets {
			if rem := t.Breaker.Remaining(); rem > 0 && (d <= 0 || rem < d) {
				d = rem
			}
		}
	}
	return max(1, int(math.Ceil(d.Seconds())))
}

// writeAnswer writes an entry the way a hit is written (replayed as a
// stream when asked), with the caller's Cache-Status already set.
func (p *Pipeline) writeAnswer(w http.ResponseWriter, r *http.Request, req *openai.Request, e cache.Entry) {
	h := w.Header()
	if req.Stream {
		h.Set("Content-Type", "text/event-stream")
		h.Set("Cache-Control", "no-cache")
		w.WriteHeader(http.StatusOK)
		rc := http.NewResponseController(w)
		_ = openai.WriteStream(w, func() { _ = rc.Flush() }, req.API, e.Body, req.IncludeUsage)
		return
	}
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(e.Body)))
	w.WriteHeader(e.Status)
	_, _ = w.Write(e.Body)
}

// syntheticChat renders a template as a chat.completion.
func syntheticChat(model, id, text string, now time.Time) []byte {
	sum := sha256.Sum256([]byte(id + "\x00" + text))
	stop := "stop"
	resp := openai.Response{
		ID: "chatcmpl-edgecache-" + hex.EncodeToString(sum[:8]), Object: "chat.completion",
		Created: now.Unix(), Model: model,
		Choices: []openai.Choice{{Index: 0, Message: &openai.Message{Role: "assistant", Content: &text}, FinishReason: &stop}},
		Usage:   &openai.Usage{},
	}
	b, _ := json.Marshal(resp) // plain values: cannot fail
	return b
}

// journal records one degraded answer.
func (p *Pipeline) journal(r *http.Request, pd *pending, rung string, f *Failure, status int, retryAfter time.Duration, more func(*Degraded)) {
	p.m.Degraded(pd.rt.Name, rung, reasonOf(f))
	if p.cfg.Journal == nil {
		return
	}
	d := &Degraded{
		Time: p.cfg.Now(), RequestID: r.Header.Get("X-Request-Id"), Route: pd.rt.Name, Tenant: pd.ns,
		Rung: rung, Reason: reasonOf(f), Status: status, RetryAfter: retryAfter, Failure: f,
		CacheKey: string(pd.key), Lane: pd.lane,
	}
	if pd.req != nil {
		d.Model = pd.req.Model
	}
	if n, err := strconv.Atoi(r.Header.Get("X-Stainless-Retry-Count")); err == nil {
		d.SDKRetryCount = n
	}
	if s, err := strconv.ParseFloat(r.Header.Get("X-Stainless-Timeout"), 64); err == nil {
		d.ClientTimeout = time.Duration(s * float64(time.Second))
	}
	if more != nil {
		more(d)
	}
	p.cfg.Journal.Degraded(d)
}

func reasonOf(f *Failure) string {
	if f == nil {
		return ""
	}
	return strings.TrimSpace(f.Reason)
}
