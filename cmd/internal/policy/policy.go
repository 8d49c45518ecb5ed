// Package policy holds the route policies in force and lets operators
// change them while traffic flows; upstream targets' run-time weight and
// drain are kept, shared and audited the same way (targets.go).
//
// The configuration file gives each route its base policy; an operator's
// change is an Override of a few fields, validated like the file, compiled
// into a new immutable *pipeline.Route and swapped in atomically. Every
// change is audited (who — the admin token's name —, when, before, after).
//
// Without Redis, overrides and the audit trail persist in a local JSON file
// and are re-applied at start. With Redis, they are stored per region: a
// change is written to a hash, appended to an audit stream and announced on
// a pub/sub channel, so every replica applies it within a second; each
// replica also re-reads the hash every few seconds and on reconnect, so one
// that missed a message converges.
package policy

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/edgecache/edgecache/cmd/internal/config"
	"github.com/edgecache/edgecache/cmd/internal/pipeline"
)

// Override is an operator's change to a route's policy. Nil fields keep the
// base (configured) value.
type Override struct {
	Mode          *string  `json:"mode,omitempty"`
	TTL           *string  `json:"ttl,omitempty"`
	StaleIfError  *string  `json:"stale_if_error,omitempty"`
	Threshold     *float64 `json:"threshold,omitempty"`
	Floor         *float64 `json:"floor,omitempty"`
	DegradedFloor *float64 `json:"degraded_floor,omitempty"`
	Templates     *bool    `json:"templates,omitempty"`
	// Generation is bumped by a purge: keys of older generations are never
	// found again.
	Generation int64 `json:"generation,omitempty"`
}

// empty reports whether o changes no policy field.
func (o Override) empty() bool {
	return o.Mode == nil && o.TTL == nil && o.StaleIfError == nil && o.Threshold == nil && o.Floor == nil &&
		o.DegradedFloor == nil && o.Templates == nil
}

// Entry is an override with its version and provenance, as stored.
type Entry struct {
	Override Override `json:"override"`
	// Target is an upstream target's run-time weight and drain, in the
	// entries named "target:<name>" (targets.go).
	Target    *pipeline.Override `json:"target,omitempty"`
	Version   int64              `json:"version"`
	UpdatedAt time.Time          `json:"updated_at"`
	UpdatedBy string             `json:"updated_by"`
}

// View is a route's policy in force, as the admin API shows it.
type View struct {
	Name          string    `json:"name"`
	Path          string    `json:"path"`
	API           string    `json:"api"`
	Mode          string    `json:"mode"`
	TTL           string    `json:"ttl"`
	StaleIfError  string    `json:"stale_if_error"`
	Threshold     float64   `json:"threshold"`
	Floor         float64   `json:"floor"`
	DegradedFloor float64   `json:"degraded_floor"`
	Templates     bool      `json:"templates"`
	Shared        bool      `json:"shared"`
	Generation    int64     `json:"generation"`
	Overridden    bool      `json:"overridden"`
	Version       int64     `json:"version"`
	UpdatedAt     time.Time `json:"updated_at,omitzero"`
	UpdatedBy     string    `json:"updated_by,omitempty"`
}

// Audit is one change: of a route's policy (Route, Before, After), or of
// an upstream target (Target, TargetBefore, TargetAfter).
type Audit struct {
	Time  time.Time `json:"time"`
	Who   string    `json:"who"`
	Route string    `json:"route,omitempty"`
	// Action: "set", "reset", "purge", "steer" (shadow verification) for
	// routes; "target" for an upstream target.
	Action string `json:"action"`
	// Reason is why a change was made, when the system made it (steer).
	Reason string `json:"reason,omitempty"`
	Before *View  `json:"before,omitempty"`
	After  *View  `json:"after,omitempty"`
	// Target is "<pool>/<name>" of an upstream target's change.
	Target       string      `json:"target,omitempty"`
	TargetBefore *TargetView `json:"target_before,omitempty"`
	TargetAfter  *TargetView `json:"target_after,omitempty"`
}

// InvalidError is a change that does not validate (400).
type InvalidError struct{ Msg string }

func (e *InvalidError) Error() string { return e.Msg }

// ErrUnknownRoute is returned for a route name that is not configured.
var ErrUnknownRoute = errors.New("policy: unknown route")

// apply returns the base route with o applied, validated.
func apply(base config.Route, o Override) (config.Route, error) {
	r := base
	if o.Mode != nil {
		r.Cache.Mode = *o.Mode
	}
	dur := func(name string, s *string, dst *config.Duration) error {
		if s == nil {
			return nil
		}
		d, err := time.ParseDuration(*s)
		if err != nil {
			return &InvalidError{Msg: fmt.Sprintf("%s %q: want a duration such as 10m", name, *s)}
		}
		*dst = config.Duration(d)
		return nil
	}
	if err := dur("ttl", o.TTL, &r.Cache.TTL); err != nil {
		return r, err
	}
	if err := dur("stale_if_error", o.StaleIfError, &r.Cache.StaleIfError); err != nil {
		return r, err
	}
	if o.Threshold != nil {
		r.Cache.Semantic.Threshold = *o.Threshold
	}
	if o.Floor != nil {
		r.Cache.Semantic.Floor = *o.Floor
	}
	if o.DegradedFloor != nil {
		r.Cache.DegradedFloor = *o.DegradedFloor
	}
	if o.Templates != nil {
		r.Cache.NoTemplates = !*o.Templates
	}
	if r.Cache.TTL.D() == 0 && o.TTL != nil {
		return r, &InvalidError{Msg: "ttl must be positive"}
	}
	c := config.Config{Routes: []config.Route{r}}
	c.Default()
	if err := c.ValidateRoutes(); err != nil { // the route alone: the rest (the edge's key) was checked at start
		return r, &InvalidError{Msg: strings.ReplaceAll(err.Error(), "\n", "; ")}
	}
	return c.Routes[0], nil
}

// compile makes the pipeline snapshot of r at generation gen.
func compile(r config.Route, gen int64) (*pipeline.Route, error) {
	rs, err := pipeline.Compile([]config.Route{r})
	if err != nil {
		return nil, err
	}
	rs[0].Generation = gen
	return rs[0], nil
}

func view(r config.Route, e *Entry) View {
	v := View{Name: r.Name, Path: r.Path, API: r.API, Mode: r.Cache.Mode, TTL: r.Cache.TTL.D().String(),
		StaleIfError: r.Cache.StaleIfError.D().String(), Threshold: r.Cache.Semantic.Threshold,
		Floor: r.Cache.Semantic.Floor, DegradedFloor: r.Cache.DegradedFloor, Templates: !r.Cache.NoTemplates,
		Shared: r.Cache.Shared}
	if e != nil {
		v.Overridden = !e.Override.empty()
		v.Version, v.UpdatedAt, v.UpdatedBy, v.Generation = e.Version, e.UpdatedAt, e.UpdatedBy, e.Override.Generation
	}
	return v
}

// merge applies a JSON patch (fields of Override; null resets a field to
// the configured value) onto o.
func merge(o Override, patch []byte) (Override, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(patch, &raw); err != nil {
		return o, &InvalidError{Msg: "the body must be a JSON object of policy fields: " + err.Error()}
	}
	known := map[string]bool{"mode": true, "ttl": true, "stale_if_error": true, "threshold": true, "floor": true,
		"degraded_floor": true, "templates": true}
	for k, v := range raw {
		if !known[k] {
			return o, &InvalidError{Msg: fmt.Sprintf("unknown field %q: want mode, ttl, stale_if_error, threshold, floor, degraded_floor or templates", k)}
		}
		if string(v) == "null" {
			switch k {
			case "mode":
				o.Mode = nil
			case "ttl":
				o.TTL = nil
			case "stale_if_error":
				o.StaleIfError = nil
			case "threshold":
				o.Threshold = nil
			case "floor":
				o.Floor = nil
			case "degraded_floor":
				o.DegradedFloor = nil
			case "templates":
				o.Templates = nil
			}
			delete(raw, k)
		}
	}
	rest, _ := json.Marshal(raw)
	dec := json.NewDecoder(strings.NewReader(string(rest)))
	dec.DisallowUnknownFields()
	var p Override // fresh pointers: never write through the stored ones
	if err := dec.Decode(&p); err != nil {
		return o, &InvalidError{Msg: "bad field type: " + err.Error()}
	}
	if p.Mode != nil {
		o.Mode = p.Mode
	}
	if p.TTL != nil {
		o.TTL = p.TTL
	}
	if p.StaleIfError != nil {
		o.StaleIfError = p.StaleIfError
	}
	if p.Threshold != nil {
		o.Threshold = p.Threshold
	}
	if p.Floor != nil {
		o.Floor = p.Floor
	}
	if p.DegradedFloor != nil {
		o.DegradedFloor = p.DegradedFloor
	}
	if p.Templates != nil {
		o.Templates = p.Templates
	}
	return o, nil
}
