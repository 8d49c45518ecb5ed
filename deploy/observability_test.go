package deploy_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// metrics are the series edgecache exports (cmd/internal/telemetry) plus
// the cAdvisor and kube-state-metrics series the CPU alert reads. Alerts,
// dashboard panels and the HPA may name only these.
var metrics = map[string]bool{
	"http_server_request_duration_seconds":      true, // histogram (otelhttp)
	"edgecache_requests_in_flight":              true,
	"edgecache_cache_lookups_total":             true,
	"edgecache_cache_bypasses_total":            true,
	"edgecache_upstream_requests_total":         true,
	"edgecache_upstream_duration_seconds":       true, // histogram
	"edgecache_degrade_answers_total":           true,
	"edgecache_upstream_breaker_state":          true,
	"edgecache_admission_shed_total":            true,
	"edgecache_redis_up":                        true,
	"gen_ai_server_time_to_first_token_seconds": true, // histogram
	"gen_ai_client_token_usage":                 true, // histogram
	"gen_ai_client_operation_duration_seconds":  true, // histogram
	"edgecache_tokens_saved_total":              true,
	"edgecache_cost_saved_total":                true,
	"go_goroutines":                             true, // Go collector
	"process_resident_memory_bytes":             true, // process collector
	"container_cpu_usage_seconds_total":         true,
	"kube_pod_container_resource_limits":        true,
}

var histograms = map[string]bool{
	"gen_ai_client_token_usage":                 true,
	"gen_ai_client_operation_duration_seconds":  true,
	"http_server_request_duration_seconds":      true,
	"edgecache_upstream_duration_seconds":       true,
	"gen_ai_server_time_to_first_token_seconds": true,
}

func knownMetric(name string) bool {
	if metrics[name] && !histograms[name] {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok && histograms[base] {
			return true
		}
	}
	return false
}

// promqlKeywords are PromQL words that are neither metrics nor functions.
var promqlKeywords = map[string]bool{
	"and": true, "or": true, "unless": true, "bool": true, "offset": true,
	"inf": true, "nan": true, "atan2": true,
}

// promqlAggregations may be followed by a grouping clause before their "(".
var promqlAggregations = map[string]bool{
	"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true, "stdvar": true,
	"count": true, "count_values": true, "bottomk": true, "topk": true, "quantile": true,
	"limitk": true, "limit_ratio": true,
}

// promqlGrouping keywords are followed by a parenthesised list of labels.
var promqlGrouping = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
}

// promqlMetrics returns the metric names an expression selects. It is a
// lexer, not a parser: strings, label matchers ({...}), ranges ([...]),
// Grafana variables ($x, ${x}) and numbers are skipped; an identifier
// followed by "(" is a function or aggregation; grouping keywords take their
// label list with them. It also reports unbalanced brackets.
func promqlMetrics(expr string) ([]string, error) {
	var names []string
	var stack []byte
	closing := map[byte]byte{'(': ')', '[': ']', '{': '}'}
	skipString := func(i int) (int, error) {
		q := expr[i]
		for j := i + 1; j < len(expr); j++ {
			switch {
			case expr[j] == '\\' && q != '`':
				j++
			case expr[j] == q:
				return j + 1, nil
			}
		}
		return 0, fmt.Errorf("unterminated string at %d", i)
	}
	// skipBlock skips from an opening bracket at i to its match.
	skipBlock := func(i int) (int, error) {
		open, depth := expr[i], 0
		for j := i; j < len(expr); j++ {
			switch c := expr[j]; {
			case c == '"' || c == '\'' || c == '`':
				k, err := skipString(j)
				if err != nil {
					return 0, err
				}
				j = k - 1
			case c == open:
				depth++
			case c == closing[open]:
				if depth--; depth == 0 {
					return j + 1, nil
				}
			}
		}
		return 0, fmt.Errorf("unbalanced %q at %d", open, i)
	}
	isIdent := func(c byte, first bool) bool {
		return c == '_' || c == ':' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || !first && '0' <= c && c <= '9'
	}
	nextNonSpace := func(i int) int {
		for i < len(expr) && strings.ContainsRune(" \t\r\n", rune(expr[i])) {
			i++
		}
		return i
	}
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			j, err := skipString(i)
			if err != nil {
				return nil, err
			}
			i = j
		case c == '{' || c == '[':
			j, err := skipBlock(i)
			if err != nil {
				return nil, err
			}
			i = j
		case c == '(':
			stack = append(stack, c)
			i++
		case c == ')':
			if len(stack) == 0 {
				return nil, fmt.Errorf("unbalanced ')' at %d", i)
			}
			stack = stack[:len(stack)-1]
			i++
		case c == '}' || c == ']':
			return nil, fmt.Errorf("unbalanced %q at %d", c, i)
		case c == '$':
			i++
			if i < len(expr) && expr[i] == '{' {
				j, err := skipBlock(i)
				if err != nil {
					return nil, err
				}
				i = j
			}
			for i < len(expr) && isIdent(expr[i], false) {
				i++
			}
		case '0' <= c && c <= '9' || c == '.':
			for i < len(expr) && (isIdent(expr[i], false) || expr[i] == '.') {
				i++
			}
		case isIdent(c, true):
			j := i
			for j < len(expr) && isIdent(expr[j], false) {
				j++
			}
			word := expr[i:j]
			next := nextNonSpace(j)
			i = j
			switch {
			case promqlGrouping[strings.ToLower(word)]:
				if next < len(expr) && expr[next] == '(' {
					k, err := skipBlock(next)
					if err != nil {
						return nil, err
					}
					i = k
				}
			case promqlKeywords[strings.ToLower(word)], promqlAggregations[strings.ToLower(word)]:
			case next < len(expr) && expr[next] == '(':
				// a function or an aggregation
			default:
				names = append(names, word)
			}
		default:
			i++
		}
	}
	if len(stack) > 0 {
		return nil, fmt.Errorf("unbalanced '('")
	}
	return names, nil
}

// checkPromQL reports an expression that is empty, unbalanced, selects no
// metric or an unknown one.
func checkPromQL(t *testing.T, where, expr string) {
	t.Helper()
	names, err := promqlMetrics(expr)
	switch {
	case strings.TrimSpace(expr) == "":
		t.Errorf("%s: empty expression", where)
	case err != nil:
		t.Errorf("%s: %v in %q", where, err, expr)
	case len(names) == 0:
		t.Errorf("%s: selects no metric: %q", where, expr)
	}
	for _, n := range names {
		if !knownMetric(n) {
			t.Errorf("%s: unknown metric %q (edgecache exports: see metrics in observability_test.go)", where, n)
		}
	}
}

func TestPromQLLexer(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want []string
		bad  bool
	}{
		{`sum by (job) (rate(a_total{x=~"5..", y="}"}[5m])) / sum(rate(b_count[$__rate_interval]))`, []string{"a_total", "b_count"}, false},
		{`histogram_quantile(0.95, sum by (le) (rate(h_bucket{job=~"$job"}[5m]))) > 2`, []string{"h_bucket"}, false},
		{`max(x) without (target) == 2 and on (ns) group_left (pod) y offset 5m`, []string{"x", "y"}, false},
		{`sum(rate(a[5m])`, nil, true},
		{`a{b="c"]`, nil, true},
	} {
		got, err := promqlMetrics(tc.expr)
		if (err != nil) != tc.bad || !slices.Equal(got, tc.want) {
			t.Errorf("promqlMetrics(%q) = %v, %v; want %v (error %v)", tc.expr, got, err, tc.want, tc.bad)
		}
	}
}

const (
	alertsFile    = "prometheus/alerts.yaml"
	dashboardFile = "grafana/dashboards/edgecache.json"
	readmeFile    = "README.md"
)

type ruleFile struct {
	Groups []struct {
		Name     string `json:"name"`
		Interval string `json:"interval,omitempty"`
		Rules    []struct {
			Alert         string            `json:"alert,omitempty"`
			Record        string            `json:"record,omitempty"`
			Expr          string            `json:"expr"`
			For           string            `json:"for,omitempty"`
			KeepFiringFor string            `json:"keep_firing_for,omitempty"`
			Labels        map[string]string `json:"labels,omitempty"`
			Annotations   map[string]string `json:"annotations,omitempty"`
		} `json:"rules"`
	} `json:"groups"`
}

// TestAlertRules parses the rule file strictly and checks the alerts
// operators asked for: present, with their thresholds and durations, a
// severity, annotations, a runbook that exists in deploy/README.md and only
// known metrics.
func TestAlertRules(t *testing.T) {
	var rf ruleFile
	strictYAML(t, alertsFile, &rf)
	want := map[string]struct{ threshold, minFor string }{
		"EdgecacheHighErrorRate":       {"> 0.05", "1m"}, // 5xx share > 5 %
		"EdgecacheHighLatency":         {"> 2", "1m"},    // mean latency > 2 s
		"EdgecacheHighCPU":             {fmt.Sprintf("> %g", float64(hpaCPUPercent)/100), "1m"},
		"EdgecacheUpstreamBreakerOpen": {"== 2", "1m"},                          // open
		"EdgecacheShedding":            {`reason=~"shed|queued_timeout"`, "1m"}, // overload only
		"EdgecacheQuotaRefusals":       {`reason="rate_limit_exceeded"`, "1m"},  // a client's own quota
		"EdgecacheRedisDown":           {"== 0", "1m"},
	}
	anchors := readmeAnchors(t)
	seen := map[string]bool{}
	for _, g := range rf.Groups {
		if g.Name == "" || len(g.Rules) == 0 {
			t.Errorf("%s: group %q: want a name and rules", alertsFile, g.Name)
		}
		for _, r := range g.Rules {
			where := fmt.Sprintf("%s: %s%s", alertsFile, r.Alert, r.Record)
			if (r.Alert == "") == (r.Record == "") {
				t.Errorf("%s: a rule is either an alert or a recording rule", where)
				continue
			}
			checkPromQL(t, where, r.Expr)
			if r.Record != "" {
				continue
			}
			if seen[r.Alert] {
				t.Errorf("%s: duplicate alert", where)
			}
			seen[r.Alert] = true
			d, err := time.ParseDuration(r.For)
			if err != nil || d <= 0 {
				t.Errorf("%s: for %q: want a positive duration", where, r.For)
			}
			if s := r.Labels["severity"]; s != "critical" && s != "warning" {
				t.Errorf("%s: severity %q: want critical or warning", where, s)
			}
			for _, a := range []string{"summary", "description", "runbook_url"} {
				if r.Annotations[a] == "" {
					t.Errorf("%s: no %s annotation", where, a)
				}
			}
			if u, err := url.Parse(r.Annotations["runbook_url"]); err != nil || !strings.HasSuffix(u.Path, "/deploy/README.md") || !anchors[u.Fragment] {
				t.Errorf("%s: runbook_url %q: want deploy/README.md#<a heading of deploy/README.md>", where, r.Annotations["runbook_url"])
			}
			if w, ok := want[r.Alert]; ok {
				if !strings.Contains(r.Expr, w.threshold) {
					t.Errorf("%s: expression lost its threshold %q: %s", where, w.threshold, r.Expr)
				}
				if min, _ := time.ParseDuration(w.minFor); d < min {
					t.Errorf("%s: for %s, want at least %s", where, r.For, w.minFor)
				}
			}
		}
	}
	for name := range want {
		if !seen[name] {
			t.Errorf("%s: alert %s is missing", alertsFile, name)
		}
	}
}

// readmeAnchors returns the GitHub anchors of deploy/README.md's headings.
func readmeAnchors(t *testing.T) map[string]bool {
	t.Helper()
	anchors := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(readFile(t, readmeFile)))
	inCode := false
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "```") {
			inCode = !inCode
		}
		if inCode || !strings.HasPrefix(line, "#") {
			continue
		}
		title := strings.ToLower(strings.TrimSpace(strings.TrimLeft(line, "#")))
		var b strings.Builder
		for _, r := range title {
			switch {
			case r == ' ':
				b.WriteRune('-')
			case r == '-' || r == '_' || 'a' <= r && r <= 'z' || '0' <= r && r <= '9':
				b.WriteRune(r)
			}
		}
		anchors[b.String()] = true
	}
	return anchors
}

type panel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource *struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	GridPos struct{ H, W, X, Y int } `json:"gridPos"`
	Targets []struct {
		Expr  string `json:"expr"`
		RefID string `json:"refId"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a collapsed row's panels
}

// TestDashboard parses the Grafana dashboard and checks its panels: unique
// ids, a place on the 24-column grid, the provisioned datasource, and
// queries that select only metrics edgecache exports.
func TestDashboard(t *testing.T) {
	var dash struct {
		Inputs []struct {
			Name, Type, PluginID string
		} `json:"__inputs"`
		UID           string  `json:"uid"`
		Title         string  `json:"title"`
		SchemaVersion int     `json:"schemaVersion"`
		Panels        []panel `json:"panels"`
		Templating    struct {
			List []struct {
				Name       string          `json:"name"`
				Type       string          `json:"type"`
				Query      json.RawMessage `json:"query"`
				Datasource *struct {
					UID string `json:"uid"`
				} `json:"datasource"`
			} `json:"list"`
		} `json:"templating"`
	}
	dec := json.NewDecoder(bytes.NewReader(readFile(t, dashboardFile)))
	if err := dec.Decode(&dash); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	if dash.UID == "" || dash.Title == "" || dash.SchemaVersion == 0 {
		t.Errorf("%s: want uid, title and schemaVersion", dashboardFile)
	}
	// The datasource is a variable, so the dashboard imports into any
	// Grafana (__inputs asks for DS_PROMETHEUS) and provisioning picks the
	// default Prometheus (deploy/grafana/provisioning).
	_ = provisionedDatasourceUID(t)
	const dsUID = "${datasource}"
	if len(dash.Inputs) != 1 || dash.Inputs[0].Name != "DS_PROMETHEUS" || dash.Inputs[0].Type != "datasource" || dash.Inputs[0].PluginID != "prometheus" {
		t.Errorf("%s: __inputs %+v, want one Prometheus datasource DS_PROMETHEUS", dashboardFile, dash.Inputs)
	}
	if bytes.Contains(readFile(t, dashboardFile), []byte(`"uid": "prometheus"`)) {
		t.Errorf("%s: a hard-coded datasource uid is left", dashboardFile)
	}
	dsVar := false
	ids := map[int]bool{}
	var queries int
	var walk func(ps []panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			where := fmt.Sprintf("%s: panel %d %q", dashboardFile, p.ID, p.Title)
			if ids[p.ID] || p.ID == 0 {
				t.Errorf("%s: id missing or not unique", where)
			}
			ids[p.ID] = true
			if g := p.GridPos; g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
				t.Errorf("%s: gridPos %+v is off the 24-column grid", where, g)
			}
			if p.Type == "row" {
				walk(p.Panels)
				continue
			}
			if p.Title == "" || len(p.Targets) == 0 {
				t.Errorf("%s: want a title and queries", where)
			}
			if p.Datasource == nil || p.Datasource.UID != dsUID {
				t.Errorf("%s: datasource %+v, want %q", where, p.Datasource, dsUID)
			}
			for _, tg := range p.Targets {
				checkPromQL(t, fmt.Sprintf("%s query %s", where, tg.RefID), tg.Expr)
				queries++
			}
		}
	}
	walk(dash.Panels)
	labelValues := regexp.MustCompile(`^label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)`)
	for _, v := range dash.Templating.List {
		if v.Type == "datasource" && v.Name == "datasource" && string(v.Query) == `"prometheus"` {
			dsVar = true
		}
		if v.Type != "query" {
			continue
		}
		if v.Datasource == nil || v.Datasource.UID != dsUID {
			t.Errorf("%s: variable %s: datasource %+v, want %s", dashboardFile, v.Name, v.Datasource, dsUID)
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil {
			if err := json.Unmarshal(v.Query, &q.Query); err != nil {
				t.Errorf("%s: variable %s: query %s", dashboardFile, v.Name, v.Query)
			}
		}
		if m := labelValues.FindStringSubmatch(q.Query); m == nil || !knownMetric(m[1]) {
			t.Errorf("%s: variable %s: query %q: want label_values(<known metric>, label)", dashboardFile, v.Name, q.Query)
		}
	}
	if !dsVar {
		t.Errorf("%s: no datasource variable (type datasource, query prometheus)", dashboardFile)
	}
	// Every series edgecache exports has a panel.
	for m := range metrics {
		if !strings.Contains(string(readFile(t, dashboardFile)), m) {
			t.Errorf("%s: no panel shows %s", dashboardFile, m)
		}
	}
	t.Logf("%d panels, %d queries", len(ids), queries)
}

// provisionedDatasourceUID reads the uid of the Prometheus datasource that
// Grafana provisioning creates (and the dashboard must use).
func provisionedDatasourceUID(t *testing.T) string {
	t.Helper()
	var ds struct {
		APIVersion  int `json:"apiVersion"`
		Datasources []struct {
			Name      string         `json:"name"`
			UID       string         `json:"uid"`
			Type      string         `json:"type"`
			Access    string         `json:"access"`
			URL       string         `json:"url"`
			IsDefault bool           `json:"isDefault"`
			Editable  bool           `json:"editable"`
			JSONData  map[string]any `json:"jsonData"`
		} `json:"datasources"`
	}
	f := filepath.Join("grafana", "provisioning", "datasources", "prometheus.yaml")
	strictYAML(t, f, &ds)
	if ds.APIVersion != 1 || len(ds.Datasources) != 1 || ds.Datasources[0].Type != "prometheus" || ds.Datasources[0].UID == "" {
		t.Fatalf("%s: want one prometheus datasource with a uid", f)
	}
	return ds.Datasources[0].UID
}
