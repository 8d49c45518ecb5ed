package bench

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func row(scenario string, conns int, rps, p50, p99 float64) Result {
	return Result{Scenario: scenario, Conns: conns, WrkResult: WrkResult{RequestsPerSec: rps, P50Ms: p50, P99Ms: p99}}
}

// sampleResults: hits at 80 % and 60 % of the ceiling, hit p99 1.5 ms at
// 32, pass-through at 50 % and 40 % of llmsim direct sharing CPU 0 with
// wrk (c2), and at 25 % and 20 % of llmsim direct on its own core (c).
func sampleResults() []Result {
	return []Result{
		row(ScenarioCeiling, 32, 40000, 0.7, 1.2), row(ScenarioCeiling, 128, 50000, 2.5, 4),
		row(ScenarioHit, 32, 32000, 0.9, 1.5), row(ScenarioHit, 128, 30000, 4, 9),
		row(ScenarioDirect, 32, 60000, 0.5, 1), row(ScenarioDirect, 128, 70000, 1.8, 3.5),
		row(ScenarioDirectShared, 32, 30000, 1, 2), row(ScenarioDirectShared, 128, 35000, 3.5, 7),
		row(ScenarioPassthrough, 32, 15000, 2, 4), row(ScenarioPassthrough, 128, 14000, 9, 20),
	}
}

func TestRatio(t *testing.T) {
	rs := sampleResults()
	for _, tt := range []struct {
		scenario string
		conns    int
		want     float64
		ok       bool
	}{
		{ScenarioHit, 32, 0.8, true},
		{ScenarioHit, 128, 0.6, true},
		{ScenarioPassthrough, 32, 0.5, true}, // of (c2), not (c)
		{ScenarioPassthrough, 128, 0.4, true},
		{ScenarioHit, 64, 0, false},     // not measured
		{ScenarioCeiling, 32, 0, false}, // a base has no ratio
		{ScenarioDirect, 32, 0, false},
		{ScenarioDirectShared, 32, 0, false},
	} {
		got, ok := Ratio(rs, tt.scenario, tt.conns)
		if ok != tt.ok || !near(got, tt.want) {
			t.Errorf("Ratio(%s, %d) = %v, %v; want %v, %v", tt.scenario, tt.conns, got, ok, tt.want, tt.ok)
		}
	}
	// A failed base row gives no ratio.
	rs[0].Error = "3 non-2xx/3xx responses"
	if _, ok := Ratio(rs, ScenarioHit, 32); ok {
		t.Error("Ratio against a failed ceiling row is ok")
	}
}

func TestComputeTargets(t *testing.T) {
	got := ComputeTargets(sampleResults(), []int{32, 128})
	type brief struct {
		name  string
		value float64
		pass  bool
	}
	want := []brief{
		{"exact L1 hits / ceiling @32", 0.8, true},
		{"exact L1 hits / ceiling @128", 0.6, false},
		{"exact L1 hit p99 / ceiling p99 @32", 1.25, true}, // 1.5 ms / 1.2 ms
		{"pass-through / llmsim direct @32", 0.5, true},
		{"pass-through / llmsim direct @128", 0.4, false},
	}
	if len(got) != len(want) {
		t.Fatalf("%d targets, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		g := got[i]
		if g.Name != w.name || !near(g.Value, w.value) || g.Pass != w.pass || !g.Known {
			t.Errorf("target %d = %+v, want %+v", i, g, w)
		}
	}

	// Boundaries are inclusive: exactly 70 %, 1.5 × the ceiling's p99 and 45 % pass.
	rs := []Result{
		row(ScenarioCeiling, 32, 1000, 1, 2), row(ScenarioHit, 32, 700, 1, 3),
		row(ScenarioDirectShared, 32, 1000, 1, 1), row(ScenarioPassthrough, 32, 450, 1, 1),
	}
	for _, tg := range ComputeTargets(rs, []int{32}) {
		if !tg.Pass {
			t.Errorf("boundary target %+v fails", tg)
		}
	}
	rs[1].P99Ms = 3.01
	if tg := ComputeTargets(rs, []int{32})[1]; tg.Pass || tg.Name != "exact L1 hit p99 / ceiling p99 @32" {
		t.Errorf("p99 3.01 ms against 2 ms: %+v, want FAIL", tg)
	}
	// Without a usable ceiling row the p99 target is unknown.
	rs[0].Error = "boom"
	if tg := ComputeTargets(rs, []int{32})[1]; tg.Known || tg.Pass {
		t.Errorf("p99 without a ceiling: %+v, want unknown", tg)
	}

	// Missing or failed rows: unknown, FAIL; no p99 target without 32.
	rs = []Result{row(ScenarioCeiling, 64, 1000, 1, 1), {Scenario: ScenarioHit, Conns: 64, Error: "boom"}}
	ts := ComputeTargets(rs, []int{64})
	if len(ts) != 2 {
		t.Fatalf("targets at 64 only: %+v, want 2 (no p99 target)", ts)
	}
	for _, tg := range ts {
		if tg.Known || tg.Pass || tg.valueString() != "n/a" {
			t.Errorf("target %+v should be unknown and FAIL", tg)
		}
	}
}

// TestDirectSharedRegistered: (c2) runs between (c) and (d), and (d) and
// (f) are taken against it while (i) stays against (d).
func TestDirectSharedRegistered(t *testing.T) {
	if slices.Index(Scenarios, ScenarioDirectShared) != slices.Index(Scenarios, ScenarioDirect)+1 ||
		slices.Index(Scenarios, ScenarioPassthrough) != slices.Index(Scenarios, ScenarioDirectShared)+1 ||
		!strings.HasPrefix(scenarioLabel[ScenarioDirectShared], "(c2) ") || scenarioLetter[ScenarioDirectShared] != "c2" {
		t.Fatal("scenario (c2) is not registered between (c) and (d)")
	}
	if baseOf[ScenarioPassthrough] != ScenarioDirectShared || baseOf[ScenarioProxy] != ScenarioDirectShared ||
		baseOf[ScenarioPoolPassthrough] != ScenarioPassthrough || baseOf[ScenarioDirectShared] != "" {
		t.Errorf("bases: %v", baseOf)
	}
	if scenarioLabel[ScenarioDirect] != "(c) llmsim direct" || scenarioLabel[ScenarioPassthrough] != "(d) edgecache pass-through (no-store)" {
		t.Error("the labels of (c) and (d) changed")
	}
}

// TestPassthroughTargetReadsDirectShared: the pass-through goal is (d) over
// (c2), inclusive at 45 %, whatever (c) says; (d) over (c) is reported
// beside it with no limit and never passes or fails a run.
func TestPassthroughTargetReadsDirectShared(t *testing.T) {
	goal := func(rs []Result) Target {
		for _, tg := range ComputeTargets(rs, []int{32}) {
			if tg.Name == "pass-through / llmsim direct @32" {
				return tg
			}
		}
		t.Fatalf("no pass-through target in %+v", ComputeTargets(rs, []int{32}))
		return Target{}
	}
	rs := []Result{row(ScenarioDirect, 32, 2000, 1, 1), row(ScenarioDirectShared, 32, 1000, 1, 1), row(ScenarioPassthrough, 32, 450, 1, 1)}
	if tg := goal(rs); !tg.Known || !tg.Pass || !near(tg.Value, 0.45) || tg.Limit != MinPassthroughRatio {
		t.Errorf("450 of (c2)'s 1,000 req/s: %+v, want 45 %%, PASS", tg)
	}
	rs[2].RequestsPerSec = 449
	if tg := goal(rs); !tg.Known || tg.Pass || !near(tg.Value, 0.449) {
		t.Errorf("449 of (c2)'s 1,000 req/s: %+v, want 44.9 %%, FAIL", tg)
	}
	// (d) at 60 % of (c), but no (c2): unknown and FAIL, not read off (c).
	rs = []Result{row(ScenarioDirect, 32, 1000, 1, 1), row(ScenarioPassthrough, 32, 600, 1, 1)}
	if tg := goal(rs); tg.Known || tg.Pass {
		t.Errorf("without (c2): %+v, want unknown, FAIL", tg)
	}
	info := ComputeInformational(rs, []int{32, 128})
	if len(info) != 2 || info[0].Name != "pass-through / llmsim direct on its own core @32 (informational)" ||
		!info[0].Known || !near(info[0].Value, 0.6) || info[0].Pass || info[0].Limit != 0 || info[1].Known {
		t.Errorf("informational %+v", info)
	}
	if info := ComputeInformational([]Result{row(ScenarioDirectShared, 32, 1000, 1, 1), row(ScenarioPassthrough, 32, 450, 1, 1)}, []int{32}); info != nil {
		t.Errorf("informational without (c): %+v", info)
	}
	// The reference (f) says its bases as well.
	rs = []Result{row(ScenarioDirect, 32, 2000, 1, 1), row(ScenarioDirectShared, 32, 1000, 1, 1), row(ScenarioProxy, 32, 450, 1, 1)}
	if got := ratioCell(rs, rs[2]); got != "45.0 % of (c2); 22.5 % of (c)" {
		t.Errorf("(f) ratio cell %q", got)
	}
	if got := ratioCell(rs[1:], rs[2]); got != "45.0 % of (c2)" {
		t.Errorf("(f) ratio cell without (c): %q", got)
	}
}

func sampleReport() Report {
	rs := sampleResults()
	rs[9].SocketErrors = SocketErrors{Read: 3}
	rs[0].ServerCPUUsPerRequest = 25
	rs[2].ServerCPUUsPerRequest = 31.3
	return Report{
		Machine: Machine{NProc: 2, CPUModel: "Test CPU @ 2.00GHz", GoVersion: "go1.26.8 linux/amd64",
			Kernel: "6.1.0", Wrk: "wrk debian/4.1.0-3+b2 [epoll]", Revision: "43977bd1e2f3", LoadAvg: "0.10 0.20 0.30",
			Date: "2026-11-23T06:40:00Z"},
		Command:  "edgebench run --duration 3s",
		Duration: "3s", Warmup: "1s", Conns: []int{32, 128},
		RequestBytes: len(ChatBody), ResponseBytes: 459,
		Results: rs, Targets: ComputeTargets(rs, []int{32, 128}), Informational: ComputeInformational(rs, []int{32, 128}),
	}
}

func TestWriteMarkdown(t *testing.T) {
	var b strings.Builder
	if err := WriteMarkdown(&b, sampleReport()); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"Machine: nproc 2, Test CPU @ 2.00GHz, go1.26.8 linux/amd64, Linux 6.1.0, wrk debian/4.1.0-3+b2 [epoll], edgecache 43977bd1e2f3, loadavg 0.10 0.20 0.30, 2026-11-23T06:40:00Z\n",
		"Command: `edgebench run --duration 3s`\n",
		"| scenario | conns | req/s | server CPU µs/req | p50 ms | p99 ms | ratio |\n",
		"| (a) ceiling: net/http, same bytes | 32 | 40000 | 25.0 | 0.70 | 1.20 | 100 % (base) |\n",
		"| (b) edgecache exact L1 hit | 32 | 32000 | 31.3 | 0.90 | 1.50 | 80.0 % of (a) |\n",
		"| (b) edgecache exact L1 hit | 128 | 30000 | n/a | 4.00 | 9.00 | 60.0 % of (a) |\n",
		"in (b), (c2) and (d) llmsim runs on CPU 0 too.",
		"(c2) is (c) with llmsim on CPU 0 beside wrk instead of alone on CPU 1",
		"| (c) llmsim direct | 128 | 70000 | n/a | 1.80 | 3.50 | 100 % (base) |\n",
		"| (c2) llmsim direct, sharing CPU 0 with wrk | 128 | 35000 | n/a | 3.50 | 7.00 | 100 % (base) |\n",
		"| (d) edgecache pass-through (no-store) | 128 | 14000 | n/a | 9.00 | 20.00 | 40.0 % of (c2); 20.0 % of (c) |\n",
		"| exact L1 hits / ceiling @32 | 80.0 % | ≥ 70 % | PASS |\n",
		"| exact L1 hits / ceiling @128 | 60.0 % | ≥ 70 % | FAIL |\n",
		"| exact L1 hit p99 / ceiling p99 @32 | 1.25× | ≤ 1.5× | PASS |\n",
		"| pass-through / llmsim direct @128 | 40.0 % | ≥ 45 % | FAIL |\n",
		"| pass-through / llmsim direct on its own core @32 (informational) | 25.0 % | none | info |\n",
		"Targets: 3/5 PASS.\n", // the informational lines are no targets
		"- (d) edgecache pass-through (no-store) @128: socket errors: connect 0, read 3, write 0, timeout 0\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q; output:\n%s", want, out)
		}
	}
	// Rows come in scenario order, 32 before 128.
	if i, j := strings.Index(out, "| (a) ceiling: net/http, same bytes | 128"), strings.Index(out, "| (b) edgecache exact L1 hit | 32"); i < 0 || j < i {
		t.Errorf("row order wrong:\n%s", out)
	}
}

func TestWriteMarkdownFailedRow(t *testing.T) {
	rep := sampleReport()
	rep.Results[2] = Result{Scenario: ScenarioHit, Conns: 32, Error: "not an L1 hit"}
	rep.Results[3].Non2xx = 12
	rep.Results[3].Error = "12 non-2xx/3xx responses"
	rep.Targets = ComputeTargets(rep.Results, rep.Conns)
	var b strings.Builder
	if err := WriteMarkdown(&b, rep); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"| (b) edgecache exact L1 hit | 32 | FAILED | | | | n/a |\n",
		"| (b) edgecache exact L1 hit | 128 | 30000 (FAILED) | n/a | 4.00 | 9.00 | n/a |\n",
		"| exact L1 hits / ceiling @32 | n/a | ≥ 70 % | FAIL |\n",
		"| exact L1 hit p99 / ceiling p99 @32 | n/a | ≤ 1.5× | FAIL |\n",
		"- (b) edgecache exact L1 hit @32 FAILED: not an L1 hit\n",
		"- (b) edgecache exact L1 hit @128: 12 non-2xx/3xx responses\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q; output:\n%s", want, out)
		}
	}
}

func TestWriteJSON(t *testing.T) {
	rep := sampleReport()
	path := filepath.Join(t.TempDir(), "bench.json")
	if err := WriteJSON(path, rep); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, rep) {
		t.Errorf("JSON round trip differs:\n got %+v\nwant %+v", back, rep)
	}
	for _, key := range []string{`"requests_per_sec": 40000`, `"p99_ms": 1.2`, `"scenario": "l1-hit"`, `"pass": true`,
		`"scenario": "llmsim-direct-shared"`, `"informational": [`} {
		if !strings.Contains(string(data), key) {
			t.Errorf("JSON lacks %s:\n%s", key, data)
		}
	}
}

// withSemantic is sampleResults plus (e) rows: 2,712 req/s at 32 (pass),
// 2,100 at 128 (fail).
func withSemantic() []Result {
	rs := sampleResults()
	e32, e128 := row(ScenarioSemantic, 32, 2712.4, 5.1, 12.3), row(ScenarioSemantic, 128, 2100, 40, 95)
	e32.SemanticHitShare, e128.SemanticHitShare = 0.985, 0.9999
	one := 1.0
	e32.EmbeddingsPerRequest = &one
	return append(rs, e32, e128)
}

func TestComputeTargetsSemantic(t *testing.T) {
	ts := ComputeTargets(withSemantic(), []int{32, 128})
	if len(ts) != 7 {
		t.Fatalf("%d targets, want 7: %+v", len(ts), ts)
	}
	for i, w := range []struct {
		name  string
		value float64
		pass  bool
	}{{"semantic hits @32", 2712.4, true}, {"semantic hits @128", 2100, false}} {
		g := ts[5+i]
		if g.Name != w.name || !near(g.Value, w.value) || g.Pass != w.pass || !g.Known || g.Unit != "req/s" || g.Limit != MinSemanticRPS || g.Max {
			t.Errorf("target %d = %+v, want %+v", 5+i, g, w)
		}
	}
	// Absolute, inclusive: exactly 2,500 req/s passes, whatever the other rows.
	rs := []Result{row(ScenarioSemantic, 32, 2500, 1, 2)}
	if tg := ComputeTargets(rs, []int{32}); len(tg) != 4 || !tg[3].Pass || tg[3].Name != "semantic hits @32" {
		t.Errorf("2,500 req/s alone: %+v, want the semantic target to PASS", tg)
	}
	rs[0].RequestsPerSec = 2499
	if tg := ComputeTargets(rs, []int{32}); tg[3].Pass {
		t.Errorf("2,499 req/s: %+v, want FAIL", tg[3])
	}
	// A failed (e) row, or one missing at a count: unknown, FAIL.
	rs = []Result{{Scenario: ScenarioSemantic, Conns: 32, WrkResult: WrkResult{RequestsPerSec: 9000}, Error: "only 40.0 % semantic hits"}}
	for _, tg := range ComputeTargets(rs, []int{32, 128})[5:] {
		if tg.Known || tg.Pass || tg.valueString() != "n/a" {
			t.Errorf("target %+v should be unknown and FAIL", tg)
		}
	}
}

func TestWriteMarkdownSemantic(t *testing.T) {
	rep := sampleReport()
	rep.Results = withSemantic()
	rep.Results[11].Error = "only 50.0 % of the measured requests were semantic hits"
	rep.Results[11].SemanticHitShare = 0.5
	rep.SemanticPrompts = 200
	rep.Targets = ComputeTargets(rep.Results, rep.Conns)
	var b strings.Builder
	if err := WriteMarkdown(&b, rep); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"in (b), (c2), (d) and (e) llmsim runs on CPU 0 too",
		"(e): route in mode semantic, remote embedder → llmsim --embed-fold (CPU 0, also the model), verifier defaults; 200 distinct prompts",
		"| (e) edgecache semantic hit (remote embedder → llmsim) | 32 | 2712 | n/a | 5.10 | 12.30 | 98.5 % semantic hits, 1.00 embeddings/req |\n",
		"| (e) edgecache semantic hit (remote embedder → llmsim) | 128 | 2100 (FAILED) | n/a | 40.00 | 95.00 | 50.0 % semantic hits |\n",
		"| semantic hits @32 | 2,712 req/s | ≥ 2,500 req/s | PASS |\n",
		"| semantic hits @128 | n/a | ≥ 2,500 req/s | FAIL |\n",
		"Targets: 4/7 PASS.\n",
		"- (e) edgecache semantic hit (remote embedder → llmsim) @128 FAILED: only 50.0 % of the measured requests were semantic hits\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q; output:\n%s", want, out)
		}
	}
	if i, j := strings.Index(out, "| (d) edgecache pass-through (no-store) | 128"), strings.Index(out, "| (e) edgecache semantic hit"); i < 0 || j < i {
		t.Errorf("(e) rows should follow (d):\n%s", out)
	}
	// Without (e) rows there is neither the (e) line nor a semantic target.
	b.Reset()
	if err := WriteMarkdown(&b, sampleReport()); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "(e)") || strings.Contains(b.String(), "semantic hits @") {
		t.Errorf("report without (e) rows mentions it:\n%s", b.String())
	}
}

func TestThousands(t *testing.T) {
	for v, want := range map[float64]string{0: "0", 999: "999", 2500: "2,500", 2712.6: "2,713", 1234567: "1,234,567", -2500: "-2,500"} {
		if got := thousands(v); got != want {
			t.Errorf("thousands(%v) = %q, want %q", v, got, want)
		}
	}
}

func TestWriteJSONSemantic(t *testing.T) {
	rep := sampleReport()
	rep.Results = withSemantic()
	rep.SemanticPrompts = 200
	rep.Targets = ComputeTargets(rep.Results, rep.Conns)
	path := filepath.Join(t.TempDir(), "bench.json")
	if err := WriteJSON(path, rep); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, rep) {
		t.Errorf("JSON round trip differs:\n got %+v\nwant %+v", back, rep)
	}
	for _, key := range []string{`"scenario": "semantic-hit"`, `"semantic_hit_share": 0.985`, `"embeddings_per_request": 1`, `"semantic_prompts": 200`, `"unit": "req/s"`} {
		if !strings.Contains(string(data), key) {
			t.Errorf("JSON lacks %s", key)
		}
	}
}

func TestCPUUsPerRequest(t *testing.T) {
	// 150 ticks = 1.5 s of CPU over 50,000 requests: 30 µs each.
	if got := cpuUsPerRequest(150, 50_000); !near(got, 30) {
		t.Errorf("cpuUsPerRequest = %v, want 30", got)
	}
	if got := cpuUsPerRequest(10, 0); got != 0 {
		t.Errorf("without requests: %v", got)
	}
}
