package bench

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
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
}
