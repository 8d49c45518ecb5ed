package app

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/redis/go-redis/v9"

	"github.com/edgecache/edgecache/cmd/internal/config"
	"github.com/edgecache/edgecache/cmd/internal/pipeline"
	"github.com/edgecache/edgecache/degrade/admission"
)

// localQuota adapts admission.Buckets (no context) to pipeline.Quota.
type localQuota struct{ b *admission.Buckets }

func (q localQuota) Reserve(_ context.Context, tokens int64, s ...admission.Subject) admission.Decision {
	return q.b.Reserve(tokens, s...)
}

func (q localQuota) Settle(_ context.Context, est, actual int64, s ...admission.Subject) {
	q.b.Settle(est, actual, s...)
}

func limits(l config.Limits) admission.Limits {
	return admission.Limits{RequestsPerSecond: l.RequestsPerSecond, RequestBurst: l.RequestBurst,
		TokensPerMinute: l.TokensPerMinute, TokenBurst: l.TokenBurst, Shadow: l.Shadow}
}

// buildAdmission makes the quotas (global in Redis when the region has one,
// with a per-instance share as fallback; local otherwise), the tenant
// table, self-protection, and one adaptive concurrency limit per target
// (never above the target's max_concurrency).
func buildAdmission(cfg config.Config, rclient redis.UniversalClient, targets []*pipeline.Target, log *slog.Logger) (*pipeline.AdmissionConfig, error) {
	a := cfg.Admission
	rules := admission.Rules{Key: limits(a.Limits.Key), Tenant: limits(a.Limits.Tenant), IP: limits(a.Limits.IP)}
	out := &pipeline.AdmissionConfig{Tenants: map[string]pipeline.TenantInfo{}, TrustLaneHeader: a.TrustLaneHeader}
	var err error
	if out.DefaultLane, err = admission.ParseLane(a.DefaultLane); err != nil {
		return nil, err
	}
	unlimited := a.Limits == (config.LimitRules{})
	for _, t := range cfg.Tenants {
		unlimited = unlimited && t.Limits == (config.Limits{})
	}
	switch {
	case unlimited:
		// No quota configured: none is checked (the hit path stays cheap).
	case rclient != nil:
		g, err := admission.NewGlobal(admission.GlobalConfig{
			Client:   rclient,
			Region:   cfg.Degrade.Region,
			Replicas: a.Replicas,
			Defaults: rules,
			Shadow:   a.Shadow,
			Logger:   log,
			Timeout:  cfg.Redis.Timeout.D(),
		})
		if err != nil {
			return nil, fmt.Errorf("global limits: %w", err)
		}
		out.Quota = g
	default:
		b, err := admission.NewBuckets(admission.BucketsConfig{Defaults: rules, Shadow: a.Shadow})
		if err != nil {
			return nil, fmt.Errorf("limits: %w", err)
		}
		out.Quota = localQuota{b}
	}
	if out.Credits, err = buildCredits(cfg, rclient, log); err != nil {
		return nil, err
	}
	if out.Protector, err = admission.NewProtector(admission.ProtectConfig{MaxInFlight: a.MaxInFlight,
		MaxHeapBytes: a.MaxHeapBytes, Shadow: a.Shadow}); err != nil {
		return nil, fmt.Errorf("self-protection: %w", err)
	}
	for _, t := range cfg.Tenants {
		lane, err := admission.ParseLane(t.Lane)
		if err != nil {
			return nil, fmt.Errorf("tenant %q: %w", t.Name, err)
		}
		info := pipeline.TenantInfo{Name: t.Name, Lane: lane}
		if t.Limits != (config.Limits{}) {
			l := limits(t.Limits)
			info.Limits = &l
		}
		for _, k := range t.APIKeys {
			out.Tenants[k] = info
		}
	}
	for _, t := range targets {
		// The queue may hold as many requests as self-protection lets in:
		// a burst larger than the package's 1,000 would be shed while slow
		// start grows the limit to admit it a few TTFTs later.
		c, err := admission.NewConcurrency(admission.ConcurrencyConfig{Name: t.Name, InitialLimit: a.Concurrency.Initial,
			MinLimit: a.Concurrency.Min, MaxLimit: a.Concurrency.Max, HardLimit: t.MaxConcurrency, MaxQueue: max(a.MaxInFlight, admission.DefaultMaxQueue),
			SlowStartSlack: a.Concurrency.SlowStartSlack.D(), SlowStartMaxWait: a.Concurrency.SlowStartWait.D(),
			NoSlowStart: a.Concurrency.NoSlowStart, Shadow: a.Shadow})
		if err != nil {
			return nil, fmt.Errorf("concurrency %s: %w", t.Name, err)
		}
		t.Concurrency = c
	}
	return out, nil
}

// buildCredits makes the usage credits (nil when none is configured):
// counted for the region in Redis when there is one, by this instance
// against its share (1/replicas) while Redis is down, alone without it.
func buildCredits(cfg config.Config, rclient redis.UniversalClient, log *slog.Logger) (*admission.Credits, error) {
	if len(cfg.Admission.Credits) == 0 {
		return nil, nil
	}
	rules := make([]admission.CreditRule, 0, len(cfg.Admission.Credits))
	for i, c := range cfg.Admission.Credits {
		scope, err := admission.ParseCreditScope(c.Scope)
		if err != nil {
			return nil, fmt.Errorf("credits[%d]: %w", i, err)
		}
		r := admission.CreditRule{Scope: scope, Requests: c.Requests, Tokens: c.Tokens, Window: c.Window.D(), Offset: c.Offset.D()}
		if c.Lane != "" {
			lane, err := admission.ParseLane(c.Lane)
			if err != nil {
				return nil, fmt.Errorf("credits[%d]: %w", i, err)
			}
			r.Lane = &lane
		}
		rules = append(rules, r)
	}
	cr, err := admission.NewCredits(admission.CreditsConfig{Rules: rules, Client: rclient, Region: cfg.Degrade.Region,
		Timeout: cfg.Redis.Timeout.D(), Replicas: cfg.Admission.Replicas, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("credits: %w", err)
	}
	return cr, nil
}
