package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/edgecache/edgecache/cmd/internal/config"
)

func msD(v float64) time.Duration { return time.Duration(v * float64(time.Millisecond)) }

func TestPercentileOf(t *testing.T) {
	var s []time.Duration
	for i := 1; i <= 100; i++ {
		s = append(s, msD(float64(i)))
	}
	for _, tt := range []struct {
		p    float64
		want time.Duration
	}{{0.5, msD(50)}, {0.9, msD(90)}, {0.99, msD(99)}, {1, msD(100)}, {0.001, msD(1)}} {
		if got := percentileOf(s, tt.p); got != tt.want {
			t.Errorf("p%v = %v, want %v", tt.p*100, got, tt.want)
		}
	}
	if got := percentileOf(nil, 0.99); got != 0 {
		t.Errorf("empty: %v", got)
	}
	if got := percentileOf([]time.Duration{msD(7)}, 0.99); got != msD(7) {
		t.Errorf("one value: %v", got)
	}
	l := summarizeLatency([]time.Duration{msD(30), msD(10), msD(20)}) // unsorted on purpose
	if l != (Latency{N: 3, P50Ms: 20, P90Ms: 30, P99Ms: 30, MaxMs: 30}) {
		t.Errorf("summarizeLatency = %+v", l)
	}
	if l := summarizeLatency(nil); l != (Latency{}) {
		t.Errorf("summarizeLatency(nil) = %+v", l)
	}
}

func TestSummarize(t *testing.T) {
	var samples []sample
	add := func(n int, s sample) {
		for range n {
			samples = append(samples, s)
		}
	}
	add(95, sample{status: 200, latency: msD(100), lag: msD(1)})
	add(5, sample{status: 200, latency: msD(300), lag: msD(1)})
	add(10, sample{status: 429, latency: msD(2), retryAfter: true, code: "rate_limit_exceeded"})
	add(2, sample{status: 429, latency: msD(2), retryAfter: false, code: "other"})
	add(6, sample{status: 503, latency: msD(500), retryAfter: true, reason: "queued_timeout"})
	add(1, sample{status: 503, latency: msD(500), retryAfter: false, reason: "shed"})
	add(3, sample{status: 500, latency: msD(5), reason: "internal"})
	add(1, sample{status: 404, latency: msD(5)})
	add(3, sample{status: 0, latency: msD(10_000), lag: msD(50), errKind: "timeout"})
	add(1, sample{status: 0, latency: msD(10_000), lag: msD(50)})
	r := summarize(LoadLane{Name: "free", Rate: 1600}, samples, 7)

	want := LaneResult{Lane: "free", OfferedRate: 1600, Scheduled: 134, Sent: 127, Skipped: 7,
		OK: 100, Status429: 12, Status503: 7, Other: 4, Other5xx: 3, Errors: 4,
		RetryAfter: 16, RateLimitCode: 10, ErrorKinds: map[string]int64{"timeout": 3, "other": 1},
		Reasons: map[string]int64{"quota": 12, "queued_timeout": 6, "shed": 1, "internal": 3}}
	got := r
	got.OKLatency, got.RefusedLatency, got.SendLag = Latency{}, Latency{}, Latency{}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("summarize =\n %+v\nwant\n %+v", got, want)
	}
	if r.OKLatency != (Latency{N: 100, P50Ms: 100, P90Ms: 100, P99Ms: 300, MaxMs: 300}) {
		t.Errorf("OKLatency = %+v", r.OKLatency)
	}
	if r.RefusedLatency.N != 19 || r.RefusedLatency.P50Ms != 2 || r.RefusedLatency.MaxMs != 500 {
		t.Errorf("RefusedLatency = %+v", r.RefusedLatency)
	}
	if r.SendLag.N != 127 || r.SendLag.MaxMs != 50 {
		t.Errorf("SendLag = %+v", r.SendLag)
	}
	if r.Refused() != 19 || r.NotOK() != 34 {
		t.Errorf("Refused %d, NotOK %d", r.Refused(), r.NotOK())
	}
	if v, ok := r.Success(); !ok || !near(v, 100.0/134) {
		t.Errorf("Success = %v, %v", v, ok)
	}
	if _, ok := (LaneResult{}).Success(); ok {
		t.Error("Success of nothing scheduled is known")
	}
}

func TestValidRetryAfterAndErrorCode(t *testing.T) {
	for v, want := range map[string]bool{
		"1": true, " 30 ": true, "0": true, "-1": false, "": false, "soon": false, "1.5": false,
		"Wed, 21 Oct 2015 07:28:00 GMT": true,
	} {
		if got := validRetryAfter(v); got != want {
			t.Errorf("validRetryAfter(%q) = %v", v, got)
		}
	}
	for body, want := range map[string]string{
		`{"error":{"message":"m","type":"requests","param":null,"code":"rate_limit_exceeded"}}`: "rate_limit_exceeded",
		`{"error":{"code":null}}`: "",
		`{"error":{"code":429}}`:  "",
		`not json`:                "",
	} {
		if got := errorCode([]byte(body)); got != want {
			t.Errorf("errorCode(%s) = %q, want %q", body, got, want)
		}
	}
}

func TestErrorKind(t *testing.T) {
	for err, want := range map[error]string{
		context.DeadlineExceeded: "timeout",
		&net.OpError{Op: "read", Err: os.NewSyscallError("read", syscall.ECONNRESET)}:      "reset",
		&net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}: "refused",
		io.ErrUnexpectedEOF:               "eof",
		fmt.Errorf("wrapped: %w", io.EOF): "eof",
		errors.New("something else"):      "other",
	} {
		if got := errorKind(err); got != want {
			t.Errorf("errorKind(%v) = %q, want %q", err, got, want)
		}
	}
}

func TestSchedule(t *testing.T) {
	for _, tt := range []struct {
		rate float64
		d    time.Duration
		want int
	}{{80, 10 * time.Second, 800}, {1600, 10 * time.Second, 16000}, {0.5, 3 * time.Second, 1}, {160, 100 * time.Millisecond, 16}} {
		if got := scheduledCount(tt.rate, tt.d); got != tt.want {
			t.Errorf("scheduledCount(%v, %v) = %d, want %d", tt.rate, tt.d, got, tt.want)
		}
	}
	if got := sendOffset(40, 80); got != 500*time.Millisecond {
		t.Errorf("sendOffset(40, 80) = %v", got)
	}
	// Every offset of a phase falls inside it.
	if got := sendOffset(scheduledCount(1600, time.Second)-1, 1600); got >= time.Second {
		t.Errorf("last offset %v is past the phase", got)
	}
	a, b := promptBody("r1", "overload", "paid", 1), promptBody("r1", "overload", "paid", 2)
	if bytes.Equal(a, b) || !json.Valid(a) || !bytes.Contains(a, []byte(`"model":"sim-1"`)) {
		t.Errorf("prompt bodies: %s, %s", a, b)
	}
}

// overloadPhases is a passing run: paid p99 120 → 200 ms, free refused
// with Retry-After.
func overloadPhases() []PhaseResult {
	return []PhaseResult{
		{Name: phaseUnloaded, Lanes: []LaneResult{{Lane: "paid", OfferedRate: 80, Scheduled: 800, Sent: 800, OK: 800,
			OKLatency: Latency{N: 800, P50Ms: 103, P99Ms: 120}}}},
		{Name: phaseOverload, Lanes: []LaneResult{
			{Lane: "paid", OfferedRate: 80, Scheduled: 800, Sent: 800, OK: 792, Status503: 8, RetryAfter: 8,
				OKLatency: Latency{N: 792, P50Ms: 140, P99Ms: 200}},
			{Lane: "free", OfferedRate: 1600, Scheduled: 16000, Sent: 16000, OK: 800, Status429: 14000, Status503: 1200,
				RetryAfter: 15200, RateLimitCode: 14000, OKLatency: Latency{N: 800, P50Ms: 130, P99Ms: 900},
				RefusedLatency: Latency{N: 15200, P50Ms: 1, P99Ms: 500}, Reasons: map[string]int64{"quota": 14000, "queued_timeout": 1200}},
		}},
	}
}

func TestComputeOverloadTargets(t *testing.T) {
	type brief struct {
		value      float64
		known, ok  bool
		namePrefix string
	}
	check := func(name string, ps []PhaseResult, want []brief) {
		t.Helper()
		got := ComputeOverloadTargets(ps)
		if len(got) != len(want) {
			t.Fatalf("%s: %d targets, want %d", name, len(got), len(want))
		}
		for i, w := range want {
			g := got[i]
			if !strings.HasPrefix(g.Name, w.namePrefix) || g.Known != w.known || g.Pass != w.ok || !near(g.Value, w.value) {
				t.Errorf("%s: target %d = %+v, want %+v", name, i, g, w)
			}
		}
	}
	check("passing", overloadPhases(), []brief{
		{0.99, true, true, "paid success under overload"},
		{200.0 / 120, true, true, "paid p99 under overload / unloaded (200.0 ms / 120.0 ms)"},
		{1, true, true, "free refused with 429/503 + Retry-After"},
		{0, true, true, "free 5xx other than 503"},
	})

	ps := overloadPhases()
	ps[1].Lanes[0].OK, ps[1].Lanes[0].Status503 = 791, 9 // 98.875 %
	ps[1].Lanes[0].OKLatency.P99Ms = 240.1               // 2.0008×
	ps[1].Lanes[1].Status503, ps[1].Lanes[1].Other, ps[1].Lanes[1].Other5xx = 1199, 1, 1
	ps[1].Lanes[1].RetryAfter = 15199
	check("failing", ps, []brief{
		{791.0 / 800, true, false, "paid success"},
		{240.1 / 120, true, false, "paid p99"},
		{15199.0 / 15200, true, false, "free refused"},
		{1, true, false, "free 5xx"},
	})

	// A free refusal without Retry-After fails; so does one without an
	// answer, or one the generator skipped.
	for name, mod := range map[string]func(*LaneResult){
		"no Retry-After": func(l *LaneResult) { l.RetryAfter-- },
		"no answer":      func(l *LaneResult) { l.Status503--; l.RetryAfter--; l.Errors++ },
		"skipped":        func(l *LaneResult) { l.Scheduled++; l.Skipped++ },
	} {
		ps := overloadPhases()
		mod(&ps[1].Lanes[1])
		if tg := ComputeOverloadTargets(ps)[2]; tg.Pass {
			t.Errorf("%s: %+v passes", name, tg)
		}
	}

	// Nothing measured: all unknown, all FAIL; free never refused: FAIL.
	for _, tg := range ComputeOverloadTargets(nil) {
		if tg.Known || tg.Pass {
			t.Errorf("no phases: %+v", tg)
		}
	}
	ps = overloadPhases()
	ps[1].Lanes[1] = LaneResult{Lane: "free", Scheduled: 10, Sent: 10, OK: 10}
	if tg := ComputeOverloadTargets(ps)[2]; tg.Known || tg.Pass {
		t.Errorf("free never refused: %+v", tg)
	}
}

func sampleOverloadReport() OverloadReport {
	cfg, _ := parseOverloadFlags(nil, io.Discard)
	ps := overloadPhases()
	ps[0].Snapshot = &Snapshot{
		Limiter: &LimiterStats{Target: "primary", Limit: 16, TTFTMs: 104, LongTTFTMs: 103,
			Lanes: map[string]LimiterLane{"paid": {Admitted: 801}}},
		Upstream: map[string]float64{"200": 801},
		Degraded: map[string]float64{},
	}
	ps[1].Snapshot = &Snapshot{
		Limiter: &LimiterStats{Target: "primary", Limit: 15, TTFTMs: 110, LongTTFTMs: 104,
			Lanes: map[string]LimiterLane{"paid": {Admitted: 1593, Waited: 790}, "free": {Admitted: 800, Waited: 2000, Timeouts: 1200}}},
		Upstream: map[string]float64{"200": 2393},
		Degraded: map[string]float64{"shed/rate_limit_exceeded": 14000, "busy/queued_timeout": 1208},
	}
	ps[1].Lanes[1].SendLag = Latency{N: 16000, P50Ms: 0.5, P99Ms: 35, MaxMs: 80}
	return OverloadReport{
		Machine: Machine{NProc: 2, CPUModel: "Test CPU", GoVersion: "go1.26.8 linux/amd64", LoadAvg: "3.50 2.00 1.00",
			Date: "2026-11-23T07:00:00Z"},
		Command:  "edgebench overload --duration 10s",
		Setup:    setupOf(cfg),
		Phases:   ps,
		Baseline: &Snapshot{Limiter: &LimiterStats{Lanes: map[string]LimiterLane{"paid": {Admitted: 1}}}, Upstream: map[string]float64{"200": 1}},
		Targets:  ComputeOverloadTargets(ps),
	}
}

func TestWriteOverloadMarkdown(t *testing.T) {
	rep := sampleOverloadReport()
	if !rep.Pass() {
		t.Fatalf("sample report fails: %+v", rep.Targets)
	}
	var b strings.Builder
	if err := WriteOverloadMarkdown(&b, rep); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"Machine: nproc 2, Test CPU, go1.26.8 linux/amd64, loadavg 3.50 2.00 1.00, 2026-11-23T07:00:00Z\n",
		"Command: `edgebench overload --duration 10s`\n",
		"llmsim --max-concurrency 16 --ttft 100ms (non-streamed answers; capacity C/T = 160 req/s)",
		"admission.concurrency {initial 16, min 5, max 16}",
		"free (lane free, quota 160 req/s, burst 16)",
		"unloaded = paid 80 req/s; overload = paid 80 req/s + free 1600 req/s (10.0× capacity)",
		"| unloaded | paid | 80 | 800 | 800 (100.0 %) | 0 | 0 | 0 | 0 | – | 103.0 | 120.0 | – |\n",
		"| overload | paid | 80 | 800 | 792 (99.0 %) | 0 | 8 | 0 | 0 | 100.0 % (8/8) | 140.0 | 200.0 | – |\n",
		"| overload | free | 1600 | 16000 | 800 (5.0 %) | 14000 | 1200 | 0 | 0 | 100.0 % (15200/15200) | 130.0 | 900.0 | 500.0 |\n",
		"| paid success under overload (2xx / sent) | 99.0 % | ≥ 99 % | PASS |\n",
		"| paid p99 under overload / unloaded (200.0 ms / 120.0 ms) | 1.67× | ≤ 2× | PASS |\n",
		"| free refused with 429/503 + Retry-After (share of non-2xx) | 100.0 % | ≥ 100 % | PASS |\n",
		"| free 5xx other than 503 | 0 | 0 | PASS |\n",
		"Targets: 4/4 PASS.\n",
		"- WARNING: load average 3.50 on 2 CPUs",
		"- overload, free: refusal reasons: quota ×14000, queued_timeout ×1200\n",
		"- overload, free: WARNING: the generator sent late (lag p50 0.5 ms, p99 35.0 ms, max 80.0 ms)",
		// Differences against the previous snapshot (the baseline for the first phase).
		"- unloaded: limiter primary: limit 16, TTFT p90 104.0 ms (long-term 103.0 ms); paid admitted 800, queued 0, shed 0, queue timeouts 0, cancelled 0\n",
		"- unloaded: upstream calls by status: 200 ×800\n",
		"- overload: limiter primary: limit 15, TTFT p90 110.0 ms (long-term 104.0 ms); free admitted 800, queued 2000, shed 0, queue timeouts 1200, cancelled 0; paid admitted 792, queued 790, shed 0, queue timeouts 0, cancelled 0\n",
		"- overload: upstream calls by status: 200 ×1592\n",
		"- overload: degraded answers by rung/reason: shed/rate_limit_exceeded ×14000, busy/queued_timeout ×1208\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q; output:\n%s", want, out)
		}
	}
	if strings.Contains(out, "paid: WARNING") {
		t.Errorf("lag warning for a lane that was on time:\n%s", out)
	}

	// A failed run says so, and its report does not pass.
	rep.Error = "edgecache: exited during start-up"
	rep.Phases, rep.Targets = nil, ComputeOverloadTargets(nil)
	b.Reset()
	if err := WriteOverloadMarkdown(&b, rep); err != nil {
		t.Fatal(err)
	}
	if rep.Pass() || !strings.Contains(b.String(), "- run FAILED: edgecache: exited during start-up\n") ||
		!strings.Contains(b.String(), "| paid success under overload (2xx / sent) | n/a | ≥ 99 % | FAIL |\n") {
		t.Errorf("failed run:\n%s", b.String())
	}
}

func TestOverloadReportJSON(t *testing.T) {
	rep := sampleOverloadReport()
	path := filepath.Join(t.TempDir(), "overload.json")
	if err := writeJSONFile(path, rep); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var back OverloadReport
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, rep) {
		t.Errorf("JSON round trip differs:\n got %+v\nwant %+v", back, rep)
	}
	for _, key := range []string{`"llmsim_max_concurrency": 16`, `"capacity_rps": 160`, `"status_429": 14000`, `"p99_ms": 200`} {
		if !strings.Contains(string(data), key) {
			t.Errorf("JSON lacks %s", key)
		}
	}
}

func TestParseOverloadFlags(t *testing.T) {
	c, err := parseOverloadFlags(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.duration != 10*time.Second || c.warmup != 2*time.Second || c.concurrency != 16 || c.ttft != 100*time.Millisecond ||
		c.limit != 16 || c.paidLoad != 0.5 || c.freeLoad != 10 || c.freeQuota != 1 || c.bin == "" {
		t.Errorf("defaults: %+v", c)
	}
	if !near(c.capacity(), 160) || !near(c.paidRate(), 80) || !near(c.freeRate(), 1600) || c.minLimit() != 5 {
		t.Errorf("derived: capacity %v, paid %v, free %v, min %d", c.capacity(), c.paidRate(), c.freeRate(), c.minLimit())
	}
	if rps, burst := c.freeQuotaRPS(); !near(rps, 160) || burst != 16 {
		t.Errorf("free quota %v/%d", rps, burst)
	}
	c, err = parseOverloadFlags([]string{"--concurrency", "4", "--ttft", "200ms", "--free-quota", "0", "--limit", "3",
		"--duration", "3s", "--warmup", "0s", "--json", "/tmp/o.json", "--bin", "/x"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !near(c.capacity(), 20) || c.limit != 3 || c.minLimit() != 3 || c.jsonPath != "/tmp/o.json" || c.bin != "/x" || c.warmup != 0 {
		t.Errorf("parsed: %+v", c)
	}
	if rps, _ := c.freeQuotaRPS(); rps != 0 {
		t.Errorf("--free-quota 0 gives a quota of %v", rps)
	}
	for _, bad := range [][]string{
		{"--duration", "500ms"}, {"--warmup", "-1s"}, {"--concurrency", "0"}, {"--ttft", "0s"}, {"--paid-load", "0"},
		{"--free-load", "-1"}, {"--free-quota", "-1"}, {"--timeout", "0s"}, {"--max-in-flight", "0"}, {"extra"},
		{"--concurrency", "1", "--ttft", "10s"}, // paid 0.05 req/s
	} {
		if _, err := parseOverloadFlags(bad, io.Discard); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestOverloadConfigYAML loads the generated file with edgecache's own
// parser (unknown keys are errors there) and checks what the scenario
// relies on.
func TestOverloadConfigYAML(t *testing.T) {
	c, err := parseOverloadFlags(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	keys := overloadKeys{paid: `sk-"paid"`, free: "sk-free: x"} // quoting must hold
	for _, quota := range []float64{1, 0} {
		c.freeQuota = quota
		path := filepath.Join(t.TempDir(), "edgecache.yaml")
		if err := os.WriteFile(path, []byte(overloadConfigYAML(c, "http://127.0.0.1:1234", "/tmp/j dir", keys)), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := config.Load(path, func(string) string { return "" })
		if err != nil {
			t.Fatalf("quota %v: %v\n%s", quota, err, overloadConfigYAML(c, "http://127.0.0.1:1234", "/tmp/j dir", keys))
		}
		if cfg.Upstream.URL != "http://127.0.0.1:1234" || cfg.Degrade.JournalDir != "/tmp/j dir" || cfg.Semantic.Embedder != "lexical" {
			t.Errorf("upstream %q, journal %q, embedder %q", cfg.Upstream.URL, cfg.Degrade.JournalDir, cfg.Semantic.Embedder)
		}
		if a := cfg.Admission.Concurrency; a != (config.ConcurrencyLimits{Initial: 16, Min: 5, Max: 16}) {
			t.Errorf("concurrency %+v", a)
		}
		if len(cfg.Tenants) != 2 || cfg.Tenants[0].Lane != "paid" || cfg.Tenants[1].Lane != "free" ||
			!reflect.DeepEqual(cfg.Tenants[0].APIKeys, []string{keys.paid}) || !reflect.DeepEqual(cfg.Tenants[1].APIKeys, []string{keys.free}) {
			t.Errorf("tenants %+v", cfg.Tenants)
		}
		if cfg.Tenants[0].Limits != (config.Limits{}) {
			t.Errorf("paid has limits %+v", cfg.Tenants[0].Limits)
		}
		wantFree := config.Limits{}
		if quota > 0 {
			wantFree = config.Limits{RequestsPerSecond: 160, RequestBurst: 16}
		}
		if cfg.Tenants[1].Limits != wantFree {
			t.Errorf("quota %v: free limits %+v, want %+v", quota, cfg.Tenants[1].Limits, wantFree)
		}
		if len(cfg.Routes) != 1 || cfg.Routes[0].Path != chatPath || cfg.Routes[0].Cache.Mode != config.ModeOff || !cfg.Routes[0].Cache.NoTemplates {
			t.Errorf("routes %+v", cfg.Routes)
		}
	}
}

const upstreamsJSON = `{"upstreams":[{"target":"primary","breaker":{"state":"closed"},"requests_in_flight":3,
"limiter":{"Name":"primary","Limit":12,"InFlight":3,"SlowStart":true,"Queued":0,"TTFT":104100000,"LongTTFT":103700000,"DrainRate":160,
"Lanes":[{"Lane":"batch","Admitted":0},{"Lane":"free","Admitted":426,"Waited":816,"Shed":2,"Timeouts":406,"Cancelled":1},
{"Lane":"paid","Admitted":400,"Waited":399},{"Lane":"enterprise"}]}},{"target":"backup-1"}]}`

const metricsText = `# HELP edgecache_upstream_requests_total Calls to the upstream model.
# TYPE edgecache_upstream_requests_total counter
edgecache_upstream_requests_total{http_response_status_code="200",route="chat"} 826
edgecache_upstream_requests_total{error_type="timeout",http_response_status_code="0",route="chat"} 2
edgecache_upstream_requests_total{error_type="upstream_429",http_response_status_code="429",route="other"} 1
edgecache_upstream_requests_total{error_type="upstream_429",http_response_status_code="429",route="chat"} 3
edgecache_degrade_answers_total{reason="rate_limit_exceeded",route="chat",rung="shed"} 7185
edgecache_degrade_answers_total{reason="a \"quoted\", odd one",route="chat",rung="busy"} 5
edgecache_cache_bypasses_total{reason="off",route="chat"} 8000
go_goroutines 12
`

func TestParseAdminOutputs(t *testing.T) {
	lim, err := parseUpstreams([]byte(upstreamsJSON))
	if err != nil {
		t.Fatal(err)
	}
	want := &LimiterStats{Target: "primary", Limit: 12, TTFTMs: 104.1, LongTTFTMs: 103.7, InFlight: 3, SlowStart: true, Lanes: map[string]LimiterLane{
		"batch": {}, "enterprise": {}, "paid": {Admitted: 400, Waited: 399},
		"free": {Admitted: 426, Waited: 816, Shed: 2, Timeouts: 406, Cancelled: 1},
	}}
	if !reflect.DeepEqual(lim, want) {
		t.Errorf("parseUpstreams =\n %+v\nwant\n %+v", lim, want)
	}
	if _, err := parseUpstreams([]byte(`{"upstreams":[{"target":"primary"}]}`)); err == nil {
		t.Error("no limiter accepted")
	}
	if _, err := parseUpstreams([]byte(`<html>`)); err == nil {
		t.Error("HTML accepted")
	}

	up, deg, err := parseCounters(strings.NewReader(metricsText))
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]float64{"200": 826, "0 timeout": 2, "429 upstream_429": 4}; !reflect.DeepEqual(up, want) {
		t.Errorf("upstream counters %v, want %v", up, want)
	}
	if want := map[string]float64{"shed/rate_limit_exceeded": 7185, `busy/a "quoted", odd one`: 5}; !reflect.DeepEqual(deg, want) {
		t.Errorf("degraded counters %v, want %v", deg, want)
	}
	for _, bad := range []string{"", "# comment", "name{a=\"x\"", "name{a=x} 1", "name{} nan-ish", "lonely"} {
		if _, _, _, ok := parseMetricLine(bad); ok {
			t.Errorf("parseMetricLine(%q) ok", bad)
		}
	}

	d := counterDelta(map[string]float64{"200": 10, "gone": 3}, map[string]float64{"200": 25, "503": 2, "same": 0})
	if !reflect.DeepEqual(d, map[string]float64{"200": 15, "503": 2}) {
		t.Errorf("counterDelta = %v", d)
	}
	if got := formatCounts(map[string]float64{"b": 2, "a": 2, "c": 9}); got != "c ×9, a ×2, b ×2" {
		t.Errorf("formatCounts = %q", got)
	}
	if got := formatCounts(nil); got != "none" {
		t.Errorf("formatCounts(nil) = %q", got)
	}
	if got := (LimiterLane{Admitted: 5, Waited: 4, Shed: 3, Timeouts: 2, Cancelled: 1}).minus(LimiterLane{Admitted: 1, Waited: 1, Shed: 1, Timeouts: 1, Cancelled: 1}); got != (LimiterLane{Admitted: 4, Waited: 3, Shed: 2, Timeouts: 1}) {
		t.Errorf("minus = %+v", got)
	}
}

// stubEdge answers like edgecache would: paid always 200; free in turn
// 429 (quota, Retry-After), 503 (busy, Retry-After) and 500 (no
// Retry-After). It records what it was sent.
type stubEdge struct {
	free    atomic.Int64
	mu      sync.Mutex
	prompts map[string]bool
	bad     []string
}

func (s *stubEdge) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/admin/upstreams":
		_, _ = io.WriteString(w, upstreamsJSON)
		return
	case "/metrics":
		_, _ = io.WriteString(w, metricsText)
		return
	}
	body, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	if s.prompts[string(body)] {
		s.bad = append(s.bad, "repeated body "+string(body))
	}
	s.prompts[string(body)] = true
	if r.Method != http.MethodPost || r.URL.Path != chatPath || r.Header.Get("Cache-Control") != "no-store" ||
		r.Header.Get("Content-Type") != "application/json" {
		s.bad = append(s.bad, r.Method+" "+r.URL.Path+" "+r.Header.Get("Cache-Control"))
	}
	s.mu.Unlock()
	switch r.Header.Get("Authorization") {
	case "Bearer k-paid":
		_, _ = io.WriteString(w, `{"ok":true}`)
	case "Bearer k-free":
		switch s.free.Add(1) % 3 {
		case 1:
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			_, _ = io.WriteString(w, `{"error":{"code":"rate_limit_exceeded"}}`)
		case 2:
			w.Header().Set("Retry-After", "1")
			w.Header().Set("X-Edgecache-Degraded-Reason", "queued_timeout")
			w.WriteHeader(http.StatusServiceUnavailable)
		default:
			w.WriteHeader(http.StatusInternalServerError)
		}
	default:
		w.WriteHeader(http.StatusUnauthorized)
	}
}

func TestLoadgenMainAgainstStub(t *testing.T) {
	stub := &stubEdge{prompts: map[string]bool{}}
	srv := httptest.NewServer(stub)
	defer srv.Close()
	spec := LoadSpec{URL: srv.URL + chatPath, AdminURL: srv.URL, Timeout: 5 * time.Second, MaxInFlight: 64, RunID: "t",
		Phases: []LoadPhase{
			{Name: phaseUnloaded, Duration: 100 * time.Millisecond, Lanes: []LoadLane{{Name: "paid", Key: "k-paid", Rate: 100}}},
			{Name: phaseOverload, Duration: 100 * time.Millisecond, Lanes: []LoadLane{
				{Name: "paid", Key: "k-paid", Rate: 100}, {Name: "free", Key: "k-free", Rate: 300}}},
		}}
	data, _ := json.Marshal(spec)
	specPath := filepath.Join(t.TempDir(), "spec.json")
	if err := os.WriteFile(specPath, data, 0o600); err != nil {
		t.Fatal(err)
	}
	var out, log bytes.Buffer
	if err := Main(context.Background(), "edgebench", []string{"loadgen", "--spec", specPath}, &out, &log); err != nil {
		t.Fatalf("loadgen: %v\n%s", err, log.String())
	}
	var res LoadResult
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("%v:\n%s", err, out.String())
	}
	if len(res.Phases) != 2 || res.Phases[0].Name != phaseUnloaded || res.Phases[1].Name != phaseOverload {
		t.Fatalf("phases: %+v", res.Phases)
	}
	paid0, _ := res.Phases[0].Lane("paid")
	paid1, _ := res.Phases[1].Lane("paid")
	free, ok := res.Phases[1].Lane("free")
	if !ok {
		t.Fatal("no free lane in the overload phase")
	}
	for _, p := range []LaneResult{paid0, paid1} {
		if p.Scheduled != 10 || p.Sent != 10 || p.OK != 10 || p.OKLatency.N != 10 || p.SendLag.N != 10 {
			t.Errorf("paid: %+v", p)
		}
	}
	if free.Scheduled != 30 || free.Sent != 30 || free.Status429 != 10 || free.Status503 != 10 || free.Other != 10 ||
		free.Other5xx != 10 || free.RetryAfter != 20 || free.RateLimitCode != 10 || free.Errors != 0 ||
		!reflect.DeepEqual(free.Reasons, map[string]int64{"quota": 10, "queued_timeout": 10}) {
		t.Errorf("free: %+v", free)
	}
	if s := res.Phases[1].Snapshot; s == nil || s.Error != "" || s.Limiter == nil || s.Limiter.Limit != 12 || s.Upstream["200"] != 826 {
		t.Errorf("snapshot: %+v", s)
	}
	stub.mu.Lock()
	defer stub.mu.Unlock()
	if len(stub.prompts) != 50 || len(stub.bad) > 0 {
		t.Errorf("%d distinct bodies (want 50); bad requests: %q", len(stub.prompts), stub.bad)
	}
	if !strings.Contains(log.String(), "phase overload: 100ms, paid 100 req/s, free 300 req/s") {
		t.Errorf("log: %s", log.String())
	}
}

// TestLoadgenInFlightCap: requests due while the lane's cap is reached are
// skipped and counted, not queued; requests without an answer end at the
// client timeout, and the generator stops by itself.
func TestLoadgenInFlightCap(t *testing.T) {
	hold := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hold:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(hold)
	spec := LoadSpec{URL: srv.URL + chatPath, Timeout: 2 * time.Second, MaxInFlight: 2, RunID: "cap",
		Phases: []LoadPhase{{Name: "p", Duration: 20 * time.Millisecond, Lanes: []LoadLane{{Name: "free", Key: "k", Rate: 1000}}}}}
	if err := spec.Validate(); err != nil {
		t.Fatal(err)
	}
	g := newGenerator(spec)
	defer g.close()
	res, err := g.run(context.Background(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	l := res.Phases[0].Lanes[0]
	if l.Scheduled != 20 || l.Sent+l.Skipped != 20 || l.Sent < 1 || l.Sent > 20 || l.Skipped < 1 || l.Errors != l.Sent || l.OK != 0 ||
		l.ErrorKinds["timeout"] != l.Errors {
		t.Errorf("capped lane: %+v", l)
	}
	if res.Phases[0].Snapshot != nil {
		t.Errorf("snapshot without an admin URL: %+v", res.Phases[0].Snapshot)
	}
}

func TestLoadSpecValidate(t *testing.T) {
	ok := LoadSpec{URL: "http://x/v1/chat/completions", Timeout: time.Second, MaxInFlight: 1,
		Phases: []LoadPhase{{Name: "p", Duration: time.Second, Lanes: []LoadLane{{Name: "a", Rate: 1}}}}}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mod := range map[string]func(*LoadSpec){
		"url":       func(s *LoadSpec) { s.URL = "x" },
		"timeout":   func(s *LoadSpec) { s.Timeout = 0 },
		"in flight": func(s *LoadSpec) { s.MaxInFlight = 0 },
		"no phase":  func(s *LoadSpec) { s.Phases = nil },
		"duration":  func(s *LoadSpec) { s.Phases = []LoadPhase{{Name: "p", Lanes: ok.Phases[0].Lanes}} },
		"rate": func(s *LoadSpec) {
			s.Phases = []LoadPhase{{Name: "p", Duration: time.Second, Lanes: []LoadLane{{Name: "a", Rate: 0}}}}
		},
	} {
		s := ok
		mod(&s)
		if err := s.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestOverloadSubcommands(t *testing.T) {
	ctx := context.Background()
	if err := Main(ctx, "edgebench", []string{"overload", "-h"}, io.Discard, io.Discard); err != nil {
		t.Errorf("overload -h: %v", err)
	}
	if err := Main(ctx, "edgebench", []string{"overload", "--duration", "0s"}, io.Discard, io.Discard); err == nil {
		t.Error("overload --duration 0s accepted")
	}
	if err := Main(ctx, "edgebench", []string{"loadgen"}, io.Discard, io.Discard); err == nil {
		t.Error("loadgen without --spec accepted")
	}
	var out strings.Builder
	if err := Main(ctx, "edgebench", []string{"help"}, &out, io.Discard); err != nil || !strings.Contains(out.String(), "edgebench overload") {
		t.Errorf("help: %v, %q", err, out.String())
	}
}

func TestBusyMachine(t *testing.T) {
	for la, want := range map[string]bool{"0.50 1 1": false, "1.00 9 9": false, "1.01 0 0": true, "": false, "x": false} {
		if got := busyMachine(Machine{NProc: 2, LoadAvg: la}) != ""; got != want {
			t.Errorf("loadavg %q: warning %v", la, got)
		}
	}
}

// TestStartPinnedEnv: the explicit variables reach the child, the
// caller's EDGECACHE_* ones do not.
func TestStartPinnedEnv(t *testing.T) {
	if _, err := exec.LookPath("taskset"); err != nil {
		t.Skip("no taskset")
	}
	t.Setenv("EDGECACHE_REDIS_ADDR", "leaked:6379")
	var ps procs
	defer func() { _ = ps.stopAll() }()
	p, err := ps.startPinnedEnv(t.TempDir(), "env", loadCPU, []string{"EDGECACHE_POLICY_FILE=/scratch/routes.json"},
		"/bin/sh", "-c", `echo "policy=$EDGECACHE_POLICY_FILE redis=$EDGECACHE_REDIS_ADDR"`)
	if err != nil {
		t.Fatal(err)
	}
	<-p.done
	if got := strings.TrimSpace(p.logTail()); got != "policy=/scratch/routes.json redis=" {
		t.Errorf("child saw %q", got)
	}
}
