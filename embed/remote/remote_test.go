package remote

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgecache/edgecache/embed"
)

// service is a minimal OpenAI-compatible embeddings endpoint (the end-to-end
// tests under cmd/ use llmsim; packages outside cmd/ cannot import it).
type service struct {
	srv   *httptest.Server
	calls atomic.Int64
	mode  atomic.Value // "ok", "fail", "hang"
}

func newService(t *testing.T, dim int) *service {
	s := &service{}
	s.mode.Store("ok")
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.calls.Add(1)
		body, _ := io.ReadAll(r.Body) // a read body lets the server notice a client hang-up
		switch s.mode.Load() {
		case "fail":
			http.Error(w, `{"error":{"message":"down"}}`, 503)
			return
		case "hang":
			<-r.Context().Done()
			return
		}
		var req request
		if err := json.Unmarshal(body, &req); err != nil || r.URL.Path != "/v1/embeddings" {
			http.Error(w, "bad", 400)
			return
		}
		var resp response
		for i, in := range req.Input {
			v := make([]float32, dim)
			for j := range v {
				v[j] = float32(len(in)+j%7) + 1
			}
			resp.Data = append(resp.Data, struct {
				Index     int       `json:"index"`
				Embedding []float32 `json:"embedding"`
			}{i, v})
		}
		_ = json.NewEncoder(w).Encode(resp)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func TestRemoteAgainstLLMSim(t *testing.T) {
	sim := newService(t, 64)
	e, err := New(Config{URL: sim.srv.URL, Model: "sim-embed-1", Timeout: time.Second, FailureThreshold: 2, OpenFor: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	vs, err := e.Embed(context.Background(), []string{"aa", "b", "aa"})
	if err != nil {
		t.Fatal(err)
	}
	if e.Dim() != 64 || len(vs) != 3 || len(vs[0]) != 64 {
		t.Fatalf("dim %d, %d vectors", e.Dim(), len(vs))
	}
	if d := embed.Dot(vs[0], vs[2]); d < 0.9999 {
		t.Errorf("same text, cosine %v", d)
	}
	if d := embed.Dot(vs[0], vs[0]); d < 0.9999 || d > 1.0001 {
		t.Errorf("not normalised: %v", d)
	}
	// The service fails: errors wrap ErrUnavailable and, after the
	// threshold, the breaker answers without calling.
	sim.mode.Store("fail")
	for range 2 {
		if _, err := e.Embed(context.Background(), []string{"x"}); !errors.Is(err, embed.ErrUnavailable) {
			t.Fatalf("err = %v, want ErrUnavailable", err)
		}
	}
	before := sim.calls.Load()
	start := time.Now()
	if _, err := e.Embed(context.Background(), []string{"x"}); !errors.Is(err, embed.ErrUnavailable) {
		t.Fatalf("open breaker: err = %v", err)
	}
	if after := sim.calls.Load(); after != before {
		t.Errorf("open breaker still called the service (%d → %d)", before, after)
	}
	if d := time.Since(start); d > 50*time.Millisecond {
		t.Errorf("open breaker took %v", d)
	}
}

func TestRemoteDeadline(t *testing.T) {
	sim := newService(t, 8)
	sim.mode.Store("hang")
	e, _ := New(Config{URL: sim.srv.URL + "/v1", Model: "m", Timeout: 100 * time.Millisecond})
	start := time.Now()
	_, err := e.Embed(context.Background(), []string{"x"})
	if !errors.Is(err, embed.ErrUnavailable) || time.Since(start) > 2*time.Second {
		t.Errorf("hung service: err %v after %v", err, time.Since(start))
	}
	// Nothing listening: also ErrUnavailable.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	e2, _ := New(Config{URL: "http://" + addr, Model: "m"})
	if _, err := e2.Embed(context.Background(), []string{"x"}); !errors.Is(err, embed.ErrUnavailable) {
		t.Errorf("dead service: %v", err)
	}
}
