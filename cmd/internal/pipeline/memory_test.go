package pipeline

import (
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/edgecache/edgecache/cache/semantic"
)

// TestSemanticPointsKeepNoRequestBody: an indexed point keeps its prompt,
// not the request it came in. The parser's strings are views of the body
// (no copy of a large body), so a point holding one kept the whole body:
// 40 requests with 200 KB system prompts kept about 8 MB after GC, until
// their points left the index. The bound is a quarter of a body per
// request (2 MB over 40): what a request rightly leaves behind (its answer,
// point, vector, cache entries, journal and metric state) measured about
// 10-30 KB on 2 cores, under CI's noise, while a kept body is 200 KB. Not a
// timing test: the heap is read after a full GC.
func TestSemanticPointsKeepNoRequestBody(t *testing.T) {
	e, _, _ := newSemanticEdge(t)
	const n, size = 40, 200 << 10
	ask := func(i int) {
		t.Helper()
		// A distinct system prompt each time: its own context, partition
		// and key.
		system := fmt.Sprintf("Request %d. ", i) + strings.Repeat("You are a careful assistant. ", size/28)
		body := `{"model":"sim-1","messages":[{"role":"system","content":` + quote(system) + `},` +
			`{"role":"user","content":` + quote(fmt.Sprintf("What is question number %d about?", i)) + `}]}`
		if r := e.post("/v1/chat/completions", body, "Authorization", "Bearer sk-a"); r.status != 200 {
			t.Fatalf("request %d: %d %s", i, r.status, r.body)
		}
	}
	heap := func() uint64 {
		runtime.GC()
		runtime.GC() // the second also empties the sync.Pools the first moved aside
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	// Warm up: pools, connections and buffers sized for such bodies.
	for i := range 3 {
		ask(-1 - i)
	}
	e.waitIndexed()
	base := heap()
	for i := range n {
		ask(i)
	}
	e.waitIndexed()
	if pts := e.p.sem.cfg.Index.(*flakyIndex).Index.(*semantic.Embedded).Stats().Points; pts < n {
		t.Fatalf("%d points indexed, want at least %d", pts, n)
	}
	after := heap()
	grown := int64(after) - int64(base)
	t.Logf("heap after GC: %.2f MB before, %.2f MB after %d × %d KB prompts (%+.2f MB, %d B per request)",
		float64(base)/(1<<20), float64(after)/(1<<20), n, size>>10, float64(grown)/(1<<20), grown/n)
	if grown >= int64(n)*size/4 {
		t.Errorf("heap grew %.2f MB over %d requests with %d KB prompts: the index keeps request bodies", float64(grown)/(1<<20), n, size>>10)
	}
}
