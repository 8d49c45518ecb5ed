package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/edgecache/edgecache/cmd/internal/llmsim"
)

// `edgebench streams`: N concurrent streamed chat requests through
// edgecache (CPU 1) to llmsim pacing tokens (CPU 0, with the stream
// generator `edgebench streamgen`), against the same load sent straight to
// llmsim. It reports streams completed intact, edgecache's RSS per open
// stream above its idle baseline (peak VmRSS while the streams are open),
// its CPU per 1,000 relayed events (utime+stime from /proc/PID/stat over
// the run) and the TTFT p50/p99 through edgecache, direct and added; the
// share admitted (status 200) and the adaptive limit over time
// (streams_limit.go), with --degrade-after a second wave against a slower
// llmsim to show the limit clamping down.

// streamsConfig is `edgebench streams`'s flags.
type streamsConfig struct {
	bin, jsonPath, command string
	n, tokens              int
	tps                    float64
	ttft, ramp, timeout    time.Duration
	open                   bool // open admission: large concurrency limits
	noReference            bool // skip the minimal-proxy reference phase
	// h2c: edgecache and the reference proxy reach llmsim over HTTP/2
	// with prior knowledge, their streams sharing connections.
	h2c bool
	// promptBytes: each request carries a system message this long.
	promptBytes int
	cacheable   bool // --cacheable: no Cache-Control: no-store
	// degradeAfter > 0 raises llmsim's TTFT to degradeTTFT that long after
	// the burst through edgecache started, and starts a second wave of
	// degradeN streams spread over degradeRamp.
	degradeAfter, degradeTTFT, degradeRamp time.Duration
	degradeN                               int
	// recoverAfter > 0 (with degradeAfter) sets llmsim's TTFT back that
	// long after it rose and starts a third wave of recoverN streams
	// spread over recoverRamp: the limit should give the capacity back.
	recoverAfter, recoverRamp time.Duration
	recoverN                  int
}

const streamsUsage = `Usage: edgebench streams [flags]

N concurrent streamed chat requests through edgecache (pinned to CPU 1) to llmsim
pacing tokens (CPU 0, with the stream generator), then the same load straight to
llmsim as the reference. Reports streams completed intact / N, edgecache RSS per
open stream above its idle baseline, edgecache CPU per 1,000 relayed events and
TTFT p50/p99 through edgecache, direct and added, the share admitted (status 200)
and the adaptive concurrency limit every 250 ms (/admin/upstreams). --open-admission
runs edgecache with large concurrency limits and max_in_flight; without it, with the default
configuration. --degrade-after D raises llmsim's TTFT to --degrade-ttft D after the
burst through edgecache started and sends a second wave of --degrade-n streams over
--degrade-ramp, so that the limit's clamp shows in its timeline; --recover-after D
sets llmsim's TTFT back D after it rose and sends a third wave of --recover-n
streams over --recover-ramp, so that the limit's recovery shows too. Then the same
streams go through "edgebench proxy", a minimal net/http reverse proxy, in
edgecache's place (skip with --no-reference): the floor its RSS, CPU per event
and added TTFT are read against.
Raises RLIMIT_NOFILE for itself and its children. Needs taskset and the binaries
in --bin; installs and builds nothing.

Flags:
`

func parseStreamsFlags(args []string, stderr io.Writer) (streamsConfig, error) {
	var c streamsConfig
	fs := flag.NewFlagSet("edgebench streams", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.bin, "bin", defaultBinDir(), "directory with prebuilt edgecache, llmsim and edgebench binaries")
	fs.StringVar(&c.jsonPath, "json", "", "also write the results as JSON to this file")
	fs.IntVar(&c.n, "n", 2000, "concurrent streams (at most 10,000)")
	fs.Float64Var(&c.tps, "tps", 20, "llmsim --tps: tokens per second of each stream")
	fs.IntVar(&c.tokens, "tokens", 200, "llmsim --tokens: tokens (words) per answer")
	fs.DurationVar(&c.ttft, "ttft", 0, "llmsim --ttft: time to first token")
	fs.DurationVar(&c.ramp, "ramp", 0, "spread the starts of the N streams over this time (0 = one burst)")
	fs.DurationVar(&c.timeout, "timeout", 0, "client timeout of one stream (0 = 2 × tokens/tps + 30s)")
	fs.BoolVar(&c.open, "open-admission", false, "edgecache with large concurrency limits instead of the default config")
	fs.BoolVar(&c.noReference, "no-reference", false, "skip the reference run through a minimal net/http reverse proxy")
	fs.IntVar(&c.promptBytes, "prompt-bytes", 0, "add a system message of about this many bytes to every request (a long context); 0 = a one-line question")
	fs.BoolVar(&c.cacheable, "cacheable", false, "send the streams without Cache-Control: no-store: edgecache stores the answers and coalesces the calls (a streamed request's default path) instead of relaying inline")
	fs.BoolVar(&c.h2c, "upstream-h2c", false, "edgecache and the reference proxy reach llmsim at an h2c:// URL (HTTP/2, prior knowledge): streams share connections instead of one each")
	fs.DurationVar(&c.degradeAfter, "degrade-after", 0, "raise llmsim's TTFT this long after the burst through edgecache started, and send a second wave (0 = no)")
	fs.DurationVar(&c.degradeTTFT, "degrade-ttft", 2*time.Second, "llmsim's TTFT from --degrade-after on")
	fs.IntVar(&c.degradeN, "degrade-n", 0, "streams of the second wave (0 = n/4)")
	fs.DurationVar(&c.degradeRamp, "degrade-ramp", 10*time.Second, "spread the second wave's starts over this time")
	fs.DurationVar(&c.recoverAfter, "recover-after", 0, "with --degrade-after: set llmsim's TTFT back this long after it rose, and send a third wave (0 = no)")
	fs.IntVar(&c.recoverN, "recover-n", 0, "streams of the third wave (0 = n)")
	fs.DurationVar(&c.recoverRamp, "recover-ramp", 10*time.Second, "spread the third wave's starts over this time")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), streamsUsage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	var errs []error
	if c.n < 1 || c.n > 10_000 {
		errs = append(errs, errors.New("--n must be in 1..10000"))
	}
	if c.tokens < 1 || !(c.tps > 0) {
		errs = append(errs, errors.New("--tokens and --tps must be positive"))
	}
	if c.ttft < 0 || c.ramp < 0 || c.timeout < 0 {
		errs = append(errs, errors.New("--ttft, --ramp and --timeout must not be negative"))
	}
	if c.degradeAfter < 0 || c.degradeTTFT <= 0 || c.degradeRamp < 0 || c.degradeN < 0 || c.degradeN > 10_000 {
		errs = append(errs, errors.New("--degrade-after and --degrade-ramp must not be negative, --degrade-ttft must be positive, --degrade-n in 0..10000"))
	}
	if c.degradeN == 0 {
		c.degradeN = max(1, c.n/4)
	}
	if c.promptBytes < 0 || c.promptBytes > 1<<20 {
		errs = append(errs, errors.New("--prompt-bytes must be in 0..1048576"))
	}
	if c.recoverAfter < 0 || c.recoverRamp < 0 || c.recoverN < 0 || c.recoverN > 10_000 {
		errs = append(errs, errors.New("--recover-after and --recover-ramp must not be negative, --recover-n in 0..10000"))
	}
	if c.recoverAfter > 0 && c.degradeAfter <= 0 {
		errs = append(errs, errors.New("--recover-after needs --degrade-after"))
	}
	if c.recoverN == 0 {
		c.recoverN = c.n
	}
	if c.timeout == 0 && c.tps > 0 {
		c.timeout = 2*(c.ttft+time.Duration(float64(c.tokens)/c.tps*float64(time.Second))) + c.ramp + 30*time.Second
	}
	return c, errors.Join(errs...)
}

// upstreamURL is llmsim's base URL as edgecache and the proxy reach it.
func (c streamsConfig) upstreamURL(simAddr string) string {
	if c.h2c {
		return "h2c://" + simAddr
	}
	return "http://" + simAddr
}

// streamsConfigYAML is edgecache's configuration: the default one, or with
// --open-admission concurrency limits far above n.
func streamsConfigYAML(c streamsConfig, upstream string) string {
	var b strings.Builder
	b.WriteString("# generated by edgebench streams\n")
	fmt.Fprintf(&b, "upstream:\n  url: %s\n", yamlQuote(upstream))
	b.WriteString("semantic:\n  embedder: lexical   # no model to load: no route is semantic\n")
	if c.open {
		limit := 2 * c.n
		b.WriteString("admission:\n")
		fmt.Fprintf(&b, "  concurrency: {initial: %d, min: %d, max: %d}\n", limit, limit, limit)
		// Self-protection sheds the free lane at 90 % of max_in_flight
		// (default 4,096): open it as far.
		fmt.Fprintf(&b, "  max_in_flight: %d\n", limit)
	}
	return b.String()
}

// StreamSpec is what `edgebench streamgen` runs.
type StreamSpec struct {
	URL     string        `json:"url"`
	N       int           `json:"n"`
	Tokens  int           `json:"tokens"` // content events a complete stream carries
	Ramp    time.Duration `json:"ramp"`
	Timeout time.Duration `json:"timeout"`
	RunID   string        `json:"run_id"`
	// PromptBytes > 0 adds a system message of about that many bytes to
	// every request: a long context (a chat history, a system prompt, a
	// document) as real clients send, not a one-line question.
	PromptBytes int `json:"prompt_bytes,omitempty"`
	// Cacheable sends the requests without Cache-Control: no-store, so
	// edgecache may store the answers and coalesces the calls (the
	// default path of a streamed request), instead of relaying them
	// inline.
	Cacheable bool `json:"cacheable,omitempty"`
}

// StreamPhase is the generator's result for one target.
type StreamPhase struct {
	N         int            `json:"n"`
	Admitted  int            `json:"admitted"`    // answered 200 (not refused)
	Intact    int            `json:"intact"`      // 200, every content event, finish and [DONE]
	Events    int64          `json:"events"`      // data events received (all streams)
	TTFTP50Ms float64        `json:"ttft_p50_ms"` // to the first content event, intact streams
	TTFTP99Ms float64        `json:"ttft_p99_ms"`
	PeakOpen  int            `json:"peak_open"`
	Failures  map[string]int `json:"failures,omitempty"` // by kind
	Seconds   float64        `json:"seconds"`
}

// StreamsReport is `edgebench streams`'s report.
type StreamsReport struct {
	Machine       Machine `json:"machine"`
	Command       string  `json:"command"`
	OpenAdmission bool    `json:"open_admission"`
	UpstreamH2C   bool    `json:"upstream_h2c,omitempty"` // --upstream-h2c
	// UpstreamHTTP2 is how many requests llmsim had received over HTTP/2
	// when the phase through edgecache ended (the direct phase's are
	// HTTP/1.1): with --upstream-h2c, at least the phase's streams.
	UpstreamHTTP2  int64          `json:"upstream_http2_requests"`
	PromptBytes    int            `json:"prompt_bytes,omitempty"` // --prompt-bytes
	Cacheable      bool           `json:"cacheable,omitempty"`    // --cacheable
	N              int            `json:"n"`
	TokensPerSec   float64        `json:"tokens_per_second"`
	Tokens         int            `json:"tokens"`
	Direct         StreamPhase    `json:"direct"`
	Edgecache      StreamPhase    `json:"edgecache"`
	BaselineRSSKiB int64          `json:"baseline_rss_kib"`
	PeakRSSKiB     int64          `json:"peak_rss_kib"`
	CPUSeconds     float64        `json:"edgecache_cpu_seconds"`
	Derived        StreamsDerived `json:"derived"`
	// The adaptive limit every 250 ms from the burst through edgecache on
	// (empty with --open-admission's fixed limit too, which it shows flat).
	Limit        []LimitPoint `json:"limit_timeline,omitempty"`
	LimitSummary LimitSummary `json:"limit_summary"`
	// With --degrade-after: when llmsim's TTFT rose (seconds on the
	// timeline's clock), to what, and the second wave's result.
	DegradeAtS    float64      `json:"degrade_at_s,omitempty"`
	DegradeTTFTMs float64      `json:"degrade_ttft_ms,omitempty"`
	Degraded      *StreamPhase `json:"degraded_wave,omitempty"`
	// With --recover-after: when llmsim's TTFT went back, and the third
	// wave's result.
	RecoverAtS float64      `json:"recover_at_s,omitempty"`
	Recovered  *StreamPhase `json:"recovered_wave,omitempty"`
	// The same streams through a minimal proxy (absent with --no-reference).
	Reference *StreamsReference `json:"reference,omitempty"`
	Error     string            `json:"error,omitempty"`
}

// StreamsDerived are the figures computed from the raw ones.
type StreamsDerived struct {
	AdmittedShare    float64 `json:"admitted_share"` // through edgecache: admitted / N
	RSSPerStreamKiB  float64 `json:"rss_per_open_stream_kib"`
	CPUMsPer1kEvents float64 `json:"cpu_ms_per_1k_events"`
	CPUUsPerEvent    float64 `json:"cpu_us_per_event"`
	AddedTTFTP50Ms   float64 `json:"added_ttft_p50_ms"`
	AddedTTFTP99Ms   float64 `json:"added_ttft_p99_ms"`
}

// deriveStreams computes the per-stream and per-event figures. RSS per
// open stream divides the peak RSS above baseline by the streams open at
// the peak (the generator's peak of concurrently open streams).
func deriveStreams(rep StreamsReport) StreamsDerived {
	var d StreamsDerived
	if rep.Edgecache.N > 0 {
		d.AdmittedShare = float64(rep.Edgecache.Admitted) / float64(rep.Edgecache.N)
	}
	if open := rep.Edgecache.PeakOpen; open > 0 && rep.PeakRSSKiB > rep.BaselineRSSKiB {
		d.RSSPerStreamKiB = float64(rep.PeakRSSKiB-rep.BaselineRSSKiB) / float64(open)
	}
	ev := rep.Edgecache.Events
	for _, w := range []*StreamPhase{rep.Degraded, rep.Recovered} { // the CPU figure covers every wave
		if w != nil {
			ev += w.Events
		}
	}
	if ev > 0 {
		d.CPUMsPer1kEvents = rep.CPUSeconds * 1000 / float64(ev) * 1000
		d.CPUUsPerEvent = rep.CPUSeconds * 1e6 / float64(ev)
	}
	d.AddedTTFTP50Ms = rep.Edgecache.TTFTP50Ms - rep.Direct.TTFTP50Ms
	d.AddedTTFTP99Ms = rep.Edgecache.TTFTP99Ms - rep.Direct.TTFTP99Ms
	return d
}

// WriteStreamsMarkdown prints the report as a Markdown table.
func WriteStreamsMarkdown(w io.Writer, rep StreamsReport) error {
	var b strings.Builder
	adm := "default config"
	if rep.OpenAdmission {
		adm = "open admission"
	}
	fmt.Fprintf(&b, "## edgebench streams (%s)\n\n", adm)
	fmt.Fprintf(&b, "`%s`\n\n", rep.Command)
	proto := "HTTP/1.1, a connection per stream"
	if rep.UpstreamH2C {
		proto = fmt.Sprintf("h2c, streams sharing connections (llmsim counted %d requests over HTTP/2)", rep.UpstreamHTTP2)
	}
	prompt := "a one-line question"
	if rep.PromptBytes > 0 {
		prompt = fmt.Sprintf("a %d-byte system message and a one-line question", rep.PromptBytes)
	}
	if rep.Cacheable {
		prompt += " (cacheable: stored and coalesced, not no-store)"
	}
	fmt.Fprintf(&b, "%d concurrent streams of %s, llmsim at %g tokens/s, %d tokens; edgecache on CPU %d, llmsim and the generator on CPU %d; edgecache (and the reference proxy) to llmsim over %s.\n\n",
		rep.N, prompt, rep.TokensPerSec, rep.Tokens, serverCPU, loadCPU, proto)
	b.WriteString("| target | intact / N | admitted / N | peak open | TTFT p50 | TTFT p99 | events |\n|---|---|---|---|---|---|---|\n")
	rows := []struct {
		name string
		p    StreamPhase
	}{{"llmsim direct", rep.Direct}, {"through edgecache", rep.Edgecache}}
	if rep.Degraded != nil {
		rows = append(rows, struct {
			name string
			p    StreamPhase
		}{fmt.Sprintf("second wave, llmsim TTFT %.0f ms", rep.DegradeTTFTMs), *rep.Degraded})
	}
	if rep.Recovered != nil {
		rows = append(rows, struct {
			name string
			p    StreamPhase
		}{fmt.Sprintf("third wave, llmsim TTFT back at %.2f s", rep.RecoverAtS), *rep.Recovered})
	}
	for _, row := range rows {
		fmt.Fprintf(&b, "| %s | %d / %d | %d / %d | %d | %.1f ms | %.1f ms | %d |\n",
			row.name, row.p.Intact, row.p.N, row.p.Admitted, row.p.N, row.p.PeakOpen, row.p.TTFTP50Ms, row.p.TTFTP99Ms, row.p.Events)
	}
	d := rep.Derived
	b.WriteString("\n| edgecache | value |\n|---|---|\n")
	fmt.Fprintf(&b, "| burst admitted (status 200) | %.1f %% |\n", 100*d.AdmittedShare)
	if ls := rep.LimitSummary; len(rep.Limit) > 0 {
		fmt.Fprintf(&b, "| adaptive limit, burst | %d at start → %d at %.2f s; up to %d queued, none left at %.2f s |\n",
			ls.Start, ls.Peak, ls.PeakAtS, ls.MaxQueued, ls.AtBurstS)
		if rep.DegradeAtS > 0 {
			ended := "did not end"
			if ls.SlowStartEndedS >= 0 {
				ended = fmt.Sprintf("ended %.2f s after", ls.SlowStartEndedS)
			}
			fmt.Fprintf(&b, "| adaptive limit, TTFT raised to %.0f ms at %.2f s | %d before → %d after 2 s → %d after 5 s → %d after 10 s; slow start %s |\n",
				rep.DegradeTTFTMs, rep.DegradeAtS, ls.BeforeDegrade, ls.After2s, ls.After5s, ls.After10s, ended)
		}
	}
	if rep.RecoverAtS > 0 && len(rep.Limit) > 0 {
		rs := summarizeRecovery(rep.Limit, rep.RecoverAtS)
		again := "did not begin again"
		if rs.SlowStartS >= 0 {
			again = fmt.Sprintf("began again %.2f s after", rs.SlowStartS)
		}
		fmt.Fprintf(&b, "| adaptive limit, TTFT back at %.2f s | %d then → up to %d at +%.2f s; slow start %s |\n",
			rep.RecoverAtS, rs.AtRecover, rs.Peak, rs.PeakAfterS, again)
	}
	fmt.Fprintf(&b, "| RSS baseline / peak | %d KiB / %d KiB |\n", rep.BaselineRSSKiB, rep.PeakRSSKiB)
	fmt.Fprintf(&b, "| RSS per open stream above baseline | %.1f KiB |\n", d.RSSPerStreamKiB)
	fmt.Fprintf(&b, "| CPU per 1,000 relayed events | %.2f ms (%.2f µs/event) |\n", d.CPUMsPer1kEvents, d.CPUUsPerEvent)
	fmt.Fprintf(&b, "| added TTFT p50 / p99 | %+.1f ms / %+.1f ms |\n", d.AddedTTFTP50Ms, d.AddedTTFTP99Ms)
	if ref := rep.Reference; ref != nil {
		writeStreamsReference(&b, ref, d)
	}
	for _, row := range rows {
		if len(row.p.Failures) > 0 {
			keys := make([]string, 0, len(row.p.Failures))
			for k := range row.p.Failures {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			fmt.Fprintf(&b, "\nFailures (%s):", row.name)
			for _, k := range keys {
				fmt.Fprintf(&b, " %s %d;", k, row.p.Failures[k])
			}
			b.WriteString("\n")
		}
	}
	if len(rep.Limit) > 0 {
		b.WriteString("\nThe adaptive limit of the primary target (`/admin/upstreams` every 250 ms; a row when it moved by 5 % or more, the regime changed, the queue filled or emptied, else every 2 s):\n")
		writeLimitTimeline(&b, rep.Limit, rep.DegradeAtS)
	}
	if rep.Error != "" {
		fmt.Fprintf(&b, "\nError: %s\n", rep.Error)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// writeStreamsReference prints the minimal proxy's figures beside
// edgecache's, with their ratio.
func writeStreamsReference(b *strings.Builder, ref *StreamsReference, d StreamsDerived) {
	ratio := func(a, r float64) string {
		if r <= 0 {
			return "—"
		}
		return fmt.Sprintf("%.2f×", a/r)
	}
	fmt.Fprintf(b, "\nThe same streams through `edgebench proxy` (a minimal net/http reverse proxy) in edgecache's place: %d / %d intact.\n\n",
		ref.Phase.Intact, ref.Phase.N)
	b.WriteString("| figure | edgecache | minimal proxy | edgecache / proxy |\n|---|---|---|---|\n")
	fmt.Fprintf(b, "| RSS per open stream | %.1f KiB | %.1f KiB | %s |\n", d.RSSPerStreamKiB, ref.RSSPerStreamKiB, ratio(d.RSSPerStreamKiB, ref.RSSPerStreamKiB))
	fmt.Fprintf(b, "| CPU per event | %.2f µs | %.2f µs | %s |\n", d.CPUUsPerEvent, ref.CPUUsPerEvent, ratio(d.CPUUsPerEvent, ref.CPUUsPerEvent))
	fmt.Fprintf(b, "| added TTFT p50 / p99 | %+.1f / %+.1f ms | %+.1f / %+.1f ms | |\n",
		d.AddedTTFTP50Ms, d.AddedTTFTP99Ms, ref.AddedTTFTP50Ms, ref.AddedTTFTP99Ms)
}

// raiseNofile raises RLIMIT_NOFILE's soft limit to the hard limit, and the
// hard one too when allowed (root); children inherit it.
func raiseNofile(want uint64) {
	var rl syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) != nil {
		return
	}
	if rl.Max < want {
		try := rl
		try.Max, try.Cur = want, want
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &try) == nil {
			return
		}
	}
	rl.Cur = rl.Max
	_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
}

// streamsMain is `edgebench streams`.
func streamsMain(ctx context.Context, command string, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseStreamsFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	cfg.command = command
	raiseNofile(uint64(8*cfg.n + 4096))
	r, err := newBinRunner("edgebench-streams-", cfg.bin, false, stderr)
	if err != nil {
		return err
	}
	if _, err := runScenario(ctx, r, stdout, stderr, "logs and config", cfg.jsonPath,
		func(ctx context.Context) (StreamsReport, error) { return r.streams(ctx, cfg) }, WriteStreamsMarkdown); err != nil {
		return err
	}
	return os.RemoveAll(r.dir)
}

// streams runs the scenario; the caller stops the processes.
func (r *runner) streams(ctx context.Context, cfg streamsConfig) (StreamsReport, error) {
	rep := StreamsReport{
		Machine: describeMachine(filepath.Join(cfg.bin, "edgecache"), time.Now()),
		Command: cfg.command, OpenAdmission: cfg.open, UpstreamH2C: cfg.h2c, PromptBytes: cfg.promptBytes, Cacheable: cfg.cacheable, N: cfg.n, TokensPerSec: cfg.tps, Tokens: cfg.tokens,
	}
	fmt.Fprintf(r.log, "edgebench: %s\n", cfg.command)
	fail := func(err error) (StreamsReport, error) {
		rep.Error = err.Error()
		rep.Derived = deriveStreams(rep)
		return rep, err
	}
	simArgs := []string{"--tps", strconv.FormatFloat(cfg.tps, 'f', -1, 64), "--tokens", strconv.Itoa(cfg.tokens)}
	if cfg.ttft > 0 {
		simArgs = append(simArgs, "--ttft", cfg.ttft.String())
	}
	simAddr, sim, err := r.startLLMSim(ctx, loadCPU, simArgs...)
	if err != nil {
		return fail(fmt.Errorf("llmsim: %w", err))
	}
	spec := StreamSpec{N: cfg.n, Tokens: cfg.tokens, Ramp: cfg.ramp, Timeout: cfg.timeout, RunID: randomHex(6), PromptBytes: cfg.promptBytes, Cacheable: cfg.cacheable}

	spec.URL = "http://" + simAddr + chatPath
	if rep.Direct, err = r.runStreamgen(ctx, spec, "direct"); err != nil {
		return fail(fmt.Errorf("direct: %w", err))
	}
	if cfg.h2c {
		// The direct phase ran against llmsim as always (HTTP/1.1 only);
		// edgecache and the proxy get a fresh one that also takes h2c.
		_ = sim.stop(10 * time.Second)
		if simAddr, _, err = r.startLLMSim(ctx, loadCPU, append(simArgs, "--h2c")...); err != nil {
			return fail(fmt.Errorf("llmsim --h2c: %w", err))
		}
	}

	confPath := filepath.Join(r.dir, "edgecache.yaml")
	if err := os.WriteFile(confPath, []byte(streamsConfigYAML(cfg, cfg.upstreamURL(simAddr))), 0o600); err != nil {
		return fail(err)
	}
	addr, admin, ec, err := r.startEdgecacheArgs(ctx, "--config", confPath)
	if err != nil {
		return fail(fmt.Errorf("edgecache: %w", err))
	}
	pid := ec.cmd.Process.Pid // taskset execs: the same pid
	time.Sleep(500 * time.Millisecond)
	use, err := startProcSampler(pid)
	if err != nil {
		return fail(err)
	}
	spec.URL = "http://" + addr + chatPath
	limits := startLimitSampler(ctx, r.client, "http://"+admin)
	burst := time.Now()
	var degErr error
	degDone := make(chan struct{})
	if cfg.degradeAfter <= 0 {
		close(degDone)
	} else {
		go func() {
			defer close(degDone)
			degErr = r.streamWaves(ctx, cfg, spec, simAddr, burst, &rep)
		}()
	}
	rep.Edgecache, err = r.runStreamgen(ctx, spec, "edgecache")
	<-degDone // the RSS and CPU figures cover the later waves too
	if st, serr := simStats(ctx, r.client, "http://"+simAddr); serr == nil {
		rep.UpstreamHTTP2 = st[llmsim.StatHTTP2Requests]
	} else {
		fmt.Fprintf(r.log, "edgebench: llmsim stats: %v\n", serr)
	}
	pu := use.Stop()
	rep.BaselineRSSKiB, rep.PeakRSSKiB, rep.CPUSeconds = pu.BaselineRSSKiB, pu.PeakRSSKiB, pu.CPUSeconds
	var failedReads int
	rep.Limit, failedReads = limits.Stop()
	rep.LimitSummary = summarizeLimit(rep.Limit, rep.DegradeAtS)
	if failedReads > 0 {
		fmt.Fprintf(r.log, "edgebench: %d reads of /admin/upstreams failed\n", failedReads)
	}
	if err == nil && degErr != nil {
		err = fmt.Errorf("second wave: %w", degErr)
	}
	if err != nil {
		return fail(fmt.Errorf("edgecache: %w", err))
	}
	if !cfg.noReference {
		if rep.Reference, err = r.streamsReference(ctx, spec, cfg.upstreamURL(simAddr), rep.Direct); err != nil {
			return fail(fmt.Errorf("reference proxy: %w", err))
		}
	}
	rep.Derived = deriveStreams(rep)
	return rep, nil
}

// streamWaves raises llmsim's TTFT cfg.degradeAfter after burst and sends
// the second wave; with cfg.recoverAfter it sets the TTFT back that long
// after and sends the third wave meanwhile. It fills rep's wave fields.
func (r *runner) streamWaves(ctx context.Context, cfg streamsConfig, spec StreamSpec, simAddr string, burst time.Time, rep *StreamsReport) error {
	if err := sleepCtx(ctx, cfg.degradeAfter); err != nil {
		return err
	}
	if err := setSimTTFT(ctx, r.client, simAddr, cfg.degradeTTFT); err != nil {
		return err
	}
	rep.DegradeAtS, rep.DegradeTTFTMs = time.Since(burst).Seconds(), ms(cfg.degradeTTFT)
	wave := func(n int, ramp, ttft time.Duration) StreamSpec {
		w := spec
		w.N, w.Ramp, w.RunID = n, ramp, randomHex(6)
		w.Timeout = 2*(ttft+time.Duration(float64(cfg.tokens)/cfg.tps*float64(time.Second))) + ramp + 30*time.Second
		return w
	}
	var second StreamPhase
	var secondErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		second, secondErr = r.runStreamgen(ctx, wave(cfg.degradeN, cfg.degradeRamp, cfg.degradeTTFT), "edgecache-degraded")
	}()
	var thirdErr error
	if cfg.recoverAfter > 0 {
		thirdErr = sleepCtx(ctx, cfg.recoverAfter)
		if thirdErr == nil {
			thirdErr = setSimTTFT(ctx, r.client, simAddr, cfg.ttft)
		}
		if thirdErr == nil {
			rep.RecoverAtS = time.Since(burst).Seconds()
			var third StreamPhase
			if third, thirdErr = r.runStreamgen(ctx, wave(cfg.recoverN, cfg.recoverRamp, cfg.ttft), "edgecache-recovered"); thirdErr == nil {
				rep.Recovered = &third
			}
		}
	}
	<-done
	if secondErr == nil {
		rep.Degraded = &second
	}
	return errors.Join(secondErr, thirdErr)
}

// StreamsReference is the same streams through a minimal net/http reverse
// proxy (edgebench proxy) in edgecache's place: the physical floor of
// relaying them with Go's HTTP server and client on this machine, which
// edgecache's figures are read against.
type StreamsReference struct {
	Phase StreamPhase `json:"phase"`
	ProcUse
	RSSPerStreamKiB float64 `json:"rss_per_open_stream_kib"`
	CPUUsPerEvent   float64 `json:"cpu_us_per_event"`
	AddedTTFTP50Ms  float64 `json:"added_ttft_p50_ms"`
	AddedTTFTP99Ms  float64 `json:"added_ttft_p99_ms"`
}

// streamsReference runs spec's streams through edgebench proxy on the
// server CPU in front of llmsim at simURL.
func (r *runner) streamsReference(ctx context.Context, spec StreamSpec, simURL string, direct StreamPhase) (*StreamsReference, error) {
	ports, err := freePorts(1)
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", ports[0])
	p, err := r.ps.startPinned(r.dir, fmt.Sprintf("proxy-%d", ports[0]), serverCPU,
		filepath.Join(r.cfg.bin, "edgebench"), "proxy", "--listen", addr, "--upstream", simURL)
	if err != nil {
		return nil, err
	}
	defer p.stop(10 * time.Second)
	if err := waitReady(ctx, p, 15*time.Second, dialReady(addr)); err != nil {
		return nil, err
	}
	time.Sleep(500 * time.Millisecond)
	use, err := startProcSampler(p.cmd.Process.Pid)
	if err != nil {
		return nil, err
	}
	spec.URL, spec.RunID = "http://"+addr+chatPath, randomHex(6)
	ph, err := r.runStreamgen(ctx, spec, "reference")
	ref := &StreamsReference{Phase: ph, ProcUse: use.Stop()}
	if err != nil {
		return ref, err
	}
	if ph.PeakOpen > 0 && ref.PeakRSSKiB > ref.BaselineRSSKiB {
		ref.RSSPerStreamKiB = float64(ref.PeakRSSKiB-ref.BaselineRSSKiB) / float64(ph.PeakOpen)
	}
	if ph.Events > 0 {
		ref.CPUUsPerEvent = ref.CPUSeconds * 1e6 / float64(ph.Events)
	}
	ref.AddedTTFTP50Ms, ref.AddedTTFTP99Ms = ph.TTFTP50Ms-direct.TTFTP50Ms, ph.TTFTP99Ms-direct.TTFTP99Ms
	return ref, nil
}

// ProcUse is what a process under test used over a phase: its RSS before
// (baseline) and at its peak, and its CPU time (user + system).
type ProcUse struct {
	BaselineRSSKiB int64   `json:"baseline_rss_kib"`
	PeakRSSKiB     int64   `json:"peak_rss_kib"`
	CPUSeconds     float64 `json:"cpu_seconds"`
}

// procSampler samples a process's RSS every 100 ms (the peak is the
// plateau with every stream open) and reads its CPU time at both ends.
type procSampler struct {
	pid  int
	use  ProcUse
	cpu0 int64
	peak atomic.Int64
	stop chan struct{}
	wg   sync.WaitGroup
}

func startProcSampler(pid int) (*procSampler, error) {
	base, err := procRSSKiB(pid)
	if err != nil {
		return nil, err
	}
	cpu0, err := procCPUTicks(pid)
	if err != nil {
		return nil, err
	}
	s := &procSampler{pid: pid, use: ProcUse{BaselineRSSKiB: base}, cpu0: cpu0, stop: make(chan struct{})}
	s.peak.Store(base)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-s.stop:
				return
			case <-t.C:
				if kib, err := procRSSKiB(pid); err == nil && kib > s.peak.Load() {
					s.peak.Store(kib)
				}
			}
		}
	}()
	return s, nil
}

// Stop ends the sampling and returns what the process used.
func (s *procSampler) Stop() ProcUse {
	close(s.stop)
	s.wg.Wait()
	s.use.PeakRSSKiB = s.peak.Load()
	if cpu1, err := procCPUTicks(s.pid); err == nil {
		s.use.CPUSeconds = float64(cpu1-s.cpu0) / clockTicks
	}
	return s.use
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat's utime and stime: 100
// on every Linux architecture Go supports.
const clockTicks = 100

// procRSSKiB reads VmRSS from /proc/PID/status.
func procRSSKiB(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	return parseVmRSS(data)
}

func parseVmRSS(status []byte) (int64, error) {
	for _, line := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				return strconv.ParseInt(f[0], 10, 64)
			}
		}
	}
	return 0, errors.New("no VmRSS in /proc/PID/status")
}

// procCPUTicks reads utime+stime (clock ticks) from /proc/PID/stat.
func procCPUTicks(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseStatCPU(data)
}

func parseStatCPU(stat []byte) (int64, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc/PID/stat")
	}
	// After "pid (comm)": state is field 3; utime and stime are 14 and 15.
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("short /proc/PID/stat")
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return u + s, nil
}

// runStreamgen runs `edgebench streamgen` pinned to the load CPU.
func (r *runner) runStreamgen(ctx context.Context, spec StreamSpec, name string) (StreamPhase, error) {
	specPath := filepath.Join(r.dir, "streamgen-"+name+".json")
	data, err := json.Marshal(spec)
	if err != nil {
		return StreamPhase{}, err
	}
	if err := os.WriteFile(specPath, data, 0o600); err != nil {
		return StreamPhase{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, spec.Ramp+spec.Timeout+loadgenExtraWait)
	defer cancel()
	logf, err := os.Create(filepath.Join(r.dir, "streamgen-"+name+".log"))
	if err != nil {
		return StreamPhase{}, err
	}
	defer logf.Close()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, "taskset", "-c", strconv.Itoa(loadCPU),
		filepath.Join(r.cfg.bin, "edgebench"), "streamgen", "--spec", specPath)
	cmd.Stdout = &out
	cmd.Stderr = io.MultiWriter(logf, r.log)
	cmd.Env = cleanEnv(os.Environ())
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		return StreamPhase{}, fmt.Errorf("streamgen: %w (log: %s)", err, logf.Name())
	}
	var res StreamPhase
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		return StreamPhase{}, fmt.Errorf("streamgen output: %w", err)
	}
	return res, nil
}

// streamgenMain is `edgebench streamgen --spec FILE`: it runs the streams
// and prints a StreamPhase as JSON.
func streamgenMain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("edgebench streamgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	specPath := fs.String("spec", "", "StreamSpec JSON file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	data, err := os.ReadFile(*specPath)
	if err != nil {
		return err
	}
	var spec StreamSpec
	if err := json.Unmarshal(data, &spec); err != nil {
		return fmt.Errorf("--spec: %w", err)
	}
	if spec.N < 1 || spec.URL == "" || spec.Timeout <= 0 {
		return errors.New("--spec: url, n and timeout are required")
	}
	raiseNofile(uint64(4*spec.N + 1024))
	res := RunStreams(ctx, spec)
	return json.NewEncoder(stdout).Encode(res)
}

// RunStreams opens spec.N streams, each with a prompt of its own and
// (unless spec.Cacheable) Cache-Control: no-store, and waits for all of
// them.
func RunStreams(ctx context.Context, spec StreamSpec) StreamPhase {
	tr := &http.Transport{MaxIdleConnsPerHost: -1, DisableCompression: true, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: spec.Timeout}
	var (
		mu       sync.Mutex
		ttfts    []float64
		failures = map[string]int{}
		intact   int
		admitted int
		events   atomic.Int64
		open     atomic.Int64
		peakOpen atomic.Int64
		wg       sync.WaitGroup
	)
	start := time.Now()
	for i := range spec.N {
		if spec.Ramp > 0 && spec.N > 1 {
			if d := time.Until(start.Add(spec.Ramp * time.Duration(i) / time.Duration(spec.N))); d > 0 {
				time.Sleep(d)
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := oneStream(ctx, client, spec, i, &open, &peakOpen)
			events.Add(s.events)
			mu.Lock()
			defer mu.Unlock()
			if s.admitted {
				admitted++
			}
			if s.fail != "" {
				failures[s.fail]++
				return
			}
			intact++
			ttfts = append(ttfts, s.ttft.Seconds()*1000)
		}()
	}
	wg.Wait()
	sort.Float64s(ttfts)
	res := StreamPhase{N: spec.N, Admitted: admitted, Intact: intact, Events: events.Load(), PeakOpen: int(peakOpen.Load()),
		TTFTP50Ms: percentileSorted(ttfts, 0.50), TTFTP99Ms: percentileSorted(ttfts, 0.99),
		Seconds: time.Since(start).Seconds()}
	if len(failures) > 0 {
		res.Failures = failures
	}
	return res
}

// percentileSorted is the nearest-rank percentile of sorted values.
func percentileSorted(v []float64, p float64) float64 {
	if len(v) == 0 {
		return 0
	}
	k := int(p*float64(len(v))+0.999999999) - 1
	return v[max(0, min(len(v)-1, k))]
}

type streamOutcome struct {
	ttft     time.Duration
	events   int64
	admitted bool   // status 200
	fail     string // "" when intact
}

// oneStream runs one stream and checks it: status 200, spec.Tokens content
// events, a finish_reason and [DONE].
func oneStream(ctx context.Context, client *http.Client, spec StreamSpec, i int, open, peakOpen *atomic.Int64) (o streamOutcome) {
	system := ""
	if spec.PromptBytes > 0 {
		system = `{"role":"system","content":"` + strings.Repeat("context ", (spec.PromptBytes+7)/8) + `"},`
	}
	body := fmt.Sprintf(`{"model":"sim-1","stream":true,"messages":[%s{"role":"user","content":"stream %s %d: tell me a story"}]}`, system, spec.RunID, i)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, spec.URL, strings.NewReader(body))
	if err != nil {
		o.fail = "request"
		return o
	}
	req.Header.Set("Content-Type", "application/json")
	if !spec.Cacheable {
		req.Header.Set("Cache-Control", "no-store")
	}
	t0 := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		o.fail = "connect"
		return o
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		o.fail = "status " + strconv.Itoa(resp.StatusCode)
		return o
	}
	o.admitted = true
	n := open.Add(1)
	defer open.Add(-1)
	for {
		p := peakOpen.Load()
		if n <= p || peakOpen.CompareAndSwap(p, n) {
			break
		}
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	var content int
	var finished, done bool
	for sc.Scan() {
		line := sc.Bytes()
		data, ok := bytes.CutPrefix(line, []byte("data: "))
		if !ok {
			continue
		}
		o.events++
		if bytes.Equal(data, []byte("[DONE]")) {
			done = true
			continue
		}
		if bytes.Contains(data, []byte(`"content":"`)) && !bytes.Contains(data, []byte(`"content":""`)) {
			if content == 0 {
				o.ttft = time.Since(t0)
			}
			content++
		}
		if bytes.Contains(data, []byte(`"finish_reason":"`)) {
			finished = true
		}
	}
	switch {
	case sc.Err() != nil:
		o.fail = "read error"
	case !done:
		o.fail = "no [DONE]"
	case !finished:
		o.fail = "no finish_reason"
	case spec.Tokens > 0 && content != spec.Tokens:
		o.fail = "token count"
	}
	return o
}
