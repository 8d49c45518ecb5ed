package bench

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
)

func TestMessagesScenarioRegistered(t *testing.T) {
	if !slices.Contains(Scenarios, ScenarioMessagesHit) || scenarioLabel[ScenarioMessagesHit] == "" ||
		scenarioLetter[ScenarioMessagesHit] != "h" || baseOf[ScenarioMessagesHit] != ScenarioHit {
		t.Fatal("scenario (h) is not registered")
	}
	rs := []Result{
		{Scenario: ScenarioHit, Conns: 32, WrkResult: WrkResult{RequestsPerSec: 1000}},
		{Scenario: ScenarioMessagesHit, Conns: 32, WrkResult: WrkResult{RequestsPerSec: 950}},
		{Scenario: ScenarioHit, Conns: 128, WrkResult: WrkResult{RequestsPerSec: 1000}},
		{Scenario: ScenarioMessagesHit, Conns: 128, WrkResult: WrkResult{RequestsPerSec: 850}},
	}
	var got []Target
	for _, tg := range ComputeTargets(rs, []int{32, 128}) {
		if strings.HasPrefix(tg.Name, "Messages") {
			got = append(got, tg)
		}
	}
	if len(got) != 2 || !got[0].Pass || got[1].Pass {
		t.Errorf("Messages targets %+v", got)
	}
	if ts := messagesTargets(rs[:1], []int{32}); ts != nil {
		t.Errorf("a report without (h) has Messages targets: %+v", ts)
	}
	if s := LuaScript(MessagesBody, messagesHeaders); !strings.Contains(s, "x-api-key") || !strings.Contains(s, "anthropic-version") {
		t.Errorf("script without Anthropic's headers:\n%s", s)
	}
}

// TestMessagesWarmAndCheck: (h) warms the key and its check accepts only
// L1 hits sent with x-api-key.
func TestMessagesWarmAndCheck(t *testing.T) {
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != messagesPath || r.Header.Get("x-api-key") == "" || r.Header.Get("anthropic-version") == "" {
			http.Error(w, "bad", http.StatusBadRequest)
			return
		}
		if n.Add(1) > 2 {
			w.Header().Set("Cache-Status", hitCacheStatus+"; ttl=3599")
		} else {
			w.Header().Set("Cache-Status", "edgecache; fwd=uri-miss")
		}
		_, _ = w.Write([]byte(`{"type":"message"}`))
	}))
	defer srv.Close()
	r := &runner{client: srv.Client()}
	url := srv.URL + messagesPath
	check := func(ctx context.Context) error {
		a, err := r.postMessages(ctx, url)
		if err == nil && !isHit(a.cacheStatus) {
			return context.DeadlineExceeded
		}
		return err
	}
	if err := waitHit(context.Background(), check); err != nil {
		t.Fatal(err)
	}
}
