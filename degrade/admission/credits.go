package admission

// Usage credits (issue 18, item 4): a number of requests and of tokens per
// window (a day by default) for each API key, each tenant or a whole lane.
// Token buckets (Buckets, Global) smooth rates; credits cap what a caller
// may use in a window, then refuse until the window ends, and say when.
//
// Windows are aligned: the window of a rule is the interval
// [Offset + k·Window, Offset + (k+1)·Window) since the Unix epoch, so a
// 24h window with no offset resets at 00:00 UTC for every replica, whatever
// its start time. Requests are charged when admitted (a cache hit counts:
// it is a request served); tokens are added after the answer, from the
// usage the upstream reported (a cache hit adds none: the model did no
// work). A request is admitted while a rule has tokens left, so the last
// answer of a window may go past the token credit by its own usage.
//
// With Redis, the counts are the region's: one hash per rule, subject and
// window (fields r and t), checked and charged by one Lua script for all
// of a request's rules, expiring a minute after its window. Without Redis,
// or while it fails (a breaker as Global's), each replica counts alone
// against its share of every credit (credit / Replicas); when Redis
// answers again, what a replica counted alone in windows still open is
// added to the region's counts (merge), so that a caller who used its
// share during an outage does not get the whole credit again after it.

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// CreditScope is what one credit is counted per.
type CreditScope uint8

// The scopes.
const (
	ScopeKey    CreditScope = iota // each API key (its KeyID)
	ScopeTenant                    // each configured tenant
	ScopeLane                      // a whole lane: every request in it together
)

var scopeNames = []string{"key", "tenant", "lane"}

// String returns "key", "tenant" or "lane".
func (s CreditScope) String() string {
	if int(s) < len(scopeNames) {
		return scopeNames[s]
	}
	return "scope(" + strconv.Itoa(int(s)) + ")"
}

// ParseCreditScope parses a scope name.
func ParseCreditScope(s string) (CreditScope, error) {
	for i, n := range scopeNames {
		if s == n {
			return CreditScope(i), nil
		}
	}
	return 0, fmt.Errorf("admission: unknown credit scope %q (want key, tenant or lane)", s)
}

// CreditRule is one credit: at most Requests requests and Tokens tokens
// per Window for each subject of Scope, in Lane.
type CreditRule struct {
	Scope CreditScope
	// Lane restricts the rule to requests of this lane; nil: every lane.
	// A ScopeLane rule without a lane counts each lane on its own.
	Lane *Lane
	// Requests and Tokens are the credit; zero leaves that kind unlimited.
	Requests, Tokens int64
	// Window is the period after which the credit is whole again. Zero →
	// 24h.
	Window time.Duration
	// Offset moves the windows' start from 00:00 UTC (e.g. 16h: a daily
	// window resetting at midnight in UTC+8). In [0, Window).
	Offset time.Duration
}

// Validate reports a rule NewCredits would reject.
func (r CreditRule) Validate() error {
	w := r.Window
	if w == 0 {
		w = 24 * time.Hour
	}
	switch {
	case r.Requests < 0 || r.Tokens < 0:
		return errors.New("negative requests or tokens")
	case r.Requests == 0 && r.Tokens == 0:
		return errors.New("neither requests nor tokens set")
	case r.Window < 0 || r.Window > 0 && r.Window < time.Second:
		return fmt.Errorf("window %v: want at least 1s", r.Window)
	case r.Offset < 0 || r.Offset >= w:
		return fmt.Errorf("offset %v: want in [0, window)", r.Offset)
	case r.Scope > ScopeLane:
		return fmt.Errorf("unknown scope %d", r.Scope)
	}
	return nil
}

// window returns the start and end of the window holding now.
func (r *CreditRule) window(now time.Time) (start, end time.Time) {
	w, o := r.Window.Nanoseconds(), r.Offset.Nanoseconds()
	n := now.UnixNano() - o
	k := n / w
	if n < 0 && n%w != 0 {
		k-- // floor, not truncation, before the epoch (tests with old clocks)
	}
	start = time.Unix(0, k*w+o).UTC()
	return start, start.Add(r.Window)
}

// CreditCaller is who a request is charged to: its KeyID (empty without a
// key), its tenant's name (empty for keys of no tenant) and its lane.
type CreditCaller struct {
	Key, Tenant string
	Lane        Lane
}

// subject returns the id r counts caller under, false when r does not
// apply.
func (r *CreditRule) subject(c CreditCaller) (string, bool) {
	if r.Lane != nil && *r.Lane != c.Lane {
		return "", false
	}
	switch r.Scope {
	case ScopeKey:
		return c.Key, c.Key != ""
	case ScopeTenant:
		return c.Tenant, c.Tenant != ""
	case ScopeLane:
		return c.Lane.String(), true
	}
	return "", false
}

// CreditsConfig configures Credits.
type CreditsConfig struct {
	Rules []CreditRule
	// Client, if set, holds the region's counts; nil: this replica counts
	// alone, its whole credit (Replicas is ignored).
	Client redis.UniversalClient
	// Prefix starts every key; "" → "edgecache:credits:v1:".
	Prefix string
	// Region scopes the counts (a Redis Cluster hash tag); "" → "default".
	Region string
	// Timeout bounds one Redis call on the request path; zero → 20ms.
	Timeout time.Duration
	// Replicas share a credit while Redis is unavailable: each counts
	// against credit / Replicas (at least 1). Zero → 1.
	Replicas int
	Clock    Clock
	Logger   *slog.Logger // nil → slog.Default()
}

//go:embed credits.lua
var creditsLua string

// Credits enforces usage credits. It is safe for concurrent use.
type Credits struct {
	rules    []CreditRule
	client   redis.UniversalClient
	script   *redis.Script
	prefix   string
	timeout  time.Duration
	replicas int64
	clock    Clock
	log      *slog.Logger
	br       *breaker
	local    localCredits

	// unmerged: local holds counts made while Redis was configured but
	// unavailable; merging: a merge is running; no merge starts before
	// nextMerge (Unix ns: a failed merge waits a cooldown, not the next
	// request).
	unmerged, merging atomic.Bool
	nextMerge         atomic.Int64

	denied, fallbacks, merged atomic.Uint64
}

// NewCredits validates cfg and returns Credits. It does not contact Redis.
func NewCredits(cfg CreditsConfig) (*Credits, error) {
	var errs []error
	for i := range cfg.Rules {
		if cfg.Rules[i].Window == 0 {
			cfg.Rules[i].Window = 24 * time.Hour
		}
		if err := cfg.Rules[i].Validate(); err != nil {
			errs = append(errs, fmt.Errorf("credit %d: %w", i, err))
		}
	}
	if cfg.Timeout < 0 || cfg.Replicas < 0 || strings.ContainsAny(cfg.Region, "{}") {
		errs = append(errs, errors.New("negative timeout or replicas, or a brace in the region"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("admission: invalid credits: %w", err)
	}
	c := &Credits{rules: cfg.Rules, client: cfg.Client, script: redis.NewScript(creditsLua),
		prefix: cfg.Prefix, timeout: cfg.Timeout, replicas: int64(max(cfg.Replicas, 1)),
		clock: clockOr(cfg.Clock), log: cfg.Logger, br: newBreaker(DefaultFailureThreshold, int64(DefaultCooldown))}
	if c.prefix == "" {
		c.prefix = "edgecache:credits:v1:"
	}
	if cfg.Region == "" {
		cfg.Region = DefaultRegion
	}
	c.prefix += "{" + cfg.Region + "}:"
	if c.timeout == 0 {
		c.timeout = DefaultGlobalTimeout
	}
	if c.client == nil {
		c.replicas = 1
	}
	if c.log == nil {
		c.log = slog.Default()
	}
	c.local.m = map[string]*creditCount{}
	return c, nil
}

// CreditDecision is the answer of Spend.
type CreditDecision struct {
	Allowed bool
	// Exhausted is the rule that refused (nil when allowed), Kind the
	// quantity it ran out of, Reset the end of its window and RetryAfter
	// the time until then.
	Exhausted  *CreditRule
	Kind       Kind
	Reset      time.Time
	RetryAfter time.Duration
	// Requests and Tokens are the tightest credits of the request's
	// rules, after the charge (for the x-ratelimit-* headers).
	Requests, Tokens Quota
	// Fallback: decided by this replica's share (Redis unavailable).
	Fallback bool
}

// CreditCharge is what Spend charged: Settle adds the answer's tokens to
// the same windows (a window that ended since keeps them: the answer was
// admitted in it).
type CreditCharge struct {
	keys  []string
	local bool
}

// charged is one applicable rule at one time.
type charged struct {
	rule       *CreditRule
	key        string
	start, end time.Time
}

// applicable lists the rules that apply to caller at now, with their keys.
func (c *Credits) applicable(caller CreditCaller, now time.Time) []charged {
	var out []charged
	for i := range c.rules {
		r := &c.rules[i]
		id, ok := r.subject(caller)
		if !ok {
			continue
		}
		start, end := r.window(now)
		lane := "any"
		if r.Lane != nil {
			lane = r.Lane.String()
		}
		key := c.prefix + r.Scope.String() + ":" + lane + ":" + strconv.FormatInt(int64(r.Window/time.Second), 10) +
			"s:" + id + ":" + strconv.FormatInt(start.Unix(), 10)
		out = append(out, charged{rule: r, key: key, start: start, end: end})
	}
	return out
}

// Spend charges one request to every credit that applies to caller, or to
// none when one is used up (its requests, or its tokens). It never fails:
// Redis trouble falls back to this replica's share.
func (c *Credits) Spend(ctx context.Context, caller CreditCaller) (CreditDecision, *CreditCharge) {
	now := c.clock.Now()
	cs := c.applicable(caller, now)
	if len(cs) == 0 {
		return CreditDecision{Allowed: true}, nil
	}
	counts, err := c.spendRedis(ctx, cs, now)
	local := err != nil
	if local {
		c.fallbacks.Add(1)
		counts = c.local.spend(cs, c.replicas, now)
		if c.client != nil {
			c.unmerged.Store(true)
		}
	}
	d := c.decide(cs, counts, now)
	d.Fallback = local
	if !d.Allowed {
		c.denied.Add(1)
		return d, nil
	}
	ch := &CreditCharge{local: local}
	for _, x := range cs {
		ch.keys = append(ch.keys, x.key)
	}
	return d, ch
}

// decide reads the counts (requests and tokens used per rule, after the
// charge when allowed; counts[0] < 0: refused by rule -counts[0]-1 for
// kind counts[1]) into a decision.
func (c *Credits) decide(cs []charged, counts []int64, now time.Time) CreditDecision {
	d := CreditDecision{Allowed: counts[0] >= 0}
	if !d.Allowed {
		x := cs[-counts[0]-1]
		d.Exhausted, d.Kind, d.Reset = x.rule, Kind(counts[1]), x.end
		d.RetryAfter = x.end.Sub(now)
	}
	share := c.replicas
	if len(counts) > 2 && counts[2] == 0 { // answered by Redis: the whole credit
		share = 1
	}
	for i, x := range cs {
		used := counts[3+2*i:]
		reset := x.end.Sub(now)
		if l := x.rule.Requests; l > 0 {
			l = max(l/share, 1)
			if q := (Quota{l, max(l-used[0], 0), reset}); q.tighter(d.Requests) {
				d.Requests = q
			}
		}
		if l := x.rule.Tokens; l > 0 {
			l = max(l/share, 1)
			if q := (Quota{l, max(l-used[1], 0), reset}); q.tighter(d.Tokens) {
				d.Tokens = q
			}
		}
	}
	return d
}

// spendRedis runs the script; its answer is laid out as decide reads it.
func (c *Credits) spendRedis(ctx context.Context, cs []charged, now time.Time) ([]int64, error) {
	if c.client == nil {
		return nil, errNoRedis
	}
	keys := make([]string, len(cs))
	args := make([]any, 0, 1+3*len(cs))
	args = append(args, "spend")
	for i, x := range cs {
		keys[i] = x.key
		args = append(args, x.rule.Requests, x.rule.Tokens, x.end.Add(time.Minute).UnixMilli())
	}
	res, err := c.run(ctx, keys, args, now)
	if err == nil && len(res) != 3+2*len(cs) { // a script bug, not an outage: stay available
		c.log.Error("admission: credits script answer", "values", len(res), "want", 3+2*len(cs))
		return nil, errors.New("admission: credits script answer")
	}
	return res, err
}

var errNoRedis = errors.New("admission: no redis")

// run calls the script unless the breaker is open, feeding the breaker.
func (c *Credits) run(ctx context.Context, keys []string, args []any, now time.Time) ([]int64, error) {
	if !c.br.allow(now.UnixNano()) {
		return nil, errBreakerOpen
	}
	callCtx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	res, err := c.script.Run(callCtx, c.client, keys, args...).Int64Slice()
	if err != nil && !errors.Is(err, redis.Nil) {
		if ctx.Err() != nil {
			c.br.abort()
		} else if c.br.failure(c.clock.Now().UnixNano()) {
			c.log.Warn("admission: redis unavailable, usage credits are counted by each instance against its share",
				"err", err, "replicas", c.replicas)
		}
		return nil, err
	}
	if c.br.success() {
		c.log.Info("admission: redis answers again, usage credits are the region's again")
	}
	if c.unmerged.Load() && now.UnixNano() >= c.nextMerge.Load() && c.merging.CompareAndSwap(false, true) {
		go c.merge()
	}
	return res, nil
}

// mergeBatch bounds the keys of one merge call.
const mergeBatch = 256

// merge adds the counts this replica made alone, in windows still open,
// to the region's counts in Redis, and takes them off the local ones
// (counts made meanwhile stay). A failed call leaves the rest for the
// next time Redis answers. It runs once at a time, off the request path.
func (c *Credits) merge() {
	defer c.merging.Store(false)
	c.unmerged.Store(false)
	ds := c.local.pending(c.clock.Now())
	n := 0
	for len(ds) > 0 {
		b := ds[:min(len(ds), mergeBatch)]
		keys := make([]string, len(b))
		args := make([]any, 0, 1+3*len(b))
		args = append(args, "merge")
		for i, d := range b {
			keys[i] = d.key
			args = append(args, d.r, d.t, d.end.Add(time.Minute).UnixMilli())
		}
		ctx, cancel := context.WithTimeout(context.Background(), max(c.timeout, time.Second))
		err := c.script.Run(ctx, c.client, keys, args...).Err()
		cancel()
		if err != nil && !errors.Is(err, redis.Nil) {
			c.nextMerge.Store(c.clock.Now().Add(DefaultCooldown).UnixNano())
			c.unmerged.Store(true)
			c.log.Warn("admission: could not add the usage counted during the Redis outage to the region's counts; will retry",
				"windows", len(ds), "err", err)
			break
		}
		c.local.merged(b)
		n += len(b)
		ds = ds[len(b):]
	}
	if n > 0 {
		c.merged.Add(uint64(n))
		c.log.Info("admission: usage counted during the Redis outage added to the region's counts", "windows", n)
	}
}

// Settle adds the tokens an answer used to the credits ch charged; refund
// gives the request back as well (admitted by the credits, then refused
// by another limit before it cost anything).
func (c *Credits) Settle(ctx context.Context, ch *CreditCharge, tokens int64, refund bool) {
	if ch == nil || (tokens <= 0 && !refund) {
		return
	}
	var r int64
	if refund {
		r = -1
	}
	tokens = max(tokens, 0)
	keys := ch.keys
	if ch.local {
		// Counted here; windows merged into Redis since are settled there.
		missing := c.local.settle(keys, r, tokens)
		if c.client == nil {
			return
		}
		if len(missing) < len(keys) {
			c.unmerged.Store(true)
		}
		if keys = missing; len(keys) == 0 {
			return
		}
	}
	args := []any{"settle", r, tokens}
	if _, err := c.run(ctx, keys, args, c.clock.Now()); err == nil || ch.local {
		return
	}
	if missing := c.local.settle(keys, r, tokens); len(missing) < len(keys) {
		c.unmerged.Store(true) // Redis gets them with the window's other local counts
	}
}

// CreditsStats is a snapshot of Credits' counters.
type CreditsStats struct {
	Denied      uint64 // requests refused for spent credits
	Fallbacks   uint64 // decisions made by this replica's share
	BreakerOpen bool   // Redis is being skipped
	Windows     int    // windows counted locally now
	Merged      uint64 // windows counted locally, then added to Redis's counts
}

// Stats returns a snapshot.
func (c *Credits) Stats() CreditsStats {
	c.local.mu.Lock()
	n := len(c.local.m)
	c.local.mu.Unlock()
	return CreditsStats{Denied: c.denied.Load(), Fallbacks: c.fallbacks.Load(), BreakerOpen: c.br.isOpen(), Windows: n,
		Merged: c.merged.Load()}
}

// localCredits counts windows in memory: without Redis, or while it fails.
type localCredits struct {
	mu        sync.Mutex
	m         map[string]*creditCount
	nextSweep time.Time
}

type creditCount struct {
	r, t int64
	end  time.Time // the window's end; swept a minute after
}

// spend is the script's spend on this replica's share (credit / share).
func (l *localCredits) spend(cs []charged, share int64, now time.Time) []int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweep(now)
	out := []int64{0, 0, 1}
	for i, x := range cs {
		n := l.m[x.key]
		if n == nil {
			n = &creditCount{end: x.end}
			l.m[x.key] = n
		}
		if lim := x.rule.Requests; lim > 0 && n.r >= max(lim/share, 1) && out[0] == 0 {
			out[0], out[1] = int64(-i-1), int64(KindRequests)
		}
		if lim := x.rule.Tokens; lim > 0 && n.t >= max(lim/share, 1) && out[0] == 0 {
			out[0], out[1] = int64(-i-1), int64(KindTokens)
		}
	}
	for _, x := range cs {
		n := l.m[x.key]
		if out[0] == 0 {
			n.r++
		}
		out = append(out, n.r, n.t)
	}
	return out
}

// settle adds r and t to the windows of keys it counts, and returns the
// keys it does not (none, or ones merged into Redis since).
func (l *localCredits) settle(keys []string, r, t int64) (missing []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, k := range keys {
		if n := l.m[k]; n != nil {
			n.r, n.t = max(n.r+r, 0), n.t+t
		} else {
			missing = append(missing, k)
		}
	}
	return missing
}

// creditDelta is what a window counted locally adds to Redis's count.
type creditDelta struct {
	key  string
	r, t int64
	end  time.Time
}

// pending returns the counts of the windows still open at now.
func (l *localCredits) pending(now time.Time) []creditDelta {
	l.mu.Lock()
	defer l.mu.Unlock()
	var ds []creditDelta
	for k, n := range l.m {
		if now.Before(n.end) && (n.r != 0 || n.t != 0) {
			ds = append(ds, creditDelta{k, n.r, n.t, n.end})
		}
	}
	return ds
}

// merged takes counts added to Redis off the local ones, and forgets the
// windows left with nothing.
func (l *localCredits) merged(ds []creditDelta) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, d := range ds {
		n := l.m[d.key]
		if n == nil {
			continue
		}
		n.r, n.t = n.r-d.r, n.t-d.t
		if n.r <= 0 && n.t <= 0 {
			delete(l.m, d.key)
		}
	}
}

// sweep forgets windows that ended more than a minute ago; l.mu is held.
func (l *localCredits) sweep(now time.Time) {
	if now.Before(l.nextSweep) {
		return
	}
	l.nextSweep = now.Add(time.Minute)
	for k, n := range l.m {
		if now.After(n.end.Add(time.Minute)) {
			delete(l.m, k)
		}
	}
}

// Headers passes the x-ratelimit-* headers of the tightest credits to set
// (reset: until the window ends), and retry-after when refused.
func (d CreditDecision) Headers(set func(name, value string)) {
	Decision{Allowed: d.Allowed, RetryAfter: d.RetryAfter, Requests: d.Requests, Tokens: d.Tokens}.Headers(set)
}

// Message is the English sentence of a refusal: which credit, and when it
// is whole again (UTC).
func (d CreditDecision) Message() string {
	if d.Allowed || d.Exhausted == nil {
		return "Request allowed."
	}
	r := d.Exhausted
	who := map[CreditScope]string{ScopeKey: "this API key", ScopeTenant: "this tenant", ScopeLane: "the " + laneOf(r) + " lane"}[r.Scope]
	n := r.Requests
	if d.Kind == KindTokens {
		n = r.Tokens
	}
	return fmt.Sprintf("Usage credits exhausted: %s has used its %d %s per %s. Credits reset at %s (in %ds); retry then.",
		who, n, d.Kind, windowName(r.Window), d.Reset.UTC().Format("2006-01-02 15:04:05 UTC"), RetryAfterSeconds(d.RetryAfter))
}

func laneOf(r *CreditRule) string {
	if r.Lane == nil {
		return "request's"
	}
	return r.Lane.String()
}

func windowName(w time.Duration) string {
	switch w {
	case 24 * time.Hour:
		return "day"
	case time.Hour:
		return "hour"
	case 7 * 24 * time.Hour:
		return "week"
	}
	return w.String()
}

// Tighter returns whichever of a and b leaves less room (a zero Quota
// leaves all): the x-ratelimit-* headers report the tightest of token
// buckets and credits.
func Tighter(a, b Quota) Quota {
	if b.Limit > 0 && b.tighter(a) {
		return b
	}
	return a
}
