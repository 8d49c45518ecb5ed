package bench

// `edgebench jobs`: does the queue of background jobs drain a saturated
// model better than clients that retry?
//
// llmsim runs C generations at once (--max-concurrency C) and answers
// after T (--ttft T); edgecache in front of it has an adaptive concurrency
// limit of C and the cache off. Two phases, one after the other, each of M
// clients started at once with a prompt of their own:
//
//	plain: each client posts a chat completion and, on 429 or 503, waits
//	       the Retry-After it was given (1 s without one) and posts again,
//	       until it has an answer or its deadline passes;
//	jobs:  each client submits a background Responses request
//	       (background: true) and polls it until it is completed.
//
// For each phase the report gives the clients' completion times (p50, p99,
// max, from the phase's start), how many completed, the refusals the plain
// clients retried, and the model's utilisation: the slot time llmsim
// counted (/_sim/stats busy_ms) over C × the phase's wall time. A queue
// that drains the model keeps it near 1 and finishes the last client
// sooner than retries that come back in waves.

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/edgecache/edgecache/cmd/internal/llmsim"
)

// jobsConfig is `edgebench jobs`'s flags.
type jobsConfig struct {
	bin, jsonPath, command string
	m                      int           // clients per phase
	concurrency            int           // llmsim --max-concurrency
	ttft                   time.Duration // llmsim --ttft
	timeout                time.Duration // a client's deadline
	poll                   time.Duration // a job client's poll interval
}

const jobsUsage = `Usage: edgebench jobs [flags]

M background jobs against M plain clients that retry on 503/429 after
Retry-After, one phase after the other, against llmsim saturated at
--concurrency C generations (--ttft T each), edgecache in front with a
concurrency limit of C and the cache off. Reports per phase the clients'
completion times (p50/p99/max) and the model's utilisation (llmsim's busy
slot time / C × wall time). Needs taskset and the binaries in --bin.

Flags:
`

func parseJobsFlags(args []string, stderr io.Writer) (jobsConfig, error) {
	var c jobsConfig
	fs := flag.NewFlagSet("edgebench jobs", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.bin, "bin", defaultBinDir(), "directory with prebuilt edgecache and llmsim binaries")
	fs.StringVar(&c.jsonPath, "json", "", "also write the results as JSON to this file")
	fs.IntVar(&c.m, "m", 200, "clients per phase (M background jobs, then M plain clients)")
	fs.IntVar(&c.concurrency, "concurrency", 8, "llmsim --max-concurrency C")
	fs.DurationVar(&c.ttft, "ttft", 200*time.Millisecond, "llmsim --ttft T: time to a (non-streamed) answer")
	fs.DurationVar(&c.timeout, "timeout", 5*time.Minute, "a client's deadline for its answer")
	fs.DurationVar(&c.poll, "poll", 100*time.Millisecond, "a job client's poll interval")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), jobsUsage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if c.m < 1 || c.concurrency < 1 || c.ttft <= 0 || c.timeout <= 0 || c.poll <= 0 {
		return c, errors.New("--m and --concurrency at least 1, durations positive")
	}
	return c, nil
}

// JobsSetup records how the scenario ran.
type JobsSetup struct {
	Clients     int    `json:"clients_per_phase"`
	Concurrency int    `json:"llmsim_max_concurrency"`
	TTFT        string `json:"llmsim_ttft"`
	Timeout     string `json:"client_timeout"`
	Poll        string `json:"poll_interval"`
}

// JobsPhase is one phase's outcome.
type JobsPhase struct {
	Name      string `json:"name"` // "plain" or "jobs"
	Clients   int    `json:"clients"`
	Completed int    `json:"completed"` // clients with their answer before the deadline
	// Refusals are the 429/503 answers plain clients waited out and
	// retried; Polls the status reads of job clients.
	Refusals int `json:"refusals"`
	Polls    int `json:"polls"`
	// Completion is each completed client's time from the phase's start
	// to its answer.
	Completion Latency `json:"completion"`
	WallMs     float64 `json:"wall_ms"` // the phase's start to its last client's end
	// UpstreamCalls are the generation requests llmsim received; BusyMs
	// its busy slot time; Utilisation BusyMs / (C × WallMs).
	UpstreamCalls int64   `json:"upstream_calls"`
	BusyMs        int64   `json:"llmsim_busy_ms"`
	Utilisation   float64 `json:"utilisation"`
}

// JobsReport is the outcome of one `edgebench jobs`.
type JobsReport struct {
	Machine Machine     `json:"machine"`
	Command string      `json:"command"`
	Setup   JobsSetup   `json:"setup"`
	Phases  []JobsPhase `json:"phases"`
	Error   string      `json:"error,omitempty"`
}

// jobsMain is `edgebench jobs`.
func jobsMain(ctx context.Context, command string, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseJobsFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	cfg.command = command
	r, err := newBinRunner("edgebench-jobs-", cfg.bin, false, stderr)
	if err != nil {
		return err
	}
	if _, err := runScenario(ctx, r, stdout, stderr, "logs and config", cfg.jsonPath,
		func(ctx context.Context) (JobsReport, error) { return r.jobs(ctx, cfg) }, WriteJobsMarkdown); err != nil {
		return err
	}
	return os.RemoveAll(r.dir)
}

// jobsConfigYAML is edgecache's configuration for the scenario.
func jobsConfigYAML(c jobsConfig, upstream, journalDir string) string {
	var b strings.Builder
	b.WriteString("# generated by edgebench jobs\n")
	fmt.Fprintf(&b, "upstream:\n  url: %s\n", yamlQuote(upstream))
	b.WriteString("semantic:\n  embedder: lexical   # no model to load: no route is semantic\n")
	fmt.Fprintf(&b, "degrade:\n  journal_dir: %s\n", yamlQuote(journalDir))
	fmt.Fprintf(&b, "admission:\n  concurrency: {initial: %d, min: 1, max: %d}\n", c.concurrency, c.concurrency)
	b.WriteString("routes:\n")
	fmt.Fprintf(&b, "  - name: chat\n    path: %s\n    cache: {mode: \"off\", no_templates: true}\n", chatPath)
	fmt.Fprintf(&b, "  - name: responses\n    path: %s\n    cache: {mode: \"off\", no_templates: true}\n", responsesPath)
	fmt.Fprintf(&b, "    jobs: {enabled: true, max_per_tenant: %d}\n", c.m)
	return b.String()
}

// jobs runs the scenario; the caller stops the processes.
func (r *runner) jobs(ctx context.Context, cfg jobsConfig) (JobsReport, error) {
	rep := JobsReport{Machine: describeMachine(filepath.Join(cfg.bin, "edgecache"), time.Now()), Command: cfg.command,
		Setup: JobsSetup{Clients: cfg.m, Concurrency: cfg.concurrency, TTFT: cfg.ttft.String(),
			Timeout: cfg.timeout.String(), Poll: cfg.poll.String()}}
	fmt.Fprintf(r.log, "edgebench: %s\n", cfg.command)
	fail := func(err error) (JobsReport, error) { rep.Error = err.Error(); return rep, err }
	simAddr, _, err := r.startLLMSim(ctx, loadCPU, "--max-concurrency", strconv.Itoa(cfg.concurrency), "--ttft", cfg.ttft.String())
	if err != nil {
		return fail(fmt.Errorf("llmsim: %w", err))
	}
	confPath := filepath.Join(r.dir, "edgecache.yaml")
	if err := os.WriteFile(confPath, []byte(jobsConfigYAML(cfg, "http://"+simAddr, filepath.Join(r.dir, "journal"))), 0o600); err != nil {
		return fail(err)
	}
	addr, _, _, err := r.startEdgecacheArgs(ctx, "--config", confPath)
	if err != nil {
		return fail(fmt.Errorf("edgecache: %w", err))
	}
	tg := jobsTarget{base: "http://" + addr, sim: "http://" + simAddr, key: "sk-edgebench-jobs-" + randomHex(8),
		concurrency: cfg.concurrency, timeout: cfg.timeout, poll: cfg.poll,
		client: &http.Client{Timeout: cfg.timeout, Transport: &http.Transport{MaxIdleConnsPerHost: cfg.m}}}
	for _, ph := range []struct {
		name string
		run  func(context.Context, jobsTarget, int) clientResult
	}{{"plain", plainClient}, {"jobs", jobClient}} {
		p, err := runJobsPhase(ctx, tg, ph.name, cfg.m, ph.run)
		if err != nil {
			return fail(err)
		}
		rep.Phases = append(rep.Phases, p)
	}
	return rep, nil
}

// jobsTarget is what the phases' clients talk to.
type jobsTarget struct {
	base, sim, key string // edgecache's and llmsim's base URLs, the clients' API key
	concurrency    int    // llmsim's max_concurrency: the utilisation's denominator
	timeout, poll  time.Duration
	client         *http.Client
}

// clientResult is one client's outcome.
type clientResult struct {
	done     bool
	elapsed  time.Duration // from the phase's start to the answer
	refusals int
	polls    int
}

// simCounts reads llmsim's generation calls and busy slot time.
func simCounts(ctx context.Context, tg jobsTarget) (calls, busyMs int64, err error) {
	m, err := simStats(ctx, tg.client, tg.sim)
	return m[chatPath] + m[responsesPath], m[llmsim.StatBusyMillis], err
}

// runJobsPhase starts m clients at once and measures the phase from
// llmsim's counters before and after.
func runJobsPhase(ctx context.Context, tg jobsTarget, name string, m int, client func(context.Context, jobsTarget, int) clientResult) (JobsPhase, error) {
	calls0, busy0, err := simCounts(ctx, tg)
	if err != nil {
		return JobsPhase{}, err
	}
	results := make([]clientResult, m)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range m {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = client(ctx, tg, i)
			results[i].elapsed = time.Since(start)
		}()
	}
	wg.Wait()
	wall := time.Since(start)
	// llmsim adds a call's slot time once its handler returned, just
	// after the answer: give the last ones a moment.
	time.Sleep(50 * time.Millisecond)
	calls1, busy1, err := simCounts(ctx, tg)
	if err != nil {
		return JobsPhase{}, err
	}
	return phaseOf(name, results, wall, calls1-calls0, busy1-busy0, tg.concurrency), nil
}

// phaseOf computes a phase's report from its clients' results and the
// model's counters over it.
func phaseOf(name string, results []clientResult, wall time.Duration, calls, busyMs int64, concurrency int) JobsPhase {
	p := JobsPhase{Name: name, Clients: len(results), WallMs: ms(wall), UpstreamCalls: calls, BusyMs: busyMs}
	var done []time.Duration
	for _, r := range results {
		p.Refusals += r.refusals
		p.Polls += r.polls
		if r.done {
			p.Completed++
			done = append(done, r.elapsed)
		}
	}
	p.Completion = summarizeLatency(done)
	if wall > 0 && concurrency > 0 {
		p.Utilisation = float64(busyMs) / (float64(concurrency) * ms(wall))
	}
	return p
}

// post sends body to path with the client's key; it returns the status,
// the Retry-After in seconds (0: none) and the body.
func (tg jobsTarget) post(ctx context.Context, method, path, body string) (int, int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, tg.base+path, strings.NewReader(body))
	if err != nil {
		return 0, 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+tg.key)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := tg.client.Do(req)
	if err != nil {
		return 0, 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	ra, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
	return resp.StatusCode, ra, b, err
}

// plainClient posts a chat completion until it is answered, waiting out
// each 429/503's Retry-After (1 s without one, or after a failed call).
func plainClient(ctx context.Context, tg jobsTarget, i int) clientResult {
	ctx, cancel := context.WithTimeout(ctx, tg.timeout)
	defer cancel()
	body := fmt.Sprintf(`{"model":"sim-1","messages":[{"role":"user","content":"plain client %d %s"}]}`, i, tg.key)
	var res clientResult
	for {
		st, ra, _, err := tg.post(ctx, http.MethodPost, chatPath, body)
		if err == nil && st == http.StatusOK {
			res.done = true
			return res
		}
		if st == http.StatusTooManyRequests || st == http.StatusServiceUnavailable {
			res.refusals++
		}
		if sleepCtx(ctx, time.Duration(max(ra, 1))*time.Second) != nil {
			return res
		}
	}
}

// jobClient submits a background response and polls it until it is
// completed (or failed, or the deadline passes).
func jobClient(ctx context.Context, tg jobsTarget, i int) clientResult {
	ctx, cancel := context.WithTimeout(ctx, tg.timeout)
	defer cancel()
	body := fmt.Sprintf(`{"model":"sim-1","input":"job client %d %s","background":true}`, i, tg.key)
	var res clientResult
	var job struct{ ID, Status string }
	for job.ID == "" {
		st, ra, b, err := tg.post(ctx, http.MethodPost, responsesPath, body)
		if err == nil && st == http.StatusOK && json.Unmarshal(b, &job) == nil && job.ID != "" {
			break
		}
		res.refusals++
		if sleepCtx(ctx, time.Duration(max(ra, 1))*time.Second) != nil {
			return res
		}
	}
	for job.Status != "completed" {
		if job.Status == "failed" || job.Status == "cancelled" || sleepCtx(ctx, tg.poll) != nil {
			return res
		}
		res.polls++
		st, _, b, err := tg.post(ctx, http.MethodGet, responsesPath+"/"+job.ID, "")
		if err != nil || st != http.StatusOK || json.Unmarshal(b, &job) != nil {
			job.Status = "" // a failed read: poll again
		}
	}
	res.done = true
	return res
}

// WriteJobsMarkdown writes the set-up and a row per phase.
func WriteJobsMarkdown(w io.Writer, rep JobsReport) error {
	var b strings.Builder
	writeMachine(&b, rep.Machine)
	fmt.Fprintf(&b, "Command: `%s`\n\n", rep.Command)
	s := rep.Setup
	fmt.Fprintf(&b, "Set-up: llmsim --max-concurrency %d --ttft %s on CPU 0, edgecache on CPU 1 (concurrency limit %d, cache off). "+
		"Each phase starts %d clients at once with prompts of their own: plain clients retry 429/503 after Retry-After; "+
		"job clients submit background: true and poll every %s. Client deadline %s. "+
		"Utilisation = llmsim busy slot time / (C × wall time).\n\n",
		s.Concurrency, s.TTFT, s.Concurrency, s.Clients, s.Poll, s.Timeout)
	b.WriteString("| phase | completed | p50 | p99 | max | wall | refusals retried | polls | upstream calls | utilisation |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|\n")
	for _, p := range rep.Phases {
		fmt.Fprintf(&b, "| %s | %d / %d | %.0f ms | %.0f ms | %.0f ms | %.0f ms | %d | %d | %d | %.0f %% |\n",
			p.Name, p.Completed, p.Clients, p.Completion.P50Ms, p.Completion.P99Ms, p.Completion.MaxMs, p.WallMs,
			p.Refusals, p.Polls, p.UpstreamCalls, p.Utilisation*100)
	}
	if rep.Error != "" {
		fmt.Fprintf(&b, "\nError: %s\n", rep.Error)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
