package app

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/edgecache/edgecache/cmd/internal/llmsim"
)

// logLines parses edgecache's JSON log lines.
func logLines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line is not JSON: %q", l)
		}
		lines = append(lines, m)
	}
	return lines
}

// TestLogA503Storm: while the model answers 503 to everything, the log
// has an access line per request and rate-limited upstream failure and
// breaker lines, each with the request id of a request that met them.
func TestLogA503Storm(t *testing.T) {
	sim, err := llmsim.Start(context.Background(), "127.0.0.1:0", llmsim.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	sim.Server.SetFault(llmsim.Fault{Status: http.StatusServiceUnavailable})
	t.Setenv("EDGECACHE_LOG_ACCESS", "full")
	t.Setenv("EDGECACHE_UPSTREAM_API_KEY", "sk-edge") // the 503s are the target's, not a caller's key's
	data, _, log := startEdgecacheLog(t, sim.URL())

	const n = 20
	ids := map[string]bool{}
	for i := range n {
		req, _ := http.NewRequest(http.MethodPost, data+"/v1/chat/completions",
			strings.NewReader(fmt.Sprintf(`{"model":"m","messages":[{"role":"user","content":"storm %d"}]}`, i)))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer sk-storm-client")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode < 500 {
			t.Fatalf("request %d: status %d during a 503 storm", i, resp.StatusCode)
		}
		ids[resp.Header.Get("X-Request-Id")] = true
	}
	var access, failures, opened []map[string]any
	waitUntil(t, func() bool {
		access, failures, opened = nil, nil, nil
		for _, l := range logLines(t, log.String()) {
			switch l["msg"] {
			case "access":
				access = append(access, l)
			case "upstream failure":
				failures = append(failures, l)
			case "upstream breaker opened":
				opened = append(opened, l)
			}
		}
		return len(access) == n
	})
	called := 0
	for _, l := range access {
		id, _ := l["request_id"].(string)
		if !ids[id] || l["route"] != "chat" || l["status"].(float64) < 500 || l["tenant"] == nil ||
			l["cache_status"] == "" || l["duration_ms"] == nil || l["bytes_out"] == nil {
			t.Errorf("access line %v", l)
		}
		if l["upstream"] != nil { // not once the breaker is open
			called++
			if l["upstream_status"] != float64(503) {
				t.Errorf("access line %v", l)
			}
		}
		if strings.Contains(fmt.Sprint(l), "sk-storm-client") {
			t.Errorf("the client's key is in the log: %v", l)
		}
	}
	if called == 0 || called == n {
		t.Errorf("%d of %d requests reached the upstream: want the breaker to have opened", called, n)
	}
	if len(failures) == 0 || len(opened) != 1 {
		t.Fatalf("%d upstream failure lines and %d breaker lines; want rate-limited lines of both", len(failures), len(opened))
	}
	if len(failures) > 2 {
		t.Errorf("%d upstream failure lines for %d requests: not rate-limited", len(failures), n)
	}
	for _, l := range append(failures, opened...) {
		if id, _ := l["request_id"].(string); !ids[id] {
			t.Errorf("line without the request id of a request: %v", l)
		}
		if l["target"] != "primary" {
			t.Errorf("line %v", l)
		}
	}
}

// Requests no route handler serves — an unknown path (404), a wrong method
// (405), OPTIONS — go through the same middlewares as the routes' (which
// are composed per route, not by echo per request): each answer has an
// X-Request-Id and an access line with that id and its status.
func TestUnroutedRequestsAreLogged(t *testing.T) {
	sim := startSim(t, llmsim.Config{})
	t.Setenv("EDGECACHE_LOG_ACCESS", "full")
	data, _, log := startEdgecacheLog(t, sim.URL())
	cases := []struct {
		method, path string
		status       int
	}{
		{http.MethodGet, "/v1/nowhere", http.StatusNotFound},
		{http.MethodGet, "/v1/chat/completions", http.StatusMethodNotAllowed},
		{http.MethodOptions, "/v1/chat/completions", http.StatusNoContent},
	}
	want := map[string]int{}
	for _, c := range cases {
		req, _ := http.NewRequest(c.method, data+c.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		id := resp.Header.Get("X-Request-Id")
		if resp.StatusCode != c.status || id == "" {
			t.Fatalf("%s %s: %d, X-Request-Id %q; want %d and an id", c.method, c.path, resp.StatusCode, id, c.status)
		}
		if c.method == http.MethodOptions && !strings.Contains(resp.Header.Get("Allow"), http.MethodPost) {
			t.Errorf("OPTIONS: Allow %q", resp.Header.Get("Allow"))
		}
		want[id] = c.status
	}
	waitUntil(t, func() bool {
		n := 0
		for _, l := range logLines(t, log.String()) {
			id, _ := l["request_id"].(string)
			if l["msg"] == "access" && want[id] != 0 && l["status"] == float64(want[id]) {
				n++
			}
		}
		return n == len(want)
	})
}
