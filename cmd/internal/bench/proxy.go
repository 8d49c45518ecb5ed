package bench

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/edgecache/edgecache/cmd/internal/upstream"
)

// ProxyHandler is the least a net/http reverse proxy does for one JSON
// call: read the request body, send it with the client's headers to the
// same path on upstream through rt, and copy the status, headers and body
// back. No parsing, keys, limits, retries or metrics: it is the reference
// that the pass-through row (d) and edgebench streams are read against,
// the cost of the two extra sockets alone. Hop-by-hop headers are dropped
// both ways; an event stream is flushed as it arrives.
func ProxyHandler(upstream *url.URL, rt http.RoundTripper) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		out, err := http.NewRequestWithContext(r.Context(), r.Method, upstream.JoinPath(r.URL.Path).String(), bytes.NewReader(body))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		for k, v := range r.Header {
			if !hopHeader(k) {
				out.Header[k] = v
			}
		}
		resp, err := rt.RoundTrip(out)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		h := w.Header()
		for k, v := range resp.Header {
			if !hopHeader(k) {
				h[k] = v
			}
		}
		w.WriteHeader(resp.StatusCode)
		if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
			copyFlushing(w, resp.Body)
			return
		}
		_, _ = io.Copy(w, resp.Body)
	})
}

// copyFlushing copies a stream, flushing after every read so each event
// reaches the client as it arrives (as httputil.ReverseProxy does for
// text/event-stream): the reference for edgebench streams.
func copyFlushing(w http.ResponseWriter, body io.Reader) {
	rc := http.NewResponseController(w)
	buf := make([]byte, 4<<10)
	for {
		n, err := body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			if rc.Flush() != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func hopHeader(k string) bool {
	switch k {
	case "Connection", "Keep-Alive", "Proxy-Connection", "Te", "Trailer", "Transfer-Encoding", "Upgrade":
		return true
	}
	return false
}

// proxyMain is `edgebench proxy --listen ADDR --upstream URL`.
func proxyMain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("edgebench proxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on (host:port; port 0 picks one)")
	up := fs.String("upstream", "", "base URL of the upstream, e.g. http://127.0.0.1:8000 (required)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: edgebench proxy --listen ADDR --upstream URL\n\n"+
			"A minimal net/http reverse proxy (read the body, forward it, copy the answer\n"+
			"back): the reference the pass-through numbers are compared with.\n\nFlags:")
		fs.PrintDefaults()
	}
	if err := parseArgs(fs, args); err != nil {
		return err
	}
	u, h2c, err := upstream.ParseURL(*up) // the schemes edgecache takes, h2c included
	if err != nil {
		return fmt.Errorf("--upstream: %w", err)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	tr := &http.Transport{Proxy: nil, MaxIdleConns: 1024, MaxIdleConnsPerHost: 1024, ForceAttemptHTTP2: false}
	if h2c {
		tr.Protocols = upstream.H2C()
	}
	defer tr.CloseIdleConnections()
	return serveHandler(ctx, ln, ProxyHandler(u, tr), "edgebench proxy", stdout)
}
