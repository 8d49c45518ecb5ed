package llmsim

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

// discardWriter is a ResponseWriter that keeps only the status, so the
// benchmarks measure the handler rather than a recorder.
type discardWriter struct {
	h      http.Header
	status int
	n      int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) WriteHeader(code int)        { w.status = code }
func (w *discardWriter) Write(b []byte) (int, error) { w.n += len(b); return len(b), nil }
func (w *discardWriter) Flush()                      {}

// benchServe drives the handler with body on path, reusing the request.
func benchServe(b *testing.B, path, body string) {
	s := New(Config{})
	req := httptest.NewRequest(http.MethodPost, path, nil)
	rd := bytes.NewReader([]byte(body))
	w := &discardWriter{h: http.Header{}}
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		rd.Reset([]byte(body))
		req.Body = io.NopCloser(rd)
		clear(w.h)
		s.ServeHTTP(w, req)
		if w.status != http.StatusOK {
			b.Fatalf("status %d", w.status)
		}
	}
}

func BenchmarkChat(b *testing.B) {
	benchServe(b, "/v1/chat/completions", `{"model":"sim-1","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"What is the capital of France?"}]}`)
}

func BenchmarkChatStream(b *testing.B) {
	benchServe(b, "/v1/chat/completions", `{"model":"sim-1","stream":true,"messages":[{"role":"user","content":"What is the capital of France?"}]}`)
}

func BenchmarkEmbeddings(b *testing.B) {
	benchServe(b, "/v1/embeddings", `{"model":"sim-embed-1","input":"What is the capital of France?"}`)
}

// FuzzChat feeds arbitrary bodies to the chat endpoint: the answer is a
// 200 or a 400, always with a JSON body, never a panic.
func FuzzChat(f *testing.F) {
	for _, seed := range []string{
		`{"model":"m","messages":[{"role":"user","content":"hi"}]}`,
		`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url"}]}],"n":2,"max_tokens":3}`,
		`{"model":"m","messages":[{"role":"user","content":null}],"max_completion_tokens":1}`,
		`{"model":"m","messages":[{"role":"user","content":3}]}`,
		`{"model":"\u0000","messages":[]}`,
		`[]`, `null`, `{`, ``,
	} {
		f.Add(seed)
	}
	s := New(Config{AnswerTokens: 4})
	f.Fuzz(func(t *testing.T, body string) {
		w := httptest.NewRecorder()
		s.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/v1/chat/completions", bytes.NewReader([]byte(body))))
		if w.Code != http.StatusOK && w.Code != http.StatusBadRequest {
			t.Fatalf("status %d for %q", w.Code, body)
		}
		if !json.Valid(w.Body.Bytes()) {
			t.Fatalf("invalid JSON %q for %q", w.Body.String(), body)
		}
	})
}
