package app

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgecache/edgecache/cmd/internal/llmsim"
)

// startPoolSims starts n llmsim instances answering fast.
func startPoolSims(t *testing.T, n int) []*llmsim.Running {
	t.Helper()
	var sims []*llmsim.Running
	for range n {
		sim, err := llmsim.Start(context.Background(), "127.0.0.1:0", llmsim.Config{TTFT: 2 * time.Millisecond, TokensPerSec: 1e6, AnswerTokens: 4})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sim.Close() })
		sims = append(sims, sim)
	}
	return sims
}

// startPoolEdgecache runs edgecache with the YAML config yml (and no
// --upstream: the pools are the upstreams).
func startPoolEdgecache(t *testing.T, yml string) (data, admin string) {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "edgecache.yaml")
	if err := os.WriteFile(cfg, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	return startEdgecache(t, "", "--config", cfg)
}

func chatCount(s *llmsim.Running) int64 { return s.Server.Stats()["/v1/chat/completions"] }

var poolClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 30 * time.Second}

// poolPost sends one uncached chat request for model and returns its status
// and body.
func poolPost(data, path, model, prompt string) (int, string, error) {
	body := fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":%q}]}`, model, prompt)
	if path == "/v1/messages" {
		body = fmt.Sprintf(`{"model":%q,"max_tokens":16,"messages":[{"role":"user","content":%q}]}`, model, prompt)
	} else if path == "/v1/responses" {
		body = fmt.Sprintf(`{"model":%q,"input":%q}`, model, prompt)
	}
	req, err := http.NewRequest(http.MethodPost, data+path, strings.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer pool-test-key")
	resp, err := poolClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// poolLoad sends n distinct requests with conc workers; it returns the
// number that did not get a 200.
func poolLoad(t *testing.T, data string, n, conc int, tag string) int64 {
	t.Helper()
	var next, failed atomic.Int64
	var wg sync.WaitGroup
	var once sync.Once
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > int64(n) {
					return
				}
				code, body, err := poolPost(data, "/v1/chat/completions", "sim-1", fmt.Sprintf("%s question %d", tag, i))
				if err != nil || code != http.StatusOK {
					failed.Add(1)
					once.Do(func() { t.Logf("request %d: %d %v %.300s", i, code, err, body) })
				}
			}
		}()
	}
	wg.Wait()
	return failed.Load()
}

func poolYAML(name, balance, extra string, sims []*llmsim.Running, weights ...int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "upstreams:\n  - name: %s\n    balance: %s\n%s    targets:\n", name, balance, extra)
	for i, s := range sims {
		w := 1
		if i < len(weights) {
			w = weights[i]
		}
		fmt.Fprintf(&b, "      - {url: %q, weight: %d}\n", s.URL(), w)
	}
	return b.String()
}

// TestPoolBalanceShares: three healthy targets get their weight's share
// (±10 %) under round_robin, and equal shares under least_requests and
// least_latency.
func TestPoolBalanceShares(t *testing.T) {
	for _, tc := range []struct {
		balance string
		weights []int
	}{
		{"round_robin", []int{1, 2, 3}},
		{"least_requests", []int{1, 1, 1}},
		{"least_latency", []int{1, 1, 1}},
	} {
		t.Run(tc.balance, func(t *testing.T) {
			sims := startPoolSims(t, 3)
			data, _ := startPoolEdgecache(t, poolYAML("fleet", tc.balance, "", sims, tc.weights...))
			const n = 1500
			if failed := poolLoad(t, data, n, 6, tc.balance); failed > 0 {
				t.Fatalf("%d of %d requests failed", failed, n)
			}
			total := 0
			for _, w := range tc.weights {
				total += w
			}
			for i, s := range sims {
				want := float64(n) * float64(tc.weights[i]) / float64(total)
				if got := float64(chatCount(s)); got < want*0.9 || got > want*1.1 {
					t.Errorf("target %d (weight %d): %v requests, want %v ±10%%", i, tc.weights[i], got, want)
				}
			}
		})
	}
}

// TestPoolLeastLatencySlowTarget: a target whose time to first token grows
// by 500 ms gets under 15 % of the requests under least_latency.
func TestPoolLeastLatencySlowTarget(t *testing.T) {
	sims := startPoolSims(t, 3)
	slow := sims[2]
	c := slow.Server.Config()
	c.TTFT += 500 * time.Millisecond
	slow.Server.SetConfig(c)
	data, _ := startPoolEdgecache(t, poolYAML("fleet", "least_latency", "", sims))
	const n = 1500
	if failed := poolLoad(t, data, n, 6, "slow"); failed > 0 {
		t.Fatalf("%d of %d requests failed", failed, n)
	}
	if got := chatCount(slow); float64(got) >= 0.15*n {
		t.Errorf("slow target: %d of %d requests, want under 15%%", got, n)
	}
	t.Logf("shares: %d %d %d", chatCount(sims[0]), chatCount(sims[1]), chatCount(sims[2]))
}
