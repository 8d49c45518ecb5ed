package shared

import (
	"crypto/tls"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/extra/redisotel/v9"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// Conn names a Redis deployment: one address is a single node, several are
// the seeds of a Redis Cluster (Cluster forces that with one seed), and with
// MasterName they are Sentinel addresses. Everything edgecache keeps in
// Redis (L2, global limits, the journal stream, route policies, the tenant
// secret) goes through one client that NewClient builds from it, so each of
// them reaches the same deployment the same way.
type Conn struct {
	Addrs              []string
	Cluster            bool
	MasterName         string
	Username, Password string
	DB                 int
	// TLS, when set, encrypts every connection (managed Redis offerings
	// such as Azure Cache for Redis or ElastiCache with in-transit
	// encryption require it). The server name defaults to the host of the
	// address dialled. Nil: plaintext.
	TLS *tls.Config
}

// Validate reports a Conn that cannot connect.
func (c Conn) Validate() error {
	var errs []error
	if len(c.Addrs) == 0 {
		errs = append(errs, errors.New("no Addrs"))
	}
	for _, a := range c.Addrs {
		if a == "" {
			errs = append(errs, errors.New("empty address in Addrs"))
			break
		}
	}
	if c.DB < 0 {
		errs = append(errs, fmt.Errorf("DB %d is negative", c.DB))
	}
	if c.DB != 0 && c.MasterName == "" && (c.Cluster || len(c.Addrs) > 1) {
		errs = append(errs, fmt.Errorf("DB %d is set but Redis Cluster has only DB 0", c.DB))
	}
	return errors.Join(errs...)
}

// Defaults of ClientOptions.
const (
	DefaultDialTimeout    = 250 * time.Millisecond
	DefaultCommandTimeout = 3 * time.Second
)

// ClientOptions are the settings of the one Redis client a process builds
// for its region. Zero fields take the defaults their comments state.
type ClientOptions struct {
	// PoolSize is the number of connections per node. If zero, go-redis
	// picks 10 per CPU.
	PoolSize int
	// DialTimeout bounds establishing one connection (a caller's shorter
	// context deadline still wins). If zero, it defaults to 250ms.
	DialTimeout time.Duration
	// CommandTimeout is the backstop of a command whose context has no
	// deadline. Every component bounds its own calls with a context
	// deadline (L2 50ms, global limits 20ms, a journal batch 1s), which
	// wins when shorter. If zero, it defaults to 3s.
	CommandTimeout time.Duration
	// TracerProvider and MeterProvider, when set, instrument the client:
	// a span per command (without its arguments), connection-pool metrics.
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider
}

// NewClient returns the client of the deployment c: a *redis.Client, a
// *redis.ClusterClient or a Sentinel failover client, as c says. It is the
// only place edgecache builds go-redis options. It connects lazily; the
// caller owns it and closes it after every component it was handed to.
//
// Settings every component relies on: context deadlines are honoured
// (ContextTimeoutEnabled), so each caller's budget bounds its commands;
// one immediate retry (a pooled connection a restart broke); one dial
// attempt, as the components' breakers decide what happens next; no CLIENT
// SETINFO round trip per connection; two cluster redirects.
func NewClient(c Conn, o ClientOptions) (redis.UniversalClient, error) {
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("shared: redis client: %w", err)
	}
	if o.PoolSize < 0 || o.DialTimeout < 0 || o.CommandTimeout < 0 {
		return nil, errors.New("shared: redis client: negative PoolSize, DialTimeout or CommandTimeout")
	}
	if o.DialTimeout == 0 {
		o.DialTimeout = DefaultDialTimeout
	}
	if o.CommandTimeout == 0 {
		o.CommandTimeout = DefaultCommandTimeout
	}
	client := redis.NewUniversalClient(&redis.UniversalOptions{
		Addrs:                 append([]string(nil), c.Addrs...),
		IsClusterMode:         c.Cluster,
		MasterName:            c.MasterName,
		Username:              c.Username,
		Password:              c.Password,
		DB:                    c.DB,
		TLSConfig:             c.TLS.Clone(), // nil stays nil
		DisableIdentity:       true,
		DialerRetries:         1,
		MaxRedirects:          2,
		ContextTimeoutEnabled: true,
		PoolSize:              o.PoolSize,
		DialTimeout:           o.DialTimeout,
		ReadTimeout:           o.CommandTimeout,
		WriteTimeout:          o.CommandTimeout,
		PoolTimeout:           o.CommandTimeout,
		MaxRetries:            1,
		MinRetryBackoff:       -1, // retry at once: budgets are milliseconds
		MaxRetryBackoff:       -1,
	})
	if o.TracerProvider != nil {
		if err := redisotel.InstrumentTracing(client, redisotel.WithTracerProvider(o.TracerProvider), redisotel.WithDBStatement(false)); err != nil {
			client.Close()
			return nil, fmt.Errorf("shared: instrument tracing: %w", err)
		}
	}
	if o.MeterProvider != nil {
		if err := redisotel.InstrumentMetrics(client, redisotel.WithMeterProvider(o.MeterProvider)); err != nil {
			client.Close()
			return nil, fmt.Errorf("shared: instrument metrics: %w", err)
		}
	}
	return client, nil
}
