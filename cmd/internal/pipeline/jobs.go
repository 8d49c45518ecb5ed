package pipeline

// Background jobs at the edge (degrade/jobs): on a responses route with
// jobs enabled, a request with background: true is answered at once with
// the Responses API's queued object and run later, through Serve like any
// request (so admission gives it an upstream slot and a cached answer
// completes it at once). GET {path}/{id} returns the job's status, its
// position and estimated start, then the completed response; DELETE and
// POST {path}/{id}/cancel work. Only the key that submitted a job sees it:
// others get 404, as for a response that does not exist. Ids of responses
// that are not edge jobs are passed through as before.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/edgecache/edgecache/cmd/internal/openai"
	"github.com/edgecache/edgecache/degrade/admission"
	"github.com/edgecache/edgecache/degrade/jobs"
	"github.com/redis/go-redis/v9"
)

// jobPrefix starts the ids of edge jobs: "resp_" keeps SDKs and clients
// that look at the prefix content.
const jobPrefix = "resp_ecj"

// JobsConfig configures the background jobs of routes that enable them.
type JobsConfig struct {
	// File keeps the jobs across restarts; "" → memory only.
	File string
	// Workers bounds the jobs this replica runs at once (admission bounds
	// the upstream calls). Zero → 16.
	Workers int
	// Redis shares the jobs between the region's replicas (degrade/jobs
	// RedisQueue: leases, a dead replica's jobs taken over); nil → File.
	Redis  redis.UniversalClient
	Region string
	// Lease of a running job in Redis. Zero → 15s.
	Lease time.Duration
	// Routes are the routes a job found at start (in File) may belong to;
	// routes served since are known too.
	Routes []*Route
}

// jobRunner is the pipeline's side of the queue.
type jobRunner struct {
	q      jobs.Service
	routes sync.Map // name → *Route, the latest policy
}

func (p *Pipeline) startJobs(cfg *JobsConfig) error {
	jr := &jobRunner{}
	for _, rt := range cfg.Routes {
		jr.routes.Store(rt.Name, rt)
	}
	run := func(ctx context.Context, j *jobs.Job) jobs.Result { return p.runJob(ctx, jr, j) }
	// Set before the workers start: their runs go through Serve, which
	// reads it. jr.q is read by requests only, after New returns.
	p.jobs = jr
	var err error
	if cfg.Redis != nil {
		jr.q, err = jobs.NewRedis(jobs.RedisConfig{Client: cfg.Redis, Region: cfg.Region, Workers: cfg.Workers, Lease: cfg.Lease,
			RunTimeout: p.cfg.Timeout + time.Minute, Events: p.jobEvent, Now: p.cfg.Now}, run)
	} else {
		jr.q, err = jobs.New(jobs.Config{Workers: cfg.Workers, File: cfg.File, RunTimeout: p.cfg.Timeout + time.Minute,
			Events: p.jobEvent, Now: p.cfg.Now}, run)
	}
	if err != nil {
		p.jobs = nil // no worker started
		return err
	}
	return nil
}

// jobsOn reports whether rt's background requests are edge jobs.
func (p *Pipeline) jobsOn(rt *Route) bool {
	return p.jobs != nil && rt.Jobs.Enabled && (rt.API == openai.APIResponses || rt.API == openai.APIChat)
}

// chatJobPrefix starts the ids of Chat Completions jobs.
const chatJobPrefix = "chatjob_ecj"

// preferAsync reports whether r asks to be answered asynchronously
// (RFC 7240 Prefer: respond-async).
func preferAsync(r *http.Request) bool {
	for _, v := range r.Header.Values("Prefer") {
		for _, pref := range strings.Split(v, ",") {
			name, _, _ := strings.Cut(strings.TrimSpace(pref), ";")
			if strings.EqualFold(strings.TrimSpace(name), "respond-async") {
				return true
			}
		}
	}
	return false
}

// wantsJob reports whether req on rt is to be run as an edge job.
func wantsJob(rt *Route, r *http.Request, req *openai.Request) bool {
	if rt.API == openai.APIChat {
		return preferAsync(r)
	}
	return background(req)
}

// jobID returns the job id and action ("", "cancel") r is about, when r is
// about an edge job on rt.
func jobID(rt *Route, r *http.Request) (id, action string, ok bool) {
	if rt.API == openai.APIChat {
		// {path}/jobs/{id}: the job resource of Prefer: respond-async.
		rest, ok := strings.CutPrefix(r.URL.Path, strings.TrimSuffix(rt.Path, "/")+"/jobs/")
		if !ok || !strings.HasPrefix(rest, chatJobPrefix) || strings.Contains(rest, "/") {
			return "", "", false
		}
		return rest, "", true
	}
	rest := strings.TrimPrefix(subPath(rt, r), "/")
	if !strings.HasPrefix(rest, jobPrefix) {
		return "", "", false
	}
	id, action, _ = strings.Cut(rest, "/")
	return id, action, true
}

// background reports whether req asks for a background response.
func background(req *openai.Request) bool {
	b, ok := req.Body.Get("background")
	return ok && b.Bool()
}

// submitJob queues a background request and answers with the queued
// response object.
func (p *Pipeline) submitJob(w http.ResponseWriter, r *http.Request, rt *Route, req *openai.Request, body []byte, c caller) {
	p.jobs.routes.Store(rt.Name, rt)
	j := &jobs.Job{
		ID: jobs.NewID(idPrefix(rt)), Tenant: jobTenant(r), Lane: jobs.LaneFree, Route: rt.Name,
		Path: r.URL.Path, Header: r.Header.Clone(), Body: body, Model: req.Model,
	}
	if p.laneOf(r, c) == admission.Paid {
		j.Lane = jobs.LanePaid
	}
	for _, h := range []string{"Content-Length", "Connection", "Accept-Encoding", "Prefer"} {
		delete(j.Header, h)
	}
	if err := p.jobs.q.Submit(j, rt.Jobs.TTL, rt.Jobs.MaxPerTenant); err != nil {
		if errors.Is(err, jobs.ErrTenantCap) {
			openai.WriteError(w, http.StatusTooManyRequests, 0, openai.NewError(openai.TypeRateLimit, "too_many_background_jobs", "",
				"This key has "+strconv.Itoa(rt.Jobs.MaxPerTenant)+" background responses queued or running; wait for one to finish."))
			return
		}
		openai.WriteError(w, http.StatusInternalServerError, 0, openai.NewError(openai.TypeServer, "job_not_queued", "", err.Error()))
		return
	}
	got, pos, est, _ := p.jobs.q.Get(j.Tenant, j.ID)
	if rt.API == openai.APIChat {
		p.journalQueued(&got, pos, http.StatusAccepted)
		w.Header().Set("Location", jobLocation(rt, j.ID))
		w.Header().Set("Preference-Applied", "respond-async")
		writeChatJob(w, http.StatusAccepted, rt, &got, pos, est)
		return
	}
	p.journalQueued(&got, pos, http.StatusOK)
	writeJob(w, http.StatusOK, &got, pos, est)
}

func idPrefix(rt *Route) string {
	if rt.API == openai.APIChat {
		return chatJobPrefix
	}
	return jobPrefix
}

// jobLocation is the job resource of a chat job.
func jobLocation(rt *Route, id string) string {
	return strings.TrimSuffix(rt.Path, "/") + "/jobs/" + id
}

// writeChatJob writes a chat job: the chat completion once completed (a
// failed job: the upstream's status and error), else its status,
// position and estimated start.
func writeChatJob(w http.ResponseWriter, status int, rt *Route, j *jobs.Job, pos int, est time.Time) {
	w.Header().Set("Content-Type", "application/json")
	if (j.Status == jobs.Completed || j.Status == jobs.Failed) && status == http.StatusOK {
		jobTimes(w.Header(), j)
		w.WriteHeader(max(j.ResultStatus, 200))
		w.Write(j.Result)
		return
	}
	o := map[string]any{"id": j.ID, "object": "chat.completion.job", "created_at": j.Created.Unix(), "status": j.Status,
		"model": j.Model, "location": jobLocation(rt, j.ID)}
	if j.Status == jobs.Queued {
		o["position"] = pos
		w.Header().Set("X-Edgecache-Job-Position", strconv.Itoa(pos))
		if !est.IsZero() {
			o["estimated_start"] = est.Unix()
			w.Header().Set("X-Edgecache-Job-Estimated-Start", est.UTC().Format(http.TimeFormat))
		}
	}
	if j.Status == jobs.Queued || j.Status == jobs.InProgress {
		w.Header().Set("Retry-After", "1")
	}
	b, _ := json.Marshal(o)
	w.WriteHeader(status)
	w.Write(b)
}

// jobTenant is who owns a job: a hash of the client's API key, not the
// key id (an HMAC under the tenant secret, which changes on rotation and
// differs between replicas without a configured secret) so that a job
// outlives both. The job keeps the key itself to run the request.
func jobTenant(r *http.Request) string {
	sum := sha256.Sum256([]byte("edgecache job owner\x00" + clientKey(r)))
	return "j:" + hex.EncodeToString(sum[:16])
}

// laneOf is the admission lane of r, as admit finds it.
func (p *Pipeline) laneOf(r *http.Request, c caller) admission.Lane {
	cfg := p.cfg.Admission
	if cfg == nil {
		return admission.Paid
	}
	lane := cfg.DefaultLane
	if c.known {
		if t, ok := cfg.Tenants[clientKey(r)]; ok {
			lane = t.Lane
		}
	}
	if cfg.TrustLaneHeader {
		if l, err := admission.ParseLane(r.Header.Get("X-Edgecache-Lane")); err == nil {
			lane = l
		}
	}
	return lane
}

// serveJob answers GET, DELETE and POST …/cancel on an edge job.
func (p *Pipeline) serveJob(w http.ResponseWriter, r *http.Request, rt *Route, id, action string) {
	c := p.identify(r)
	notFound := func() {
		openai.WriteError(w, http.StatusNotFound, 0, openai.NewError(openai.TypeInvalidRequest, "not_found", "",
			"No response found with id '"+id+"'."))
	}
	if !c.known {
		notFound()
		return
	}
	tenant := jobTenant(r)
	switch {
	case action == "" && r.Method == http.MethodGet:
		j, pos, est, err := p.jobs.q.Get(tenant, id)
		if err != nil {
			notFound()
			return
		}
		if rt.API == openai.APIChat {
			writeChatJob(w, http.StatusOK, rt, &j, pos, est)
			return
		}
		writeJob(w, http.StatusOK, &j, pos, est)
	case action == "" && r.Method == http.MethodDelete:
		if err := p.jobs.q.Delete(tenant, id); err != nil {
			notFound()
			return
		}
		w.Header().Set("Content-Type", "application/json")
		b, _ := json.Marshal(map[string]any{"id": id, "object": "response.deleted", "deleted": true})
		w.Write(b)
	case action == "cancel" && r.Method == http.MethodPost:
		j, err := p.jobs.q.Cancel(tenant, id)
		if err != nil {
			notFound()
			return
		}
		writeJob(w, http.StatusOK, &j, 0, time.Time{})
	default:
		openai.WriteError(w, http.StatusMethodNotAllowed, 0, openai.NewError(openai.TypeInvalidRequest, "method_not_allowed", "",
			r.Method+" is not allowed on a background response."))
	}
}

// writeJob writes j as a Responses object: the model's response once
// completed, else one with the job's status, and its position and
// estimated start in X-Edgecache-Job-Position / -Estimated-Start and in
// an "edgecache" member.
func writeJob(w http.ResponseWriter, status int, j *jobs.Job, pos int, est time.Time) {
	w.Header().Set("Content-Type", "application/json")
	jobTimes(w.Header(), j)
	if j.Status == jobs.Completed {
		if b, err := jobResult(j); err == nil {
			w.WriteHeader(status)
			w.Write(b)
			return
		}
	}
	o := map[string]any{
		"id": j.ID, "object": "response", "created_at": j.Created.Unix(), "status": j.Status,
		"background": true, "model": j.Model, "output": []any{}, "error": nil, "incomplete_details": nil,
	}
	if j.Status == jobs.Failed {
		var eb openai.ErrorBody
		msg := "The background response failed upstream with status " + strconv.Itoa(j.ResultStatus) + "."
		if json.Unmarshal(j.Result, &eb) == nil && eb.Error.Message != "" {
			msg = eb.Error.Message
		}
		o["error"] = map[string]any{"code": "server_error", "message": msg}
	}
	if j.Status == jobs.Queued {
		ext := map[string]any{"position": pos}
		w.Header().Set("X-Edgecache-Job-Position", strconv.Itoa(pos))
		if !est.IsZero() {
			ext["estimated_start"] = est.Unix()
			w.Header().Set("X-Edgecache-Job-Estimated-Start", est.UTC().Format(http.TimeFormat))
		}
		o["edgecache"] = ext
	}
	b, _ := json.Marshal(o)
	w.WriteHeader(status)
	w.Write(b)
}

// jobTimes tells when a finished job started and finished (RFC 3339 with
// milliseconds, UTC) in X-Edgecache-Job-Started / -Finished: its wait and
// run time, which a client polling every few seconds cannot see.
func jobTimes(h http.Header, j *jobs.Job) {
	if j.Status != jobs.Completed && j.Status != jobs.Failed {
		return
	}
	const layout = "2006-01-02T15:04:05.000Z07:00"
	if !j.Started.IsZero() {
		h.Set("X-Edgecache-Job-Started", j.Started.UTC().Format(layout))
	}
	if !j.Finished.IsZero() {
		h.Set("X-Edgecache-Job-Finished", j.Finished.UTC().Format(layout))
	}
}

// jobResult is the model's response with the job's id and background
// true.
func jobResult(j *jobs.Job) ([]byte, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(j.Result, &m); err != nil {
		return nil, err
	}
	id, _ := json.Marshal(j.ID)
	m["id"], m["background"] = id, json.RawMessage("true")
	return json.Marshal(m)
}

// runJob serves j's request as a foreground one (background and stream
// dropped) and returns the answer.
func (p *Pipeline) runJob(ctx context.Context, jr *jobRunner, j *jobs.Job) jobs.Result {
	v, ok := jr.routes.Load(j.Route)
	if !ok {
		return jobs.Result{Status: http.StatusNotFound, Body: []byte(`{"error":{"message":"The route of this background response is gone.","type":"server_error"}}`)}
	}
	rt := v.(*Route)
	var m map[string]json.RawMessage
	if err := json.Unmarshal(j.Body, &m); err != nil {
		return jobs.Result{Status: http.StatusBadRequest, Body: []byte(`{"error":{"message":"invalid body","type":"invalid_request_error"}}`)}
	}
	delete(m, "background")
	delete(m, "stream")
	delete(m, "stream_options")
	body, _ := json.Marshal(m)
	r, err := http.NewRequestWithContext(ctx, http.MethodPost, j.Path, bytes.NewReader(body))
	if err != nil {
		return jobs.Result{Status: http.StatusInternalServerError}
	}
	r.Header = http.Header(j.Header).Clone()
	r.Header.Set("Content-Type", "application/json")
	r.ContentLength = int64(len(body))
	rec := &recorder{h: http.Header{}}
	p.Serve(rec, r, rt)
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	res := jobs.Result{Status: rec.status, Body: rec.body.Bytes()}
	spent := bytes.Contains(rec.body.Bytes(), []byte(`"`+CodeInsufficientQuota+`"`))
	if (rec.status == http.StatusServiceUnavailable || rec.status == http.StatusTooManyRequests) && ctx.Err() == nil && !spent {
		// Busy (admission's queue timed out, or the upstream is
		// overloaded): the job waits its turn again. Spent usage
		// credits are not busy: they return at the window's end, hours
		// away; the job fails with the 429 that says when.
		res.RetryAfter = time.Second
		if s, err := strconv.Atoi(rec.h.Get("Retry-After")); err == nil && s > 0 {
			res.RetryAfter = min(time.Duration(s)*time.Second, 30*time.Second)
		}
	}
	return res
}

// recorder is the ResponseWriter of a job's run.
type recorder struct {
	h      http.Header
	status int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.h }
func (r *recorder) WriteHeader(s int) {
	if r.status == 0 {
		r.status = s
	}
}
func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.body.Write(b)
}
func (r *recorder) Flush() {}
