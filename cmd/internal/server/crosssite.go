package server

import (
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/edgecache/edgecache/cmd/internal/openai"
)

// Cross-site requests to the admin listener.
//
// The admin listener needs no token on loopback, so any web page the
// operator visits could otherwise make the browser send state changes to
// 127.0.0.1:9090: a cross-origin fetch in no-cors mode or a form post is
// sent without asking the server first (a CORS "simple request"; only its
// answer is hidden from the page). Such requests are refused:
//
//   - Sec-Fetch-Site other than same-origin or none (every browser since
//     2023 sends it), else an Origin whose host is not the request's Host:
//     http.CrossOriginProtection;
//   - an Origin that is not this listener's, even where Sec-Fetch-Site
//     says same-origin;
//   - on the JSON API, a body type other than JSON (text/plain, form
//     encodings): the types a page can send cross-origin without a
//     preflight. A request without Content-Type is allowed.
//
// A request with none of these headers (curl, edgecache routes, scripts)
// is not a browser being tricked and is allowed. GET, HEAD and OPTIONS
// change nothing and pass; the API answers no CORS preflight, so a
// cross-origin page can never send it JSON.

var crossOrigin = http.NewCrossOriginProtection()

// crossSite returns why a request is a state change a browser sent for
// another site, or nil.
func crossSite(r *http.Request) error {
	if err := crossOrigin.Check(r); err != nil {
		if s := r.Header.Get("Sec-Fetch-Site"); s != "" {
			return fmt.Errorf("the browser sent it from another site (Sec-Fetch-Site: %s)", s)
		}
		return fmt.Errorf("its Origin %q is not this listener's (host %s)", r.Header.Get("Origin"), r.Host)
	}
	if safeMethod(r.Method) {
		return nil
	}
	if o := r.Header.Get("Origin"); o != "" {
		if u, err := url.Parse(o); err != nil || u.Host != r.Host {
			return fmt.Errorf("its Origin %q is not this listener's (host %s)", o, r.Host)
		}
	}
	return nil
}

func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

// jsonOnly returns an error unless the request's body type, when it has
// one, is JSON.
func jsonOnly(r *http.Request) error {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return nil
	}
	if mt, _, err := mime.ParseMediaType(ct); err == nil && (mt == "application/json" || strings.HasSuffix(mt, "+json")) {
		return nil
	}
	return fmt.Errorf("Content-Type %q is not JSON", ct)
}

// refuseCrossSite guards the admin JSON API's state changes; it answers 403
// in the OpenAI error shape. The review page's forms (/admin/ui) have their
// own guard, which answers in HTML and expects form encodings.
func refuseCrossSite() echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			r := c.Request()
			if safeMethod(r.Method) || c.Path() == "/admin/ui" || strings.HasPrefix(c.Path(), "/admin/ui/") {
				return next(c)
			}
			if err := crossSite(r); err != nil {
				openai.WriteError(c.Response(), http.StatusForbidden, 0, openai.NewError(openai.TypeInvalidRequest, "cross_site_request", "",
					"Cross-site request refused: "+err.Error()+". The admin API takes changes only from non-browser clients "+
						"(curl, edgecache routes) and from this listener's own review page."))
				return nil
			}
			if err := jsonOnly(r); err != nil {
				openai.WriteError(c.Response(), http.StatusForbidden, 0, openai.NewError(openai.TypeInvalidRequest, "content_type_refused", "",
					"Request refused: "+err.Error()+". The admin API takes JSON bodies only (Content-Type: application/json, "+
						"e.g. curl -H 'Content-Type: application/json' -d '{...}'): a form or text/plain body is what another site's page can send."))
				return nil
			}
			return next(c)
		}
	}
}
