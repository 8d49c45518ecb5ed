package journal

import (
	"crypto/sha256"
	"encoding/hex"
	"time"
)

// Rung is the rung of the degradation ladder a record was served from (see
// DEGRADATION.md).
type Rung string

// The rungs, cheapest first.
const (
	RungShed            Rung = "shed"             // rejected by self-protection or a quota
	RungQueuedTimeout   Rung = "queued-timeout"   // waited in the admission queue past its deadline
	RungRetried         Rung = "retried"          // answered by the same upstream after a retry
	RungFailover        Rung = "failover"         // answered by another upstream target
	RungStale           Rung = "stale"            // a stale exact cache entry
	RungSemanticNearest Rung = "semantic-nearest" // the nearest semantic entry above the degraded floor
	RungTemplate        Rung = "template"         // a predefined template
	RungBusy            Rung = "busy"             // an honest busy answer (429/503 with Retry-After)
	RungStreamTruncated Rung = "stream-truncated" // a stream that broke after bytes were sent
	// RungShadowDisagreement is not a degraded answer but evidence for
	// review: a semantic hit served normally that shadow verification
	// found wrong (the upstream, asked again, answered otherwise). Its
	// record carries Cache (the entry served) and Shadow.
	RungShadowDisagreement Rung = "shadow-disagreement"
	// RungJob is not an answer either: one state change of a background
	// job (degrade/jobs), the queue rung of the ladder made reviewable.
	// Reason is the change (JobQueued, JobStarted, …) and Job its details.
	RungJob Rung = "job"
)

// The Reason of a RungJob record: the state change it records.
const (
	JobQueued    = "queued"    // accepted; Job.Position is the place the client was told
	JobStarted   = "started"   // taken by a worker; Job.WaitMillis since accepted
	JobRequeued  = "requeued"  // the model answered busy: queued again after Retry-After
	JobCompleted = "completed" // finished with a 2xx answer
	JobFailed    = "failed"    // finished with an error answer (kept, as a completed one)
	JobCancelled = "cancelled" // cancelled by its owner while queued or running
	JobDeleted   = "deleted"   // forgotten by its owner (DELETE)
	JobExpired   = "expired"   // a finished job's answer removed once its ttl passed
)

// Rungs returns every rung, cheapest first.
func Rungs() []Rung {
	return []Rung{RungShed, RungQueuedTimeout, RungRetried, RungFailover, RungStale,
		RungSemanticNearest, RungTemplate, RungBusy, RungStreamTruncated, RungShadowDisagreement, RungJob}
}

// Valid reports whether r is one of Rungs().
func (r Rung) Valid() bool {
	switch r {
	case RungShed, RungQueuedTimeout, RungRetried, RungFailover, RungStale,
		RungSemanticNearest, RungTemplate, RungBusy, RungStreamTruncated, RungShadowDisagreement, RungJob:
		return true
	}
	return false
}

// Record is one degraded answer. Durations are whole milliseconds or
// seconds, as their JSON names say; zero values are omitted from the JSON
// except time, rung and status.
//
// A Record handed to Journal.Record must not be modified afterwards (its
// slices and pointers are read by the writer goroutine).
type Record struct {
	// Time is when the answer was served. If zero, Journal.Record sets it
	// to the current time.
	Time time.Time `json:"time"`
	// ID identifies the record across sinks (a query returns one copy of a
	// record found in both the Redis stream and the file). If empty,
	// Journal.Record sets a new one, unique across replicas and restarts.
	ID string `json:"id,omitempty"`
	// Region is the edge region. If empty, Journal.Record sets it to
	// Config.Region.
	Region    string `json:"region,omitempty"`
	RequestID string `json:"request_id,omitempty"`
	TraceID   string `json:"trace_id,omitempty"`
	// Tenant identifies the caller without revealing its key: use
	// HashTenant on API keys. It is stored as given.
	Tenant         string `json:"tenant,omitempty"`
	Lane           string `json:"lane,omitempty"` // e.g. "paid", "free"
	Route          string `json:"route,omitempty"`
	ModelRequested string `json:"model_requested,omitempty"`
	ModelServed    string `json:"model_served,omitempty"`
	Upstream       string `json:"upstream,omitempty"` // the upstream that served, or the last one tried
	Rung           Rung   `json:"rung"`
	// Reason is why the request degraded, e.g. "upstream_503", "timeout",
	// "breaker_open", "shed", "rate_limit_exceeded".
	Reason         string    `json:"reason,omitempty"`
	UpstreamStatus int       `json:"upstream_status,omitempty"` // last upstream HTTP status
	ErrorClass     string    `json:"error_class,omitempty"`     // e.g. "dial", "ttft_timeout", "stall", "empty"
	Attempts       []Attempt `json:"attempts,omitempty"`
	BreakerState   string    `json:"breaker_state,omitempty"` // e.g. "open", "half-open"
	Limiter        *Limiter  `json:"limiter,omitempty"`
	Cache          *Cache    `json:"cache,omitempty"`
	Tokens         *Tokens   `json:"tokens,omitempty"`
	Client         *Client   `json:"client,omitempty"`
	// Status is the HTTP status returned to the client.
	Status            int `json:"status"`
	RetryAfterSeconds int `json:"retry_after_s,omitempty"` // Retry-After returned to the client
	// BytesStreamed is how much of a stream the client got before it
	// failed (rung stream-truncated).
	BytesStreamed int64 `json:"bytes_streamed,omitempty"`
	// Count is the number of refusals the record stands for (refusals
	// only, see Refusal): 1 for the first of a window, written at once;
	// the number of those that followed it within the window for the
	// record written when the window ends, whose Time is the first of them
	// and Last the last. Zero for other records (each stands for one
	// answer).
	Count int       `json:"count,omitempty"`
	Last  time.Time `json:"last,omitzero"`
	// Shadow is the judgement of a shadow-disagreement record.
	Shadow *Shadow `json:"shadow,omitempty"`
	// Job is the background job of a RungJob record.
	Job *Job `json:"job,omitempty"`
}

// Job describes a background job at one of its state changes. Times are
// from the job's own record (the queue's clock), so a started record's
// wait is what the job really waited, across replicas.
type Job struct {
	ID string `json:"id"`
	// Position is the job's place in the queue when it was accepted, as
	// the client was told it (queued records only; 1 = next).
	Position int `json:"position,omitempty"`
	// WaitMillis is the time from acceptance to this start (started
	// records; a requeued job's includes its earlier runs).
	WaitMillis int64 `json:"wait_ms,omitempty"`
	// RunMillis is how long the run took (completed, failed, requeued).
	RunMillis int64 `json:"run_ms,omitempty"`
	Attempts  int   `json:"attempts,omitempty"`
	// Outcome is the job's status at the change: queued, in_progress,
	// completed, failed, cancelled.
	Outcome string `json:"outcome,omitempty"`
	// ResultStatus is the HTTP status of the answer a finished job keeps.
	ResultStatus int `json:"result_status,omitempty"`
}

// Shadow is what shadow verification found of a served semantic hit.
// Questions are identified by hashes (16 bytes of SHA-256, in hex); their
// text and the answers are kept only where the operator enabled it
// (cache.semantic.shadow.store_text).
type Shadow struct {
	QueryHash   string  `json:"query_hash"`   // the client's question
	MatchedHash string  `json:"matched_hash"` // the stored question whose answer was served
	Similarity  float32 `json:"similarity"`   // the questions' embedding cosine
	Score       float32 `json:"score"`        // the verifier's score of the match
	Threshold   float32 `json:"threshold"`    // the threshold the request was held to
	Verdict     string  `json:"verdict"`      // the judge's: agree, disagree, unsure
	JudgeScore  float32 `json:"judge_score"`  // how strongly the answers agree, in [0, 1]
	JudgeReason string  `json:"judge_reason"` // what decided: cosine, numbers, identifiers, entities, opposite, …
	Query       string  `json:"query,omitempty"`
	Matched     string  `json:"matched,omitempty"`
	Served      string  `json:"served_answer,omitempty"`
	Fresh       string  `json:"fresh_answer,omitempty"`
}

// Attempt is one call to an upstream target, retries and failovers alike.
type Attempt struct {
	Target            string `json:"target"`
	Pool              string `json:"pool,omitempty"`    // the target's upstream pool (upstreams:)
	Status            int    `json:"status,omitempty"`  // HTTP status; 0 if none was received
	TTFTMillis        int64  `json:"ttft_ms,omitempty"` // time to first token
	DurationMillis    int64  `json:"duration_ms"`
	RetryAfterSeconds int    `json:"retry_after_s,omitempty"` // upstream Retry-After
	Error             string `json:"error,omitempty"`
}

// Limiter is the state of the admission limiter that decided.
type Limiter struct {
	Name            string `json:"name,omitempty"`
	Limit           int    `json:"limit"`
	InFlight        int    `json:"in_flight"`
	QueueWaitMillis int64  `json:"queue_wait_ms,omitempty"`
}

// Cache describes the cache entry a stale or semantic-nearest answer came
// from.
type Cache struct {
	Key        string  `json:"key,omitempty"`
	AgeSeconds int64   `json:"age_s"`
	Similarity float32 `json:"similarity,omitempty"` // semantic-nearest only: the embeddings' cosine
	// Score is the verifier's score of the matched question against the
	// prompt (semantic-nearest only); under the route's threshold the
	// answer was served with a notice naming that question (Disclosed).
	Score     float32 `json:"score,omitempty"`
	Disclosed bool    `json:"disclosed,omitempty"`
	// MatchedHash identifies the stored question whose answer was served
	// (semantic-nearest only) without repeating it: 16 bytes of the
	// SHA-256 of its text, in hex, as the X-Edgecache-Matched-Question-Hash
	// header says.
	MatchedHash string `json:"matched_hash,omitempty"`
}

// Tokens are the token counts of the request.
type Tokens struct {
	Estimated int `json:"estimated,omitempty"`
	Actual    int `json:"actual,omitempty"`
}

// Client holds the client's own hints.
type Client struct {
	SDKRetryCount int   `json:"sdk_retry_count,omitempty"` // X-Stainless-Retry-Count
	TimeoutMillis int64 `json:"timeout_ms,omitempty"`      // X-Stainless-Timeout or similar
}

// HashTenant returns a stable, non-reversible identifier for an API key or
// other secret tenant credential: "t-" and 24 hex digits of its SHA-256.
// Operators query by the same value (edgecache prints it for a key).
func HashTenant(key string) string {
	sum := sha256.Sum256([]byte(key))
	return "t-" + hex.EncodeToString(sum[:12])
}
