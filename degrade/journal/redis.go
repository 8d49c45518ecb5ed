package journal

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis sink defaults and limits.
const (
	DefaultMaxLen = 100_000
	DefaultRegion = "default"

	redisWriteTimeout = time.Second // one batch of XADDs
	redisMinBackoff   = time.Second // Redis skipped after a failed batch...
	redisMaxBackoff   = 30 * time.Second
)

// errBackingOff is returned by add while Redis is skipped after a failure.
var errBackingOff = errors.New("journal: redis backing off after a failure")

// RedisSink writes records to one capped Redis stream per region,
// edgecache:journal:{<region>}, as entries with a single field "record"
// holding the JSON. It is handed to a Journal in Config.Redis.
//
// Its back-off is its own, not the shared client's or L2's breaker: the
// journal's budget is a second per batch and every record is in the local
// file anyway, so it only needs to stop paying a timeout per batch while
// Redis is away; L2 and global limits judge Redis by millisecond budgets.
type RedisSink struct {
	client redis.UniversalClient
	region string
	key    string
	maxLen int64

	minBackoff, maxBackoff time.Duration

	mu        sync.Mutex // guards the back-off state (writer and queries)
	downUntil time.Time
	backoff   time.Duration
}

// NewRedisSink returns a sink writing to client, the region's Redis client
// (a single node, a Redis Cluster or Sentinel), which must honour context
// deadlines (go-redis ContextTimeoutEnabled): each batch and query is
// bounded through its context. The caller owns client and closes it after
// the Journal. The sink is the journal's Redis adapter, hence the go-redis
// type in its signature. region names the stream; if empty, it is
// "default". maxLen caps the stream approximately (MAXLEN ~); if zero or
// negative, it is 100 000. It does not contact Redis.
func NewRedisSink(client redis.UniversalClient, region string, maxLen int64) (*RedisSink, error) {
	if client == nil {
		return nil, errors.New("journal: redis sink: no client")
	}
	if region == "" {
		region = DefaultRegion
	}
	if strings.ContainsAny(region, "{} \t\r\n") {
		return nil, fmt.Errorf("journal: region %q must not contain braces or white space", region)
	}
	if maxLen <= 0 {
		maxLen = DefaultMaxLen
	}
	return &RedisSink{
		client:     client,
		region:     region,
		key:        "edgecache:journal:{" + region + "}",
		maxLen:     maxLen,
		minBackoff: redisMinBackoff,
		maxBackoff: redisMaxBackoff,
	}, nil
}

// Region returns the sink's region.
func (s *RedisSink) Region() string { return s.region }

// Key returns the stream key of the sink's region.
func (s *RedisSink) Key() string { return s.key }

// StreamKey returns the stream key of a region.
func StreamKey(region string) string { return "edgecache:journal:{" + region + "}" }

// add XADDs each line in one pipeline and returns the lines Redis did not
// take, with the first error. While backing off after a failure it returns
// every line and errBackingOff without contacting Redis.
func (s *RedisSink) add(lines [][]byte) (failed [][]byte, err error) {
	if len(lines) == 0 {
		return nil, nil
	}
	now := time.Now()
	s.mu.Lock()
	skip := now.Before(s.downUntil)
	s.mu.Unlock()
	if skip {
		return lines, errBackingOff
	}
	ctx, cancel := context.WithTimeout(context.Background(), redisWriteTimeout)
	defer cancel()
	pipe := s.client.Pipeline()
	cmds := make([]*redis.StringCmd, len(lines))
	for i, l := range lines {
		cmds[i] = pipe.XAdd(ctx, &redis.XAddArgs{
			Stream: s.key,
			MaxLen: s.maxLen,
			Approx: true,
			ID:     "*",
			Values: []any{"record", l},
		})
	}
	_, _ = pipe.Exec(ctx) // errors are per command
	for i, c := range cmds {
		if cerr := c.Err(); cerr != nil {
			failed = append(failed, lines[i])
			if err == nil {
				err = fmt.Errorf("journal: xadd %s: %w", s.key, cerr)
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil {
		s.backoff = 0
		s.downUntil = time.Time{}
		return nil, nil
	}
	s.backoff = min(max(2*s.backoff, s.minBackoff), s.maxBackoff)
	s.downUntil = time.Now().Add(s.backoff)
	return failed, err
}

// clockSkew widens the stream ID range of a query: an entry's ID is the
// Redis server's time when it was added, a little after the record's Time
// and possibly on a clock that differs.
const clockSkew = 5 * time.Minute

// queryPage is the number of entries read per XREVRANGE.
const queryPage = 500

// query reads the stream of region newest first, passing every decoded
// record to keep, until keep says the rest is too old or the range ends.
// corrupt counts entries that do not decode.
func (s *RedisSink) query(ctx context.Context, region string, since, until time.Time,
	keep func(Record) (more bool), corrupt func()) error {
	key := StreamKey(region)
	end, start := "+", "-"
	if !until.IsZero() {
		end = fmt.Sprint(until.Add(clockSkew).UnixMilli())
	}
	if !since.IsZero() {
		start = fmt.Sprint(max(since.Add(-clockSkew).UnixMilli(), 0))
	}
	for {
		msgs, err := s.client.XRevRangeN(ctx, key, end, start, queryPage).Result()
		if err != nil {
			return fmt.Errorf("journal: xrevrange %s: %w", key, err)
		}
		for _, m := range msgs {
			r, ok := decodeEntry(m.Values)
			if !ok {
				corrupt()
				continue
			}
			if !keep(r) {
				return nil
			}
		}
		if len(msgs) < queryPage {
			return nil
		}
		end = "(" + msgs[len(msgs)-1].ID // exclusive (Redis 6.2+)
	}
}

func decodeEntry(values map[string]any) (Record, bool) {
	v, ok := values["record"].(string)
	if !ok {
		return Record{}, false
	}
	return decodeLine([]byte(v))
}
