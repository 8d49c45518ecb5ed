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

// degradations is `edgecache degradations`: the journal, newest first.
func degradations(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("edgecache degradations", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := adminFlags(fs)
	since := fs.String("since", "1h", "how far back: a duration (1h, 30m) or an RFC 3339 time")
	until := fs.String("until", "", "up to: a duration back from now or an RFC 3339 time")
	route := fs.String("route", "", "only this route")
	tenant := fs.String("tenant", "", "only this tenant namespace")
	rung := fs.String("rung", "", "only this rung (stale, semantic-nearest, template, busy, stream-truncated, shed, …)")
	reason := fs.String("reason", "", "only this reason (upstream_503, timeout, breaker_open, …)")
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
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%d\t%s\n", r.Time.Local().Format("2006-01-02 15:04:05"), r.Route, r.Rung,
			r.Reason, r.Status, ra, len(r.Attempts), r.RequestID)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%d record(s)\n", len(res.Degradations))
	return nil
}
