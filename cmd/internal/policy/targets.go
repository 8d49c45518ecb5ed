package policy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/edgecache/edgecache/cmd/internal/pipeline"
)

// Upstream targets' run-time weight and drain are kept like route
// overrides, by the same mechanism, so that an operator has one place to
// look and every replica of the region follows within a second: entries
// "target:<name>" in the same Redis hash (or local file), announced on the
// same channel, re-read on the same resync, and audited in the same trail
// (Audit.Target). A drained target gets no new requests from any replica;
// the requests in flight finish.

// targetPrefix marks the entries of upstream targets.
const targetPrefix = "target:"

// AuditUpstreams is the Audit filter for every upstream target's changes.
const AuditUpstreams = "upstreams"

// ErrUnknownTarget is returned for a pool and target not configured.
var ErrUnknownTarget = errors.New("policy: unknown upstream target")

// TargetView is an upstream target's configured and run-time weight and
// its drain, as the admin API shows and the audit trail records it.
type TargetView struct {
	Pool string `json:"pool"`
	Name string `json:"name"`
	// Weight is the configured weight; RuntimeWeight the one in force
	// instead (0 → none).
	Weight        int       `json:"weight"`
	RuntimeWeight int       `json:"runtime_weight,omitempty"`
	Drained       bool      `json:"drained"`
	Version       int64     `json:"version"`
	UpdatedAt     time.Time `json:"updated_at,omitzero"`
	UpdatedBy     string    `json:"updated_by,omitempty"`
}

// installTargets puts the stored target overrides in force, and the
// configuration on the targets without one, keeping their entries in
// kept; s.mu is held (or s is being built).
func (s *Store) installTargets(entries, kept map[string]Entry) {
	for name, t := range s.targets {
		e, ok := entries[targetPrefix+name]
		if !ok || e.Target == nil {
			t.SetOverride(pipeline.Override{})
			continue
		}
		t.SetOverride(*e.Target)
		kept[targetPrefix+name] = e
	}
}

// target is the target pool/name; the pool of targets without upstreams:
// pools is "default".
func (s *Store) target(pool, name string) (*pipeline.Target, error) {
	t := s.targets[name]
	if t == nil || (t.Pool != pool && !(t.Pool == "" && pool == "default")) {
		return nil, ErrUnknownTarget
	}
	return t, nil
}

func (s *Store) targetViewLocked(t *pipeline.Target) TargetView {
	pool := t.Pool
	if pool == "" {
		pool = "default"
	}
	v := TargetView{Pool: pool, Name: t.Name, Weight: max(t.Weight, 1)}
	if e, ok := s.entries[targetPrefix+t.Name]; ok && e.Target != nil {
		v.RuntimeWeight, v.Drained = e.Target.Weight, e.Target.Drain
		v.Version, v.UpdatedAt, v.UpdatedBy = e.Version, e.UpdatedAt, e.UpdatedBy
	}
	return v
}

// Target returns a target's run-time state.
func (s *Store) Target(pool, name string) (TargetView, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, err := s.target(pool, name)
	if err != nil {
		return TargetView{}, err
	}
	return s.targetViewLocked(t), nil
}

// SetTarget changes a target at run time: patch is a JSON object with
// "weight" (a whole number ≥ 1, or null for the configured weight) and
// "drain" (true, or false/null to take traffic again). who is the admin
// token's name, for the audit trail.
func (s *Store) SetTarget(ctx context.Context, pool, name, who string, patch []byte) (TargetView, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, err := s.target(pool, name)
	if err != nil {
		return TargetView{}, err
	}
	k := targetPrefix + name
	old := s.entries[k]
	var o pipeline.Override
	if old.Target != nil {
		o = *old.Target
	}
	if o, err = mergeTarget(o, patch); err != nil {
		return TargetView{}, err
	}
	before := s.targetViewLocked(t)
	e := Entry{Target: &o, Version: old.Version + 1, UpdatedAt: time.Now().UTC(), UpdatedBy: who}
	if s.cfg.Redis != nil {
		if e.Version, err = s.writeRedis(ctx, k, e); err != nil {
			return TargetView{}, fmt.Errorf("upstream targets: store in Redis: %w", err)
		}
	}
	entries := maps(s.entries)
	entries[k] = e
	if err := s.install(entries); err != nil {
		return TargetView{}, err
	}
	after := s.targetViewLocked(t)
	a := Audit{Time: e.UpdatedAt, Who: who, Action: "target", Target: after.Pool + "/" + name, TargetBefore: &before, TargetAfter: &after}
	if err := s.recordLocked(ctx, a); err != nil {
		return TargetView{}, err
	}
	s.log.Info("upstream target changed", "pool", after.Pool, "target", name, "by", who,
		"runtime_weight", o.Weight, "drained", o.Drain, "version", e.Version)
	return after, nil
}

// mergeTarget applies a JSON patch of weight and drain to o.
func mergeTarget(o pipeline.Override, patch []byte) (pipeline.Override, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(patch, &m); err != nil || m == nil {
		return o, &InvalidError{Msg: "the body must be a JSON object with weight and/or drain"}
	}
	for k, raw := range m {
		null := bytes.Equal(bytes.TrimSpace(raw), []byte("null"))
		switch k {
		case "weight":
			var w int
			switch {
			case null:
				o.Weight = 0
			case json.Unmarshal(raw, &w) != nil || w < 1:
				return o, &InvalidError{Msg: fmt.Sprintf("weight %s: want a whole number ≥ 1, or null for the configured weight (drain a target to stop its traffic)", raw)}
			default:
				o.Weight = w
			}
		case "drain":
			var d bool
			if !null && json.Unmarshal(raw, &d) != nil {
				return o, &InvalidError{Msg: fmt.Sprintf("drain %s: want true or false", raw)}
			}
			o.Drain = d
		default:
			return o, &InvalidError{Msg: fmt.Sprintf("unknown field %q: want weight or drain", k)}
		}
	}
	return o, nil
}
