// Package config is edgecache's configuration: the YAML file format, the
// environment overrides for container use, defaults and validation.
//
// Load reads the optional file, applies the environment, fills defaults
// (Default) and checks ranges and cross-field rules (Validate). The result is
// a plain value; the application compiles routes from it into immutable
// snapshots that it swaps atomically.
package config

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/edgecache/edgecache/cache/semantic/verify"
	"github.com/edgecache/edgecache/cmd/internal/upstream"
)

// Config is the whole configuration. The zero value of every field means its
// documented default.
type Config struct {
	// Listen is the data (proxy) address. Env EDGECACHE_LISTEN; default ":8080".
	Listen string `yaml:"listen"`
	// AdminListen is the admin address (health, metrics). Env
	// EDGECACHE_ADMIN_LISTEN; default "127.0.0.1:9090".
	AdminListen string `yaml:"admin_listen"`

	Upstream Upstream `yaml:"upstream"`
	// Backups are failover targets tried in order when the primary
	// upstream fails or its breaker is open (e.g. the same model at another
	// provider).
	Backups []Backup `yaml:"backups"`
	// Upstreams are named pools of targets balanced by a policy, with
	// active health checks. The upstream + backups, when upstream.url is
	// set, are the pool "default" (tried in order) and come first.
	Upstreams []Pool `yaml:"upstreams"`
	// Models routes requests by model to a pool, then its fallbacks. When
	// set, a model no entry matches is answered 404 model_not_found.
	Models  []ModelRoute `yaml:"models"`
	Degrade Degrade      `yaml:"degrade"`
	// Admission limits what reaches the upstream: quotas, lanes,
	// self-protection and adaptive concurrency.
	Admission Admission `yaml:"admission"`
	// Tenants map API keys to a tenant name, a lane and limits.
	Tenants  []Tenant `yaml:"tenants"`
	Redis    Redis    `yaml:"redis"`
	Cache    Cache    `yaml:"cache"`
	Semantic Semantic `yaml:"semantic"`

	// MaxBodyBytes bounds a request body; larger ones get 413. Zero → 8 MiB.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`

	// Server bounds how long a client may hold a connection of either
	// listener.
	Server Server `yaml:"server"`

	// Log configures the access log.
	Log Log `yaml:"log"`

	// TenantSecret keys the HMAC that turns a client's API key into its
	// cache namespace, so raw keys are never stored. Env
	// EDGECACHE_TENANT_SECRET. When empty, a random secret is generated and
	// shared through Redis (SET NX) so every replica of a region agrees;
	// without Redis it lives as long as the process. Set it explicitly in
	// production so namespaces survive a Redis flush.
	TenantSecret string `yaml:"tenant_secret"`
	// TenantSecretFile reads TenantSecret from a file (a mounted Secret).
	// Env EDGECACHE_TENANT_SECRET_FILE.
	TenantSecretFile string `yaml:"tenant_secret_file"`

	// PolicyFile persists run-time route policy changes and their audit
	// trail when there is no Redis (with Redis they live in the region's
	// Redis). Env EDGECACHE_POLICY_FILE. Empty → "edgecache-routes.json".
	PolicyFile string `yaml:"policy_file"`

	// AdminTokens are the named bearer tokens of the admin API, required
	// whenever the admin listener is not on loopback. Env
	// EDGECACHE_ADMIN_TOKENS as "name:token,name2:token2" (added to these).
	AdminTokens []AdminToken `yaml:"admin_tokens"`
	// AdminTokensFile holds more admin tokens, "name:token" separated by
	// commas or newlines. Env EDGECACHE_ADMIN_TOKENS_FILE.
	AdminTokensFile string `yaml:"admin_tokens_file"`

	// Pricing gives each model's price per million tokens, for the
	// estimated cost saved by cache hits (edgecache_cost_saved_total, the
	// review page). A model is priced by its exact name, else by the longest
	// name here it starts with; unpriced models count tokens saved only.
	Pricing map[string]Price `yaml:"pricing"`

	// Routes are the proxied paths and their cache policies. Empty → the
	// default routes (chat completions, completions and embeddings with an
	// exact cache, TTL 1h; models passed through).
	Routes []Route `yaml:"routes"`
}

// Access log modes.
const (
	AccessFull    = "full"    // a line per proxied request
	AccessSampled = "sampled" // a SampleRate share of requests, and every 5xx
	AccessOff     = "off"
)

// Log configures the access log (JSON lines on stderr, with the other logs).
type Log struct {
	// Access is full, sampled or off. Env EDGECACHE_LOG_ACCESS; default
	// full.
	Access string `yaml:"access"`
	// SampleRate is the share of requests logged when Access is sampled,
	// in (0, 1]. Env EDGECACHE_LOG_ACCESS_SAMPLE_RATE; default 0.1.
	SampleRate float64 `yaml:"sample_rate"`
}

// Price is a model's price per million tokens.
type Price struct {
	InputPerMillion  float64 `yaml:"input_per_million"`
	OutputPerMillion float64 `yaml:"output_per_million"`
	// Currency names the unit of the prices (a label of
	// edgecache_cost_saved_total). Empty → "USD".
	Currency string `yaml:"currency"`
}

// Server is the HTTP servers' protection against slow, stalled and idle
// clients (both listeners). Each has an environment variable.
type Server struct {
	// ReadHeaderTimeout bounds reading a request's line and headers. Env
	// EDGECACHE_READ_HEADER_TIMEOUT. Zero → 10s.
	ReadHeaderTimeout Duration `yaml:"read_header_timeout"`
	// ReadTimeout bounds reading a whole request, headers and body, from
	// its first byte; a body that has not arrived by then is answered 408
	// and the connection closed. It ends when the body is read, so it
	// never limits the answer. Env EDGECACHE_READ_TIMEOUT. Zero → 30s.
	ReadTimeout Duration `yaml:"read_timeout"`
	// WriteTimeout bounds writing an answer that is not streamed, from its
	// first byte (the wait for the model is upstream.timeout's). A streamed
	// answer gets it afresh for each write: a stream lives as long as its
	// client reads, and a client that stops reading is cut after it. Env
	// EDGECACHE_WRITE_TIMEOUT. Zero → 30s.
	WriteTimeout Duration `yaml:"write_timeout"`
	// IdleTimeout closes a keep-alive connection that sends no request for
	// this long. Keep it above the idle timeout of a load balancer in
	// front. Env EDGECACHE_IDLE_TIMEOUT. Zero → 120s.
	IdleTimeout Duration `yaml:"idle_timeout"`
	// MaxHeaderBytes bounds a request's line and headers; larger ones get
	// 431. Env EDGECACHE_MAX_HEADER_BYTES. Zero → 64 KiB.
	MaxHeaderBytes int `yaml:"max_header_bytes"`
}

// AdminToken is one named admin credential; the name is what audit
// records show, the token is never logged.
type AdminToken struct {
	Name  string `yaml:"name"`
	Token string `yaml:"token"`
}

// Upstream is the model's OpenAI-compatible API.
type Upstream struct {
	// URL is the API's base URL, with or without a trailing /v1 (e.g.
	// https://api.deepseek.com or http://vllm:8000/v1). Env
	// EDGECACHE_UPSTREAM_URL. Required unless edgecache runs with --sim.
	URL string `yaml:"url"`
	// APIKey, when set, replaces the client's key on upstream calls (the
	// client's key still selects its cache namespace). Env
	// EDGECACHE_UPSTREAM_API_KEY.
	APIKey string `yaml:"api_key"`
	// APIKeyFile reads APIKey from a file. Env
	// EDGECACHE_UPSTREAM_API_KEY_FILE.
	APIKeyFile string `yaml:"api_key_file"`
	// Timeout bounds waiting for the upstream's response headers and, for
	// non-streamed answers, the whole answer. Zero → 120s.
	Timeout Duration `yaml:"timeout"`
	// StreamIdleTimeout bounds the silence between two events of a stream.
	// Zero → 60s.
	StreamIdleTimeout Duration `yaml:"stream_idle_timeout"`
	// MaxIdleConns is the size of the keep-alive pool to the upstream.
	// Zero → 512.
	MaxIdleConns int `yaml:"max_idle_conns"`
}

// Backup is a failover upstream.
type Backup struct {
	// Name identifies the target in logs, metrics and /admin/upstreams.
	Name string `yaml:"name"`
	// URL is the API's base URL, with or without /v1.
	URL string `yaml:"url"`
	// APIKey replaces the client's key on calls to this target (a backup
	// provider has its own keys). Env EDGECACHE_BACKUP_<NAME>_API_KEY or
	// EDGECACHE_BACKUP_<INDEX>_API_KEY (0-based).
	APIKey string `yaml:"api_key"`
	// APIKeyFile reads APIKey from a file. Env
	// EDGECACHE_BACKUP_<NAME|INDEX>_API_KEY_FILE.
	APIKeyFile string `yaml:"api_key_file"`
	// Models renames the requested model for this target, e.g.
	// {"deepseek-chat": "deepseek-ai/DeepSeek-V3"}.
	Models map[string]string `yaml:"models"`
}

// Pool is a named group of targets serving the same models.
type Pool struct {
	Name string `yaml:"name"`
	// Balance: round_robin (weighted), least_requests, or least_latency
	// (peak-EWMA of time to first token; the default).
	Balance     string      `yaml:"balance"`
	HealthCheck HealthCheck `yaml:"health_check"`
	// SlowStart ramps a target back up over this time after it recovers.
	// Zero → 30s when health checks are on.
	SlowStart Duration     `yaml:"slow_start"`
	Targets   []PoolTarget `yaml:"targets"`
}

// HealthCheck configures a pool's active checks: a GET of Path on every
// target each Interval (± Jitter), answered 2xx within Timeout.
type HealthCheck struct {
	Path      string   `yaml:"path"`      // "" → /v1/models
	Interval  Duration `yaml:"interval"`  // zero → no active checks
	Timeout   Duration `yaml:"timeout"`   // zero → half the interval
	Unhealthy int      `yaml:"unhealthy"` // failures in a row that take a target out; zero → 2
	Healthy   int      `yaml:"healthy"`   // passes in a row that bring it back; zero → 2
	Jitter    float64  `yaml:"jitter"`    // share of the interval; zero → 0.1
}

// PoolTarget is one deployment in a pool.
type PoolTarget struct {
	// Name identifies it in logs, metrics and /admin/upstreams. Empty →
	// <pool>-<index>.
	Name string `yaml:"name"`
	URL  string `yaml:"url"`
	// Weight is its share of the pool's requests. Zero → 1.
	Weight int `yaml:"weight"`
	// MaxConcurrency is a hard cap on this edge's requests in flight to
	// the target (a vLLM replica's max_num_seqs, a provider key's
	// concurrency quota): the adaptive limit never goes above it, even in
	// admission shadow mode. Zero → no cap beyond admission.concurrency.max.
	MaxConcurrency int `yaml:"max_concurrency"`
	// APIKey replaces the client's key on calls to this target. Env
	// EDGECACHE_POOL_<POOL>_<INDEX>_API_KEY.
	APIKey string `yaml:"api_key"`
	// APIKeyFile reads APIKey from a file.
	APIKeyFile string `yaml:"api_key_file"`
	// Models renames the requested model for this target.
	Models map[string]string `yaml:"models"`
}

// ModelRoute maps models (exact name or glob, e.g. "deepseek-*") to a pool
// and an ordered list of fallback pools.
type ModelRoute struct {
	Match    string   `yaml:"match"`
	Upstream string   `yaml:"upstream"`
	Fallback []string `yaml:"fallback"`
}

// Degrade configures how the upstream is protected and what is answered
// when it fails. Defaults follow DEGRADATION.md.
type Degrade struct {
	Breaker Breaker `yaml:"breaker"`
	// MaxAttempts per request, counted across retries and failover.
	// Zero → 3.
	MaxAttempts int `yaml:"max_attempts"`
	// RetryBudget is the share of requests in flight that may be retries
	// (per target, at least 3). Zero → 0.2.
	RetryBudget float64 `yaml:"retry_budget"`
	// BackoffBase and BackoffCap shape full-jitter backoff. Zero → 100ms, 2s.
	BackoffBase Duration `yaml:"backoff_base"`
	BackoffCap  Duration `yaml:"backoff_cap"`
	// TTFTTimeout bounds the wait for the first token of one attempt (the
	// response for non-streamed calls); slower attempts fail over. Zero →
	// the upstream timeout.
	TTFTTimeout Duration `yaml:"ttft_timeout"`
	// RetryWhenClientRetries allows retries and failover even when the
	// client's SDK is itself retrying (X-Stainless-Retry-Count > 0). Off by
	// default: retries in two layers multiply a storm.
	RetryWhenClientRetries bool `yaml:"retry_when_client_retries"`
	// MaxRetryWait is the longest a request waits before a retry (a
	// backoff or an upstream's Retry-After), and only when the wait fits
	// its deadline; a longer Retry-After fails over or degrades at once.
	// Zero → 1s.
	MaxRetryWait Duration `yaml:"max_retry_wait"`
	// DeadlineMargin is kept from a client's timeout hint
	// (X-Stainless-Timeout) so the answer arrives before the client gives
	// up. Zero → 500ms.
	DeadlineMargin Duration `yaml:"deadline_margin"`
	// TemplatesDir holds operator templates (*.yaml), reloaded on change.
	// Env EDGECACHE_TEMPLATES_DIR. Empty → built-in templates only.
	TemplatesDir string `yaml:"templates_dir"`
	// JournalDir holds the degradation journal (rotating JSONL). Env
	// EDGECACHE_JOURNAL_DIR. Empty → "edgecache-journal" in the working
	// directory.
	JournalDir string `yaml:"journal_dir"`
	// JobsFile keeps the background jobs of routes with jobs enabled
	// across restarts (it holds their requests, API keys included: mode
	// 0600). Empty → jobs.json in JournalDir.
	JobsFile string `yaml:"jobs_file"`
	// JobsLease: with Redis, a running job stays with its replica this
	// long without a renewal (renewed every third of it); a replica that
	// dies gives its jobs to another after at most this. Zero → 15s.
	JobsLease Duration `yaml:"jobs_lease"`
	// Region names this edge's region (journal stream, route policies).
	// Env EDGECACHE_REGION. Empty → "default".
	Region string `yaml:"region"`
}

// Admission configures the limiters (degrade/admission). Zero limits mean
// unlimited: quotas are opt-in.
type Admission struct {
	// DefaultLane of requests whose key belongs to no tenant: enterprise,
	// paid, free or batch. Empty → free.
	DefaultLane string `yaml:"default_lane"`
	// TrustLaneHeader takes the lane from X-Edgecache-Lane (set by a
	// trusted gateway in front). Off by default: clients could pick their
	// own priority.
	TrustLaneHeader bool `yaml:"trust_lane_header"`
	// Limits are the default quotas per API key, tenant and client IP.
	Limits LimitRules `yaml:"limits"`
	// Replicas is the number of edgecache instances sharing the global
	// limits: when Redis is down, each enforces 1/Replicas of them.
	// Zero → 1.
	Replicas int `yaml:"replicas"`
	// MaxInFlight bounds requests held by this instance; above shares of it
	// the lowest lanes are shed first (batch 80 %, free 90 %, paid 95 %).
	// Zero → 4096.
	MaxInFlight int `yaml:"max_in_flight"`
	// MaxHeapBytes sheds the same way on heap size. Zero → not watched.
	MaxHeapBytes uint64 `yaml:"max_heap_bytes"`
	// Concurrency bounds the adaptive concurrency limit per upstream
	// target (slow start, then Gradient2 on time to first token). Zeros →
	// 100, 5, 4096.
	Concurrency ConcurrencyLimits `yaml:"concurrency"`
	// Shadow counts would-be rejections of every limiter without enforcing.
	Shadow bool `yaml:"shadow"`
	// Credits are usage credits: requests and tokens per window (a day
	// by default, reset at 00:00 UTC) per key, tenant or lane, shared by
	// the region through Redis. Over one: 429 insufficient_quota until the
	// window ends. None by default.
	Credits []Credit `yaml:"credits"`
}

// Credit is one usage credit (degrade/admission CreditRule).
type Credit struct {
	// Scope is what the credit is counted per: key (each API key), tenant
	// (each tenant of tenants:) or lane (all requests of the lane
	// together).
	Scope string `yaml:"scope"`
	// Lane restricts the credit to one lane; empty → every lane.
	Lane string `yaml:"lane"`
	// Requests and Tokens per window; zero → that kind is unlimited.
	// Tokens are those the upstream reported using (prompt + answer).
	Requests int64 `yaml:"requests"`
	Tokens   int64 `yaml:"tokens"`
	// Window is how often the credit is whole again. Zero → 24h.
	Window Duration `yaml:"window"`
	// Offset moves the windows' start from 00:00 UTC (16h: midnight in
	// UTC+8). Zero → windows start at 00:00 UTC.
	Offset Duration `yaml:"offset"`
}

// LimitRules are quotas per dimension.
type LimitRules struct {
	Key    Limits `yaml:"key"`
	Tenant Limits `yaml:"tenant"`
	IP     Limits `yaml:"ip"`
}

// Limits is one token-bucket quota. Zero rates mean unlimited.
type Limits struct {
	RequestsPerSecond float64 `yaml:"requests_per_second"`
	RequestBurst      int64   `yaml:"request_burst"`
	TokensPerMinute   int64   `yaml:"tokens_per_minute"`
	TokenBurst        int64   `yaml:"token_burst"`
	Shadow            bool    `yaml:"shadow"`
}

// ConcurrencyLimits bound the adaptive limit and tune its slow start
// (degrade/admission, ConcurrencyConfig; README "The adaptive limit").
type ConcurrencyLimits struct {
	Initial int `yaml:"initial"`
	Min     int `yaml:"min"`
	Max     int `yaml:"max"`
	// SlowStartSlack: a TTFT above 1.5 × the no-load TTFT plus this is
	// congestion to slow start. Zero → 1s.
	SlowStartSlack Duration `yaml:"slow_start_slack"`
	// SlowStartWait is the longest queue wait while the limit is in slow
	// start (a lane's own wait if longer). Zero → 5s.
	SlowStartWait Duration `yaml:"slow_start_wait"`
	// NoSlowStart starts the limit in the gradient regime.
	NoSlowStart bool `yaml:"no_slow_start"`
}

// Tenant is a customer: its API keys, lane and quotas.
type Tenant struct {
	Name string `yaml:"name"`
	// Lane: enterprise, paid, free or batch.
	Lane string `yaml:"lane"`
	// APIKeys of the tenant (keep the file secret, or set them through
	// EDGECACHE_TENANT_<NAME>_KEYS, comma-separated). Only their HMACs are
	// kept in memory after start-up.
	APIKeys []string `yaml:"api_keys"`
	// Limits override the tenant-dimension defaults; zero → defaults.
	Limits Limits `yaml:"limits"`
}

// Breaker tunes the per-target circuit breakers.
type Breaker struct {
	FailureRatio float64  `yaml:"failure_ratio"` // zero → 0.5
	MinRequests  int      `yaml:"min_requests"`  // zero → 10
	Window       Duration `yaml:"window"`        // zero → 30s
	Consecutive  int      `yaml:"consecutive"`   // zero → 5
	BaseOpen     Duration `yaml:"base_open"`     // zero → 30s
	MaxOpen      Duration `yaml:"max_open"`      // zero → 300s
}

// Redis is the region's shared L2. Empty Addrs → no L2.
type Redis struct {
	// Addrs: one address → a single node; several → Redis Cluster; with
	// MasterName → Sentinel. Env EDGECACHE_REDIS_ADDR (comma-separated).
	Addrs []string `yaml:"addrs"`
	// Cluster forces Redis Cluster with one address: a managed cluster's
	// single configuration endpoint. Env EDGECACHE_REDIS_CLUSTER=true.
	Cluster    bool   `yaml:"cluster"`
	MasterName string `yaml:"master_name"`
	// Username (ACL user); env EDGECACHE_REDIS_USERNAME[_FILE].
	Username     string `yaml:"username"`
	UsernameFile string `yaml:"username_file"`
	// Password; env EDGECACHE_REDIS_PASSWORD[_FILE].
	Password     string `yaml:"password"`
	PasswordFile string `yaml:"password_file"`
	DB           int    `yaml:"db"`
	// Timeout is the budget of one cache operation; a slower Redis is a miss.
	// Zero → 50ms.
	Timeout Duration `yaml:"timeout"`
	// Prefix of every key. Empty → "edgecache:v1:".
	Prefix string `yaml:"prefix"`
	// TLS encrypts the connections (and every other Redis client of
	// edgecache's: global limits, the journal stream, route policies).
	TLS RedisTLS `yaml:"tls"`
}

// RedisTLS is how edgecache connects to Redis over TLS.
type RedisTLS struct {
	// Enabled turns TLS on. Env EDGECACHE_REDIS_TLS=true.
	Enabled bool `yaml:"enabled"`
	// CAFile is a PEM bundle of the CAs that sign the server's
	// certificate. Empty → the system's roots.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are a client certificate, for a Redis that
	// verifies clients (tls-auth-clients yes). Both or neither.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName is the name the server's certificate must carry. Empty →
	// the host of the address dialled.
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify accepts any server certificate. For tests only:
	// it gives up the protection TLS is for.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// Config returns the crypto/tls configuration t describes: nil when TLS is
// off, an error when a file cannot be read or parsed.
func (t RedisTLS) Config() (*tls.Config, error) {
	if !t.Enabled {
		return nil, nil
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("redis.tls.ca_file: %w", err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("redis.tls.ca_file %s: no PEM certificate in it", t.CAFile)
		}
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		return nil, errors.New("redis.tls: cert_file and key_file go together")
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("redis.tls client certificate: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// Cache sizes the tiers.
type Cache struct {
	// L1MaxBytes bounds the in-process L1. Zero → 256 MiB.
	L1MaxBytes int64 `yaml:"l1_max_bytes"`
	// StoreQueue is the length of the write-behind queue; a full queue drops
	// the write and counts it. Zero → 1024.
	StoreQueue int `yaml:"store_queue"`
}

// Semantic configures the semantic tier used by routes in mode semantic.
type Semantic struct {
	// Embedder: local (Universal Sentence Encoder Lite, loaded from
	// ModelDir; falls back to lexical, loudly, when the model is missing),
	// lexical (hashed n-grams, no model) or remote (an OpenAI-compatible
	// /v1/embeddings API). Empty → local.
	Embedder string `yaml:"embedder"`
	// ModelDir holds the local model (make model). Env EDGECACHE_MODEL_DIR;
	// empty → models/use-lite.
	ModelDir string `yaml:"model_dir"`
	// LocalPrecision is the arithmetic of the local model's matmuls: int8
	// (int8 weights and activations, AVX-512 VNNI; embeddings within the
	// published tolerance of float32's, several times faster), float32 (the
	// reference) or auto (int8 where the CPU has AVX-512 VNNI, else
	// float32). Env EDGECACHE_LOCAL_PRECISION; empty → auto.
	LocalPrecision string `yaml:"local_precision"`
	// Remote is the embeddings API when Embedder is remote.
	Remote RemoteEmbedder `yaml:"remote"`
	// Index: embedded (in-process, the default) or qdrant.
	Index string `yaml:"index"`
	// SnapshotPath persists the embedded index across restarts. Empty → no
	// persistence (the index refills as answers are stored).
	SnapshotPath string `yaml:"snapshot_path"`
	// MaxPoints bounds the embedded index. Zero → 1,000,000.
	MaxPoints int `yaml:"max_points"`
	// Qdrant is the vector store when Index is qdrant.
	Qdrant Qdrant `yaml:"qdrant"`
	// EmbedTimeout bounds embedding a prompt on the request path; slower
	// means exact-only for that request. Zero → 150ms.
	EmbedTimeout Duration `yaml:"embed_timeout"`
	// SearchTimeout bounds a vector search. Zero → 50ms.
	SearchTimeout Duration `yaml:"search_timeout"`
	// MinCoverage is the share of a prompt's characters the embedder must
	// represent for the prompt to be matched semantically; below it the
	// prompt is exact-only. Zero → 0.9 (embed.MinCoverage).
	MinCoverage float64 `yaml:"min_coverage"`
	// VerifierModel is a verifier model file (edgecache-verifier-v1, written
	// by `edgecache eval --fit --fit-out`) that calibrates the verifier for
	// the embedder: its threshold becomes the default threshold of routes
	// that set none, and its steps the retrieval pre-filter. Empty → the
	// built-in calibration (USE-lite's for every embedder but lexical, so a
	// remote embedder's scores mean little without one). It applies to the
	// primary embedder's prompts (not to the Chinese model's). A file that
	// cannot be read, is not valid, or was fitted for another embedder
	// fails start-up; when the local model falls back to lexical, a file
	// fitted for the local model is set aside, loudly. Env
	// EDGECACHE_VERIFIER_MODEL.
	VerifierModel string `yaml:"verifier_model"`
}

// RemoteEmbedder is an OpenAI-compatible embeddings API.
type RemoteEmbedder struct {
	URL   string `yaml:"url"`
	Model string `yaml:"model"`
	// APIKey; env EDGECACHE_EMBED_API_KEY[_FILE]; APIKeyFile reads it
	// from a file.
	APIKey     string `yaml:"api_key"`
	APIKeyFile string `yaml:"api_key_file"`
	// Timeout of one call. Zero → EmbedTimeout.
	Timeout Duration `yaml:"timeout"`
}

// Qdrant is a Qdrant server reached over gRPC.
type Qdrant struct {
	// Addr is host:port of the gRPC API (port 6334). Env
	// EDGECACHE_QDRANT_ADDR; setting it selects index qdrant.
	Addr string `yaml:"addr"`
	// APIKey; env EDGECACHE_QDRANT_API_KEY[_FILE]; APIKeyFile reads it
	// from a file.
	APIKey     string `yaml:"api_key"`
	APIKeyFile string `yaml:"api_key_file"`
	TLS        bool   `yaml:"tls"`
	// CollectionPrefix of the per-model collections (prefix, model, "_",
	// dimension: edgecache_use-lite-v1_512). Empty → "edgecache_".
	CollectionPrefix string `yaml:"collection_prefix"`
}

// Route is one proxied path and its policy.
type Route struct {
	// Name identifies the route in metrics, logs and keys. Required, unique.
	Name string `yaml:"name"`
	// Path is the request path served, e.g. /v1/chat/completions. A
	// segment {name} matches any one segment, e.g. Azure OpenAI's
	// /openai/deployments/{deployment}/chat/completions; the path a
	// request used is then part of its cache keys (two deployments never
	// share an answer).
	Path string `yaml:"path"`
	// API is how requests are understood: chat, completions, embeddings,
	// responses (the Responses API; GET/DELETE/POST under Path/{id} passed
	// through), models (GET, passed through) or json (any JSON POST, exact cache, no
	// streaming). Empty → derived from Path for the OpenAI paths, else json.
	API string `yaml:"api"`
	// UpstreamPath is the path called upstream. Empty → Path. It may use
	// the {name} segments of Path, which take the request's values.
	UpstreamPath string `yaml:"upstream_path"`
	// Upstream names the pool (upstreams:, or default) that serves the
	// route's requests no models: entry routes. Empty → the first pool.
	Upstream string `yaml:"upstream"`
	// Cache is the route's cache policy.
	Cache CachePolicy `yaml:"cache"`
	// Jobs runs the route's background requests at the edge (a Responses
	// route's background: true, a chat route's Prefer: respond-async)
	// instead of passing them through.
	Jobs JobsPolicy `yaml:"jobs"`
}

// JobsPolicy is a route's background jobs (degrade/jobs): accepted at once
// with the Responses API's queued object, run when admission has
// capacity, the answer kept for TTL and fetched with GET {path}/{id} by
// the key that submitted it.
type JobsPolicy struct {
	// Enabled queues background requests at the edge; false: they are
	// passed through to the upstream, which keeps them.
	Enabled bool `yaml:"enabled"`
	// TTL keeps a finished job's answer this long. Zero → 1h.
	TTL Duration `yaml:"ttl"`
	// MaxPerTenant caps one API key's jobs queued or running (429 above).
	// Zero → 100.
	MaxPerTenant int `yaml:"max_per_tenant"`
}

// CachePolicy is a route's cache behaviour.
type CachePolicy struct {
	// Mode: off (pass through), exact, or semantic (exact, then the
	// nearest verified paraphrase of the last user message; chat routes
	// only). Empty → exact.
	Mode string `yaml:"mode"`
	// TTL of stored answers. Zero → 1h.
	TTL Duration `yaml:"ttl"`
	// Shared puts every tenant in one namespace (a public FAQ route). By
	// default each client API key has its own namespace. A shared answer
	// must be a function of its key alone, so a shared route calls the
	// upstream with the edge's own key (upstream.api_key, and each
	// backup's api_key: required), sends it only the ForwardHeaders, and
	// puts their values in its keys.
	Shared bool `yaml:"shared"`
	// ForwardHeaders are, on a shared route, the only request headers sent
	// upstream besides what the edge sets itself (its own key,
	// Content-Type, User-Agent "edgecache", X-Request-Id and the SDK's
	// X-Stainless-Timeout and X-Stainless-Retry-Count, which the edge
	// reads for its deadline and retries). The value of each one joins
	// the route's exact and semantic keys: two values (two personas)
	// never share an entry. Empty → none. Shared routes only (a private
	// route forwards every end-to-end header); credentials, hop-by-hop
	// headers and the edge's own are refused.
	ForwardHeaders []string `yaml:"forward_headers"`
	// Reveal, on a shared route, tells a client whether its answer came
	// from the cache (Cache-Status hit and tier, ttl, Age,
	// X-Edgecache-Similarity) and passes the upstream's response headers,
	// which describe the edge's account. false: every answer that is not
	// degraded says "Cache-Status: edgecache; detail=shared" without Age,
	// and keeps only Content-Type of the upstream's headers, so a hit and
	// a miss look alike in headers. Timing still differs (a hit answers
	// at once, a miss after the model), and a cached body carries the id
	// and created time of the answer first stored: false hides the
	// explicit signal, not every signal. Nil → true.
	Reveal *bool `yaml:"reveal"`
	// MaxTemperature: requests asking for more variety than this bypass the
	// cache. Nil → 1.0 (OpenAI's own default temperature).
	MaxTemperature *float64 `yaml:"max_temperature"`
	// AllowMultipleChoices caches requests with n > 1. Default false: a
	// client that asks for several samples wants different ones each time.
	AllowMultipleChoices bool `yaml:"allow_multiple_choices"`
	// NoCoalesce turns off collapsing identical concurrent misses into one
	// upstream call.
	NoCoalesce bool `yaml:"no_coalesce"`
	// Semantic tunes matching when Mode is semantic.
	Semantic SemanticPolicy `yaml:"semantic"`
	// StaleIfError serves an expired answer up to this old when the
	// upstream fails (RFC 5861). Zero → 24h; negative → never.
	StaleIfError Duration `yaml:"stale_if_error"`
	// DegradedFloor is the lowest verifier score at which the nearest
	// semantic entry is served, marked degraded, when the upstream fails;
	// below the route's threshold the answer's body says which earlier
	// question it answers. Zero → verify.DegradedFloor (0.81, a calibrated
	// score: see the README section "Degraded floor"); negative → never.
	DegradedFloor float64 `yaml:"degraded_floor"`
	// NoTemplates turns off template answers for the route.
	NoTemplates bool `yaml:"no_templates"`
}

// SemanticPolicy is a route's semantic matching. Scores are the verifier's
// match score in [0, 1] (see cache/semantic/verify), not raw cosine.
type SemanticPolicy struct {
	// Threshold a candidate's score must reach to be served. Zero → the
	// verifier's calibrated default for the embedder in use.
	Threshold float64 `yaml:"threshold"`
	// Floor is the lowest threshold a request may ask for with the
	// X-Edgecache-Min-Score header. Zero → Threshold: requests may only be
	// stricter than the route.
	Floor float64 `yaml:"floor"`
	// Shadow verifies a share of semantic hits against the upstream in the
	// background, to measure the route's false-hit rate. Zero → off.
	Shadow ShadowPolicy `yaml:"shadow"`
	// MaxFalseHitRate is the route's error budget, e.g. 0.02: while the
	// upper bound of the measured false-hit rate is over it, the threshold
	// rises in small steps; while comfortably under, it relaxes slowly
	// toward the configured threshold, never under the floor. Every change
	// is an audited policy change. Zero → no steering (the rate is still
	// measured when Shadow samples).
	MaxFalseHitRate float64 `yaml:"max_false_hit_rate"`
}

// ShadowPolicy is a route's shadow verification (cache.semantic.shadow).
type ShadowPolicy struct {
	// Sample is the share of semantic hits asked upstream again after the
	// client got the cached answer, and judged. Zero → none.
	Sample float64 `yaml:"sample"`
	// NearMissSample is the share of near-misses (the best candidate scored
	// just under the threshold) whose stored answer is judged against the
	// request's own upstream answer: no extra upstream call. Zero → none.
	NearMissSample float64 `yaml:"near_miss_sample"`
	// MaxShare bounds the shadow calls as a share of all the route's
	// upstream calls. Zero → 0.05.
	MaxShare float64 `yaml:"max_share"`
	// Nondeterministic also samples requests that ask for variety
	// (temperature above 0, n > 1), whose fresh answer differs by design.
	// Default false.
	Nondeterministic bool `yaml:"nondeterministic"`
	// StoreText keeps the questions and both answers of a disagreement in
	// the journal. Default false: only hashes of the questions, the
	// similarity and the judge's score, since prompts and answers may hold
	// personal data.
	StoreText bool `yaml:"store_text"`
}

// Cache modes.
const (
	ModeOff      = "off"
	ModeExact    = "exact"
	ModeSemantic = "semantic"
)

// Duration is a time.Duration that reads "90s" or "1h30m" in YAML.
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return fmt.Errorf("line %d: duration must be a string like \"30s\"", n.Line)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Load reads the file at path (empty: no file), applies environment
// overrides from getenv (nil: os.Getenv), fills defaults and validates.
func Load(path string, getenv func(string) string) (Config, error) {
	var c Config
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return Config{}, fmt.Errorf("config: %w", err)
		}
		if c, err = Parse(b); err != nil {
			return Config{}, fmt.Errorf("config %s: %w", path, err)
		}
	}
	if getenv == nil {
		getenv = os.Getenv
	}
	if err := c.applyEnv(getenv); err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	c.Default()
	if err := c.Validate(); err != nil {
		if path != "" {
			return Config{}, fmt.Errorf("config %s: %w", path, err)
		}
		return Config{}, fmt.Errorf("config: %w", err)
	}
	return c, nil
}

// Parse decodes a YAML document strictly: unknown fields are errors, so a
// misspelt knob is caught instead of silently ignored.
func Parse(b []byte) (Config, error) {
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, err
	}
	return c, nil
}

func (c *Config) applyEnv(getenv func(string) string) error {
	var errs []error
	set := func(dst *string, name string) {
		if v := getenv(name); v != "" {
			*dst = v
		}
	}
	set(&c.Listen, "EDGECACHE_LISTEN")
	set(&c.AdminListen, "EDGECACHE_ADMIN_LISTEN")
	set(&c.Upstream.URL, "EDGECACHE_UPSTREAM_URL")
	setBool := func(dst *bool, name string) {
		s := getenv(name)
		if s == "" {
			return
		}
		v, err := strconv.ParseBool(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: want true or false", name, s))
			return
		}
		*dst = v
	}
	setDuration := func(dst *Duration, name string) {
		s := getenv(name)
		if s == "" {
			return
		}
		v, err := time.ParseDuration(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: want a duration like 30s", name, s))
			return
		}
		*dst = Duration(v)
	}
	setDuration(&c.Server.ReadHeaderTimeout, "EDGECACHE_READ_HEADER_TIMEOUT")
	setDuration(&c.Server.ReadTimeout, "EDGECACHE_READ_TIMEOUT")
	setDuration(&c.Server.WriteTimeout, "EDGECACHE_WRITE_TIMEOUT")
	setDuration(&c.Server.IdleTimeout, "EDGECACHE_IDLE_TIMEOUT")
	if s := getenv("EDGECACHE_MAX_HEADER_BYTES"); s != "" {
		if v, err := strconv.Atoi(s); err != nil {
			errs = append(errs, fmt.Errorf("EDGECACHE_MAX_HEADER_BYTES=%q: want a number of bytes", s))
		} else {
			c.Server.MaxHeaderBytes = v
		}
	}
	set(&c.Log.Access, "EDGECACHE_LOG_ACCESS")
	if s := getenv("EDGECACHE_LOG_ACCESS_SAMPLE_RATE"); s != "" {
		if v, err := strconv.ParseFloat(s, 64); err != nil {
			errs = append(errs, fmt.Errorf("EDGECACHE_LOG_ACCESS_SAMPLE_RATE=%q: want a number in (0, 1]", s))
		} else {
			c.Log.SampleRate = v
		}
	}
	setBool(&c.Redis.TLS.Enabled, "EDGECACHE_REDIS_TLS")
	setBool(&c.Redis.Cluster, "EDGECACHE_REDIS_CLUSTER")
	set(&c.Degrade.Region, "EDGECACHE_REGION")
	set(&c.Degrade.JournalDir, "EDGECACHE_JOURNAL_DIR")
	set(&c.PolicyFile, "EDGECACHE_POLICY_FILE")
	set(&c.Degrade.TemplatesDir, "EDGECACHE_TEMPLATES_DIR")
	set(&c.Semantic.ModelDir, "EDGECACHE_MODEL_DIR")
	set(&c.Semantic.LocalPrecision, "EDGECACHE_LOCAL_PRECISION")
	set(&c.Semantic.VerifierModel, "EDGECACHE_VERIFIER_MODEL")
	errs = append(errs, c.resolveSecrets(getenv)...)
	if v := getenv("EDGECACHE_QDRANT_ADDR"); v != "" {
		c.Semantic.Qdrant.Addr = v
		c.Semantic.Index = "qdrant"
	}
	if v := getenv("EDGECACHE_REDIS_ADDR"); v != "" {
		c.Redis.Addrs = nil
		for _, a := range strings.Split(v, ",") {
			if a = strings.TrimSpace(a); a != "" {
				c.Redis.Addrs = append(c.Redis.Addrs, a)
			}
		}
	}
	return errors.Join(errs...)
}

// DefaultRoutes are served when the configuration names none.
func DefaultRoutes() []Route {
	return []Route{
		{Name: "chat", Path: "/v1/chat/completions"},
		{Name: "completions", Path: "/v1/completions"},
		{Name: "embeddings", Path: "/v1/embeddings"},
		{Name: "responses", Path: "/v1/responses"},
		{Name: "models", Path: "/v1/models"},
		{Name: "messages", Path: "/v1/messages"},
		{Name: "messages_count_tokens", Path: "/v1/messages/count_tokens", Cache: CachePolicy{Mode: ModeOff}},
	}
}

// Default fills zero fields with their defaults. It is idempotent.
func (c *Config) Default() {
	if c.Log.Access == "" {
		c.Log.Access = AccessFull
	}
	if c.Log.SampleRate == 0 {
		c.Log.SampleRate = 0.1
	}
	if c.Listen == "" {
		c.Listen = ":8080"
	}
	if c.AdminListen == "" {
		c.AdminListen = "127.0.0.1:9090"
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = 8 << 20
	}
	if c.Server.ReadHeaderTimeout == 0 {
		c.Server.ReadHeaderTimeout = Duration(10 * time.Second)
	}
	if c.Server.ReadTimeout == 0 {
		c.Server.ReadTimeout = Duration(30 * time.Second)
	}
	if c.Server.WriteTimeout == 0 {
		c.Server.WriteTimeout = Duration(30 * time.Second)
	}
	if c.Server.IdleTimeout == 0 {
		c.Server.IdleTimeout = Duration(120 * time.Second)
	}
	if c.Server.MaxHeaderBytes == 0 {
		c.Server.MaxHeaderBytes = 64 << 10
	}
	if c.Upstream.Timeout == 0 {
		c.Upstream.Timeout = Duration(120 * time.Second)
	}
	if c.Upstream.StreamIdleTimeout == 0 {
		c.Upstream.StreamIdleTimeout = Duration(60 * time.Second)
	}
	if c.Upstream.MaxIdleConns == 0 {
		c.Upstream.MaxIdleConns = 512
	}
	if c.Redis.Timeout == 0 {
		c.Redis.Timeout = Duration(50 * time.Millisecond)
	}
	if c.Redis.Prefix == "" {
		c.Redis.Prefix = "edgecache:v1:"
	}
	if c.Cache.L1MaxBytes == 0 {
		c.Cache.L1MaxBytes = 256 << 20
	}
	if c.Cache.StoreQueue == 0 {
		c.Cache.StoreQueue = 1024
	}
	d := &c.Degrade
	if d.MaxAttempts == 0 {
		d.MaxAttempts = 3
	}
	if d.RetryBudget == 0 {
		d.RetryBudget = 0.2
	}
	if d.BackoffBase == 0 {
		d.BackoffBase = Duration(100 * time.Millisecond)
	}
	if d.BackoffCap == 0 {
		d.BackoffCap = Duration(2 * time.Second)
	}
	if d.TTFTTimeout == 0 {
		d.TTFTTimeout = c.Upstream.Timeout
	}
	if d.DeadlineMargin == 0 {
		d.DeadlineMargin = Duration(500 * time.Millisecond)
	}
	if d.MaxRetryWait == 0 {
		d.MaxRetryWait = Duration(time.Second)
	}
	if d.JournalDir == "" {
		d.JournalDir = "edgecache-journal"
	}
	if d.Region == "" {
		d.Region = "default"
	}
	for i := range c.Backups {
		if c.Backups[i].Name == "" {
			c.Backups[i].Name = fmt.Sprintf("backup-%d", i+1)
		}
	}
	for i := range c.Upstreams {
		pl := &c.Upstreams[i]
		if pl.Balance == "" {
			pl.Balance = "least_latency"
		}
		if pl.SlowStart == 0 && pl.HealthCheck.Interval > 0 {
			pl.SlowStart = Duration(30 * time.Second)
		}
		for j := range pl.Targets {
			if pl.Targets[j].Name == "" {
				pl.Targets[j].Name = fmt.Sprintf("%s-%d", pl.Name, j)
			}
		}
	}
	if c.PolicyFile == "" {
		c.PolicyFile = "edgecache-routes.json"
	}
	if c.Admission.DefaultLane == "" {
		c.Admission.DefaultLane = "free"
	}
	if c.Admission.Replicas == 0 {
		c.Admission.Replicas = 1
	}
	if c.Admission.MaxInFlight == 0 {
		c.Admission.MaxInFlight = 4096
	}
	if c.Admission.Concurrency.Initial == 0 {
		// Start where a healthy API is (the limit then adapts on time to
		// first token); DEGRADATION.md's 20 throttled a fast upstream for
		// seconds after every start.
		c.Admission.Concurrency.Initial = 100
	}
	if c.Admission.Concurrency.Max == 0 {
		// Slow start finds a healthy API's capacity from the initial limit
		// in a few times to first token; DEGRADATION.md's 500 stopped it
		// at a quarter of a 2,000-stream burst. 4096 is max_in_flight's
		// default: self-protection bounds the instance there anyway.
		c.Admission.Concurrency.Max = 4096
	}
	sm := &c.Semantic
	if sm.Embedder == "" {
		sm.Embedder = "local"
	}
	if sm.ModelDir == "" {
		sm.ModelDir = ModelDir()
	}
	if sm.LocalPrecision == "" {
		sm.LocalPrecision = "auto"
	}
	if sm.Index == "" {
		sm.Index = "embedded"
	}
	if sm.MaxPoints == 0 {
		sm.MaxPoints = 1_000_000
	}
	if sm.EmbedTimeout == 0 {
		sm.EmbedTimeout = Duration(150 * time.Millisecond)
	}
	if sm.SearchTimeout == 0 {
		sm.SearchTimeout = Duration(50 * time.Millisecond)
	}
	if sm.Remote.Timeout == 0 {
		sm.Remote.Timeout = sm.EmbedTimeout
	}
	if sm.Qdrant.CollectionPrefix == "" {
		sm.Qdrant.CollectionPrefix = "edgecache_"
	}
	if sm.MinCoverage == 0 {
		sm.MinCoverage = 0.9
	}
	if len(c.Routes) == 0 {
		c.Routes = DefaultRoutes()
	}
	for i := range c.Routes {
		r := &c.Routes[i]
		if r.API == "" {
			r.API = apiForPath(r.Path)
		}
		if r.UpstreamPath == "" {
			r.UpstreamPath = r.Path
		}
		if r.Cache.Mode == "" {
			r.Cache.Mode = ModeExact
			if r.API == "models" {
				r.Cache.Mode = ModeOff
			}
		}
		if r.Cache.TTL == 0 {
			r.Cache.TTL = Duration(time.Hour)
		}
		if r.Cache.MaxTemperature == nil {
			one := 1.0
			r.Cache.MaxTemperature = &one
		}
		if r.Cache.StaleIfError == 0 {
			r.Cache.StaleIfError = Duration(24 * time.Hour)
		}
		if r.Cache.DegradedFloor == 0 {
			r.Cache.DegradedFloor = defaultDegradedFloor()
		}
		if r.Jobs.TTL == 0 {
			r.Jobs.TTL = Duration(time.Hour)
		}
		if r.Jobs.MaxPerTenant == 0 {
			r.Jobs.MaxPerTenant = 100
		}
	}
}

// defaultDegradedFloor is verify.DegradedFloor as the float64 a
// configuration file would hold (0.81, not 0.8100000023841858), so the
// effective configuration prints the calibrated value as it is written.
func defaultDegradedFloor() float64 {
	f, _ := strconv.ParseFloat(strconv.FormatFloat(float64(verify.DegradedFloor), 'g', -1, 32), 64)
	return f
}

func apiForPath(p string) string {
	p = strings.TrimSuffix(p, "/")
	if p == "/v1/models" || p == "/models" {
		return "models"
	}
	// The OpenAI paths under any prefix: /v1/…, Azure's
	// /openai/deployments/{deployment}/….
	switch {
	case strings.HasSuffix(p, "/chat/completions"):
		return "chat"
	case strings.HasSuffix(p, "/completions"):
		return "completions"
	case strings.HasSuffix(p, "/embeddings"):
		return "embeddings"
	case strings.HasSuffix(p, "/responses"):
		return "responses"
	case strings.HasSuffix(p, "/messages"):
		return "anthropic"
	}
	return "json"
}

// DefaultModelDir is where `make model` puts USE-lite, relative to the
// project's root.
const DefaultModelDir = "models/use-lite"

// ModelDir is DefaultModelDir under the working directory when it holds
// the model, else under the parent of the executable's directory (a binary
// built into bin/ and started from elsewhere), else DefaultModelDir as is
// (the caller then reports the model missing).
func ModelDir() string {
	has := func(dir string) bool {
		_, err := os.Stat(filepath.Join(dir, "model.json"))
		return err == nil
	}
	if has(DefaultModelDir) {
		return DefaultModelDir
	}
	if exe, err := os.Executable(); err == nil {
		if d := filepath.Join(filepath.Dir(filepath.Dir(exe)), DefaultModelDir); has(d) {
			return d
		}
	}
	return DefaultModelDir
}

// PathParams returns the names of path's {name} segments in order, and an
// error for a brace that is not a whole segment {name} (letters, digits,
// _ and -, not starting with a digit) or a name used twice.
func PathParams(path string) ([]string, error) {
	var names []string
	for _, seg := range strings.Split(path, "/") {
		if !strings.ContainsAny(seg, "{}") {
			continue
		}
		name, ok := strings.CutPrefix(seg, "{")
		if name, ok = strings.CutSuffix(name, "}"); !ok || !validParam(name) {
			return nil, fmt.Errorf("segment %q: a parameter is a whole segment {name}", seg)
		}
		if slices.Contains(names, name) {
			return nil, fmt.Errorf("parameter {%s} appears twice", name)
		}
		names = append(names, name)
	}
	return names, nil
}

// pathShape is path with every {name} segment written {}: two routes of
// one shape would serve the same requests.
func pathShape(path string) string {
	segs := strings.Split(path, "/")
	for i, s := range segs {
		if strings.HasPrefix(s, "{") {
			segs[i] = "{}"
		}
	}
	return strings.Join(segs, "/")
}

func validParam(s string) bool {
	if s == "" || s[0] >= '0' && s[0] <= '9' {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// Validate checks ranges and cross-field rules and reports every problem
// found, one per line.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.Upstream.URL != "" {
		if _, _, err := upstream.ParseURL(c.Upstream.URL); err != nil {
			bad("upstream.url %q: must be an absolute http, https or h2c URL", c.Upstream.URL)
		}
	}
	switch c.Log.Access {
	case AccessFull, AccessSampled, AccessOff:
	default:
		bad("log.access %q: want full, sampled or off", c.Log.Access)
	}
	if r := c.Log.SampleRate; !(r > 0 && r <= 1) {
		bad("log.sample_rate %v: want a share in (0, 1]", r)
	}
	if c.MaxBodyBytes < 1024 {
		bad("max_body_bytes %d: must be at least 1024", c.MaxBodyBytes)
	}
	for model, p := range c.Pricing {
		if model == "" || p.InputPerMillion < 0 || p.OutputPerMillion < 0 || math.IsNaN(p.InputPerMillion) || math.IsNaN(p.OutputPerMillion) {
			bad("pricing[%q]: a model name and non-negative prices", model)
		}
		if len(p.Currency) > 16 {
			bad("pricing[%q].currency %q: at most 16 characters (a code such as USD)", model, p.Currency)
		}
	}
	if sv := c.Server; sv.ReadHeaderTimeout.D() < 0 || sv.ReadTimeout.D() < 0 || sv.WriteTimeout.D() < 0 || sv.IdleTimeout.D() < 0 {
		bad("server timeouts must not be negative")
	}
	if c.Server.MaxHeaderBytes < 4096 {
		bad("server.max_header_bytes %d: must be at least 4096 (a bearer token and an SDK's headers)", c.Server.MaxHeaderBytes)
	}
	if c.Upstream.Timeout.D() < 0 || c.Upstream.StreamIdleTimeout.D() < 0 {
		bad("upstream timeouts must not be negative")
	}
	if c.Redis.Timeout.D() < 0 {
		bad("redis.timeout must not be negative")
	}
	if _, err := c.Redis.TLS.Config(); err != nil {
		bad("%v", err)
	}
	if c.Cache.L1MaxBytes < 0 {
		bad("cache.l1_max_bytes must not be negative")
	}
	if c.Cache.StoreQueue < 0 {
		bad("cache.store_queue must not be negative")
	}
	if c.Degrade.MaxAttempts < 1 || c.Degrade.MaxAttempts > 10 {
		bad("degrade.max_attempts %d: want 1..10", c.Degrade.MaxAttempts)
	}
	if c.Degrade.MaxRetryWait.D() < 0 {
		bad("degrade.max_retry_wait must not be negative")
	}
	if c.Degrade.RetryBudget < 0 || c.Degrade.RetryBudget > 1 {
		bad("degrade.retry_budget %g: want [0, 1]", c.Degrade.RetryBudget)
	}
	if b := c.Degrade.Breaker; b.FailureRatio < 0 || b.FailureRatio > 1 || b.MinRequests < 0 || b.Consecutive < 0 ||
		b.Window.D() < 0 || b.BaseOpen.D() < 0 || b.MaxOpen.D() < 0 {
		bad("degrade.breaker: failure_ratio in [0, 1], counts and durations not negative")
	}
	for i, t := range c.AdminTokens {
		if t.Name == "" || len(t.Token) < 16 {
			bad("admin_tokens[%d] %q: a name and a token of at least 16 characters are required", i, t.Name)
		}
	}
	lanes := map[string]bool{"enterprise": true, "paid": true, "free": true, "batch": true}
	if !lanes[c.Admission.DefaultLane] {
		bad("admission.default_lane %q: want enterprise, paid, free or batch", c.Admission.DefaultLane)
	}
	if c.Admission.Replicas < 1 || c.Admission.MaxInFlight < 0 {
		bad("admission: replicas must be at least 1 and max_in_flight not negative")
	}
	for _, l := range []Limits{c.Admission.Limits.Key, c.Admission.Limits.Tenant, c.Admission.Limits.IP} {
		if l.RequestsPerSecond < 0 || l.RequestBurst < 0 || l.TokensPerMinute < 0 || l.TokenBurst < 0 {
			bad("admission.limits: rates and bursts must not be negative")
		}
	}
	for i, cr := range c.Admission.Credits {
		where := fmt.Sprintf("admission.credits[%d]", i)
		if cr.Scope != "key" && cr.Scope != "tenant" && cr.Scope != "lane" {
			bad("%s: scope %q: want key, tenant or lane", where, cr.Scope)
		}
		if cr.Lane != "" && !lanes[cr.Lane] {
			bad("%s: lane %q: want enterprise, paid, free or batch", where, cr.Lane)
		}
		if cr.Requests < 0 || cr.Tokens < 0 || cr.Requests == 0 && cr.Tokens == 0 {
			bad("%s: set requests or tokens (or both), not negative", where)
		}
		w := cr.Window.D()
		if w == 0 {
			w = 24 * time.Hour
		}
		if w < time.Second || cr.Offset.D() < 0 || cr.Offset.D() >= w {
			bad("%s: window at least 1s, offset in [0, window)", where)
		}
	}
	tenantNames, tenantKeys := map[string]bool{}, map[string]bool{}
	for i, t := range c.Tenants {
		if t.Name == "" || tenantNames[t.Name] {
			bad("tenants[%d]: a unique name is required", i)
		}
		tenantNames[t.Name] = true
		if !lanes[t.Lane] {
			bad("tenant %q: lane %q: want enterprise, paid, free or batch", t.Name, t.Lane)
		}
		for _, k := range t.APIKeys {
			if tenantKeys[k] {
				bad("tenant %q: an API key belongs to two tenants", t.Name)
			}
			tenantKeys[k] = true
		}
	}
	backupNames := map[string]bool{"primary": true}
	for i, b := range c.Backups {
		if _, _, err := upstream.ParseURL(b.URL); err != nil {
			bad("backups[%d] %q: url %q must be an absolute http, https or h2c URL", i, b.Name, b.URL)
		}
		if backupNames[b.Name] {
			bad("backups[%d]: duplicate name %q", i, b.Name)
		}
		backupNames[b.Name] = true
	}
	c.validatePools(bad)
	sm := c.Semantic
	switch sm.Embedder {
	case "local", "lexical":
	case "remote":
		if sm.Remote.URL == "" || sm.Remote.Model == "" {
			bad("semantic.remote: url and model are required with embedder remote")
		}
	default:
		bad("semantic.embedder %q: want local, lexical or remote", sm.Embedder)
	}
	switch sm.LocalPrecision {
	case "auto", "int8", "float32":
	default:
		bad("semantic.local_precision %q: want auto, int8 or float32", sm.LocalPrecision)
	}
	switch sm.Index {
	case "embedded":
	case "qdrant":
		if sm.Qdrant.Addr == "" {
			bad("semantic.qdrant.addr is required with index qdrant")
		}
	default:
		bad("semantic.index %q: want embedded or qdrant", sm.Index)
	}
	if sm.MaxPoints < 0 || sm.EmbedTimeout.D() < 0 || sm.SearchTimeout.D() < 0 {
		bad("semantic: max_points and timeouts must not be negative")
	}
	if sm.MinCoverage < 0 || sm.MinCoverage > 1 {
		bad("semantic.min_coverage %v: want a share in (0, 1]", sm.MinCoverage)
	}
	c.validateRoutes(bad)
	for _, r := range c.Routes {
		if !r.Cache.Shared {
			continue
		}
		if c.Upstream.URL != "" || len(c.Upstreams) == 0 {
			if c.Upstream.APIKey == "" {
				bad("route %q: cache.shared needs the edge's own upstream key: set upstream.api_key (env EDGECACHE_UPSTREAM_API_KEY), "+
					"or the answer every tenant gets would be filled with the key of whichever tenant asked first", r.Name)
			}
		}
		for _, pl := range c.Upstreams {
			for _, pt := range pl.Targets {
				if pt.APIKey == "" {
					bad("route %q: cache.shared needs the edge's own key on every target: %q of upstream pool %q has no api_key", r.Name, pt.Name, pl.Name)
				}
			}
		}
		for _, b := range c.Backups {
			if b.APIKey == "" {
				bad("route %q: cache.shared needs the edge's own key on every target: backup %q has no api_key", r.Name, b.Name)
			}
		}
	}
	return errors.Join(errs...)
}

// ValidateRoutes checks the routes alone: each route's own rules and that
// no two share a name or a path. Validate runs it too; a route policy
// changed at run time (which cannot change the rest) is checked with it.
func (c *Config) ValidateRoutes() error {
	var errs []error
	c.validateRoutes(func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) })
	return errors.Join(errs...)
}

func (c *Config) validateRoutes(bad func(format string, args ...any)) {
	names, paths := map[string]bool{}, map[string]bool{}
	for i, r := range c.Routes {
		where := fmt.Sprintf("routes[%d]", i)
		if r.Name != "" {
			where = fmt.Sprintf("route %q", r.Name)
		}
		switch {
		case r.Name == "":
			bad("%s: name is required", where)
		case names[r.Name]:
			bad("%s: duplicate route name", where)
		}
		names[r.Name] = true
		switch {
		case !strings.HasPrefix(r.Path, "/"):
			bad("%s: path %q must start with /", where, r.Path)
		case strings.HasPrefix(r.Path, "/admin") || strings.HasPrefix(r.Path, "/_"):
			bad("%s: path %q is reserved", where, r.Path)
		case paths[pathShape(r.Path)]:
			bad("%s: path %q is served by another route", where, r.Path)
		}
		paths[pathShape(r.Path)] = true
		params, err := PathParams(r.Path)
		if err != nil {
			bad("%s: path %q: %v", where, r.Path, err)
		}
		if !strings.HasPrefix(r.UpstreamPath, "/") {
			bad("%s: upstream_path %q must start with /", where, r.UpstreamPath)
		}
		if up, err := PathParams(r.UpstreamPath); err != nil {
			bad("%s: upstream_path %q: %v", where, r.UpstreamPath, err)
		} else {
			for _, n := range up {
				if !slices.Contains(params, n) {
					bad("%s: upstream_path %q uses {%s}, which path %q does not have", where, r.UpstreamPath, n, r.Path)
				}
			}
		}
		if len(params) > 0 && r.API == "models" {
			bad("%s: a models route cannot have path parameters", where)
		}
		switch r.API {
		case "chat", "completions", "embeddings", "models", "json", "responses", "anthropic":
		default:
			bad("%s: api %q: want chat, completions, embeddings, models, responses, anthropic or json", where, r.API)
		}
		if r.Jobs.Enabled && r.API != "responses" && r.API != "chat" {
			bad("%s: jobs needs a responses or chat route", where)
		}
		if r.Jobs.TTL < 0 || r.Jobs.MaxPerTenant < 0 {
			bad("%s: jobs.ttl and jobs.max_per_tenant must not be negative", where)
		}
		switch r.Cache.Mode {
		case ModeOff, ModeExact:
		case ModeSemantic:
			if r.API != "chat" && r.API != "responses" && r.API != "anthropic" {
				bad("%s: cache.mode semantic needs a chat, responses or anthropic route", where)
			}
		default:
			bad("%s: cache.mode %q: want off, exact or semantic", where, r.Cache.Mode)
		}
		if sp := r.Cache.Semantic; sp.Threshold < 0 || sp.Threshold > 1 || sp.Floor < 0 || sp.Floor > 1 {
			bad("%s: cache.semantic threshold and floor must be in [0, 1]", where)
		} else if sp.Threshold > 0 && sp.Floor > sp.Threshold {
			bad("%s: cache.semantic.floor %g is above the threshold %g", where, sp.Floor, sp.Threshold)
		}
		if sh := r.Cache.Semantic.Shadow; sh.Sample < 0 || sh.Sample > 1 || sh.NearMissSample < 0 || sh.NearMissSample > 1 {
			bad("%s: cache.semantic.shadow sample and near_miss_sample must be shares in [0, 1]", where)
		} else if sh.MaxShare < 0 || sh.MaxShare >= 1 {
			bad("%s: cache.semantic.shadow.max_share %g: want a share in [0, 1) of the route's upstream calls", where, sh.MaxShare)
		}
		if b := r.Cache.Semantic.MaxFalseHitRate; b < 0 || b >= 1 {
			bad("%s: cache.semantic.max_false_hit_rate %g: want a rate in [0, 1), e.g. 0.02", where, b)
		}
		if r.API == "models" && r.Cache.Mode != ModeOff {
			bad("%s: a models route is passed through; cache.mode must be off", where)
		}
		if r.Cache.TTL.D() < 0 {
			bad("%s: cache.ttl must not be negative", where)
		}
		if t := r.Cache.MaxTemperature; t != nil && (*t < 0 || *t > 2) {
			bad("%s: cache.max_temperature %g: want a value in [0, 2]", where, *t)
		}
		validateSharing(r, where, bad)
	}
}

// validateSharing checks a route's forward_headers and reveal.
func validateSharing(r Route, where string, bad func(format string, args ...any)) {
	if !r.Cache.Shared {
		if len(r.Cache.ForwardHeaders) > 0 {
			bad("%s: cache.forward_headers applies to shared routes (a private route forwards every end-to-end header)", where)
		}
		if r.Cache.Reveal != nil && !*r.Cache.Reveal {
			bad("%s: cache.reveal: false applies to shared routes (a private route's cache status only tells a tenant about its own requests)", where)
		}
		return
	}
	seen := map[string]bool{}
	for _, h := range r.Cache.ForwardHeaders {
		name := http.CanonicalHeaderKey(h)
		switch why := unforwardable(name); {
		case !validHeaderName(h):
			bad("%s: cache.forward_headers: %q is not a header name", where, h)
		case why != "":
			bad("%s: cache.forward_headers: %s cannot be forwarded on a shared route: %s", where, name, why)
		case seen[name]:
			bad("%s: cache.forward_headers: %s is listed twice", where, name)
		}
		seen[name] = true
	}
}

// unforwardable says why a shared route must not forward the header
// (canonical name), or "".
func unforwardable(name string) string {
	switch name {
	case "Authorization", "Api-Key", "X-Api-Key", "Proxy-Authorization", "Cookie":
		return "it carries a tenant's credentials (a shared route calls the upstream with the edge's own key)"
	case "Host", "Content-Length", "Transfer-Encoding", "Connection", "Keep-Alive", "Proxy-Connection", "Te", "Trailer",
		"Upgrade", "Accept-Encoding":
		return "it belongs to one connection, not to the request"
	case "Content-Type", "User-Agent", "X-Request-Id", "X-Stainless-Timeout", "X-Stainless-Retry-Count":
		return "the edge sets it on every shared call, and it must not split the route's keys"
	case "Cache-Control", "Pragma":
		return "it is a directive to the edge, not to the model"
	}
	if strings.HasPrefix(name, "X-Edgecache-") {
		return "it is a directive to the edge, not to the model"
	}
	return ""
}

// validHeaderName reports whether s is an HTTP token (RFC 9110 §5.1).
func validHeaderName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return s != ""
}

// validatePools checks upstreams: and models:.
func (c *Config) validatePools(bad func(string, ...any)) {
	pools := map[string]bool{"default": c.Upstream.URL != ""}
	targets := map[string]bool{"primary": true}
	for _, b := range c.Backups {
		targets[b.Name] = true
	}
	for i, pl := range c.Upstreams {
		where := fmt.Sprintf("upstreams[%d] %q", i, pl.Name)
		if pl.Name == "" {
			bad("upstreams[%d]: name is required", i)
		} else if _, dup := pools[pl.Name]; dup {
			bad("%s: duplicate name (default is the upstream + backups)", where)
		}
		pools[pl.Name] = true
		switch pl.Balance {
		case "round_robin", "least_requests", "least_latency":
		default:
			bad("%s: balance %q: want round_robin, least_requests or least_latency", where, pl.Balance)
		}
		if len(pl.Targets) == 0 {
			bad("%s: at least one target is required", where)
		}
		h := pl.HealthCheck
		if h.Interval < 0 || h.Timeout < 0 || h.Unhealthy < 0 || h.Healthy < 0 || h.Jitter < 0 || h.Jitter >= 1 || pl.SlowStart < 0 {
			bad("%s: health_check and slow_start must not be negative (jitter below 1)", where)
		}
		if h.Interval > 0 && h.Timeout.D() > h.Interval.D() {
			bad("%s: health_check.timeout must not exceed its interval", where)
		}
		if h.Path != "" && !strings.HasPrefix(h.Path, "/") {
			bad("%s: health_check.path %q must start with /", where, h.Path)
		}
		for j, t := range pl.Targets {
			if _, _, err := upstream.ParseURL(t.URL); err != nil {
				bad("%s: targets[%d]: url %q must be an absolute http, https or h2c URL", where, j, t.URL)
			}
			if t.Weight < 0 {
				bad("%s: targets[%d]: weight must not be negative", where, j)
			}
			if t.MaxConcurrency < 0 {
				bad("%s: targets[%d]: max_concurrency must not be negative", where, j)
			}
			if targets[t.Name] {
				bad("%s: targets[%d]: duplicate target name %q", where, j, t.Name)
			}
			targets[t.Name] = true
		}
	}
	for _, r := range c.Routes {
		if r.Upstream != "" && !pools[r.Upstream] {
			bad("route %q: no upstream pool named %q", r.Name, r.Upstream)
		}
	}
	for i, m := range c.Models {
		if m.Match == "" {
			bad("models[%d]: match is required", i)
		} else if _, err := path.Match(m.Match, ""); err != nil {
			bad("models[%d]: match %q: %v", i, m.Match, err)
		}
		for _, n := range append([]string{m.Upstream}, m.Fallback...) {
			if !pools[n] {
				bad("models[%d] %q: no upstream pool named %q", i, m.Match, n)
			}
		}
	}
}
