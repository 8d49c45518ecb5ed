package pipeline

// The journal of background jobs: each job's state changes (accepted,
// started, answered busy and queued again, finished, cancelled, deleted,
// expired) become one journal record each, so an operator reviews the
// queue the way they review degraded answers (rung "job", the change as
// the reason). The queue reports the changes (jobs.Events); the one of
// acceptance is written by submitJob, which knows the position the client
// was told.

import (
	"net/http"
	"time"

	"github.com/edgecache/edgecache/degrade/jobs"
)

// JobJournal receives the state changes of background jobs. The
// pipeline's Journal implements it too when it records them; it must not
// block.
type JobJournal interface {
	Job(e *JobEvent)
}

// JobEvent is one state change of a background job.
type JobEvent struct {
	Time time.Time
	// Event is the change: queued, started, requeued, completed, failed,
	// cancelled, deleted, expired (degrade/journal's Job* reasons).
	Event  string
	ID     string
	Route  string
	Tenant string // the namespace of the job's key, as other records have it
	Lane   string
	Model  string
	// Position is the place in the queue the client was told (queued).
	Position int
	// Wait is from acceptance to the start (started); Run is the run's
	// duration (requeued, completed, failed).
	Wait, Run time.Duration
	Attempts  int
	// Outcome is the job's status after the change.
	Outcome string
	// Status is the HTTP status of the answer the client got (queued) or
	// of the one the job keeps (finished).
	Status int
}

// jobJournal is the journal of job events, nil when none is recorded.
func (p *Pipeline) jobJournal() JobJournal {
	jj, _ := p.cfg.Journal.(JobJournal)
	return jj
}

// jobEvent is the queue's jobs.Events. It runs under the queue's lock
// (the memory queue): it copies what it needs and hands it to a journal
// that never blocks.
func (p *Pipeline) jobEvent(event string, j *jobs.Job) {
	jj := p.jobJournal()
	if jj == nil || event == "queued" { // queued: submitJob records it, with the position
		return
	}
	e := p.newJobEvent(j)
	e.Event = event
	switch event {
	case "started":
		e.Wait = j.Started.Sub(j.Created)
	case "requeued":
		e.Run = e.Time.Sub(j.Started)
	case "finished":
		e.Event = jobs.Completed
		if j.Status == jobs.Failed {
			e.Event = jobs.Failed
		}
		e.Run, e.Status = j.Finished.Sub(j.Started), j.ResultStatus
	case "expired":
		e.Status = j.ResultStatus
	}
	jj.Job(e)
}

// newJobEvent fills what every event of j says.
func (p *Pipeline) newJobEvent(j *jobs.Job) *JobEvent {
	e := &JobEvent{Time: p.cfg.Now(), ID: j.ID, Route: j.Route, Lane: jobLane(j.Lane), Model: j.Model,
		Attempts: j.Attempts, Outcome: j.Status}
	if c := p.callerOf(headerKey(http.Header(j.Header))); c.known {
		e.Tenant = c.tenant()
	}
	return e
}

// journalQueued records a job's acceptance with the position and status
// its client was told.
func (p *Pipeline) journalQueued(j *jobs.Job, pos, status int) {
	jj := p.jobJournal()
	if jj == nil {
		return
	}
	e := p.newJobEvent(j)
	e.Event, e.Position, e.Status = "queued", pos, status
	jj.Job(e)
}

func jobLane(l int) string {
	if l == jobs.LanePaid {
		return "paid"
	}
	return "free"
}
