package pipeline

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
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
	// Warm up: pools, connections and buffers sized for such bodies.
	for i := range 3 {
		ask(-1 - i)
	}
	e.waitIndexed()
	base := heapAfterGC()
	for i := range n {
		ask(i)
	}
	e.waitIndexed()
	if pts := e.p.sem.cfg.Index.(*flakyIndex).Index.(*semantic.Embedded).Stats().Points; pts < n {
		t.Fatalf("%d points indexed, want at least %d", pts, n)
	}
	after := heapAfterGC()
	grown := int64(after) - int64(base)
	t.Logf("heap after GC: %.2f MB before, %.2f MB after %d × %d KB prompts (%+.2f MB, %d B per request)",
		float64(base)/(1<<20), float64(after)/(1<<20), n, size>>10, float64(grown)/(1<<20), grown/n)
	if grown >= int64(n)*size/4 {
		t.Errorf("heap grew %.2f MB over %d requests with %d KB prompts: the index keeps request bodies", float64(grown)/(1<<20), n, size>>10)
	}
}

// TestOpenStreamsKeepNoRequestBody: an open stream lets go of its request
// body once it commits (upstreamCall.releaseRequest, releaseViews),
// whether it is relayed inline (no-store) or on a coalesced call's own
// goroutine (a cacheable request: the default). Before, the whole prompt
// stayed reachable until the stream's end: from the transport's copy of
// the request, the upstream request and the parsed request's views of the
// body. 16 streams with 512 KB system prompts are held open after their
// first token and the heap is read after a full GC: a kept body is 512 KB
// a stream; the bound, a quarter of that, leaves room for what an open
// stream rightly holds in this process (both ends' connection buffers, the
// relay, the call).
//
// The upstream is a few lines here rather than llmsim: llmsim keeps each
// request's body in a pooled buffer until its answer ends, and in this
// process that would be counted as the edge's.
func TestOpenStreamsKeepNoRequestBody(t *testing.T) {
	for _, c := range []struct {
		name, cacheControl string
	}{{"inline", "no-store"}, {"coalesced", ""}} {
		t.Run(c.name, func(t *testing.T) { openStreamsKeepNoBody(t, c.cacheControl) })
	}
}

func openStreamsKeepNoBody(t *testing.T, cacheControl string) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"sim-1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n")
		fmt.Fprint(w, "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"sim-1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Once\"}}]}\n\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done() // open until the edge hangs up
	}))
	defer up.Close()
	e := newEdge(t, edgeOpts{maxBody: 4 << 20, simURL: up.URL})
	const n, size = 16, 512 << 10
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	open := func(i int) *http.Response {
		t.Helper()
		system := fmt.Sprintf("Stream %d. ", i) + strings.Repeat("You are a careful assistant. ", size/28)
		body := `{"model":"sim-1","stream":true,"messages":[{"role":"system","content":` + quote(system) + `},` +
			`{"role":"user","content":"tell me a long story"}]}`
		// The client's own request must not keep the body either: it
		// lives in this process too.
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, e.url+"/v1/chat/completions", &onceReader{b: []byte(body)})
		req.ContentLength = int64(len(body))
		req.Header.Set("Content-Type", "application/json")
		if cacheControl != "" {
			req.Header.Set("Cache-Control", cacheControl)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("stream %d: status %d", i, resp.StatusCode)
		}
		br := bufio.NewReader(resp.Body)
		for { // up to the first token: the stream has committed
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("stream %d: %v", i, err)
			}
			if strings.Contains(line, `"content":"`) && !strings.Contains(line, `"content":""`) {
				return resp
			}
		}
	}
	// Warm up buffers and connections sized for such bodies.
	for i := range 2 {
		open(-1 - i).Body.Close()
	}
	base := heapAfterGC()
	var opened []*http.Response
	for i := range n {
		opened = append(opened, open(i))
	}
	after := heapAfterGC()
	grown := int64(after) - int64(base)
	t.Logf("heap after GC: %.2f MB before, %.2f MB with %d open streams of %d KB prompts (%+.2f MB, %d B per stream)",
		float64(base)/(1<<20), float64(after)/(1<<20), n, size>>10, float64(grown)/(1<<20), grown/n)
	if grown >= int64(n)*size/4 {
		t.Errorf("heap grew %.2f MB with %d open streams of %d KB prompts: open streams keep their request bodies", float64(grown)/(1<<20), n, size>>10)
	}
	for _, r := range opened {
		r.Body.Close()
	}
}

// onceReader reads b once and lets go of it at its end.
type onceReader struct{ b []byte }

func (r *onceReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		r.b = nil
		return 0, io.EOF
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	if len(r.b) == 0 {
		r.b = nil
	}
	return n, nil
}

// heapAfterGC is the live heap after a full collection. The second GC also
// empties the sync.Pools the first moved aside.
func heapAfterGC() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}
