package admission

import (
	"errors"
	"fmt"
	"time"
)

// Sentinel errors; match them with errors.Is.
var (
	// ErrRateLimited: the caller's own quota is exhausted (429,
	// CodeRateLimitExceeded). The error is a *RateLimitError.
	ErrRateLimited = errors.New("admission: rate limit exceeded")
	// ErrShed: the request was refused to protect the service or the
	// upstream (queue full, displaced by a higher lane, in-flight or memory
	// pressure). 503 with Retry-After. The error is a *RejectError.
	ErrShed = errors.New("admission: shed")
	// ErrQueueTimeout: the request waited as long as its lane or its
	// deadline allows without getting an upstream slot. 503 with
	// Retry-After. The error is a *RejectError.
	ErrQueueTimeout = errors.New("admission: queue wait exceeded")
)

// CodeRateLimitExceeded is the OpenAI error code of an own-quota 429.
const CodeRateLimitExceeded = "rate_limit_exceeded"

// Reasons a RejectError gives; bounded, usable as metric attributes and in
// the degradation journal.
const (
	ReasonQueueFull = "queue_full" // the bounded queue had no room and no lower lane to displace
	ReasonDisplaced = "displaced"  // queued, then displaced by a higher lane when the queue was full
	ReasonInFlight  = "inflight"   // self-protection: too many requests in flight
	ReasonMemory    = "memory"     // self-protection: heap above the lane's threshold
	ReasonMaxWait   = "max_wait"   // waited the lane's maximum queue wait
	ReasonDeadline  = "deadline"   // the client's deadline leaves no time to wait
)

// RejectError is returned by Concurrency.Acquire and Protector.Enter when a
// request is shed or times out in the queue.
type RejectError struct {
	Err        error         // ErrShed or ErrQueueTimeout
	Reason     string        // one of the Reason constants
	Lane       Lane          // the rejected request's lane
	RetryAfter time.Duration // estimate of when a retry may succeed (> 0)
	Waited     time.Duration // time spent queued before the rejection
}

func (e *RejectError) Error() string {
	return fmt.Sprintf("%v (%s, lane %s, waited %v, retry after %v)", e.Err, e.Reason, e.Lane, e.Waited, e.RetryAfter)
}

func (e *RejectError) Unwrap() error { return e.Err }

// RateLimitError is a denying Decision as an error; it matches
// ErrRateLimited.
type RateLimitError struct {
	Decision Decision
}

func (e *RateLimitError) Error() string { return "admission: " + e.Decision.Message() }

func (e *RateLimitError) Unwrap() error { return ErrRateLimited }

// RetryAfter returns the Retry-After carried by err (a *RejectError or a
// *RateLimitError, possibly wrapped).
func RetryAfter(err error) (time.Duration, bool) {
	var re *RejectError
	if errors.As(err, &re) {
		return re.RetryAfter, true
	}
	var rl *RateLimitError
	if errors.As(err, &rl) {
		return rl.Decision.RetryAfter, true
	}
	return 0, false
}

// RetryAfterSeconds converts a delay to the whole seconds of a Retry-After
// header: rounded up, at least 1.
func RetryAfterSeconds(d time.Duration) int {
	s := int((d + time.Second - 1) / time.Second)
	return max(s, 1)
}
