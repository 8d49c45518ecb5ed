package app

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/edgecache/edgecache/cmd/internal/llmsim"
)

func get(t *testing.T, url, token string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func TestAdminSecurity(t *testing.T) {
	sim, err := llmsim.Start(context.Background(), "127.0.0.1:0", llmsim.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	t.Setenv("EDGECACHE_ADMIN_TOKENS", "alice:alice-secret-token-0123,bob:bob-secret-token-456789")
	data, admin := startEdgecache(t, sim.URL(), "--admin-listen", "0.0.0.0:0")
	admin = strings.Replace(admin, "0.0.0.0", "127.0.0.1", 1)
	admin = strings.Replace(admin, "[::]", "127.0.0.1", 1)
	// The data port never serves admin paths.
	for _, p := range []string{"/admin/upstreams", "/admin/degradations", "/healthz", "/metrics", "/admin/debug/pprof/heap", "/debug/pprof/heap"} {
		if code, _ := get(t, data+p, "alice-secret-token-0123"); code != http.StatusNotFound {
			t.Errorf("data port %s: %d, want 404", p, code)
		}
	}
	// Off loopback, admin paths need a valid token; probes stay open.
	for _, tok := range []string{"", "wrong-token-wrong-token", "alice-secret-token-012"} {
		if code, b := get(t, admin+"/admin/upstreams", tok); code != http.StatusUnauthorized {
			t.Errorf("token %q: %d %s, want 401", tok, code, b)
		}
	}
	if code, b := get(t, admin+"/admin/upstreams", "bob-secret-token-456789"); code != 200 || !bytes.Contains(b, []byte(`"primary"`)) {
		t.Errorf("valid token: %d %s", code, b)
	}
	// Runtime profiles are operator endpoints like the rest.
	if code, _ := get(t, admin+"/admin/debug/pprof/goroutine", ""); code != http.StatusUnauthorized {
		t.Errorf("pprof without a token: %d, want 401", code)
	}
	if code, b := get(t, admin+"/admin/debug/pprof/goroutine?debug=1", "bob-secret-token-456789"); code != 200 || !bytes.Contains(b, []byte("goroutine profile:")) {
		t.Errorf("pprof with a token: %d %.200s", code, b)
	}
	for _, p := range []string{"/healthz", "/readyz", "/metrics"} {
		if code, _ := get(t, admin+p, ""); code != 200 {
			t.Errorf("%s without a token: %d", p, code)
		}
	}
}

func TestDegradationsJournaledAndQueryable(t *testing.T) {
	sim, err := llmsim.Start(context.Background(), "127.0.0.1:0", llmsim.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	data, admin := startEdgecache(t, sim.URL())
	sim.Server.SetFault(llmsim.Fault{Status: 503, RetryAfter: 2})
	degraded := 0
	for i := range 6 {
		resp, err := http.Post(data+"/v1/chat/completions", "application/json",
			strings.NewReader(fmt.Sprintf(`{"model":"m","messages":[{"role":"user","content":"journal me %d"}]}`, i)))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.Header.Get("X-Edgecache-Degraded") != "" {
			degraded++
		}
		if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
			t.Errorf("request %d: %d Retry-After %q", i, resp.StatusCode, resp.Header.Get("Retry-After"))
		}
	}
	var res struct {
		Degradations []struct {
			Rung, Route, Reason string
			Status              int
		} `json:"degradations"`
	}
	waitUntil(t, func() bool {
		code, b := get(t, admin+"/admin/degradations?since=10m&route=chat&rung=busy", "")
		if code != 200 || json.Unmarshal(b, &res) != nil {
			t.Fatalf("query: %d %s", code, b)
		}
		return len(res.Degradations) == degraded
	})
	if degraded != 6 || res.Degradations[0].Status != 503 || res.Degradations[0].Reason == "" {
		t.Errorf("%d degraded; journal %+v", degraded, res.Degradations)
	}
	if code, _ := get(t, admin+"/admin/degradations?since=yesterday", ""); code != 400 {
		t.Errorf("bad since: %d, want 400", code)
	}
	// The CLI mirrors the API.
	var out, errOut bytes.Buffer
	if err := Run(context.Background(), []string{"degradations", "--admin", admin, "--since", "1h", "--rung", "busy"}, &out, &errOut); err != nil {
		t.Fatalf("cli: %v %s", err, errOut.String())
	}
	if !strings.Contains(out.String(), "6 record(s)") || !strings.Contains(out.String(), "busy") {
		t.Errorf("cli table:\n%s", out.String())
	}
	out.Reset()
	if err := Run(context.Background(), []string{"degradations", "--admin", admin, "--json", "--route", "nope"}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	var js struct {
		Count int `json:"count"`
	}
	if json.Unmarshal(out.Bytes(), &js) != nil || js.Count != 0 {
		t.Errorf("cli --json: %s", out.String())
	}
}

// waitUntil polls cond for up to 5 s (the journal writes asynchronously).
func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestMetricsSeries(t *testing.T) {
	sim, err := llmsim.Start(context.Background(), "127.0.0.1:0", llmsim.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	data, admin := startEdgecache(t, sim.URL())
	body := `{"model":"m","messages":[{"role":"user","content":"count me"}]}`
	for range 2 {
		resp, err := http.Post(data+"/v1/chat/completions", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	sim.Server.SetFault(llmsim.Fault{Status: 503})
	resp, err := http.Post(data+"/v1/chat/completions", "application/json", strings.NewReader(`{"model":"m","messages":[{"role":"user","content":"fail me"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if code, _ := get(t, data+"/v1/nowhere", ""); code != http.StatusNotFound {
		t.Errorf("unmatched path: %d", code)
	}
	_, b := get(t, admin+"/metrics", "")
	checkMetricsWithPromtool(t, b)
	for _, series := range []string{
		`edgecache_cache_lookups_total{result="hit",route="chat",tier="l1"} 1`,
		`http_server_request_duration_seconds_count{http_request_method="POST",http_response_status_code="200",http_route="chat"} 2`,
		`http_server_request_duration_seconds_count{http_request_method="POST",http_response_status_code="503",http_route="chat"} 1`,
		`edgecache_requests_in_flight 0`,
		`edgecache_upstream_breaker_state{target="primary"}`,
		`gen_ai_server_time_to_first_token_seconds_count{route="chat",target="primary"} 1`,
		`edgecache_upstream_requests_total{error_type="upstream_503",http_response_status_code="503",route="chat"} 3`,
		`edgecache_degrade_answers_total{reason="upstream_503",route="chat",rung="busy"} 1`,
		`http_server_request_duration_seconds_count{http_request_method="GET",http_response_status_code="404",http_route="unmatched"} 1`,
		`gen_ai_client_token_usage_count{gen_ai_operation_name="chat",gen_ai_request_model="m",gen_ai_response_model="m",gen_ai_token_type="input",route="chat"} 1`,
		`gen_ai_client_token_usage_count{gen_ai_operation_name="chat",gen_ai_request_model="m",gen_ai_response_model="m",gen_ai_token_type="output",route="chat"} 1`,
		`gen_ai_client_operation_duration_seconds_count{gen_ai_operation_name="chat",gen_ai_request_model="m",gen_ai_response_model="m",route="chat"} 1`,
		`gen_ai_client_operation_duration_seconds_count{error_type="upstream_503",gen_ai_operation_name="chat",gen_ai_request_model="m",route="chat"} 3`,
		`edgecache_tokens_saved_total{route="chat",tenant="anonymous",type="input"}`,
		`edgecache_tokens_saved_total{route="chat",tenant="anonymous",type="output"}`,
		"go_goroutines ",
		"process_cpu_seconds_total ",
	} {
		if !bytes.Contains(b, []byte(series)) {
			t.Errorf("/metrics lacks %s", series)
		}
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", b)
	}
}
