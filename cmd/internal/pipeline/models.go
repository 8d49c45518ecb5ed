package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/edgecache/edgecache/cmd/internal/openai"
)

// The model list, when models are routed (Config.Models): clients and SDKs
// ask GET /v1/models which models they may use, and the answer must be the
// models this edge serves — not whatever the first pool happens to list,
// and never a model the edge would answer 404 for.
//
//   - An exact `match` is listed as it is, owned by its pool.
//   - A glob lists the client-facing names its pool's targets rename
//     (Target.Models) that match it, and the models the pool itself lists
//     (its GET /v1/models from one usable target, with the caller's
//     headers) that match it. What a pool listed is kept modelListTTL per
//     pool and caller key, so a client that lists models before every
//     call does not double the upstream's traffic. A pool that cannot be
//     asked (its fallback pools are tried) lists only the renames, and the
//     answer names it in X-Edgecache-Models-Partial.
//   - GET /v1/models/{id} answers the entry of the list, or 404
//     model_not_found.
//
// created is the upstream's when the pool listed the model, else the time
// this edge started (it does not know when a model was made).

// modelListTTL is how long a pool's own model list is kept.
const modelListTTL = 30 * time.Second

// modelFetchTimeout bounds asking a pool for its list.
const modelFetchTimeout = 3 * time.Second

// ModelInfo is one model of the list, in OpenAI's shape.
type ModelInfo struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

// modelLists keeps the pools' own lists.
type modelLists struct {
	mu sync.Mutex
	m  map[string]modelList // pool + "\x00" + caller key id
}

type modelList struct {
	at     time.Time
	models map[string]ModelInfo // nil: the pool could not be asked
}

// serveModels answers GET /v1/models and /v1/models/{id} from the routed
// models.
func (p *Pipeline) serveModels(w http.ResponseWriter, r *http.Request, rt *Route) {
	list, partial := p.modelList(r, rt)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Status", "edgecache; detail=configured-models")
	if len(partial) > 0 {
		h.Set("X-Edgecache-Models-Partial", strings.Join(partial, ", "))
	}
	id, one := strings.CutPrefix(r.URL.Path, strings.TrimSuffix(rt.Path, "/")+"/")
	if !one {
		b, _ := json.Marshal(struct {
			Object string      `json:"object"`
			Data   []ModelInfo `json:"data"`
		}{"list", list}) // plain values: cannot fail
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(b)
		return
	}
	for _, m := range list {
		if m.ID == id {
			b, _ := json.Marshal(m)
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write(b)
			return
		}
	}
	h.Del("Content-Type")
	openai.WriteError(w, http.StatusNotFound, 0, openai.NewError(openai.TypeInvalidRequest, "model_not_found", "model",
		fmt.Sprintf("The model %q does not exist or you do not have access to it.", id)))
}

// modelList builds the list in the order of the models: entries; partial
// names the glob entries' pools that could not be asked.
func (p *Pipeline) modelList(r *http.Request, rt *Route) (list []ModelInfo, partial []string) {
	seen := map[string]bool{}
	add := func(m ModelInfo) {
		if !seen[m.ID] {
			seen[m.ID] = true
			list = append(list, m)
		}
	}
	for i := range p.cfg.Models {
		mr := &p.cfg.Models[i]
		if !isGlob(mr.Match) {
			add(ModelInfo{ID: mr.Match, Object: "model", Created: p.started, OwnedBy: mr.Pool.Name})
			continue
		}
		own, ok := p.poolModels(r, rt, mr)
		if !ok {
			partial = append(partial, mr.Pool.Name)
		}
		for _, t := range mr.Pool.Targets {
			for _, client := range slices.Sorted(maps.Keys(t.Models)) {
				if ok, _ := path.Match(mr.Match, client); ok {
					m, listed := own[t.Models[client]]
					if !listed {
						m = ModelInfo{Object: "model", Created: p.started, OwnedBy: mr.Pool.Name}
					}
					m.ID = client
					add(m)
				}
			}
		}
		for _, id := range slices.Sorted(maps.Keys(own)) {
			if ok, _ := path.Match(mr.Match, id); ok {
				add(own[id])
			}
		}
	}
	if list == nil {
		list = []ModelInfo{}
	}
	return list, partial
}

func isGlob(s string) bool { return strings.ContainsAny(s, `*?[\`) }

// poolModels is what the glob's pool (else its fallback pools, in order)
// lists, kept modelListTTL; ok is false when none could be asked.
func (p *Pipeline) poolModels(r *http.Request, rt *Route, mr *ModelRoute) (map[string]ModelInfo, bool) {
	in := outbound(r, rt, false)
	for _, pl := range append([]*Pool{mr.Pool}, mr.Fallback...) {
		t := usableTarget(pl)
		if t == nil {
			continue
		}
		k := pl.Name + "\x00" + p.source(t, &upstreamRequest{in: in, rt: rt})
		now := p.cfg.Now()
		p.models.mu.Lock()
		c, ok := p.models.m[k]
		p.models.mu.Unlock()
		if !ok || now.Sub(c.at) > modelListTTL || c.models == nil && now.Sub(c.at) > modelListTTL/6 {
			c = modelList{at: now, models: p.fetchModels(r.Context(), t, in)}
			p.models.mu.Lock()
			if p.models.m == nil || len(p.models.m) > 10000 {
				p.models.m = map[string]modelList{} // bounded: many caller keys
			}
			p.models.m[k] = c
			p.models.mu.Unlock()
		}
		if c.models != nil {
			return c.models, true
		}
	}
	return nil, false
}

// usableTarget is the first of pl's targets that may get traffic: healthy,
// not drained, its breaker not open.
func usableTarget(pl *Pool) *Target {
	for _, t := range pl.Targets {
		if t.Healthy() && !t.Drained() && t.Breaker.Status().State != "open" {
			return t
		}
	}
	return nil
}

// fetchModels asks t for its model list with the caller's headers; nil
// when it does not answer 200 with a list.
func (p *Pipeline) fetchModels(ctx context.Context, t *Target, in *http.Request) map[string]ModelInfo {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), modelFetchTimeout)
	defer cancel()
	req := &http.Request{Method: http.MethodGet, URL: in.URL, Header: in.Header, RemoteAddr: in.RemoteAddr}
	resp, err := t.Client.Do(ctx, req, "/v1/models", nil)
	if err != nil {
		p.log.Warn("model list: pool not asked", "pool", t.Pool, "target", t.Name, "err", err)
		return nil
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	var res struct {
		Data []ModelInfo `json:"data"`
	}
	if err != nil || resp.StatusCode != http.StatusOK || json.Unmarshal(b, &res) != nil {
		p.log.Warn("model list: pool answered no list", "pool", t.Pool, "target", t.Name, "status", resp.StatusCode)
		return nil
	}
	out := make(map[string]ModelInfo, len(res.Data))
	for _, m := range res.Data {
		if m.ID != "" {
			m.Object = "model"
			out[m.ID] = m
		}
	}
	return out
}
