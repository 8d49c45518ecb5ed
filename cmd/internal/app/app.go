// Package app is the edgecache program: it parses flags and configuration,
// builds the cache tiers, the upstream client and the pipeline, serves the
// data and admin listeners, and drains everything on shutdown.
package app

import (
	"context"

	"errors"
	"flag"
	"fmt"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/edgecache/edgecache/cache"
	"github.com/edgecache/edgecache/cache/local"
	"github.com/edgecache/edgecache/cache/shared"
	"github.com/edgecache/edgecache/cmd/internal/config"
	"github.com/edgecache/edgecache/cmd/internal/eval"
	"github.com/edgecache/edgecache/cmd/internal/llmsim"
	"github.com/edgecache/edgecache/cmd/internal/pipeline"
	"github.com/edgecache/edgecache/cmd/internal/policy"
	"github.com/edgecache/edgecache/cmd/internal/server"
	"github.com/edgecache/edgecache/cmd/internal/telemetry"
	"github.com/edgecache/edgecache/cmd/internal/upstream"
	"github.com/edgecache/edgecache/degrade"
	"github.com/edgecache/edgecache/degrade/journal"
	"github.com/edgecache/edgecache/templates"
)

const usage = `edgecache — an edge cache and degradation service for OpenAI-compatible LLM APIs.

Usage:
  edgecache [serve] [flags]     run the proxy (the default command)
  edgecache eval --pairs FILE   score semantic matching on labelled pairs (edgecache eval -h)
  edgecache degradations [--since 1h] [--route R] [--rung R] [--json]
                                review degraded answers (asks a running edgecache's admin API)
  edgecache routes list|show|set|reset|purge|audit
                                read and change route policies at run time (admin API)
  edgecache upstreams list|drain|undrain|weight|audit
                                upstream pools and targets; drain or reweight a target at run time
  edgecache version             print the version

Serve flags:
`

// Version is set at build time with -ldflags "-X ...app.Version=...".
var Version = "dev"

// Run runs the program with args (without the program name) until ctx is
// canceled. A canceled ctx is a clean shutdown, not an error.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "serve":
			args = args[1:]
		case "eval":
			return eval.Main(ctx, args[1:], stdout, stderr)
		case "train-zh":
			return eval.TrainZh(ctx, args[1:], stdout, stderr)
		case "degradations":
			return degradations(ctx, args[1:], stdout, stderr)
		case "routes":
			return routesCmd(ctx, args[1:], stdout, stderr)
		case "upstreams":
			return upstreamsCmd(ctx, args[1:], stdout, stderr)
		case "version", "--version", "-version":
			fmt.Fprintln(stdout, "edgecache", Version)
			return nil
		}
	}
	return serve(ctx, args, stdout, stderr)
}

type serveFlags struct {
	config, listen, adminListen, upstream, redis string
	journalDir                                   string
	sim                                          bool
	logLevel                                     string
}

func parseServeFlags(args []string, stderr io.Writer) (serveFlags, error) {
	var f serveFlags
	fs := flag.NewFlagSet("edgecache", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage); fs.PrintDefaults() }
	fs.StringVar(&f.config, "config", os.Getenv("EDGECACHE_CONFIG"), "YAML configuration file (env EDGECACHE_CONFIG)")
	fs.StringVar(&f.listen, "listen", "", "data listen address (env EDGECACHE_LISTEN, default :8080)")
	fs.StringVar(&f.adminListen, "admin-listen", "", "admin listen address (env EDGECACHE_ADMIN_LISTEN, default 127.0.0.1:9090)")
	fs.StringVar(&f.upstream, "upstream", "", "upstream base URL (env EDGECACHE_UPSTREAM_URL)")
	fs.StringVar(&f.redis, "redis", "", "Redis address(es), comma-separated (env EDGECACHE_REDIS_ADDR); empty: no L2")
	fs.StringVar(&f.journalDir, "journal-dir", "", "degradation journal directory (env EDGECACHE_JOURNAL_DIR, default ./edgecache-journal)")
	fs.BoolVar(&f.sim, "sim", false, "no real model: start the built-in simulator llmsim on loopback and use it as the upstream (demos)")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return f, err
	}
	if fs.NArg() > 0 {
		return f, fmt.Errorf("unexpected argument %q (see edgecache -h)", fs.Arg(0))
	}
	return f, nil
}

func serve(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f, err := parseServeFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	if file, ok := stderr.(*os.File); ok {
		// A process's stderr (a file, pipe or terminal): batch the log's
		// lines (telemetry.LogBuffer says why). A writer handed in by an
		// embedding program or a test gets every line at once.
		lb := telemetry.NewLogBuffer(file, 64<<10, 100*time.Millisecond)
		defer lb.Close()
		stderr = lb
	}
	log := slog.New(telemetry.LogHandler(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}), pipeline.LogAttrs))

	getenv := func(name string) string {
		switch {
		case name == "EDGECACHE_LISTEN" && f.listen != "":
			return f.listen
		case name == "EDGECACHE_ADMIN_LISTEN" && f.adminListen != "":
			return f.adminListen
		case name == "EDGECACHE_UPSTREAM_URL" && f.upstream != "":
			return f.upstream
		case name == "EDGECACHE_REDIS_ADDR" && f.redis != "":
			return f.redis
		case name == "EDGECACHE_JOURNAL_DIR" && f.journalDir != "":
			return f.journalDir
		}
		return os.Getenv(name)
	}
	cfg, err := config.Load(f.config, getenv)
	if err != nil {
		return err
	}

	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	if f.sim {
		if cfg.Upstream.URL != "" {
			return errors.New("--sim and an upstream URL exclude each other")
		}
		sim, err := llmsim.Start(ctx, "127.0.0.1:0", llmsim.Config{TTFT: 300 * time.Millisecond, TokensPerSec: 60, AnswerTokens: 40})
		if err != nil {
			return fmt.Errorf("start llmsim: %w", err)
		}
		defer sim.Close()
		cfg.Upstream.URL = sim.URL()
		log.Warn("no real model: answers come from the built-in simulator llmsim (--sim)", "upstream", sim.URL())
		fmt.Fprintf(stdout, "edgecache: --sim: upstream is the built-in simulator llmsim at %s (simulated answers)\n", sim.URL())
	}
	if cfg.Upstream.URL == "" && len(cfg.Upstreams) == 0 {
		return errors.New("no upstream: set EDGECACHE_UPSTREAM_URL (or upstream.url in the config file), or pass --sim to try edgecache against the built-in simulator")
	}
	tel, err := telemetry.Setup(ctx, nil)
	if err != nil {
		return err
	}
	defer tel.Shutdown(context.WithoutCancel(ctx))
	targets, pools, models, err := buildPools(cfg, tel.Propagator)
	if err != nil {
		return err
	}
	tm, err := telemetry.NewMetrics(tel.MeterProvider)
	if err != nil {
		return err
	}
	prices := map[string]telemetry.Price{}
	for model, pr := range cfg.Pricing {
		prices[model] = telemetry.Price{InputPerMillion: pr.InputPerMillion, OutputPerMillion: pr.OutputPerMillion, Currency: pr.Currency}
	}
	tm.SetPricing(prices)
	metrics := newLookupStats(tm)

	l1, err := local.New(local.Config{MaxBytes: cfg.Cache.L1MaxBytes})
	if err != nil {
		return fmt.Errorf("l1: %w", err)
	}
	defer l1.Close()
	tiers, names := []cache.Tier{l1}, []string{"l1"}
	// One client for the region's Redis, closed after everything that uses
	// it (defers run last-in first-out).
	rclient, err := redisClient(cfg.Redis, tel)
	if err != nil {
		return err
	}
	if rclient != nil {
		defer rclient.Close()
	}
	var l2 *shared.Shared
	if rclient != nil {
		l2, err = shared.New(shared.Config{Client: rclient, Prefix: cfg.Redis.Prefix, Timeout: cfg.Redis.Timeout.D(), Logger: log})
		if err != nil {
			return fmt.Errorf("l2: %w", err)
		}
		defer l2.Close()
		tiers, names = append(tiers, l2), append(names, "l2")
	} else {
		log.Info("no Redis configured (EDGECACHE_REDIS_ADDR): L1 only")
	}
	if tel.Tracing {
		for i, t := range tiers {
			tiers[i] = tracedTier{Tier: t, name: names[i], tracer: tel.TracerProvider.Tracer("github.com/edgecache/edgecache")}
		}
	}
	tiered := cache.NewTiered(cache.TieredConfig{QueueSize: cfg.Cache.StoreQueue, Logger: log, Prepare: pipeline.DeriveUsage}, tiers...)

	var store secretStore // a nil *shared.Shared must stay a nil interface
	if l2 != nil {
		store = l2
	}
	secret, err := newTenantSecret(ctx, []byte(cfg.TenantSecret), store, log)
	if err != nil {
		return err
	}

	routes, err := pipeline.Compile(cfg.Routes)
	if err != nil {
		return err
	}
	sem, err := buildSemantic(ctx, cfg.Semantic, log)
	if err != nil {
		return err
	}
	defer sem.close()
	if sem.fallback != "" {
		fmt.Fprintf(stdout, "edgecache: semantic tier uses the lexical embedder: %s\n", sem.fallback)
	}
	adm, err := buildAdmission(cfg, rclient, targets, log)
	if err != nil {
		return err
	}
	var jsink *journal.RedisSink
	if rclient != nil {
		if jsink, err = journal.NewRedisSink(rclient, cfg.Degrade.Region, 0); err != nil {
			return fmt.Errorf("journal: %w", err)
		}
	}
	jr, err := journal.New(journal.Config{Dir: cfg.Degrade.JournalDir, Redis: jsink, Region: cfg.Degrade.Region, Logger: log})
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = jr.Close(cctx)
	}()
	tw, err := templates.NewWatcher(cfg.Degrade.TemplatesDir, 0, log)
	if err != nil {
		return fmt.Errorf("templates: %w", err)
	}
	defer tw.Close()

	table, err := policy.New(ctx, policy.Config{Routes: cfg.Routes, File: cfg.PolicyFile, Redis: rclient,
		Region: cfg.Degrade.Region, Logger: log, Targets: targets})
	if err != nil {
		return err
	}
	wg.Add(1)
	go func() { defer wg.Done(); table.Run(ctx) }()

	p := pipeline.New(pipeline.Config{
		Semantic:            sem.cfg,
		Shadow:              shadowConfig(table, jr, tm),
		Journal:             journalSink{jr},
		Admission:           adm,
		Tracer:              tel.TracerProvider.Tracer("github.com/edgecache/edgecache"),
		NamespaceGeneration: table.NamespaceGeneration,
		Templates:           templateWords{tw},
		Cache:               tiered, Tiers: names, Targets: targets, Pools: pools, Models: models, Secret: secret.current(),
		Guard: pipeline.GuardConfig{
			MaxAttempts: cfg.Degrade.MaxAttempts, BackoffBase: cfg.Degrade.BackoffBase.D(), BackoffCap: cfg.Degrade.BackoffCap.D(),
			TTFTTimeout: cfg.Degrade.TTFTTimeout.D(), DeadlineMargin: cfg.Degrade.DeadlineMargin.D(),
			RetryWhenClientRetries: cfg.Degrade.RetryWhenClientRetries, MaxRetryWait: cfg.Degrade.MaxRetryWait.D(),
		},
		MaxBodyBytes: cfg.MaxBodyBytes, Timeout: cfg.Upstream.Timeout.D(),
		StreamIdleTimeout: cfg.Upstream.StreamIdleTimeout.D(),
		Metrics:           metrics, Logger: log,
		Jobs: jobsConfig(cfg, routes, rclient),
	})
	secret.onChange = p.SetSecret
	p.StartHealthChecks(ctx)
	wg.Add(1)
	go func() { defer wg.Done(); secret.run(ctx) }()
	var redisUp func() bool
	if l2 != nil {
		redisUp = l2.Healthy
	}
	if err := telemetry.Gauges(tel.MeterProvider, func() map[string]int {
		out := make(map[string]int, len(targets))
		for _, t := range targets {
			out[t.Name] = map[string]int{"closed": 0, "half-open": 1, "open": 2}[t.Breaker.Status().State]
		}
		return out
	}, redisUp); err != nil {
		return err
	}
	if err := telemetry.FalseHitRates(tel.MeterProvider, falseHitRates(p, cfg.Routes)); err != nil {
		return err
	}
	if err := telemetry.EmbedTexts(tel.MeterProvider, sem.memo.Counts); err != nil {
		return err
	}

	ready := func() map[string]any {
		st := map[string]any{"upstream": upstreamHost(cfg.Upstream.URL), "sim": f.sim,
			"embedder": sem.embedder, "vector_index": sem.index, "vector_index_state": sem.indexState(),
			"verifier": sem.verifier, "verifier_threshold": sem.threshold}
		if sem.fallback != "" {
			st["embedder_fallback"] = sem.fallback
		}
		st["tenant_secret"] = secret.source()
		switch {
		case l2 == nil:
			st["redis"] = "disabled"
		case l2.Healthy():
			st["redis"] = "up"
		default:
			st["redis"] = "down"
		}
		return st
	}

	dataLn, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("data listener: %w", err)
	}
	adminLn, err := net.Listen("tcp", cfg.AdminListen)
	if err != nil {
		dataLn.Close()
		return fmt.Errorf("admin listener: %w", err)
	}
	limits := server.Limits{ReadHeaderTimeout: cfg.Server.ReadHeaderTimeout.D(), ReadTimeout: cfg.Server.ReadTimeout.D(),
		WriteTimeout: cfg.Server.WriteTimeout.D(), IdleTimeout: cfg.Server.IdleTimeout.D(), MaxHeaderBytes: cfg.Server.MaxHeaderBytes}
	dataSrv := server.NewHTTPServer(tel.Wrap(server.Data(p, routes, table, tm, log, server.AccessLog{Mode: cfg.Log.Access, SampleRate: cfg.Log.SampleRate, Out: stderr}), "edgecache"), limits, log)
	adminSrv := server.NewHTTPServer(server.Admin(tel.Handler, ready, &adminAPI{targets: targets, pools: p.Pools, journal: jr, policies: table, cache: tiered, index: sem.cfg.Index, stats: metrics, secret: secret.current,
		shadow: p.ShadowStats, log: log},
		server.NewAdminAuth(adminLn.Addr().String(), adminTokens(cfg)), log), limits, log)

	if auth := server.NewAdminAuth(adminLn.Addr().String(), nil); auth.Required && len(cfg.AdminTokens) == 0 {
		log.Warn("admin listener is not on loopback and no admin tokens are configured (EDGECACHE_ADMIN_TOKENS): /admin endpoints answer 401", "admin", adminLn.Addr().String())
	}
	errc := make(chan error, 2)
	for _, s := range []struct {
		srv *http.Server
		ln  net.Listener
	}{{dataSrv, dataLn}, {adminSrv, adminLn}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		}()
	}
	log.Info("edgecache serving", "listen", dataLn.Addr().String(), "admin", adminLn.Addr().String(),
		"upstream", upstreamHost(cfg.Upstream.URL), "routes", len(routes), "tiers", strings.Join(names, ","))
	fmt.Fprintf(stdout, "edgecache listening on %s (admin %s)\n", dataLn.Addr(), adminLn.Addr())

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	// Drain: stop taking requests, let answers in flight finish and reach
	// the cache, then flush the write queue.
	sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer scancel()
	_ = dataSrv.Shutdown(sctx)
	if err := p.Close(sctx); err != nil {
		log.Warn("pipeline drain", "err", err)
	}
	if err := tiered.Close(sctx); err != nil {
		log.Warn("cache drain", "err", err)
	}
	_ = adminSrv.Shutdown(sctx)
	wg.Wait()
	log.Info("edgecache stopped")
	return runErr
}

func upstreamHost(u string) string {
	if i := strings.Index(u, "://"); i >= 0 {
		u = u[i+3:]
	}
	if i := strings.IndexAny(u, "/?"); i >= 0 {
		u = u[:i]
	}
	if i := strings.LastIndex(u, "@"); i >= 0 { // never log credentials in a URL
		u = u[i+1:]
	}
	return u
}

// buildPools makes every target — the primary upstream and the backups
// (the pool "default", tried in order, when upstream.url is set) and the
// targets of the upstreams: pools — each with its own breaker and retry
// budget, the pools, and the model routes.
func buildPools(cfg config.Config, prop propagation.TextMapPropagator) ([]*pipeline.Target, []*pipeline.Pool, []pipeline.ModelRoute, error) {
	bc := degrade.BreakerConfig{
		FailureRatio: cfg.Degrade.Breaker.FailureRatio, MinRequests: cfg.Degrade.Breaker.MinRequests,
		Window: cfg.Degrade.Breaker.Window.D(), Consecutive: cfg.Degrade.Breaker.Consecutive,
		BaseOpen: cfg.Degrade.Breaker.BaseOpen.D(), MaxOpen: cfg.Degrade.Breaker.MaxOpen.D(),
	}
	type spec struct {
		name, url, key string
		models         map[string]string
	}
	target := func(s spec) (*pipeline.Target, error) {
		c, err := upstream.New(upstream.Config{URL: s.url, APIKey: s.key,
			HeaderTimeout: cfg.Upstream.Timeout.D(), MaxIdleConns: cfg.Upstream.MaxIdleConns, Propagator: prop})
		if err != nil {
			return nil, fmt.Errorf("upstream %s: %w", s.name, err)
		}
		return &pipeline.Target{Name: s.name, Client: c, Breaker: degrade.NewBreaker(s.name, bc),
			Budget: &degrade.RetryBudget{Ratio: cfg.Degrade.RetryBudget}, Models: s.models}, nil
	}
	var out []*pipeline.Target
	var pools []*pipeline.Pool
	byName := map[string]*pipeline.Pool{}
	if cfg.Upstream.URL != "" {
		specs := []spec{{"primary", cfg.Upstream.URL, cfg.Upstream.APIKey, nil}}
		for _, b := range cfg.Backups {
			specs = append(specs, spec{b.Name, b.URL, b.APIKey, b.Models})
		}
		for _, s := range specs {
			t, err := target(s)
			if err != nil {
				return nil, nil, nil, err
			}
			out = append(out, t)
		}
		if len(cfg.Upstreams) > 0 || len(cfg.Models) > 0 {
			def := &pipeline.Pool{Name: "default", Balance: pipeline.BalanceFailover, Targets: out[:len(out):len(out)]}
			for _, t := range out {
				t.Pool = def.Name
			}
			pools, byName["default"] = append(pools, def), def
		}
	}
	for _, pc := range cfg.Upstreams {
		h := pc.HealthCheck
		pl := &pipeline.Pool{Name: pc.Name, Balance: pc.Balance, Health: pipeline.HealthCheck{
			Path: h.Path, Interval: h.Interval.D(), Timeout: h.Timeout.D(), Unhealthy: h.Unhealthy, Healthy: h.Healthy, Jitter: h.Jitter}}
		for _, tc := range pc.Targets {
			t, err := target(spec{tc.Name, tc.URL, tc.APIKey, tc.Models})
			if err != nil {
				return nil, nil, nil, err
			}
			t.Weight, t.SlowStart, t.Pool, t.MaxConcurrency = tc.Weight, pc.SlowStart.D(), pc.Name, tc.MaxConcurrency
			pl.Targets = append(pl.Targets, t)
			out = append(out, t)
		}
		pools, byName[pc.Name] = append(pools, pl), pl
	}
	var models []pipeline.ModelRoute
	for _, m := range cfg.Models {
		mr := pipeline.ModelRoute{Match: m.Match, Pool: byName[m.Upstream]}
		for _, f := range m.Fallback {
			mr.Fallback = append(mr.Fallback, byName[f])
		}
		if mr.Pool == nil || slices.Contains(mr.Fallback, nil) {
			return nil, nil, nil, fmt.Errorf("models %q: unknown upstream pool", m.Match)
		}
		models = append(models, mr)
	}
	return out, pools, models, nil
}

func adminTokens(cfg config.Config) []server.Token {
	out := make([]server.Token, 0, len(cfg.AdminTokens))
	for _, t := range cfg.AdminTokens {
		out = append(out, server.Token{Name: t.Name, Token: t.Token})
	}
	return out
}

// tracerIf is the tracer provider when spans are exported, else nil (no
// instrumentation cost).
func tracerIf(t *telemetry.Telemetry) trace.TracerProvider {
	if t.Tracing {
		return t.TracerProvider
	}
	return nil
}

// redisClient builds the region's one Redis client, shared by L2, global
// limits, the journal stream, route policies and the tenant secret, or
// returns nil when no Redis is configured. Each of those keeps its own
// fail-open guard and bounds its calls with its own deadline.
func redisClient(r config.Redis, tel *telemetry.Telemetry) (redis.UniversalClient, error) {
	t, err := r.TLS.Config()
	if err != nil {
		return nil, err
	}
	if len(r.Addrs) == 0 {
		return nil, nil
	}
	conn := shared.Conn{Addrs: r.Addrs, Cluster: r.Cluster, MasterName: r.MasterName, Username: r.Username, Password: r.Password, DB: r.DB, TLS: t}
	c, err := shared.NewClient(conn, shared.ClientOptions{TracerProvider: tracerIf(tel), MeterProvider: tel.MeterProvider})
	if err != nil {
		return nil, fmt.Errorf("redis: %w", err)
	}
	return c, nil
}

// jobsConfig is the pipeline's background jobs when a route enables them,
// else nil (background requests passed through).
func jobsConfig(cfg config.Config, routes []*pipeline.Route, rclient redis.UniversalClient) *pipeline.JobsConfig {
	on := false
	for _, rt := range routes {
		on = on || rt.Jobs.Enabled
	}
	if !on {
		return nil
	}
	file := cfg.Degrade.JobsFile
	if file == "" {
		file = filepath.Join(cfg.Degrade.JournalDir, "jobs.json")
	}
	jc := &pipeline.JobsConfig{File: file, Routes: routes, Region: cfg.Degrade.Region, Lease: cfg.Degrade.JobsLease.D()}
	if rclient != nil {
		jc.Redis = rclient // shared by the region's replicas
	}
	return jc
}
