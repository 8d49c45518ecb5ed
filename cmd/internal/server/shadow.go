package server

import (
	"context"
	"fmt"

	"github.com/labstack/echo/v4"
)

// ShadowPurger is an optional capability of an AdminAPI: deleting from the
// semantic index, in one action, the stored answers that shadow
// verification found served wrongly on a route (its journaled
// shadow-disagreement records). The value marshals to JSON as
//
//	{"route": "chat", "disagreements": 12, "answers": 3,
//	 "semantic_points_deleted": 3, "warning": "..."}
type ShadowPurger interface {
	PurgeDisagreements(ctx context.Context, route, who string) (any, error)
}

// registerShadow serves POST /admin/routes/{name}/shadow/purge and the
// review page's form for it, when api is a ShadowPurger.
func registerShadow(g *echo.Group, api AdminAPI, rv *review) {
	sp, ok := api.(ShadowPurger)
	if !ok {
		return
	}
	g.POST("/routes/:name/shadow/purge", func(c echo.Context) error {
		return adminReply(c, func() (any, error) {
			return sp.PurgeDisagreements(c.Request().Context(), c.Param("name"), AdminUser(c))
		})
	})
	g.POST("/ui/routes/:name/shadow/purge", func(c echo.Context) error {
		name := c.Param("name")
		_, back, err := form(c)
		if err != nil {
			return redirect(c, back, "Route "+name+": "+err.Error(), true)
		}
		res, err := sp.PurgeDisagreements(c.Request().Context(), name, AdminUser(c))
		if err != nil {
			return redirect(c, back, "Route "+name+": disagreements not purged: "+adminMessage(err), true)
		}
		var out struct {
			Disagreements int    `json:"disagreements"`
			Answers       int    `json:"answers"`
			Deleted       int    `json:"semantic_points_deleted"`
			Warning       string `json:"warning"`
		}
		_ = decodeAs(res, &out) // the purge happened; the details are a nicety
		msg := fmt.Sprintf("Route %s: %d disagreement(s) on %d stored answer(s); %d semantic point(s) deleted", name,
			out.Disagreements, out.Answers, out.Deleted)
		if out.Warning != "" {
			msg += "; warning: " + out.Warning
		}
		return redirect(c, back, msg+" (by "+AdminUser(c)+").", out.Warning != "")
	}, rv.guard)
}
