package bench

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
)

// Scenario identifiers, in the order they run and are reported.
const (
	ScenarioCeiling      = "ceiling"
	ScenarioHit          = "l1-hit"
	ScenarioDirect       = "llmsim-direct"
	ScenarioDirectShared = "llmsim-direct-shared" // (c2): (c) on CPU 0 beside wrk, as in (d) and (f); see baseOf
	ScenarioPassthrough  = "pass-through"
	ScenarioSemantic     = "semantic-hit"
	ScenarioProxy        = "min-proxy"
)

// Scenarios lists the scenarios in run order.
var Scenarios = []string{ScenarioCeiling, ScenarioHit, ScenarioDirect, ScenarioDirectShared, ScenarioPassthrough,
	ScenarioSemantic, ScenarioProxy, ScenarioResponsesHit, ScenarioMessagesHit, ScenarioPoolPassthrough, ScenarioSemanticFresh}

// scenarioLabel is the first column of the table.
var scenarioLabel = map[string]string{
	ScenarioCeiling:         "(a) ceiling: net/http, same bytes",
	ScenarioHit:             "(b) edgecache exact L1 hit",
	ScenarioDirect:          "(c) llmsim direct",
	ScenarioDirectShared:    "(c2) llmsim direct, sharing CPU 0 with wrk",
	ScenarioPassthrough:     "(d) edgecache pass-through (no-store)",
	ScenarioSemantic:        "(e) edgecache semantic hit (remote embedder → llmsim)",
	ScenarioProxy:           "(f) reference: minimal net/http proxy → llmsim",
	ScenarioResponsesHit:    "(g) edgecache exact L1 hit, Responses API",
	ScenarioMessagesHit:     "(h) edgecache exact L1 hit, Anthropic Messages",
	ScenarioPoolPassthrough: "(i) edgecache pass-through (no-store), pool of two llmsim",
	ScenarioSemanticFresh:   "(j) edgecache semantic hit, fresh wordings, local model",
}

// scenarioLetter is the letter of the scenario in the issue; (c2), added
// after the others, is a variant of (c) and keeps the letters of (d) – (j).
var scenarioLetter = map[string]string{ScenarioCeiling: "a", ScenarioHit: "b", ScenarioDirect: "c",
	ScenarioDirectShared: "c2", ScenarioPassthrough: "d",
	ScenarioSemantic: "e", ScenarioProxy: "f", ScenarioResponsesHit: "g", ScenarioMessagesHit: "h", ScenarioPoolPassthrough: "i",
	ScenarioSemanticFresh: "j"}

// baseOf names the scenario a row's ratio is taken against. (d) and (f)
// are taken against (c2), not (c): in them llmsim shares CPU 0 with wrk,
// as in (c2) and in the set-up of issue 16, which set the 45 % goal
// ("wrk and the fake upstream on CPU 0, the gateway on CPU 1"); (c) gives
// llmsim a core of its own, which (d) and (f) give the gateway instead, so
// that even (f), a proxy that does nothing, gets only about 45 % of (c).
var baseOf = map[string]string{ScenarioHit: ScenarioCeiling, ScenarioPassthrough: ScenarioDirectShared,
	ScenarioProxy: ScenarioDirectShared, ScenarioResponsesHit: ScenarioHit, ScenarioMessagesHit: ScenarioHit,
	ScenarioPoolPassthrough: ScenarioPassthrough}

// ownCoreBaseOf is, for the rows taken against (c2), the base of their
// second, informational ratio: (c), llmsim on a core of its own (the base
// of (d) and (f) before (c2) existed, so that older reports can be read
// beside new ones).
var ownCoreBaseOf = map[string]string{ScenarioPassthrough: ScenarioDirect, ScenarioProxy: ScenarioDirect}

// Target thresholds from the issue.
const (
	MinHitRatio = 0.70 // exact hits ≥ 70 % of the ceiling
	// MaxHitP99Factor: hit p99 ≤ 1.5 × the ceiling's p99 at 32 connections,
	// in the same run (an absolute figure would depend on the machine).
	MaxHitP99Factor     = 1.5
	HitP99Conns         = 32
	MinPassthroughRatio = 0.45 // pass-through ≥ 45 % of llmsim direct sharing CPU 0 with wrk (c2)
	// MinSemanticRPS is absolute, not a ratio: with the remote embedder
	// pointed at llmsim, semantic hits ≥ 2,500 req/s at each count.
	MinSemanticRPS = 2500
	// MinSemanticHitShare is the share of (e)'s measured requests that must
	// be semantic hits for the row to count (else it fails).
	MinSemanticHitShare = 0.95
)

// Result is one measured row: a scenario at a connection count.
type Result struct {
	Scenario string `json:"scenario"`
	Conns    int    `json:"conns"`
	WrkResult
	// SemanticHitShare is, in scenarios (e) and (j), the share of the
	// measured requests that edgecache's counters show as semantic hits.
	SemanticHitShare float64 `json:"semantic_hit_share,omitempty"`
	// EmbeddingsPerRequest is, in scenarios (e) and (j), the texts the
	// embedder (llmsim in (e), the local model in (j)) embedded over the
	// measured window per wrk request: 1 when every fresh wording pays its
	// embedding, less when a memo helps.
	EmbeddingsPerRequest *float64 `json:"embeddings_per_request,omitempty"`
	// ServerCPUUsPerRequest is the CPU time (user + system, from
	// /proc/PID/stat) of the server under test over the measured window,
	// per request, in microseconds; 0 when unknown.
	ServerCPUUsPerRequest float64 `json:"server_cpu_us_per_request,omitempty"`
	// Error is set when the row failed (non-2xx answers, wrk or process
	// failure, wrong Cache-Status, too few semantic hits); the numbers are
	// then not to be used.
	Error string `json:"error,omitempty"`
}

// OK reports whether the row has usable numbers.
func (r Result) OK() bool { return r.Error == "" && r.RequestsPerSec > 0 }

// Target is one checked goal.
type Target struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"` // ratio (0..1), milliseconds, factor, count or requests per second
	Limit float64 `json:"limit"`
	Unit  string  `json:"unit"` // "ratio", "ms", "factor", "count" or "req/s"
	Max   bool    `json:"max"`  // Limit is an upper bound (else a lower bound)
	Known bool    `json:"known"`
	Pass  bool    `json:"pass"`
}

// Machine describes where and how the run happened.
type Machine struct {
	NProc     int    `json:"nproc"`
	CPUModel  string `json:"cpu_model"`
	GoVersion string `json:"go_version"`
	Kernel    string `json:"kernel,omitempty"`
	Wrk       string `json:"wrk,omitempty"`
	Revision  string `json:"revision,omitempty"`
	LoadAvg   string `json:"loadavg,omitempty"`
	Date      string `json:"date"`
}

// Report is the outcome of one `edgebench run`.
type Report struct {
	Machine  Machine `json:"machine"`
	Command  string  `json:"command"`
	Duration string  `json:"duration"`
	Warmup   string  `json:"warmup"`
	// BestOf is how many times each row was measured; the row keeps the
	// run with the most req/s.
	BestOf        int   `json:"best_of,omitempty"`
	Conns         []int `json:"conns"`
	RequestBytes  int   `json:"request_bytes"`
	ResponseBytes int   `json:"response_bytes"`
	// SemanticPrompts is how many distinct prompts scenario (e) primed and
	// then asked for in random letter case (0: not run).
	SemanticPrompts int `json:"semantic_prompts,omitempty"`
	// FreshQuestions, FreshTemplates and FreshSpace describe scenario (j)
	// when it ran: the questions stored, the rewordings asked of each, and
	// the distinct request texts its wrk script can send (rewordings × case
	// patterns) before one repeats.
	FreshQuestions int      `json:"fresh_questions,omitempty"`
	FreshTemplates int      `json:"fresh_templates,omitempty"`
	FreshSpace     int64    `json:"fresh_space,omitempty"`
	Results        []Result `json:"results"`
	Targets        []Target `json:"targets"`
	// Informational are readings reported beside the targets with no limit
	// (Limit 0, Pass false): they count toward no PASS/FAIL, and are kept
	// out of Targets so that a reader of Targets sees goals only.
	Informational []Target `json:"informational,omitempty"`
}

// find returns the row for scenario at conns.
func find(rs []Result, scenario string, conns int) (Result, bool) {
	for _, r := range rs {
		if r.Scenario == scenario && r.Conns == conns {
			return r, true
		}
	}
	return Result{}, false
}

// Ratio returns the req/s of scenario over that of its base scenario at the
// same connection count; ok is false when either row is missing or failed.
func Ratio(rs []Result, scenario string, conns int) (ratio float64, ok bool) {
	base, isRel := baseOf[scenario]
	if !isRel {
		return 0, false
	}
	return ratioTo(rs, scenario, base, conns)
}

// ratioTo returns the req/s of scenario over that of base at the same
// connection count; ok is false when either row is missing or failed.
func ratioTo(rs []Result, scenario, base string, conns int) (ratio float64, ok bool) {
	a, okA := find(rs, scenario, conns)
	b, okB := find(rs, base, conns)
	if !okA || !okB || !a.OK() || !b.OK() {
		return 0, false
	}
	return a.RequestsPerSec / b.RequestsPerSec, true
}

// ComputeTargets evaluates the goals for the measured connection counts:
// hits/ceiling and pass-through/(c2) (llmsim direct sharing CPU 0 with
// wrk) at each count, the hit p99 at 32 connections when 32 was measured,
// and, when the results have rows of scenario (e) at all (a report from
// before it existed has none), semantic hits ≥ MinSemanticRPS at each
// count. A goal whose rows are missing or failed is reported as unknown
// and fails.
func ComputeTargets(rs []Result, conns []int) []Target {
	var ts []Target
	for _, c := range conns {
		v, ok := Ratio(rs, ScenarioHit, c)
		ts = append(ts, Target{Name: fmt.Sprintf("exact L1 hits / ceiling @%d", c), Value: v, Limit: MinHitRatio,
			Unit: "ratio", Known: ok, Pass: ok && v >= MinHitRatio})
	}
	for _, c := range conns {
		if c != HitP99Conns {
			continue
		}
		r, ok := find(rs, ScenarioHit, c)
		base, okB := find(rs, ScenarioCeiling, c)
		ok = ok && okB && r.OK() && base.OK() && base.P99Ms > 0
		var v float64
		if ok {
			v = r.P99Ms / base.P99Ms
		}
		ts = append(ts, Target{Name: fmt.Sprintf("exact L1 hit p99 / ceiling p99 @%d", c),
			Value: v, Limit: MaxHitP99Factor, Unit: "factor", Max: true, Known: ok, Pass: ok && v <= MaxHitP99Factor+1e-9})
	}
	for _, c := range conns {
		v, ok := Ratio(rs, ScenarioPassthrough, c)
		ts = append(ts, Target{Name: fmt.Sprintf("pass-through / llmsim direct @%d", c), Value: v, Limit: MinPassthroughRatio,
			Unit: "ratio", Known: ok, Pass: ok && v >= MinPassthroughRatio})
	}
	if hasScenario(rs, ScenarioSemantic) {
		ts = append(ts, rpsTargets(rs, conns, ScenarioSemantic, "semantic hits", MinSemanticRPS)...)
	}
	ts = append(ts, responsesTargets(rs, conns)...)
	ts = append(ts, messagesTargets(rs, conns)...)
	ts = append(ts, poolTargets(rs, conns)...)
	return append(ts, semanticFreshTargets(rs, conns)...)
}

// ComputeInformational is what the run reports beside the goals, with no
// limit: pass-through over (c), llmsim direct on a core of its own, at each
// count, when the results have (c) rows. It was the pass-through goal's
// base before (c2); it stays so that a run can be read beside older ones,
// but it is no goal: (c) gives llmsim the core that (d) gives the gateway.
func ComputeInformational(rs []Result, conns []int) []Target {
	if !hasScenario(rs, ScenarioDirect) {
		return nil
	}
	var ts []Target
	for _, c := range conns {
		v, ok := ratioTo(rs, ScenarioPassthrough, ScenarioDirect, c)
		ts = append(ts, Target{Name: fmt.Sprintf("pass-through / llmsim direct on its own core @%d (informational)", c),
			Value: v, Unit: "ratio", Known: ok})
	}
	return ts
}

// rpsTargets are absolute goals: scenario's req/s ≥ limit at each count
// (unknown, and failed, where its row is missing or failed).
func rpsTargets(rs []Result, conns []int, scenario, name string, limit float64) []Target {
	var ts []Target
	for _, c := range conns {
		r, ok := find(rs, scenario, c)
		ok = ok && r.OK()
		ts = append(ts, Target{Name: fmt.Sprintf("%s @%d", name, c), Value: r.RequestsPerSec, Limit: limit,
			Unit: "req/s", Known: ok, Pass: ok && r.RequestsPerSec >= limit})
	}
	return ts
}

func hasScenario(rs []Result, scenario string) bool {
	for _, r := range rs {
		if r.Scenario == scenario {
			return true
		}
	}
	return false
}

// thousands formats v rounded to an integer with commas: 2500 → "2,500".
func thousands(v float64) string {
	s := strconv.FormatFloat(math.Round(v), 'f', 0, 64)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func pct(v float64) string { return fmt.Sprintf("%.1f %%", v*100) }

func (t Target) valueString() string {
	switch {
	case !t.Known:
		return "n/a"
	case t.Unit == "ms":
		return fmt.Sprintf("%.2f ms", t.Value)
	case t.Unit == "factor":
		return fmt.Sprintf("%.2f×", t.Value)
	case t.Unit == "count":
		return fmt.Sprintf("%.0f", t.Value)
	case t.Unit == "req/s":
		return thousands(t.Value) + " req/s"
	default:
		return pct(t.Value)
	}
}

func (t Target) limitString() string {
	op := "≥"
	if t.Max {
		op = "≤"
	}
	switch t.Unit {
	case "ms":
		return fmt.Sprintf("%s %.0f ms", op, t.Limit)
	case "factor":
		return fmt.Sprintf("%s %g×", op, t.Limit)
	case "count":
		if t.Max && t.Limit == 0 {
			return "0"
		}
		return fmt.Sprintf("%s %.0f", op, t.Limit)
	case "req/s":
		return fmt.Sprintf("%s %s req/s", op, thousands(t.Limit))
	}
	return op + " " + fmt.Sprintf("%.0f %%", t.Limit*100)
}

// PassFail is "PASS" or "FAIL".
func (t Target) PassFail() string {
	if t.Pass {
		return "PASS"
	}
	return "FAIL"
}

// ratioCell is the ratio column of a row; for (e) and (j), which have no
// base, it is the share of semantic hits among the measured requests.
func ratioCell(rs []Result, r Result) string {
	if r.Scenario == ScenarioSemantic || r.Scenario == ScenarioSemanticFresh {
		cell := "n/a"
		if r.SemanticHitShare > 0 {
			cell = pct(r.SemanticHitShare) + " semantic hits"
		}
		if r.EmbeddingsPerRequest != nil {
			cell += fmt.Sprintf(", %.2f embeddings/req", *r.EmbeddingsPerRequest)
		}
		return cell
	}
	base, rel := baseOf[r.Scenario]
	if !rel {
		if r.OK() {
			return "100 % (base)"
		}
		return "n/a"
	}
	v, ok := Ratio(rs, r.Scenario, r.Conns)
	cell := "n/a"
	if ok {
		cell = fmt.Sprintf("%s of (%s)", pct(v), scenarioLetter[base])
	}
	// (d) and (f) also show their share of (c), where it ran, to be read
	// beside reports from before (c2).
	if own, has := ownCoreBaseOf[r.Scenario]; has {
		if v, ok := ratioTo(rs, r.Scenario, own, r.Conns); ok {
			cell += fmt.Sprintf("; %s of (%s)", pct(v), scenarioLetter[own])
		}
	}
	return cell
}

// WriteMarkdown writes the header lines, the results table, the targets
// table and any errors as Markdown.
func WriteMarkdown(w io.Writer, rep Report) error {
	var b strings.Builder
	m := rep.Machine
	fmt.Fprintf(&b, "Machine: nproc %d, %s, %s", m.NProc, m.CPUModel, m.GoVersion)
	if m.Kernel != "" {
		fmt.Fprintf(&b, ", Linux %s", m.Kernel)
	}
	if m.Wrk != "" {
		fmt.Fprintf(&b, ", %s", m.Wrk)
	}
	if m.Revision != "" {
		fmt.Fprintf(&b, ", edgecache %s", m.Revision)
	}
	if m.LoadAvg != "" {
		fmt.Fprintf(&b, ", loadavg %s", m.LoadAvg)
	}
	fmt.Fprintf(&b, ", %s\n\n", m.Date)
	fmt.Fprintf(&b, "Command: `%s`\n\n", rep.Command)
	measured := rep.Duration + " measured"
	if rep.BestOf > 1 {
		measured = fmt.Sprintf("the best (most req/s) of %d runs of %s each", rep.BestOf, rep.Duration)
	}
	bodies := fmt.Sprintf("%d B request body", rep.RequestBytes)
	if rep.ResponseBytes > 0 { // known when (a) ran
		bodies += fmt.Sprintf(", %d B response body", rep.ResponseBytes)
	}
	fmt.Fprintf(&b, "Server under test on CPU 1, wrk -t1 on CPU 0 (taskset); in %s llmsim runs on CPU 0 too. "+
		"Each row: %s warm-up, then %s; POST /v1/chat/completions, %s.\n\n",
		llmsimOnLoadCPU(rep.Results), rep.Warmup, measured, bodies)
	writeScenarioNotes(&b, rep)
	b.WriteString("| scenario | conns | req/s | server CPU µs/req | p50 ms | p99 ms | ratio |\n")
	b.WriteString("|---|--:|--:|--:|--:|--:|--:|\n")
	for _, r := range rep.Results {
		label := scenarioLabel[r.Scenario]
		if label == "" {
			label = r.Scenario
		}
		if r.Error != "" && r.RequestsPerSec == 0 {
			fmt.Fprintf(&b, "| %s | %d | FAILED | | | | n/a |\n", label, r.Conns)
			continue
		}
		rps := fmt.Sprintf("%.0f", r.RequestsPerSec)
		if r.Error != "" {
			rps += " (FAILED)"
		}
		cpu := "n/a"
		if r.ServerCPUUsPerRequest > 0 {
			cpu = fmt.Sprintf("%.1f", r.ServerCPUUsPerRequest)
		}
		fmt.Fprintf(&b, "| %s | %d | %s | %s | %.2f | %.2f | %s |\n", label, r.Conns, rps, cpu, r.P50Ms, r.P99Ms, ratioCell(rep.Results, r))
	}

	writeTargets(&b, rep)

	var notes []string
	for _, r := range rep.Results {
		label := fmt.Sprintf("%s @%d", scenarioLabel[r.Scenario], r.Conns)
		if r.Error != "" {
			notes = append(notes, fmt.Sprintf("- %s FAILED: %s", label, r.Error))
		}
		if r.Non2xx > 0 {
			notes = append(notes, fmt.Sprintf("- %s: %d non-2xx/3xx responses", label, r.Non2xx))
		}
		if r.SocketErrors.Total() > 0 {
			notes = append(notes, fmt.Sprintf("- %s: socket errors: %s", label, r.SocketErrors))
		}
	}
	if len(notes) == 0 {
		b.WriteString("No non-2xx responses and no socket errors.\n")
	} else {
		b.WriteString("\nErrors:\n" + strings.Join(notes, "\n") + "\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// llmsimOnLoadCPU names the rows of the header line in which llmsim runs
// on CPU 0 beside wrk: (b) and (d) always (the line predates the others),
// and (c2), (e) and (f) when the report has them.
func llmsimOnLoadCPU(rs []Result) string {
	var letters []string
	for _, sc := range []string{ScenarioHit, ScenarioDirectShared, ScenarioPassthrough, ScenarioSemantic, ScenarioProxy} {
		if sc == ScenarioHit || sc == ScenarioPassthrough || hasScenario(rs, sc) {
			letters = append(letters, "("+scenarioLetter[sc]+")")
		}
	}
	last := len(letters) - 1
	return strings.Join(letters[:last], ", ") + " and " + letters[last]
}

// writeTargets writes the targets table, then the informational readings
// in it with no goal ("info"), and the count of targets met, which the
// informational readings are not part of.
func writeTargets(b *strings.Builder, rep Report) {
	b.WriteString("\n| target | value | goal | result |\n")
	b.WriteString("|---|--:|--:|:-:|\n")
	pass := 0
	for _, t := range rep.Targets {
		fmt.Fprintf(b, "| %s | %s | %s | %s |\n", t.Name, t.valueString(), t.limitString(), t.PassFail())
		if t.Pass {
			pass++
		}
	}
	for _, t := range rep.Informational {
		fmt.Fprintf(b, "| %s | %s | none | info |\n", t.Name, t.valueString())
	}
	fmt.Fprintf(b, "\nTargets: %d/%d PASS.\n", pass, len(rep.Targets))
}

// writeScenarioNotes writes what (c2), (e), (j) and (f) are, for those of
// them the report has rows of.
func writeScenarioNotes(b *strings.Builder, rep Report) {
	if hasScenario(rep.Results, ScenarioDirectShared) {
		b.WriteString("(c2) is (c) with llmsim on CPU 0 beside wrk instead of alone on CPU 1: where llmsim runs in (d) and (f), " +
			"and the set-up of the issue that set the pass-through goal, so (d) and (f) are taken against it. (c) gives llmsim " +
			"the core that (d) and (f) give the gateway; their share of (c) is shown too, for information.\n\n")
	}
	if hasScenario(rep.Results, ScenarioSemantic) {
		fmt.Fprintf(b, "(e): route in mode semantic, remote embedder → llmsim --embed-fold (CPU 0, also the model), "+
			"verifier defaults; %d distinct prompts stored first, then every request asks one of them in a fresh random "+
			"letter case (an exact miss, a semantic hit); the last column is the semantic-hit share from edgecache's counters "+
			"(the row fails under %.0f %%).\n\n", rep.SemanticPrompts, MinSemanticHitShare*100)
	}
	if hasScenario(rep.Results, ScenarioSemanticFresh) {
		fmt.Fprintf(b, "(j): edgecache with its default embedder (the local model, USE-lite) and a route in mode semantic at the "+
			"verifier's defaults, llmsim (CPU 0) as the model; %d questions stored first, then every request asks one of them in "+
			"a text never sent before (%d rewordings the verifier accepts × mostly-upper-case letter patterns, %s texts in all: "+
			"USE-lite lower-cases, and the verifier reads no names into mostly upper-case text, so the case only makes the text new): an exact miss, an embedding computed by the "+
			"local model on the gateway's CPU, a search and the verification. The last column is the semantic-hit share "+
			"(the row fails under %.0f %%) and the texts the local model embedded per request (edgecache_embed_texts_total).\n\n",
			rep.FreshQuestions, rep.FreshTemplates, thousands(float64(rep.FreshSpace)), MinSemanticHitShare*100)
	}
	if hasScenario(rep.Results, ScenarioProxy) {
		b.WriteString("(f) is a reference for (d), not a target: a minimal net/http reverse proxy (read the body, forward it, " +
			"copy the answer back) in edgecache's place, so (d) can be read against what the two extra sockets cost alone.\n\n")
	}

}

// WriteJSON writes rep as indented JSON to path.
func WriteJSON(path string, rep Report) error { return writeJSONFile(path, rep) }

// formatDuration prints whole-second durations as wrk sees them.
func formatDuration(d time.Duration) string { return wrkDuration(d) }
