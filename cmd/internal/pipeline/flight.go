package pipeline

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/edgecache/edgecache/cache"
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

	mu      sync.Mutex
	wakes   []chan struct{} // one per reader (watch), signalled whenever something is added
	status  int             // 0 until the upstream's header arrived
	header  http.Header
	events  [][]byte // stream: raw SSE events; otherwise the whole body
	dropped int      // events written and let go of (dropWritten)
	done    bool
	err     error // set with done when the call failed
	stored  bool  // set with done when the answer went to the cache
	usage   int64 // tokens the upstream reported for the answer, -1 unknown
	waiters int
	cancel  context.CancelFunc
	// onAppend, when set, is called on the relay's goroutine after the
	// header or an event is added (serveInline's client writer); it is set
	// before the call runs and only for a call nobody else reads.
	onAppend func()
}

func newCall(key string, stream bool, cancel context.CancelFunc) *call {
	return &call{key: key, stream: stream, cancel: cancel, usage: -1}
}

// notifyLocked wakes the readers: each has a channel of its own with room
// for one signal, so a change costs no allocation, and one that lands
// between a reader's read and its wait is not lost.
func (c *call) notifyLocked() {
	for _, w := range c.wakes {
		select {
		case w <- struct{}{}:
		default: // already signalled
		}
	}
}

// watch returns a channel signalled whenever something is added to the
// call; the reader reads again when it is. unwatch drops it.
func (c *call) watch() chan struct{} {
	w := make(chan struct{}, 1)
	c.mu.Lock()
	c.wakes = append(c.wakes, w)
	c.mu.Unlock()
	return w
}

func (c *call) unwatch(w chan struct{}) {
	c.mu.Lock()
	for i, x := range c.wakes {
		if x == w {
			c.wakes = append(c.wakes[:i], c.wakes[i+1:]...)
			break
		}
	}
	c.mu.Unlock()
}

func (c *call) setHeader(status int, h http.Header) {
	c.mu.Lock()
	c.status, c.header = status, h
	c.notifyLocked()
	c.mu.Unlock()
	if c.onAppend != nil {
		c.onAppend()
	}
}

func (c *call) append(ev []byte) {
	c.mu.Lock()
	c.events = append(c.events, ev)
	c.notifyLocked()
	c.mu.Unlock()
	if c.onAppend != nil {
		c.onAppend()
	}
}

func (c *call) finish(err error, stored bool) {
	c.mu.Lock()
	c.done, c.err, c.stored = true, err, stored
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
	usage  int64
}

func (c *call) read(from int) view {
	c.mu.Lock()
	defer c.mu.Unlock()
	v := view{status: c.status, header: c.header, done: c.done, err: c.err, stored: c.stored, usage: c.usage}
	if from -= c.dropped; from >= 0 && from < len(c.events) {
		v.events = c.events[from:len(c.events):len(c.events)]
	}
	return v
}

// dropWritten lets go of the events before upTo, which the call's only
// reader has written: a stream relayed inline holds what it has not sent
// yet, not its whole answer (200 events of a long stream and their slabs
// stayed on the heap until it ended). Only for a call nobody else reads.
func (c *call) dropWritten(upTo int) {
	c.mu.Lock()
	if n := upTo - c.dropped; n > 0 && n <= len(c.events) {
		clear(c.events[:n])
		c.events = c.events[n:]
		c.dropped = upTo
	}
	c.mu.Unlock()
}

// flights indexes the calls in progress.
type flights struct {
	mu    sync.Mutex
	calls map[string]*call
}

// join subscribes the caller to the call in progress for key, or to a new
// one made by mk; created reports whether the caller must run it. landed is
// consulted, under the same lock that completed calls are forgotten under,
// before a new call is made: when it reports true the answer has just been
// stored, and join returns a nil call so the caller reads it instead.
func (f *flights) join(key string, mk func() *call, landed func() bool) (c *call, created bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c = f.calls[key]; c != nil {
		c.mu.Lock()
		usable := !c.done && c.waiters > 0 // zero waiters: canceled, on its way out
		if usable {
			c.waiters++
		}
		c.mu.Unlock()
		if usable {
			return c, false
		}
	}
	if landed() {
		return nil, false
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

// recent holds answers just stored, for the moment their write takes to
// become visible in the cache tiers (the write queue and ristretto's buffers
// are asynchronous): a request arriving then, streamed or not, is still a
// hit and never a second upstream call.
type recent struct {
	mu      sync.Mutex
	entries map[cache.Key]cache.Entry
}

func (r *recent) put(k cache.Key, e cache.Entry, keep time.Duration) {
	r.mu.Lock()
	if r.entries == nil {
		r.entries = map[cache.Key]cache.Entry{}
	}
	r.entries[k] = e
	r.mu.Unlock()
	time.AfterFunc(keep, func() {
		r.mu.Lock()
		if cur, ok := r.entries[k]; ok && cur.StoredAt.Equal(e.StoredAt) {
			delete(r.entries, k)
		}
		r.mu.Unlock()
	})
}

// get returns the entry for k while it is fresh.
func (r *recent) get(k cache.Key) (cache.Entry, bool) {
	r.mu.Lock()
	e, ok := r.entries[k]
	r.mu.Unlock()
	return e, ok && time.Now().Before(e.ExpiresAt)
}
