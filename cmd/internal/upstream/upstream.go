// Package upstream is the HTTP client to the model's OpenAI-compatible API.
// It builds the outbound request from the inbound one the way the standard
// library's ReverseProxy does (a new request, hop-by-hop and edge-only
// headers removed, X-Forwarded-For appended) and classifies transport
// failures so the pipeline can answer with a true status.
package upstream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
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
}

// Client calls the upstream API. It is safe for concurrent use.
type Client struct {
	base   *url.URL
	apiKey string
	hc     *http.Client
}

// New returns a Client for cfg.
func New(cfg Config) (*Client, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("upstream url %q: want an absolute http(s) URL", cfg.URL)
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
		rt = &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			ForceAttemptHTTP2:     true,
			MaxIdleConns:          cfg.MaxIdleConns,
			MaxIdleConnsPerHost:   cfg.MaxIdleConns,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: cfg.HeaderTimeout,
			ExpectContinueTimeout: time.Second,
		}
	}
	return &Client{base: u, apiKey: cfg.APIKey, hc: &http.Client{
		Transport: rt,
		// Redirects are the client's business, not the cache's.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}, nil
}

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
	var rd *bytes.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	out, err := http.NewRequestWithContext(ctx, in.Method, c.URL(path, in.URL.RawQuery).String(), nil)
	if err != nil {
		return nil, &Error{Kind: KindOther, Err: err}
	}
	if rd != nil {
		out.Body = io.NopCloser(rd)
		out.ContentLength = int64(len(body))
		out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	}
	out.Header = in.Header.Clone()
	RemoveHopHeaders(out.Header)
	for name := range out.Header {
		if strings.HasPrefix(name, "X-Edgecache-") {
			delete(out.Header, name)
		}
	}
	// Let the transport negotiate (and transparently undo) compression: the
	// cache needs the plain body.
	out.Header.Del("Accept-Encoding")
	out.Header.Del("Cache-Control") // directives to the edge, not the model
	out.Header.Del("Content-Length")
	if c.apiKey != "" {
		out.Header.Set("Authorization", "Bearer "+c.apiKey)
		if out.Header.Get("Api-Key") != "" { // Azure OpenAI style
			out.Header.Set("Api-Key", c.apiKey)
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
	resp, err := c.hc.Do(out)
	if err != nil {
		return nil, classify(ctx, err)
	}
	RemoveHopHeaders(resp.Header)
	return resp, nil
}

// Kind classifies a transport failure.
type Kind int

// Failure kinds.
const (
	KindOther    Kind = iota
	KindDial          // the connection could not be made: nothing reached the upstream
	KindTimeout       // no (complete) answer within the deadline
	KindCanceled      // every client that wanted the answer went away
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
	case errors.As(err, &op) && op.Op == "dial":
		return &Error{Kind: KindDial, Err: err}
	}
	return &Error{Kind: KindOther, Err: err}
}

// Classify turns an error met while reading an upstream body into an *Error.
func Classify(ctx context.Context, err error) error { return classify(ctx, err) }

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// CloseIdle closes idle keep-alive connections (on shutdown).
func (c *Client) CloseIdle() { c.hc.CloseIdleConnections() }
