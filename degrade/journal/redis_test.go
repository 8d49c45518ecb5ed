package journal

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/edgecache/edgecache/cache/cachetest"
	"github.com/edgecache/edgecache/cache/shared"
)

// testClient is a Redis client built as the program builds its own.
func testClient(t *testing.T, conn shared.Conn) redis.UniversalClient {
	t.Helper()
	c, err := shared.NewClient(conn, shared.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func newSink(t *testing.T, addr, region string, maxLen int64) *RedisSink {
	t.Helper()
	s, err := NewRedisSink(testClient(t, shared.Conn{Addrs: []string{addr}}), region, maxLen)
	if err != nil {
		t.Fatal(err)
	}
	s.minBackoff, s.maxBackoff = 20*time.Millisecond, 50*time.Millisecond
	return s
}

func rawClient(t *testing.T, addr string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// recent returns n records ending now, 1ms apart (stream IDs are the
// server's clock, so Redis tests use the present).
func recent(n int, prefix string) []Record {
	now := time.Now()
	out := sample(n)
	for i := range out {
		out[i].Time = now.Add(-time.Duration(n-i) * time.Millisecond)
		out[i].RequestID = fmt.Sprintf("%s%03d", prefix, i)
	}
	return out
}

// stamps hands out records whose times increase across calls, 1ms apart
// from a start near now (unlike recent, whose batches may overlap).
type stamps struct{ t time.Time }

func (s *stamps) recs(n int, prefix string) []Record {
	out := recent(n, prefix)
	for i := range out {
		s.t = s.t.Add(time.Millisecond)
		out[i].Time = s.t
	}
	return out
}

func TestNewRedisSinkValidates(t *testing.T) {
	c := testClient(t, shared.Conn{Addrs: []string{"127.0.0.1:1"}})
	for _, tt := range []struct {
		client redis.UniversalClient
		region string
	}{
		{nil, "eu"},
		{c, "eu{1}"},
		{c, "eu west"},
	} {
		if _, err := NewRedisSink(tt.client, tt.region, 0); err == nil {
			t.Errorf("NewRedisSink(%v, %q) succeeded", tt.client, tt.region)
		}
	}
	s, err := NewRedisSink(c, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if s.Region() != DefaultRegion || s.Key() != "edgecache:journal:{default}" || s.maxLen != DefaultMaxLen {
		t.Errorf("defaults: region %q key %q maxLen %d", s.Region(), s.Key(), s.maxLen)
	}
}

func TestRedisStreamCappedAndQueried(t *testing.T) {
	r := cachetest.StartRedis(t)
	dir := t.TempDir()
	const maxLen = 100
	j := newTest(t, Config{Dir: dir, Redis: newSink(t, r.Addr(), "eu-west", maxLen), RefusalWindow: -1}, nil)
	recs := recent(1000, "r")
	for _, rec := range recs {
		if !j.Record(rec) {
			t.Fatal("Record refused")
		}
	}
	s := settled(t, j, 1000)
	if s.Written != 1000 || s.Streamed != 1000 || s.Unstreamed != 0 || s.Errors != 0 {
		t.Fatalf("Stats = %+v, want every record in the file and the stream", s)
	}

	raw := rawClient(t, r.Addr())
	n, err := raw.XLen(t.Context(), "edgecache:journal:{eu-west}").Result()
	// MAXLEN ~ trims whole stream nodes (100 entries by default).
	if err != nil || n < maxLen || n > maxLen+100 {
		t.Fatalf("XLEN = %d, %v; want about %d", n, err, maxLen)
	}
	first, err := raw.XRevRangeN(t.Context(), "edgecache:journal:{eu-west}", "+", "-", 1).Result()
	if err != nil || len(first) != 1 {
		t.Fatalf("XREVRANGE: %v, %v", first, err)
	}
	if rec, ok := decodeEntry(first[0].Values); !ok || rec.RequestID != "r999" || rec.Region != "eu-west" || rec.ID == "" {
		t.Errorf("newest entry = %+v (ok %v)", first[0].Values, ok)
	}

	// Queries see every record once: the stream's newest and, past the
	// cap, the file's.
	all := func(int, Record) bool { return true }
	tests := []struct {
		name string
		q    Query
		keep func(i int, r Record) bool
		max  int
	}{
		{"limit", Query{Limit: 10}, all, 10},
		{"default limit", Query{}, all, DefaultQueryLimit},
		{"past the stream's cap", Query{Limit: MaxQueryLimit}, all, 1000},
		{"route", Query{Route: "support", Limit: 5}, func(_ int, r Record) bool { return r.Route == "support" }, 5},
		{"rung and reason", Query{Rung: RungTemplate, Reason: "timeout", Limit: 3},
			func(_ int, r Record) bool { return r.Rung == RungTemplate && r.Reason == "timeout" }, 3},
		{"tenant", Query{Tenant: "t-1", Limit: 4}, func(_ int, r Record) bool { return r.Tenant == "t-1" }, 4},
		{"since", Query{Since: recs[995].Time}, func(i int, _ Record) bool { return i >= 995 }, 100},
		{"until, trimmed from the stream", Query{Until: recs[50].Time, Limit: 3}, func(i int, _ Record) bool { return i < 50 }, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := j.Query(t.Context(), tt.q)
			if err != nil {
				t.Fatal(err)
			}
			if w := want(recs, tt.max, tt.keep); ids(got) != w {
				t.Errorf("got  %s\nwant %s", ids(got), w)
			}
		})
	}
	if got, err := j.Query(t.Context(), Query{Region: "us-east"}); err != nil || len(got) != 0 {
		t.Errorf("other region: %d records, %v", len(got), err)
	}
}

// TestRedisRestartLosesNothing is the journal's promise with Redis: records
// written before Redis stopped, while it was down, and after it came back
// empty are all still there, once each, and the replica's queries see
// another replica's records through the stream.
func TestRedisRestartLosesNothing(t *testing.T) {
	r := cachetest.StartRedis(t)
	dir := t.TempDir()
	// Refusals are not folded here: every record is one of the test's.
	j := newTest(t, Config{Dir: dir, Redis: newSink(t, r.Addr(), "eu-west", 0), RefusalWindow: -1}, nil)
	other := newTest(t, Config{Dir: t.TempDir(), Redis: newSink(t, r.Addr(), "eu-west", 0), RefusalWindow: -1}, nil)
	raw := rawClient(t, r.Addr())
	const key = "edgecache:journal:{eu-west}"

	ts := &stamps{time.Now()}
	before := ts.recs(10, "a")
	for _, rec := range before {
		j.Record(rec)
	}
	if s := settled(t, j, 10); s.Streamed != 10 || s.Unstreamed != 0 {
		t.Fatalf("Stats before the outage = %+v", s)
	}
	theirs := ts.recs(1, "o")[0]
	other.Record(theirs)
	settled(t, other, 1)
	if got, err := j.Query(t.Context(), Query{}); err != nil || len(got) != 11 {
		t.Fatalf("Query before the outage: %d records (%s), %v; want 11, the other replica's included", len(got), ids(got), err)
	}

	r.Stop()
	during := ts.recs(10, "b")
	start := time.Now()
	for _, rec := range during {
		if !j.Record(rec) {
			t.Fatal("Record refused during the outage")
		}
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("10 Record calls took %v during the outage", d)
	}
	s := settled(t, j, 20)
	if s.Written != 20 || s.Unstreamed != 10 || s.Errors == 0 || s.Lost != 0 {
		t.Fatalf("Stats during the outage = %+v, want 20 in the file, 10 not streamed, an error", s)
	}
	got, err := j.Query(t.Context(), Query{})
	if !errors.Is(err, ErrPartial) {
		t.Fatalf("Query during the outage: err = %v, want ErrPartial", err)
	}
	mine := append(append([]Record(nil), before...), during...)
	if w := want(mine, 100, func(int, Record) bool { return true }); ids(got) != w {
		t.Errorf("records from the file:\n got %s\nwant %s", ids(got), w)
	}

	// Redis comes back empty; after the back-off records reach it again.
	r.Restart()
	var after []Record
	deadline := time.Now().Add(10 * time.Second)
	for {
		rec := ts.recs(1, fmt.Sprintf("c%02d-", len(after)))[0]
		after = append(after, rec)
		j.Record(rec)
		settled(t, j, uint64(20+len(after)))
		if n, _ := raw.XLen(t.Context(), key).Result(); n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no record reached Redis after its restart: %+v", j.Stats())
		}
		time.Sleep(5 * time.Millisecond) // let the back-off pass
	}
	if n, err := raw.XLen(t.Context(), key).Result(); err != nil || n > int64(len(after)) {
		t.Fatalf("XLEN after the restart = %d, %v; want only records from after it", n, err)
	}
	got, err = j.Query(t.Context(), Query{Limit: MaxQueryLimit})
	if err != nil {
		t.Fatalf("Query after recovery: %v", err)
	}
	mine = append(mine, after...)
	if w := want(mine, MaxQueryLimit, func(int, Record) bool { return true }); ids(got) != w {
		t.Errorf("every record of this replica, once:\n got %s\nwant %s", ids(got), w)
	}
	if s := j.Stats(); s.Written != uint64(len(mine)) || s.Lost != 0 {
		t.Errorf("Stats = %+v, want all %d written, none lost", s, len(mine))
	}
}

// A file that cannot be written does not lose what the stream takes.
func TestUnwritableFileStillStreams(t *testing.T) {
	r := cachetest.StartRedis(t)
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	j := newTest(t, Config{Dir: filepath.Join(file, "sub"), Redis: newSink(t, r.Addr(), "", 0)}, nil)
	if j.cfg.Region != DefaultRegion {
		t.Errorf("Region = %q, want the sink's", j.cfg.Region)
	}
	for _, rec := range recent(5, "x") {
		if !j.Record(rec) {
			t.Fatal("Record refused")
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for j.Stats().Streamed < 5 {
		if time.Now().After(deadline) {
			t.Fatalf("Stats = %+v, want 5 streamed", j.Stats())
		}
		time.Sleep(2 * time.Millisecond) // polling interval
	}
	if s := j.Stats(); s.Lost != 0 || s.Written != 0 || s.Errors == 0 {
		t.Errorf("Stats = %+v, want 5 streamed, none lost, file errors", s)
	}
	if n, err := rawClient(t, r.Addr()).XLen(t.Context(), StreamKey(DefaultRegion)).Result(); err != nil || n != 5 {
		t.Errorf("XLEN = %d, %v; want 5", n, err)
	}
}

// The sink writes through the client it is given, database included.
func TestRedisSinkUsesClientDB(t *testing.T) {
	r := cachetest.StartRedis(t)
	s, err := NewRedisSink(testClient(t, shared.Conn{Addrs: []string{r.Addr()}, DB: 3}), "eu", 0)
	if err != nil {
		t.Fatal(err)
	}
	j := newTest(t, Config{Dir: t.TempDir(), Redis: s}, nil)
	for _, rec := range recent(5, "d") {
		if !j.Record(rec) {
			t.Fatal("Record refused")
		}
	}
	if st := settled(t, j, 5); st.Streamed != 5 || st.Unstreamed != 0 {
		t.Fatalf("Stats = %+v", st)
	}
	db3 := redis.NewClient(&redis.Options{Addr: r.Addr(), DB: 3})
	defer db3.Close()
	if n, err := db3.XLen(t.Context(), s.Key()).Result(); err != nil || n != 5 {
		t.Errorf("XLEN in DB 3 = %d, %v; want 5", n, err)
	}
	if n, err := rawClient(t, r.Addr()).XLen(t.Context(), s.Key()).Result(); err != nil || n != 0 {
		t.Errorf("XLEN in DB 0 = %d, %v; want 0", n, err)
	}
}
