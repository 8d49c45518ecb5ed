package pipeline

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/edgecache/edgecache/cmd/internal/openai"
	"github.com/edgecache/edgecache/degrade/admission"
)

// Quota is a set of token-bucket quotas: local (admission.Buckets) or
// held in Redis for the region (admission.Global).
type Quota interface {
	Reserve(ctx context.Context, tokens int64, subjects ...admission.Subject) admission.Decision
	Settle(ctx context.Context, estimated, actual int64, subjects ...admission.Subject)
}

// TenantInfo is what the configuration says about an API key's owner.
type TenantInfo struct {
	Name   string
	Lane   admission.Lane
	Limits *admission.Limits // nil: the tenant-dimension default
}

// AdmissionConfig configures own quotas, lanes and self-protection.
type AdmissionConfig struct {
	Quota     Quota                // nil: no quotas
	Protector *admission.Protector // nil: no self-protection
	// Tenants by API key, as the client sends it (not by KeyID: that
	// changes with the secret, see Pipeline.SetSecret).
	Tenants map[string]TenantInfo
	// DefaultLane of requests from keys that belong to no tenant.
	DefaultLane admission.Lane
	// TrustLaneHeader takes the lane from X-Edgecache-Lane.
	TrustLaneHeader bool
	// Credits are usage credits per window (requests charged at
	// admission, cache hits included; tokens from the upstream's usage
	// after the answer); nil: none.
	Credits *admission.Credits
}

// CodeInsufficientQuota is the error code of a request refused because a
// usage credit is spent until its window ends (OpenAI's code for a spent
// quota; the type stays rate_limit_error, Anthropic's rate_limit_error).
const CodeInsufficientQuota = "insufficient_quota"

// admitted is a request that passed admission: what to settle afterwards.
type admitted struct {
	lane     admission.Lane
	subjects []admission.Subject
	// subjectBuf backs subjects: a request has at most three (tenant, key,
	// client IP), so the admitted request is one allocation.
	subjectBuf [3]admission.Subject
	tokens     int64
	entered    bool
	// who the usage credits are charged to, and what Spend charged (nil:
	// nothing to settle).
	who    admission.CreditCaller
	credit *admission.CreditCharge
}

// KeyID is the identity of an API key in quotas, tenants and logs: an HMAC
// under the server secret, never the key.
func KeyID(secret []byte, key string) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(key))
	return macID("k:", m.Sum(nil))
}

// admit applies self-protection and own quotas. When it refuses, it has
// written the honest answer (503 or 429 with Retry-After) and journaled it.
func (p *Pipeline) admit(w http.ResponseWriter, r *http.Request, rt *Route, req *openai.Request, bodyLen int, c caller) (*admitted, bool) {
	cfg := p.cfg.Admission
	if cfg == nil {
		return &admitted{lane: admission.Paid}, true
	}
	a := &admitted{lane: cfg.DefaultLane}
	a.subjects = a.subjectBuf[:0]
	var keyID string
	if c.known {
		keyID = c.keyID()
		if t, ok := cfg.Tenants[clientKey(r)]; ok {
			a.lane, a.who.Tenant = t.Lane, t.Name
			a.subjects = append(a.subjects, admission.Subject{Dim: admission.DimTenant, ID: t.Name, Limits: t.Limits})
		}
		a.subjects = append(a.subjects, admission.Subject{Dim: admission.DimKey, ID: keyID})
	}
	if cfg.TrustLaneHeader {
		if l, err := admission.ParseLane(r.Header.Get("X-Edgecache-Lane")); err == nil {
			a.lane = l
		}
	}
	if ip := clientIP(r); ip != "" {
		a.subjects = append(a.subjects, admission.Subject{Dim: admission.DimIP, ID: ip})
	}
	if err := cfg.Protector.Enter(a.lane); err != nil {
		retry := 1
		if d, ok := admission.RetryAfter(err); ok {
			retry = admission.RetryAfterSeconds(d)
		}
		p.m.Shed(a.lane.String(), "shed")
		p.logShed(r.Context(), a.lane.String(), "shed", time.Duration(retry)*time.Second)
		w.Header().Set("X-Edgecache-Degraded", "busy")
		w.Header().Set("X-Edgecache-Degraded-Reason", "shed")
		openai.WriteError(w, http.StatusServiceUnavailable, retry, openai.NewError(openai.TypeUnavailable, "server_overloaded", "",
			"This edge is overloaded right now and sheds "+a.lane.String()+" traffic first. Retry in "+strconv.Itoa(retry)+" s."))
		p.journal(r, refusedPending(rt, req, keyID, a.lane), "shed", &Failure{Reason: "shed"}, http.StatusServiceUnavailable, time.Duration(retry)*time.Second, nil)
		return nil, false
	}
	a.entered = true
	a.who.Key, a.who.Lane = keyID, a.lane
	if req != nil && !p.charge(w, r, rt, a, req, bodyLen) {
		cfg.Protector.Leave()
		return nil, false
	}
	return a, true
}

// charge spends the request's usage credits, then reserves its token
// buckets, and sets the x-ratelimit-* headers of the tightest of them.
// When one refuses it has written the 429, journaled it, and given back
// the credits a refused request did not use.
func (p *Pipeline) charge(w http.ResponseWriter, r *http.Request, rt *Route, a *admitted, req *openai.Request, bodyLen int) bool {
	cfg := p.cfg.Admission
	var cd admission.CreditDecision
	if cfg.Credits != nil {
		cd, a.credit = cfg.Credits.Spend(r.Context(), a.who)
		if !cd.Allowed {
			// Credits return when the window ends, hours away: an SDK's
			// retries in seconds would only hold its caller (the OpenAI
			// SDKs obey this header).
			w.Header().Set("X-Should-Retry", "false")
			p.refuse(w, r, refusedPending(rt, req, a.who.Key, a.lane), a.lane, CodeInsufficientQuota, cd.RetryAfter, cd.Message(), cd.Headers)
			return false
		}
	}
	if cfg.Quota == nil {
		// Without credits cd is the zero decision (not allowed): its
		// headers would put a Retry-After on a 200.
		if cfg.Credits != nil {
			cd.Headers(w.Header().Set)
		}
		return true
	}
	a.tokens = openai.EstimateTokens(req, bodyLen)
	d := cfg.Quota.Reserve(r.Context(), a.tokens, a.subjects...)
	d.Requests, d.Tokens = admission.Tighter(d.Requests, cd.Requests), admission.Tighter(d.Tokens, cd.Tokens)
	if !d.Allowed {
		if a.credit != nil {
			cfg.Credits.Settle(context.WithoutCancel(r.Context()), a.credit, 0, true)
			a.credit = nil
		}
		p.refuse(w, r, refusedPending(rt, req, a.who.Key, a.lane), a.lane, admission.CodeRateLimitExceeded, d.RetryAfter, d.Message(), d.Headers)
		return false
	}
	d.Headers(w.Header().Set)
	return true
}

// refusedPending is what the journal keeps of a request refused at
// admission; built only then, most requests being admitted.
func refusedPending(rt *Route, req *openai.Request, keyID string, lane admission.Lane) *pending {
	// A copy: the journal may keep it past the request, and the caller's
	// request can then stay on its stack (serveAlias builds one per hit).
	cp := *req
	return &pending{rt: rt, req: &cp, ns: keyID, lane: lane.String()}
}

// refuse answers a request over one of its own limits: 429 in the route's
// error shape with the limit's headers and Retry-After, counted, logged
// and journaled (rung shed, the code as reason).
func (p *Pipeline) refuse(w http.ResponseWriter, r *http.Request, pd *pending, lane admission.Lane, code string,
	wait time.Duration, msg string, headers func(set func(name, value string))) {
	p.m.Shed(lane.String(), code)
	p.logShed(r.Context(), lane.String(), code, wait)
	headers(w.Header().Set)
	retry := admission.RetryAfterSeconds(wait)
	openai.WriteError(w, http.StatusTooManyRequests, retry, openai.NewError(openai.TypeRateLimit, code, "", msg))
	p.journal(r, pd, "shed", &Failure{Reason: code, RetryAfter: wait}, http.StatusTooManyRequests, time.Duration(retry)*time.Second, nil)
}

// done settles the quotas with the tokens really used (0 for a cache hit:
// the model did no work) and leaves self-protection.
func (p *Pipeline) done(ctx context.Context, a *admitted, actual int64) {
	cfg := p.cfg.Admission
	if cfg == nil || a == nil {
		return
	}
	if cfg.Quota != nil && a.tokens > 0 && actual >= 0 {
		cfg.Quota.Settle(context.WithoutCancel(ctx), a.tokens, actual, a.subjects...)
	}
	if a.credit != nil && actual > 0 { // the tokens the model used; a hit used none
		cfg.Credits.Settle(context.WithoutCancel(ctx), a.credit, actual, false)
	}
	if a.entered {
		cfg.Protector.Leave()
	}
}

// clientIP is the peer address (a proxy in front is trusted only through
// its own configuration, not through X-Forwarded-For).
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return strings.TrimSpace(r.RemoteAddr)
	}
	return host
}

// overloadSymptom reports whether an attempt's failure says the upstream is
// saturated (what the adaptive limit reacts to).
//
// Only the target's own failures are: a caller's key that draws 429s or
// 5xx (a tenant-attributed outcome, degrade.Breaker) must not shrink the
// limit every other tenant shares. With callers' keys forwarded, the
// limit follows the time to first token instead.
func overloadSymptom(o outcome) bool {
	if o.tenantAnswer || o.evidence() != "" {
		return false
	}
	switch {
	case o.reason == "timeout", o.reason == "unreachable":
		return true
	case o.att.Status == http.StatusTooManyRequests, o.att.Status == http.StatusServiceUnavailable:
		return true
	}
	return false
}

// admissionReason names an upstream-admission refusal for the ladder.
func admissionReason(err error) string {
	if errors.Is(err, admission.ErrQueueTimeout) {
		return "queued_timeout"
	}
	return "shed"
}
