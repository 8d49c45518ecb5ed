package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"
)

// CeilingHandler answers every request with status 200, Content-Type
// application/json and body, after reading and discarding the request body.
// It parses nothing: it is the fastest a net/http server can hand out the
// bytes of a cached answer, the ceiling for a cache hit.
func CeilingHandler(body []byte) http.Handler {
	ctype := []string{"application/json"}
	clen := []string{strconv.Itoa(len(body))}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		h := w.Header()
		h["Content-Type"] = ctype
		h["Content-Length"] = clen
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(body)
	})
}

// ceilingMain is `edgebench ceiling --listen ADDR --body FILE`.
func ceilingMain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("edgebench ceiling", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on (host:port; port 0 picks one)")
	bodyFile := fs.String("body", "", "file with the response body to serve (required)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: edgebench ceiling --listen ADDR --body FILE\n\n"+
			"Serves FILE with status 200 and Content-Type application/json to every request:\n"+
			"the minimal net/http server that the cache-hit numbers are compared with.\n\nFlags:")
		fs.PrintDefaults()
	}
	if err := parseArgs(fs, args); err != nil {
		return err
	}
	if *bodyFile == "" {
		return errors.New("--body FILE is required")
	}
	body, err := os.ReadFile(*bodyFile)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	return serveHandler(ctx, ln, CeilingHandler(body), "edgebench ceiling", stdout)
}

// parseArgs parses args into fs and rejects positional arguments. -h
// returns flag.ErrHelp, which Main takes for success.
func parseArgs(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	return nil
}

// serveHandler serves h on ln until ctx is done, after printing
// "NAME listening on ADDR".
func serveHandler(ctx context.Context, ln net.Listener, h http.Handler, name string, stdout io.Writer) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	if _, err := fmt.Fprintf(stdout, "%s listening on %s\n", name, ln.Addr()); err != nil {
		_ = srv.Close()
		<-served
		return err
	}
	select {
	case <-ctx.Done():
	case err := <-served:
		return err
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
