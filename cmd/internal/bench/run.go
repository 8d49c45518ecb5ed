package bench

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The CPUs of the 2-core set-up: the server under test alone on one, the
// load generator (and, where it is not the server under test, llmsim) on
// the other.
const (
	serverCPU = 1
	loadCPU   = 0
)

const chatPath = "/v1/chat/completions"

// runConfig is `edgebench run`'s flags.
type runConfig struct {
	duration, warmup time.Duration
	conns            []int
	bin              string
	jsonPath         string
	command          string
	bestOf           int
	// scenarios are the rows --scenarios selected; nil: all.
	scenarios map[string]bool
}

func parseRunFlags(args []string, stderr io.Writer) (runConfig, error) {
	var c runConfig
	fs := flag.NewFlagSet("edgebench run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.DurationVar(&c.duration, "duration", 10*time.Second, "measured time per row (whole seconds)")
	fs.DurationVar(&c.warmup, "warmup", 2*time.Second, "warm-up run before each measured row (whole seconds; 0 = none)")
	conns := fs.String("conns", "32,128", "comma-separated wrk connection counts")
	fs.StringVar(&c.bin, "bin", defaultBinDir(), "directory with prebuilt edgecache, llmsim and edgebench binaries")
	fs.StringVar(&c.jsonPath, "json", "", "also write the results as JSON to this file")
	scenarios := fs.String("scenarios", "", "comma-separated rows to run, by letter (a … j, and c2) or name (e.g. semantic-fresh-local);\nempty: all")
	fs.IntVar(&c.bestOf, "best-of", 1, "measure each row this many times and keep the run with the most req/s (a shared machine's\nneighbours only ever slow a run down)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), runUsage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if c.duration < time.Second {
		return c, errors.New("--duration must be at least 1s")
	}
	if c.warmup < 0 {
		return c, errors.New("--warmup must not be negative")
	}
	if c.bestOf < 1 {
		return c, errors.New("--best-of must be at least 1")
	}
	var err error
	if c.conns, err = parseConns(*conns); err != nil {
		return c, err
	}
	if c.scenarios, err = parseScenarios(*scenarios); err != nil {
		return c, err
	}
	return c, nil
}

// parseScenarios reads --scenarios: scenario letters or names, comma
// separated. Empty selects every row (nil).
func parseScenarios(s string) (map[string]bool, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	byLetter := map[string]string{}
	for name, l := range scenarioLetter {
		byLetter[l] = name
	}
	out := map[string]bool{}
	for _, f := range strings.Split(s, ",") {
		f = strings.ToLower(strings.Trim(strings.TrimSpace(f), "()"))
		switch name, isLetter := byLetter[f]; {
		case f == "":
		case isLetter:
			out[name] = true
		case scenarioLetter[f] != "":
			out[f] = true
		default:
			return nil, fmt.Errorf("--scenarios: unknown row %q (letters %s or names %s)", f,
				strings.Join(scenarioLetters(), ", "), strings.Join(Scenarios, ", "))
		}
	}
	if len(out) == 0 {
		return nil, errors.New("--scenarios: no row")
	}
	return out, nil
}

// scenarioLetters lists the rows' letters in run order.
func scenarioLetters() []string {
	out := make([]string, len(Scenarios))
	for i, sc := range Scenarios {
		out[i] = scenarioLetter[sc]
	}
	return out
}

// selected reports whether the run includes scenario.
func (c runConfig) selected(scenario string) bool { return c.scenarios == nil || c.scenarios[scenario] }

// selectedTargets drops from ts the goals of rows --scenarios left out: the
// exact-hit and pass-through goals, which ComputeTargets reports (unknown)
// even without their rows; the others appear only with theirs. It serves
// for ComputeInformational's readings as well, named like the pass-through
// goal.
func (c runConfig) selectedTargets(ts []Target) []Target {
	var out []Target
	for _, t := range ts {
		if strings.HasPrefix(t.Name, "exact L1 hit") && !c.selected(ScenarioHit) ||
			strings.HasPrefix(t.Name, "pass-through / ") && !c.selected(ScenarioPassthrough) {
			continue
		}
		out = append(out, t)
	}
	return out
}

const runUsage = `Usage: edgebench run [flags]

Measures, with wrk pinned to CPU 0 and the server under test to CPU 1
(except in (c2)):
  (a) ceiling: "edgebench ceiling" serving edgecache's cached answer bytes
  (b) exact L1 hits through edgecache (llmsim upstream on CPU 0)
  (c) llmsim direct, alone on CPU 1 (for information: a core of its own,
      which (d) gives edgecache instead)
  (c2) llmsim direct, sharing CPU 0 with wrk as it does in (d) and (f):
      the base of the pass-through target (--scenarios c2)
  (d) pass-through: edgecache with Cache-Control: no-store (llmsim on CPU 0);
      ≥ 45 % of (c2)
  (e) semantic hits through edgecache: route in mode semantic, remote embedder
      pointed at llmsim --embed-fold (CPU 0, also the model); 200 prompts
      stored, then each request asks one in a random letter case
  (f) reference for (d): "edgebench proxy", a minimal net/http reverse proxy
      in edgecache's place, llmsim on CPU 0; like (d), against (c2)
  (g) exact L1 hits of the Responses API (POST /v1/responses) through
      edgecache, as (b); within 10 % of (b)
  (h) exact L1 hits on Anthropic's Messages API (/v1/messages, x-api-key),
      the stack of (b)
  (i) pass-through as (d), through an upstream pool of two llmsim targets
      (least_latency; both on CPU 0); each must get ≥ 25 % of the requests
  (j) semantic hits with the local model: edgecache's default embedder
      (USE-lite, models/use-lite) and verifier, llmsim on CPU 0 as the model;
      200 questions stored, then every request asks one in a wording never
      sent before (an embedding computed per request)
at each connection count (--scenarios picks rows), and prints a Markdown
table with the targets (ratios; semantic hits ≥ 2,500 req/s; Messages hits
≥ 90 % of (b); pool pass-through ≥ 90 % of (d); semantic hits with fresh
wordings and the local model ≥ 2,000 req/s) and, with no goal, (d) / (c).
Needs wrk and taskset in PATH and the binaries in --bin; installs and builds
nothing.

Flags:
`

func parseConns(s string) ([]int, error) {
	var out []int
	seen := map[int]bool{}
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("--conns: %q is not a positive connection count", f)
		}
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("--conns: no connection count")
	}
	return out, nil
}

// checkPrereqs returns a clear error for the first missing prerequisite.
func checkPrereqs(bin string) error { return checkTools(bin, true) }

// runner holds one `edgebench run`.
type runner struct {
	cfg     runConfig
	dir     string // scratch: scripts, logs, the ceiling body
	ps      procs
	client  *http.Client
	log     io.Writer
	scripts map[bool]string // Lua script path, by "sends Cache-Control: no-store"
	hitBody []byte          // what the ceiling serves
	// sut is the server under test when it does not run on the server CPU
	// ((c2)'s llmsim, beside wrk), so that its CPU time is still read; nil:
	// the process last started on the server CPU.
	sut *proc
}

func runMain(ctx context.Context, command string, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseRunFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	cfg.command = command
	r, err := newBinRunner("edgebench-", cfg.bin, true, stderr)
	if err != nil {
		return err
	}
	cfg.bin = r.cfg.bin
	r.cfg = cfg
	if _, err := runScenario(ctx, r, stdout, stderr, "logs and wrk output", cfg.jsonPath, r.run, WriteMarkdown); err != nil {
		return err
	}
	return os.RemoveAll(r.dir)
}

// run runs the scenarios in order. A failed scenario is recorded in its rows
// and the next one still runs; the returned error says that something
// failed. Every process is stopped by the caller (and by each scenario as
// it ends).
func (r *runner) run(ctx context.Context) (Report, error) {
	rep := r.newReport()
	fmt.Fprintf(r.log, "edgebench: %s\n", r.cfg.command)
	if err := r.writeChatScripts(); err != nil {
		return rep, err
	}

	var failed []string
	record := func(scenario string, rows []Result, err error) {
		switch {
		case err != nil && len(rows) == 0:
			// The scenario could not run at all: one failed row per count.
			for _, c := range r.cfg.conns {
				rows = append(rows, Result{Scenario: scenario, Conns: c, Error: err.Error()})
			}
		case err != nil:
			// The rows stand; stopping its processes went wrong.
			failed = append(failed, fmt.Sprintf("%s: %v", scenarioLabel[scenario], err))
			fmt.Fprintf(r.log, "edgebench: %s: %v\n", scenarioLabel[scenario], err)
		}
		for _, row := range rows {
			if row.Error != "" {
				failed = append(failed, fmt.Sprintf("%s @%d: %s", scenarioLabel[scenario], row.Conns, row.Error))
				fmt.Fprintf(r.log, "edgebench: FAILED %s @%d: %s\n", scenarioLabel[scenario], row.Conns, row.Error)
			}
		}
		rep.Results = append(rep.Results, rows...)
	}

	// (a) needs the bytes of a hit: take them from a fresh edgecache first.
	if r.cfg.selected(ScenarioCeiling) {
		hitBody, err := r.fetchHitBody(ctx)
		r.hitBody, rep.ResponseBytes = hitBody, len(hitBody)
		if err != nil {
			record(ScenarioCeiling, nil, fmt.Errorf("fetching the cached answer from edgecache: %w", err))
		} else {
			rows, err := r.scenarioCeiling(ctx, hitBody)
			record(ScenarioCeiling, rows, err)
		}
	}
	for _, sc := range []struct {
		name string
		fn   func(context.Context) ([]Result, error)
	}{
		{ScenarioHit, r.scenarioHit},
		{ScenarioDirect, r.scenarioDirect},
		{ScenarioDirectShared, r.scenarioDirectShared},
		{ScenarioPassthrough, r.scenarioPassthrough},
		{ScenarioSemantic, r.scenarioSemantic},
		{ScenarioProxy, r.scenarioProxy},
		{ScenarioResponsesHit, r.scenarioResponsesHit},
		{ScenarioMessagesHit, r.scenarioMessagesHit},
		{ScenarioPoolPassthrough, r.scenarioPoolPassthrough},
		{ScenarioSemanticFresh, r.scenarioSemanticFresh},
	} {
		if ctx.Err() != nil {
			break
		}
		if !r.cfg.selected(sc.name) {
			continue
		}
		rows, err := sc.fn(ctx)
		record(sc.name, rows, err)
	}
	rep.Targets = r.cfg.selectedTargets(ComputeTargets(rep.Results, r.cfg.conns))
	rep.Informational = r.cfg.selectedTargets(ComputeInformational(rep.Results, r.cfg.conns))
	if ctx.Err() != nil {
		return rep, fmt.Errorf("interrupted: %w", ctx.Err())
	}
	if len(failed) > 0 {
		return rep, fmt.Errorf("%d row(s) failed:\n  %s", len(failed), strings.Join(failed, "\n  "))
	}
	return rep, nil
}

// writeChatScripts writes the wrk scripts that POST ChatBody, with and
// without Cache-Control: no-store (r.scripts).
func (r *runner) writeChatScripts() error {
	r.scripts = map[bool]string{}
	for _, noStore := range []bool{false, true} {
		hdr := map[string]string{}
		name := "post.lua"
		if noStore {
			hdr["Cache-Control"] = "no-store"
			name = "post-no-store.lua"
		}
		p := filepath.Join(r.dir, name)
		if err := os.WriteFile(p, []byte(LuaScript(ChatBody, hdr)), 0o644); err != nil {
			return err
		}
		r.scripts[noStore] = p
	}
	return nil
}

// newReport is the report of this run before any row: the machine, the
// command and settings, and what (e) and (j) ask when they are selected
// (they run then, a failure being recorded in their rows).
func (r *runner) newReport() Report {
	rep := Report{
		Machine:      describeMachine(filepath.Join(r.cfg.bin, "edgecache"), time.Now()),
		Command:      r.cfg.command,
		Duration:     formatDuration(r.cfg.duration),
		Warmup:       formatDuration(r.cfg.warmup),
		BestOf:       max(r.cfg.bestOf, 1),
		Conns:        r.cfg.conns,
		RequestBytes: len(ChatBody),
	}
	if r.cfg.selected(ScenarioSemantic) {
		rep.SemanticPrompts = semanticPromptCount
	}
	if r.cfg.selected(ScenarioSemanticFresh) {
		rep.FreshQuestions, rep.FreshTemplates = len(freshQuestions()), len(freshTemplates)
		rep.FreshSpace = newFreshSpace(freshQuestions(), freshTemplates).size
	}
	if r.cfg.warmup == 0 {
		rep.Warmup = "no"
	}
	return rep
}

// startLLMSim starts llmsim on cpu with extra flags (none: instant
// answers).
func (r *runner) startLLMSim(ctx context.Context, cpu int, extra ...string) (string, *proc, error) {
	ports, err := freePorts(1)
	if err != nil {
		return "", nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", ports[0])
	p, err := r.ps.startPinned(r.dir, fmt.Sprintf("llmsim-cpu%d-%d", cpu, ports[0]), cpu,
		filepath.Join(r.cfg.bin, "llmsim"), append([]string{"--listen", addr}, extra...)...)
	if err != nil {
		return "", nil, err
	}
	if err := waitReady(ctx, p, 15*time.Second, dialReady(addr)); err != nil {
		return "", nil, errors.Join(err, p.stop(5*time.Second))
	}
	return addr, p, nil
}

// startEdgecache starts edgecache (L1 only) on the server CPU in front of
// upstream and waits for its /readyz.
func (r *runner) startEdgecache(ctx context.Context, upstream string) (string, *proc, error) {
	addr, _, p, err := r.startEdgecacheArgs(ctx, "--upstream", "http://"+upstream)
	return addr, p, err
}

// startEdgecacheArgs starts edgecache on the server CPU with extra flags
// (an upstream or a config file at least) on loopback ports of its own,
// with its degradation journal and route-policy file in the scratch
// directory (not in the working directory, where an earlier run's policy
// changes could alter this one), and waits for its /readyz. It returns the
// data and admin addresses.
func (r *runner) startEdgecacheArgs(ctx context.Context, extra ...string) (addr, admin string, p *proc, err error) {
	ports, err := freePorts(2)
	if err != nil {
		return "", "", nil, err
	}
	addr = fmt.Sprintf("127.0.0.1:%d", ports[0])
	admin = fmt.Sprintf("127.0.0.1:%d", ports[1])
	args := append([]string{"--listen", addr, "--admin-listen", admin,
		"--journal-dir", filepath.Join(r.dir, fmt.Sprintf("journal-%d", ports[0]))}, extra...)
	env := []string{"EDGECACHE_POLICY_FILE=" + filepath.Join(r.dir, fmt.Sprintf("routes-%d.json", ports[0]))}
	p, err = r.ps.startPinnedEnv(r.dir, fmt.Sprintf("edgecache-%d", ports[0]), serverCPU, env,
		filepath.Join(r.cfg.bin, "edgecache"), args...)
	if err != nil {
		return "", "", nil, err
	}
	if err := waitReady(ctx, p, 15*time.Second, httpReady(r.client, "http://"+admin+"/readyz")); err != nil {
		return "", "", nil, errors.Join(err, p.stop(5*time.Second))
	}
	return addr, admin, p, nil
}

// edgecacheStack starts llmsim on the load CPU and edgecache on the server
// CPU in front of it; stop stops both.
func (r *runner) edgecacheStack(ctx context.Context) (addr string, stop func() error, err error) {
	simAddr, sim, err := r.startLLMSim(ctx, loadCPU)
	if err != nil {
		return "", nil, err
	}
	addr, ec, err := r.startEdgecache(ctx, simAddr)
	if err != nil {
		return "", nil, errors.Join(err, sim.stop(5*time.Second))
	}
	return addr, func() error { return errors.Join(ec.stop(10*time.Second), sim.stop(10*time.Second)) }, nil
}

// answer is one probe response.
type answer struct {
	status      int
	cacheStatus string
	body        []byte
}

// post sends the chat body to url, with Cache-Control: no-store if asked.
func (r *runner) post(ctx context.Context, url string, noStore bool) (answer, error) {
	return r.postBody(ctx, url, ChatBody, noStore)
}

// postBody sends body to url, with Cache-Control: no-store if asked; an
// answer other than 200 is an error.
func (r *runner) postBody(ctx context.Context, url, body string, noStore bool) (answer, error) {
	cc := ""
	if noStore {
		cc = "no-store"
	}
	a, err := r.postCC(ctx, url, body, cc)
	if err == nil && a.status != http.StatusOK {
		return a, fmt.Errorf("POST %s: status %d: %.200s", url, a.status, a.body)
	}
	return a, err
}

// postCC sends body to url with the Cache-Control header cc (none when
// empty) and returns the answer whatever its status.
func (r *runner) postCC(ctx context.Context, url, body, cc string) (answer, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return answer{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	if cc != "" {
		req.Header.Set("Cache-Control", cc)
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
	return answer{status: resp.StatusCode, cacheStatus: resp.Header.Get("Cache-Status"), body: got}, nil
}

// The Cache-Status values the scenarios rely on.
const (
	hitCacheStatus    = "edgecache; hit; detail=l1"
	bypassCacheStatus = "edgecache; fwd=bypass; detail=no-store"
)

// isHit reports whether a Cache-Status value is an exact L1 hit; edgecache
// may append parameters such as "; ttl=3599".
func isHit(cs string) bool {
	return cs == hitCacheStatus || strings.HasPrefix(cs, hitCacheStatus+";")
}

func isBypass(cs string) bool {
	return cs == bypassCacheStatus || strings.HasPrefix(cs, bypassCacheStatus+";")
}

// warmHit sends the chat body once to fill the cache, then checks that the
// next answer is an L1 hit (the store may complete just after the first
// answer, so it asks a few times within a second) and returns its body.
func (r *runner) warmHit(ctx context.Context, url string) ([]byte, error) {
	if _, err := r.post(ctx, url, false); err != nil {
		return nil, fmt.Errorf("warming the key: %w", err)
	}
	var last answer
	for i := 0; i < 50; i++ {
		a, err := r.post(ctx, url, false)
		if err != nil {
			return nil, err
		}
		if isHit(a.cacheStatus) {
			return a.body, nil
		}
		last = a
		time.Sleep(20 * time.Millisecond)
	}
	return nil, fmt.Errorf("the repeated request is not an L1 hit: Cache-Status %q, want %q", last.cacheStatus, hitCacheStatus)
}

// fetchHitBody returns the body edgecache sends on an exact L1 hit.
func (r *runner) fetchHitBody(ctx context.Context) ([]byte, error) {
	fmt.Fprintf(r.log, "edgebench: fetching the cached answer bytes from edgecache\n")
	addr, stop, err := r.edgecacheStack(ctx)
	if err != nil {
		return nil, err
	}
	body, err := r.warmHit(ctx, "http://"+addr+chatPath)
	return body, errors.Join(err, stop())
}

// observer brackets a measured wrk run: it is called just before the run
// (after the check) and returns finish, called after a run without errors
// to inspect the server (scenario (e) reads edgecache's counters) and fill
// in or fail the row.
type observer func(ctx context.Context) (finish func(ctx context.Context, row *Result) error, err error)

// measure runs, at each connection count, a warm-up and then the measured
// wrk run with script against url. check runs before each measured run;
// observe, when not nil, brackets it.
func (r *runner) measure(ctx context.Context, scenario, url, script string, check func(context.Context) error, observe observer) []Result {
	var rows []Result
	for _, c := range r.cfg.conns {
		if ctx.Err() != nil {
			rows = append(rows, Result{Scenario: scenario, Conns: c, Error: ctx.Err().Error()})
			continue
		}
		var runs []Result
		for range max(r.cfg.bestOf, 1) {
			row := Result{Scenario: scenario, Conns: c}
			r.measureOne(ctx, &row, url, script, check, observe)
			runs = append(runs, row)
			if row.Error != "" || ctx.Err() != nil {
				break
			}
		}
		rows = append(rows, bestRun(runs))
	}
	return rows
}

// bestRun is the row kept from repeated runs: the first failed run (one
// failure fails the row), else the run with the most req/s.
func bestRun(runs []Result) Result {
	best := runs[0]
	for _, r := range runs {
		if r.Error != "" {
			return r
		}
		if r.RequestsPerSec > best.RequestsPerSec {
			best = r
		}
	}
	return best
}

// measureOne fills in row (its Scenario and Conns set): the numbers, and
// Error when the row failed.
func (r *runner) measureOne(ctx context.Context, row *Result, url, script string, check func(context.Context) error, observe observer) {
	label, conns := scenarioLabel[row.Scenario], row.Conns
	if r.cfg.warmup > 0 {
		fmt.Fprintf(r.log, "edgebench: %s @%d: warm-up %s\n", label, conns, formatDuration(r.cfg.warmup))
		w, out, err := runWrk(ctx, loadCPU, conns, r.cfg.warmup, script, url)
		if err != nil {
			row.Error = "warm-up: " + err.Error()
			return
		}
		if w.Non2xx > 0 {
			row.WrkResult, row.Error = w, fmt.Sprintf("warm-up: %d non-2xx/3xx responses:\n%s", w.Non2xx, out)
			return
		}
	}
	if err := check(ctx); err != nil {
		row.Error = err.Error()
		return
	}
	var finish func(context.Context, *Result) error
	if observe != nil {
		var err error
		if finish, err = observe(ctx); err != nil {
			row.Error = err.Error()
			return
		}
	}
	fmt.Fprintf(r.log, "edgebench: %s @%d: measuring %s\n", label, conns, formatDuration(r.cfg.duration))
	pid := r.ps.serverUnderTest()
	if r.sut != nil {
		pid = r.sut.cmd.Process.Pid
	}
	cpu0, cpuErr := procCPUTicks(pid)
	w, out, err := runWrk(ctx, loadCPU, conns, r.cfg.duration, script, url)
	if err != nil {
		row.Error = err.Error()
		return
	}
	row.WrkResult = w
	if cpu1, err := procCPUTicks(pid); pid > 0 && cpuErr == nil && err == nil {
		row.ServerCPUUsPerRequest = cpuUsPerRequest(cpu1-cpu0, w.Requests)
	}
	if err := os.WriteFile(filepath.Join(r.dir, fmt.Sprintf("wrk-%s-%d.txt", row.Scenario, conns)), []byte(out), 0o644); err != nil {
		row.Error = err.Error()
		return
	}
	fmt.Fprintf(r.log, "edgebench: %s @%d: %.0f req/s, p50 %.2f ms, p99 %.2f ms", label, conns, w.RequestsPerSec, w.P50Ms, w.P99Ms)
	if w.SocketErrors.Total() > 0 {
		fmt.Fprintf(r.log, ", socket errors: %s", w.SocketErrors)
	}
	fmt.Fprintln(r.log)
	if w.Non2xx > 0 {
		row.Error = fmt.Sprintf("%d non-2xx/3xx responses", w.Non2xx)
		return
	}
	if finish != nil {
		if err := finish(ctx, row); err != nil {
			row.Error = err.Error()
		}
	}
}

// scenarioCeiling is (a): `edgebench ceiling` on the server CPU serving body.
func (r *runner) scenarioCeiling(ctx context.Context, body []byte) ([]Result, error) {
	bodyFile := filepath.Join(r.dir, "hit-body.json")
	if err := os.WriteFile(bodyFile, body, 0o644); err != nil {
		return nil, err
	}
	ports, err := freePorts(1)
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", ports[0])
	p, err := r.ps.startPinned(r.dir, fmt.Sprintf("ceiling-%d", ports[0]), serverCPU,
		filepath.Join(r.cfg.bin, "edgebench"), "ceiling", "--listen", addr, "--body", bodyFile)
	if err != nil {
		return nil, err
	}
	if err := waitReady(ctx, p, 15*time.Second, dialReady(addr)); err != nil {
		return nil, errors.Join(err, p.stop(5*time.Second))
	}
	url := "http://" + addr + chatPath
	rows := r.measure(ctx, ScenarioCeiling, url, r.scripts[false], func(ctx context.Context) error {
		a, err := r.post(ctx, url, false)
		if err != nil {
			return err
		}
		if !bytes.Equal(a.body, body) {
			return errors.New("the ceiling server answered other bytes than the cached answer")
		}
		return nil
	}, nil)
	return rows, p.stop(10 * time.Second)
}

// scenarioHit is (b): exact L1 hits through edgecache.
func (r *runner) scenarioHit(ctx context.Context) ([]Result, error) {
	addr, stop, err := r.edgecacheStack(ctx)
	if err != nil {
		return nil, err
	}
	url := "http://" + addr + chatPath
	body, err := r.warmHit(ctx, url)
	if err != nil {
		return nil, errors.Join(err, stop())
	}
	if r.hitBody != nil && len(body) != len(r.hitBody) {
		fmt.Fprintf(r.log, "edgebench: warning: this edgecache's hit is %d B, the ceiling served %d B\n", len(body), len(r.hitBody))
	}
	rows := r.measure(ctx, ScenarioHit, url, r.scripts[false], func(ctx context.Context) error {
		a, err := r.post(ctx, url, false)
		if err != nil {
			return err
		}
		if !isHit(a.cacheStatus) {
			return fmt.Errorf("not an L1 hit: Cache-Status %q, want %q", a.cacheStatus, hitCacheStatus)
		}
		return nil
	}, nil)
	return rows, stop()
}

// scenarioDirect is (c): llmsim alone on the server CPU.
func (r *runner) scenarioDirect(ctx context.Context) ([]Result, error) {
	return r.direct(ctx, ScenarioDirect, serverCPU)
}

// scenarioDirectShared is (c2): llmsim on the load CPU, sharing it with
// wrk as it does behind edgecache in (d) and behind the proxy in (f), and
// as the fake upstream did in the issue that set the pass-through goal;
// the base of (d) and (f), which (c) is not: it gives llmsim the core
// that (d) and (f) give the gateway.
func (r *runner) scenarioDirectShared(ctx context.Context) ([]Result, error) {
	return r.direct(ctx, ScenarioDirectShared, loadCPU)
}

// direct measures llmsim, pinned to cpu, with wrk sending to it directly,
// as scenario. Its CPU time per request is llmsim's, on either CPU.
func (r *runner) direct(ctx context.Context, scenario string, cpu int) ([]Result, error) {
	addr, sim, err := r.startLLMSim(ctx, cpu)
	if err != nil {
		return nil, err
	}
	r.sut = sim
	defer func() { r.sut = nil }()
	url := "http://" + addr + chatPath
	rows := r.measure(ctx, scenario, url, r.scripts[false], func(ctx context.Context) error {
		_, err := r.post(ctx, url, false)
		return err
	}, nil)
	return rows, sim.stop(10 * time.Second)
}

// scenarioPassthrough is (d): edgecache with Cache-Control: no-store, so
// every request goes to llmsim, which shares CPU 0 with wrk.
func (r *runner) scenarioPassthrough(ctx context.Context) ([]Result, error) {
	addr, stop, err := r.edgecacheStack(ctx)
	if err != nil {
		return nil, err
	}
	url := "http://" + addr + chatPath
	rows := r.measure(ctx, ScenarioPassthrough, url, r.scripts[true], func(ctx context.Context) error {
		a, err := r.post(ctx, url, true)
		if err != nil {
			return err
		}
		if !isBypass(a.cacheStatus) {
			return fmt.Errorf("not a pass-through: Cache-Status %q, want %q", a.cacheStatus, bypassCacheStatus)
		}
		return nil
	}, nil)
	return rows, stop()
}

// scenarioProxy is (f), a reference for (d): `edgebench proxy`, a minimal
// net/http reverse proxy, on the server CPU in front of llmsim on the load
// CPU, exactly where edgecache runs in (d).
func (r *runner) scenarioProxy(ctx context.Context) ([]Result, error) {
	simAddr, sim, err := r.startLLMSim(ctx, loadCPU)
	if err != nil {
		return nil, err
	}
	ports, err := freePorts(1)
	if err != nil {
		return nil, errors.Join(err, sim.stop(5*time.Second))
	}
	addr := fmt.Sprintf("127.0.0.1:%d", ports[0])
	p, err := r.ps.startPinned(r.dir, fmt.Sprintf("proxy-%d", ports[0]), serverCPU,
		filepath.Join(r.cfg.bin, "edgebench"), "proxy", "--listen", addr, "--upstream", "http://"+simAddr)
	if err != nil {
		return nil, errors.Join(err, sim.stop(5*time.Second))
	}
	stop := func() error { return errors.Join(p.stop(10*time.Second), sim.stop(10*time.Second)) }
	if err := waitReady(ctx, p, 15*time.Second, dialReady(addr)); err != nil {
		return nil, errors.Join(err, stop())
	}
	url := "http://" + addr + chatPath
	rows := r.measure(ctx, ScenarioProxy, url, r.scripts[true], func(ctx context.Context) error {
		a, err := r.post(ctx, url, true)
		if err != nil {
			return err
		}
		if a.status != http.StatusOK || !bytes.HasPrefix(a.body, []byte("{")) {
			return fmt.Errorf("the proxy answered %d %q", a.status, a.body)
		}
		return nil
	}, nil)
	return rows, stop()
}

// cpuUsPerRequest converts a CPU time in clock ticks spread over requests
// into microseconds per request (0 without requests).
func cpuUsPerRequest(ticks, requests int64) float64 {
	if requests <= 0 {
		return 0
	}
	return float64(ticks) / clockTicks * 1e6 / float64(requests)
}
