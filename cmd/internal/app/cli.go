package app

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/edgecache/edgecache/cmd/internal/pipeline"
	"github.com/edgecache/edgecache/degrade/journal"
)

// adminClient calls a running edgecache's admin API, for the CLI
// subcommands that mirror it.
type adminClient struct {
	base, token string
	hc          *http.Client
}

func adminFlags(fs *flag.FlagSet) *adminClient {
	c := &adminClient{hc: &http.Client{Timeout: 10 * time.Second}}
	def := os.Getenv("EDGECACHE_ADMIN_URL")
	if def == "" {
		def = "http://127.0.0.1:9090"
	}
	fs.StringVar(&c.base, "admin", def, "admin API base URL (env EDGECACHE_ADMIN_URL)")
	fs.StringVar(&c.token, "token", os.Getenv("EDGECACHE_ADMIN_TOKEN"), "admin bearer token (env EDGECACHE_ADMIN_TOKEN)")
	return c
}

func (c *adminClient) do(ctx context.Context, method, path string, q url.Values, body io.Reader, out any) error {
	u := strings.TrimSuffix(c.base, "/") + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("admin API %s: %w (is edgecache running? see --admin)", c.base, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error struct{ Message string } `json:"error"`
		}
		if json.Unmarshal(b, &e) == nil && e.Error.Message != "" {
			return fmt.Errorf("admin API: %s (%d)", e.Error.Message, resp.StatusCode)
		}
		return fmt.Errorf("admin API answered %d: %.200s", resp.StatusCode, b)
	}
	if out == nil {
		return nil
	}
	if raw, ok := out.(*json.RawMessage); ok {
		*raw = b
		return nil
	}
	return json.Unmarshal(b, out)
}

// jobSummary is a job record's last column: the job id and what the change
// measured (the place told at acceptance, the wait before the start, the
// run's duration).
func jobSummary(j *journal.Job) string {
	s := j.ID
	switch {
	case j.Position > 0:
		s += fmt.Sprintf(" position %d", j.Position)
	case j.WaitMillis > 0:
		s += fmt.Sprintf(" waited %dms", j.WaitMillis)
	case j.RunMillis > 0:
		s += fmt.Sprintf(" ran %dms", j.RunMillis)
	}
	return s
}

// degradations is `edgecache degradations`: the journal, newest first.
func degradations(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("edgecache degradations", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := adminFlags(fs)
	since := fs.String("since", "1h", "how far back: a duration (1h, 30m) or an RFC 3339 time")
	until := fs.String("until", "", "up to: a duration back from now or an RFC 3339 time")
	route := fs.String("route", "", "only this route")
	tenant := fs.String("tenant", "", "only this tenant namespace")
	rung := fs.String("rung", "", "only this rung (stale, semantic-nearest, template, busy, stream-truncated, shed, …; job: background jobs)")
	reason := fs.String("reason", "", "only this reason (upstream_503, timeout, breaker_open, …; of rung job: queued, started, requeued, completed, failed, cancelled, deleted, expired)")
	limit := fs.Int("limit", 100, "at most this many records")
	asJSON := fs.Bool("json", false, "print the records as JSON")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: edgecache degradations [--since 1h] [--route R] [--rung R] [--reason R] [--json]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	q := url.Values{"since": {*since}, "limit": {fmt.Sprint(*limit)}}
	for k, v := range map[string]string{"until": *until, "route": *route, "tenant": *tenant, "rung": *rung, "reason": *reason} {
		if v != "" {
			q.Set(k, v)
		}
	}
	var res struct {
		Degradations []journal.Record `json:"degradations"`
		Count        int              `json:"count"`
	}
	if *asJSON {
		var raw json.RawMessage
		if err := c.do(ctx, http.MethodGet, "/admin/degradations", q, nil, &raw); err != nil {
			return err
		}
		_, err := fmt.Fprintln(stdout, string(raw))
		return err
	}
	if err := c.do(ctx, http.MethodGet, "/admin/degradations", q, nil, &res); err != nil {
		return err
	}
	if len(res.Degradations) == 0 {
		fmt.Fprintf(stdout, "no degraded answers since %s\n", *since)
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tROUTE\tRUNG\tREASON\tSTATUS\tRETRY-AFTER\tATTEMPTS\tREQUEST")
	for _, r := range res.Degradations {
		ra := "-"
		if r.RetryAfterSeconds > 0 {
			ra = fmt.Sprintf("%ds", r.RetryAfterSeconds)
		}
		reason := r.Reason
		if r.Count > 1 { // folded refusals: how many, until when
			reason += fmt.Sprintf(" ×%d until %s", r.Count, r.Last.Local().Format("15:04:05"))
		}
		request := r.RequestID
		if j := r.Job; j != nil { // a job's change: its id, and its place or wait
			request = jobSummary(j)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%d\t%s\n", r.Time.Local().Format("2006-01-02 15:04:05"), r.Route, r.Rung,
			reason, r.Status, ra, len(r.Attempts), request)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%d record(s)\n", len(res.Degradations))
	return nil
}

// adminCommand is a parsed admin command with subcommands (edgecache
// routes, edgecache upstreams): the admin client from its flags, --json,
// the subcommand and its arguments, and its usage for bad arguments.
type adminCommand struct {
	c      *adminClient
	asJSON bool
	rest   []string
	usage  func()
}

// parseAdminCommand parses such a command's flags. It returns nil and no
// error when -h was asked (the usage is printed); an empty command line
// prints the usage and is an error.
func parseAdminCommand(name, usage string, args []string, stderr io.Writer) (*adminCommand, error) {
	fs := flag.NewFlagSet("edgecache "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	ac := &adminCommand{c: adminFlags(fs)}
	fs.BoolVar(&ac.asJSON, "json", false, "print JSON")
	fs.Usage = func() {
		fmt.Fprintln(stderr, usage)
		fs.PrintDefaults()
	}
	ac.usage = fs.Usage
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, nil
		}
		return nil, err
	}
	if ac.rest = fs.Args(); len(ac.rest) == 0 {
		fs.Usage()
		return nil, errors.New(name + ": a subcommand is required")
	}
	return ac, nil
}

// routesCmd is `edgecache routes list|show NAME|set NAME field=value…|
// reset NAME|purge NAME|audit [NAME]`, mirroring the admin API.
func routesCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	ac, err := parseAdminCommand("routes", `Usage: edgecache routes [flags] list | show NAME | set NAME field=value... | reset NAME | purge NAME | purge-disagreements NAME | audit [NAME]
  fields: mode=off|exact|semantic ttl=10m stale_if_error=1h threshold=0.9 floor=0.85 degraded_floor=0.8 templates=true|false
  a field set to "default" returns to the configured value`, args, stderr)
	if ac == nil || err != nil {
		return err
	}
	c, asJSON, rest := ac.c, ac.asJSON, ac.rest
	var raw json.RawMessage
	switch cmd := rest[0]; {
	case cmd == "list":
		err = c.do(ctx, http.MethodGet, "/admin/routes", nil, nil, &raw)
	case cmd == "show" && len(rest) == 2:
		err = c.do(ctx, http.MethodGet, "/admin/routes/"+url.PathEscape(rest[1]), nil, nil, &raw)
	case cmd == "set" && len(rest) >= 3:
		patch, perr := parseAssignments(rest[2:])
		if perr != nil {
			return perr
		}
		err = c.do(ctx, http.MethodPatch, "/admin/routes/"+url.PathEscape(rest[1]), nil, strings.NewReader(patch), &raw)
	case cmd == "reset" && len(rest) == 2:
		body := `{"mode":null,"ttl":null,"stale_if_error":null,"threshold":null,"floor":null,"degraded_floor":null,"templates":null}`
		err = c.do(ctx, http.MethodPatch, "/admin/routes/"+url.PathEscape(rest[1]), nil, strings.NewReader(body), &raw)
	case cmd == "purge" && len(rest) == 2:
		err = c.do(ctx, http.MethodPost, "/admin/routes/"+url.PathEscape(rest[1])+"/purge", nil, nil, &raw)
	case cmd == "purge-disagreements" && len(rest) == 2:
		if err := c.do(ctx, http.MethodPost, "/admin/routes/"+url.PathEscape(rest[1])+"/shadow/purge", nil, nil, &raw); err != nil {
			return err
		}
		_, err := fmt.Fprintln(stdout, string(raw))
		return err
	case cmd == "audit" && len(rest) <= 2:
		q := url.Values{}
		if len(rest) == 2 {
			q.Set("route", rest[1])
		}
		err = c.do(ctx, http.MethodGet, "/admin/routes/audit", q, nil, &raw)
	default:
		ac.usage()
		return fmt.Errorf("routes: bad arguments %q", rest)
	}
	if err != nil {
		return err
	}
	if asJSON || rest[0] == "audit" {
		_, err := fmt.Fprintln(stdout, string(raw))
		return err
	}
	return printRoutes(stdout, raw, rest[0] == "show")
}

// parseAssignments turns field=value pairs into a JSON patch: numbers and
// booleans typed, "default" as null.
func parseAssignments(as []string) (string, error) {
	m := map[string]any{}
	for _, a := range as {
		k, v, ok := strings.Cut(a, "=")
		if !ok || k == "" {
			return "", fmt.Errorf("routes set: %q is not field=value", a)
		}
		switch k {
		case "threshold", "floor", "degraded_floor":
			if v == "default" {
				m[k] = nil
				continue
			}
			var f float64
			if _, err := fmt.Sscan(v, &f); err != nil {
				return "", fmt.Errorf("routes set: %s=%q is not a number", k, v)
			}
			m[k] = f
		case "templates":
			switch v {
			case "true", "on":
				m[k] = true
			case "false", "off":
				m[k] = false
			case "default":
				m[k] = nil
			default:
				return "", fmt.Errorf("routes set: templates=%q: want true or false", v)
			}
		default:
			if v == "default" {
				m[k] = nil
			} else {
				m[k] = v
			}
		}
	}
	b, err := json.Marshal(m)
	return string(b), err
}

// shadowJSON is the "shadow" object of a route (pipeline.ShadowStats).
type shadowJSON struct{ pipeline.ShadowStats }

// summary is the estimate, its interval and the budget on one line.
func (s *shadowJSON) summary() string {
	if s == nil {
		return "-"
	}
	budget := "no budget"
	if s.MaxFalseHitRate > 0 {
		budget = fmt.Sprintf("budget %.2f%%", 100*s.MaxFalseHitRate)
		if s.Judged > 0 && s.Upper > s.MaxFalseHitRate {
			budget += " (OVER)"
		}
	}
	if s.Judged == 0 {
		return "none judged, " + budget
	}
	return fmt.Sprintf("%.2f%% [%.2f%%, %.2f%%], %s", 100*s.Estimate, 100*s.Lower, 100*s.Upper, budget)
}

// printShadow is the shadow verification block of `routes show`.
func printShadow(w io.Writer, s *shadowJSON) {
	fmt.Fprintf(w, "\nshadow verification (semantic hits asked upstream again and judged):\n")
	fmt.Fprintf(w, "  false-hit rate   %s\n", s.summary())
	fmt.Fprintf(w, "  judged hits      %d at threshold %.4f: %d agreed, %d disagreed, %d unsure (95%% Wilson interval; unsure widens it)\n",
		s.Judged, s.Threshold, s.Agreed, s.Disagreed, s.Unsure)
	fmt.Fprintf(w, "  since start      %d hits and %d near-misses judged; %d shadow calls for %d upstream calls\n",
		s.HitsJudged, s.NearMissJudged, s.ShadowCalls, s.UpstreamCalls)
	fmt.Fprintf(w, "  sampling         sample %g, near_miss_sample %g, max_share %g\n", s.Sample, s.NearMissSample, s.MaxShare)
}

func printRoutes(w io.Writer, raw json.RawMessage, detail bool) error {
	type view struct {
		Name, Path, Mode, TTL string
		StaleIfError          string      `json:"stale_if_error"`
		Threshold             float64     `json:"threshold"`
		Templates             bool        `json:"templates"`
		Overridden            bool        `json:"overridden"`
		UpdatedBy             string      `json:"updated_by"`
		Shadow                *shadowJSON `json:"shadow"`
	}
	var list struct {
		Routes []view `json:"routes"`
	}
	if json.Unmarshal(raw, &list) != nil || list.Routes == nil {
		var one view
		if err := json.Unmarshal(raw, &one); err != nil {
			return err
		}
		list.Routes = []view{one}
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ROUTE\tPATH\tMODE\tTTL\tSTALE-IF-ERROR\tTHRESHOLD\tTEMPLATES\tCHANGED BY\tFALSE HITS (SHADOW)")
	for _, r := range list.Routes {
		by := "-"
		if r.Overridden {
			by = r.UpdatedBy
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%g\t%v\t%s\t%s\n", r.Name, r.Path, r.Mode, r.TTL, r.StaleIfError, r.Threshold, r.Templates, by,
			r.Shadow.summary())
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if detail && len(list.Routes) == 1 && list.Routes[0].Shadow != nil {
		printShadow(w, list.Routes[0].Shadow)
	}
	return nil
}
