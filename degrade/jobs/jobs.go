// Package jobs is edgecache's queue of background jobs: requests a client
// asked to run later (the Responses API's background: true) that the edge
// accepts at once and runs when the model has capacity, instead of holding
// an HTTP call open or refusing heavy work with 503 and letting every
// client retry at once when the model recovers (issue 18).
//
// A Queue keeps jobs in memory, optionally persisted to a local file so a
// restart loses none (a job that was running when the process died runs
// again). Jobs are picked fairly: the paid lane before the free one, and
// within a lane the tenant with the fewest running jobs first, oldest job
// first among equals, so one tenant's many jobs never starve another's.
// Each tenant has a cap on jobs queued or running. Results are kept for
// the route's TTL, then forgotten.
//
// The queue does not call the model itself: Run is handed each job and
// goes through the pipeline, whose admission layer gives it a slot like
// any request's.
package jobs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"
)

// Status of a job, in the Responses API's words.
const (
	Queued     = "queued"
	InProgress = "in_progress"
	Completed  = "completed"
	Failed     = "failed"
	Cancelled  = "cancelled"
)

// Lanes, best first (pick order).
const (
	LanePaid = 0
	LaneFree = 1
)

// ErrTenantCap is returned by Submit when the tenant has MaxPerTenant jobs
// queued or running.
var ErrTenantCap = errors.New("jobs: too many jobs queued for this tenant")

// ErrNotFound: no such job for this tenant (a job of another tenant is
// not found either).
var ErrNotFound = errors.New("jobs: not found")

// Job is one background request and, once finished, its answer.
type Job struct {
	ID     string              `json:"id"`
	Tenant string              `json:"tenant"` // the submitter's key id; only it sees the job
	Lane   int                 `json:"lane"`
	Route  string              `json:"route"`
	Path   string              `json:"path"`
	Header map[string][]string `json:"header"`
	Body   []byte              `json:"body"`
	Model  string              `json:"model,omitempty"`

	Status    string    `json:"status"`
	Created   time.Time `json:"created"`
	Started   time.Time `json:"started,omitzero"`
	Finished  time.Time `json:"finished,omitzero"`
	Expires   time.Time `json:"expires"` // result kept until then
	Attempts  int       `json:"attempts"`
	NotBefore time.Time `json:"not_before,omitzero"` // busy: not run again before

	ResultStatus int    `json:"result_status,omitempty"`
	Result       []byte `json:"result,omitempty"`

	seq uint64
}

// Result is what running a job produced: the HTTP status and body of the
// answer.
type Result struct {
	Status int
	Body   []byte
	// RetryAfter > 0: the model was busy; the job is queued again, not run
	// before this long, no lower lane's job starts meanwhile, and the
	// replica's run window narrows (runWindow).
	RetryAfter time.Duration
}

// maxAttempts bounds the runs of a job the model kept refusing as busy.
const maxAttempts = 20

// Runner runs one job (through the pipeline) until ctx is done.
type Runner func(ctx context.Context, j *Job) Result

// Events receives the queue's state changes (the journal); nil → none.
type Events func(event string, j *Job)

// Config configures a Queue.
type Config struct {
	// Workers bounds the jobs run at once by this replica. Admission
	// bounds the upstream calls; this bounds goroutines. Zero → 16.
	Workers int
	// File keeps the jobs across restarts; "" → memory only.
	File string
	// RunTimeout bounds one run. Zero → 10 minutes.
	RunTimeout time.Duration
	// AvgRun seeds the estimate of a job's duration (estimated start).
	// Zero → 5s.
	AvgRun time.Duration
	Events Events
	Now    func() time.Time
}

// Queue holds jobs and runs them with Run.
type Queue struct {
	cfg  Config
	run  Runner
	mu   sync.Mutex
	jobs map[string]*Job
	seq  uint64
	// running counts running jobs by tenant, for fairness.
	running map[string]int
	// lastPick is the pick number of each tenant's last started job:
	// among tenants with as many running, the one served longest ago goes
	// first (round robin).
	lastPick map[string]uint64
	picks    uint64
	avg      time.Duration
	cancels  map[string]context.CancelFunc
	wake     chan struct{}
	win      *runWindow
	ctx      context.Context
	stop     context.CancelFunc
	wg       sync.WaitGroup
	dirty    bool
}

// New makes a queue, loads cfg.File when it exists and starts the workers.
func New(cfg Config, run Runner) (*Queue, error) {
	if cfg.Workers <= 0 {
		cfg.Workers = 16
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
	q := &Queue{cfg: cfg, run: run, jobs: map[string]*Job{}, running: map[string]int{}, lastPick: map[string]uint64{},
		cancels: map[string]context.CancelFunc{}, wake: make(chan struct{}, 1), avg: cfg.AvgRun, win: newRunWindow(cfg.Workers)}
	if cfg.File != "" {
		if err := q.load(); err != nil {
			return nil, err
		}
	}
	q.ctx, q.stop = context.WithCancel(context.Background())
	for range cfg.Workers {
		q.wg.Add(1)
		go q.worker()
	}
	q.wg.Add(1)
	go q.janitor()
	return q, nil
}

// Close stops the workers; running jobs are cancelled and, with a file,
// run again at the next start.
func (q *Queue) Close() error {
	q.stop()
	q.wg.Wait()
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.saveLocked()
}

// NewID returns a fresh job id with prefix.
func NewID(prefix string) string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// Submit queues j (ID, Tenant, Lane, Route, Path, Header, Body set) to be
// kept ttl after it finishes; maxPerTenant > 0 caps the tenant's jobs
// queued or running.
func (q *Queue) Submit(j *Job, ttl time.Duration, maxPerTenant int) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if maxPerTenant > 0 {
		n := 0
		for _, o := range q.jobs {
			if o.Tenant == j.Tenant && (o.Status == Queued || o.Status == InProgress) {
				n++
			}
		}
		if n >= maxPerTenant {
			return ErrTenantCap
		}
	}
	now := q.cfg.Now()
	j.Status, j.Created = Queued, now
	j.Expires = now.Add(ttl) // pushed on when it finishes
	q.seq++
	j.seq = q.seq
	q.jobs[j.ID] = j
	q.changedLocked("queued", j)
	q.signal()
	return nil
}

// Get returns a copy of tenant's job id, with its position in the queue
// (0 when not queued) and an estimated start.
func (q *Queue) Get(tenant, id string) (Job, int, time.Time, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	j, ok := q.jobs[id]
	if !ok || j.Tenant != tenant {
		return Job{}, 0, time.Time{}, ErrNotFound
	}
	var pos int
	var est time.Time
	if j.Status == Queued {
		order := q.orderLocked()
		for i, o := range order {
			if o == j {
				pos = i + 1
				break
			}
		}
		waves := (pos - 1) / q.cfg.Workers
		est = q.cfg.Now().Add(time.Duration(waves) * q.avg)
	}
	return *j, pos, est, nil
}

// Cancel cancels tenant's job id: a queued job never runs, a running one
// is stopped. A finished job is left as it is.
func (q *Queue) Cancel(tenant, id string) (Job, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	j, ok := q.jobs[id]
	if !ok || j.Tenant != tenant {
		return Job{}, ErrNotFound
	}
	switch j.Status {
	case Queued, InProgress:
		if c := q.cancels[id]; c != nil {
			c()
		}
		j.Status, j.Finished = Cancelled, q.cfg.Now()
		q.changedLocked("cancelled", j)
	}
	return *j, nil
}

// Delete forgets tenant's job id (cancelling it first).
func (q *Queue) Delete(tenant, id string) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	j, ok := q.jobs[id]
	if !ok || j.Tenant != tenant {
		return ErrNotFound
	}
	if c := q.cancels[id]; c != nil {
		c()
	}
	if j.Status == Queued || j.Status == InProgress { // as Cancel, then forgotten
		j.Status, j.Finished = Cancelled, q.cfg.Now()
		q.changedLocked("cancelled", j)
	}
	delete(q.jobs, id)
	q.changedLocked("deleted", j)
	return nil
}

// orderLocked is the queued jobs in the order they would be picked.
func (q *Queue) orderLocked() []*Job {
	var qs []*Job
	for _, j := range q.jobs {
		if j.Status == Queued {
			qs = append(qs, j)
		}
	}
	// Simulate picks: fairness depends on running counts, which picks
	// change.
	running := make(map[string]int, len(q.running))
	for k, v := range q.running {
		running[k] = v
	}
	last := make(map[string]uint64, len(q.lastPick))
	for k, v := range q.lastPick {
		last[k] = v
	}
	picks := q.picks
	out := make([]*Job, 0, len(qs))
	for len(qs) > 0 {
		best := 0
		for i := 1; i < len(qs); i++ {
			if better(qs[i], qs[best], running, last) {
				best = i
			}
		}
		out = append(out, qs[best])
		picks++
		last[qs[best].Tenant] = picks
		qs = append(qs[:best], qs[best+1:]...)
	}
	return out
}

// better reports whether a is picked before b.
func better(a, b *Job, running map[string]int, last map[string]uint64) bool {
	if a.Lane != b.Lane {
		return a.Lane < b.Lane
	}
	if ra, rb := running[a.Tenant], running[b.Tenant]; ra != rb {
		return ra < rb
	}
	if la, lb := last[a.Tenant], last[b.Tenant]; la != lb {
		return la < lb
	}
	return a.seq < b.seq
}

// pickLocked takes the next job to run, or nil. A job waiting out a busy
// answer's Retry-After is passed over by jobs of its own lane, never by a
// lower lane's: while a paid job waits, no free job starts.
func (q *Queue) pickLocked() *Job {
	var best *Job
	waiting := LaneFree + 1 // the best lane with a job waiting out a busy answer
	now := q.cfg.Now()
	for _, j := range q.jobs {
		if j.Status != Queued {
			continue
		}
		if now.Before(j.NotBefore) {
			waiting = min(waiting, j.Lane)
			continue
		}
		if best == nil || better(j, best, q.running, q.lastPick) {
			best = j
		}
	}
	if best != nil && best.Lane > waiting {
		return nil
	}
	return best
}

func (q *Queue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *Queue) worker() {
	defer q.wg.Done()
	for {
		ok, wait := q.win.acquire(q.cfg.Now())
		if !ok {
			if !q.idle(wait) {
				return
			}
			continue
		}
		q.mu.Lock()
		j := q.pickLocked()
		if j == nil {
			q.mu.Unlock()
			q.win.cancel()
			if !q.idle(time.Second) {
				return
			}
			continue
		}
		if q.ctx.Err() != nil {
			q.mu.Unlock()
			q.win.cancel()
			return
		}
		j.Status, j.Started = InProgress, q.cfg.Now()
		j.Attempts++
		q.running[j.Tenant]++
		q.picks++
		q.lastPick[j.Tenant] = q.picks
		ctx, cancel := context.WithTimeout(q.ctx, q.cfg.RunTimeout)
		q.cancels[j.ID] = cancel
		q.changedLocked("started", j)
		run := *j
		q.mu.Unlock()
		q.signal() // another worker may pick the next one

		res := q.run(ctx, &run)
		q.win.release(q.cfg.Now(), res.RetryAfter > 0, res.RetryAfter)
		q.finish(j, res, cancel)
		q.signal() // the window may have room again
	}
}

// idle waits for a signal, at most wait (0: a second); false means the
// queue is closing.
func (q *Queue) idle(wait time.Duration) bool {
	if wait <= 0 {
		wait = time.Second
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-q.ctx.Done():
		return false
	case <-q.wake:
	case <-t.C:
	}
	return true
}

// finish records a run's outcome. A busy answer queues the job again, not
// run before its Retry-After, and no job of a lower lane starts meanwhile
// (pickLocked).
func (q *Queue) finish(j *Job, res Result, cancel context.CancelFunc) {
	q.mu.Lock()
	defer q.mu.Unlock()
	cancel()
	delete(q.cancels, j.ID)
	q.running[j.Tenant]--
	if q.running[j.Tenant] <= 0 {
		delete(q.running, j.Tenant)
	}
	switch {
	case q.ctx.Err() != nil && j.Status == InProgress:
		j.Status = Queued // shutting down: run again at the next start
	case j.Status == InProgress && res.RetryAfter > 0 && j.Attempts < maxAttempts:
		j.Status, j.NotBefore = Queued, q.cfg.Now().Add(res.RetryAfter)
		q.changedLocked("requeued", j)
	case j.Status == InProgress:
		now := q.cfg.Now()
		j.Finished, j.ResultStatus, j.Result = now, res.Status, res.Body
		j.Status = Completed
		if res.Status < 200 || res.Status > 299 {
			j.Status = Failed
		}
		j.Expires = now.Add(j.Expires.Sub(j.Created))
		q.avg = (q.avg*7 + now.Sub(j.Started)) / 8
		q.changedLocked("finished", j)
	}
}

// janitor forgets expired jobs and writes the file.
func (q *Queue) janitor() {
	defer q.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-q.ctx.Done():
			return
		case <-t.C:
		}
		q.mu.Lock()
		now := q.cfg.Now()
		for id, j := range q.jobs {
			if j.Status != Queued && j.Status != InProgress && now.After(j.Expires) {
				delete(q.jobs, id)
				q.changedLocked("expired", j)
			}
		}
		if q.dirty {
			_ = q.saveLocked()
		}
		q.mu.Unlock()
	}
}

func (q *Queue) changedLocked(event string, j *Job) {
	q.dirty = true
	if q.cfg.Events != nil {
		q.cfg.Events(event, j)
	}
	if event == "queued" || event == "finished" {
		_ = q.saveLocked() // durable at once: accepted and answered
	}
}

func (q *Queue) saveLocked() error {
	if q.cfg.File == "" {
		return nil
	}
	js := make([]*Job, 0, len(q.jobs))
	for _, j := range q.jobs {
		js = append(js, j)
	}
	sort.Slice(js, func(a, b int) bool { return js[a].seq < js[b].seq })
	b, err := json.Marshal(js)
	if err != nil {
		return err
	}
	tmp := q.cfg.File + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("jobs: %w", err)
	}
	if err := os.Rename(tmp, q.cfg.File); err != nil {
		return fmt.Errorf("jobs: %w", err)
	}
	q.dirty = false
	return nil
}

func (q *Queue) load() error {
	if err := os.MkdirAll(filepath.Dir(q.cfg.File), 0o700); err != nil {
		return fmt.Errorf("jobs: %w", err)
	}
	b, err := os.ReadFile(q.cfg.File)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("jobs: %w", err)
	}
	var js []*Job
	if err := json.Unmarshal(b, &js); err != nil {
		return fmt.Errorf("jobs: %s: %w", q.cfg.File, err)
	}
	for _, j := range js {
		if j.Status == InProgress {
			j.Status = Queued // its replica died running it
		}
		q.seq++
		j.seq = q.seq
		q.jobs[j.ID] = j
	}
	return nil
}
