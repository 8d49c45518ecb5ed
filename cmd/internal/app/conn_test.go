package app

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgecache/edgecache/cmd/internal/llmsim"
)

// Connection hygiene of the real server (issue 12, item 5), with the
// server.* timeouts made small in its configuration file.

// connTestConfig is the configuration of the connection tests.
const connTestConfig = `server:
  read_header_timeout: 500ms
  read_timeout: 1s
  write_timeout: 2s
  idle_timeout: 700ms
`

// connMargin is how much later than its timeout a connection may be closed
// on a loaded test machine.
const connMargin = 2500 * time.Millisecond

func startConnTestEdgecache(t *testing.T, sim *llmsim.Running) (data, admin string) {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "edgecache.yaml")
	if err := os.WriteFile(cfg, []byte(connTestConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	return startEdgecache(t, sim.URL(), "--config", cfg)
}

// rawConn dials base ("http://host:port") with a deadline for the whole
// exchange.
func rawConn(t *testing.T, base string, d time.Duration) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(d))
	return c, bufio.NewReader(c)
}

// closedWithin reads from br until the server closes the connection and
// returns how long that took from start, and the answers read on the way.
// Our own deadline passing first fails the test.
func closedWithin(t *testing.T, br *bufio.Reader, start time.Time) (time.Duration, []*http.Response) {
	t.Helper()
	var answers []*http.Response
	for {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("the connection is still open after %v", time.Since(start))
			}
			return time.Since(start), answers
		}
		_, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		answers = append(answers, resp)
	}
}

func chatBody(prompt string, stream bool) string {
	return fmt.Sprintf(`{"model":"m","stream":%v,"messages":[{"role":"user","content":%q}]}`, stream, prompt)
}

// TestSlowAndIdleClients: a request body trickled at 1 byte per 0.3 s is
// answered 408 and its connection closed at read_timeout; connections that
// never send a request, and kept-alive ones that send no next request, are
// closed at read_header_timeout and idle_timeout, on both listeners.
func TestSlowAndIdleClients(t *testing.T) {
	sim, err := llmsim.Start(context.Background(), "127.0.0.1:0", llmsim.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	data, admin := startConnTestEdgecache(t, sim)

	// Slowloris body.
	body := chatBody("trickled", false)
	c, br := rawConn(t, data, 20*time.Second)
	start := time.Now()
	fmt.Fprintf(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", len(body))
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for i := 0; i < len(body); i++ {
			select {
			case <-stop:
				return
			case <-time.After(300 * time.Millisecond):
			}
			if _, err := c.Write([]byte{body[i]}); err != nil {
				return
			}
		}
	}()
	d, answers := closedWithin(t, br, start)
	if d < 900*time.Millisecond || d > time.Second+connMargin {
		t.Errorf("trickled body: closed after %v, want about read_timeout (1s)", d)
	}
	if len(answers) != 1 || answers[0].StatusCode != http.StatusRequestTimeout {
		t.Errorf("trickled body: %d answers %v, want one 408", len(answers), statuses(answers))
	}

	// Idle connections, several at once: fresh ones that send nothing, and
	// kept-alive ones after an answer, on both listeners.
	type idle struct {
		name    string
		br      *bufio.Reader
		start   time.Time
		timeout time.Duration
	}
	var conns []idle
	for i := range 4 {
		for _, base := range []string{data, admin} {
			c, br := rawConn(t, base, 20*time.Second)
			conns = append(conns, idle{fmt.Sprintf("fresh %s #%d", base, i), br, time.Now(), 500 * time.Millisecond})

			c, br = rawConn(t, base, 20*time.Second)
			path := "/v1/models"
			if base == admin {
				path = "/healthz"
			}
			fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", path)
			resp, err := http.ReadResponse(br, nil)
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("GET %s%s: %v %v", base, path, resp, err)
			}
			_, _ = io.ReadAll(resp.Body)
			conns = append(conns, idle{fmt.Sprintf("kept-alive %s #%d", base, i), br, time.Now(), 700 * time.Millisecond})
		}
	}
	for _, ic := range conns {
		d, answers := closedWithin(t, ic.br, ic.start)
		if d > ic.timeout+connMargin {
			t.Errorf("%s: closed after %v, want about %v", ic.name, d, ic.timeout)
		}
		if len(answers) > 1 || len(answers) == 1 && answers[0].StatusCode == 200 {
			t.Errorf("%s: answered %v while idle", ic.name, statuses(answers))
		}
	}
}

// TestHalfCloseNeverEmpty200: a client that sends its request and
// half-closes (CloseWrite) is never answered 200 without an answer — the
// edge aborts (the connection closes with nothing written) — for
// streamed and non-streamed requests, and nothing empty is stored: the
// same requests, asked again normally, get whole answers.
func TestHalfCloseNeverEmpty200(t *testing.T) {
	sim, err := llmsim.Start(context.Background(), "127.0.0.1:0", llmsim.Config{TTFT: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	data, _ := startConnTestEdgecache(t, sim)

	var prompts []string
	for i := range 10 {
		for _, stream := range []bool{false, true} {
			prompt := fmt.Sprintf("half-closed %d stream=%v", i, stream)
			prompts = append(prompts, prompt)
			body := chatBody(prompt, stream)
			c, br := rawConn(t, data, 10*time.Second)
			fmt.Fprintf(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
			if err := c.(*net.TCPConn).CloseWrite(); err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(br)
			if err != nil || len(b) != 0 {
				head, _, _ := strings.Cut(string(b), "\r\n")
				t.Errorf("%q: read %d bytes (%q), %v; want the connection closed with nothing written", prompt, len(b), head, err)
			}
		}
	}
	for _, prompt := range prompts {
		resp, err := http.Post(data+"/v1/chat/completions", "application/json", strings.NewReader(chatBody(prompt, false)))
		if err != nil {
			t.Fatal(err)
		}
		var v struct {
			Choices []struct{ Message struct{ Content string } }
		}
		err = json.NewDecoder(resp.Body).Decode(&v)
		resp.Body.Close()
		if resp.StatusCode != 200 || err != nil || len(v.Choices) != 1 || v.Choices[0].Message.Content == "" {
			t.Errorf("%q asked again: %d (%s) %+v %v; want a whole answer", prompt, resp.StatusCode, resp.Header.Get("Cache-Status"), v, err)
		}
	}
}

// TestSmuggledRequestNotServed: a request with both Content-Length and
// Transfer-Encoding is answered by its chunked body and its connection
// closed, so a request hidden after that body is never served.
func TestSmuggledRequestNotServed(t *testing.T) {
	sim, err := llmsim.Start(context.Background(), "127.0.0.1:0", llmsim.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	data, _ := startConnTestEdgecache(t, sim)

	body := chatBody("smuggler", false)
	c, br := rawConn(t, data, 10*time.Second)
	fmt.Fprintf(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"+
		"%x\r\n%s\r\n0\r\n\r\nGET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n", len(body), body)
	_, answers := closedWithin(t, br, time.Now())
	if len(answers) != 1 || answers[0].StatusCode != 200 || !answers[0].Close {
		t.Fatalf("answers %v, want one 200 with Connection: close", statuses(answers))
	}

	// The control: without Transfer-Encoding the same bytes are two
	// requests on a kept-alive connection, both served.
	c, br = rawConn(t, data, 10*time.Second)
	fmt.Fprintf(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"+
		"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", len(body), body)
	if _, answers := closedWithin(t, br, time.Now()); len(answers) != 2 {
		t.Fatalf("control: answers %v, want two", statuses(answers))
	}
}

func statuses(rs []*http.Response) []int {
	out := make([]int, len(rs))
	for i, r := range rs {
		out[i] = r.StatusCode
	}
	return out
}
