package server

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"testing"
	"time"
)

// serve runs NewHTTPServer(h, l) on a loopback port and returns its
// address; the server is closed at cleanup.
func serve(t *testing.T, h http.Handler, l Limits) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := NewHTTPServer(h, l, slog.New(slog.DiscardHandler))
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	return ln.Addr().String()
}

// dial opens a raw connection with a deadline for the whole exchange.
func dial(t *testing.T, addr string, d time.Duration) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(d))
	return c, bufio.NewReader(c)
}

// readAll reads answers from br until the connection ends, and reports
// them and whether the server closed the connection (not our deadline).
func readAll(t *testing.T, br *bufio.Reader, req *http.Request) (answers []string, closed bool) {
	t.Helper()
	for {
		resp, err := http.ReadResponse(br, req)
		if err != nil {
			var ne net.Error
			return answers, !(errors.As(err, &ne) && ne.Timeout())
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		answers = append(answers, fmt.Sprintf("%d %s", resp.StatusCode, b))
	}
}

// echoRequest answers the request's path, after reading its body.
var echoRequest = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	fmt.Fprintf(w, "%s %s body=%q", r.Method, r.URL.Path, b)
})

// TestSmuggling: a request with both Content-Length and Transfer-Encoding
// is framed by Transfer-Encoding (net/http) and the connection is closed
// after its answer (protect, RFC 9112 §6.1), so bytes after its chunked
// body are never served as a request of their own. What net/http does on
// its own with the other framings is pinned too.
func TestSmuggling(t *testing.T) {
	addr := serve(t, echoRequest, Limits{ReadHeaderTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second})
	smuggled := "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
	for _, tc := range []struct {
		name, req string
		want      []string
	}{
		{"CL.TE", "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n" + smuggled,
			[]string{`200 POST /a body="abc"`}},
		{"TE.CL", "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 60\r\n\r\n3\r\nabc\r\n0\r\n\r\n" + smuggled,
			[]string{`200 POST /a body="abc"`}},
		{"chunked alone", "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n" + smuggled,
			[]string{`200 POST /a body="abc"`}},
		{"HTTP/1.0 TE+CL keep-alive", "POST /a HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc" + smuggled,
			[]string{`200 POST /a body="abc"`}},
		// net/http itself: an unknown coding is 501, two lengths are 400,
		// and the connection is closed.
		{"TE gzip", "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 3\r\n\r\nabc" + smuggled,
			[]string{"501 Unsupported transfer encoding"}},
		{"CL.CL", "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 40\r\n\r\nabc" + smuggled,
			[]string{"400 400 Bad Request"}},
		// The control: Content-Length alone keeps the connection, and the
		// next request on it is served.
		{"CL alone (keep-alive)", "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc" + smuggled + "GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
			[]string{`200 POST /a body="abc"`, `200 GET /smuggled body=""`, `200 GET /last body=""`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, br := dial(t, addr, 5*time.Second)
			if _, err := io.WriteString(c, tc.req); err != nil {
				t.Fatal(err)
			}
			got, closed := readAll(t, br, nil)
			if !closed {
				t.Errorf("the connection is still open after %d answers", len(got))
			}
			if len(got) != len(tc.want) {
				t.Fatalf("answers %q, want %q", got, tc.want)
			}
			for i := range got {
				if !strings.HasPrefix(got[i], tc.want[i]) {
					t.Errorf("answer %d: %q, want %q", i, got[i], tc.want[i])
				}
			}
		})
	}
}

// TestNoEmptyAnswer: a handler that returns without writing never yields
// net/http's empty 200. A client that half-closed after sending (net/http
// cancels the request's context) gets nothing: the connection is closed.
// Otherwise the answer is a 500 in the OpenAI shape.
func TestNoEmptyAnswer(t *testing.T) {
	addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		if r.URL.Path == "/wait" {
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		}
		// Nothing written, as a handler that saw its client leave.
	}), Limits{ReadHeaderTimeout: 5 * time.Second})

	for i := range 5 {
		c, br := dial(t, addr, 5*time.Second)
		fmt.Fprintf(c, "POST /wait HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
		if err := c.(*net.TCPConn).CloseWrite(); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		b, err := io.ReadAll(br)
		if err != nil || len(b) != 0 {
			t.Fatalf("half-close %d: read %q, %v; want the connection closed with nothing written", i, b, err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("half-close %d: aborted after %v, want at once", i, d)
		}
	}

	resp, err := http.Post("http://"+addr+"/quiet", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusInternalServerError || !strings.Contains(string(b), `"code":"internal_error"`) {
		t.Errorf("a handler that wrote nothing to a present client: %d %s, want 500 internal_error", resp.StatusCode, b)
	}
}

// TestWriteDeadlines: a non-streamed answer has write_timeout from its
// first byte; a stream gets it for each write, so it may run far longer
// than the timeout; a deadline never outlives its answer on a keep-alive
// connection.
func TestWriteDeadlines(t *testing.T) {
	const wt = 400 * time.Millisecond
	written := make(chan error, 1)
	addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/stream": // 12 events, 100 ms apart: three times the timeout
			// An event stream, each event larger than net/http's buffer so
			// that it is written without a flush.
			w.Header().Set("Content-Type", "text/event-stream")
			for i := range 12 {
				if _, err := fmt.Fprintf(w, "data: %d %s\n\n", i, strings.Repeat("x", 8<<10)); err != nil {
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
		case "/flushed": // the same, in small pieces the handler flushes
			w.Header().Set("Content-Type", "application/x-ndjson")
			rc := http.NewResponseController(w)
			for i := range 12 {
				fmt.Fprintf(w, "{\"data\": %d}\n", i)
				if err := rc.Flush(); err != nil {
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
		case "/slow": // answered after twice the timeout
			time.Sleep(2 * wt)
			fmt.Fprint(w, "slow")
		case "/big": // more than the client will ever read
			w.Header().Set("Content-Type", "application/json")
			_, err := w.Write(make([]byte, 64<<20))
			written <- err
		case "/big-stream":
			w.Header().Set("Content-Type", "text/event-stream")
			var err error
			for err == nil {
				_, err = w.Write(make([]byte, 1<<20))
			}
			written <- err
		default:
			fmt.Fprint(w, "ok")
		}
	}), Limits{ReadHeaderTimeout: 5 * time.Second, WriteTimeout: wt})

	// One keep-alive connection: a quick answer, streams outliving the
	// timeout, then an answer that comes later than the timeout after the
	// previous one's deadline was set.
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}, Timeout: 10 * time.Second}
	defer hc.CloseIdleConnections()
	for i, path := range []string{"/ok", "/stream", "/flushed", "/slow"} {
		reused := false
		ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
			GotConn: func(ci httptrace.GotConnInfo) { reused = ci.Reused }})
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s: %d, %d bytes, then %v", path, resp.StatusCode, len(b), err)
		}
		if path == "/stream" && !strings.Contains(string(b), "data: 11 ") || path == "/flushed" && !strings.Contains(string(b), `{"data": 11}`) {
			t.Errorf("%s was cut after %d bytes", path, len(b))
		}
		if i > 0 && !reused {
			t.Errorf("%s: not on the kept-alive connection", path)
		}
	}

	// Clients that do not read: the handler's write fails once the timeout
	// has passed, for an answer and for a stream.
	for _, path := range []string{"/big", "/big-stream"} {
		c, br := dial(t, addr, 10*time.Second)
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path)
		if _, err := br.Peek(1); err != nil { // the answer has begun
			t.Fatal(err)
		}
		start := time.Now()
		select {
		case err := <-written:
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				t.Errorf("%s: write ended with %v, want a timeout", path, err)
			}
			if d := time.Since(start); d > wt+2*time.Second {
				t.Errorf("%s: write cut after %v, want about %v", path, d, wt)
			}
		case <-time.After(wt + 5*time.Second):
			t.Fatalf("%s: a client that reads nothing held the answer past %v", path, wt+5*time.Second)
		}
		c.Close()
	}
}

// TestReadAndIdleTimeouts: a body trickled slower than read_timeout, a
// header trickled past read_header_timeout and a keep-alive connection
// idle past idle_timeout are closed within their timeouts; a body that
// does arrive in time is served.
func TestReadAndIdleTimeouts(t *testing.T) {
	l := Limits{ReadHeaderTimeout: 500 * time.Millisecond, ReadTimeout: 1 * time.Second, IdleTimeout: 700 * time.Millisecond, WriteTimeout: 5 * time.Second}
	addr := serve(t, echoRequest, l)
	const margin = 2 * time.Second

	// trickle sends s one byte at a time until the server closes the
	// connection, and returns how long that took and what was answered.
	trickle := func(c net.Conn, br *bufio.Reader, s string, every time.Duration) (time.Duration, []string) {
		start := time.Now()
		ctx, stop := context.WithCancel(context.Background())
		defer stop()
		go func() {
			for i := 0; i < len(s) && ctx.Err() == nil; i++ {
				if _, err := c.Write([]byte{s[i]}); err != nil {
					return
				}
				time.Sleep(every)
			}
		}()
		got, closed := readAll(t, br, nil)
		if !closed {
			t.Errorf("still open after %v", time.Since(start))
		}
		return time.Since(start), got
	}

	c, br := dial(t, addr, 10*time.Second)
	fmt.Fprint(c, "POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\n")
	d, got := trickle(c, br, strings.Repeat("x", 40), 100*time.Millisecond)
	if d < l.ReadTimeout-200*time.Millisecond || d > l.ReadTimeout+margin {
		t.Errorf("body trickle closed after %v, want about read_timeout %v", d, l.ReadTimeout)
	}
	for _, a := range got {
		if strings.HasPrefix(a, "200") {
			t.Errorf("body trickle answered %q", a)
		}
	}

	c, br = dial(t, addr, 10*time.Second)
	d, got = trickle(c, br, "GET /header HTTP/1.1\r\nHost: x\r\nX-Slow: 1234567890\r\n\r\n", 100*time.Millisecond)
	// (net/http answers a bare 400 to a partial header.)
	if d < l.ReadHeaderTimeout-200*time.Millisecond || d > l.ReadHeaderTimeout+margin || len(got) > 1 || len(got) == 1 && !strings.HasPrefix(got[0], "400 ") {
		t.Errorf("header trickle closed after %v with %q, want about read_header_timeout %v and at most a 400", d, got, l.ReadHeaderTimeout)
	}

	// A body sent at once, well within read_timeout, after a pause shorter
	// than it: served.
	c, br = dial(t, addr, 10*time.Second)
	fmt.Fprint(c, "POST /ok HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n")
	time.Sleep(300 * time.Millisecond)
	fmt.Fprint(c, "abc")
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("a body in time: %v %v", resp, err)
	}
	_, _ = io.ReadAll(resp.Body)
	// Then idle: closed after idle_timeout.
	start := time.Now()
	if b, err := br.ReadByte(); err == nil {
		t.Fatalf("idle connection sent %q", b)
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("idle connection still open after %v", time.Since(start))
	}
	if d := time.Since(start); d < l.IdleTimeout-200*time.Millisecond || d > l.IdleTimeout+margin {
		t.Errorf("idle connection closed after %v, want about idle_timeout %v", d, l.IdleTimeout)
	}
}

// TestTraceOutlivesWriteTimeout: an execution trace is written while it is
// taken, so it is a stream for the write deadlines: a trace longer than
// write_timeout arrives whole.
func TestTraceOutlivesWriteTimeout(t *testing.T) {
	e := newEcho(slog.New(slog.DiscardHandler))
	registerPprof(e.Group("/admin"))
	addr := serve(t, e, Limits{ReadHeaderTimeout: 5 * time.Second, WriteTimeout: 300 * time.Millisecond})
	hc := &http.Client{Timeout: 20 * time.Second}
	resp, err := hc.Get("http://" + addr + "/admin/debug/pprof/trace?seconds=2")
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || err != nil || !strings.HasPrefix(string(b), "go 1.") {
		t.Fatalf("trace: %d, %d bytes, then %v; want a whole trace", resp.StatusCode, len(b), err)
	}
}
