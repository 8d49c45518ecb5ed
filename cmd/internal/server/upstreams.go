package server

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"
)

// TargetChanger is an optional capability of an AdminAPI: an operator's
// run-time weight and drain of an upstream pool's target, shared by the
// region's replicas and audited with the route policies. body is a JSON
// object with "weight" (≥ 1, or null for the configured weight) and
// "drain" (true or false); the value marshals to JSON as
//
//	{"pool": "fleet", "name": "fleet-0", "weight": 1, "runtime_weight": 3,
//	 "drained": false, "version": 4, "updated_at": "…", "updated_by": "alice"}
type TargetChanger interface {
	SetTarget(ctx context.Context, pool, name, who string, body []byte) (any, error)
}

// registerTargets serves PUT (and PATCH) /admin/upstreams/{pool}/targets/{name},
// GET /admin/upstreams/audit (the audit trail's target changes; ?target=
// pool/name for one) and the review page's form, when api is a
// TargetChanger.
func registerTargets(g *echo.Group, api AdminAPI, rv *review) {
	tc, ok := api.(TargetChanger)
	if !ok {
		return
	}
	set := func(c echo.Context) error {
		body, err := io.ReadAll(io.LimitReader(c.Request().Body, 64<<10))
		if err != nil {
			return adminReply(c, func() (any, error) { return nil, &BadQuery{Msg: "unreadable body"} })
		}
		return adminReply(c, func() (any, error) {
			return tc.SetTarget(c.Request().Context(), c.Param("pool"), c.Param("name"), AdminUser(c), body)
		})
	}
	g.PUT("/upstreams/:pool/targets/:name", set)
	g.PATCH("/upstreams/:pool/targets/:name", set)
	g.GET("/upstreams/audit", func(c echo.Context) error {
		q := url.Values{"since": {c.QueryParam("since")}, "limit": {c.QueryParam("limit")}, "route": {"upstreams"}}
		if t := c.QueryParam("target"); t != "" {
			q.Set("route", t)
		}
		return adminReply(c, func() (any, error) { return api.RouteAudit(c.Request().Context(), q) })
	})
	g.POST("/ui/upstreams/:pool/targets/:name", func(c echo.Context) error { return rv.target(c, tc) }, rv.guard)
}

// target applies the review page's target form: action "drain" or
// "undrain", or "weight" with the weight field (empty: the configured
// weight).
func (rv *review) target(c echo.Context, tc TargetChanger) error {
	pool, name := c.Param("pool"), c.Param("name")
	label := "Target " + pool + "/" + name
	f, back, err := form(c)
	if err != nil {
		return redirectTo(c, back, label+": "+err.Error(), true, "pools")
	}
	patch := map[string]any{}
	var what string
	switch f.Get("action") {
	case "drain":
		patch["drain"], what = true, "drained"
	case "undrain":
		patch["drain"], what = false, "takes traffic again"
	case "weight":
		w := strings.TrimSpace(f.Get("weight"))
		if w == "" {
			patch["weight"], what = nil, "back to its configured weight"
			break
		}
		n, err := strconv.Atoi(w)
		if err != nil {
			return redirectTo(c, back, label+" not changed: weight "+strconv.Quote(w)+" is not a whole number", true, "pools")
		}
		patch["weight"], what = n, fmt.Sprintf("weight %d", n)
	default:
		return redirectTo(c, back, label+": unknown action", true, "pools")
	}
	body, _ := json.Marshal(patch) // plain values: cannot fail
	if _, err := tc.SetTarget(c.Request().Context(), pool, name, AdminUser(c), body); err != nil {
		return redirectTo(c, back, label+" not changed: "+adminMessage(err), true, "pools")
	}
	return redirectTo(c, back, label+": "+what+" (by "+AdminUser(c)+").", false, "pools")
}
