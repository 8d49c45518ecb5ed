// Package remote embeds texts with an OpenAI-compatible /v1/embeddings API
// (OpenAI, TEI, Ollama, vLLM, llmsim), under its own deadline and circuit
// breaker: a slow or failing embedding service costs a request at most the
// deadline once, and nothing while the breaker is open.
package remote

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/edgecache/edgecache/embed"
)

// Config configures the client.
type Config struct {
	// URL is the API's base URL, with or without /v1.
	URL string
	// Model is sent as "model"; it is also part of Name().
	Model string
	// APIKey, when set, is sent as a Bearer token.
	APIKey string
	// Dim is the expected vector length; 0 → learned from the first answer
	// (Dim() reports 0 until then).
	Dim int
	// Dimensions, when set, is sent as "dimensions" (OpenAI text-embedding-3).
	Dimensions int
	// Timeout bounds one call. Zero → 2s.
	Timeout time.Duration
	// FailureThreshold consecutive failures open the breaker. Zero → 5.
	FailureThreshold uint32
	// OpenFor is how long the breaker stays open before a probe. Zero → 10s.
	OpenFor time.Duration
	// Client overrides the HTTP client (tests).
	Client *http.Client
}

// Embedder is the remote embedder.
type Embedder struct {
	cfg Config
	url string
	hc  *http.Client
	cb  *gobreaker.CircuitBreaker[[]embed.Vector]
	dim atomic.Int64 // configured, or learned from the first answer
}

var _ embed.Embedder = (*Embedder)(nil)

// New returns a remote embedder.
func New(cfg Config) (*Embedder, error) {
	if !strings.HasPrefix(cfg.URL, "http://") && !strings.HasPrefix(cfg.URL, "https://") {
		return nil, fmt.Errorf("remote embedder url %q: want an http(s) URL", cfg.URL)
	}
	if cfg.Model == "" {
		return nil, errors.New("remote embedder: model is required")
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 2 * time.Second
	}
	if cfg.FailureThreshold == 0 {
		cfg.FailureThreshold = 5
	}
	if cfg.OpenFor == 0 {
		cfg.OpenFor = 10 * time.Second
	}
	base := strings.TrimSuffix(cfg.URL, "/")
	if !strings.HasSuffix(base, "/v1") {
		base += "/v1"
	}
	e := &Embedder{cfg: cfg, url: base + "/embeddings", hc: cfg.Client}
	if e.hc == nil {
		e.hc = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second}}
	}
	e.dim.Store(int64(cfg.Dim))
	e.cb = gobreaker.NewCircuitBreaker[[]embed.Vector](gobreaker.Settings{
		Name:        "embed-remote",
		MaxRequests: 1,
		Timeout:     cfg.OpenFor,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= cfg.FailureThreshold },
		// A canceled request says nothing about the service's health.
		IsSuccessful: func(err error) bool { return err == nil || errors.Is(err, context.Canceled) },
	})
	return e, nil
}

// Name implements embed.Embedder.
func (e *Embedder) Name() string { return "remote:" + e.cfg.Model }

// Dim implements embed.Embedder: the configured or learned length, 0 before
// the first answer when not configured.
func (e *Embedder) Dim() int { return int(e.dim.Load()) }

type request struct {
	Model          string   `json:"model"`
	Input          []string `json:"input"`
	EncodingFormat string   `json:"encoding_format"`
	Dimensions     int      `json:"dimensions,omitempty"`
}

type response struct {
	Data []struct {
		Index     int       `json:"index"`
		Embedding []float32 `json:"embedding"`
	} `json:"data"`
}

// Embed implements embed.Embedder. Failures, timeouts and an open breaker
// return errors wrapping embed.ErrUnavailable.
func (e *Embedder) Embed(ctx context.Context, texts []string) ([]embed.Vector, error) {
	if len(texts) == 0 {
		return nil, nil
	}
	vs, err := e.cb.Execute(func() ([]embed.Vector, error) { return e.call(ctx, texts) })
	if err != nil {
		return nil, fmt.Errorf("%w: %w", embed.ErrUnavailable, err)
	}
	return vs, nil
}

func (e *Embedder) call(ctx context.Context, texts []string) ([]embed.Vector, error) {
	ctx, cancel := context.WithTimeout(ctx, e.cfg.Timeout)
	defer cancel()
	body, err := json.Marshal(request{Model: e.cfg.Model, Input: texts, EncodingFormat: "float", Dimensions: e.cfg.Dimensions})
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if e.cfg.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+e.cfg.APIKey)
	}
	resp, err := e.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("embeddings API answered %d: %.200s", resp.StatusCode, b)
	}
	var r response
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("embeddings answer: %w", err)
	}
	if len(r.Data) != len(texts) {
		return nil, fmt.Errorf("embeddings answer has %d vectors for %d texts", len(r.Data), len(texts))
	}
	want := e.Dim()
	out := make([]embed.Vector, len(texts))
	for _, d := range r.Data {
		if d.Index < 0 || d.Index >= len(out) || out[d.Index] != nil {
			return nil, fmt.Errorf("embeddings answer has a bad index %d", d.Index)
		}
		if want == 0 {
			e.dim.CompareAndSwap(0, int64(len(d.Embedding)))
			want = e.Dim()
		}
		if len(d.Embedding) != want || want == 0 {
			return nil, fmt.Errorf("embedding of length %d, want %d", len(d.Embedding), want)
		}
		embed.Normalize(d.Embedding)
		out[d.Index] = d.Embedding
	}
	return out, nil
}
