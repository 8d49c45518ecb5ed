package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// `edgebench overload`: the paid lane under a 10× overload of free traffic.
//
// llmsim stands for a model server that can run C generations at once
// (--max-concurrency C) and answers after T (--ttft T, non-streamed), so
// its capacity is C / T requests per second. edgecache runs in front of it
// with two tenants, paid and free, and an adaptive concurrency limit sized
// to C. The generator (edgebench loadgen, open loop) sends
//
//	warm-up:   paid at PaidLoad × capacity (not reported);
//	unloaded:  paid at PaidLoad × capacity;
//	overload:  paid at the same rate plus free at FreeLoad × capacity;
//
// every request with a prompt of its own, on a route whose cache is off,
// so each one goes through admission to the model. The targets: paid keeps
// ≥ 99 % success and its p99 within 2 × the unloaded p99; free is refused
// with 429 or 503 and Retry-After, never another 5xx.

// Overload target thresholds (the issue's).
const (
	MinPaidSuccess          = 0.99 // paid 2xx share under overload
	MaxPaidP99Factor        = 2.0  // paid p99 under overload ≤ 2 × unloaded
	MinFreeRetryAfter       = 1.0  // every non-2xx free request: 429/503 with Retry-After
	MaxFreeOther5xx         = 0    // 5xx other than 503 for free
	overloadPaidLane        = "paid"
	overloadFreeLane        = "free"
	phaseWarmup             = "warm-up"
	phaseUnloaded           = "unloaded"
	phaseOverload           = "overload"
	loadgenExtraWait        = 30 * time.Second // beyond phases and timeouts, before the generator is killed
	overloadDefaultMinLimit = 5                // the default minimum of the adaptive limit
)

// overloadConfig is `edgebench overload`'s flags.
type overloadConfig struct {
	bin, jsonPath    string
	command          string
	duration, warmup time.Duration
	concurrency      int           // llmsim --max-concurrency
	ttft             time.Duration // llmsim --ttft
	limit            int           // edgecache admission.concurrency initial and max
	paidLoad         float64       // × capacity
	freeLoad         float64       // × capacity
	freeQuota        float64       // free tenant's quota, × capacity; 0: none
	timeout          time.Duration // per request
	maxInFlight      int           // generator, per lane
}

// capacity is what llmsim can serve: C / T requests per second.
func (c overloadConfig) capacity() float64 { return float64(c.concurrency) / c.ttft.Seconds() }

func (c overloadConfig) paidRate() float64 { return c.paidLoad * c.capacity() }
func (c overloadConfig) freeRate() float64 { return c.freeLoad * c.capacity() }

// minLimit is the adaptive limit's floor: the default 5, or the limit when
// it is lower.
func (c overloadConfig) minLimit() int { return min(overloadDefaultMinLimit, c.limit) }

// freeQuotaRPS is the free tenant's quota in requests per second (0: none)
// and its burst (one TTFT's worth, at least 1).
func (c overloadConfig) freeQuotaRPS() (rps float64, burst int64) {
	if c.freeQuota <= 0 {
		return 0, 0
	}
	rps = c.freeQuota * c.capacity()
	return rps, max(1, int64(math.Round(rps*c.ttft.Seconds())))
}

const overloadUsage = `Usage: edgebench overload [flags]

The paid lane under a 10× overload of free traffic. llmsim (--max-concurrency C,
--ttft T, non-streamed answers: capacity C/T req/s) and the load generator run on
CPU 0, edgecache on CPU 1 (taskset), with tenants paid and free, an adaptive
concurrency limit sized to C and the cache off. The open-loop generator sends
unique prompts: paid alone at --paid-load × capacity ("unloaded"), then paid at
the same rate plus free at --free-load × capacity ("overload"). Prints per-lane
status counts, Retry-After shares and p50/p99 of admitted requests, and checks:
paid success ≥ 99 %, paid p99 ≤ 2 × unloaded, free refused only with 429/503 and
Retry-After. Needs taskset and the binaries in --bin; installs and builds nothing.

Flags:
`

func parseOverloadFlags(args []string, stderr io.Writer) (overloadConfig, error) {
	var c overloadConfig
	fs := flag.NewFlagSet("edgebench overload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.bin, "bin", defaultBinDir(), "directory with prebuilt edgecache, llmsim and edgebench binaries")
	fs.StringVar(&c.jsonPath, "json", "", "also write the results as JSON to this file")
	fs.DurationVar(&c.duration, "duration", 10*time.Second, "measured time of each phase (unloaded, overload)")
	fs.DurationVar(&c.warmup, "warmup", 2*time.Second, "paid-only warm-up before the unloaded phase (0 = none)")
	fs.IntVar(&c.concurrency, "concurrency", 16, "llmsim --max-concurrency C: generations the model runs at once")
	fs.DurationVar(&c.ttft, "ttft", 100*time.Millisecond, "llmsim --ttft T: time to a (non-streamed) answer")
	fs.IntVar(&c.limit, "limit", 0, "edgecache admission.concurrency initial and max (0 = C)")
	fs.Float64Var(&c.paidLoad, "paid-load", 0.5, "paid rate as a fraction of the capacity C/T")
	fs.Float64Var(&c.freeLoad, "free-load", 10, "free rate under overload as a multiple of the capacity C/T")
	fs.Float64Var(&c.freeQuota, "free-quota", 1, "free tenant's request quota as a multiple of the capacity (0 = no quota)")
	fs.DurationVar(&c.timeout, "timeout", 10*time.Second, "client timeout of one request")
	fs.IntVar(&c.maxInFlight, "max-in-flight", 4096, "generator's cap of requests in flight per lane (more are skipped and counted)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), overloadUsage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if c.limit == 0 {
		c.limit = c.concurrency
	}
	var errs []error
	if c.duration < time.Second {
		errs = append(errs, errors.New("--duration must be at least 1s"))
	}
	if c.warmup < 0 {
		errs = append(errs, errors.New("--warmup must not be negative"))
	}
	if c.concurrency < 1 || c.limit < 1 {
		errs = append(errs, errors.New("--concurrency and --limit must be positive"))
	}
	if c.ttft < time.Millisecond {
		errs = append(errs, errors.New("--ttft must be at least 1ms"))
	}
	if !(c.paidLoad > 0) || !(c.freeLoad > 0) || !(c.freeQuota >= 0) {
		errs = append(errs, errors.New("--paid-load and --free-load must be positive, --free-quota not negative"))
	}
	if c.timeout <= 0 || c.maxInFlight < 1 {
		errs = append(errs, errors.New("--timeout and --max-in-flight must be positive"))
	}
	if len(errs) == 0 {
		const maxRate = 100_000
		if c.paidRate() < 1 || c.freeRate() > maxRate {
			errs = append(errs, fmt.Errorf("rates out of range: paid %.1f req/s (want ≥ 1), free %.0f req/s (want ≤ %d)",
				c.paidRate(), c.freeRate(), maxRate))
		}
	}
	return c, errors.Join(errs...)
}

// overloadKeys are the two tenants' API keys of one run.
type overloadKeys struct{ paid, free string }

func newOverloadKeys() overloadKeys {
	return overloadKeys{paid: "sk-edgebench-paid-" + randomHex(8), free: "sk-edgebench-free-" + randomHex(8)}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return hex.EncodeToString(b)
}

// yamlQuote returns s as a double-quoted YAML scalar.
func yamlQuote(s string) string {
	b, _ := json.Marshal(s) // a JSON string is a valid YAML double-quoted scalar
	return string(b)
}

// overloadConfigYAML is edgecache's configuration for the scenario.
func overloadConfigYAML(c overloadConfig, upstream, journalDir string, k overloadKeys) string {
	var b strings.Builder
	b.WriteString("# generated by edgebench overload\n")
	fmt.Fprintf(&b, "upstream:\n  url: %s\n", yamlQuote(upstream))
	b.WriteString("semantic:\n  embedder: lexical   # no model to load: no route is semantic\n")
	fmt.Fprintf(&b, "degrade:\n  journal_dir: %s\n", yamlQuote(journalDir))
	b.WriteString("admission:\n  default_lane: free\n")
	fmt.Fprintf(&b, "  concurrency: {initial: %d, min: %d, max: %d}\n", c.limit, c.minLimit(), c.limit)
	b.WriteString("tenants:\n")
	fmt.Fprintf(&b, "  - name: paid\n    lane: paid\n    api_keys: [%s]\n", yamlQuote(k.paid))
	fmt.Fprintf(&b, "  - name: free\n    lane: free\n    api_keys: [%s]\n", yamlQuote(k.free))
	if rps, burst := c.freeQuotaRPS(); rps > 0 {
		fmt.Fprintf(&b, "    limits: {requests_per_second: %s, request_burst: %d}\n",
			strconv.FormatFloat(rps, 'f', -1, 64), burst)
	}
	b.WriteString("routes:\n")
	fmt.Fprintf(&b, "  - name: chat\n    path: %s\n", chatPath)
	b.WriteString("    # every request reaches admission; a refused one ends as an honest 503\n")
	b.WriteString("    # (no cached, stale or template answer can stand in for a unique prompt)\n")
	b.WriteString("    cache: {mode: \"off\", no_templates: true}\n")
	return b.String()
}

// overloadMain is `edgebench overload`.
func overloadMain(ctx context.Context, command string, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseOverloadFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	cfg.command = command
	r, err := newBinRunner("edgebench-overload-", cfg.bin, false, stderr)
	if err != nil {
		return err
	}
	rep, err := runScenario(ctx, r, stdout, stderr, "logs, config and load spec", cfg.jsonPath,
		func(ctx context.Context) (OverloadReport, error) { return r.overload(ctx, cfg) }, WriteOverloadMarkdown)
	if err != nil {
		return err
	}
	if !rep.Pass() {
		// Like `edgebench run`, the exit status says whether the scenario
		// ran; the verdict is in the report. The logs stay for a look.
		fmt.Fprintf(stderr, "edgebench: some targets FAIL; logs, config and load spec kept in %s\n", r.dir)
		return nil
	}
	return os.RemoveAll(r.dir)
}

// overload runs the scenario; the caller stops the processes.
func (r *runner) overload(ctx context.Context, cfg overloadConfig) (OverloadReport, error) {
	rep := OverloadReport{
		Machine: describeMachine(filepath.Join(cfg.bin, "edgecache"), time.Now()),
		Command: cfg.command,
		Setup:   setupOf(cfg),
	}
	fmt.Fprintf(r.log, "edgebench: %s\n", cfg.command)
	fail := func(err error) (OverloadReport, error) {
		rep.Error = err.Error()
		rep.Targets = ComputeOverloadTargets(rep.Phases)
		return rep, err
	}

	simAddr, _, err := r.startLLMSim(ctx, loadCPU, "--max-concurrency", strconv.Itoa(cfg.concurrency),
		"--ttft", cfg.ttft.String())
	if err != nil {
		return fail(fmt.Errorf("llmsim: %w", err))
	}
	keys := newOverloadKeys()
	confPath := filepath.Join(r.dir, "edgecache.yaml")
	conf := overloadConfigYAML(cfg, "http://"+simAddr, filepath.Join(r.dir, "journal"), keys)
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return fail(err)
	}
	addr, admin, _, err := r.startEdgecacheArgs(ctx, "--config", confPath)
	if err != nil {
		return fail(fmt.Errorf("edgecache: %w", err))
	}
	url := "http://" + addr + chatPath
	for _, key := range []string{keys.paid, keys.free} {
		if err := r.probeOverload(ctx, url, key); err != nil {
			return fail(err)
		}
	}

	spec := LoadSpec{URL: url, AdminURL: "http://" + admin, Timeout: cfg.timeout, MaxInFlight: cfg.maxInFlight,
		RunID: randomHex(6)}
	paid := LoadLane{Name: overloadPaidLane, Key: keys.paid, Rate: cfg.paidRate()}
	free := LoadLane{Name: overloadFreeLane, Key: keys.free, Rate: cfg.freeRate()}
	if cfg.warmup > 0 {
		spec.Phases = append(spec.Phases, LoadPhase{Name: phaseWarmup, Duration: cfg.warmup, Lanes: []LoadLane{paid}})
	}
	spec.Phases = append(spec.Phases,
		LoadPhase{Name: phaseUnloaded, Duration: cfg.duration, Lanes: []LoadLane{paid}},
		LoadPhase{Name: phaseOverload, Duration: cfg.duration, Lanes: []LoadLane{paid, free}})
	res, err := r.runLoadgen(ctx, spec)
	if err != nil {
		return fail(err)
	}
	for _, p := range res.Phases {
		if p.Name == phaseWarmup {
			rep.Baseline = p.Snapshot
			continue
		}
		rep.Phases = append(rep.Phases, p)
	}
	rep.Targets = ComputeOverloadTargets(rep.Phases)
	return rep, nil
}

// probeOverload checks, before the load, that key gets an answer from the
// model through edgecache with the cache off.
func (r *runner) probeOverload(ctx context.Context, url, key string) error {
	body := promptBody("probe-"+randomHex(4), "probe", "probe", 0)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := r.client.Do(req)
	if err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("probe: POST %s: status %d: %.200s", url, resp.StatusCode, b)
	}
	if cs := resp.Header.Get("Cache-Status"); !strings.Contains(cs, "fwd=bypass") {
		return fmt.Errorf("probe: the cache is not off for the load route: Cache-Status %q", cs)
	}
	return nil
}

// runLoadgen runs `edgebench loadgen` pinned to the load CPU and returns
// its result. It is killed if it outlives its phases by far.
func (r *runner) runLoadgen(ctx context.Context, spec LoadSpec) (LoadResult, error) {
	specPath := filepath.Join(r.dir, "loadgen-spec.json")
	data, err := json.MarshalIndent(spec, "", "  ")
	if err != nil {
		return LoadResult{}, err
	}
	if err := os.WriteFile(specPath, data, 0o600); err != nil {
		return LoadResult{}, err
	}
	limit := loadgenExtraWait
	for _, p := range spec.Phases {
		limit += p.Duration + spec.Timeout
	}
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	logf, err := os.Create(filepath.Join(r.dir, "loadgen.log"))
	if err != nil {
		return LoadResult{}, err
	}
	defer logf.Close()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, "taskset", "-c", strconv.Itoa(loadCPU),
		filepath.Join(r.cfg.bin, "edgebench"), "loadgen", "--spec", specPath)
	cmd.Stdout = &out
	cmd.Stderr = io.MultiWriter(logf, r.log)
	cmd.Env = cleanEnv(os.Environ())
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return LoadResult{}, fmt.Errorf("loadgen stopped after %v: %w", limit, ctx.Err())
		}
		return LoadResult{}, fmt.Errorf("loadgen: %w (log: %s)", err, logf.Name())
	}
	var res LoadResult
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		return LoadResult{}, fmt.Errorf("loadgen output: %w", err)
	}
	return res, nil
}

// checkTools is checkPrereqs with wrk optional: the overload scenario has
// its own load generator.
func checkTools(bin string, needWrk bool) error {
	if needWrk {
		if _, err := exec.LookPath("wrk"); err != nil {
			return errors.New("wrk not found in PATH: install the Debian package wrk (apt-get install -y wrk)")
		}
	}
	if _, err := exec.LookPath("taskset"); err != nil {
		return errors.New("taskset not found in PATH: install the Debian package util-linux (apt-get install -y util-linux)")
	}
	if runtime.NumCPU() < 2 {
		return fmt.Errorf("need 2 CPUs (server on CPU %d, load generator on CPU %d); this process may use %d", serverCPU, loadCPU, runtime.NumCPU())
	}
	if bin == "" {
		return errors.New("--bin DIR is required")
	}
	for _, name := range []string{"edgecache", "llmsim", "edgebench"} {
		p := filepath.Join(bin, name)
		st, err := os.Stat(p)
		if err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			return fmt.Errorf("%s: not an executable; build it first (go build -o %s ./cmd/%s)", p, bin, name)
		}
	}
	return nil
}

// writeJSONFile writes v as indented JSON to path.
func writeJSONFile(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}
