package pipeline

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/edgecache/edgecache/cmd/internal/llmsim"
)

// heapInUse is the live heap after two full collections.
func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// TestCompletedStreamsReleaseTheirBuffers: a stream that has ended keeps
// nothing alive. Each stream's events (about 0.5 MB here) used to stay
// reachable from its stall timer until the stream idle timeout fired (60 s by
// default; an hour here, so only a leak can keep them).
func TestCompletedStreamsReleaseTheirBuffers(t *testing.T) {
	e := newEdge(t, edgeOpts{sim: llmsim.Config{AnswerTokens: 3000}})
	e.p.cfg.StreamIdleTimeout = time.Hour
	stream := func(i int) int {
		// no-store: nothing is cached or kept as a recent answer, so what
		// stays on the heap is what the call itself leaves behind.
		r := e.post("/v1/chat/completions", chat(fmt.Sprintf("heap %d", i), `"stream":true`), "Cache-Control", "no-store")
		if text, done, _ := sseText(t, r.body); r.status != 200 || !done || text == "" {
			t.Fatalf("stream %d: %d done=%v", i, r.status, done)
		}
		return len(r.body)
	}
	for i := range 5 { // warm pools and connections
		stream(i)
	}
	base := heapInUse()
	var streamed int
	for i := range 60 {
		streamed += stream(100 + i)
	}
	after := heapInUse()
	grew := int64(after) - int64(base)
	t.Logf("60 streams relayed %.1f MB; heap %.1f MB → %.1f MB (%+.2f MB)",
		float64(streamed)/1e6, float64(base)/1e6, float64(after)/1e6, float64(grew)/1e6)
	if grew > 1<<20 {
		t.Errorf("heap grew by %.1f MB after 60 completed streams, want < 1 MB", float64(grew)/1e6)
	}
}
