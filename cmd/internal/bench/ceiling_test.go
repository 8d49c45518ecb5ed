package bench

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

const cachedAnswer = `{"id":"chatcmpl-sim-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Paris"},"finish_reason":"stop"}]}`

func checkCeilingAnswer(t *testing.T, resp *http.Response, want string) {
	t.Helper()
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Errorf("status %d, want 200", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	if cl := resp.Header.Get("Content-Length"); cl != strconv.Itoa(len(want)) {
		t.Errorf("Content-Length %q, want %d", cl, len(want))
	}
	if string(body) != want {
		t.Errorf("body %q, want %q", body, want)
	}
}

func TestCeilingHandler(t *testing.T) {
	srv := httptest.NewServer(CeilingHandler([]byte(cachedAnswer)))
	defer srv.Close()
	// Any method and path, with or without a body, gets the same bytes; the
	// keep-alive connection is reused, so the request body must be drained.
	for i := 0; i < 3; i++ {
		resp, err := srv.Client().Post(srv.URL+chatPath, "application/json", strings.NewReader(ChatBody))
		if err != nil {
			t.Fatal(err)
		}
		checkCeilingAnswer(t, resp, cachedAnswer)
	}
	resp, err := srv.Client().Get(srv.URL + "/anything")
	if err != nil {
		t.Fatal(err)
	}
	checkCeilingAnswer(t, resp, cachedAnswer)
}

// TestCeilingCommand runs `edgebench ceiling` on a real socket, as the
// orchestrator does, and stops it through its context.
func TestCeilingCommand(t *testing.T) {
	bodyFile := filepath.Join(t.TempDir(), "body.json")
	if err := os.WriteFile(bodyFile, []byte(cachedAnswer), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- Main(ctx, "edgebench", []string{"ceiling", "--listen", "127.0.0.1:0", "--body", bodyFile}, pw, io.Discard)
		pw.Close()
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatalf("reading the listening line: %v", err)
	}
	go io.Copy(io.Discard, pr)
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "edgebench ceiling listening on ")
	if !ok {
		t.Fatalf("unexpected first line %q", line)
	}
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Post("http://"+addr+chatPath, "application/json", strings.NewReader(ChatBody))
	if err != nil {
		t.Fatal(err)
	}
	checkCeilingAnswer(t, resp, cachedAnswer)
	client.CloseIdleConnections()

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("ceiling returned %v after cancel, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ceiling did not stop after cancel")
	}
}

func TestCeilingFlags(t *testing.T) {
	ctx := context.Background()
	if err := Main(ctx, "edgebench", []string{"ceiling", "--listen", "127.0.0.1:0"}, io.Discard, io.Discard); err == nil ||
		!strings.Contains(err.Error(), "--body") {
		t.Errorf("without --body: %v", err)
	}
	missing := filepath.Join(t.TempDir(), "nope.json")
	if err := Main(ctx, "edgebench", []string{"ceiling", "--body", missing}, io.Discard, io.Discard); err == nil {
		t.Error("a missing body file is accepted")
	}
	for _, sub := range []string{"ceiling", "proxy"} {
		if err := Main(ctx, "edgebench", []string{sub, "-h"}, io.Discard, io.Discard); err != nil {
			t.Errorf("%s -h: %v, want success", sub, err)
		}
		if err := Main(ctx, "edgebench", []string{sub, "--listen", "127.0.0.1:0", "stray"}, io.Discard, io.Discard); err == nil ||
			!strings.Contains(err.Error(), "unexpected arguments") {
			t.Errorf("%s with a stray argument: %v", sub, err)
		}
	}
}

// The reference proxy forwards method, path, body and end-to-end headers,
// and returns the upstream's status, headers and body; hop-by-hop headers
// stay on their own hop.
func TestProxyHandler(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Seen", r.Method+" "+r.URL.Path+" "+r.Header.Get("Authorization")+" keep-alive="+r.Header.Get("Keep-Alive"))
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusTeapot)
		_, _ = w.Write(append([]byte("echo:"), b...))
	}))
	defer up.Close()
	u, _ := url.Parse(up.URL)
	srv := httptest.NewServer(ProxyHandler(u, http.DefaultTransport))
	defer srv.Close()
	for range 2 {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+chatPath, strings.NewReader(ChatBody))
		req.Header.Set("Authorization", "Bearer sk-x")
		req.Header.Set("Keep-Alive", "timeout=5")
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusTeapot || string(b) != "echo:"+ChatBody {
			t.Fatalf("got %d %q, want 418 and the echoed body", resp.StatusCode, b)
		}
		if got, want := resp.Header.Get("X-Seen"), "POST "+chatPath+" Bearer sk-x keep-alive="; got != want {
			t.Errorf("upstream saw %q, want %q", got, want)
		}
	}
	var out bytes.Buffer
	if err := proxyMain(context.Background(), []string{"--upstream", "ftp://x"}, &out, &out); err == nil {
		t.Error("proxy --upstream ftp://x: want an error")
	}
}
