package journal

import (
	"bufio"
	"bytes"
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"
)

// Query limits.
const (
	DefaultQueryLimit = 100
	MaxQueryLimit     = 10_000
)

// ErrPartial is returned (wrapped) by Journal.Query with the records it
// could read when Redis failed but the local files were read: the result
// misses what only the stream holds.
var ErrPartial = errors.New("journal: partial result, redis stream unreadable; local files only")

// Query selects records. Zero fields do not filter.
type Query struct {
	Since time.Time // records at or after Since
	Until time.Time // records before Until
	// Route, Tenant, Rung and Reason must equal the record's fields.
	Route  string
	Tenant string
	Rung   Rung
	Reason string
	// Region selects another region's Redis stream; local files are read
	// only for the journal's own region. If empty, the journal's region.
	Region string
	// Limit is the most records returned, newest first. If zero, it
	// defaults to 100; it may not exceed 10 000.
	Limit int
}

func (q Query) normalize() (Query, error) {
	switch {
	case q.Limit < 0:
		return q, fmt.Errorf("journal: query limit %d is negative", q.Limit)
	case q.Limit > MaxQueryLimit:
		return q, fmt.Errorf("journal: query limit %d is more than %d", q.Limit, MaxQueryLimit)
	case !q.Since.IsZero() && !q.Until.IsZero() && !q.Since.Before(q.Until):
		return q, fmt.Errorf("journal: query since %s is not before until %s", q.Since.Format(time.RFC3339), q.Until.Format(time.RFC3339))
	case q.Rung != "" && !q.Rung.Valid():
		return q, fmt.Errorf("journal: unknown rung %q (want one of %v)", q.Rung, Rungs())
	}
	if q.Limit == 0 {
		q.Limit = DefaultQueryLimit
	}
	return q, nil
}

// Query returns the records matching q, newest first (by Record.Time), at
// most q.Limit. With Redis configured it reads the region's stream (every
// replica's records, as far back as the cap and the last Redis restart
// allow) merged with this replica's local files (every record it wrote,
// as far back as rotation allows), one copy of each record by Record.ID;
// if the stream cannot be read, it returns what the files hold and an
// error wrapping ErrPartial. Another region's stream (q.Region) is read
// without the files. Lines and entries that do not decode are skipped and
// counted in Stats.Corrupt. It may be called from a process that never
// records (a CLI): files are only read.
func (j *Journal) Query(ctx context.Context, q Query) ([]Record, error) {
	j.mu.RLock()
	closed := j.closed
	j.mu.RUnlock()
	if closed {
		return nil, ErrClosed
	}
	q, err := q.normalize()
	if err != nil {
		return nil, err
	}
	c := newCollector(q)
	corrupt := func() { j.corrupt.Add(1) }
	var partial error
	if j.redis != nil {
		region := q.Region
		if region == "" {
			region = j.redis.region
		}
		err := j.redis.query(ctx, region, q.Since, q.Until, func(r Record) bool {
			c.offer(r)
			// Stream order is arrival order; stop well past the oldest kept.
			return !c.full() || r.Time.After(c.oldest().Add(-clockSkew))
		}, corrupt)
		if err != nil {
			if ctx.Err() != nil {
				return nil, err
			}
			partial = err
		}
	}
	if q.Region == "" || q.Region == j.cfg.Region {
		if err := j.queryFiles(ctx, c, corrupt); err != nil {
			return nil, err
		}
	}
	out := c.result()
	if partial != nil {
		return out, fmt.Errorf("%w: %w", ErrPartial, partial)
	}
	return out, nil
}

// queryFiles scans the files newest first. A rotated file holds only
// records older than its rotation time, so scanning stops at the first one
// rotated before Since, or before the oldest record kept once Limit are.
func (j *Journal) queryFiles(ctx context.Context, c *collector, corrupt func()) error {
	files, err := j.file.snapshot()
	if err != nil {
		return err
	}
	defer func() {
		for _, f := range files {
			f.f.Close()
		}
	}()
	for _, f := range files {
		if !f.rotated.IsZero() {
			if !c.q.Since.IsZero() && f.rotated.Before(c.q.Since) {
				return nil
			}
			if c.full() && f.rotated.Before(c.oldest()) {
				return nil
			}
		}
		n := 0
		err := forEachLine(f.r, maxLine, func(line []byte) bool {
			if n++; n%4096 == 0 && ctx.Err() != nil {
				return false
			}
			if !c.prefilter(line) || !c.mayKeep(line) {
				return true
			}
			r, ok := decodeLine(line)
			if !ok {
				corrupt()
				return true
			}
			c.offer(r)
			return true
		})
		if err != nil {
			return fmt.Errorf("journal: read %s: %w", f.f.Name(), err)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return nil
}

// maxLine is the longest line read from a file; longer ones are corrupt.
const maxLine = 16 << 20

// forEachLine calls fn with every non-blank line of r, trimmed, until fn
// returns false. A line longer than maxLine bytes is passed as "\x00", which no
// decoder accepts, so that the caller counts it as corrupt.
func forEachLine(r io.Reader, maxLine int, fn func([]byte) bool) error {
	br := bufio.NewReaderSize(r, 64<<10)
	var long []byte
	tooLong := false
	for {
		chunk, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			if len(long)+len(chunk) > maxLine {
				tooLong, long = true, long[:0]
			} else if !tooLong {
				long = append(long, chunk...)
			}
			continue
		}
		line := chunk
		if len(long) > 0 {
			line = append(long, chunk...)
		}
		if tooLong || len(line) > maxLine+1 { // +1: the newline
			line = []byte("\x00") // undecodable: counted as corrupt
		}
		if line = bytes.TrimSpace(line); len(line) > 0 && !fn(line) {
			return nil
		}
		long, tooLong = long[:0], false
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// decodeLine decodes one JSON record; a record without time is corrupt.
func decodeLine(b []byte) (Record, bool) {
	var r Record
	if err := json.Unmarshal(b, &r); err != nil || r.Time.IsZero() {
		return Record{}, false
	}
	return r, true
}

// collector keeps the newest Limit matching records in a min-heap by time,
// one copy of each record ID.
type collector struct {
	q       Query
	needles [][]byte // `"field":"value"` as encoding/json writes them
	h       recordHeap
	// kept holds the IDs in the heap. A copy of a record that left the
	// heap needs no entry: it has the same Time, so it cannot enter again.
	kept map[string]struct{}
}

func newCollector(q Query) *collector {
	c := &collector{q: q, kept: map[string]struct{}{}}
	for _, f := range []struct{ name, value string }{
		{"route", q.Route}, {"tenant", q.Tenant}, {"rung", string(q.Rung)}, {"reason", q.Reason},
	} {
		if f.value == "" {
			continue
		}
		v, _ := json.Marshal(f.value) // a string always encodes
		c.needles = append(c.needles, append([]byte(`"`+f.name+`":`), v...))
	}
	return c
}

// prefilter reports whether a line may match: it contains every filtered
// field as encoding/json writes it. Lines that fail it are not decoded.
func (c *collector) prefilter(line []byte) bool {
	for _, n := range c.needles {
		if !bytes.Contains(line, n) {
			return false
		}
	}
	return true
}

func (c *collector) match(r Record) bool {
	q := c.q
	return (q.Since.IsZero() || !r.Time.Before(q.Since)) &&
		(q.Until.IsZero() || r.Time.Before(q.Until)) &&
		(q.Route == "" || r.Route == q.Route) &&
		(q.Tenant == "" || r.Tenant == q.Tenant) &&
		(q.Rung == "" || r.Rung == q.Rung) &&
		(q.Reason == "" || r.Reason == q.Reason)
}

// mayKeep reports whether a line may enter the result judging by its time
// alone, read without decoding the line when it starts as encoding/json
// writes a Record ({"time":"<RFC 3339>",…). Scanning a file mostly meets
// lines too old to be kept; they are skipped at the cost of a time parse.
func (c *collector) mayKeep(line []byte) bool {
	const head = `{"time":"`
	if !bytes.HasPrefix(line, []byte(head)) {
		return true // decode it and let offer decide
	}
	rest := line[len(head):]
	end := bytes.IndexByte(rest, '"')
	if end < 0 {
		return true
	}
	t, err := time.Parse(time.RFC3339Nano, string(rest[:end]))
	if err != nil {
		return true
	}
	return (c.q.Since.IsZero() || !t.Before(c.q.Since)) &&
		(c.q.Until.IsZero() || t.Before(c.q.Until)) &&
		(!c.full() || t.After(c.oldest()))
}

func (c *collector) offer(r Record) {
	if !c.match(r) {
		return
	}
	if r.ID != "" {
		if _, dup := c.kept[r.ID]; dup {
			return
		}
	}
	if c.full() {
		if !r.Time.After(c.h[0].Time) {
			return
		}
		old := heap.Pop(&c.h).(Record)
		delete(c.kept, old.ID)
	}
	heap.Push(&c.h, r)
	if r.ID != "" {
		c.kept[r.ID] = struct{}{}
	}
}

func (c *collector) full() bool { return len(c.h) >= c.q.Limit }

// oldest is the time of the oldest record kept; call only when full.
func (c *collector) oldest() time.Time { return c.h[0].Time }

// result returns the records kept, newest first.
func (c *collector) result() []Record {
	out := slices.Clone([]Record(c.h))
	slices.SortStableFunc(out, func(a, b Record) int { return b.Time.Compare(a.Time) })
	return out
}

// recordHeap is a min-heap of records by time.
type recordHeap []Record

func (h recordHeap) Len() int           { return len(h) }
func (h recordHeap) Less(i, k int) bool { return h[i].Time.Before(h[k].Time) }
func (h recordHeap) Swap(i, k int)      { h[i], h[k] = h[k], h[i] }
func (h *recordHeap) Push(x any)        { *h = append(*h, x.(Record)) }
func (h *recordHeap) Pop() any {
	old := *h
	r := old[len(old)-1]
	*h = old[:len(old)-1]
	return r
}
