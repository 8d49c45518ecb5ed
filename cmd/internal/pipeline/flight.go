package pipeline

import (
	"context"
	"net/http"
	"sync"
	"time"
)

// A call is one upstream request whose answer any number of clients read as
// it arrives: identical concurrent misses share one call (coalescing), and a
// streamed answer is fanned out event by event. Events are append-only and
// the header is fixed once set, so readers copy nothing under the lock but
// slice headers.
//
// Lifetime: the call runs under its own context, detached from every client.
// A client that goes away unsubscribes; when the last one has gone before the
// answer is complete, the call is canceled (nobody is left to pay for it).
type call struct {
	key    string // flight key; "" when not coalesced
	stream bool   // the upstream answers with Server-Sent Events

	mu       sync.Mutex
	changed  chan struct{} // closed and replaced whenever something is added
	status   int           // 0 until the upstream's header arrived
	header   http.Header
	events   [][]byte // stream: raw SSE events; otherwise the whole body
	done     bool
	err      error // set with done when the call failed
	stored   bool  // set with done when the answer went to the cache
	waiters  int
	cancel   context.CancelFunc
	finished time.Time
}

func newCall(key string, stream bool, cancel context.CancelFunc) *call {
	return &call{key: key, stream: stream, changed: make(chan struct{}), cancel: cancel}
}

func (c *call) notifyLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

func (c *call) setHeader(status int, h http.Header) {
	c.mu.Lock()
	c.status, c.header = status, h
	c.notifyLocked()
	c.mu.Unlock()
}

func (c *call) append(ev []byte) {
	c.mu.Lock()
	c.events = append(c.events, ev)
	c.notifyLocked()
	c.mu.Unlock()
}

func (c *call) finish(err error, stored bool) {
	c.mu.Lock()
	c.done, c.err, c.stored = true, err, stored
	c.finished = time.Now()
	c.notifyLocked()
	c.mu.Unlock()
}

// view is what a reader sees at one moment.
type view struct {
	status int
	header http.Header
	events [][]byte // events[from:] that are new to the reader
	done   bool
	err    error
	stored bool
	wait   <-chan struct{}
}

func (c *call) read(from int) view {
	c.mu.Lock()
	defer c.mu.Unlock()
	v := view{status: c.status, header: c.header, done: c.done, err: c.err, stored: c.stored, wait: c.changed}
	if from < len(c.events) {
		v.events = c.events[from:len(c.events):len(c.events)]
	}
	return v
}

// flights indexes the calls in progress (and, for a short grace period,
// calls just completed, so a request arriving while the answer is on its way
// into the cache still finds it).
type flights struct {
	mu    sync.Mutex
	calls map[string]*call
}

// join subscribes the caller to the call for key, or to a new one made by
// mk when there is no usable call; created reports whether the caller must
// run it. A call is usable while in progress with readers, or once it has
// completed and its answer was stored.
func (f *flights) join(key string, mk func() *call) (c *call, created bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c = f.calls[key]; c != nil {
		c.mu.Lock()
		usable := c.err == nil && (!c.done || c.stored) && (c.done || c.waiters > 0)
		if usable {
			c.waiters++
		}
		c.mu.Unlock()
		if usable {
			return c, false
		}
	}
	c = mk()
	c.waiters = 1
	if f.calls == nil {
		f.calls = map[string]*call{}
	}
	f.calls[key] = c
	return c, true
}

// forget removes c if it is still the call for its key.
func (f *flights) forget(c *call) {
	f.mu.Lock()
	if f.calls[c.key] == c {
		delete(f.calls, c.key)
	}
	f.mu.Unlock()
}

// leave unsubscribes one reader; the last reader of an unfinished call
// cancels it.
func (c *call) leave() {
	c.mu.Lock()
	c.waiters--
	cancel := c.waiters == 0 && !c.done
	c.mu.Unlock()
	if cancel {
		c.cancel()
	}
}
