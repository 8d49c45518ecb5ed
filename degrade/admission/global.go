package admission

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Defaults of GlobalConfig.
const (
	DefaultGlobalPrefix     = "edgecache:rl:v1:"
	DefaultRegion           = "default"
	DefaultGlobalTimeout    = 20 * time.Millisecond
	DefaultFailureThreshold = 3
	DefaultCooldown         = time.Second
)

//go:embed global.lua
var globalLua string

// GlobalConfig configures Global. Client is required.
type GlobalConfig struct {
	// Client is the region's Redis client, shared with the program's other
	// Redis users and closed by the caller after them. It must honour
	// context deadlines (go-redis ContextTimeoutEnabled): Timeout bounds
	// each call through the context. Global is this package's Redis
	// adapter, hence the go-redis type in its configuration.
	Client redis.UniversalClient
	// Prefix starts every key. If empty, it defaults to "edgecache:rl:v1:".
	Prefix string
	// Region scopes the limits: instances of one region share them. It is
	// a Redis Cluster hash tag, so all of a region's limits live on one
	// slot and a request's subjects are checked by one script. If empty,
	// it defaults to "default".
	Region string
	// Timeout bounds one Redis call on the request path, connection wait
	// included. If zero, it defaults to 20ms; a slower Redis is treated as
	// down for that request.
	Timeout time.Duration
	// FailureThreshold consecutive failed calls open the breaker: Global
	// then decides locally without contacting Redis. If zero, it defaults
	// to 3.
	FailureThreshold int
	// Cooldown is how long the breaker stays open before one request tries
	// Redis again. If zero, it defaults to 1s.
	Cooldown time.Duration
	// Replicas is the number of instances sharing the limits. While Redis
	// is unavailable each instance enforces limit / Replicas on its own
	// (rates scaled, bursts floored, at least 1), so the region as a whole
	// stays near the limit instead of limit × replicas. If zero, it
	// defaults to 1 (each instance alone enforces the full limit).
	Replicas int
	// Defaults are the global Limits of each dimension for subjects that
	// carry none of their own.
	Defaults Rules
	// Shadow counts would-be denials without enforcing any rule.
	Shadow bool
	// MaxEntries bounds the fallback buckets (see BucketsConfig).
	MaxEntries int
	// Clock is the time source of the breaker and the fallback buckets;
	// Redis uses its own TIME, one clock for every instance. Nil means the
	// real time.
	Clock Clock
	// Logger receives breaker transitions. If nil, slog.Default() is used.
	Logger *slog.Logger
}

// Validate reports a configuration NewGlobal would reject.
func (c GlobalConfig) Validate() error {
	var errs []error
	if c.Client == nil {
		errs = append(errs, errors.New("no Redis client"))
	}
	if c.Timeout < 0 || c.Cooldown < 0 || c.FailureThreshold < 0 || c.Replicas < 0 || c.MaxEntries < 0 {
		errs = append(errs, errors.New("negative Timeout, Cooldown, FailureThreshold, Replicas or MaxEntries"))
	}
	if strings.ContainsAny(c.Region, "{}") {
		errs = append(errs, fmt.Errorf("region %q contains a brace", c.Region))
	}
	if err := c.Defaults.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("admission: invalid global config: %w", err)
	}
	return nil
}

// Global enforces quotas shared by every instance of a region, held in
// Redis. One Lua script checks and reserves all of a request's subjects
// atomically (a token bucket per kind in one hash per subject), so the
// region admits the limit, not limit × replicas. Settle corrects the token
// buckets with the real usage.
//
// Redis key layout: Prefix + "{" + Region + "}:" + dimension + ":" + id,
// e.g. "edgecache:rl:v1:{eu-west}:tenant:acme", a hash with fields r
// (request level), t (token level) and ts (their time, µs, from Redis TIME).
// A hash expires once its buckets are full again.
//
// When Redis errs or is slower than Timeout, the request is decided by
// local buckets holding this instance's share of each limit, and Decision
// reports Fallback. A small breaker stops trying Redis after
// FailureThreshold failures and lets one request try again every Cooldown.
// The breaker is Global's own, not the shared client's or L2's: global
// limits sit on every request's path with a 20ms budget and fall back to
// a local share, so they give up on a slow Redis sooner than the cache
// does, and recover on request traffic (a trial call) rather than a probe.
type Global struct {
	client   redis.UniversalClient
	script   *redis.Script
	prefix   string
	timeout  time.Duration
	defaults Rules
	shadow   bool
	replicas int
	clock    Clock
	log      *slog.Logger
	br       *breaker
	local    *Buckets

	// serverNow, when set (tests), supplies the script's time in µs
	// instead of Redis TIME.
	serverNow func() int64

	allowed, denied, shadowDenied atomic.Uint64
	fallbacks, redisErrors        atomic.Uint64
}

// NewGlobal returns a Global. It does not contact Redis: the first request
// does. The caller owns cfg.Client.
func NewGlobal(cfg GlobalConfig) (*Global, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultGlobalPrefix
	}
	if cfg.Region == "" {
		cfg.Region = DefaultRegion
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultGlobalTimeout
	}
	if cfg.FailureThreshold == 0 {
		cfg.FailureThreshold = DefaultFailureThreshold
	}
	if cfg.Cooldown == 0 {
		cfg.Cooldown = DefaultCooldown
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Global{
		client:   cfg.Client,
		script:   redis.NewScript(globalLua),
		prefix:   cfg.Prefix + "{" + cfg.Region + "}:",
		timeout:  cfg.Timeout,
		defaults: cfg.Defaults,
		shadow:   cfg.Shadow,
		replicas: cfg.Replicas,
		clock:    clockOr(cfg.Clock),
		log:      cfg.Logger,
		br:       newBreaker(cfg.FailureThreshold, int64(cfg.Cooldown)),
		local: newBuckets(BucketsConfig{
			Defaults:   cfg.Defaults,
			Shadow:     cfg.Shadow,
			MaxEntries: cfg.MaxEntries,
			Clock:      cfg.Clock,
		}, 1/float64(cfg.Replicas)),
	}, nil
}

// Key returns the Redis key of a subject (for operators and tests).
func (g *Global) Key(dim Dimension, id string) string {
	return g.prefix + dim.String() + ":" + id
}

// Reserve checks and reserves one request estimated at tokens against every
// subject's global quota, atomically in Redis, or against this instance's
// share when Redis is unavailable (Decision.Fallback). It never fails:
// Redis trouble degrades to the local share. ctx bounds the Redis call
// together with Timeout.
func (g *Global) Reserve(ctx context.Context, tokens int64, subjects ...Subject) Decision {
	now := g.clock.Now().UnixNano()
	keys, args, rules := g.request("r", max(tokens, 0), subjects)
	if len(keys) == 0 {
		g.allowed.Add(1)
		return Decision{Allowed: true}
	}
	res, err := g.run(ctx, now, keys, args)
	if err != nil {
		g.fallbacks.Add(1)
		d := g.local.reserve(now, tokens, subjects)
		d.Fallback = true
		g.count(d)
		return d
	}
	d, err := decode(res, rules)
	if err != nil { // a script bug, not an outage: say so, stay available
		g.log.Error("admission: global limit script answer", "err", err)
		g.fallbacks.Add(1)
		d = g.local.reserve(now, tokens, subjects)
		d.Fallback = true
	}
	g.count(d)
	return d
}

// Settle corrects the subjects' global token buckets once the real usage
// is known (see Buckets.Settle); without Redis, the local share is settled.
func (g *Global) Settle(ctx context.Context, estimated, actual int64, subjects ...Subject) {
	if estimated == actual {
		return
	}
	now := g.clock.Now().UnixNano()
	keys, args, _ := g.request("s", estimated-actual, subjects)
	if len(keys) == 0 {
		return
	}
	if _, err := g.run(ctx, now, keys, args); err != nil {
		g.local.settle(now, estimated, actual, subjects)
	}
}

// request builds the script's keys and arguments for the limited subjects.
func (g *Global) request(mode string, n int64, subjects []Subject) ([]string, []any, []limited) {
	keys := make([]string, 0, len(subjects))
	rules := make([]limited, 0, len(subjects))
	var serverNow int64
	if g.serverNow != nil {
		serverNow = g.serverNow()
	}
	args := make([]any, 3, 3+5*len(subjects))
	args[0], args[1], args[2] = mode, serverNow, n
	for i := range subjects {
		s := &subjects[i]
		l := s.Limits
		if l == nil {
			if l = g.defaults.of(s.Dim); l == nil {
				continue
			}
		}
		r := l.rule(1, g.shadow)
		if r.unlimited() {
			continue
		}
		keys = append(keys, g.Key(s.Dim, s.ID))
		rules = append(rules, limited{s.Dim, r})
		shadow := 0
		if r.shadow {
			shadow = 1
		}
		args = append(args, r.reqRate, r.reqBurst, r.tokRate, r.tokBurst, shadow)
	}
	return keys, args, rules
}

// run calls the script unless the breaker is open, feeding the breaker.
func (g *Global) run(ctx context.Context, now int64, keys []string, args []any) ([]int64, error) {
	if !g.br.allow(now) {
		return nil, errBreakerOpen
	}
	callCtx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	res, err := g.script.Run(callCtx, g.client, keys, args...).Int64Slice()
	if err != nil && !errors.Is(err, redis.Nil) {
		g.redisErrors.Add(1)
		if ctx.Err() != nil { // the caller gave up: not Redis's fault
			g.br.abort()
		} else if g.br.failure(g.clock.Now().UnixNano()) {
			g.log.Warn("admission: redis unavailable, global limits fall back to this instance's share",
				"err", err, "replicas", g.replicas, "retry_in", time.Duration(g.br.cooldown))
		}
		return nil, err
	}
	if g.br.success() {
		g.log.Info("admission: redis answers again, global limits are shared again")
	}
	return res, nil
}

var errBreakerOpen = errors.New("admission: redis breaker open")

// limited is one subject that has a limit, as sent to the script.
type limited struct {
	dim  Dimension
	rule rule
}

// decode turns the script's reserve answer into a Decision.
func decode(res []int64, rules []limited) (Decision, error) {
	const head, per = 7, 4
	if len(res) != head+per*len(rules) {
		return Decision{}, fmt.Errorf("answer has %d values, want %d", len(res), head+per*len(rules))
	}
	limit := func(i, k int64) Limit {
		if i < 1 || int(i) > len(rules) {
			return Limit{}
		}
		return Limit{rules[i-1].dim, Kind(k)}
	}
	var d Decision
	d.Allowed = res[0] == 1
	if !d.Allowed {
		d.RetryAfter = time.Duration(res[1]) * time.Microsecond
		d.Limit = limit(res[2], res[3])
	} else if res[4] > 0 {
		d.Shadow = true
		d.RetryAfter = time.Duration(res[6]) * time.Microsecond
		d.Limit = limit(res[4], res[5])
	}
	for i := range rules {
		r := &rules[i].rule
		if r.shadow {
			continue
		}
		o := res[head+per*i:]
		if r.reqRate > 0 {
			if q := (Quota{int64(r.reqBurst), max(o[0], 0), time.Duration(o[1]) * time.Microsecond}); q.tighter(d.Requests) {
				d.Requests = q
			}
		}
		if r.tokRate > 0 {
			if q := (Quota{int64(r.tokBurst), max(o[2], 0), time.Duration(o[3]) * time.Microsecond}); q.tighter(d.Tokens) {
				d.Tokens = q
			}
		}
	}
	return d, nil
}

func (g *Global) count(d Decision) {
	switch {
	case !d.Allowed:
		g.denied.Add(1)
	case d.Shadow:
		g.shadowDenied.Add(1)
	default:
		g.allowed.Add(1)
	}
}

// GlobalStats is a snapshot of Global's state and counters.
type GlobalStats struct {
	BreakerOpen  bool   // Redis is being skipped; decisions are local
	Replicas     int    // the fallback share is 1/Replicas of each limit
	Allowed      uint64 // requests allowed by every rule
	Denied       uint64 // requests denied by an enforced rule
	ShadowDenied uint64 // requests allowed that a shadow rule would have denied
	Fallbacks    uint64 // decisions made with the local share
	RedisErrors  uint64 // Redis calls that failed or timed out
	Opens        uint64 // times the breaker opened
	Local        BucketsStats
}

// Stats returns a snapshot.
func (g *Global) Stats() GlobalStats {
	return GlobalStats{
		BreakerOpen:  g.br.isOpen(),
		Replicas:     g.replicas,
		Allowed:      g.allowed.Load(),
		Denied:       g.denied.Load(),
		ShadowDenied: g.shadowDenied.Load(),
		Fallbacks:    g.fallbacks.Load(),
		RedisErrors:  g.redisErrors.Load(),
		Opens:        g.br.opens.Load(),
		Local:        g.local.Stats(),
	}
}
