package telemetry

import (
	"io"
	"sync"
	"time"
)

// LogBuffer batches log lines into few writes. An access log line per
// request written straight to stderr is one write(2) per request: at 40,000
// exact hits/s that was the largest single cost after the socket itself (a
// CPU profile of a loaded server). Like nginx's access_log buffer= and
// flush=, lines collect in memory and go out when the buffer fills or every
// interval, whichever comes first, and on Close. A line is never split:
// each Write (slog writes a whole line per call) goes into the buffer whole,
// or straight through when it alone is larger than the buffer.
//
// What this costs: on a crash (not a clean stop) up to one interval of
// lines is lost.
type LogBuffer struct {
	mu   sync.Mutex
	w    io.Writer
	buf  []byte
	err  error // the last write's error, returned by the next Write
	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// NewLogBuffer starts a LogBuffer over w holding up to size bytes, flushed
// at least every interval.
func NewLogBuffer(w io.Writer, size int, interval time.Duration) *LogBuffer {
	b := &LogBuffer{w: w, buf: make([]byte, 0, size), stop: make(chan struct{}), done: make(chan struct{})}
	go b.flushEvery(interval)
	return b
}

func (b *LogBuffer) flushEvery(interval time.Duration) {
	defer close(b.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			b.Flush()
		case <-b.stop:
			b.Flush()
			return
		}
	}
}

// Write adds p (one line) to the buffer, writing the buffer out first when
// p does not fit.
func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.err; err != nil {
		b.err = nil
		return 0, err
	}
	if len(b.buf)+len(p) > cap(b.buf) {
		b.flushLocked()
		if len(p) > cap(b.buf) {
			return b.w.Write(p)
		}
	}
	b.buf = append(b.buf, p...)
	return len(p), nil
}

// Flush writes out what is buffered.
func (b *LogBuffer) Flush() {
	b.mu.Lock()
	b.flushLocked()
	b.mu.Unlock()
}

func (b *LogBuffer) flushLocked() {
	if len(b.buf) == 0 {
		return
	}
	if _, err := b.w.Write(b.buf); err != nil {
		b.err = err
	}
	b.buf = b.buf[:0]
}

// Close flushes and stops the timer; later writes go straight to w.
func (b *LogBuffer) Close() error {
	b.once.Do(func() {
		close(b.stop)
		<-b.done
		b.mu.Lock()
		b.buf = b.buf[:0:0]
		b.mu.Unlock()
	})
	return nil
}
