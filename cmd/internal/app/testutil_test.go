package app

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"
)

// Time limits of startEdgecache: how long edgecache may take to start
// serving, and to return once its context is canceled (its drain allows
// itself 30 s).
const (
	edgecacheStartTimeout = 30 * time.Second
	edgecacheStopTimeout  = 45 * time.Second
)

// listeningLine is what Run prints to stdout once both listeners are open.
var listeningLine = regexp.MustCompile(`^edgecache listening on (\S+) \(admin (\S+)\)$`)

// startEdgecache runs edgecache in-process through Run, as the program
// would, on loopback ports of its own choosing, and returns the base URLs
// of its data listener and its admin listener ("http://127.0.0.1:PORT",
// without a trailing slash).
//
// upstreamURL is passed as --upstream unless it is empty (for instance
// when extraArgs holds --sim, or the upstream comes from a --config file).
// extraArgs follow the defaults, so they may override --listen and
// --admin-listen too.
//
// It returns once Run has printed its "listening" line, and fails the test
// if Run returns or stays silent first. At cleanup it cancels Run's context,
// waits for Run to return and reports an error Run returned. edgecache's
// log (its stderr) is shown when the test has failed.
func startEdgecache(t testing.TB, upstreamURL string, extraArgs ...string) (dataURL, adminURL string) {
	t.Helper()
	dataURL, adminURL, _ = startEdgecacheLog(t, upstreamURL, extraArgs...)
	return dataURL, adminURL
}

// startEdgecacheLog is startEdgecache that also returns edgecache's log
// (its stderr) as it is written.
func startEdgecacheLog(t testing.TB, upstreamURL string, extraArgs ...string) (dataURL, adminURL string, log *edgecacheOutput) {
	t.Helper()
	args := []string{"--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--journal-dir", t.TempDir()}
	if os.Getenv("EDGECACHE_POLICY_FILE") == "" { // route changes must not leak between tests
		t.Setenv("EDGECACHE_POLICY_FILE", filepath.Join(t.TempDir(), "routes.json"))
	}
	if upstreamURL != "" {
		args = append(args, "--upstream", upstreamURL)
	}
	args = append(args, extraArgs...)

	ctx, cancel := context.WithCancel(context.Background())
	stdoutR, stdoutW := io.Pipe()
	stdout, stderr := new(edgecacheOutput), new(edgecacheOutput)

	runDone := make(chan struct{})
	var runErr error
	go func() {
		defer close(runDone)
		runErr = Run(ctx, args, stdoutW, stderr)
		_ = stdoutW.Close() // ends the reader below
	}()

	// Read stdout line by line for as long as Run writes to it, so Run never
	// blocks on the pipe; report the listening line's addresses once.
	type addrs struct{ data, admin string }
	listening := make(chan addrs, 1)
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(stdoutR)
		found := false
		for sc.Scan() {
			line := sc.Text()
			stdout.WriteString(line + "\n")
			if m := listeningLine.FindStringSubmatch(line); m != nil && !found {
				found = true
				listening <- addrs{data: m[1], admin: m[2]}
			}
		}
		_, _ = io.Copy(io.Discard, stdoutR) // a line too long for the scanner
	}()

	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case <-runDone:
		case <-time.After(edgecacheStopTimeout):
			t.Errorf("edgecache did not return within %v of its context being canceled", edgecacheStopTimeout)
			return
		}
		<-readDone
		if runErr != nil {
			t.Errorf("edgecache Run(%q) returned: %v", args, runErr)
		}
		if t.Failed() {
			t.Logf("edgecache stdout:\n%s\nedgecache stderr (log):\n%s", stdout.String(), stderr.tail(16<<10))
		}
	}
	t.Cleanup(stop)

	select {
	case a := <-listening:
		return "http://" + a.data, "http://" + a.admin, stderr
	case <-runDone:
		<-readDone
		stopped = true
		cancel()
		t.Fatalf("edgecache Run(%q) returned before printing its listening line (error: %v)\nstdout:\n%s\nstderr:\n%s",
			args, runErr, stdout.String(), stderr.tail(16<<10))
	case <-time.After(edgecacheStartTimeout):
		t.Fatalf("edgecache Run(%q) printed no listening line within %v\nstdout:\n%s\nstderr:\n%s",
			args, edgecacheStartTimeout, stdout.String(), stderr.tail(16<<10))
	}
	return "", "", stderr
}

// edgecacheOutput is a buffer that Run may write to while a test reads it.
type edgecacheOutput struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *edgecacheOutput) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *edgecacheOutput) WriteString(s string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.WriteString(s)
}

func (b *edgecacheOutput) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// tail returns the last n bytes at most, so a long log cannot drown the
// test's own messages.
func (b *edgecacheOutput) tail(n int) string {
	s := b.String()
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}
