package llmsim

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Fault describes a failure to inject into the API endpoints
// (/v1/chat/completions, /v1/completions, /v1/embeddings). It never applies
// to /v1/models or /_sim/*; Paths and Keys narrow it to some API paths and
// some callers' keys. Effects combine in this order: hang, reset, status;
// otherwise the request is answered, shaped by empty and cut_after.
type Fault struct {
	// Status, when 400–599, is sent with an OpenAI error body instead of an
	// answer (type "requests" and code "rate_limit_exceeded" for 429,
	// "server_error" for 5xx, "invalid_request_error" otherwise).
	Status int `json:"status,omitempty"`
	// Probability is the chance that a request is affected; 0 (or absent)
	// means always.
	Probability float64 `json:"probability,omitempty"`
	// RetryAfter, in seconds, is sent as Retry-After along with Status.
	RetryAfter int `json:"retry_after,omitempty"`
	// Hang accepts the request and sends nothing until the client goes
	// away, or until HangMS elapses.
	Hang bool `json:"hang,omitempty"`
	// HangMS, when positive, bounds the hang (and implies Hang); afterwards
	// the request proceeds (to Status if set, else a normal answer).
	HangMS int `json:"hang_ms,omitempty"`
	// Empty answers 200 with no words: content "" without streaming; only the
	// role chunk, the finish chunk (and the usage chunk if asked for) and
	// [DONE] when streaming; "data": [] for embeddings.
	Empty bool `json:"empty,omitempty"`
	// CutAfter, when positive, makes a stream send that many content chunks
	// (counted over all choices) and then break the connection without
	// finish_reason or [DONE]. Non-streaming answers (and embeddings) send
	// the first half of their body, under a Content-Length for all of it,
	// then break the connection.
	CutAfter int `json:"cut_after,omitempty"`
	// Reset closes the connection with a TCP RST (SO_LINGER 0) without
	// answering.
	Reset bool `json:"reset,omitempty"`
	// Paths, if not empty, limits the fault to these API paths.
	Paths []string `json:"paths,omitempty"`
	// Keys, if not empty, limits the fault to requests made with one of
	// these API keys (the Authorization bearer token, or the api-key or
	// x-api-key header): an upstream whose answers depend on the caller's
	// key, e.g. one tenant rate-limited while the others are served.
	Keys []string `json:"keys,omitempty"`
}

// Validate reports values a client most likely did not mean. SetFault does
// not call it; POST /_sim/faults does.
func (f Fault) Validate() error {
	switch {
	case f.Status != 0 && (f.Status < 400 || f.Status > 599):
		return fmt.Errorf("status %d: must be 400-599", f.Status)
	case !(f.Probability >= 0 && f.Probability <= 1): // also catches NaN
		return fmt.Errorf("probability %v: must be in [0,1]", f.Probability)
	case f.RetryAfter < 0:
		return errors.New("retry_after must not be negative")
	case f.HangMS < 0:
		return errors.New("hang_ms must not be negative")
	case f.CutAfter < 0:
		return errors.New("cut_after must not be negative")
	case f.Status == 0 && !f.Hang && f.HangMS == 0 && !f.Empty && f.CutAfter == 0 && !f.Reset:
		return errors.New("fault has no effect: set status, hang, hang_ms, empty, cut_after or reset (DELETE clears)")
	}
	for _, p := range f.Paths {
		if rt := routeOf(p); rt == routeNone || rt == routeModels {
			return fmt.Errorf("paths: %q is not one of /v1/chat/completions, /v1/completions, /v1/embeddings", p)
		}
	}
	for _, k := range f.Keys {
		if strings.TrimSpace(k) == "" {
			return errors.New("keys: an empty key matches no request")
		}
	}
	return nil
}

// fault is a Fault prepared for the request path.
type fault struct {
	Fault
	affects [numRoutes]bool
	keys    map[string]bool // nil: every key
}

// SetFault makes f apply to every following request (POST /_sim/faults).
// It does not validate f: statuses outside 400–599 are ignored and a
// probability outside (0,1) means always.
func (s *Server) SetFault(f Fault) {
	f.Paths = slices.Clone(f.Paths)
	f.Keys = slices.Clone(f.Keys)
	pf := &fault{Fault: f}
	for _, k := range f.Keys {
		if pf.keys == nil {
			pf.keys = make(map[string]bool, len(f.Keys))
		}
		pf.keys[k] = true
	}
	if len(f.Paths) == 0 {
		pf.affects[routeChat] = true
		pf.affects[routeCompletions] = true
		pf.affects[routeEmbeddings] = true
		pf.affects[routeResponses] = true
		pf.affects[routeMessages] = true
	}
	for _, p := range f.Paths {
		if rt := routeOf(p); rt != routeModels {
			pf.affects[rt] = true
		}
	}
	pf.affects[routeNone] = false
	s.fault.Store(pf)
}

// ClearFault removes the fault (DELETE /_sim/faults).
func (s *Server) ClearFault() { s.fault.Store(nil) }

// Fault returns the fault in force; the zero Fault when there is none.
func (s *Server) Fault() Fault {
	f := s.fault.Load()
	if f == nil {
		return Fault{}
	}
	out := f.Fault
	out.Paths = slices.Clone(out.Paths)
	out.Keys = slices.Clone(out.Keys)
	return out
}

// faultFor returns the fault that applies to request r on rt, rolling the
// dice once; nil when none does.
func (s *Server) faultFor(rt route, r *http.Request) *fault {
	f := s.fault.Load()
	if f == nil || !f.affects[rt] || f.keys != nil && !f.keys[requestKey(r)] {
		return nil
	}
	if p := f.Probability; p > 0 && p < 1 && rand.Float64() >= p {
		return nil
	}
	return f
}

// requestKey is the API key r was made with: the Authorization bearer
// token (OpenAI, DeepSeek, vLLM), else Azure's api-key or Anthropic's
// x-api-key header.
func requestKey(r *http.Request) string {
	if a := r.Header.Get("Authorization"); a != "" {
		if len(a) > 7 && strings.EqualFold(a[:7], "bearer ") {
			return strings.TrimSpace(a[7:])
		}
		return a
	}
	if k := r.Header.Get("Api-Key"); k != "" {
		return k
	}
	return r.Header.Get("X-Api-Key")
}

// before applies the effects that come before (or instead of) an answer:
// hang, reset, status. It reports whether the request should be answered.
func (f *fault) before(w http.ResponseWriter, r *http.Request) bool {
	if f.Hang || f.HangMS > 0 {
		if f.HangMS <= 0 {
			<-r.Context().Done()
			return false
		}
		if !wait(r.Context().Done(), time.Duration(f.HangMS)*time.Millisecond) {
			return false
		}
	}
	if f.Reset {
		resetConnection(w)
		return false
	}
	if f.Status >= 400 && f.Status <= 599 {
		if f.RetryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(f.RetryAfter))
		}
		msg := "llmsim: injected fault (status " + strconv.Itoa(f.Status) + ")"
		if routeOf(r.URL.Path) == routeMessages {
			writeAnthropicError(w, f.Status, anthropicErrorType(f.Status), msg)
			return false
		}
		writeError(w, f.Status, msg, "")
		return false
	}
	return true
}

// resetConnection takes over the connection and closes it with SO_LINGER 0,
// which makes the kernel send a TCP RST instead of a FIN. Where the
// connection cannot be taken over (HTTP/2), the handler is aborted instead.
func resetConnection(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	c := conn
	if tc, ok := c.(interface{ NetConn() net.Conn }); ok { // *tls.Conn
		c = tc.NetConn()
	}
	if tcp, ok := c.(*net.TCPConn); ok {
		_ = tcp.SetLinger(0) // best effort: without it the client sees EOF instead of a reset
	}
	_ = c.Close() // the raw connection: a TLS close_notify would soften the reset
}
