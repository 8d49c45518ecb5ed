package server

import (
	"crypto/sha256"
	"crypto/subtle"
	"net"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/edgecache/edgecache/cmd/internal/openai"
)

// Token is a named admin bearer token. The name is what the audit trail
// records; the token itself is never logged.
type Token struct {
	Name  string
	Token string
}

// AdminAuth guards the operator endpoints (/admin/*, the review page).
// Health, readiness and metrics stay open for probes and scrapers.
type AdminAuth struct {
	// Required is true when the admin listener is not on loopback: then
	// every operator request needs a valid bearer token.
	Required bool
	tokens   []hashedToken
}

type hashedToken struct {
	name string
	sum  [32]byte
}

// NewAdminAuth builds the guard for an admin listener at addr.
func NewAdminAuth(addr string, tokens []Token) *AdminAuth {
	a := &AdminAuth{Required: !IsLoopback(addr)}
	for _, t := range tokens {
		a.tokens = append(a.tokens, hashedToken{name: t.Name, sum: sha256.Sum256([]byte(t.Token))})
	}
	return a
}

// IsLoopback reports whether a listen address only accepts local
// connections (127.0.0.0/8, ::1, localhost).
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// identify returns the token's name for a request, "" when none matches.
// Every configured token is compared, in constant time, so timing says
// nothing about which one nearly matched.
func (a *AdminAuth) identify(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) < 7 || !strings.EqualFold(h[:7], "bearer ") {
		return ""
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(h[7:])))
	name := ""
	for _, t := range a.tokens {
		if subtle.ConstantTimeCompare(sum[:], t.sum[:]) == 1 {
			name = t.name
		}
	}
	return name
}

// adminUserKey holds the authenticated token name in the echo context.
const adminUserKey = "edgecache.admin_user"

// AdminUser returns who made an admin request: the token's name, or
// "local" on a loopback listener without a token.
func AdminUser(c echo.Context) string {
	if s, ok := c.Get(adminUserKey).(string); ok {
		return s
	}
	return ""
}

func (a *AdminAuth) middleware() echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			name := a.identify(c.Request())
			if name == "" && a.Required {
				msg := "This admin endpoint needs a bearer token (Authorization: Bearer <token>)."
				if len(a.tokens) == 0 {
					msg = "No admin tokens are configured (EDGECACHE_ADMIN_TOKENS): admin endpoints are closed on a non-loopback listener."
				}
				c.Response().Header().Set("WWW-Authenticate", `Bearer realm="edgecache-admin"`)
				openai.WriteError(c.Response(), http.StatusUnauthorized, 0, openai.NewError(openai.TypeInvalidRequest, "unauthorized", "", msg))
				return nil
			}
			if name == "" {
				// Token-less access is for local tools only: a request for a
				// foreign host name on the loopback port is DNS rebinding.
				if !IsLoopback(c.Request().Host) {
					msg := "This admin listener is on loopback and answers token-less requests only for a loopback host name (127.0.0.1, [::1], localhost)."
					openai.WriteError(c.Response(), http.StatusMisdirectedRequest, 0, openai.NewError(openai.TypeInvalidRequest, "misdirected_request", "", msg))
					return nil
				}
				name = "local"
			}
			c.Set(adminUserKey, name)
			return next(c)
		}
	}
}
