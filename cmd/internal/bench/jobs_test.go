package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/edgecache/edgecache/cmd/internal/config"
)

// phaseOf counts completed clients only in the percentiles, sums refusals
// and polls, and divides the busy slot time by C × wall.
func TestJobsPhaseOf(t *testing.T) {
	rs := []clientResult{
		{done: true, elapsed: 100 * time.Millisecond, refusals: 2},
		{done: true, elapsed: 300 * time.Millisecond, polls: 5},
		{done: false, elapsed: time.Second, refusals: 1},
	}
	p := phaseOf("plain", rs, time.Second, 7, 1500, 2)
	if p.Clients != 3 || p.Completed != 2 || p.Refusals != 3 || p.Polls != 5 || p.UpstreamCalls != 7 || p.BusyMs != 1500 {
		t.Errorf("counts %+v", p)
	}
	if p.Completion != (Latency{N: 2, P50Ms: 100, P90Ms: 300, P99Ms: 300, MaxMs: 300}) {
		t.Errorf("completion %+v", p.Completion)
	}
	if p.WallMs != 1000 || p.Utilisation != 0.75 { // 1.5 s busy of 2 slots × 1 s
		t.Errorf("wall %v utilisation %v", p.WallMs, p.Utilisation)
	}
}

func TestJobsConfigYAML(t *testing.T) {
	c, err := parseJobsFlags([]string{"--m", "50", "--concurrency", "3"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "edgecache.yaml")
	os.WriteFile(path, []byte(jobsConfigYAML(c, "http://127.0.0.1:1234", "/tmp/j")), 0o600)
	cfg, err := config.Load(path, func(string) string { return "" })
	if err != nil {
		t.Fatalf("%v\n%s", err, jobsConfigYAML(c, "http://127.0.0.1:1234", "/tmp/j"))
	}
	if a := cfg.Admission.Concurrency; a != (config.ConcurrencyLimits{Initial: 3, Min: 1, Max: 3}) {
		t.Errorf("concurrency %+v", a)
	}
	var jobs bool
	for _, r := range cfg.Routes {
		if r.Path == responsesPath {
			jobs = r.Jobs.Enabled && r.Jobs.MaxPerTenant == 50
		}
	}
	if !jobs {
		t.Errorf("no responses route with jobs for 50 clients: %+v", cfg.Routes)
	}
	if _, err := parseJobsFlags([]string{"--m", "0"}, io.Discard); err == nil {
		t.Error("--m 0 accepted")
	}
}

// TestJobsSmoke runs `edgebench jobs` with the real binaries on a small
// M: every client of both phases completes, and the report's numbers come
// from the run (llmsim's counters, the clients' clocks). It measures
// nothing: the machine is shared.
func TestJobsSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds binaries")
	}
	if _, err := exec.LookPath("taskset"); err != nil || runtime.NumCPU() < 2 {
		t.Skip("needs taskset and 2 CPUs")
	}
	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", bin, "github.com/edgecache/edgecache/cmd/edgebench",
		"github.com/edgecache/edgecache/cmd/edgecache", "github.com/edgecache/edgecache/cmd/llmsim")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	const m, c, ttft = 8, 2, 100 * time.Millisecond
	jsonPath := filepath.Join(bin, "jobs.json")
	var out, errb bytes.Buffer
	err := Main(context.Background(), "edgebench", []string{"jobs", "--bin", bin, "--m", "8", "--concurrency", "2",
		"--ttft", ttft.String(), "--poll", "20ms", "--timeout", "1m", "--json", jsonPath}, &out, &errb)
	if err != nil {
		t.Fatalf("jobs: %v\n%s\n%s", err, out.String(), errb.String())
	}
	t.Logf("report:\n%s", out.String())
	data, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	var rep JobsReport
	if err := json.Unmarshal(data, &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Phases) != 2 || rep.Phases[0].Name != "plain" || rep.Phases[1].Name != "jobs" {
		t.Fatalf("phases %+v", rep.Phases)
	}
	for _, p := range rep.Phases {
		l := p.Completion
		switch {
		case p.Clients != m || p.Completed != m || l.N != m:
			t.Errorf("%s: %d of %d completed (%d timed)", p.Name, p.Completed, p.Clients, l.N)
		case !(l.P50Ms > 0 && l.P50Ms <= l.P99Ms && l.P99Ms <= l.MaxMs && l.MaxMs <= p.WallMs+1):
			t.Errorf("%s: completion %+v, wall %.0f ms", p.Name, l, p.WallMs)
		case p.UpstreamCalls < m:
			t.Errorf("%s: llmsim saw %d calls for %d answers", p.Name, p.UpstreamCalls, m)
		case p.BusyMs < m*ttft.Milliseconds(): // each answer held a slot at least T
			t.Errorf("%s: llmsim busy %d ms for %d answers of %v", p.Name, p.BusyMs, m, ttft)
		case p.Utilisation <= 0 || p.Utilisation > 1.05:
			t.Errorf("%s: utilisation %v out of (0, 1]", p.Name, p.Utilisation)
		}
		if min := float64(m*ttft.Milliseconds()) / c; p.WallMs < min { // C slots serve M answers of T
			t.Errorf("%s: wall %.0f ms, below the model's %.0f ms", p.Name, p.WallMs, min)
		}
	}
	if rep.Phases[1].Polls == 0 || !strings.Contains(out.String(), "| jobs | 8 / 8 |") {
		t.Errorf("jobs phase: %d polls; markdown:\n%s", rep.Phases[1].Polls, out.String())
	}
}
