// Package server is edgecache's HTTP edge: the proxy routes on the data
// listener and health, readiness and metrics on the admin listener. It is the
// only package that imports echo; handlers are thin and hand requests to the
// framework-free pipeline.
package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/edgecache/edgecache/cmd/internal/openai"
	"github.com/edgecache/edgecache/cmd/internal/pipeline"
)

// Routes returns the current policy snapshot of the named route.
type Routes interface {
	Route(name string) *pipeline.Route
}

// Observer measures proxied requests (telemetry.Metrics).
type Observer interface {
	Begin()
	End(route, method string, status int, d time.Duration)
}

// echoPath writes a route path's {name} segments as echo's :name.
func echoPath(p string) string {
	segs := strings.Split(p, "/")
	for i, s := range segs {
		if name, ok := strings.CutPrefix(s, "{"); ok {
			segs[i] = ":" + strings.TrimSuffix(name, "}")
		}
	}
	return strings.Join(segs, "/")
}

// Data builds the data-plane handler: one echo route per configured route.
// Paths not configured answer 404 in the OpenAI error shape, and admin paths
// are never served here. Each request gets an access log line per access.
func Data(p *pipeline.Pipeline, routes []*pipeline.Route, table Routes, obs Observer, log *slog.Logger, access AccessLog) http.Handler {
	e := bareEcho(log)
	d := dataRoutes{e: e, mw: []echo.MiddlewareFunc{recoverer(log), requestID(), access.middleware(log)}, allow: map[string][]string{}}
	for _, rt := range routes {
		h := routeHandler(p, rt.Name, table, obs)
		path := echoPath(rt.Path)
		switch {
		case rt.API == openai.APIModels:
			d.add(h, rt.Path, http.MethodGet)
			d.add(h, rt.Path+"/:model", http.MethodGet)
		case rt.API == openai.APIResponses:
			d.add(h, path, http.MethodPost)
			d.add(h, path+"/*", http.MethodGet, http.MethodDelete, http.MethodPost) // /{id}, /{id}/cancel, /{id}/input_items
		default:
			d.add(h, path, http.MethodPost)
			if rt.API == openai.APIChat && rt.Jobs.Enabled {
				d.add(h, path+"/jobs/*", http.MethodGet, http.MethodDelete) // Prefer: respond-async jobs
			}
		}
	}
	d.options()
	// Unmatched paths (404) and wrong methods (405) are counted under
	// http.route "unmatched": a client calling a path no route serves shows
	// on /metrics. The data-plane handlers above never return errors, so
	// every error here is the router's; it goes through the middlewares
	// here, since echo calls the error handler outside them.
	answer := e.HTTPErrorHandler
	counted := func(err error, c echo.Context) {
		start := time.Now()
		obs.Begin()
		answer(err, c)
		obs.End(UnmatchedRoute, c.Request().Method, c.Response().Status, time.Since(start))
	}
	e.HTTPErrorHandler = func(err error, c echo.Context) {
		if pipeline.RequestLogFrom(c.Request().Context()) != nil {
			counted(err, c) // inside the chain already
			return
		}
		_ = chain(func(c echo.Context) error { counted(err, c); return nil }, d.mw)(c)
	}
	return e
}

// routeHandler serves one configured route: the pipeline, its metrics, and
// the status the access log reports.
func routeHandler(p *pipeline.Pipeline, name string, table Routes, obs Observer) echo.HandlerFunc {
	return func(c echo.Context) error {
		noteRoute(c, name)
		start := time.Now()
		obs.Begin()
		p.Serve(c.Response(), c.Request(), table.Route(name))
		status := c.Response().Status
		if !c.Response().Committed {
			// Nothing written: protect aborts the answer when the
			// client has gone (499, as nginx logs it) and answers 500
			// otherwise.
			status = http.StatusInternalServerError
			if c.Request().Context().Err() != nil {
				status = statusClientClosed
			}
		}
		obs.End(name, c.Request().Method, status, time.Since(start))
		noteStatus(c, status)
		return nil
	}
}

// dataRoutes registers the data plane's handlers with their middlewares
// composed once, at registration. Why not echo's Use: echo composes those
// again on every request, a closure per middleware (three allocations of
// every cache hit). OPTIONS on a route's path is answered as echo's router
// would (204 and Allow), through the same middlewares.
type dataRoutes struct {
	e     *echo.Echo
	mw    []echo.MiddlewareFunc
	allow map[string][]string // path → its methods
}

func (d *dataRoutes) add(h echo.HandlerFunc, path string, methods ...string) {
	h = chain(h, d.mw)
	for _, m := range methods {
		d.e.Add(m, path, h)
		d.allow[path] = append(d.allow[path], m)
	}
}

func (d *dataRoutes) options() {
	for path, methods := range d.allow {
		allow := strings.Join(append([]string{http.MethodOptions}, methods...), ", ")
		d.e.OPTIONS(path, chain(func(c echo.Context) error {
			c.Response().Header().Set(echo.HeaderAllow, allow)
			return c.NoContent(http.StatusNoContent)
		}, d.mw))
	}
}

// chain wraps h in mw, the first outermost, as echo's Use would.
func chain(h echo.HandlerFunc, mw []echo.MiddlewareFunc) echo.HandlerFunc {
	for i := len(mw) - 1; i >= 0; i-- {
		h = mw[i](h)
	}
	return h
}

// UnmatchedRoute is the http.route of requests no route matched.
const UnmatchedRoute = "unmatched"

// statusClientClosed is nginx's status for a request whose client left
// before the answer: it is recorded, never sent.
const statusClientClosed = 499

// Readiness reports the state of dependencies for /readyz.
type Readiness func() map[string]any

// AdminAPI answers the operator endpoints. Query errors that are the
// caller's fault are *BadQuery.
type AdminAPI interface {
	// Upstreams reports each target's breaker, limiter and cooldown state.
	Upstreams() any
	// Degradations queries the journal with the request's query string.
	Degradations(ctx context.Context, q url.Values) (any, error)

	// Routes lists the route policies in force; Route shows one.
	Routes() any
	Route(name string) (any, error)
	// PatchRoute changes a route's policy; who is the admin token's name.
	PatchRoute(ctx context.Context, name, who string, body []byte) (any, error)
	// PurgeRoute makes the route's cached answers unreachable.
	PurgeRoute(ctx context.Context, name, who string) (any, error)
	// RouteAudit lists policy changes (route, since, limit).
	RouteAudit(ctx context.Context, q url.Values) (any, error)
	// CacheEntry shows the entry under an exact key; EvictEntry removes it.
	CacheEntry(ctx context.Context, key string) (any, error)
	EvictEntry(ctx context.Context, key string) error
	// PurgeCache purges a route or a tenant namespace (JSON body).
	PurgeCache(ctx context.Context, who string, body []byte) (any, error)
}

// NotFound is an admin object that does not exist (404).
type NotFound struct{ Msg string }

func (e *NotFound) Error() string { return e.Msg }

// BadQuery is an admin query the caller got wrong (400).
type BadQuery struct{ Msg string }

func (e *BadQuery) Error() string { return e.Msg }

// Admin builds the admin handler: /healthz, /readyz, /metrics and the
// operator API under /admin.
//
// Operator endpoints go through auth: on a listener that is not loopback
// they need a named bearer token. Their state changes refuse cross-site
// browser requests (see refuseCrossSite).
func Admin(metrics http.Handler, ready Readiness, api AdminAPI, auth *AdminAuth, log *slog.Logger) http.Handler {
	e := newEcho(log)
	if api != nil {
		g := e.Group("/admin", auth.middleware(), refuseCrossSite())
		g.GET("/upstreams", func(c echo.Context) error { return c.JSON(http.StatusOK, api.Upstreams()) })
		registerReview(g, api)
		registerPprof(g)
		g.GET("/degradations", func(c echo.Context) error {
			return adminReply(c, func() (any, error) { return api.Degradations(c.Request().Context(), c.QueryParams()) })
		})
		g.GET("/routes", func(c echo.Context) error { return c.JSON(http.StatusOK, api.Routes()) })
		g.GET("/routes/audit", func(c echo.Context) error {
			return adminReply(c, func() (any, error) { return api.RouteAudit(c.Request().Context(), c.QueryParams()) })
		})
		g.GET("/routes/:name", func(c echo.Context) error {
			return adminReply(c, func() (any, error) { return api.Route(c.Param("name")) })
		})
		g.PATCH("/routes/:name", func(c echo.Context) error {
			body, err := io.ReadAll(io.LimitReader(c.Request().Body, 1<<20))
			if err != nil {
				return adminReply(c, func() (any, error) { return nil, &BadQuery{Msg: "unreadable body"} })
			}
			return adminReply(c, func() (any, error) {
				return api.PatchRoute(c.Request().Context(), c.Param("name"), AdminUser(c), body)
			})
		})
		g.POST("/routes/:name/purge", func(c echo.Context) error {
			return adminReply(c, func() (any, error) { return api.PurgeRoute(c.Request().Context(), c.Param("name"), AdminUser(c)) })
		})
		g.POST("/cache/purge", func(c echo.Context) error {
			body, _ := io.ReadAll(io.LimitReader(c.Request().Body, 1<<20))
			return adminReply(c, func() (any, error) { return api.PurgeCache(c.Request().Context(), AdminUser(c), body) })
		})
		g.GET("/cache/:key", func(c echo.Context) error {
			return adminReply(c, func() (any, error) { return api.CacheEntry(c.Request().Context(), c.Param("key")) })
		})
		g.DELETE("/cache/:key", func(c echo.Context) error {
			return adminReply(c, func() (any, error) {
				return map[string]string{"evicted": c.Param("key")}, api.EvictEntry(c.Request().Context(), c.Param("key"))
			})
		})
	}
	e.GET("/healthz", func(c echo.Context) error {
		return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
	})
	e.GET("/readyz", func(c echo.Context) error {
		body := map[string]any{"status": "ready"}
		for k, v := range ready() {
			body[k] = v
		}
		return c.JSON(http.StatusOK, body)
	})
	e.GET("/metrics", echo.WrapHandler(metrics))
	return e
}

// registerPprof serves the runtime profiles under /admin/debug/pprof/,
// behind the same token as the rest of /admin: a CPU profile of a loaded
// replica is how a slow path is found, and the profiles reveal enough of
// the process (stacks, heap) that they are never on the data port.
//
// A trace is written while it is taken (?seconds=N, N > write_timeout
// allowed), so its answer is a stream for the write deadlines.
func registerPprof(g *echo.Group) {
	g.GET("/debug/pprof/profile", echo.WrapHandler(http.HandlerFunc(pprof.Profile)))
	g.GET("/debug/pprof/trace", echo.WrapHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		markStreaming(w)
		pprof.Trace(w, r)
	})))
	for _, name := range []string{"heap", "allocs", "goroutine", "mutex", "block", "threadcreate"} {
		g.GET("/debug/pprof/"+name, echo.WrapHandler(pprof.Handler(name)))
	}
}

// adminReply answers an admin call: 400 for a bad query, 404 for a
// missing object, the JSON value otherwise.
func adminReply(c echo.Context, f func() (any, error)) error {
	v, err := f()
	var bq *BadQuery
	var nf *NotFound
	switch {
	case errors.As(err, &bq):
		openai.WriteError(c.Response(), http.StatusBadRequest, 0, openai.NewError(openai.TypeInvalidRequest, "invalid_request", "", bq.Msg))
		return nil
	case errors.As(err, &nf):
		openai.WriteError(c.Response(), http.StatusNotFound, 0, openai.NewError(openai.TypeInvalidRequest, "not_found", "", nf.Msg))
		return nil
	case err != nil:
		return err
	}
	return c.JSON(http.StatusOK, v)
}

func newEcho(log *slog.Logger) *echo.Echo {
	e := bareEcho(log)
	e.Use(recoverer(log), requestID())
	return e
}

// bareEcho is an echo answering its own errors in the OpenAI shape, with
// no middleware (Data composes its own per route).
func bareEcho(log *slog.Logger) *echo.Echo {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = errorHandler(log)
	return e
}

// errorHandler answers framework errors (unknown path, wrong method) in the
// OpenAI error shape.
func errorHandler(log *slog.Logger) echo.HTTPErrorHandler {
	return func(err error, c echo.Context) {
		if c.Response().Committed {
			return
		}
		status := http.StatusInternalServerError
		msg := "Internal error."
		if he, ok := err.(*echo.HTTPError); ok {
			status = he.Code
			msg = fmt.Sprint(he.Message)
		} else {
			log.ErrorContext(c.Request().Context(), "handler error", "path", c.Request().URL.Path, "err", err)
		}
		code := "not_found"
		switch status {
		case http.StatusNotFound:
			msg = "Unknown path " + strconv.Quote(c.Request().URL.Path) + "."
		case http.StatusMethodNotAllowed:
			code = "method_not_allowed"
			msg = "Method " + c.Request().Method + " is not allowed on " + strconv.Quote(c.Request().URL.Path) + "."
		default:
			code = "internal_error"
		}
		typ := openai.TypeInvalidRequest
		if status >= 500 {
			typ = openai.TypeServer
		}
		openai.WriteError(c.Response(), status, 0, openai.NewError(typ, code, "", msg))
	}
}

// recoverer turns a panic into a logged 500 (in the OpenAI shape when nothing
// was written yet) so no panic reaches a client as a dropped connection.
func recoverer(log *slog.Logger) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) (err error) {
			defer func() {
				if v := recover(); v != nil {
					if v == http.ErrAbortHandler {
						panic(v)
					}
					log.ErrorContext(c.Request().Context(), "panic serving request", "path", c.Request().URL.Path, "panic", v)
					if !c.Response().Committed {
						openai.WriteError(c.Response(), http.StatusInternalServerError, 0,
							openai.NewError(openai.TypeServer, "internal_error", "", "Internal error; it has been logged."))
					}
					err = nil
				}
			}()
			return next(c)
		}
	}
}

// requestID gives every response an X-Request-Id: the client's when it sent
// one, else a process-unique id.
func requestID() echo.MiddlewareFunc {
	var prefix [4]byte
	_, _ = rand.Read(prefix[:])
	pfx := "ec-" + hex.EncodeToString(prefix[:]) + "-"
	var n atomic.Uint64
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			id := c.Request().Header.Get("X-Request-Id")
			if id == "" || len(id) > 128 {
				var buf [40]byte
				id = string(strconv.AppendUint(append(buf[:0], pfx...), n.Add(1), 36))
				// Also on the request: the upstream and the journal see it.
				c.Request().Header.Set("X-Request-Id", id)
			}
			c.Response().Header().Set("X-Request-Id", id)
			// In the context: every log line of the request carries it.
			r := c.Request()
			ctx, _ := pipeline.NewRequestLog(r.Context(), id)
			c.SetRequest(r.WithContext(ctx))
			return next(c)
		}
	}
}
