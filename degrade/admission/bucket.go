package admission

import (
	"fmt"
	"math"
	"strconv"
	"time"
)

// Dimension is what a quota is keyed by.
type Dimension uint8

// The dimensions. IDs are used verbatim (in memory and as Redis keys): pass
// a hash of an API key, never the key itself.
const (
	DimKey    Dimension = iota // an API key (hashed by the caller)
	DimTenant                  // a tenant
	DimIP                      // a client IP address
)

const numDims = 3

var dimNames = [numDims]string{"key", "tenant", "ip"}

// String returns "key", "tenant" or "ip"; the Redis key layout uses it.
func (d Dimension) String() string {
	if int(d) < numDims {
		return dimNames[d]
	}
	return "dim(" + strconv.Itoa(int(d)) + ")"
}

// Kind is the quantity a bucket meters.
type Kind uint8

// The kinds; the zero Kind means "none".
const (
	KindRequests Kind = iota + 1
	KindTokens
)

// String returns "requests", "tokens" or "" for the zero Kind.
func (k Kind) String() string {
	switch k {
	case KindRequests:
		return "requests"
	case KindTokens:
		return "tokens"
	}
	return ""
}

// Limits is one subject's quota: a request bucket and a token bucket. A
// bucket starts full, refills continuously at its rate and holds at most its
// burst. A zero rate leaves that kind unlimited.
type Limits struct {
	// RequestsPerSecond is the steady request rate. If zero, requests are
	// not limited.
	RequestsPerSecond float64
	// RequestBurst is the request bucket's capacity. If zero, it defaults to
	// max(1, ceil(RequestsPerSecond)).
	RequestBurst int64
	// TokensPerMinute is the steady rate of estimated tokens (prompt +
	// max completion). If zero, tokens are not limited.
	TokensPerMinute int64
	// TokenBurst is the token bucket's capacity. If zero, it defaults to
	// TokensPerMinute (one minute's worth).
	TokenBurst int64
	// Shadow counts would-be rejections of this rule without enforcing it.
	Shadow bool
}

// Validate reports negative or non-finite values.
func (l Limits) Validate() error {
	if l.RequestsPerSecond < 0 || math.IsNaN(l.RequestsPerSecond) || math.IsInf(l.RequestsPerSecond, 0) {
		return fmt.Errorf("requests_per_second %v: want a finite value ≥ 0", l.RequestsPerSecond)
	}
	if l.RequestBurst < 0 || l.TokensPerMinute < 0 || l.TokenBurst < 0 {
		return fmt.Errorf("negative request_burst, tokens_per_minute or token_burst")
	}
	return nil
}

// Rules are the default Limits of each dimension.
type Rules struct {
	Key    Limits
	Tenant Limits
	IP     Limits
}

func (r *Rules) of(d Dimension) *Limits {
	switch d {
	case DimKey:
		return &r.Key
	case DimTenant:
		return &r.Tenant
	case DimIP:
		return &r.IP
	}
	return nil
}

// Validate validates each dimension's Limits.
func (r Rules) Validate() error {
	for d := range Dimension(numDims) {
		if err := r.of(d).Validate(); err != nil {
			return fmt.Errorf("%s: %w", d, err)
		}
	}
	return nil
}

// Subject is one quota a request is charged to.
type Subject struct {
	Dim Dimension
	ID  string
	// Limits, if not nil, replace the configured default of Dim for this
	// subject (e.g. a tenant's own quota from its configuration).
	Limits *Limits
}

// rule is a Limits normalised for the arithmetic: rates per second, bursts
// as floats, zero rate = unlimited.
type rule struct {
	reqRate, reqBurst float64
	tokRate, tokBurst float64
	shadow            bool
}

// rule normalises l, scaled by share (1 for the limit itself, 1/replicas
// for Global's fallback). Scaled bursts are floored but at least 1, so a
// share never rounds a limit up.
func (l *Limits) rule(share float64, shadow bool) rule {
	r := rule{shadow: shadow || l.Shadow}
	if l.RequestsPerSecond > 0 {
		b := float64(l.RequestBurst)
		if b == 0 {
			b = max(1, math.Ceil(l.RequestsPerSecond))
		}
		r.reqRate = l.RequestsPerSecond * share
		r.reqBurst = max(1, math.Floor(b*share))
	}
	if l.TokensPerMinute > 0 {
		b := float64(l.TokenBurst)
		if b == 0 {
			b = float64(l.TokensPerMinute)
		}
		r.tokRate = float64(l.TokensPerMinute) / 60 * share
		r.tokBurst = max(1, math.Floor(b*share))
	}
	return r
}

func (r *rule) unlimited() bool { return r.reqRate == 0 && r.tokRate == 0 }

// epsilon absorbs float rounding so a retry at exactly RetryAfter succeeds.
const epsilon = 1e-9

// level is a bucket's content v at time at (Unix nanoseconds). A zero at
// means the bucket was never used: it is full.
type level struct {
	v  float64
	at int64
}

// value is the content at now: refilled at rate (per second), capped at
// burst. Time that runs backwards refills nothing.
func (l level) value(now int64, rate, burst float64) float64 {
	if l.at == 0 {
		return burst
	}
	v := l.v
	if d := now - l.at; d > 0 {
		v += float64(d) / 1e9 * rate
	}
	return min(v, burst)
}

// set stores v at now; time never moves backwards in a bucket.
func (l *level) set(now int64, v float64) {
	l.v = v
	l.at = max(l.at, now)
}

// entry is one subject's pair of buckets.
type entry struct {
	req, tok level
	fullAt   int64 // when both buckets will be full again: the entry is then disposable
}

// check is what one entry says about one request.
type check struct {
	req, tok float64 // levels at now, before the request
	wait     float64 // seconds until the request fits; 0 = fits now
	kind     Kind    // the bucket that needs wait
}

// check computes, without changing e, whether one request of cost tokens
// fits under r at now, and if not, how long until it does. A cost above the
// token burst needs a full bucket (and then leaves it in debt), so a large
// request is delayed, never refused forever.
func (e *entry) check(now int64, r *rule, cost float64) check {
	var c check
	if r.reqRate > 0 {
		c.req = e.req.value(now, r.reqRate, r.reqBurst)
		if c.req < 1-epsilon {
			c.wait, c.kind = (1-c.req)/r.reqRate, KindRequests
		}
	}
	if r.tokRate > 0 {
		c.tok = e.tok.value(now, r.tokRate, r.tokBurst)
		if need := min(cost, r.tokBurst); c.tok < need-epsilon {
			if w := (need - c.tok) / r.tokRate; w > c.wait {
				c.wait, c.kind = w, KindTokens
			}
		}
	}
	return c
}

// take charges one request of cost tokens, from the levels c computed at now.
func (e *entry) take(now int64, r *rule, c check, cost float64) {
	if r.reqRate > 0 {
		e.req.set(now, c.req-1)
	}
	if r.tokRate > 0 {
		e.tok.set(now, c.tok-cost)
	}
	e.fullAt = fullAt(now, r, e.req.v, e.tok.v)
}

// fullAt is when buckets at levels req and tok at now are both full.
func fullAt(now int64, r *rule, req, tok float64) int64 {
	var s float64
	if r.reqRate > 0 {
		s = (r.reqBurst - req) / r.reqRate
	}
	if r.tokRate > 0 {
		s = max(s, (r.tokBurst-tok)/r.tokRate)
	}
	return now + int64(math.Ceil(max(s, 0)*1e9))
}

// seconds converts a float number of seconds to a Duration, rounded up to
// the microsecond so that waiting it out is always enough.
func seconds(s float64) time.Duration {
	if s <= 0 {
		return 0
	}
	return time.Duration(math.Ceil(s*1e6)) * time.Microsecond
}

// Quota is one bucket's state for the x-ratelimit-* headers.
type Quota struct {
	Limit     int64         // the bucket's capacity (burst); 0 = no such limit
	Remaining int64         // whole units left now
	Reset     time.Duration // until the bucket is full again
}

func quotaOf(lvl, rate, burst float64) Quota {
	return Quota{
		Limit:     int64(burst),
		Remaining: int64(math.Floor(max(lvl, 0) + epsilon)),
		Reset:     seconds((burst - lvl) / rate),
	}
}

// tighter reports whether q leaves less room than cur (which may be unset).
func (q Quota) tighter(cur Quota) bool {
	if cur.Limit == 0 {
		return true
	}
	if q.Remaining != cur.Remaining {
		return q.Remaining < cur.Remaining
	}
	return q.Reset > cur.Reset
}

// Limit names a quota: which dimension, which kind.
type Limit struct {
	Dim  Dimension
	Kind Kind // zero: no limit
}

// String returns e.g. "tenant_tokens"; empty for the zero Kind. It is a
// bounded label for metrics and the journal.
func (l Limit) String() string {
	if l.Kind == 0 {
		return ""
	}
	return l.Dim.String() + "_" + l.Kind.String()
}

// Decision is a quota check's answer. It is a plain value, safe to copy.
type Decision struct {
	// Allowed is true when the request may proceed (also when only shadow
	// rules would have denied it).
	Allowed bool
	// Shadow is true when a shadow rule would have denied the request;
	// Limit and RetryAfter then describe that would-be denial.
	Shadow bool
	// RetryAfter is the exact delay until the denied request would be
	// allowed, from the bucket's real state (zero when allowed).
	RetryAfter time.Duration
	// Limit is the quota that denied the request (or would have, with
	// Shadow); the zero Limit when allowed.
	Limit Limit
	// Requests and Tokens are the tightest enforced request and token
	// quotas among the request's subjects, after the charge when allowed.
	Requests, Tokens Quota
	// Fallback is true when Global decided locally with this instance's
	// share because Redis was unavailable.
	Fallback bool
}

// Err returns nil when the decision allows, otherwise a *RateLimitError.
func (d Decision) Err() error {
	if d.Allowed {
		return nil
	}
	return &RateLimitError{Decision: d}
}

// Headers passes the rate-limit headers to set, named as OpenAI names them:
// x-ratelimit-{limit,remaining,reset}-{requests,tokens} for each limited
// kind (reset as a Go duration rounded up to the millisecond, e.g. "1.5s",
// "6m0s"), and, when denied, retry-after (whole seconds, rounded up, ≥ 1)
// and retry-after-ms (the SDKs prefer it). Use it with http.Header.Set.
func (d Decision) Headers(set func(name, value string)) {
	if q := d.Requests; q.Limit > 0 {
		set("x-ratelimit-limit-requests", strconv.FormatInt(q.Limit, 10))
		set("x-ratelimit-remaining-requests", strconv.FormatInt(q.Remaining, 10))
		set("x-ratelimit-reset-requests", formatReset(q.Reset))
	}
	if q := d.Tokens; q.Limit > 0 {
		set("x-ratelimit-limit-tokens", strconv.FormatInt(q.Limit, 10))
		set("x-ratelimit-remaining-tokens", strconv.FormatInt(q.Remaining, 10))
		set("x-ratelimit-reset-tokens", formatReset(q.Reset))
	}
	if !d.Allowed {
		set("retry-after", strconv.Itoa(RetryAfterSeconds(d.RetryAfter)))
		ms := (d.RetryAfter + time.Millisecond - 1) / time.Millisecond
		set("retry-after-ms", strconv.FormatInt(int64(max(ms, 1)), 10))
	}
}

func formatReset(d time.Duration) string {
	return ((d + time.Millisecond - 1) / time.Millisecond * time.Millisecond).String()
}

var dimPhrases = [numDims]string{"API key", "tenant", "client IP"}

// Message is an English sentence for the error body: which limit, how much
// is left, when it resets and when to retry. Templates may localise it from
// the fields instead.
func (d Decision) Message() string {
	if d.Allowed && !d.Shadow {
		return "Request allowed."
	}
	who := "request"
	if int(d.Limit.Dim) < numDims {
		who = dimPhrases[d.Limit.Dim]
	}
	q := d.Requests
	if d.Limit.Kind == KindTokens {
		q = d.Tokens
	}
	msg := fmt.Sprintf("Rate limit exceeded for this %s's %s", who, d.Limit.Kind)
	if q.Limit > 0 {
		msg += fmt.Sprintf(" (limit %d, remaining %d, resets in %s)", q.Limit, q.Remaining, formatReset(q.Reset))
	}
	return msg + fmt.Sprintf(". Please retry after %ds.", RetryAfterSeconds(d.RetryAfter))
}
