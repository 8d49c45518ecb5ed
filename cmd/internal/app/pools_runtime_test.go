package app

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/edgecache/edgecache/cmd/internal/llmsim"
)

// TestPoolMaxConcurrency: two llmsim targets that answer 429 above three
// requests in flight, each capped at max_concurrency: 3, under ten clients.
// Every request is answered 200 (none reached a target over its cap: the
// caller's key is forwarded, so an llmsim 429 would reach the client), the
// in-flight count sampled at each llmsim never exceeds 3, and each target
// reaches it (the cap, not the load, bounded them).
func TestPoolMaxConcurrency(t *testing.T) {
	const limit = 3
	var sims []*llmsim.Running
	for range 2 {
		sim, err := llmsim.Start(context.Background(), "127.0.0.1:0",
			llmsim.Config{TTFT: 50 * time.Millisecond, TokensPerSec: 1e6, AnswerTokens: 4, MaxConcurrency: limit})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sim.Close() })
		sims = append(sims, sim)
	}
	data, _ := startPoolEdgecache(t, fmt.Sprintf(`upstreams:
  - name: capped
    balance: least_requests
    targets:
      - {url: %q, max_concurrency: %d}
      - {url: %q, max_concurrency: %d}
`, sims[0].URL(), limit, sims[1].URL(), limit))

	peak := make([]int, len(sims))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // samples the in-flight count each llmsim admitted
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
			for i, s := range sims {
				peak[i] = max(peak[i], s.Server.InFlight())
			}
		}
	}()
	failed := poolLoad(t, data, 150, 10, "capped")
	close(stop)
	wg.Wait()
	if failed > 0 {
		t.Errorf("%d of 150 requests not answered 200", failed)
	}
	for i, p := range peak {
		if p > limit {
			t.Errorf("target %d: %d requests in flight, cap %d", i, p, limit)
		}
		if p < limit {
			t.Errorf("target %d: peak %d in flight under 10 clients: the cap of %d was never reached", i, p, limit)
		}
		t.Logf("target %d: %d chat requests, peak %d in flight", i, chatCount(sims[i]), p)
	}
}
