package bench

// Scenario (g): exact L1 hits of the Responses API through edgecache, the
// same setup as (b) with a POST /v1/responses body; its rate is compared
// with (b)'s (within 10 %).

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// ScenarioResponsesHit is (g).
const ScenarioResponsesHit = "responses-hit"

const responsesPath = "/v1/responses"

// ResponsesBody is what (g) sends: the question of ChatBody as a
// Responses request.
const ResponsesBody = `{"model":"sim-1","instructions":"You are a helpful assistant.","input":"What is the capital of France?","temperature":0}`

// MinResponsesHitRatio: Responses hits ≥ 90 % of chat hits.
const MinResponsesHitRatio = 0.90

// responsesTargets are (g)'s targets, when it ran.
func responsesTargets(rs []Result, conns []int) []Target {
	if !hasScenario(rs, ScenarioResponsesHit) {
		return nil
	}
	var ts []Target
	for _, c := range conns {
		v, ok := Ratio(rs, ScenarioResponsesHit, c)
		ts = append(ts, Target{Name: fmt.Sprintf("Responses exact hits / chat exact hits @%d", c), Value: v, Limit: MinResponsesHitRatio,
			Unit: "ratio", Known: ok, Pass: ok && v >= MinResponsesHitRatio})
	}
	return ts
}

// scenarioResponsesHit is (g): exact L1 hits of POST /v1/responses.
func (r *runner) scenarioResponsesHit(ctx context.Context) ([]Result, error) {
	script := filepath.Join(r.dir, "post-responses.lua")
	if err := os.WriteFile(script, []byte(LuaScript(ResponsesBody, nil)), 0o644); err != nil {
		return nil, err
	}
	addr, stop, err := r.edgecacheStack(ctx)
	if err != nil {
		return nil, err
	}
	url := "http://" + addr + responsesPath
	check := func(ctx context.Context) error {
		a, err := r.postBody(ctx, url, ResponsesBody, false)
		if err != nil {
			return err
		}
		if !isHit(a.cacheStatus) {
			return fmt.Errorf("not an L1 hit: Cache-Status %q, want %q", a.cacheStatus, hitCacheStatus)
		}
		return nil
	}
	if _, err := r.postBody(ctx, url, ResponsesBody, false); err != nil {
		return nil, errors.Join(fmt.Errorf("warming the key: %w", err), stop())
	}
	if err := waitHit(ctx, check); err != nil {
		return nil, errors.Join(err, stop())
	}
	rows := r.measure(ctx, ScenarioResponsesHit, url, script, check, nil)
	return rows, stop()
}

// waitHit retries check for about a second: the store may complete just
// after the first answer.
func waitHit(ctx context.Context, check func(context.Context) error) error {
	var err error
	for range 50 {
		if err = check(ctx); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return err
}
