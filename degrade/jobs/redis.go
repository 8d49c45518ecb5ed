package jobs

// The queue in Redis, shared by the replicas of a region: a hash per job,
// a sorted set of queued job ids per lane and tenant (scored by when the
// job may run), a sorted set of the tenants of each lane (scored by when
// each was last served: round robin), a sorted set of leases and a hash
// of each tenant's active jobs (the cap). Every change is one Lua script,
// so replicas never see half a move. A replica claims a job with a lease
// it renews while the job runs; a lease that expires (its replica died)
// puts the job back in its place for another replica; only the lease's
// holder can finish a job, so none completes twice.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Service is what the pipeline needs of a queue: Queue (memory and file)
// or RedisQueue.
type Service interface {
	Submit(j *Job, ttl time.Duration, maxPerTenant int) error
	Get(tenant, id string) (Job, int, time.Time, error)
	Cancel(tenant, id string) (Job, error)
	Delete(tenant, id string) error
	Close() error
}

// RedisConfig configures a RedisQueue.
type RedisConfig struct {
	Client redis.UniversalClient
	Region string // keys are ec:jobs:{region}:…; "" → "default"
	// Workers bounds the jobs this replica runs at once. Zero → 16.
	Workers int
	// Lease is how long a claimed job stays with its replica without a
	// renewal (renewed every Lease/3). Zero → 15s.
	Lease      time.Duration
	RunTimeout time.Duration // zero → 10 minutes
	AvgRun     time.Duration // seeds the estimated start; zero → 5s
	Events     Events
	Now        func() time.Time
}

// RedisQueue is the queue in Redis.
type RedisQueue struct {
	cfg    RedisConfig
	rdb    redis.UniversalClient
	p      string // key prefix
	owner  string
	run    Runner
	ctx    context.Context
	stop   context.CancelFunc
	wg     sync.WaitGroup
	wake   chan struct{}
	win    *runWindow    // the runs this replica starts at once
	killed chan struct{} // Kill: stop without giving jobs back
	mu     sync.Mutex
	avg    time.Duration
}

// NewRedis starts a RedisQueue's workers.
func NewRedis(cfg RedisConfig, run Runner) (*RedisQueue, error) {
	if cfg.Client == nil {
		return nil, errors.New("jobs: no Redis client")
	}
	if cfg.Region == "" {
		cfg.Region = "default"
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 16
	}
	if cfg.Lease <= 0 {
		cfg.Lease = 15 * time.Second
	}
	if cfg.RunTimeout <= 0 {
		cfg.RunTimeout = 10 * time.Minute
	}
	if cfg.AvgRun <= 0 {
		cfg.AvgRun = 5 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	q := &RedisQueue{cfg: cfg, rdb: cfg.Client, p: "ec:jobs:{" + cfg.Region + "}:", owner: NewID(""), run: run, win: newRunWindow(cfg.Workers),
		wake: make(chan struct{}, 1), killed: make(chan struct{}), avg: cfg.AvgRun}
	q.ctx, q.stop = context.WithCancel(context.Background())
	for range cfg.Workers {
		q.wg.Add(1)
		go q.worker()
	}
	q.wg.Add(1)
	go q.reaper()
	return q, nil
}

func (q *RedisQueue) jk(id string) string { return q.p + "job:" + id }

func ms(t time.Time) int64 { return t.UnixMilli() }

func (q *RedisQueue) opCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 5*time.Second)
}

// enqueue (Lua): puts id back in its tenant's queue of its lane at score
// and the tenant in the lane's ring at its last-served pick.
const luaEnqueue = `
local function enqueue(p, id, tenant, lane, score)
  redis.call('ZADD', p..'q:'..lane..':'..tenant, score, id)
  local last = redis.call('HGET', p..'last:'..lane, tenant) or '0'
  redis.call('ZADD', p..'tenants:'..lane, 'NX', last, tenant)
end
`

var submitScript = redis.NewScript(luaEnqueue + `
local p = ARGV[1]
local max = tonumber(ARGV[7])
if max > 0 and tonumber(redis.call('HGET', p..'active', ARGV[3]) or '0') >= max then return 0 end
redis.call('HSET', KEYS[1], 'tenant', ARGV[3], 'lane', ARGV[4], 'spec', ARGV[5], 'status', 'queued',
  'created', ARGV[6], 'score', ARGV[6], 'ttl', ARGV[8], 'attempts', 0)
redis.call('HINCRBY', p..'active', ARGV[3], 1)
enqueue(p, ARGV[2], ARGV[3], ARGV[4], ARGV[6])
return 1
`)

var claimScript = redis.NewScript(`
local p, now, lease, owner = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
for lane = 0, 1 do
  local tk = p..'tenants:'..lane
  local ts = redis.call('ZRANGE', tk, 0, -1)
  for _, t in ipairs(ts) do
    local qk = p..'q:'..lane..':'..t
    local found = nil
    while true do
      local ids = redis.call('ZRANGEBYSCORE', qk, '-inf', now, 'LIMIT', 0, 1)
      if #ids == 0 then break end
      redis.call('ZREM', qk, ids[1])
      if redis.call('HGET', p..'job:'..ids[1], 'status') == 'queued' then found = ids[1]; break end
    end
    if redis.call('ZCARD', qk) == 0 then redis.call('ZREM', tk, t) end
    if found then
      local pick = redis.call('INCR', p..'picks')
      redis.call('HSET', p..'last:'..lane, t, pick)
      if redis.call('ZSCORE', tk, t) then redis.call('ZADD', tk, pick, t) end
      local jk = p..'job:'..found
      redis.call('HSET', jk, 'status', 'in_progress', 'owner', owner, 'lease', lease, 'started', now)
      redis.call('HINCRBY', jk, 'attempts', 1)
      redis.call('ZADD', p..'leases', lease, found)
      return found
    end
  end
  -- a paid job waiting out a busy answer's Retry-After keeps the free
  -- lane waiting too: no free job overtakes it
  if lane == 0 and redis.call('ZCARD', tk) > 0 then return false end
end
return false
`)

var renewScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[2] or redis.call('HGET', KEYS[1], 'status') ~= 'in_progress' then return 0 end
redis.call('HSET', KEYS[1], 'lease', ARGV[3])
redis.call('ZADD', ARGV[1]..'leases', ARGV[3], ARGV[4])
return 1
`)

// finishScript: ARGV p, id, owner, status, rstatus, result, now, notBefore
// (status queued: busy, run again).
var finishScript = redis.NewScript(luaEnqueue + luaExpireLater + `
local p, id, jk = ARGV[1], ARGV[2], KEYS[1]
if redis.call('HGET', jk, 'owner') ~= ARGV[3] or redis.call('HGET', jk, 'status') ~= 'in_progress' then return 0 end
redis.call('ZREM', p..'leases', id)
local tenant, lane = redis.call('HGET', jk, 'tenant'), redis.call('HGET', jk, 'lane')
if ARGV[4] == 'queued' then
  redis.call('HSET', jk, 'status', 'queued', 'owner', '', 'score', ARGV[8])
  enqueue(p, id, tenant, lane, ARGV[8])
  return 1
end
redis.call('HSET', jk, 'status', ARGV[4], 'rstatus', ARGV[5], 'result', ARGV[6], 'finished', ARGV[7], 'owner', '')
redis.call('HINCRBY', p..'active', tenant, -1)
expireLater(p, jk, id, ARGV[7])
return 1
`)

var reapScript = redis.NewScript(luaEnqueue + `
local p, now = ARGV[1], tonumber(ARGV[2])
local ids = redis.call('ZRANGEBYSCORE', p..'leases', '-inf', now, 'LIMIT', 0, 100)
local n = 0
for _, id in ipairs(ids) do
  local jk = p..'job:'..id
  redis.call('ZREM', p..'leases', id)
  if redis.call('HGET', jk, 'status') == 'in_progress' and tonumber(redis.call('HGET', jk, 'lease') or '0') <= now then
    redis.call('HSET', jk, 'status', 'queued', 'owner', '')
    enqueue(p, id, redis.call('HGET', jk, 'tenant'), redis.call('HGET', jk, 'lane'), redis.call('HGET', jk, 'score'))
    n = n + 1
  end
end
return n
`)

// expireLater (Lua): a finished job's answer is kept for its ttl. The
// reaper removes it then and journals the expiry (the expiries set is
// popped atomically, so one replica does); the hash's own expiry, a
// minute later, is the safety net when no replica runs.
const luaExpireLater = `
local function expireLater(p, jk, id, now)
  local ttl = tonumber(redis.call('HGET', jk, 'ttl'))
  redis.call('ZADD', p..'expiries', tonumber(now) + ttl, id)
  redis.call('PEXPIRE', jk, ttl + 60000)
end
`

// expireScript: ARGV p, now. Pops the ids whose answers' ttl passed.
var expireScript = redis.NewScript(`
local ids = redis.call('ZRANGEBYSCORE', ARGV[1]..'expiries', '-inf', ARGV[2], 'LIMIT', 0, 100)
for _, id in ipairs(ids) do redis.call('ZREM', ARGV[1]..'expiries', id) end
return ids
`)

// cancelScript: ARGV p, id, tenant, now, status (cancelled, or "" to
// delete). Returns -1 when the job is not the tenant's, 2 when it was
// queued or running (now cancelled), 1 otherwise.
var cancelScript = redis.NewScript(luaExpireLater + `
local p, id, jk = ARGV[1], ARGV[2], KEYS[1]
local tenant = redis.call('HGET', jk, 'tenant')
if not tenant or tenant ~= ARGV[3] then return -1 end
local st = redis.call('HGET', jk, 'status')
local res = 1
if st == 'queued' or st == 'in_progress' then
  redis.call('ZREM', p..'q:'..redis.call('HGET', jk, 'lane')..':'..tenant, id)
  redis.call('ZREM', p..'leases', id)
  redis.call('HINCRBY', p..'active', tenant, -1)
  redis.call('HSET', jk, 'status', 'cancelled', 'finished', ARGV[4], 'owner', '')
  expireLater(p, jk, id, ARGV[4])
  res = 2
end
if ARGV[5] == '' then
  redis.call('DEL', jk)
  redis.call('ZREM', p..'expiries', id)
end
return res
`)

// positionScript: ARGV p, lane, tenant, id. The job's place if the lanes
// before its own are served first and tenants take turns in its lane.
var positionScript = redis.NewScript(`
local p, lane, tenant, id = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local own = redis.call('ZRANK', p..'q:'..lane..':'..tenant, id)
if not own then return 0 end
local pos = own + 1
for l = 0, lane do
  for _, t in ipairs(redis.call('ZRANGE', p..'tenants:'..l, 0, -1)) do
    local n = redis.call('ZCARD', p..'q:'..l..':'..t)
    if l < lane then pos = pos + n elseif t ~= tenant then pos = pos + math.min(n, own + 1) end
  end
end
return pos
`)

type spec struct {
	ID     string              `json:"id"`
	Route  string              `json:"route"`
	Path   string              `json:"path"`
	Header map[string][]string `json:"header"`
	Body   []byte              `json:"body"`
	Model  string              `json:"model,omitempty"`
}

// Submit queues j.
func (q *RedisQueue) Submit(j *Job, ttl time.Duration, maxPerTenant int) error {
	sp, err := json.Marshal(spec{ID: j.ID, Route: j.Route, Path: j.Path, Header: j.Header, Body: j.Body, Model: j.Model})
	if err != nil {
		return err
	}
	ctx, cancel := q.opCtx()
	defer cancel()
	now := q.cfg.Now()
	ok, err := submitScript.Run(ctx, q.rdb, []string{q.jk(j.ID)}, q.p, j.ID, j.Tenant, j.Lane, sp, ms(now), maxPerTenant,
		max(ttl.Milliseconds(), 1)).Int()
	if err != nil {
		return fmt.Errorf("jobs: %w", err)
	}
	if ok == 0 {
		return ErrTenantCap
	}
	j.Status, j.Created, j.Expires = Queued, now, now.Add(ttl)
	q.event("queued", j)
	q.signal()
	return nil
}

func (q *RedisQueue) event(e string, j *Job) {
	if q.cfg.Events != nil {
		q.cfg.Events(e, j)
	}
}

func (q *RedisQueue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// load reads job id.
func (q *RedisQueue) load(ctx context.Context, id string) (*Job, error) {
	h, err := q.rdb.HGetAll(ctx, q.jk(id)).Result()
	if err != nil {
		return nil, fmt.Errorf("jobs: %w", err)
	}
	if len(h) == 0 {
		return nil, ErrNotFound
	}
	var sp spec
	if err := json.Unmarshal([]byte(h["spec"]), &sp); err != nil {
		return nil, fmt.Errorf("jobs: job %s: %w", id, err)
	}
	num := func(k string) int64 { n, _ := strconv.ParseInt(h[k], 10, 64); return n }
	tm := func(k string) time.Time {
		if n := num(k); n > 0 {
			return time.UnixMilli(n)
		}
		return time.Time{}
	}
	j := &Job{ID: id, Tenant: h["tenant"], Lane: int(num("lane")), Route: sp.Route, Path: sp.Path, Header: sp.Header,
		Body: sp.Body, Model: sp.Model, Status: h["status"], Created: tm("created"), Started: tm("started"),
		Finished: tm("finished"), Attempts: int(num("attempts")), ResultStatus: int(num("rstatus"))}
	if r, ok := h["result"]; ok {
		j.Result = []byte(r)
	}
	return j, nil
}

// Get returns tenant's job id with its position and estimated start.
func (q *RedisQueue) Get(tenant, id string) (Job, int, time.Time, error) {
	ctx, cancel := q.opCtx()
	defer cancel()
	j, err := q.load(ctx, id)
	if err != nil {
		return Job{}, 0, time.Time{}, err
	}
	if j.Tenant != tenant {
		return Job{}, 0, time.Time{}, ErrNotFound
	}
	var pos int
	var est time.Time
	if j.Status == Queued {
		pos, _ = positionScript.Run(ctx, q.rdb, []string{q.jk(id)}, q.p, j.Lane, tenant, id).Int()
		q.mu.Lock()
		avg := q.avg
		q.mu.Unlock()
		est = q.cfg.Now().Add(time.Duration(max(pos-1, 0)/q.cfg.Workers) * avg)
	}
	return *j, pos, est, nil
}

// Cancel cancels tenant's job id (a running one stops at its next lease
// renewal).
func (q *RedisQueue) Cancel(tenant, id string) (Job, error) {
	active, err := q.cancel(tenant, id, Cancelled)
	if err != nil {
		return Job{}, err
	}
	j, _, _, err := q.Get(tenant, id)
	if err == nil && active {
		q.event("cancelled", &j)
	}
	return j, err
}

// Delete forgets tenant's job id.
func (q *RedisQueue) Delete(tenant, id string) error {
	ctx, cancel := q.opCtx()
	j, lerr := q.load(ctx, id) // for the event: the hash is gone after
	cancel()
	active, err := q.cancel(tenant, id, "")
	if err == nil && lerr == nil {
		if active {
			j.Status, j.Finished = Cancelled, q.cfg.Now()
			q.event("cancelled", j)
		}
		q.event("deleted", j)
	}
	return err
}

// cancel runs cancelScript; active reports a job that was queued or
// running.
func (q *RedisQueue) cancel(tenant, id, status string) (active bool, err error) {
	ctx, cancel := q.opCtx()
	defer cancel()
	n, err := cancelScript.Run(ctx, q.rdb, []string{q.jk(id)}, q.p, id, tenant, ms(q.cfg.Now()), status).Int()
	if err != nil {
		return false, fmt.Errorf("jobs: %w", err)
	}
	if n < 0 {
		return false, ErrNotFound
	}
	return n == 2, nil
}

// expire removes the finished jobs whose ttl passed, one event each.
func (q *RedisQueue) expire() {
	ctx, cancel := q.opCtx()
	defer cancel()
	ids, err := expireScript.Run(ctx, q.rdb, []string{q.p + "expiries"}, q.p, ms(q.cfg.Now())).StringSlice()
	if err != nil {
		return
	}
	for _, id := range ids {
		j, err := q.load(ctx, id)
		if err != nil {
			continue // deleted meanwhile
		}
		if q.rdb.Del(ctx, q.jk(id)).Err() == nil {
			q.event("expired", j)
		}
	}
}

// Close stops the workers; jobs still running go back to the queue at
// once for another replica (or the next start).
func (q *RedisQueue) Close() error {
	q.stop()
	q.wg.Wait()
	return nil
}

// Kill stops the replica as if it died: its running jobs stay leased
// until their leases expire and are never finished by it. It does not
// wait for the runs. For tests.
func (q *RedisQueue) Kill() {
	close(q.killed)
	q.stop()
}

func (q *RedisQueue) reaper() {
	defer q.wg.Done()
	t := time.NewTicker(max(q.cfg.Lease/3, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-q.ctx.Done():
			return
		case <-t.C:
		}
		ctx, cancel := q.opCtx()
		if n, err := reapScript.Run(ctx, q.rdb, []string{q.p + "leases"}, q.p, ms(q.cfg.Now())).Int(); err == nil && n > 0 {
			q.signal()
		}
		cancel()
		q.expire()
	}
}

func (q *RedisQueue) worker() {
	defer q.wg.Done()
	for q.ctx.Err() == nil {
		if ok, wait := q.win.acquire(q.cfg.Now()); !ok {
			q.idle(wait)
			continue
		}
		ctx, cancel := q.opCtx()
		now := q.cfg.Now()
		id, err := claimScript.Run(ctx, q.rdb, []string{q.p + "leases"}, q.p, ms(now), ms(now.Add(q.cfg.Lease)), q.owner).Text()
		cancel()
		if err != nil || id == "" {
			q.win.cancel()
			q.idle(200 * time.Millisecond)
			continue
		}
		q.signal() // another worker may claim the next one
		res, ran := q.runOne(id)
		if ran {
			q.win.release(q.cfg.Now(), res.RetryAfter > 0, res.RetryAfter)
		} else {
			q.win.cancel()
		}
		q.signal() // the window may have room again
	}
}

// idle waits for a signal, at most wait (0: 200 ms), or the queue's end.
func (q *RedisQueue) idle(wait time.Duration) {
	if wait <= 0 {
		wait = 200 * time.Millisecond
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-q.ctx.Done():
	case <-q.wake:
	case <-t.C:
	}
}

// runOne runs the claimed job id and records its outcome; ran is false
// when there was nothing to run (the job was deleted meanwhile).
func (q *RedisQueue) runOne(id string) (res Result, ran bool) {
	lctx, lcancel := q.opCtx()
	j, err := q.load(lctx, id)
	lcancel()
	if err != nil {
		return Result{}, false // deleted meanwhile; its lease lapses
	}
	q.event("started", j)
	ctx, cancel := context.WithTimeout(context.Background(), q.cfg.RunTimeout)
	defer cancel()
	// Renew the lease while the job runs; a lost lease (cancelled, or
	// taken over) stops the run.
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(max(q.cfg.Lease/3, 10*time.Millisecond))
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-q.killed:
				return // dead: no renewals, no more calls
			case <-q.ctx.Done():
				cancel()
				return
			case <-t.C:
			}
			rctx, rcancel := q.opCtx()
			n, err := renewScript.Run(rctx, q.rdb, []string{q.jk(id)}, q.p, q.owner, ms(q.cfg.Now().Add(q.cfg.Lease)), id).Int()
			rcancel()
			if err == nil && n == 0 {
				cancel()
				return
			}
		}
	}()
	start := q.cfg.Now()
	res = q.run(ctx, j)
	close(done)
	select {
	case <-q.killed:
		return res, true // a dead replica says nothing
	default:
	}
	now := q.cfg.Now()
	status, nb := Completed, int64(0)
	switch {
	case q.ctx.Err() != nil:
		status, nb = Queued, ms(j.Created) // stopping: back in its place
	case res.RetryAfter > 0 && j.Attempts < maxAttempts:
		status, nb = Queued, ms(now.Add(res.RetryAfter)) // busy: not before its Retry-After
	case res.Status < 200 || res.Status > 299:
		status = Failed
	}
	fctx, fcancel := q.opCtx()
	defer fcancel()
	n, err := finishScript.Run(fctx, q.rdb, []string{q.jk(id)}, q.p, id, q.owner, status, res.Status, res.Body, ms(now), nb).Int()
	if err != nil || n == 0 {
		return res, true // the lease was lost: another replica owns the job now
	}
	j.ResultStatus = res.Status
	switch {
	case status != Queued:
		q.mu.Lock()
		q.avg = (q.avg*7 + now.Sub(start)) / 8
		q.mu.Unlock()
		j.Status, j.Finished = status, now
		q.event("finished", j)
	case q.ctx.Err() == nil:
		j.Status, j.NotBefore = Queued, time.UnixMilli(nb)
		q.event("requeued", j)
	}
	return res, true
}
