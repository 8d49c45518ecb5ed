// Package llmsim simulates an OpenAI-compatible LLM upstream for tests, demos
// and benchmarks.
//
// A Server answers /v1/chat/completions, /v1/completions, /v1/embeddings and
// /v1/models in the OpenAI wire format, streaming (SSE) or not. Answers are
// deterministic: the first word is "sim:" followed by the first 12 hex digits
// of the SHA-256 of the last user message (or of the prompt), and the rest
// are filler words chosen from that hash, so the same request always gets the
// same text. Embeddings are unit vectors derived from the SHA-256 of each
// input (optionally of its case- and space-folded form: EmbeddingFold).
//
// Knobs (time to first token, streaming pace, answer length, a concurrency
// limit) and injected faults (error statuses, hangs, empty answers, cut
// streams, TCP resets), for every caller or only for chosen API keys, can be
// changed at run time, either in-process (SetConfig, SetFault) or over HTTP
// under /_sim/. Per-path request counters (Stats) let tests prove how many
// calls reached the upstream.
//
// The zero-delay, non-streaming path is kept cheap because llmsim is the
// upstream of our load benchmark: bodies are read into pooled buffers and
// answers are appended to pooled byte slices rather than marshalled.
package llmsim

import (
	"errors"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults applied when a Config field is zero.
const (
	DefaultAnswerTokens  = 24
	DefaultEmbeddingDims = 256
)

// Upper bounds enforced by Config.Validate and by request parameters, so a
// typo cannot make the simulator allocate gigabytes.
const (
	maxAnswerTokens  = 100_000
	maxEmbeddingDims = 65_536
	maxChoices       = 128
	maxTTFT          = time.Hour
)

// Config holds the knobs of a Server. The zero value is usable: no delays,
// DefaultAnswerTokens words per answer, no concurrency limit,
// DefaultEmbeddingDims-dimensional embeddings.
type Config struct {
	// TTFT is the delay before the first token of a stream, and before a
	// non-streaming answer is written. Zero or negative means none.
	TTFT time.Duration
	// TokensPerSec paces a stream after its first token (one word is one
	// token). Zero or negative means as fast as possible. Non-streaming
	// answers are not paced: they wait TTFT only.
	TokensPerSec float64
	// AnswerTokens is the number of words in an answer, the "sim:<hash>"
	// word included. Zero or negative means DefaultAnswerTokens.
	AnswerTokens int
	// MaxConcurrency, when positive, caps the generation requests
	// (/v1/chat/completions and /v1/completions) in flight; extra ones get
	// 429 with Retry-After: 1 and code "rate_limit_exceeded". Embeddings are
	// not limited.
	MaxConcurrency int
	// EmbeddingDims is the default length of embedding vectors (a request's
	// "dimensions" overrides it). Zero or negative means
	// DefaultEmbeddingDims.
	EmbeddingDims int
	// EmbeddingFold makes embeddings insensitive to letter case and to
	// runs of white space: each input is folded (FoldEmbeddingText:
	// lower-cased, white-space runs collapsed to one space, trimmed)
	// before it is hashed, so "What is  X?" and "what is x?" get the same
	// vector while different words still get unrelated ones. It simulates
	// an embedding model for which case and spacing variants of a prompt
	// are the same sentence (edgebench's semantic-hit scenario relies on
	// it). Off by default: every distinct text gets its own vector.
	EmbeddingFold bool
	// CacheControl, when set, is the Cache-Control header of generation
	// answers (/v1/chat/completions and /v1/completions, streamed or not;
	// a stream otherwise says "no-cache"), e.g. "private" or "max-age=5",
	// to test what a cache in front does with it. Empty → none (streams:
	// no-cache).
	CacheControl string
	// H2C, read by Start only, also serves HTTP/2 with prior knowledge
	// (h2c) on the same port, for an edge given an h2c:// upstream URL.
	// Off by default: net/http then peeks at every new connection's first
	// bytes for the HTTP/2 preface, and in a burst of 10,000 HTTP/1.1
	// connections 159 direct requests were answered 400 (cause not found;
	// none without it). edgebench streams --upstream-h2c starts its own.
	H2C bool
}

// Validate reports knobs that are negative or absurdly large. New and
// SetConfig do not validate (they treat non-positive values as "off" or
// "default"); call Validate first when the values come from a user.
func (c Config) Validate() error {
	switch {
	case c.TTFT < 0 || c.TTFT > maxTTFT:
		return errors.New("TTFT must be between 0 and 1h")
	case c.TokensPerSec < 0:
		return errors.New("TokensPerSec must not be negative")
	case c.AnswerTokens < 0 || c.AnswerTokens > maxAnswerTokens:
		return errors.New("AnswerTokens must be between 0 and 100000")
	case c.MaxConcurrency < 0:
		return errors.New("MaxConcurrency must not be negative")
	case c.EmbeddingDims < 0 || c.EmbeddingDims > maxEmbeddingDims:
		return errors.New("EmbeddingDims must be between 0 and 65536")
	}
	return nil
}

// withDefaults returns c with zero (or negative) sizes replaced by defaults.
func (c Config) withDefaults() Config {
	if c.AnswerTokens <= 0 {
		c.AnswerTokens = DefaultAnswerTokens
	}
	if c.EmbeddingDims <= 0 {
		c.EmbeddingDims = DefaultEmbeddingDims
	}
	return c
}

// Server is the simulator, an http.Handler. Create it with New; all methods
// are safe for concurrent use.
type Server struct {
	cfg      atomic.Pointer[Config]    // immutable snapshot, defaults applied
	cfgMu    sync.Mutex                // serialises read-modify-write of cfg (PUT /_sim/config)
	fault    atomic.Pointer[fault]     // nil: no fault
	canon    atomic.Pointer[canonical] // nil: every text its own answer (SetCanonical)
	counts   [numRoutes]atomic.Int64
	embedded atomic.Int64 // texts embedded (inputs of answered /v1/embeddings calls)
	http2    atomic.Int64 // API requests that arrived over HTTP/2 (h2c)
	inFlight atomic.Int64 // admitted generation requests
	// busy is the time generation requests held a slot (nanoseconds,
	// summed over requests): busy / (max_concurrency × elapsed) is the
	// model's utilisation, what a queue in front of it is for.
	busy    atomic.Int64
	created int64    // "created" of /v1/models entries
	stored  sync.Map // response id → its JSON, for GET /v1/responses/{id} (responses.go)
}

var _ http.Handler = (*Server)(nil)

// New returns a Server with the given knobs. It does not validate cfg; see
// Config.Validate.
func New(cfg Config) *Server {
	s := &Server{created: time.Now().Unix()}
	s.SetConfig(cfg)
	return s
}

// SetConfig replaces all knobs at once; requests already waiting keep the
// values they started with.
func (s *Server) SetConfig(cfg Config) {
	cfg = cfg.withDefaults()
	s.cfgMu.Lock()
	s.cfg.Store(&cfg)
	s.cfgMu.Unlock()
}

// Config returns the knobs in force, defaults applied.
func (s *Server) Config() Config { return *s.cfg.Load() }

// updateConfig applies fn to a copy of the knobs and stores the result
// unless fn fails.
func (s *Server) updateConfig(fn func(*Config) error) (Config, error) {
	s.cfgMu.Lock()
	defer s.cfgMu.Unlock()
	cfg := *s.cfg.Load()
	if err := fn(&cfg); err != nil {
		return Config{}, err
	}
	cfg = cfg.withDefaults()
	s.cfg.Store(&cfg)
	return cfg, nil
}

// Stats returns how many requests each API path has received since the
// start or the last ResetStats, faulted and rejected ones included. Paths
// with no request are absent. Only the four API paths are counted, plus
// StatEmbeddedInputs: the texts embedded (a batched call counts each).
func (s *Server) Stats() map[string]int64 {
	m := make(map[string]int64, numRoutes+1)
	for r := routeChat; r < numRoutes; r++ {
		if n := s.counts[r].Load(); n > 0 {
			m[routePaths[r]] = n
		}
	}
	if n := s.embedded.Load(); n > 0 {
		m[StatEmbeddedInputs] = n
	}
	if n := s.busy.Load() / int64(time.Millisecond); n > 0 {
		m[StatBusyMillis] = n
	}
	if n := s.http2.Load(); n > 0 {
		m[StatHTTP2Requests] = n
	}
	return m
}

// StatEmbeddedInputs is the Stats key of the number of texts embedded.
const StatEmbeddedInputs = "embedded_inputs"

// StatHTTP2Requests is the Stats key of the API requests that arrived over
// HTTP/2 (h2c: the server takes it beside HTTP/1.1 on the same port).
const StatHTTP2Requests = "http2_requests"

// StatBusyMillis is the Stats key of the slot time of generation
// requests: for each request admitted under MaxConcurrency (refused ones
// not), from its admission to the end of its answer, summed, in whole
// milliseconds.
const StatBusyMillis = "busy_ms"

// ResetStats sets every request counter to zero (DELETE /_sim/stats).
func (s *Server) ResetStats() {
	for i := range s.counts {
		s.counts[i].Store(0)
	}
	s.embedded.Store(0)
	s.http2.Store(0)
	s.busy.Store(0)
}

// InFlight returns the number of generation requests currently admitted
// (those MaxConcurrency counts), including hung and streaming ones. Tests use
// it to wait until requests are held without sleeping.
func (s *Server) InFlight() int { return int(s.inFlight.Load()) }

// route identifies an API path; the counters are indexed by it.
type route int

const (
	routeNone route = iota
	routeChat
	routeCompletions
	routeEmbeddings
	routeModels
	routeResponses // POST /v1/responses; GET and DELETE /v1/responses/{id}
	routeMessages
	routeCountTokens
	numRoutes
)

var routePaths = [numRoutes]string{
	routeChat:        "/v1/chat/completions",
	routeCompletions: "/v1/completions",
	routeEmbeddings:  "/v1/embeddings",
	routeModels:      "/v1/models",
	routeResponses:   "/v1/responses",
	routeMessages:    "/v1/messages",
	routeCountTokens: "/v1/messages/count_tokens",
}

func routeOf(path string) route {
	if d := deploymentOf(path); d != "" { // Azure OpenAI's layout
		path = "/v1" + strings.TrimPrefix(path, "/openai/deployments/"+d)
	}
	switch path {
	case "/v1/chat/completions":
		return routeChat
	case "/v1/completions":
		return routeCompletions
	case "/v1/embeddings":
		return routeEmbeddings
	case "/v1/models":
		return routeModels
	case "/v1/responses":
		return routeResponses
	case "/v1/messages":
		return routeMessages
	case "/v1/messages/count_tokens":
		return routeCountTokens
	}
	if strings.HasPrefix(path, "/v1/responses/") {
		return routeResponses
	}
	return routeNone
}

// deploymentOf is the deployment of an Azure OpenAI path
// (/openai/deployments/{deployment}/chat/completions), else "". llmsim
// serves that layout too, the deployment standing in for a missing
// "model", as Azure's does.
func deploymentOf(path string) string {
	rest, ok := strings.CutPrefix(path, "/openai/deployments/")
	if !ok {
		return ""
	}
	d, _, ok := strings.Cut(rest, "/")
	if !ok {
		return ""
	}
	return d
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rt := routeOf(r.URL.Path)
	if rt == routeNone && s.serveModel(w, r) {
		return
	}
	if rt == routeNone {
		switch r.URL.Path {
		case "/_sim/faults":
			s.serveFaults(w, r)
		case "/_sim/stats":
			s.serveStats(w, r)
		case "/_sim/config":
			s.serveConfig(w, r)
		default:
			writeError(w, http.StatusNotFound, "Invalid URL ("+r.Method+" "+r.URL.Path+")", "")
		}
		return
	}
	s.counts[rt].Add(1)
	if r.ProtoMajor == 2 {
		s.http2.Add(1)
	}
	if rt == routeModels {
		if r.Method != http.MethodGet {
			writeMethodNotAllowed(w, r, http.MethodGet)
			return
		}
		s.serveModels(w)
		return
	}
	if rt == routeResponses && r.URL.Path != "/v1/responses" {
		s.serveStoredResponse(w, r)
		return
	}
	if r.Method != http.MethodPost {
		writeMethodNotAllowed(w, r, http.MethodPost)
		return
	}
	s.serveAPI(w, r, rt)
}

// serveAPI handles the three POST endpoints: read the body, take a
// concurrency slot, apply the fault, then answer.
func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request, rt route) {
	// Read the whole body first: besides parsing, this lets net/http notice
	// a client that goes away (it watches the connection only once the body
	// is consumed), which hangs and pacing rely on.
	body := getBuffer()
	defer putBuffer(body)
	if _, err := body.ReadFrom(http.MaxBytesReader(w, r.Body, maxBodyBytes)); err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			writeError(w, http.StatusRequestEntityTooLarge, "request body too large", "")
			return
		}
		writeError(w, http.StatusBadRequest, "reading request body: "+err.Error(), "")
		return
	}

	cfg := s.cfg.Load()
	if rt != routeEmbeddings {
		n := s.inFlight.Add(1)
		defer s.inFlight.Add(-1)
		if cfg.MaxConcurrency > 0 && n > int64(cfg.MaxConcurrency) {
			w.Header()["Retry-After"] = retryAfterOne
			writeError(w, http.StatusTooManyRequests, "Rate limit reached: too many concurrent requests (llmsim max_concurrency)", "")
			return
		}
		admitted := time.Now()
		defer func() { s.busy.Add(int64(time.Since(admitted))) }()
	}

	f := s.faultFor(rt, r)
	if f != nil && !f.before(w, r) {
		return
	}

	switch rt {
	case routeMessages:
		s.serveMessages(w, r, body.Bytes(), cfg, f)
		return
	case routeCountTokens:
		s.serveCountTokens(w, body.Bytes())
		return
	}
	if rt == routeEmbeddings {
		s.serveEmbeddings(w, body.Bytes(), cfg, f, deploymentOf(r.URL.Path))
		return
	}
	if rt == routeResponses {
		s.serveResponses(w, r, body.Bytes(), cfg, f)
		return
	}
	s.serveGeneration(w, r, rt, body.Bytes(), cfg, f)
}

// maxBodyBytes bounds request bodies; OpenAI's own limit is in this range.
const maxBodyBytes = 32 << 20

var retryAfterOne = []string{"1"}

// wait blocks for d or until done is closed; it reports whether d elapsed.
func wait(done <-chan struct{}, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-done:
		return false
	}
}
