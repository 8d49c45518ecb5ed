// Package journal records every degraded answer edgecache serves, so that
// operators can review what was served, to whom and why.
//
// Journal.Record never blocks the request: it puts the record into a
// bounded buffer, or drops and counts it when the buffer is full. One
// goroutine owned by the Journal takes records in batches, encodes them as
// JSON and writes them to the sinks:
//
//   - a capped Redis stream per region (XADD edgecache:journal:{region}
//     MAXLEN ~ N * record <json>) when Config.Redis is set;
//   - otherwise, and for every batch Redis fails to take, a local JSONL
//     file in Config.Dir that rotates by size and keeps Config.MaxFiles
//     files.
//
// A Redis failure never blocks or loses records while Config.Dir is set:
// the batch goes to the file, Redis is skipped for a back-off period (1 s,
// doubling up to 30 s), then tried again. Records are not copied back to
// Redis later; Query reads both.
//
// Durability of the file: every batch is written with one write(2) as soon
// as it is taken from the buffer (so it survives a crash of the process),
// and fsync(2) runs at most once per Config.SyncInterval (default 1 s) while
// there are unsynced writes, and on rotation and Close; a power failure can
// lose up to that interval. Records still in the buffer are lost if the
// process dies without Close.
//
// Query reads records back, newest first, filtered by time range, route,
// tenant, rung and reason: from the Redis stream when configured, merged
// with the local files.
package journal

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults applied by New to zero Config fields.
const (
	DefaultMaxFileBytes = 64 << 20
	DefaultMaxFiles     = 10
	DefaultBuffer       = 4096
	DefaultSyncInterval = time.Second
)

// maxBatch is the most records the writer takes from the buffer at once.
const maxBatch = 512

// ErrClosed is returned by Query after Close.
var ErrClosed = errors.New("journal: closed")

// Config configures a Journal. At least one of Dir and Redis is required.
type Config struct {
	// Dir holds the JSONL files: the current one, edgecache-journal.jsonl,
	// and rotated ones, edgecache-journal-<UTC time>.jsonl. It is created
	// on the first write. If empty, records go to Redis only, and the
	// records Redis fails to take are lost (and counted in Stats.Lost).
	Dir string
	// MaxFileBytes is the size at which the current file is rotated. If
	// zero, it defaults to 64 MiB.
	MaxFileBytes int64
	// MaxFiles is the number of files kept, the current one included; the
	// oldest rotated files are deleted. If zero, it defaults to 10.
	MaxFiles int
	// SyncInterval is the longest time written records stay unsynced
	// (fsync). If zero, it defaults to 1s; if negative, every batch is
	// synced.
	SyncInterval time.Duration
	// Redis, if set, receives the records (one capped stream per region).
	// Its client stays the caller's: close it after Close.
	Redis *RedisSink
	// Buffer is the number of records waiting to be written beyond which
	// Record drops. If zero, it defaults to 4096.
	Buffer int
	// Region is set on records that have none. If empty, it defaults to
	// the Redis sink's region.
	Region string
	// Logger receives sink failures (throttled) and recovered panics. If
	// nil, slog.Default() is used.
	Logger *slog.Logger
}

// Validate reports a configuration that New would reject.
func (c Config) Validate() error {
	var errs []error
	if c.Dir == "" && c.Redis == nil {
		errs = append(errs, errors.New("neither Dir nor Redis is set"))
	}
	if c.MaxFileBytes < 0 {
		errs = append(errs, fmt.Errorf("MaxFileBytes %d is negative", c.MaxFileBytes))
	}
	if c.MaxFiles < 0 {
		errs = append(errs, fmt.Errorf("MaxFiles %d is negative", c.MaxFiles))
	}
	if c.Buffer < 0 {
		errs = append(errs, fmt.Errorf("Buffer %d is negative", c.Buffer))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("journal: invalid config: %w", err)
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.MaxFileBytes == 0 {
		c.MaxFileBytes = DefaultMaxFileBytes
	}
	if c.MaxFiles == 0 {
		c.MaxFiles = DefaultMaxFiles
	}
	if c.SyncInterval == 0 {
		c.SyncInterval = DefaultSyncInterval
	}
	if c.Buffer == 0 {
		c.Buffer = DefaultBuffer
	}
	if c.Region == "" && c.Redis != nil {
		c.Region = c.Redis.region
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Stats are cumulative counters since New.
type Stats struct {
	Written   uint64 // records stored by a sink
	Dropped   uint64 // records refused by Record: buffer full, or after Close
	Lost      uint64 // records taken from the buffer that no sink could store
	Errors    uint64 // failed sink operations (a Redis batch, a file write)
	Fallbacks uint64 // records written to the file because Redis failed or was backing off
	Corrupt   uint64 // undecodable lines or stream entries skipped by Query
}

// Journal is the degradation journal. It is safe for concurrent use.
type Journal struct {
	cfg   Config
	log   *slog.Logger
	file  *fileSink  // nil without Dir
	redis *RedisSink // nil without Redis

	mu     sync.RWMutex // Record holds it shared; Close exclusively, to flip closed
	closed bool
	ch     chan Record

	stop      chan struct{} // closed by Close: drain and return
	done      chan struct{} // closed when the writer has returned
	abandon   atomic.Bool   // Close's context expired: stop draining
	closeOnce sync.Once

	written, dropped, lost, errs, fallbacks, corrupt atomic.Uint64

	// beforeWrite, if set (tests), is called by the writer with each batch
	// before it is written.
	beforeWrite func([]Record)

	fileLog  throttle // writer goroutine only
	redisLog throttle
}

// New validates cfg and starts the writer goroutine. It does not touch the
// disk or the network: files are created on the first write. Close stops
// the writer.
func New(cfg Config) (*Journal, error) {
	return newJournal(cfg, nil)
}

func newJournal(cfg Config, beforeWrite func([]Record)) (*Journal, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	j := &Journal{
		cfg:         cfg,
		log:         cfg.Logger,
		redis:       cfg.Redis,
		ch:          make(chan Record, cfg.Buffer),
		stop:        make(chan struct{}),
		done:        make(chan struct{}),
		beforeWrite: beforeWrite,
	}
	if cfg.Dir != "" {
		j.file = newFileSink(cfg.Dir, cfg.MaxFileBytes, cfg.MaxFiles)
	}
	go j.run()
	return j, nil
}

// Record queues r for writing and reports whether it was accepted. It never
// blocks: when the buffer is full, or after Close, r is dropped and counted
// in Stats.Dropped. A zero r.Time is set to now, an empty r.Region to
// Config.Region.
func (j *Journal) Record(r Record) bool {
	if r.Time.IsZero() {
		r.Time = time.Now()
	}
	if r.Region == "" {
		r.Region = j.cfg.Region
	}
	j.mu.RLock()
	defer j.mu.RUnlock()
	if j.closed {
		j.dropped.Add(1)
		return false
	}
	select {
	case j.ch <- r:
		return true
	default:
		j.dropped.Add(1)
		return false
	}
}

// Stats returns the counters.
func (j *Journal) Stats() Stats {
	return Stats{
		Written:   j.written.Load(),
		Dropped:   j.dropped.Load(),
		Lost:      j.lost.Load(),
		Errors:    j.errs.Load(),
		Fallbacks: j.fallbacks.Load(),
		Corrupt:   j.corrupt.Load(),
	}
}

// Close stops accepting records, writes those in the buffer, syncs and
// closes the file and closes the Redis sink. If ctx ends first, Close
// returns its error and the writer drops what is left (counted in
// Stats.Dropped) after the batch in progress; the sinks are closed when it
// returns. Close may be called again to wait for that.
func (j *Journal) Close(ctx context.Context) error {
	j.closeOnce.Do(func() {
		j.mu.Lock()
		j.closed = true
		j.mu.Unlock()
		close(j.stop)
	})
	select {
	case <-j.done:
		return nil
	case <-ctx.Done():
		j.abandon.Store(true)
		return ctx.Err()
	}
}

// run is the writer goroutine.
func (j *Journal) run() {
	defer close(j.done)
	defer j.closeSinks()
	var tick <-chan time.Time
	if j.file != nil && j.cfg.SyncInterval > 0 {
		t := time.NewTicker(j.cfg.SyncInterval)
		defer t.Stop()
		tick = t.C
	}
	batch := make([]Record, 0, maxBatch)
	for {
		if j.abandon.Load() { // Close gave up waiting: no more writes
			j.dropped.Add(uint64(len(j.ch)))
			return
		}
		select {
		case r := <-j.ch:
			batch = j.fill(append(batch[:0], r))
			j.write(batch)
		case <-tick:
			j.sync()
		case <-j.stop:
			j.drain(batch)
			return
		}
	}
}

// fill adds records already waiting, up to maxBatch.
func (j *Journal) fill(batch []Record) []Record {
	for len(batch) < maxBatch {
		select {
		case r := <-j.ch:
			batch = append(batch, r)
		default:
			return batch
		}
	}
	return batch
}

// drain writes what is left in the buffer after Close; nothing can be
// added any more.
func (j *Journal) drain(batch []Record) {
	for !j.abandon.Load() {
		batch = j.fill(batch[:0])
		if len(batch) == 0 {
			return
		}
		j.write(batch)
	}
	j.dropped.Add(uint64(len(j.ch)))
}

func (j *Journal) closeSinks() {
	if j.file != nil {
		if err := j.file.close(); err != nil {
			j.errs.Add(1)
			j.log.Error("journal: close file", "err", err)
		}
	}
}

// write stores one batch; a panic is logged and the batch counted lost.
func (j *Journal) write(batch []Record) {
	defer func() {
		if r := recover(); r != nil {
			j.errs.Add(1)
			j.lost.Add(uint64(len(batch)))
			j.log.Error("journal: panic while writing; batch lost", "records", len(batch),
				"panic", r, "stack", string(debug.Stack()))
		}
	}()
	if j.beforeWrite != nil {
		j.beforeWrite(batch)
	}
	lines := make([][]byte, 0, len(batch))
	for _, r := range batch {
		b, err := json.Marshal(r)
		if err != nil { // only for values JSON cannot represent, e.g. NaN similarity
			j.errs.Add(1)
			j.lost.Add(1)
			j.log.Error("journal: encode record", "request_id", r.RequestID, "err", err)
			continue
		}
		lines = append(lines, b)
	}
	pending := lines
	if j.redis != nil {
		failed, err := j.redis.add(lines)
		pending = failed
		if err != nil && !errors.Is(err, errBackingOff) {
			j.errs.Add(1)
		}
		if n := len(lines) - len(failed); n > 0 {
			j.written.Add(uint64(n))
		}
		j.logRedis(err)
		if len(failed) > 0 && j.file != nil {
			j.fallbacks.Add(uint64(len(failed)))
		}
	}
	if len(pending) == 0 {
		return
	}
	if j.file == nil {
		j.lost.Add(uint64(len(pending)))
		return
	}
	if err := j.file.write(pending, j.cfg.SyncInterval < 0); err != nil {
		j.errs.Add(1)
		j.lost.Add(uint64(len(pending)))
		if n, ok := j.fileLog.allow(time.Now()); ok {
			j.log.Error("journal: write file; records lost", "dir", j.cfg.Dir, "records", len(pending),
				"suppressed_errors", n, "err", err)
		}
		return
	}
	j.written.Add(uint64(len(pending)))
}

// logRedis logs Redis going down and coming back, once each.
func (j *Journal) logRedis(err error) {
	switch {
	case err == nil && j.redisLog.down:
		j.redisLog.down = false
		j.log.Info("journal: redis stream writable again", "stream", j.redis.key)
	case err != nil && !errors.Is(err, errBackingOff) && !j.redisLog.down:
		j.redisLog.down = true
		j.log.Warn("journal: redis stream failed; writing to the local file until it recovers",
			"stream", j.redis.key, "dir", j.cfg.Dir, "err", err)
	}
}

func (j *Journal) sync() {
	if err := j.file.sync(); err != nil {
		j.errs.Add(1)
		if n, ok := j.fileLog.allow(time.Now()); ok {
			j.log.Error("journal: sync file", "dir", j.cfg.Dir, "suppressed_errors", n, "err", err)
		}
	}
}

// throttle lets a repeated log line through at most every 10 seconds.
type throttle struct {
	last       time.Time
	suppressed int
	down       bool // for transitions (Redis)
}

func (t *throttle) allow(now time.Time) (suppressed int, ok bool) {
	if !t.last.IsZero() && now.Sub(t.last) < 10*time.Second {
		t.suppressed++
		return 0, false
	}
	n := t.suppressed
	t.last, t.suppressed = now, 0
	return n, true
}
