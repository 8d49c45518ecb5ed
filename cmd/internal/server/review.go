package server

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/edgecache/edgecache/cmd/internal/pipeline"
	"github.com/edgecache/edgecache/degrade/journal"
)

// The review page is one server-rendered HTML page (html/template, no
// JavaScript, no build step) at /admin/ui, embedded in the binary:
//
//   - Degraded answers: the journal, filtered by a GET form (since, until,
//     route, tenant, rung, reason, limit — the query of /admin/degradations).
//   - Routes: each route's policy, with a POST form per route (mode, ttl,
//     stale_if_error, templates; Apply, Reset, Purge), and on semantic
//     routes the false-hit rate measured by shadow verification: the
//     estimate, its interval, the budget, and a button that purges the
//     answers found wrong from the semantic index.
//   - Upstreams: breaker and concurrency limiter state per target.
//   - Cache: hit ratio per tier and route, and the tokens and estimated
//     cost cache hits saved per route and for the top tenants, when the
//     AdminAPI implements CacheStatser.
//
// It reads the same values the JSON API serves (through their JSON form),
// so the page cannot drift from what /admin/* and the CLI show. POST
// handlers answer 303 See Other back to the page with a flash message in the
// query string (Post/Redirect/Get); validation errors are shown on the page.
//
// Protection, beyond the bearer tokens of AdminAuth:
//
//   - Cross-site requests: every POST must be same-origin. Browsers send
//     Sec-Fetch-Site or Origin with a form POST; crossSite (the admin API's
//     check, built on http.CrossOriginProtection) rejects a cross-origin
//     one, and when neither is sent a Referer that is present must name
//     this host. A POST without any of them (curl, a
//     script) is not a browser being tricked and is allowed. This matters on
//     a loopback listener, where no token is needed and any web page the
//     operator visits could otherwise post a form to 127.0.0.1:9090.
//   - DNS rebinding: without a token (loopback listener) the Host header
//     must itself be a loopback name or address, so a hostile name that
//     resolves to 127.0.0.1 gets nothing.
//   - The page is never framed (CSP frame-ancestors 'none', X-Frame-Options)
//     so the buttons cannot be clickjacked; the CSP allows no script at all
//     and only the page's own inline style (by hash); answers are not cached.

//go:embed ui/review.html ui/review.css
var uiFiles embed.FS

// CacheStatser is an optional capability of an AdminAPI: cumulative cache
// lookups by route and tier, for the review page's Cache section. The value
// must marshal to JSON as
//
//	{"since": "<RFC 3339 time counting started>",
//	 "tiers": [{"route": "chat", "tier": "l1", "hits": 12, "misses": 30}, ...]}
//
// where each row counts the lookups that consulted that tier (hits +
// misses), tiers listed in lookup order (l1, l2, semantic). An optional
// "saved" list gives what hits saved per route and tenant:
//
//	"saved": [{"route": "chat", "tenant": "t:…", "hits": 3, "input_tokens": 120,
//	           "output_tokens": 400, "cost": 0.00047, "currency": "USD"}, ...]
type CacheStatser interface {
	CacheStats() any
}

// journalFilters are the query parameters of the journal form, in the order
// the page shows them.
var journalFilters = []string{"since", "until", "route", "tenant", "rung", "reason", "limit"}

// review serves the page.
type review struct {
	api  AdminAPI
	page *template.Template
	css  template.CSS
	csp  string
}

// registerReview adds the operators' review page under /admin/ui (behind
// the same auth as the admin API).
func registerReview(g *echo.Group, api AdminAPI) {
	rv, err := newReview(api)
	if err != nil {
		panic(err) // the embedded template is part of the binary: a test catches this
	}
	g.GET("/ui", rv.show, rv.guard)
	g.GET("/ui/", rv.show, rv.guard)
	g.POST("/ui/routes/:name", rv.patch, rv.guard)
	g.POST("/ui/routes/:name/purge", rv.purge, rv.guard)
	registerShadow(g, api, rv)
	registerTargets(g, api, rv)
}

func newReview(api AdminAPI) (*review, error) {
	css, err := uiFiles.ReadFile("ui/review.css")
	if err != nil {
		return nil, err
	}
	page, err := template.New("review.html").Funcs(template.FuncMap{
		"fmtTime": func(t time.Time) string {
			if t.IsZero() {
				return ""
			}
			return t.UTC().Format("2006-01-02 15:04:05")
		},
		"fmtDur": func(d time.Duration) string {
			if d == 0 {
				return ""
			}
			return d.Round(time.Millisecond).String()
		},
		"shortDur": shortDuration,
		"pct":      func(f float64) float64 { return 100 * f },
		"has": func(list []string, s string) bool {
			for _, v := range list {
				if v == s {
					return true
				}
			}
			return false
		},
	}).ParseFS(uiFiles, "ui/review.html")
	if err != nil {
		return nil, fmt.Errorf("review page template: %w", err)
	}
	sum := sha256.Sum256(css)
	return &review{
		api: api, page: page, css: template.CSS(css),
		csp: "default-src 'none'; style-src 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'; " +
			"img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
	}, nil
}

// guard sets the page's security headers and refuses rebinding and
// cross-site requests (see the package comment above).
func (rv *review) guard(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		h := c.Response().Header()
		h.Set("Content-Security-Policy", rv.csp)
		h.Set("X-Frame-Options", "DENY")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "same-origin")
		h.Set("Cache-Control", "no-store")
		r := c.Request() // (DNS rebinding is refused by AdminAuth)
		if r.Method == http.MethodPost {
			if err := rv.sameOrigin(r); err != nil {
				return refuse(c, http.StatusForbidden, "Cross-site form submission refused: "+err.Error()+
					". Open the review page on this host and submit the form from there.")
			}
		}
		return next(c)
	}
}

// sameOrigin is the CSRF check of POSTs: Sec-Fetch-Site and Origin through
// crossSite, then a Referer when a browser sent only that.
func (rv *review) sameOrigin(r *http.Request) error {
	if err := crossSite(r); err != nil {
		return err
	}
	if r.Header.Get("Sec-Fetch-Site") != "" || r.Header.Get("Origin") != "" {
		return nil // decided above
	}
	ref := r.Header.Get("Referer")
	if ref == "" {
		return nil // not a browser: nobody to trick
	}
	u, err := url.Parse(ref)
	if err != nil || u.Host != r.Host {
		return errors.New("the Referer is another site")
	}
	return nil
}

// refuse answers a small HTML page (this is a browser-facing path).
func refuse(c echo.Context, status int, msg string) error {
	var b strings.Builder
	b.WriteString("<!doctype html><meta charset=\"utf-8\"><title>edgecache review</title><p>")
	template.HTMLEscape(&b, []byte(msg))
	b.WriteString("</p>\n")
	return c.HTML(status, b.String())
}

// Views of the admin API's JSON: only the fields the page shows.

type recordView struct {
	Time              time.Time `json:"time"`
	RequestID         string    `json:"request_id"`
	Tenant            string    `json:"tenant"`
	Route             string    `json:"route"`
	Upstream          string    `json:"upstream"`
	Rung              string    `json:"rung"`
	Reason            string    `json:"reason"`
	UpstreamStatus    int       `json:"upstream_status"`
	ErrorClass        string    `json:"error_class"`
	Status            int       `json:"status"`
	RetryAfterSeconds int       `json:"retry_after_s"`
	Attempts          []struct {
		Target         string `json:"target"`
		Status         int    `json:"status"`
		DurationMillis int64  `json:"duration_ms"`
		Error          string `json:"error"`
	} `json:"attempts"`
}

// AttemptsDetail lists the attempts for the cell's tooltip.
func (r recordView) AttemptsDetail() string {
	parts := make([]string, 0, len(r.Attempts))
	for _, a := range r.Attempts {
		s := a.Target
		if a.Status != 0 {
			s += " " + strconv.Itoa(a.Status)
		}
		s += " in " + strconv.FormatInt(a.DurationMillis, 10) + " ms"
		if a.Error != "" {
			s += " (" + a.Error + ")"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "; ")
}

type journalView struct {
	Records []recordView `json:"degradations"`
	Count   int          `json:"count"`
	Warning string       `json:"warning"`
	Error   string       `json:"-"`
}

type routeView struct {
	Name         string    `json:"name"`
	Path         string    `json:"path"`
	API          string    `json:"api"`
	Mode         string    `json:"mode"`
	TTL          string    `json:"ttl"`
	StaleIfError string    `json:"stale_if_error"`
	Threshold    float64   `json:"threshold"`
	Floor        float64   `json:"floor"`
	Templates    bool      `json:"templates"`
	Generation   int64     `json:"generation"`
	Overridden   bool      `json:"overridden"`
	Version      int64     `json:"version"`
	UpdatedAt    time.Time `json:"updated_at"`
	UpdatedBy    string    `json:"updated_by"`
	// Shadow is the route's shadow verification (semantic routes).
	Shadow *shadowView `json:"shadow"`
}

// shadowView is a route's measured false-hit rate of semantic hits: the
// "shadow" object of GET /admin/routes/{name}.
type shadowView struct{ pipeline.ShadowStats }

// State is over (the upper bound over a budget), under, or none (nothing
// judged yet, or no budget): the badge on the page.
func (v shadowView) State() string {
	switch {
	case v.Judged == 0 || v.MaxFalseHitRate <= 0:
		return "none"
	case v.Upper > v.MaxFalseHitRate:
		return "over"
	}
	return "under"
}

type upstreamView struct {
	Target  string `json:"target"`
	Breaker struct {
		State      string    `json:"state"`
		OpenUntil  time.Time `json:"open_until"`
		Trips      int       `json:"trips_in_a_row"`
		Requests   int       `json:"window_requests"`
		Failures   int       `json:"window_failures"`
		LastReason string    `json:"last_reason"`
	} `json:"breaker"`
	RequestsInFlight int64   `json:"requests_in_flight"`
	RetriesInFlight  int64   `json:"retries_in_flight"`
	CooldownSeconds  float64 `json:"cooldown_remaining_s"`
	// Limiter is admission.ConcurrencyStats, which has no JSON tags.
	Limiter *struct {
		Limit    int           `json:"Limit"`
		InFlight int           `json:"InFlight"`
		Queued   int           `json:"Queued"`
		TTFT     time.Duration `json:"TTFT"`
	} `json:"limiter"`
}

type cacheView struct {
	Since string `json:"since"`
	Tiers []struct {
		Route  string `json:"route"`
		Tier   string `json:"tier"`
		Hits   uint64 `json:"hits"`
		Misses uint64 `json:"misses"`
	} `json:"tiers"`
	Saved []savedRow `json:"saved"`
}

// savedRow is what cache hits saved on a route (for a tenant).
type savedRow struct {
	Route        string  `json:"route"`
	Tenant       string  `json:"tenant"`
	Hits         int64   `json:"hits"`
	InputTokens  int64   `json:"input_tokens"`
	OutputTokens int64   `json:"output_tokens"`
	Cost         float64 `json:"cost"`
	Currency     string  `json:"currency"`
}

// Tokens is input and output tokens saved.
func (r savedRow) Tokens() int64 { return r.InputTokens + r.OutputTokens }

// topTenants is how many tenants the page lists.
const topTenants = 10

// savedViews sums rows per route and picks the tenants that saved most.
func savedViews(rows []savedRow) (routes, tenants []savedRow) {
	byRoute := map[string]int{}
	byTenant := map[string]int{}
	for _, r := range rows {
		i, ok := byRoute[r.Route]
		if !ok {
			i = len(routes)
			byRoute[r.Route] = i
			routes = append(routes, savedRow{Route: r.Route})
		}
		routes[i] = addSaved(routes[i], r)
		j, ok := byTenant[r.Tenant]
		if !ok {
			j = len(tenants)
			byTenant[r.Tenant] = j
			tenants = append(tenants, savedRow{Tenant: r.Tenant})
		}
		tenants[j] = addSaved(tenants[j], r)
	}
	sortSaved := func(v []savedRow) {
		sort.SliceStable(v, func(a, b int) bool { return v[a].Tokens() > v[b].Tokens() })
	}
	sortSaved(routes)
	sortSaved(tenants)
	if len(tenants) > topTenants {
		tenants = tenants[:topTenants]
	}
	return routes, tenants
}

func addSaved(a, r savedRow) savedRow {
	a.Hits += r.Hits
	a.InputTokens += r.InputTokens
	a.OutputTokens += r.OutputTokens
	a.Cost += r.Cost
	if a.Currency == "" {
		a.Currency = r.Currency
	} else if r.Currency != "" && r.Currency != a.Currency {
		a.Currency = "mixed"
	}
	return a
}

// poolRow is one upstream pool of /admin/upstreams, for the Pools section.
type poolRow struct {
	pipeline.PoolStatus
	// ReadOnly: the AdminAPI cannot change targets (no forms).
	ReadOnly bool `json:"-"`
}

// cacheRow adds the ratio for the template.
type cacheRow struct {
	Route, Tier           string
	Hits, Misses, Lookups uint64
	Ratio                 float64
}

type pageData struct {
	CSS        template.CSS
	User       string
	Now        time.Time
	Flash      string
	FlashError string
	Filter     struct{ Since, Until, Route, Tenant, Rung, Reason, Limit string }
	// Back is the journal filter as a query string, carried through the
	// route forms so the page comes back as it was.
	Back       string
	Rungs      []string
	Modes      []string
	RouteNames []string
	Journal    journalView
	Routes     []routeView
	Upstreams  []upstreamView
	Pools      []poolRow
	Cache      *struct {
		Since string
		Tiers []cacheRow
		// SavedRoutes and SavedTenants: tokens and cost saved by hits,
		// per route and for the top tenants.
		SavedRoutes, SavedTenants []savedRow
	}
}

// decodeAs reads an admin API value through its JSON form.
func decodeAs(v any, dst any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, dst)
}

// show renders the page. A bad journal filter answers 400 with the page and
// the message in the journal section; the other sections still render.
func (rv *review) show(c echo.Context) error {
	ctx := c.Request().Context()
	q := c.QueryParams()
	d := pageData{CSS: rv.css, User: AdminUser(c), Now: time.Now(), Flash: q.Get("flash"), FlashError: q.Get("flash_error"),
		Modes: []string{"off", "exact", "semantic"}}
	filter := url.Values{}
	for _, k := range journalFilters {
		if v := strings.TrimSpace(q.Get(k)); v != "" {
			filter.Set(k, v)
		}
	}
	d.Filter.Since, d.Filter.Until, d.Filter.Route = filter.Get("since"), filter.Get("until"), filter.Get("route")
	d.Filter.Tenant, d.Filter.Rung, d.Filter.Reason, d.Filter.Limit = filter.Get("tenant"), filter.Get("rung"), filter.Get("reason"), filter.Get("limit")
	d.Back = filter.Encode()
	for _, r := range journal.Rungs() {
		d.Rungs = append(d.Rungs, string(r))
	}

	status := http.StatusOK
	res, err := rv.api.Degradations(ctx, filter)
	var bq *BadQuery
	switch {
	case errors.As(err, &bq):
		status, d.Journal.Error = http.StatusBadRequest, "Filter not applied: "+bq.Msg
	case err != nil:
		status, d.Journal.Error = http.StatusInternalServerError, "The journal could not be read: "+err.Error()
	default:
		if err := decodeAs(res, &d.Journal); err != nil {
			status, d.Journal.Error = http.StatusInternalServerError, "The journal answer could not be read: "+err.Error()
		}
	}

	var routes struct {
		Routes []routeView `json:"routes"`
	}
	if err := decodeAs(rv.api.Routes(), &routes); err != nil {
		return fmt.Errorf("review page: routes: %w", err)
	}
	d.Routes = routes.Routes
	for _, r := range d.Routes {
		d.RouteNames = append(d.RouteNames, r.Name)
	}
	var ups struct {
		Upstreams []upstreamView `json:"upstreams"`
		Pools     []poolRow      `json:"pools"`
	}
	if err := decodeAs(rv.api.Upstreams(), &ups); err != nil {
		return fmt.Errorf("review page: upstreams: %w", err)
	}
	d.Upstreams, d.Pools = ups.Upstreams, ups.Pools
	if _, ok := rv.api.(TargetChanger); !ok {
		for i := range d.Pools {
			d.Pools[i].ReadOnly = true
		}
	}

	if cs, ok := rv.api.(CacheStatser); ok {
		var cv cacheView
		if err := decodeAs(cs.CacheStats(), &cv); err != nil {
			return fmt.Errorf("review page: cache stats: %w", err)
		}
		d.Cache = &struct {
			Since                     string
			Tiers                     []cacheRow
			SavedRoutes, SavedTenants []savedRow
		}{Since: cv.Since}
		d.Cache.SavedRoutes, d.Cache.SavedTenants = savedViews(cv.Saved)
		for _, t := range cv.Tiers {
			row := cacheRow{Route: t.Route, Tier: t.Tier, Hits: t.Hits, Misses: t.Misses, Lookups: t.Hits + t.Misses}
			if row.Lookups > 0 {
				row.Ratio = float64(t.Hits) / float64(row.Lookups)
			}
			d.Cache.Tiers = append(d.Cache.Tiers, row)
		}
	}

	var buf bytes.Buffer
	if err := rv.page.Execute(&buf, d); err != nil {
		return fmt.Errorf("review page: %w", err)
	}
	return c.HTMLBlob(status, buf.Bytes())
}

// maxFormBytes bounds a route form's body.
const maxFormBytes = 64 << 10

// form parses a POSTed form (bounded) and returns it with the journal
// filter to return to.
func form(c echo.Context) (url.Values, url.Values, error) {
	r := c.Request()
	r.Body = http.MaxBytesReader(c.Response(), r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		return nil, url.Values{}, errors.New("the form could not be read: " + err.Error())
	}
	back := url.Values{}
	if q, err := url.ParseQuery(r.PostForm.Get("back")); err == nil {
		for _, k := range journalFilters {
			if v := q.Get(k); v != "" {
				back.Set(k, v)
			}
		}
	}
	return r.PostForm, back, nil
}

// redirect answers 303 back to the page with the journal filter and a flash
// message (ok or error).
func redirect(c echo.Context, back url.Values, msg string, failed bool) error {
	return redirectTo(c, back, msg, failed, "routes")
}

// redirectTo is redirect to the page's section anchor.
func redirectTo(c echo.Context, back url.Values, msg string, failed bool, anchor string) error {
	q := url.Values{}
	for k, v := range back {
		q[k] = v
	}
	if failed {
		q.Set("flash_error", msg)
	} else {
		q.Set("flash", msg)
	}
	return c.Redirect(http.StatusSeeOther, "/admin/ui?"+q.Encode()+"#"+anchor)
}

// adminMessage is the operator-facing text of an admin API error.
func adminMessage(err error) string {
	var bq *BadQuery
	var nf *NotFound
	switch {
	case errors.As(err, &bq):
		return bq.Msg
	case errors.As(err, &nf):
		return nf.Msg
	}
	return err.Error()
}

// patch applies a route form: only the fields that differ from the policy in
// force are sent, so an unchanged field does not become an override. The
// form carries the policy version it was rendered from; a form older than
// the policy is refused rather than silently undoing someone's change.
func (rv *review) patch(c echo.Context) error {
	name := c.Param("name")
	f, back, err := form(c)
	if err != nil {
		return redirect(c, back, "Route "+name+": "+err.Error(), true)
	}
	cur, err := rv.route(name)
	if err != nil {
		return redirect(c, back, "Route "+name+": "+adminMessage(err), true)
	}
	if v := f.Get("version"); v != "" && v != strconv.FormatInt(cur.Version, 10) {
		return redirect(c, back, fmt.Sprintf("Route %s changed since this page was loaded (now version %d, by %s): nothing was applied; review it and apply again.",
			name, cur.Version, cur.UpdatedBy), true)
	}

	patch := map[string]any{}
	var changed []string
	if f.Get("action") == "reset" {
		for _, k := range []string{"mode", "ttl", "stale_if_error", "threshold", "floor", "degraded_floor", "templates"} {
			patch[k] = nil
		}
		changed = append(changed, "reset to the configuration file")
	} else {
		if m := f.Get("mode"); m != "" && m != cur.Mode {
			patch["mode"] = m
			changed = append(changed, "mode "+m)
		}
		for _, fd := range []struct{ key, cur string }{{"ttl", cur.TTL}, {"stale_if_error", cur.StaleIfError}} {
			if v := strings.TrimSpace(f.Get(fd.key)); v != "" && !sameDuration(v, fd.cur) {
				patch[fd.key] = v
				changed = append(changed, fd.key+" "+v)
			}
		}
		if on := f.Get("templates") != ""; on != cur.Templates {
			patch["templates"] = on
			changed = append(changed, "templates "+map[bool]string{true: "on", false: "off"}[on])
		}
	}
	if len(patch) == 0 {
		return redirect(c, back, "Route "+name+": nothing changed.", false)
	}
	body, err := json.Marshal(patch)
	if err != nil {
		return err
	}
	if _, err := rv.api.PatchRoute(c.Request().Context(), name, AdminUser(c), body); err != nil {
		return redirect(c, back, "Route "+name+" not changed: "+adminMessage(err), true)
	}
	return redirect(c, back, "Route "+name+": "+strings.Join(changed, ", ")+" (by "+AdminUser(c)+").", false)
}

// purge makes the route's cached answers unreachable.
func (rv *review) purge(c echo.Context) error {
	name := c.Param("name")
	_, back, err := form(c)
	if err != nil {
		return redirect(c, back, "Route "+name+": "+err.Error(), true)
	}
	res, err := rv.api.PurgeRoute(c.Request().Context(), name, AdminUser(c))
	if err != nil {
		return redirect(c, back, "Route "+name+" not purged: "+adminMessage(err), true)
	}
	var out struct {
		Route   routeView `json:"route"`
		Points  *int      `json:"semantic_points_deleted"`
		Warning string    `json:"warning"`
	}
	_ = decodeAs(res, &out) // the purge happened; the details are a nicety
	msg := fmt.Sprintf("Route %s purged: key generation %d", name, out.Route.Generation)
	if out.Points != nil {
		msg += fmt.Sprintf(", %d semantic point(s) deleted", *out.Points)
	}
	if out.Warning != "" {
		msg += "; warning: " + out.Warning
	}
	return redirect(c, back, msg+" (by "+AdminUser(c)+").", out.Warning != "")
}

func (rv *review) route(name string) (routeView, error) {
	var v routeView
	res, err := rv.api.Route(name)
	if err != nil {
		return v, err
	}
	return v, decodeAs(res, &v)
}

// sameDuration reports whether a form value names the duration shown as
// cur ("10m" and "10m0s" are the same); a value that does not parse is
// "different", so the API's validation message reaches the operator.
func sameDuration(v, cur string) bool {
	a, err1 := time.ParseDuration(v)
	b, err2 := time.ParseDuration(cur)
	return err1 == nil && err2 == nil && a == b
}

// shortDuration shows a duration as an operator would type it: "1h0m0s" is
// "1h", "10m30s" stays. A value that does not parse is shown as it is.
func shortDuration(s string) string {
	d, err := time.ParseDuration(s)
	if err != nil || d == 0 {
		return s
	}
	out := d.String()
	if strings.HasSuffix(out, "m0s") {
		out = strings.TrimSuffix(out, "0s")
	}
	if strings.HasSuffix(out, "h0m") {
		out = strings.TrimSuffix(out, "0m")
	}
	return out
}
