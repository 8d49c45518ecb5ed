package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Snapshot is edgecache's admission state as its admin listener shows it:
// the primary target's adaptive concurrency limit (/admin/upstreams) and
// the upstream and degraded-answer counters (/metrics). Counters are
// cumulative; the report shows differences between phases.
type Snapshot struct {
	Limiter *LimiterStats `json:"limiter,omitempty"`
	// Upstream counts upstream calls by status (and error type when the
	// call failed), e.g. "200", "0 timeout", "429 upstream_429".
	Upstream map[string]float64 `json:"upstream"`
	// Degraded counts degraded answers by rung and reason, e.g.
	// "busy/queued_timeout", "shed/rate_limit_exceeded".
	Degraded map[string]float64 `json:"degraded"`
	// Error says what could not be read.
	Error string `json:"error,omitempty"`
}

// LimiterStats is the part of a target's concurrency limiter the report
// shows.
type LimiterStats struct {
	Target     string                 `json:"target"`
	Limit      int                    `json:"limit"`
	TTFTMs     float64                `json:"ttft_ms"`      // p90 of the last window
	LongTTFTMs float64                `json:"long_ttft_ms"` // the long-term average it compares with
	InFlight   int                    `json:"in_flight"`
	Queued     int                    `json:"queued"`
	SlowStart  bool                   `json:"slow_start"`
	Lanes      map[string]LimiterLane `json:"lanes"`
}

// LimiterLane is one lane's cumulative counters in the limiter.
type LimiterLane struct {
	Admitted  uint64 `json:"admitted"`
	Waited    uint64 `json:"waited"`
	Shed      uint64 `json:"shed"`
	Timeouts  uint64 `json:"timeouts"`
	Cancelled uint64 `json:"cancelled"`
}

func (a LimiterLane) minus(b LimiterLane) LimiterLane {
	return LimiterLane{Admitted: a.Admitted - b.Admitted, Waited: a.Waited - b.Waited, Shed: a.Shed - b.Shed,
		Timeouts: a.Timeouts - b.Timeouts, Cancelled: a.Cancelled - b.Cancelled}
}

// parseUpstreams reads the first target with a limiter from the JSON of
// GET /admin/upstreams.
func parseUpstreams(data []byte) (*LimiterStats, error) {
	var v struct {
		Upstreams []struct {
			Target  string `json:"target"`
			Limiter *struct {
				Limit, InFlight, Queued int
				SlowStart               bool
				TTFT, LongTTFT          int64 // ns
				Lanes                   []struct {
					Lane                                        string
					Admitted, Waited, Shed, Timeouts, Cancelled uint64
				}
			} `json:"limiter"`
		} `json:"upstreams"`
	}
	if err := json.Unmarshal(data, &v); err != nil {
		return nil, fmt.Errorf("/admin/upstreams: %w", err)
	}
	for _, u := range v.Upstreams {
		if u.Limiter == nil {
			continue
		}
		s := &LimiterStats{Target: u.Target, Limit: u.Limiter.Limit, TTFTMs: ms(time.Duration(u.Limiter.TTFT)),
			LongTTFTMs: ms(time.Duration(u.Limiter.LongTTFT)), InFlight: u.Limiter.InFlight, Queued: u.Limiter.Queued,
			SlowStart: u.Limiter.SlowStart, Lanes: map[string]LimiterLane{}}
		for _, l := range u.Limiter.Lanes {
			s.Lanes[l.Lane] = LimiterLane{Admitted: l.Admitted, Waited: l.Waited, Shed: l.Shed,
				Timeouts: l.Timeouts, Cancelled: l.Cancelled}
		}
		return s, nil
	}
	return nil, errors.New("/admin/upstreams: no target has a concurrency limiter")
}

// parseMetricLine splits a Prometheus text line into its series name,
// labels and value; ok is false for comments and malformed lines.
func parseMetricLine(line string) (name string, labels map[string]string, value float64, ok bool) {
	line = strings.TrimSpace(line)
	if line == "" || line[0] == '#' {
		return "", nil, 0, false
	}
	rest := line
	labels = map[string]string{}
	if i := strings.IndexByte(line, '{'); i >= 0 {
		j := strings.LastIndexByte(line, '}')
		if j < i {
			return "", nil, 0, false
		}
		name, rest = line[:i], line[j+1:]
		for _, kv := range splitLabels(line[i+1 : j]) {
			k, v, found := strings.Cut(kv, "=")
			if !found {
				return "", nil, 0, false
			}
			uq, err := strconv.Unquote(v)
			if err != nil {
				return "", nil, 0, false
			}
			labels[k] = uq
		}
	} else {
		f := strings.Fields(line)
		if len(f) < 2 {
			return "", nil, 0, false
		}
		name, rest = f[0], strings.Join(f[1:], " ")
	}
	f := strings.Fields(rest)
	if len(f) == 0 {
		return "", nil, 0, false
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return "", nil, 0, false
	}
	return name, labels, v, true
}

// splitLabels splits `a="x",b="y, z"` at the commas outside quotes.
func splitLabels(s string) []string {
	var out []string
	inQuote, esc, from := false, false, 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case esc:
			esc = false
		case c == '\\':
			esc = true
		case c == '"':
			inQuote = !inQuote
		case c == ',' && !inQuote:
			out = append(out, strings.TrimSpace(s[from:i]))
			from = i + 1
		}
	}
	if last := strings.TrimSpace(s[from:]); last != "" {
		out = append(out, last)
	}
	return out
}

// parseCounters reads edgecache's upstream-call and degraded-answer
// counters from /metrics text.
func parseCounters(r io.Reader) (upstream, degraded map[string]float64, err error) {
	upstream, degraded = map[string]float64{}, map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, l, v, ok := parseMetricLine(sc.Text())
		if !ok {
			continue
		}
		switch name {
		case "edgecache_upstream_requests_total":
			k := l["http_response_status_code"]
			if e := l["error_type"]; e != "" {
				k += " " + e
			}
			upstream[k] += v
		case "edgecache_degrade_answers_total":
			degraded[l["rung"]+"/"+l["reason"]] += v
		}
	}
	return upstream, degraded, sc.Err()
}

// takeSnapshot reads edgecache's admin endpoints; what fails is noted in
// the snapshot's Error.
func takeSnapshot(ctx context.Context, client *http.Client, adminURL string) *Snapshot {
	s := &Snapshot{}
	var errs []string
	get := func(path string) ([]byte, error) {
		return getBody(ctx, client, strings.TrimSuffix(adminURL, "/")+path)
	}
	if b, err := get("/admin/upstreams"); err != nil {
		errs = append(errs, err.Error())
	} else if s.Limiter, err = parseUpstreams(b); err != nil {
		errs = append(errs, err.Error())
	}
	if b, err := get("/metrics"); err != nil {
		errs = append(errs, err.Error())
	} else if s.Upstream, s.Degraded, err = parseCounters(strings.NewReader(string(b))); err != nil {
		errs = append(errs, err.Error())
	}
	s.Error = strings.Join(errs, "; ")
	return s
}

// counterDelta returns after − before for every key of after with a
// positive difference.
func counterDelta(before, after map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k, v := range after {
		if d := v - before[k]; d > 0 {
			out[k] = d
		}
	}
	return out
}

// formatCounts renders counts as "k1 ×n1, k2 ×n2" by decreasing count.
func formatCounts(m map[string]float64) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if m[keys[i]] != m[keys[j]] {
			return m[keys[i]] > m[keys[j]]
		}
		return keys[i] < keys[j]
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s ×%.0f", k, m[k])
	}
	return strings.Join(parts, ", ")
}
