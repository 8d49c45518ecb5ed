// Package shared is edgecache's L2: the region's shared cache of exact
// entries in Redis (go-redis v9), reached as a single node, a Redis Cluster
// or through Sentinel.
//
// Each entry is one compact binary value (status, timestamps, headers, body)
// written with SET … PX ttl under Config.Prefix + key, so one GET serves it.
// redis.Nil and undecodable values are cache.ErrMiss.
//
// Redis is a cache and never worth waiting for. Every operation runs under a
// short budget (Config.Timeout) with at most one retry, and a small circuit
// breaker fails open: after Config.FailureThreshold consecutive failures,
// operations return ErrUnavailable at once without touching the network, and
// a goroutine owned by Shared sends one PING every Config.ProbeInterval until
// Redis answers again. Callers treat every error from Get as a miss.
//
// The package also builds the region's one Redis client (NewClient), which
// the program hands to L2, global limits, the journal stream and route
// policies, and keeps the region's tenant secret (SetIfAbsent, Lookup).
// Its signatures use go-redis types: Redis is this package's job.
package shared

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/edgecache/edgecache/cache"
)

// TierName is the value Get sets in Entry.Tier.
const TierName = "l2"

// Defaults applied by New to zero Config fields.
const (
	DefaultPrefix           = "edgecache:v1:"
	DefaultTimeout          = 50 * time.Millisecond
	DefaultFailureThreshold = 5
	DefaultProbeInterval    = time.Second
)

// ErrUnavailable is returned (possibly wrapped) while the breaker is open or
// after Close: the operation was skipped without contacting Redis. Treat it
// like any other L2 error, as a miss.
var ErrUnavailable = errors.New("shared: redis unavailable")

// Config configures the L2 tier. Client or Conn is required; every other
// zero field takes the default its comment states.
type Config struct {
	// Client is the region's Redis client (see NewClient), shared with the
	// other components that keep state in Redis; the caller closes it
	// after Close. It must honour context deadlines (NewClient's do).
	Client redis.UniversalClient
	// Conn, when Client is nil, is the deployment New builds a client of
	// its own for (NewClient with default options); Close closes it.
	Conn Conn
	// Prefix is prepended to every key. If empty, it defaults to
	// "edgecache:v1:"; bump the version when the stored format changes.
	Prefix string
	// Timeout is the budget of one Get, Set or Delete, including the
	// connection wait and one retry. If zero, it defaults to 50ms.
	Timeout time.Duration
	// FailureThreshold is the number of consecutive failed operations that
	// opens the breaker. If zero, it defaults to 5.
	FailureThreshold int
	// ProbeInterval is how often a PING is sent while the breaker is open;
	// each PING may take DefaultDialTimeout + Timeout. If zero, it
	// defaults to 1s.
	ProbeInterval time.Duration
	// Logger receives breaker transitions and recovered panics. If nil,
	// slog.Default() is used.
	Logger *slog.Logger
}

// Validate reports a configuration that New would reject.
func (c Config) Validate() error {
	var errs []error
	if c.Client == nil {
		errs = append(errs, c.Conn.Validate())
	}
	if c.Timeout < 0 || c.ProbeInterval < 0 {
		errs = append(errs, errors.New("negative Timeout or ProbeInterval"))
	}
	if c.FailureThreshold < 0 {
		errs = append(errs, errors.New("negative FailureThreshold"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("shared: invalid config: %w", err)
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.FailureThreshold == 0 {
		c.FailureThreshold = DefaultFailureThreshold
	}
	if c.ProbeInterval == 0 {
		c.ProbeInterval = DefaultProbeInterval
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Stats are cumulative counters since New.
type Stats struct {
	Gets      uint64 // Get calls
	Hits      uint64 // Gets that returned an entry
	Misses    uint64 // Gets that found no key or a corrupt value (ErrMiss)
	Corrupt   uint64 // values that did not decode (also counted in Misses)
	Errors    uint64 // Gets that reached Redis and failed or timed out
	Skipped   uint64 // operations refused by the open breaker or after Close
	Sets      uint64 // SETs sent to Redis
	SetErrors uint64 // SETs that failed or timed out
	Deletes   uint64 // DELs sent to Redis (failures count in Errors)
	Opens     uint64 // times the breaker opened
}

// Shared is the Redis-backed cache.Tier. It is safe for concurrent use.
type Shared struct {
	client        redis.UniversalClient
	ownsClient    bool // built from Config.Conn: Close closes it
	prefix        string
	timeout       time.Duration
	probeTimeout  time.Duration
	probeInterval time.Duration
	log           *slog.Logger
	br            *breaker

	closed    atomic.Bool
	ctx       context.Context // cancelled by Close; parent of probes
	cancel    context.CancelFunc
	done      chan struct{} // closed when the probe loop has returned
	closeOnce sync.Once
	closeErr  error

	gets, hits, misses, corrupt, errs atomic.Uint64
	skipped, sets, setErrs, deletes   atomic.Uint64
}

var _ cache.Tier = (*Shared)(nil)

// New returns the tier. It does not contact Redis: the first operations
// establish connections. Close stops the probe goroutine (and closes the
// client if New built it from Config.Conn).
func New(cfg Config) (*Shared, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	client, owns := cfg.Client, false
	if client == nil {
		var err error
		if client, err = NewClient(cfg.Conn, ClientOptions{}); err != nil {
			return nil, err
		}
		owns = true
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Shared{
		client:        client,
		ownsClient:    owns,
		prefix:        cfg.Prefix,
		timeout:       cfg.Timeout,
		probeTimeout:  DefaultDialTimeout + cfg.Timeout,
		probeInterval: cfg.ProbeInterval,
		log:           cfg.Logger,
		br:            newBreaker(cfg.FailureThreshold),
		ctx:           ctx,
		cancel:        cancel,
		done:          make(chan struct{}),
	}
	go s.probeLoop()
	return s, nil
}

// Get returns the entry stored under k with Tier set to "l2". It returns
// cache.ErrMiss when the key is absent or its value is corrupt, an error
// wrapping ErrUnavailable when the breaker is open, and any other error when
// Redis failed or did not answer within Config.Timeout.
func (s *Shared) Get(ctx context.Context, k cache.Key) (cache.Entry, error) {
	s.gets.Add(1)
	if !s.allow() {
		return cache.Entry{}, fmt.Errorf("shared get: %w", ErrUnavailable)
	}
	opCtx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	b, err := s.client.Get(opCtx, s.key(k)).Bytes()
	switch {
	case err == nil:
		s.br.success()
	case errors.Is(err, redis.Nil):
		s.br.success()
		s.misses.Add(1)
		return cache.Entry{}, cache.ErrMiss
	default:
		s.errs.Add(1)
		s.failure(ctx, err)
		return cache.Entry{}, fmt.Errorf("shared get: %w", err)
	}
	e, err := decode(b)
	if err != nil {
		s.corrupt.Add(1)
		s.misses.Add(1)
		return cache.Entry{}, cache.ErrMiss
	}
	s.hits.Add(1)
	e.Tier = TierName
	return e, nil
}

// Set stores e under k for ttl (SET with PX; ttl is rounded to the
// millisecond, at least 1ms). A non-positive ttl is a no-op. It returns an error wrapping
// ErrUnavailable when the breaker is open.
func (s *Shared) Set(ctx context.Context, k cache.Key, e cache.Entry, ttl time.Duration) error {
	if ttl <= 0 {
		return nil
	}
	if !s.allow() {
		return fmt.Errorf("shared set: %w", ErrUnavailable)
	}
	ttl = max(ttl.Round(time.Millisecond), time.Millisecond)
	opCtx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	s.sets.Add(1)
	err := s.client.SetArgs(opCtx, s.key(k), encode(e), redis.SetArgs{TTL: ttl}).Err()
	if err != nil {
		s.setErrs.Add(1)
		s.failure(ctx, err)
		return fmt.Errorf("shared set: %w", err)
	}
	s.br.success()
	return nil
}

// Delete removes k. Deleting an absent key is not an error. It returns an
// error wrapping ErrUnavailable when the breaker is open.
func (s *Shared) Delete(ctx context.Context, k cache.Key) error {
	if !s.allow() {
		return fmt.Errorf("shared delete: %w", ErrUnavailable)
	}
	opCtx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	s.deletes.Add(1)
	if err := s.client.Del(opCtx, s.key(k)).Err(); err != nil {
		s.errs.Add(1)
		s.failure(ctx, err)
		return fmt.Errorf("shared delete: %w", err)
	}
	s.br.success()
	return nil
}

// Ping checks now, regardless of the breaker, that Redis answers (every
// master, in cluster mode). Without a deadline on ctx it is bounded by
// DialTimeout + Timeout. It does not change the breaker's state.
func (s *Shared) Ping(ctx context.Context) error {
	if s.closed.Load() {
		return fmt.Errorf("shared ping: %w", ErrUnavailable)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.probeTimeout)
		defer cancel()
	}
	if err := s.ping(ctx); err != nil {
		return fmt.Errorf("shared ping: %w", err)
	}
	return nil
}

// Healthy reports whether the breaker is closed, i.e. whether operations
// currently reach Redis. It is false after Close.
func (s *Shared) Healthy() bool { return !s.closed.Load() && s.br.allow() }

// Stats returns the cumulative counters.
func (s *Shared) Stats() Stats {
	return Stats{
		Gets:      s.gets.Load(),
		Hits:      s.hits.Load(),
		Misses:    s.misses.Load(),
		Corrupt:   s.corrupt.Load(),
		Errors:    s.errs.Load(),
		Skipped:   s.skipped.Load(),
		Sets:      s.sets.Load(),
		SetErrors: s.setErrs.Load(),
		Deletes:   s.deletes.Load(),
		Opens:     s.br.opens.Load(),
	}
}

// Close stops the probe goroutine, and closes the client if New built it.
// Later operations return ErrUnavailable. It is idempotent.
func (s *Shared) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.cancel()
		<-s.done
		if s.ownsClient {
			s.closeErr = s.client.Close()
		}
	})
	return s.closeErr
}

func (s *Shared) key(k cache.Key) string { return s.prefix + string(k) }

// allow is the breaker gate; a refused operation is counted as skipped.
func (s *Shared) allow() bool {
	if s.closed.Load() || !s.br.allow() {
		s.skipped.Add(1)
		return false
	}
	return true
}

// failure feeds the breaker with an operation error. When the caller's own
// context ended first (client gone, or a tighter request deadline) Redis is
// not to blame and the failure is not counted.
func (s *Shared) failure(callerCtx context.Context, err error) {
	if callerCtx.Err() != nil {
		return
	}
	if s.br.failure() {
		s.log.Warn("shared cache: redis unavailable, skipping L2 until a probe succeeds",
			"err", err, "probe_interval", s.probeInterval)
	}
}

// probeLoop owns the recovery of an open breaker. It runs from New until
// Close.
func (s *Shared) probeLoop() {
	defer close(s.done)
	t := time.NewTicker(s.probeInterval)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
			if !s.br.allow() {
				s.probe()
			}
		}
	}
}

// probe sends one PING and closes the breaker when it succeeds.
func (s *Shared) probe() {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("shared cache: probe panicked", "panic", r, "stack", string(debug.Stack()))
		}
	}()
	ctx, cancel := context.WithTimeout(s.ctx, s.probeTimeout)
	defer cancel()
	if err := s.ping(ctx); err != nil {
		return
	}
	if s.br.reset() {
		s.log.Info("shared cache: redis answers again, L2 re-enabled")
	}
}

// ping checks every master in cluster mode (one dead node fails the
// probe) and the single node or Sentinel master otherwise.
func (s *Shared) ping(ctx context.Context) error {
	if cc, ok := s.client.(*redis.ClusterClient); ok {
		return cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
			return c.Ping(ctx).Err()
		})
	}
	return s.client.Ping(ctx).Err()
}
