// Package upstream is the HTTP client to the model's OpenAI-compatible API.
// It builds the outbound request from the inbound one the way the standard
// library's ReverseProxy does (a new request, hop-by-hop and edge-only
// headers removed, X-Forwarded-For appended) and classifies transport
// failures so the pipeline can answer with a true status.
package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Config configures a Client.
type Config struct {
	// URL is the API's base URL, with or without a trailing /v1.
	URL string
	// APIKey, when set, replaces the client's credentials upstream.
	APIKey string
	// HeaderTimeout bounds the wait for response headers. Zero → 120s.
	HeaderTimeout time.Duration
	// MaxIdleConns sizes the keep-alive pool. Zero → 512.
	MaxIdleConns int
	// Transport overrides the HTTP transport (tests). Nil → a tuned
	// http.Transport.
	Transport http.RoundTripper
	// Propagator, when set, writes the trace context of the call's span
	// (edgecache's, not the caller's) and the baggage into the upstream
	// request, replacing what the client sent in those headers.
	Propagator propagation.TextMapPropagator
}

// Client calls the upstream API. It is safe for concurrent use.
type Client struct {
	base   *url.URL
	apiKey string
	// rt sends requests. It is used directly, as httputil.ReverseProxy
	// does, not through an http.Client: redirects are the client's
	// business, not the cache's, and http.Client's redirect bookkeeping
	// copies every request's header.
	rt   http.RoundTripper
	prop propagation.TextMapPropagator
}

// ParseURL parses an upstream base URL. Its scheme is http, https, or h2c:
// HTTP/2 over cleartext TCP with prior knowledge (RFC 9113, section 3.3),
// spelled the way Traefik spells such backends. An h2c URL comes back with
// scheme http and h2c true.
//
// Why h2c: over https the transport already negotiates HTTP/2, and every
// open stream to the model shares a few connections. Over plain http each
// open stream holds a connection of its own: a file descriptor, the
// transport's two goroutines and buffers. An in-cluster model server or
// sidecar that speaks h2c lets 10,000 streams share about 40 connections
// (README, "Long streams": all 10,000 fit under this machine's 20,000
// descriptors, and about 6 KiB less RSS per stream at 2,000 streams,
// measured against llmsim).
func ParseURL(s string) (u *url.URL, h2c bool, err error) {
	u, err = url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https" && u.Scheme != "h2c") || u.Host == "" {
		return nil, false, fmt.Errorf("upstream url %q: want an absolute http, https or h2c URL", s)
	}
	if u.Scheme == "h2c" {
		u.Scheme, h2c = "http", true
	}
	return u, h2c, nil
}

// H2C returns the protocols of a transport that speaks HTTP/2 with prior
// knowledge to http:// URLs (and HTTP/2 or HTTP/1.1 to https:// ones).
func H2C() *http.Protocols {
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	p.SetHTTP1(false)
	return p
}

// New returns a Client for cfg.
func New(cfg Config) (*Client, error) {
	u, h2c, err := ParseURL(cfg.URL)
	if err != nil {
		return nil, err
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	rt := cfg.Transport
	if rt == nil {
		if cfg.HeaderTimeout == 0 {
			cfg.HeaderTimeout = 120 * time.Second
		}
		if cfg.MaxIdleConns == 0 {
			cfg.MaxIdleConns = 512
		}
		t := &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			ForceAttemptHTTP2:     true,
			MaxIdleConns:          cfg.MaxIdleConns,
			MaxIdleConnsPerHost:   cfg.MaxIdleConns,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: cfg.HeaderTimeout,
			ExpectContinueTimeout: time.Second,
			// Each upstream connection holds both buffers for its lifetime,
			// an open stream included (net/http's default: 4 KiB each).
			// 2 KiB still takes a typical answer's header block (a hosted
			// API sends 1–1.5 KiB of headers) and a short body in one read,
			// and a request's headers and a short body leave in one write;
			// reads of an answer of declared length bypass the buffer, and
			// a longer body leaves in two writes. Measured in the README,
			// "Long streams": RSS per open stream at 2,000 streams.
			ReadBufferSize:  2 << 10,
			WriteBufferSize: 2 << 10,
			// Over HTTP/2 many streams share a connection: one that stops
			// answering is found by a ping after 30 s of silence and
			// closed 15 s later, failing its streams, instead of holding
			// them until their own timeouts.
			HTTP2: &http.HTTP2Config{SendPingTimeout: 30 * time.Second, PingTimeout: 15 * time.Second},
		}
		if h2c {
			t.Protocols = H2C()
		}
		rt = t
	}
	return &Client{base: u, apiKey: cfg.APIKey, rt: rt, prop: cfg.Propagator}, nil
}

// ReplacesKey reports whether the client sends the edge's own API key
// (Config.APIKey) instead of the caller's. When it does not, the caller's
// key reaches the upstream, and the upstream's answers about that key
// (429, 401, 403) are the caller's, not the target's.
func (c *Client) ReplacesKey() bool { return c.apiKey != "" }

// URL returns the upstream URL for path and rawQuery. A base URL that ends in
// /v1 and a path that starts with /v1/ are joined without repeating /v1.
func (c *Client) URL(path, rawQuery string) *url.URL {
	u := *c.base
	if strings.HasSuffix(u.Path, "/v1") && strings.HasPrefix(path, "/v1/") {
		path = strings.TrimPrefix(path, "/v1")
	}
	u.Path += path
	u.RawPath = ""
	u.RawQuery = rawQuery
	return &u
}

// hopHeaders are removed in both directions (RFC 9110 §7.6.1), plus headers
// that only make sense between the client and the edge.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// RemoveHopHeaders deletes hop-by-hop headers, including those the
// Connection header names, from h.
func RemoveHopHeaders(h http.Header) {
	for _, f := range h["Connection"] {
		for _, name := range strings.Split(f, ",") {
			if name = textproto(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, name := range hopHeaders {
		h.Del(name)
	}
}

func textproto(s string) string { return http.CanonicalHeaderKey(strings.TrimSpace(s)) }

// Do sends body to path on the upstream with the inbound request's method,
// query and end-to-end headers. The caller closes the response body.
func (c *Client) Do(ctx context.Context, in *http.Request, path string, body []byte) (*http.Response, error) {
	var b *Body
	if body != nil {
		b = NewBody(body)
	}
	return c.DoBody(ctx, in, path, b)
}

// Body is an outbound request body that the caller can let go of once the
// upstream is answering (Release). The transport keeps the request it sent,
// and with it the body (for a retry before an answer), until the answer
// ends: for a stream that is minutes, and a long prompt is most of what an
// open stream holds (README, "Long streams").
type Body struct {
	n  int // len(b) when made: the request's Content-Length
	mu sync.Mutex
	b  []byte
}

// NewBody returns a Body of b, which must not change while it is sent.
func NewBody(b []byte) *Body { return &Body{n: len(b), b: b} }

// Release lets go of the bytes. A read or a retry after it fails
// (errBodyReleased); the transport has read the whole body by then when
// the upstream has started its answer.
func (b *Body) Release() {
	b.mu.Lock()
	b.b = nil
	b.mu.Unlock()
}

var errBodyReleased = errors.New("request body released: the answer was under way")

// reader returns a new reader of the body from its start.
func (b *Body) reader() (io.ReadCloser, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.b == nil {
		return nil, errBodyReleased
	}
	if len(b.b) == 0 {
		return http.NoBody, nil
	}
	return &bodyReader{body: b}, nil
}

// bodyReader reads a Body without holding its bytes itself, so Release
// frees them even while the transport keeps the reader.
type bodyReader struct {
	body *Body
	off  int
}

func (r *bodyReader) Read(p []byte) (int, error) {
	if r.off >= r.body.n {
		// All of it was read: EOF, released or not. net/http reads once
		// more after Content-Length bytes to check there is nothing more,
		// and that read can come after the answer has started and the
		// caller released the body; an error there broke the connection
		// and cut the stream (about 1 run in 12 of
		// TestJSONRouteTenantsAndStreams under -race).
		return 0, io.EOF
	}
	r.body.mu.Lock()
	defer r.body.mu.Unlock()
	if r.body.b == nil {
		return 0, errBodyReleased
	}
	n := copy(p, r.body.b[r.off:])
	r.off += n
	return n, nil
}

func (r *bodyReader) Close() error { return nil }

// DoBody is Do with a Body the caller may release once the answer is under
// way; nil sends no body.
func (c *Client) DoBody(ctx context.Context, in *http.Request, path string, body *Body) (*http.Response, error) {
	// The request is built field by field rather than through
	// http.NewRequestWithContext: the URL is already parsed, and formatting
	// it to parse it again costs every pass-through call.
	out := (&http.Request{
		Method:     in.Method,
		URL:        c.URL(path, in.URL.RawQuery),
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     outboundHeader(in.Header),
		Host:       c.base.Host,
	}).WithContext(ctx)
	if out.Method == "" {
		out.Method = http.MethodGet
	}
	if !validMethod(out.Method) {
		return nil, &Error{Kind: KindOther, Err: fmt.Errorf("invalid method %q", out.Method)}
	}
	if body != nil {
		rd, err := body.reader()
		if err != nil {
			return nil, &Error{Kind: KindOther, Err: err}
		}
		out.Body, out.GetBody, out.ContentLength = rd, body.reader, int64(body.n)
	}
	if c.apiKey != "" {
		out.Header.Set("Authorization", "Bearer "+c.apiKey)
		if out.Header.Get("Api-Key") != "" { // Azure OpenAI style
			out.Header.Set("Api-Key", c.apiKey)
		}
		if out.Header.Get("X-Api-Key") != "" { // Anthropic style
			out.Header.Set("X-Api-Key", c.apiKey)
		}
	}
	if ip, _, err := net.SplitHostPort(in.RemoteAddr); err == nil {
		if prior := out.Header.Get("X-Forwarded-For"); prior != "" {
			ip = prior + ", " + ip
		}
		out.Header.Set("X-Forwarded-For", ip)
	}
	if out.Header.Get("User-Agent") == "" {
		out.Header["User-Agent"] = nil // no Go default User-Agent
	}
	c.inject(ctx, out.Header)
	resp, err := c.rt.RoundTrip(out)
	if err != nil {
		return nil, classify(ctx, err)
	}
	RemoveHopHeaders(resp.Header)
	return resp, nil
}

// inject replaces the client's trace headers with the context of the span
// in ctx, when there is one: the upstream's spans are then children of
// edgecache's. Without a span (tracing off) the client's headers pass
// through unchanged.
func (c *Client) inject(ctx context.Context, h http.Header) {
	if c.prop == nil || !trace.SpanContextFromContext(ctx).IsValid() {
		return
	}
	for _, f := range c.prop.Fields() {
		h.Del(f)
	}
	c.prop.Inject(ctx, propagation.HeaderCarrier(h))
}

// validMethod reports whether m is an HTTP token (what
// http.NewRequest checks).
func validMethod(m string) bool {
	for i := 0; i < len(m); i++ {
		c := m[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("()<>@,;:\\\"/[]?={}", c) >= 0 {
			return false
		}
	}
	return m != ""
}

// dropOutbound are inbound headers never sent upstream besides the hop
// headers: edgecache's own, Accept-Encoding (the transport negotiates, and
// transparently undoes, compression: the cache needs the plain body),
// Cache-Control (directives to the edge, not the model) and Content-Length
// (set from the body).
func dropOutbound(name string) bool {
	switch name {
	case "Accept-Encoding", "Cache-Control", "Content-Length":
		return true
	}
	return strings.HasPrefix(name, "X-Edgecache-")
}

// outboundHeader copies the end-to-end headers of an inbound request, in one
// pass and one backing array for the values.
func outboundHeader(h http.Header) http.Header {
	n := 0
	for name, vv := range h {
		if !dropOutbound(name) {
			n += len(vv)
		}
	}
	out := make(http.Header, len(h))
	vals := make([]string, 0, n)
	for name, vv := range h {
		if dropOutbound(name) || len(vv) == 0 {
			continue
		}
		vals = append(vals, vv...)
		out[name] = vals[len(vals)-len(vv) : len(vals) : len(vals)]
	}
	RemoveHopHeaders(out)
	return out
}

// Kind classifies a transport failure.
type Kind int

// Failure kinds.
const (
	KindOther    Kind = iota
	KindDial          // the connection could not be made: nothing reached the upstream
	KindTimeout       // no (complete) answer within the deadline
	KindCanceled      // every client that wanted the answer went away
	// KindLocal: the edge itself lacked what the call needs (file
	// descriptors, socket buffers, local ports), so nothing was sent and
	// nothing is known of the upstream's health.
	KindLocal
)

// Error is a failure to get a response from the upstream.
type Error struct {
	Kind Kind
	Err  error
}

func (e *Error) Error() string {
	switch e.Kind {
	case KindDial:
		return "upstream unreachable: " + e.Err.Error()
	case KindTimeout:
		return "upstream timed out: " + e.Err.Error()
	case KindCanceled:
		return "upstream call canceled: " + e.Err.Error()
	case KindLocal:
		return "edge out of resources for the upstream call: " + e.Err.Error()
	}
	return "upstream: " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

func classify(ctx context.Context, err error) error {
	var ue *Error
	if errors.As(err, &ue) {
		return err
	}
	var op *net.OpError
	switch {
	case errors.Is(ctx.Err(), context.Canceled):
		return &Error{Kind: KindCanceled, Err: err}
	case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
		return &Error{Kind: KindTimeout, Err: err}
	case localExhaustion(err):
		return &Error{Kind: KindLocal, Err: err}
	case errors.As(err, &op) && op.Op == "dial":
		return &Error{Kind: KindDial, Err: err}
	}
	return &Error{Kind: KindOther, Err: err}
}

// localExhaustion reports the errors of the edge's own limits: out of file
// descriptors (the process's or the system's), socket buffers, or local
// ports. At 10,000 open streams a process allowed 20,000 descriptors
// runs out of them; counted as the upstream's failure, one such dial
// opened the breaker and turned away every request after it.
func localExhaustion(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.EADDRNOTAVAIL)
}

// Classify turns an error met while reading an upstream body into an *Error.
func Classify(ctx context.Context, err error) error { return classify(ctx, err) }

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// CloseIdle closes idle keep-alive connections (on shutdown).
func (c *Client) CloseIdle() {
	if t, ok := c.rt.(interface{ CloseIdleConnections() }); ok {
		t.CloseIdleConnections()
	}
}
