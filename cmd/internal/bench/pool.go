package bench

// Scenario (i): pass-through (Cache-Control: no-store) as (d), but through
// an upstream pool of two llmsim targets (upstreams: with the default
// least_latency balance) instead of one upstream: what choosing a target
// per request costs. Both llmsims run on the load CPU, as (d)'s one does.
// Its ratio is against (d); the row fails when either target got less
// than a quarter of the measured requests (the pool was not balanced).

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// ScenarioPoolPassthrough is (i).
const ScenarioPoolPassthrough = "pool-pass-through"

// MinPoolPassthroughRatio: pass-through through a pool of two ≥ 90 % of
// pass-through to one upstream.
const MinPoolPassthroughRatio = 0.90

// minPoolShare is the least share of the measured requests each of the
// pool's two targets must get.
const minPoolShare = 0.25

// poolTargets is the goal of (i) at each count, when the results have its
// rows.
func poolTargets(rs []Result, conns []int) []Target {
	if !hasScenario(rs, ScenarioPoolPassthrough) {
		return nil
	}
	var ts []Target
	for _, c := range conns {
		v, ok := Ratio(rs, ScenarioPoolPassthrough, c)
		ts = append(ts, Target{Name: fmt.Sprintf("pool pass-through / pass-through @%d", c), Value: v, Limit: MinPoolPassthroughRatio,
			Unit: "ratio", Known: ok, Pass: ok && v >= MinPoolPassthroughRatio})
	}
	return ts
}

// poolConfig is edgecache's configuration for (i): one pool of the
// llmsims at addrs.
func poolConfig(addrs ...string) string {
	s := "upstreams:\n  - name: bench\n    balance: least_latency\n    targets:\n"
	for _, a := range addrs {
		s += fmt.Sprintf("      - {url: %q}\n", "http://"+a)
	}
	return s
}

// simChatCount reads an llmsim's chat completions counter (/_sim/stats).
func (r *runner) simChatCount(ctx context.Context, addr string) (int64, error) {
	st, err := simStats(ctx, r.client, "http://"+addr)
	return st[chatPath], err
}

// poolShares observes a measured run: finish fails the row when a target
// got less than minPoolShare of the requests the two got.
func (r *runner) poolShares(sims []string) observer {
	return func(ctx context.Context) (func(context.Context, *Result) error, error) {
		before := make([]int64, len(sims))
		for i, a := range sims {
			n, err := r.simChatCount(ctx, a)
			if err != nil {
				return nil, err
			}
			before[i] = n
		}
		return func(ctx context.Context, _ *Result) error {
			got := make([]int64, len(sims))
			var total int64
			for i, a := range sims {
				n, err := r.simChatCount(ctx, a)
				if err != nil {
					return err
				}
				got[i] = n - before[i]
				total += got[i]
			}
			for i, n := range got {
				if total == 0 || float64(n) < minPoolShare*float64(total) {
					return fmt.Errorf("target %d of the pool got %d of %d upstream requests (under %.0f %%): not balanced", i, n, total, 100*minPoolShare)
				}
			}
			return nil
		}, nil
	}
}

// scenarioPoolPassthrough is (i).
func (r *runner) scenarioPoolPassthrough(ctx context.Context) ([]Result, error) {
	var sims []string
	var stops []func() error
	stop := func() error {
		var errs []error
		for _, s := range stops {
			errs = append(errs, s())
		}
		return errors.Join(errs...)
	}
	for range 2 {
		addr, p, err := r.startLLMSim(ctx, loadCPU)
		if err != nil {
			return nil, errors.Join(err, stop())
		}
		sims, stops = append(sims, addr), append(stops, func() error { return p.stop(10 * time.Second) })
	}
	cfg := filepath.Join(r.dir, "pool.yaml")
	if err := os.WriteFile(cfg, []byte(poolConfig(sims...)), 0o644); err != nil {
		return nil, errors.Join(err, stop())
	}
	addr, _, ec, err := r.startEdgecacheArgs(ctx, "--config", cfg)
	if err != nil {
		return nil, errors.Join(err, stop())
	}
	stops = append([]func() error{func() error { return ec.stop(10 * time.Second) }}, stops...)
	url := "http://" + addr + chatPath
	rows := r.measure(ctx, ScenarioPoolPassthrough, url, r.scripts[true], func(ctx context.Context) error {
		a, err := r.post(ctx, url, true)
		if err != nil {
			return err
		}
		if !isBypass(a.cacheStatus) {
			return fmt.Errorf("not a pass-through: Cache-Status %q, want %q", a.cacheStatus, bypassCacheStatus)
		}
		return nil
	}, r.poolShares(sims))
	return rows, stop()
}
