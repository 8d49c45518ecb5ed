package app

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/edgecache/edgecache/cmd/internal/pipeline"
)

// upstreamsCmd is `edgecache upstreams list | drain POOL/TARGET | undrain
// POOL/TARGET | weight POOL/TARGET N|default | audit [POOL/TARGET]`,
// mirroring /admin/upstreams and its run-time changes.
func upstreamsCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	ac, err := parseAdminCommand("upstreams", `Usage: edgecache upstreams [flags] list | drain POOL/TARGET | undrain POOL/TARGET | weight POOL/TARGET N|default | audit [POOL/TARGET]
  drain: the target gets no new requests (those in flight finish), on every replica of the region
  weight: its share in the pool instead of the configured weight; "default" returns to the configured one`, args, stderr)
	if ac == nil || err != nil {
		return err
	}
	c, asJSON, rest := ac.c, ac.asJSON, ac.rest
	var raw json.RawMessage
	switch cmd := rest[0]; {
	case cmd == "list" && len(rest) == 1:
		if err := c.do(ctx, http.MethodGet, "/admin/upstreams", nil, nil, &raw); err != nil {
			return err
		}
		if asJSON {
			_, err := fmt.Fprintln(stdout, string(raw))
			return err
		}
		return printPools(stdout, raw)
	case (cmd == "drain" || cmd == "undrain") && len(rest) == 2:
		err = c.setTarget(ctx, rest[1], fmt.Sprintf(`{"drain": %v}`, cmd == "drain"), &raw)
	case cmd == "weight" && len(rest) == 3:
		body := `{"weight": null}`
		if rest[2] != "default" {
			n, perr := strconv.Atoi(rest[2])
			if perr != nil || n < 1 {
				return fmt.Errorf("upstreams weight: %q: want a whole number ≥ 1 or default", rest[2])
			}
			body = fmt.Sprintf(`{"weight": %d}`, n)
		}
		err = c.setTarget(ctx, rest[1], body, &raw)
	case cmd == "audit" && len(rest) <= 2:
		q := url.Values{}
		if len(rest) == 2 {
			q.Set("target", rest[1])
		}
		err = c.do(ctx, http.MethodGet, "/admin/upstreams/audit", q, nil, &raw)
	default:
		ac.usage()
		return fmt.Errorf("upstreams: bad arguments %q", rest)
	}
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, string(raw))
	return err
}

// setTarget sends a run-time change of the target named POOL/TARGET.
func (c *adminClient) setTarget(ctx context.Context, target, body string, out *json.RawMessage) error {
	pool, name, ok := strings.Cut(target, "/")
	if !ok || pool == "" || name == "" {
		return fmt.Errorf("upstreams: %q: want POOL/TARGET (edgecache upstreams list shows them)", target)
	}
	return c.do(ctx, http.MethodPut, "/admin/upstreams/"+url.PathEscape(pool)+"/targets/"+url.PathEscape(name), nil, strings.NewReader(body), out)
}

// printPools shows each pool and its targets: health, drain, weights,
// load, latency estimate and breaker.
func printPools(w io.Writer, raw json.RawMessage) error {
	var res struct {
		Pools []pipeline.PoolStatus `json:"pools"`
	}
	if err := json.Unmarshal(raw, &res); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "POOL\tTARGET\tHEALTH\tTRAFFIC\tWEIGHT\tIN FLIGHT\tLATENCY\tBREAKER\tCHANGED BY")
	for _, p := range res.Pools {
		for _, t := range p.Targets {
			health, traffic := "healthy", "on"
			if !t.Healthy {
				health = "UNHEALTHY"
			}
			if p.HealthCheck == nil {
				health = "not checked"
			}
			if t.Drained {
				traffic = "DRAINED"
			}
			base, weight := t.Weight, strconv.Itoa(t.Weight)
			if t.RuntimeWeight > 0 {
				base, weight = t.RuntimeWeight, fmt.Sprintf("%d (configured %d)", t.RuntimeWeight, t.Weight)
			}
			if t.Effective < float64(base) {
				weight += fmt.Sprintf(", %.2f in slow start", t.Effective)
			}
			inflight := strconv.FormatInt(t.InFlight, 10)
			if t.MaxConcurrency > 0 {
				inflight += "/" + strconv.Itoa(t.MaxConcurrency)
			}
			by := t.UpdatedBy
			if by == "" {
				by = "-"
			}
			fmt.Fprintf(tw, "%s (%s)\t%s\t%s\t%s\t%s\t%s\t%.0f ms\t%s\t%s\n", p.Name, p.Balance, t.Name, health, traffic, weight,
				inflight, t.LatencyMS, t.Breaker, by)
		}
	}
	return tw.Flush()
}
