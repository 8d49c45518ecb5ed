package app

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgecache/edgecache/cache/cachetest"
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

// adminSend makes an admin call with a JSON body and returns its status
// and answer.
func adminSend(t *testing.T, method, url, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// poolTargetStatus is one target of /admin/upstreams' pools.
type poolTargetStatus struct {
	Name          string `json:"name"`
	Weight        int    `json:"weight"`
	RuntimeWeight int    `json:"runtime_weight"`
	Drained       bool   `json:"drained"`
	UpdatedBy     string `json:"updated_by"`
}

func poolTargetsOf(t *testing.T, admin, pool string) map[string]poolTargetStatus {
	t.Helper()
	_, b := get(t, admin+"/admin/upstreams", "")
	var res struct {
		Pools []struct {
			Name    string             `json:"name"`
			Targets []poolTargetStatus `json:"targets"`
		} `json:"pools"`
	}
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatalf("/admin/upstreams: %v %s", err, b)
	}
	out := map[string]poolTargetStatus{}
	for _, p := range res.Pools {
		if p.Name == pool {
			for _, tg := range p.Targets {
				out[tg.Name] = tg
			}
		}
	}
	return out
}

// TestPoolDrainAcrossReplicas: two edgecache replicas on one redis-server
// share a pool of two llmsim targets. A request in flight on target "slow"
// when replica 1 drains it still finishes 200; replica 2 shows the drain
// (who, and the audit trail) within a second and sends it no new request
// while the other target serves all of them; a run-time weight set on
// replica 2 shows on replica 1 beside the configured one; undrained, the
// target gets traffic again. Unknown targets and bad bodies answer 404 and
// 400.
func TestPoolDrainAcrossReplicas(t *testing.T) {
	rds := cachetest.StartRedis(t)
	fast, err := llmsim.Start(context.Background(), "127.0.0.1:0", llmsim.Config{TTFT: 10 * time.Millisecond, TokensPerSec: 1e6, AnswerTokens: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = fast.Close() })
	slow, err := llmsim.Start(context.Background(), "127.0.0.1:0", llmsim.Config{TTFT: 700 * time.Millisecond, TokensPerSec: 1e6, AnswerTokens: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = slow.Close() })
	yml := fmt.Sprintf(`redis: {addrs: [%q]}
upstreams:
  - name: fleet
    balance: round_robin
    targets:
      - {name: fast, url: %q}
      - {name: slow, url: %q}
`, rds.Addr(), fast.URL(), slow.URL())
	data1, admin1 := startPoolEdgecache(t, yml)
	data2, admin2 := startPoolEdgecache(t, yml)

	// Two requests at once: round robin sends one to each target.
	var wg sync.WaitGroup
	codes := make([]int, 2)
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i], _, _ = poolPost(data1, "/v1/chat/completions", "sim-1", fmt.Sprintf("in flight %d", i))
		}()
	}
	waitWithin(t, 2*time.Second, func() bool { return slow.Server.InFlight() == 1 })
	if code, b := adminSend(t, http.MethodPut, admin1+"/admin/upstreams/fleet/targets/slow", `{"drain": true}`); code != http.StatusOK {
		t.Fatalf("drain: %d %s", code, b)
	}
	wg.Wait()
	if codes[0] != http.StatusOK || codes[1] != http.StatusOK {
		t.Errorf("requests in flight when the target was drained: %v, want 200s", codes)
	}

	waitWithin(t, time.Second, func() bool { return poolTargetsOf(t, admin2, "fleet")["slow"].Drained })
	if st := poolTargetsOf(t, admin2, "fleet")["slow"]; st.UpdatedBy != "local" {
		t.Errorf("replica 2 shows the drain by %q, want local (the loopback admin)", st.UpdatedBy)
	}
	before := chatCount(slow)
	if failed := poolLoad(t, data2, 30, 3, "drained"); failed > 0 {
		t.Errorf("%d of 30 requests failed with a target drained", failed)
	}
	if n := chatCount(slow) - before; n != 0 {
		t.Errorf("the drained target got %d of 30 requests from replica 2", n)
	}

	// The weight through the CLI, as an operator would.
	var out, errOut strings.Builder
	if err := Run(context.Background(), []string{"upstreams", "--admin", admin2, "weight", "fleet/fast", "3"}, &out, &errOut); err != nil {
		t.Fatalf("edgecache upstreams weight: %v %s", err, errOut.String())
	}
	waitWithin(t, time.Second, func() bool { return poolTargetsOf(t, admin1, "fleet")["fast"].RuntimeWeight == 3 })
	if st := poolTargetsOf(t, admin1, "fleet")["fast"]; st.Weight != 1 {
		t.Errorf("configured weight shown as %d, want 1", st.Weight)
	}
	out.Reset()
	if err := Run(context.Background(), []string{"upstreams", "--admin", admin1, "list"}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"TARGET", "fleet (round_robin)", "fast", "3 (configured 1)", "DRAINED", "local"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("edgecache upstreams list: no %q in\n%s", want, out.String())
		}
	}
	t.Logf("edgecache upstreams list:\n%s", out.String())
	_, b := get(t, admin1+"/admin/upstreams/audit", "")
	var audit struct {
		Audit []struct {
			Who, Action, Target string
			TargetAfter         struct {
				RuntimeWeight int  `json:"runtime_weight"`
				Drained       bool `json:"drained"`
			} `json:"target_after"`
		} `json:"audit"`
	}
	if err := json.Unmarshal(b, &audit); err != nil || len(audit.Audit) != 2 || audit.Audit[0].Target != "fleet/fast" ||
		audit.Audit[0].TargetAfter.RuntimeWeight != 3 || audit.Audit[1].Target != "fleet/slow" || !audit.Audit[1].TargetAfter.Drained ||
		audit.Audit[1].Who != "local" {
		t.Errorf("audit trail on replica 1: %v %s", err, b)
	}

	if code, b := adminSend(t, http.MethodPut, admin1+"/admin/upstreams/fleet/targets/slow", `{"drain": false}`); code != http.StatusOK {
		t.Fatalf("undrain: %d %s", code, b)
	}
	waitWithin(t, time.Second, func() bool { return !poolTargetsOf(t, admin2, "fleet")["slow"].Drained })
	before = chatCount(slow)
	if failed := poolLoad(t, data2, 8, 4, "undrained"); failed > 0 {
		t.Errorf("%d of 8 requests failed", failed)
	}
	if chatCount(slow) == before {
		t.Error("the undrained target got no request of 8 (weights 3:1)")
	}

	for _, tc := range []struct {
		path, body string
		want       int
	}{
		{"/admin/upstreams/fleet/targets/nope", `{"drain": true}`, http.StatusNotFound},
		{"/admin/upstreams/other/targets/slow", `{"drain": true}`, http.StatusNotFound},
		{"/admin/upstreams/fleet/targets/slow", `{"weight": 0}`, http.StatusBadRequest},
		{"/admin/upstreams/fleet/targets/slow", `{"drian": true}`, http.StatusBadRequest},
	} {
		if code, b := adminSend(t, http.MethodPut, admin1+tc.path, tc.body); code != tc.want {
			t.Errorf("PUT %s %s: %d %s, want %d", tc.path, tc.body, code, b, tc.want)
		}
	}
}

// waitWithin polls cond for up to within: propagation is promised within a
// second.
func waitWithin(t *testing.T, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestPoolModelList: with models: routed, GET /v1/models lists the exact
// entries (owned by their pool), the glob entries' renamed names (with the
// upstream's created and owner, as the pool lists the model they rename
// to) and what each glob's pool lists that matches the glob; a pool that
// cannot be asked is named in X-Edgecache-Models-Partial; the pools' lists
// are kept (a second listing asks no upstream); GET /v1/models/{id}
// answers a listed model and 404 model_not_found for another.
func TestPoolModelList(t *testing.T) {
	sims := startPoolSims(t, 2, 10*time.Millisecond)
	data, _ := startPoolEdgecache(t, fmt.Sprintf(`upstreams:
  - name: fleet
    balance: round_robin
    targets:
      - {url: %q, models: {deepseek-reasoner: sim-1, deepseek-chat: sim-1}}
  - name: other
    balance: round_robin
    targets:
      - {url: %q}
  - name: dead
    balance: round_robin
    targets:
      - {url: "http://127.0.0.1:1"}
models:
  - {match: qwen-max, upstream: other}
  - {match: "deepseek-*", upstream: fleet}
  - {match: "sim-*", upstream: other}
  - {match: "dead-*", upstream: dead}
`, sims[0].URL(), sims[1].URL()))
	list := func() (http.Header, []map[string]any) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, data+"/v1/models", nil)
		req.Header.Set("Authorization", "Bearer pool-test-key")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var res struct {
			Object string           `json:"object"`
			Data   []map[string]any `json:"data"`
		}
		b, _ := io.ReadAll(resp.Body)
		if err := json.Unmarshal(b, &res); err != nil || resp.StatusCode != http.StatusOK || res.Object != "list" {
			t.Fatalf("GET /v1/models: %d %v %s", resp.StatusCode, err, b)
		}
		return resp.Header, res.Data
	}
	h, models := list()
	var got []string
	for _, m := range models {
		got = append(got, fmt.Sprintf("%v/%v", m["id"], m["owned_by"]))
		if m["object"] != "model" || m["created"].(float64) <= 0 {
			t.Errorf("model entry %v: want object model and a created time", m)
		}
	}
	want := "qwen-max/other deepseek-chat/llmsim deepseek-reasoner/llmsim sim-1/llmsim sim-embed-1/llmsim"
	if strings.Join(got, " ") != want {
		t.Errorf("GET /v1/models: %s, want %s", strings.Join(got, " "), want)
	}
	if p := h.Get("X-Edgecache-Models-Partial"); p != "dead" {
		t.Errorf("X-Edgecache-Models-Partial %q, want dead", p)
	}
	asked := sims[0].Server.Stats()["/v1/models"] + sims[1].Server.Stats()["/v1/models"]
	if _, again := list(); len(again) != len(models) {
		t.Errorf("second listing: %d models, first %d", len(again), len(models))
	}
	if n := sims[0].Server.Stats()["/v1/models"] + sims[1].Server.Stats()["/v1/models"]; n != asked {
		t.Errorf("a second listing within the TTL asked the pools again (%d → %d calls)", asked, n)
	}
	code, b := get(t, data+"/v1/models/deepseek-chat", "")
	if code != http.StatusOK || !strings.Contains(string(b), `"id":"deepseek-chat"`) {
		t.Errorf("GET /v1/models/deepseek-chat: %d %s", code, b)
	}
	code, b = get(t, data+"/v1/models/gpt-4o", "")
	if code != http.StatusNotFound || !strings.Contains(string(b), "model_not_found") {
		t.Errorf("GET /v1/models/gpt-4o: %d %s, want 404 model_not_found", code, b)
	}
}

// TestReviewPagePools: the review page's Pools section lists each pool's
// targets with their state, and its form drains a target (303 back to the
// page, the drain in force, shown, and audited by the admin's name).
func TestReviewPagePools(t *testing.T) {
	sims := startPoolSims(t, 2, 10*time.Millisecond)
	_, admin := startPoolEdgecache(t, poolYAML("fleet", "least_requests", "", sims, 1, 2))
	code, b := get(t, admin+"/admin/ui", "")
	body := string(b)
	for _, want := range []string{`id="pool-table"`, `data-pool="fleet" data-target="fleet-0" data-drained="false"`,
		`action="/admin/ui/upstreams/fleet/targets/fleet-1"`, "least_requests", `value="drain"`} {
		if !strings.Contains(body, want) {
			t.Errorf("review page: no %s", want)
		}
	}
	if code != http.StatusOK {
		t.Fatalf("review page: %d", code)
	}
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, _ := http.NewRequest(http.MethodPost, admin+"/admin/ui/upstreams/fleet/targets/fleet-1", strings.NewReader("action=drain"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusSeeOther || !strings.Contains(loc, "flash=") || !strings.HasSuffix(loc, "#pools") {
		t.Fatalf("drain form: %d Location %q", resp.StatusCode, loc)
	}
	if !poolTargetsOf(t, admin, "fleet")["fleet-1"].Drained {
		t.Error("the form did not drain fleet-1")
	}
	_, b = get(t, admin+"/admin/ui", "")
	if !strings.Contains(string(b), `data-target="fleet-1" data-drained="true"`) || !strings.Contains(string(b), `value="undrain"`) {
		t.Error("the page does not show fleet-1 drained with an Undrain button")
	}
	_, b = get(t, admin+"/admin/upstreams/audit?target=fleet/fleet-1", "")
	if !strings.Contains(string(b), `"who":"local"`) || !strings.Contains(string(b), `"count":1`) {
		t.Errorf("audit of the form's drain: %s", b)
	}
}
