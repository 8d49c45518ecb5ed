package pipeline

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/edgecache/edgecache/cmd/internal/config"
	"github.com/edgecache/edgecache/cmd/internal/openai"
)

// Route is a compiled, immutable route policy. A request holds on to the
// snapshot it started with; a policy change swaps in a new *Route.
type Route struct {
	Name         string
	Path         string
	UpstreamPath string
	// Pool names the pool serving requests no model route matches; "" or
	// unknown → the first pool.
	Pool string
	API  openai.API

	Cache  bool // mode exact; false: pass through
	TTL    time.Duration
	Shared bool // one namespace for every tenant, filled with the edge's key
	// ForwardHeaders are the canonical names of the only client headers a
	// shared route sends upstream, sorted; their values join its keys.
	ForwardHeaders []string
	// Reveal: a shared route's answers say whether they came from the
	// cache. Always true on private routes.
	Reveal         bool
	MaxTemperature float64 // above it: bypass
	AllowN         bool    // cache n > 1
	Coalesce       bool

	Semantic  bool    // also match the nearest verified paraphrase
	Threshold float32 // verifier score to serve a semantic match; 0 → the tier's default
	Floor     float32 // lowest threshold a request may ask for; 0 → Threshold
	// Configured is the threshold of the configuration file (0 → the
	// tier's default) before run-time changes: the calibrated default that
	// shadow steering relaxes toward.
	Configured float32
	// Shadow samples semantic hits for verification upstream (shadow.go).
	Shadow ShadowPolicy

	StaleIfError  time.Duration // serve expired answers this old when the upstream fails; 0 → never
	DegradedFloor float32       // serve the nearest semantic answer at this score when the upstream fails; 0 → never
	Templates     bool          // template answers when the upstream fails

	// Generation is part of every exact key of the route: bumping it (a
	// purge) makes all older entries unreachable; they expire on their own.
	Generation int64

	// Jobs runs background requests at the edge (pipeline/jobs.go).
	Jobs JobsPolicy

	// path is Path split on "/" and upstream UpstreamPath split the same
	// way; from[i] is the position in path of upstream[i]'s {name}
	// segment, whose value the request fills in, or -1 for a fixed one.
	// Nil for a plain path.
	path, upstream []string
	from           []int
}

// JobsPolicy is a route's background jobs: config.JobsPolicy.
type JobsPolicy struct {
	Enabled      bool
	TTL          time.Duration // a finished job's answer is kept this long
	MaxPerTenant int           // jobs queued or running per key; 0 → no cap
}

// ShadowPolicy is a route's shadow verification: cache.semantic.shadow
// and cache.semantic.max_false_hit_rate.
type ShadowPolicy struct {
	Sample         float64 // share of semantic hits asked upstream again; 0 → none
	NearMissSample float64 // share of near-misses judged (no extra call); 0 → none
	// MaxShare bounds shadow calls as a share of all the route's upstream
	// calls; 0 → 0.05.
	MaxShare float64
	// MaxFalseHitRate is the error budget the threshold is steered to; 0 →
	// no steering.
	MaxFalseHitRate float64
	// Nondeterministic also samples requests that ask for variety
	// (temperature above 0, n > 1).
	Nondeterministic bool
	// StoreText journals the questions and answers of disagreements, not
	// only their hashes.
	StoreText bool
}

// maxShare is MaxShare with its default.
func (sp ShadowPolicy) maxShare() float64 {
	if sp.MaxShare == 0 {
		return 0.05
	}
	return sp.MaxShare
}

// Templated reports whether Path has {name} segments: the path a request
// used is then part of its keys.
func (rt *Route) Templated() bool { return rt.path != nil }

// scope is what besides the body tells apart requests of the route: the
// query string (Azure's api-version), on a templated route the path
// (Azure's deployment), and the headers that change the answer (part,
// from partition).
func (rt *Route) scope(r *http.Request, part string) string {
	s := r.URL.RawQuery
	if rt.path != nil {
		s = r.URL.Path + "?" + s
	}
	if part != "" {
		s += part
	}
	return s
}

// matches reports whether path has the shape of the route's templated
// Path: as many segments, the same fixed ones, and no empty parameter.
func (rt *Route) matches(path string) bool {
	got := strings.Split(path, "/")
	if len(got) != len(rt.path) {
		return false
	}
	for i, seg := range rt.path {
		if strings.HasPrefix(seg, "{") {
			if got[i] == "" {
				return false
			}
		} else if got[i] != seg {
			return false
		}
	}
	return true
}

// upstreamPath is the path to call upstream for r: UpstreamPath with its
// {name} segments replaced by the segments r's path has there.
func (rt *Route) upstreamPath(r *http.Request) string {
	if rt.path == nil {
		return rt.UpstreamPath + subPath(rt, r)
	}
	got := strings.Split(r.URL.Path, "/")
	out := slices.Clone(rt.upstream)
	for i, at := range rt.from {
		if at >= 0 && at < len(got) {
			out[i] = got[at]
		}
	}
	return strings.Join(out, "/")
}

// Compile turns validated route configuration into policies.
func Compile(rs []config.Route) ([]*Route, error) {
	out := make([]*Route, 0, len(rs))
	for _, r := range rs {
		rt := &Route{
			Name:         r.Name,
			Path:         r.Path,
			UpstreamPath: r.UpstreamPath,
			Pool:         r.Upstream,
			API:          openai.API(r.API),
			Cache:        r.Cache.Mode == config.ModeExact || r.Cache.Mode == config.ModeSemantic,
			Semantic:     r.Cache.Mode == config.ModeSemantic,
			Threshold:    float32(r.Cache.Semantic.Threshold),
			Floor:        float32(r.Cache.Semantic.Floor),
			Configured:   float32(r.Cache.Semantic.Threshold),
			Shadow: ShadowPolicy{Sample: r.Cache.Semantic.Shadow.Sample, NearMissSample: r.Cache.Semantic.Shadow.NearMissSample,
				MaxShare: r.Cache.Semantic.Shadow.MaxShare, MaxFalseHitRate: r.Cache.Semantic.MaxFalseHitRate,
				Nondeterministic: r.Cache.Semantic.Shadow.Nondeterministic, StoreText: r.Cache.Semantic.Shadow.StoreText},
			StaleIfError: max(r.Cache.StaleIfError.D(), 0),
			Templates:    !r.Cache.NoTemplates,
			TTL:          r.Cache.TTL.D(),
			Shared:       r.Cache.Shared,
			Reveal:       !r.Cache.Shared || r.Cache.Reveal == nil || *r.Cache.Reveal,
			AllowN:       r.Cache.AllowMultipleChoices,
			Coalesce:     !r.Cache.NoCoalesce,
			Jobs:         JobsPolicy{Enabled: r.Jobs.Enabled, TTL: r.Jobs.TTL.D(), MaxPerTenant: r.Jobs.MaxPerTenant},
		}
		if r.Cache.MaxTemperature == nil {
			return nil, fmt.Errorf("route %q: defaults not applied", r.Name)
		}
		rt.MaxTemperature = *r.Cache.MaxTemperature
		if rt.Shared {
			for _, h := range r.Cache.ForwardHeaders {
				rt.ForwardHeaders = append(rt.ForwardHeaders, http.CanonicalHeaderKey(h))
			}
			slices.Sort(rt.ForwardHeaders)
			rt.ForwardHeaders = slices.Compact(rt.ForwardHeaders)
		}
		names, err := config.PathParams(r.Path)
		if err != nil {
			return nil, fmt.Errorf("route %q: %w", r.Name, err)
		}
		if len(names) > 0 {
			rt.path = strings.Split(r.Path, "/")
			rt.upstream = strings.Split(r.UpstreamPath, "/")
			rt.from = make([]int, len(rt.upstream))
			for i, seg := range rt.upstream {
				rt.from[i] = -1
				if strings.HasPrefix(seg, "{") {
					rt.from[i] = slices.Index(rt.path, seg) // validated: path has it
				}
			}
		}
		if r.Cache.DegradedFloor > 0 {
			rt.DegradedFloor = float32(r.Cache.DegradedFloor)
		}
		out = append(out, rt)
	}
	return out, nil
}
