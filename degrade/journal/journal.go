// Package journal records every degraded answer edgecache serves, so that
// operators can review what was served, to whom and why.
//
// Journal.Record never blocks the request: it puts the record into a
// bounded buffer, or drops and counts it when the buffer is full. One
// goroutine owned by the Journal takes records in batches, encodes them as
// JSON and writes every batch to both sinks:
//
//   - a local JSONL file in Config.Dir that rotates by size and keeps
//     Config.MaxFiles files: the journal of record, always written;
//   - a capped Redis stream per region (XADD edgecache:journal:{region}
//     MAXLEN ~ N * record <json>) when Config.Redis is set: the region's
//     shared view, which every replica writes and queries.
//
// A Redis failure or restart loses nothing: every record is in the file
// first. After a failed batch Redis is skipped for a back-off period (1 s,
// doubling up to 30 s), then tried again; records are not copied back to
// Redis later.
//
// Refusals (see Refusal) of one tenant, route and reason are folded over
// Config.RefusalWindow into at most two records (see fold.go), so that a
// client hammering its quota cannot flush the journal.
//
// Durability of the file: every batch is written with one write(2) as soon
// as it is taken from the buffer (so it survives a crash of the process),
// and fsync(2) runs at most once per Config.SyncInterval (default 1 s) while
// there are unsynced writes, and on rotation and Close; a power failure can
// lose up to that interval. Records still in the buffer, and refusals being
// folded, are lost if the process dies without Close.
//
// Query reads records back, newest first, filtered by time range, route,
// tenant, rung and reason: the region's Redis stream merged with the local
// files, one copy of each record (by Record.ID); the files alone, with
// ErrPartial, when Redis cannot be read.
package journal

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults applied by New to zero Config fields.
const (
	DefaultMaxFileBytes   = 64 << 20
	DefaultMaxFiles       = 10
	DefaultBuffer         = 4096
	DefaultSyncInterval   = time.Second
	DefaultRefusalWindow  = 10 * time.Second
	DefaultMaxRefusalKeys = 10_000
)

// maxBatch is the most records the writer takes from the buffer at once.
const maxBatch = 512

// ErrClosed is returned by Query after Close.
var ErrClosed = errors.New("journal: closed")

// Config configures a Journal. Dir is required.
type Config struct {
	// Dir holds the JSONL files: the current one, edgecache-journal.jsonl,
	// and rotated ones, edgecache-journal-<UTC time>.jsonl. It is created
	// on the first write. Every record is written there, with or without
	// Redis.
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
	// Redis, if set, also receives every record (one capped stream per
	// region). Its client stays the caller's: close it after Close.
	Redis *RedisSink
	// Buffer is the number of records waiting to be written beyond which
	// Record drops. If zero, it defaults to 4096.
	Buffer int
	// Region is set on records that have none. If empty, it defaults to
	// the Redis sink's region.
	Region string
	// RefusalWindow is the window over which refusals of one tenant, route,
	// rung, reason, lane and status are folded (see Refusal). If zero, it
	// defaults to 10s; if negative, every refusal is a record of its own.
	RefusalWindow time.Duration
	// MaxRefusalKeys bounds the windows open at once; refusals of further
	// tenants fold under Tenant OtherTenants. If zero, it defaults to
	// 10 000.
	MaxRefusalKeys int
	// Logger receives sink failures (throttled) and recovered panics. If
	// nil, slog.Default() is used.
	Logger *slog.Logger
}

// Validate reports a configuration that New would reject.
func (c Config) Validate() error {
	var errs []error
	if c.Dir == "" {
		errs = append(errs, errors.New("Dir is not set (the local file is the journal of record, with or without Redis)"))
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
	if c.MaxRefusalKeys < 0 {
		errs = append(errs, fmt.Errorf("MaxRefusalKeys %d is negative", c.MaxRefusalKeys))
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
	if c.RefusalWindow == 0 {
		c.RefusalWindow = DefaultRefusalWindow
	}
	if c.MaxRefusalKeys == 0 {
		c.MaxRefusalKeys = DefaultMaxRefusalKeys
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
	Written    uint64 // records written to the local file
	Streamed   uint64 // records added to the Redis stream
	Unstreamed uint64 // records the Redis stream did not take (failing or backing off); in the file only
	Dropped    uint64 // records refused by Record: buffer full, or after Close
	Lost       uint64 // records taken from the buffer that no sink could store
	Errors     uint64 // failed sink operations (a Redis batch, a file write)
	Folded     uint64 // refusals counted into another record (its Count) instead of written on their own
	Corrupt    uint64 // undecodable lines or stream entries skipped by Query
}

// Journal is the degradation journal. It is safe for concurrent use.
type Journal struct {
	cfg   Config
	log   *slog.Logger
	file  *fileSink
	redis *RedisSink // nil without Redis
	fold  *folder    // nil when refusals are not folded

	mu     sync.RWMutex // Record holds it shared; Close exclusively, to flip closed
	closed bool
	// ch holds pointers, not Records: a buffer of 4,096 Records is 1.6 MB
	// that the garbage collector scans on every cycle, empty or not (it was
	// 38 % of edgecache's heap scan work while serving cache hits).
	ch chan *Record

	stop      chan struct{} // closed by Close: drain and return
	done      chan struct{} // closed when the writer has returned
	abandon   atomic.Bool   // Close's context expired: stop draining
	closeOnce sync.Once

	idPrefix string // random per Journal: record IDs are unique across replicas and restarts
	seq      atomic.Uint64

	written, streamed, unstreamed, dropped, lost, errs, folded, corrupt atomic.Uint64

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
	var id [8]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, fmt.Errorf("journal: record id prefix: %w", err)
	}
	j := &Journal{
		cfg:         cfg,
		log:         cfg.Logger,
		file:        newFileSink(cfg.Dir, cfg.MaxFileBytes, cfg.MaxFiles),
		redis:       cfg.Redis,
		ch:          make(chan *Record, cfg.Buffer),
		stop:        make(chan struct{}),
		done:        make(chan struct{}),
		idPrefix:    hex.EncodeToString(id[:]) + "-",
		beforeWrite: beforeWrite,
	}
	if cfg.RefusalWindow > 0 {
		j.fold = newFolder(cfg.RefusalWindow, cfg.MaxRefusalKeys)
	}
	go j.run()
	return j, nil
}

// Record queues r for writing and reports whether it was accepted. It never
// blocks: when the buffer is full, or after Close, r is dropped and counted
// in Stats.Dropped. A zero r.Time is set to now, an empty r.Region to
// Config.Region, an empty r.ID to a new unique ID. A refusal (see Refusal)
// may be folded into another record instead of written on its own.
func (j *Journal) Record(r Record) bool {
	if r.Time.IsZero() {
		r.Time = time.Now()
	}
	if r.Region == "" {
		r.Region = j.cfg.Region
	}
	if r.ID == "" {
		r.ID = j.idPrefix + strconv.FormatUint(j.seq.Add(1), 36)
	}
	j.mu.RLock()
	defer j.mu.RUnlock()
	if j.closed {
		j.dropped.Add(1)
		return false
	}
	if j.fold == nil || !Refusal(r) {
		return j.enqueue(r)
	}
	out, n := j.fold.add(r)
	if n == 0 {
		return true // counted into its window's pending record
	}
	for _, o := range out[:n-1] { // a window r is past
		j.enqueueFolded(o)
	}
	return j.enqueue(out[n-1])
}

// enqueue puts r into the buffer, or drops and counts it.
func (j *Journal) enqueue(r Record) bool {
	select {
	case j.ch <- &r:
		return true
	default:
		j.dropped.Add(1)
		return false
	}
}

// enqueueFolded queues a record of folded refusals.
func (j *Journal) enqueueFolded(r Record) {
	if j.enqueue(r) {
		j.folded.Add(uint64(r.Count - 1))
	}
}

// Stats returns the counters.
func (j *Journal) Stats() Stats {
	return Stats{
		Written:    j.written.Load(),
		Streamed:   j.streamed.Load(),
		Unstreamed: j.unstreamed.Load(),
		Dropped:    j.dropped.Load(),
		Lost:       j.lost.Load(),
		Errors:     j.errs.Load(),
		Folded:     j.folded.Load(),
		Corrupt:    j.corrupt.Load(),
	}
}

// Close stops accepting records, writes those in the buffer and the
// refusals being folded, syncs and closes the file. If ctx ends first, Close
// returns its error and the writer drops what is left (counted in
// Stats.Dropped) after the batch in progress; the file is closed when it
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
	var tick, foldTick <-chan time.Time
	if j.cfg.SyncInterval > 0 {
		t := time.NewTicker(j.cfg.SyncInterval)
		defer t.Stop()
		tick = t.C
	}
	if j.fold != nil { // a window's pending record is written within a second of its end
		t := time.NewTicker(min(j.cfg.RefusalWindow, time.Second))
		defer t.Stop()
		foldTick = t.C
	}
	for {
		if j.abandon.Load() { // Close gave up waiting: no more writes
			j.dropped.Add(uint64(len(j.ch)))
			return
		}
		select {
		case r := <-j.ch:
			j.write(j.fill(r))
		case <-tick:
			j.sync()
		case now := <-foldTick:
			j.writeFolded(j.fold.due(now, false))
		case <-j.stop:
			j.drain()
			return
		}
	}
}

// fill returns a batch of first (if not nil) and the records already
// waiting, up to maxBatch. The batch is new each time rather than kept
// across batches: a kept one (512 Records, 196 KB) is scanned by every
// garbage collection.
func (j *Journal) fill(first *Record) []Record {
	n := min(len(j.ch), maxBatch)
	if first != nil {
		n = min(n+1, maxBatch)
	}
	if n == 0 {
		return nil
	}
	batch := make([]Record, 0, n)
	if first != nil {
		batch = append(batch, *first)
	}
	for len(batch) < n {
		select {
		case r := <-j.ch:
			batch = append(batch, *r)
		default:
			return batch
		}
	}
	return batch
}

// drain writes what is left in the buffer after Close, then the refusals
// being folded; nothing can be added any more.
func (j *Journal) drain() {
	for !j.abandon.Load() {
		batch := j.fill(nil)
		if len(batch) == 0 {
			if j.fold != nil {
				j.writeFolded(j.fold.due(time.Time{}, true))
			}
			return
		}
		j.write(batch)
	}
	j.dropped.Add(uint64(len(j.ch)))
}

// writeFolded writes the pending records of closed windows (writer only).
func (j *Journal) writeFolded(recs []Record) {
	for len(recs) > 0 {
		n := min(len(recs), maxBatch)
		j.write(recs[:n])
		for _, r := range recs[:n] {
			j.folded.Add(uint64(r.Count - 1))
		}
		recs = recs[n:]
	}
}

func (j *Journal) closeSinks() {
	if err := j.file.close(); err != nil {
		j.errs.Add(1)
		j.log.Error("journal: close file", "err", err)
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
	if len(lines) == 0 {
		return
	}
	// The file first: it is the journal of record.
	fileErr := j.file.write(lines, j.cfg.SyncInterval < 0)
	if fileErr != nil {
		j.errs.Add(1)
		if n, ok := j.fileLog.allow(time.Now()); ok {
			j.log.Error("journal: write file", "dir", j.cfg.Dir, "records", len(lines),
				"suppressed_errors", n, "err", fileErr)
		}
	}
	notStreamed := len(lines)
	if j.redis != nil {
		failed, err := j.redis.add(lines)
		notStreamed = len(failed)
		if err != nil && !errors.Is(err, errBackingOff) {
			j.errs.Add(1)
		}
		j.streamed.Add(uint64(len(lines) - len(failed)))
		j.unstreamed.Add(uint64(len(failed)))
		j.logRedis(err)
	}
	// Written or Lost last: once they count a batch, its stream counters
	// are final (tests wait on them).
	if fileErr != nil {
		j.lost.Add(uint64(notStreamed))
	} else {
		j.written.Add(uint64(len(lines)))
	}
}

// logRedis logs Redis going down and coming back, once each.
func (j *Journal) logRedis(err error) {
	switch {
	case err == nil && j.redisLog.down:
		j.redisLog.down = false
		j.log.Info("journal: redis stream writable again", "stream", j.redis.key)
	case err != nil && !errors.Is(err, errBackingOff) && !j.redisLog.down:
		j.redisLog.down = true
		j.log.Warn("journal: redis stream failed; records are in the local file only until it recovers",
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
