package bench

// Scenario (h): exact L1 hits on Anthropic's Messages API (the default
// /v1/messages route), the same stack as (b), with the key in x-api-key as
// Anthropic's SDKs send it. Its ratio is against (b): Messages hits should
// be within 10 % of chat's.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
)

// ScenarioMessagesHit is (h).
const ScenarioMessagesHit = "messages-l1-hit"

// MinMessagesHitRatio: Messages hits ≥ 90 % of chat hits.
const MinMessagesHitRatio = 0.90

const messagesPath = "/v1/messages"

// MessagesBody is the request scenario (h) sends: ChatBody's prompt in the
// Messages shape.
const MessagesBody = `{"model":"sim-1","max_tokens":256,"system":"You are a helpful assistant.","messages":[{"role":"user","content":"What is the capital of France?"}],"temperature":0}`

// messagesHeaders are what an Anthropic SDK sends besides the body.
var messagesHeaders = map[string]string{"x-api-key": "sk-ant-edgebench", "anthropic-version": "2023-06-01"}

// messagesTargets is the goal of (h) at each count, when the results have
// its rows.
func messagesTargets(rs []Result, conns []int) []Target {
	if !hasScenario(rs, ScenarioMessagesHit) {
		return nil
	}
	var ts []Target
	for _, c := range conns {
		v, ok := Ratio(rs, ScenarioMessagesHit, c)
		ts = append(ts, Target{Name: fmt.Sprintf("Messages exact hits / chat exact hits @%d", c), Value: v, Limit: MinMessagesHitRatio,
			Unit: "ratio", Known: ok, Pass: ok && v >= MinMessagesHitRatio})
	}
	return ts
}

// postMessages sends MessagesBody with messagesHeaders; an answer other
// than 200 is an error.
func (r *runner) postMessages(ctx context.Context, url string) (answer, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(MessagesBody))
	if err != nil {
		return answer{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range messagesHeaders {
		req.Header.Set(k, v)
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		return answer{}, err
	}
	a := answer{status: resp.StatusCode, cacheStatus: resp.Header.Get("Cache-Status"), body: got}
	if a.status != http.StatusOK {
		return a, fmt.Errorf("POST %s: status %d: %.200s", url, a.status, got)
	}
	return a, nil
}

// scenarioMessagesHit is (h).
func (r *runner) scenarioMessagesHit(ctx context.Context) ([]Result, error) {
	script := filepath.Join(r.dir, "post-messages.lua")
	if err := os.WriteFile(script, []byte(LuaScript(MessagesBody, messagesHeaders)), 0o644); err != nil {
		return nil, err
	}
	addr, stop, err := r.edgecacheStack(ctx)
	if err != nil {
		return nil, err
	}
	url := "http://" + addr + messagesPath
	check := func(ctx context.Context) error {
		a, err := r.postMessages(ctx, url)
		if err != nil {
			return err
		}
		if !isHit(a.cacheStatus) {
			return fmt.Errorf("not an L1 hit: Cache-Status %q, want %q", a.cacheStatus, hitCacheStatus)
		}
		return nil
	}
	if _, err := r.postMessages(ctx, url); err != nil {
		return nil, errors.Join(fmt.Errorf("warming the key: %w", err), stop())
	}
	if err := waitHit(ctx, check); err != nil {
		return nil, errors.Join(err, stop())
	}
	rows := r.measure(ctx, ScenarioMessagesHit, url, script, check, nil)
	return rows, stop()
}
