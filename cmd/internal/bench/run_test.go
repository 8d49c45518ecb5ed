package bench

import (
	"context"
	"errors"
	"flag"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestMainSubcommands(t *testing.T) {
	ctx := context.Background()
	if err := Main(ctx, "edgebench", nil, io.Discard, io.Discard); err == nil {
		t.Error("no subcommand accepted")
	}
	if err := Main(ctx, "edgebench", []string{"bogus"}, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "bogus") {
		t.Errorf("unknown subcommand: %v", err)
	}
	var out strings.Builder
	if err := Main(ctx, "edgebench", []string{"help"}, &out, io.Discard); err != nil || !strings.Contains(out.String(), "edgebench run") {
		t.Errorf("help: %v, %q", err, out.String())
	}
	if err := Main(ctx, "edgebench", []string{"run", "-h"}, io.Discard, io.Discard); err != nil {
		t.Errorf("run -h: %v", err)
	}
}

func TestParseRunFlags(t *testing.T) {
	c, err := parseRunFlags(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.duration != 10*time.Second || c.warmup != 2*time.Second || !reflect.DeepEqual(c.conns, []int{32, 128}) || c.bin == "" {
		t.Errorf("defaults: %+v", c)
	}
	c, err = parseRunFlags([]string{"--duration", "3s", "--warmup", "0s", "--conns", " 8, 32,8 ", "--bin", "/x", "--json", "/tmp/r.json"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.duration != 3*time.Second || c.warmup != 0 || !reflect.DeepEqual(c.conns, []int{8, 32}) || c.bin != "/x" || c.jsonPath != "/tmp/r.json" {
		t.Errorf("parsed: %+v", c)
	}
	for _, bad := range [][]string{
		{"--conns", "0"}, {"--conns", "x"}, {"--conns", ","}, {"--duration", "500ms"}, {"--warmup", "-1s"}, {"extra"},
	} {
		if _, err := parseRunFlags(bad, io.Discard); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestCheckPrereqsMissingBinaries(t *testing.T) {
	if _, err := exec.LookPath("wrk"); err != nil {
		if err := checkPrereqs(t.TempDir()); err == nil || !strings.Contains(err.Error(), "apt-get install -y wrk") {
			t.Errorf("without wrk: %v", err)
		}
		return
	}
	if _, err := exec.LookPath("taskset"); err != nil {
		t.Skip("no taskset")
	}
	dir := t.TempDir()
	err := checkPrereqs(dir)
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "edgecache")) || !strings.Contains(err.Error(), "go build") {
		t.Errorf("empty --bin: %v", err)
	}
}

func TestShellJoin(t *testing.T) {
	got := shellJoin([]string{"./bin/edgebench", "run", "--conns", "32,128", "--json", "a b.json", "it's", ""})
	want := `./bin/edgebench run --conns 32,128 --json 'a b.json' 'it'\''s' ''`
	if got != want {
		t.Errorf("shellJoin = %s, want %s", got, want)
	}
}

func TestCacheStatusChecks(t *testing.T) {
	for cs, want := range map[string]bool{
		"edgecache; hit; detail=l1":                  true,
		"edgecache; hit; detail=l1; ttl=3599":        true,
		"edgecache; hit; detail=l2":                  false,
		"edgecache; hit; detail=l1x":                 false,
		"edgecache; fwd=uri-miss; stored":            false,
		"edgecache; fwd=bypass; detail=no-store":     false,
		"":                                           false,
		"other; edgecache; hit; detail=l1; ttl=3599": false,
	} {
		if got := isHit(cs); got != want {
			t.Errorf("isHit(%q) = %v", cs, got)
		}
	}
	if !isBypass("edgecache; fwd=bypass; detail=no-store") || isBypass("edgecache; hit; detail=l1") {
		t.Error("isBypass")
	}
}

func TestCleanEnv(t *testing.T) {
	got := cleanEnv([]string{"PATH=/bin", "EDGECACHE_REDIS_ADDR=x:6379", "HOME=/root", "EDGECACHE_CONFIG=/c.yaml"})
	if !reflect.DeepEqual(got, []string{"PATH=/bin", "HOME=/root"}) {
		t.Errorf("cleanEnv = %q", got)
	}
}

// TestStopKillsProcessGroups starts a shell with a background child the
// way servers are started and checks that stopping leaves nothing behind,
// even when SIGTERM is ignored.
func TestStopKillsProcessGroups(t *testing.T) {
	if _, err := exec.LookPath("taskset"); err != nil {
		t.Skip("no taskset")
	}
	var ps procs
	// Both the shell and its child ignore SIGTERM (an ignored signal stays
	// ignored across fork and exec), so only the SIGKILL after the grace
	// period ends them.
	p, err := ps.startPinned(t.TempDir(), "sh", 0, "/bin/sh", "-c", "trap '' TERM; sleep 60 & wait")
	if err != nil {
		t.Fatal(err)
	}
	pgid := p.cmd.Process.Pid
	if err := waitReady(context.Background(), p, 5*time.Second, func(context.Context) error {
		out, _ := exec.Command("pgrep", "-g", strconv.Itoa(pgid)).Output()
		if len(strings.Fields(string(out))) < 2 {
			return errors.New("child not started yet")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := p.stop(200 * time.Millisecond); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("stop = %v, want a 'did not stop ... killed' error", err)
	}
	if live := liveInGroup(pgid); len(live) > 0 {
		t.Errorf("processes %v of group %d still alive after stop", live, pgid)
	}
	// stopAll after stop: nothing left to do, the list is emptied.
	_ = ps.stopAll()
	if len(ps.list) != 0 {
		t.Errorf("%d procs still tracked", len(ps.list))
	}
	if _, err := os.Stat(p.logPath); err != nil {
		t.Errorf("log file: %v", err)
	}
}

func TestBestRun(t *testing.T) {
	run := func(rps float64, p99 float64, errText string) Result {
		return Result{Scenario: ScenarioHit, Conns: 32, Error: errText, WrkResult: WrkResult{RequestsPerSec: rps, P99Ms: p99}}
	}
	if got := bestRun([]Result{run(30000, 3, ""), run(34000, 2.5, ""), run(31000, 2, "")}); got.RequestsPerSec != 34000 || got.P99Ms != 2.5 {
		t.Errorf("best of three: %+v, want the 34000 req/s run with its own p99", got)
	}
	if got := bestRun([]Result{run(34000, 2, ""), run(0, 0, "wrk failed")}); got.Error != "wrk failed" {
		t.Errorf("a failed run must fail the row: %+v", got)
	}
	if _, err := parseRunFlags([]string{"--best-of", "0"}, io.Discard); err == nil {
		t.Error("--best-of 0 accepted")
	}
	if c, err := parseRunFlags([]string{"--best-of", "3"}, io.Discard); err != nil || c.bestOf != 3 {
		t.Errorf("--best-of 3: %+v, %v", c.bestOf, err)
	}
}

// TestParseScenariosDirectShared: (c2) is picked by "c2", "(c2)" or its
// name, "c" does not pick it, and without (d) neither the pass-through goal
// nor its informational reading against (c) is reported.
func TestParseScenariosDirectShared(t *testing.T) {
	c, err := parseRunFlags([]string{"--scenarios", "c, (c2),llmsim-direct-shared,d"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.scenarios) != 3 || !c.selected(ScenarioDirect) || !c.selected(ScenarioDirectShared) || !c.selected(ScenarioPassthrough) {
		t.Errorf("selection %v", c.scenarios)
	}
	if c, _ := parseRunFlags([]string{"--scenarios", "c"}, io.Discard); c.selected(ScenarioDirectShared) {
		t.Error(`"c" selects (c2)`)
	}
	if c, _ := parseRunFlags(nil, io.Discard); !c.selected(ScenarioDirectShared) {
		t.Error("(c2) is not in the default set")
	}
	if _, err := parseRunFlags([]string{"--scenarios", "c3"}, io.Discard); err == nil || !strings.Contains(err.Error(), "c, c2, d") {
		t.Errorf("--scenarios c3: %v", err)
	}
	rs := []Result{row(ScenarioDirect, 32, 2000, 1, 1), row(ScenarioDirectShared, 32, 1000, 1, 1)}
	c, _ = parseRunFlags([]string{"--scenarios", "c,c2"}, io.Discard)
	if ts := c.selectedTargets(ComputeTargets(rs, []int{32})); len(ts) != 0 {
		t.Errorf("targets of (c) and (c2) alone: %+v", ts)
	}
	if ts := c.selectedTargets(ComputeInformational(rs, []int{32})); len(ts) != 0 {
		t.Errorf("informational of (c) and (c2) alone: %+v", ts)
	}
	var help strings.Builder
	if _, err := parseRunFlags([]string{"-h"}, &help); !errors.Is(err, flag.ErrHelp) || !strings.Contains(help.String(), "(c2) llmsim direct, sharing CPU 0 with wrk") {
		t.Errorf("run -h: %v\n%s", err, help.String())
	}
}
