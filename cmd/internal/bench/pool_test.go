package bench

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgecache/edgecache/cmd/internal/config"
	"github.com/edgecache/edgecache/cmd/internal/llmsim"
)

// TestPoolScenarioRegistered: (i) runs after (h), is labelled, and its
// target is its ratio against (d).
func TestPoolScenarioRegistered(t *testing.T) {
	if slices.Index(Scenarios, ScenarioPoolPassthrough) != slices.Index(Scenarios, ScenarioMessagesHit)+1 || !strings.HasPrefix(scenarioLabel[ScenarioPoolPassthrough], "(i)") ||
		baseOf[ScenarioPoolPassthrough] != ScenarioPassthrough || scenarioLetter[ScenarioPoolPassthrough] != "i" {
		t.Fatal("scenario (i) is not registered")
	}
	if !slices.Contains(Scenarios, ScenarioMessagesHit) {
		t.Fatal("scenario (h) is no longer registered")
	}
	rs := []Result{
		{Scenario: ScenarioPassthrough, Conns: 32, WrkResult: WrkResult{RequestsPerSec: 1000}},
		{Scenario: ScenarioPoolPassthrough, Conns: 32, WrkResult: WrkResult{RequestsPerSec: 950}},
		{Scenario: ScenarioPassthrough, Conns: 128, WrkResult: WrkResult{RequestsPerSec: 1000}},
		{Scenario: ScenarioPoolPassthrough, Conns: 128, WrkResult: WrkResult{RequestsPerSec: 850}},
	}
	var got []Target
	for _, tg := range ComputeTargets(rs, []int{32, 128}) {
		if strings.HasPrefix(tg.Name, "pool pass-through") {
			got = append(got, tg)
		}
	}
	if len(got) != 2 || !got[0].Pass || got[1].Pass {
		t.Errorf("pool targets %+v", got)
	}
	if ts := poolTargets(rs[:1], []int{32}); ts != nil {
		t.Errorf("a report without (i) has pool targets: %+v", ts)
	}
}

// TestPoolConfigLoads: the configuration (i) gives edgecache is a valid
// pool of both targets.
func TestPoolConfigLoads(t *testing.T) {
	c, err := config.Parse([]byte(poolConfig("127.0.0.1:1001", "127.0.0.1:1002")))
	if err != nil {
		t.Fatal(err)
	}
	c.Default()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if len(c.Upstreams) != 1 || len(c.Upstreams[0].Targets) != 2 || c.Upstreams[0].Targets[1].URL != "http://127.0.0.1:1002" {
		t.Errorf("pool config: %+v", c.Upstreams)
	}
}

// TestPoolShares: (i)'s observer reads two real llmsims' counters and
// fails the row when one target got under a quarter of the requests.
func TestPoolShares(t *testing.T) {
	var sims []*llmsim.Running
	var addrs []string
	for range 2 {
		s, err := llmsim.Start(context.Background(), "127.0.0.1:0", llmsim.Config{TTFT: time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		sims = append(sims, s)
		addrs = append(addrs, strings.TrimPrefix(s.URL(), "http://"))
	}
	r := &runner{client: &http.Client{Timeout: 5 * time.Second}}
	send := func(i, n int) {
		for k := range n {
			if _, err := r.postBody(context.Background(), sims[i].URL()+chatPath, fmt.Sprintf(`{"model":"sim-1","messages":[{"role":"user","content":"q%d"}]}`, k), false); err != nil {
				t.Fatal(err)
			}
		}
	}
	ctx := context.Background()
	for _, tc := range []struct {
		a, b int
		ok   bool
	}{{5, 5, true}, {6, 4, true}, {9, 1, false}, {0, 0, false}} {
		finish, err := r.poolShares(addrs)(ctx)
		if err != nil {
			t.Fatal(err)
		}
		send(0, tc.a)
		send(1, tc.b)
		if err := finish(ctx, &Result{}); (err == nil) != tc.ok {
			t.Errorf("%d and %d requests: %v, want ok %v", tc.a, tc.b, err, tc.ok)
		}
	}
}
