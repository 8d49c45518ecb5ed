package telemetry

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// countingWriter records each Write it gets, so a test sees how lines were
// grouped into writes.
type countingWriter struct {
	mu     sync.Mutex
	writes []string
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes = append(w.writes, string(p))
	return len(p), nil
}

func (w *countingWriter) snapshot() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.writes...)
}

// TestLogBufferBatchesWholeLines: 1,000 lines from 4 goroutines reach the
// writer in far fewer writes, every line whole and none lost, once closed.
func TestLogBufferBatchesWholeLines(t *testing.T) {
	w := new(countingWriter)
	b := NewLogBuffer(w, 4096, time.Hour) // no timer flush: only fill and Close
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 250 {
				fmt.Fprintf(b, "{\"g\":%d,\"i\":%03d,\"pad\":%q}\n", g, i, strings.Repeat("x", 40))
			}
		}()
	}
	wg.Wait()
	b.Close()
	writes := w.snapshot()
	all := strings.Join(writes, "")
	lines := strings.Split(strings.TrimSuffix(all, "\n"), "\n")
	if len(lines) != 1000 {
		t.Fatalf("%d lines written, want 1000", len(lines))
	}
	seen := map[string]bool{}
	for _, l := range lines {
		var g, i int
		var pad string
		if _, err := fmt.Sscanf(l, "{\"g\":%d,\"i\":%d,\"pad\":%q}", &g, &i, &pad); err != nil || len(pad) != 40 {
			t.Fatalf("line %q is not whole: %v", l, err)
		}
		seen[l] = true
	}
	if len(seen) != 1000 {
		t.Fatalf("%d distinct lines, want 1000", len(seen))
	}
	for _, wr := range writes {
		if !strings.HasSuffix(wr, "\n") || len(wr) > 4096 {
			t.Fatalf("a write of %d bytes does not end a line or exceeds the buffer", len(wr))
		}
	}
	if len(writes) > 40 { // 1,000 lines of ~70 bytes in 4 KiB writes: about 18
		t.Fatalf("%d writes for 1,000 lines: not batched", len(writes))
	}
}

// TestLogBufferFlushesOnItsInterval: a lone line is out within a few
// intervals without Close.
func TestLogBufferFlushesOnItsInterval(t *testing.T) {
	w := new(countingWriter)
	b := NewLogBuffer(w, 4096, 10*time.Millisecond)
	defer b.Close()
	b.Write([]byte("one line\n"))
	deadline := time.Now().Add(5 * time.Second)
	for len(w.snapshot()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the line was not flushed within 5 s at a 10 ms interval")
		}
		time.Sleep(time.Millisecond)
	}
	if got := w.snapshot(); got[0] != "one line\n" {
		t.Fatalf("flushed %q", got)
	}
}

// TestLogBufferLongLineAndAfterClose: a line larger than the buffer goes
// out whole, after what was buffered before it; after Close lines go
// straight through.
func TestLogBufferLongLineAndAfterClose(t *testing.T) {
	var out bytes.Buffer
	b := NewLogBuffer(&out, 64, time.Hour)
	b.Write([]byte("short\n"))
	long := strings.Repeat("y", 200) + "\n"
	b.Write([]byte(long))
	if got := out.String(); got != "short\n"+long {
		t.Fatalf("after a long line: %q", got)
	}
	b.Close()
	b.Write([]byte("late\n"))
	if got := out.String(); !strings.HasSuffix(got, "late\n") {
		t.Fatalf("a line after Close was not written at once: %q", got)
	}
}
