package llmsim

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"time"
)

// Running is a Server listening on a socket, as returned by Start.
type Running struct {
	// Server is the simulator being served; change its knobs and faults
	// directly.
	Server *Server

	url       string
	srv       *http.Server
	cancel    context.CancelFunc // ends the requests' base context
	stopAfter func() bool        // detaches Close from Start's ctx
	served    chan struct{}      // closed when Serve has returned
	serveErr  error              // Serve's error, other than ErrServerClosed; read after served
	closeOnce sync.Once
	closeErr  error
}

// Start listens on addr ("127.0.0.1:0" picks a free port) and serves a new
// Server with cfg until ctx is done or Close is called.
func Start(ctx context.Context, addr string, cfg Config) (*Running, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("llmsim listen: %w", err)
	}
	// Requests run under base, which Close cancels: hung and paced requests
	// then end at once instead of holding the shutdown.
	base, cancel := context.WithCancel(context.Background())
	r := &Running{
		Server: New(cfg),
		url:    "http://" + ln.Addr().String(),
		cancel: cancel,
		served: make(chan struct{}),
	}
	r.srv = &http.Server{
		Handler:           r.Server,
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return base },
	}
	if cfg.H2C {
		// HTTP/1.1 and, on the same port, HTTP/2 with prior knowledge:
		// an edge given an h2c:// upstream multiplexes its streams.
		r.srv.Protocols = new(http.Protocols)
		r.srv.Protocols.SetHTTP1(true)
		r.srv.Protocols.SetUnencryptedHTTP2(true)
	}
	go func() {
		defer close(r.served)
		if err := r.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			r.serveErr = err
		}
	}()
	// The callback must not touch r.stopAfter, which is being assigned.
	r.stopAfter = context.AfterFunc(ctx, func() { _ = r.shutdown() })
	return r, nil
}

// URL returns the base URL, e.g. "http://127.0.0.1:41234" (append "/v1" for
// an OpenAI client's base URL).
func (r *Running) URL() string { return r.url }

// Close stops the server: in-flight requests are cancelled, connections are
// closed, and Close returns once the serving goroutine has ended. It is safe
// to call more than once.
func (r *Running) Close() error {
	r.stopAfter()
	return r.shutdown()
}

func (r *Running) shutdown() error {
	r.closeOnce.Do(func() {
		r.cancel()
		// In-flight requests end with the context just canceled; the short
		// grace lets their handlers return. A connection a client opened
		// but never used would hold Shutdown for 5 s (net/http counts a
		// new connection as active that long), so the rest are closed.
		ctx, cancel := context.WithTimeout(context.Background(), 250*time.Millisecond)
		defer cancel()
		if err := r.srv.Shutdown(ctx); err != nil {
			_ = r.srv.Close() // the deadline passed: drop the stragglers
		}
		<-r.served
		r.closeErr = r.serveErr
	})
	return r.closeErr
}

// Main runs the llmsim command: it parses args, serves until ctx is done and
// returns nil then. It prints "llmsim listening on http://ADDR" to stdout
// once the socket is open.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("llmsim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg Config
	listen := fs.String("listen", "127.0.0.1:8000", "address to listen on (host:port; port 0 picks one)")
	fs.DurationVar(&cfg.TTFT, "ttft", 0, "time to first token, e.g. 200ms")
	fs.Float64Var(&cfg.TokensPerSec, "tps", 0, "streaming tokens (words) per second after the first; 0 = unpaced")
	fs.IntVar(&cfg.AnswerTokens, "tokens", DefaultAnswerTokens, "words per answer")
	fs.IntVar(&cfg.MaxConcurrency, "max-concurrency", 0, "generation requests in flight before 429; 0 = unlimited")
	fs.IntVar(&cfg.EmbeddingDims, "embedding-dims", DefaultEmbeddingDims, "default embedding dimensions")
	fs.BoolVar(&cfg.H2C, "h2c", false, "also serve HTTP/2 with prior knowledge (h2c) on the same port")
	fs.BoolVar(&cfg.EmbeddingFold, "embed-fold", false, "embed texts lower-cased with white-space runs collapsed, so case and spacing variants get the same vector")
	canonical := fs.String("canonical", "", `JSON file {"paraphrase": "canonical question", ...}: paraphrases get the canonical question's answer`)
	reword := fs.Bool("reword", false, "with -canonical: a paraphrase's answer keeps the canonical first word but has filler of its own")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: llmsim [flags]\n\nAn OpenAI-compatible LLM upstream simulator with fault injection.\n\nFlags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	var canon map[string]string
	if *canonical != "" {
		b, err := os.ReadFile(*canonical)
		if err != nil {
			return fmt.Errorf("-canonical: %w", err)
		}
		if err := json.Unmarshal(b, &canon); err != nil {
			return fmt.Errorf("-canonical %s: want a JSON object of strings: %w", *canonical, err)
		}
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("invalid flags: %w", err)
	}

	r, err := Start(ctx, *listen, cfg)
	if err != nil {
		return err
	}
	if err := r.Server.SetCanonical(canon, *reword); err != nil {
		_ = r.Close()
		return fmt.Errorf("-canonical: %w", err)
	}
	if _, err := fmt.Fprintf(stdout, "llmsim listening on %s\n", r.URL()); err != nil {
		_ = r.Close()
		return fmt.Errorf("writing to stdout: %w", err)
	}
	select {
	case <-ctx.Done():
	case <-r.served:
	}
	return r.Close()
}
