package app

// Shadow verification wiring: the pipeline's shadow samples judged and
// steered through the route policies, disagreements into the journal, the
// estimates onto /metrics, the admin API, the CLI and the review page.

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/edgecache/edgecache/cmd/internal/config"
	"github.com/edgecache/edgecache/cmd/internal/pipeline"
	"github.com/edgecache/edgecache/cmd/internal/policy"
	"github.com/edgecache/edgecache/cmd/internal/server"
	"github.com/edgecache/edgecache/cmd/internal/telemetry"
	"github.com/edgecache/edgecache/degrade/journal"
)

// shadowConfig is the pipeline's shadow verification: routes read from the
// policy store, threshold changes made through it (audited, shared with
// the region's replicas), disagreements journaled.
func shadowConfig(table *policy.Store, jr *journal.Journal, m pipeline.ShadowMetrics) *pipeline.ShadowConfig {
	return &pipeline.ShadowConfig{Route: table.Route, Steer: table.Steer, Journal: journalSink{jr}, Metrics: m}
}

// Disagreement implements pipeline.ShadowJournal: a record of rung
// shadow-disagreement, whose cache key is what a purge of disagreements
// deletes from the index.
func (s journalSink) Disagreement(d *pipeline.Disagreement) {
	s.j.Record(journal.Record{
		Time: d.Time, RequestID: d.RequestID, Tenant: d.Tenant, Route: d.Route, ModelRequested: d.Model,
		Rung: journal.RungShadowDisagreement, Reason: "judge_" + d.Judgement.Reason, Status: 200,
		Cache: &journal.Cache{Key: d.CacheKey, Similarity: d.Similarity, Score: d.Score, MatchedHash: d.MatchedHash},
		Shadow: &journal.Shadow{QueryHash: d.QueryHash, MatchedHash: d.MatchedHash, Similarity: d.Similarity,
			Score: d.Score, Threshold: d.Threshold, Verdict: d.Judgement.Verdict.String(),
			JudgeScore: d.Judgement.Score, JudgeReason: d.Judgement.Reason,
			Query: d.Query, Matched: d.Matched, Served: d.CachedAnswer, Fresh: d.FreshAnswer},
	})
}

// falseHitRates reads the routes' estimates for /metrics: the routes with
// something judged.
func falseHitRates(p *pipeline.Pipeline, routes []config.Route) func() []telemetry.FalseHitRate {
	return func() []telemetry.FalseHitRate {
		var out []telemetry.FalseHitRate
		for _, r := range routes {
			if st, ok := p.ShadowStats(r.Name); ok && st.Judged > 0 {
				out = append(out, telemetry.FalseHitRate{Route: r.Name, Estimate: st.Estimate, Lower: st.Lower, Upper: st.Upper})
			}
		}
		return out
	}
}

// routeView is a route's policy as the admin API shows it, with its shadow
// verification when it has a semantic tier.
type routeView struct {
	policy.View
	Shadow *pipeline.ShadowStats `json:"shadow,omitempty"`
}

func (a *adminAPI) withShadow(v policy.View) routeView {
	rv := routeView{View: v}
	if a.shadow != nil {
		if st, ok := a.shadow(v.Name); ok {
			rv.Shadow = &st
		}
	}
	return rv
}

// maxPurged bounds the disagreement records one purge reads.
const maxPurged = 10000

// PurgeDisagreements implements server.ShadowPurger: the stored answers
// that shadow verification found served wrongly on the route (the journal's
// shadow-disagreement records, from every replica when the journal is in
// Redis) leave the semantic index in one action. Their exact entries stay:
// each is the right answer to its own question.
func (a *adminAPI) PurgeDisagreements(ctx context.Context, name, who string) (any, error) {
	if _, err := a.policies.Get(name); err != nil {
		return nil, policyErr(err)
	}
	recs, err := a.journal.Query(ctx, journal.Query{Route: name, Rung: journal.RungShadowDisagreement, Limit: maxPurged})
	out := map[string]any{"route": name}
	if err != nil {
		if len(recs) == 0 {
			return nil, err
		}
		out["warning"] = err.Error() // Redis unreadable: the local records were purged
	}
	keys := map[string]bool{}
	for _, r := range recs {
		if r.Cache != nil && validKey(r.Cache.Key) {
			keys[r.Cache.Key] = true
		}
	}
	deleted, failed := 0, 0
	if a.index != nil {
		for k := range keys {
			if err := a.index.Delete(ctx, k); err != nil {
				failed++
				continue
			}
			deleted++
		}
	}
	out["disagreements"], out["answers"], out["semantic_points_deleted"] = len(recs), len(keys), deleted
	if failed > 0 {
		out["warning"] = fmt.Sprintf("%d semantic point(s) could not be deleted; run the purge again", failed)
	}
	logOrDiscard(a.log).Info("shadow disagreements purged from the semantic index", "route", name, "by", who,
		"disagreements", len(recs), "points", deleted, "failed", failed)
	return out, nil
}

var _ server.ShadowPurger = (*adminAPI)(nil)

// logOrDiscard is l, or a logger that discards.
func logOrDiscard(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}
