package bench

import (
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
)

// maxSendLagMs is the generator's send lag (p99) above which the report
// warns that the generator, not only the server, was short of CPU.
const maxSendLagMs = 20

// OverloadSetup records how the overload scenario ran, beside its numbers.
type OverloadSetup struct {
	Concurrency    int     `json:"llmsim_max_concurrency"`
	TTFT           string  `json:"llmsim_ttft"`
	CapacityRPS    float64 `json:"capacity_rps"` // C / T
	Limit          int     `json:"edgecache_concurrency_limit"`
	MinLimit       int     `json:"edgecache_concurrency_min"`
	PaidRPS        float64 `json:"paid_rps"`
	FreeRPS        float64 `json:"free_rps"`
	FreeQuotaRPS   float64 `json:"free_quota_rps,omitempty"` // 0: no quota
	FreeQuotaBurst int64   `json:"free_quota_burst,omitempty"`
	Duration       string  `json:"duration"`
	Warmup         string  `json:"warmup"`
	Timeout        string  `json:"client_timeout"`
	MaxInFlight    int     `json:"generator_max_in_flight"`
}

func setupOf(c overloadConfig) OverloadSetup {
	s := OverloadSetup{Concurrency: c.concurrency, TTFT: c.ttft.String(), CapacityRPS: c.capacity(),
		Limit: c.limit, MinLimit: c.minLimit(), PaidRPS: c.paidRate(), FreeRPS: c.freeRate(),
		Duration: c.duration.String(), Warmup: c.warmup.String(), Timeout: c.timeout.String(), MaxInFlight: c.maxInFlight}
	s.FreeQuotaRPS, s.FreeQuotaBurst = c.freeQuotaRPS()
	if c.warmup == 0 {
		s.Warmup = "none"
	}
	return s
}

// OverloadReport is the outcome of one `edgebench overload`.
type OverloadReport struct {
	Machine Machine       `json:"machine"`
	Command string        `json:"command"`
	Setup   OverloadSetup `json:"setup"`
	// Phases are "unloaded" and "overload" (the warm-up is not reported).
	Phases []PhaseResult `json:"phases"`
	// Baseline is edgecache's state before the unloaded phase.
	Baseline *Snapshot `json:"baseline,omitempty"`
	Targets  []Target  `json:"targets"`
	Error    string    `json:"error,omitempty"`
}

// Pass reports whether the run completed and every target passed.
func (r OverloadReport) Pass() bool {
	if r.Error != "" || len(r.Targets) == 0 {
		return false
	}
	for _, t := range r.Targets {
		if !t.Pass {
			return false
		}
	}
	return true
}

func phaseLane(ps []PhaseResult, phase, lane string) (LaneResult, bool) {
	for _, p := range ps {
		if p.Name == phase {
			return p.Lane(lane)
		}
	}
	return LaneResult{}, false
}

// ComputeOverloadTargets checks the goals on the unloaded and
// overload phases. A goal whose numbers are missing is unknown and fails.
//
//   - paid success under overload: 2xx / scheduled ≥ 99 %;
//   - paid p99 of admitted (2xx) requests under overload ≤ 2 × unloaded;
//   - free shed honestly: every free request without a 2xx got a 429 or a
//     503 with Retry-After (no other status, no missing answer, none
//     skipped), and there was at least one;
//   - free: no 5xx other than 503.
func ComputeOverloadTargets(ps []PhaseResult) []Target {
	var ts []Target
	paidOver, okPO := phaseLane(ps, phaseOverload, overloadPaidLane)
	paidUn, okPU := phaseLane(ps, phaseUnloaded, overloadPaidLane)
	free, okF := phaseLane(ps, phaseOverload, overloadFreeLane)

	v, ok := paidOver.Success()
	ok = ok && okPO
	ts = append(ts, Target{Name: "paid success under overload (2xx / sent)", Value: v, Limit: MinPaidSuccess,
		Unit: "ratio", Known: ok, Pass: ok && v >= MinPaidSuccess})

	name := "paid p99 under overload / unloaded"
	ok = okPO && okPU && paidOver.OKLatency.N > 0 && paidUn.OKLatency.N > 0 && paidUn.OKLatency.P99Ms > 0
	var f float64
	if ok {
		f = paidOver.OKLatency.P99Ms / paidUn.OKLatency.P99Ms
		name = fmt.Sprintf("paid p99 under overload / unloaded (%.1f ms / %.1f ms)", paidOver.OKLatency.P99Ms, paidUn.OKLatency.P99Ms)
	}
	ts = append(ts, Target{Name: name, Value: f, Limit: MaxPaidP99Factor, Unit: "factor", Max: true,
		Known: ok, Pass: ok && f <= MaxPaidP99Factor})

	ok = okF && free.NotOK() > 0
	var share float64
	if ok {
		share = float64(free.RetryAfter) / float64(free.NotOK())
	}
	ts = append(ts, Target{Name: "free refused with 429/503 + Retry-After (share of non-2xx)", Value: share,
		Limit: MinFreeRetryAfter, Unit: "ratio", Known: ok, Pass: ok && share >= MinFreeRetryAfter})

	ts = append(ts, Target{Name: "free 5xx other than 503", Value: float64(free.Other5xx), Limit: MaxFreeOther5xx,
		Unit: "count", Max: true, Known: okF, Pass: okF && free.Other5xx <= MaxFreeOther5xx})
	return ts
}

// WriteOverloadMarkdown writes the set-up, the per-lane table, the targets
// and edgecache's admission counters as Markdown.
func WriteOverloadMarkdown(w io.Writer, rep OverloadReport) error {
	var b strings.Builder
	writeMachine(&b, rep.Machine)
	fmt.Fprintf(&b, "Command: `%s`\n\n", rep.Command)
	s := rep.Setup
	quota := "no quota"
	if s.FreeQuotaRPS > 0 {
		quota = fmt.Sprintf("quota %.0f req/s, burst %d", s.FreeQuotaRPS, s.FreeQuotaBurst)
	}
	fmt.Fprintf(&b, "Set-up: llmsim --max-concurrency %d --ttft %s (non-streamed answers; capacity C/T = %.0f req/s) "+
		"and the open-loop Go load generator (edgebench loadgen) on CPU 0, edgecache on CPU 1 (taskset). "+
		"edgecache: admission.concurrency {initial %d, min %d, max %d}, tenants paid (lane paid) and free (lane free, %s), "+
		"route cache off, no templates; every request has a unique prompt. "+
		"Phases of %s (after a %s paid-only warm-up): unloaded = paid %.0f req/s; overload = paid %.0f req/s + free %.0f req/s "+
		"(%.1f× capacity). Latency from the scheduled send time; client timeout %s; at most %d requests in flight per lane.\n\n",
		s.Concurrency, s.TTFT, s.CapacityRPS, s.Limit, s.MinLimit, s.Limit, quota,
		s.Duration, s.Warmup, s.PaidRPS, s.PaidRPS, s.FreeRPS, s.FreeRPS/max(s.CapacityRPS, 1e-9), s.Timeout, s.MaxInFlight)

	b.WriteString("| phase | lane | req/s | sent | 2xx | 429 | 503 | other | no answer | Retry-After on 429/503 | 2xx p50 ms | 2xx p99 ms | refused p99 ms |\n")
	b.WriteString("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, p := range rep.Phases {
		for _, l := range p.Lanes {
			sent := fmt.Sprintf("%d", l.Sent)
			if l.Skipped > 0 {
				sent += fmt.Sprintf(" (+%d skipped)", l.Skipped)
			}
			ra := "–"
			if l.Refused() > 0 {
				ra = fmt.Sprintf("%s (%d/%d)", pct(float64(l.RetryAfter)/float64(l.Refused())), l.RetryAfter, l.Refused())
			}
			fmt.Fprintf(&b, "| %s | %s | %.0f | %s | %d (%s) | %d | %d | %d | %d | %s | %s | %s | %s |\n",
				p.Name, l.Lane, l.OfferedRate, sent, l.OK, successCell(l), l.Status429, l.Status503, l.Other, l.Errors, ra,
				latCell(l.OKLatency.N, l.OKLatency.P50Ms), latCell(l.OKLatency.N, l.OKLatency.P99Ms),
				latCell(l.RefusedLatency.N, l.RefusedLatency.P99Ms))
		}
	}

	b.WriteString("\n| target | value | goal | result |\n")
	b.WriteString("|---|--:|--:|:-:|\n")
	pass := 0
	for _, t := range rep.Targets {
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", t.Name, t.valueString(), t.limitString(), t.PassFail())
		if t.Pass {
			pass++
		}
	}
	fmt.Fprintf(&b, "\nTargets: %d/%d PASS.\n", pass, len(rep.Targets))

	var notes []string
	if w := busyMachine(rep.Machine); w != "" {
		notes = append(notes, "- "+w)
	}
	prev := rep.Baseline
	for _, p := range rep.Phases {
		notes = append(notes, phaseNotes(p, prev)...)
		prev = p.Snapshot
	}
	if rep.Error != "" {
		notes = append(notes, "- run FAILED: "+rep.Error)
	}
	if len(notes) > 0 {
		b.WriteString("\nNotes (edgecache's admin counters are differences over each phase; its limit and TTFT are at the phase's end):\n" +
			strings.Join(notes, "\n") + "\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// busyMachine returns a warning when the 1-minute load average at the start
// was above half the CPUs: other processes then compete with the
// scenario's, and its latencies are not a measurement.
func busyMachine(m Machine) string {
	f := strings.Fields(m.LoadAvg)
	if len(f) == 0 || m.NProc < 1 {
		return ""
	}
	l, err := strconv.ParseFloat(f[0], 64)
	if err != nil || l <= float64(m.NProc)/2 {
		return ""
	}
	return fmt.Sprintf("WARNING: load average %.2f on %d CPUs at the start: other processes competed for the CPUs, "+
		"so these numbers are a sanity check, not a measurement", l, m.NProc)
}

// writeMachine writes the machine header line.
func writeMachine(b *strings.Builder, m Machine) {
	fmt.Fprintf(b, "Machine: nproc %d, %s, %s", m.NProc, m.CPUModel, m.GoVersion)
	if m.Kernel != "" {
		fmt.Fprintf(b, ", Linux %s", m.Kernel)
	}
	if m.Revision != "" {
		fmt.Fprintf(b, ", edgecache %s", m.Revision)
	}
	if m.LoadAvg != "" {
		fmt.Fprintf(b, ", loadavg %s", m.LoadAvg)
	}
	fmt.Fprintf(b, ", %s\n\n", m.Date)
}

func successCell(l LaneResult) string {
	if v, ok := l.Success(); ok {
		return pct(v)
	}
	return "n/a"
}

func latCell(n int, v float64) string {
	if n == 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f", v)
}

// phaseNotes describes edgecache's admission during phase p, against the
// snapshot before it (nil: counters as they are).
func phaseNotes(p PhaseResult, before *Snapshot) []string {
	var notes []string
	for _, l := range p.Lanes {
		if len(l.Reasons) > 0 {
			m := map[string]float64{}
			for k, v := range l.Reasons {
				m[k] = float64(v)
			}
			notes = append(notes, fmt.Sprintf("- %s, %s: refusal reasons: %s", p.Name, l.Lane, formatCounts(m)))
		}
		if l.SendLag.N > 0 && l.SendLag.P99Ms > maxSendLagMs {
			notes = append(notes, fmt.Sprintf("- %s, %s: WARNING: the generator sent late (lag p50 %.1f ms, p99 %.1f ms, max %.1f ms): "+
				"it was short of CPU, and the latencies measure it as much as the server", p.Name, l.Lane, l.SendLag.P50Ms, l.SendLag.P99Ms, l.SendLag.MaxMs))
		}
		if l.Other > 0 || l.Errors > 0 || l.Skipped > 0 {
			kinds := ""
			if len(l.ErrorKinds) > 0 {
				m := map[string]float64{}
				for k, v := range l.ErrorKinds {
					m[k] = float64(v)
				}
				kinds = " (" + formatCounts(m) + ")"
			}
			notes = append(notes, fmt.Sprintf("- %s, %s: %d other statuses (%d of them 5xx), %d without an answer%s, %d skipped by the generator",
				p.Name, l.Lane, l.Other, l.Other5xx, l.Errors, kinds, l.Skipped))
		}
	}
	s := p.Snapshot
	if s == nil {
		return notes
	}
	if s.Error != "" {
		notes = append(notes, fmt.Sprintf("- %s: admin snapshot incomplete: %s", p.Name, s.Error))
	}
	var b0 Snapshot
	if before != nil {
		b0 = *before
	}
	if lim := s.Limiter; lim != nil {
		var parts []string
		names := make([]string, 0, len(lim.Lanes))
		for n := range lim.Lanes {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			d := lim.Lanes[n]
			if b0.Limiter != nil {
				d = d.minus(b0.Limiter.Lanes[n])
			}
			if d == (LimiterLane{}) {
				continue
			}
			parts = append(parts, fmt.Sprintf("%s admitted %d, queued %d, shed %d, queue timeouts %d, cancelled %d",
				n, d.Admitted, d.Waited, d.Shed, d.Timeouts, d.Cancelled))
		}
		notes = append(notes, fmt.Sprintf("- %s: limiter %s: limit %d, TTFT p90 %.1f ms (long-term %.1f ms); %s",
			p.Name, lim.Target, lim.Limit, lim.TTFTMs, lim.LongTTFTMs, strings.Join(parts, "; ")))
	}
	if s.Upstream != nil {
		notes = append(notes, fmt.Sprintf("- %s: upstream calls by status: %s", p.Name, formatCounts(counterDelta(b0.Upstream, s.Upstream))))
	}
	if s.Degraded != nil {
		notes = append(notes, fmt.Sprintf("- %s: degraded answers by rung/reason: %s", p.Name, formatCounts(counterDelta(b0.Degraded, s.Degraded))))
	}
	return notes
}
