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
	j := newTest(t, Config{Dir: dir, Redis: newSink(t, r.Addr(), "eu-west", maxLen)}, nil)
	recs := recent(1000, "r")
	for _, rec := range recs {
		if !j.Record(rec) {
			t.Fatal("Record refused")
		}
	}
	s := settled(t, j, 1000)
	if s.Written != 1000 || s.Fallbacks != 0 || s.Errors != 0 {
		t.Fatalf("Stats = %+v", s)
	}
	if _, err := os.Stat(filepath.Join(dir, currentFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("local file written although Redis took everything: %v", err)
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
	if rec, ok := decodeEntry(first[0].Values); !ok || rec.RequestID != "r999" || rec.Region != "eu-west" {
		t.Errorf("newest entry = %+v (ok %v)", first[0].Values, ok)
	}

	kept := int(n)
	all := func(int, Record) bool { return true }
	tests := []struct {
		name string
		q    Query
		keep func(i int, r Record) bool
		max  int
	}{
		{"limit", Query{Limit: 10}, all, 10},
		{"default limit", Query{}, all, DefaultQueryLimit},
		{"route", Query{Route: "support", Limit: 5}, func(_ int, r Record) bool { return r.Route == "support" }, 5},
		{"rung and reason", Query{Rung: RungTemplate, Reason: "timeout", Limit: 3},
			func(_ int, r Record) bool { return r.Rung == RungTemplate && r.Reason == "timeout" }, 3},
		{"tenant", Query{Tenant: "t-1", Limit: 4}, func(_ int, r Record) bool { return r.Tenant == "t-1" }, 4},
		{"since", Query{Since: recs[995].Time}, func(i int, _ Record) bool { return i >= 995 }, 100},
		{"until", Query{Until: recs[950].Time, Limit: 3}, func(i int, _ Record) bool { return i < 950 }, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := j.Query(t.Context(), tt.q)
			if err != nil {
				t.Fatal(err)
			}
			w := want(recs[1000-kept:], tt.max, func(i int, r Record) bool { return tt.keep(i+1000-kept, r) })
			if ids(got) != w {
				t.Errorf("got  %s\nwant %s", ids(got), w)
			}
		})
	}
	if got, err := j.Query(t.Context(), Query{Region: "us-east"}); err != nil || len(got) != 0 {
		t.Errorf("other region: %d records, %v", len(got), err)
	}
}

func TestRedisOutageFallsBackToFile(t *testing.T) {
	r := cachetest.StartRedis(t)
	dir := t.TempDir()
	j := newTest(t, Config{Dir: dir, Redis: newSink(t, r.Addr(), "eu-west", 0)}, nil)

	before := recent(10, "a")
	for _, rec := range before {
		j.Record(rec)
	}
	if s := settled(t, j, 10); s.Fallbacks != 0 {
		t.Fatalf("Stats before the outage = %+v", s)
	}

	r.Stop()
	during := recent(10, "b")
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
	if s.Written != 20 || s.Fallbacks != 10 || s.Errors == 0 || s.Lost != 0 {
		t.Fatalf("Stats during the outage = %+v, want 10 fallbacks and an error", s)
	}
	got, err := j.Query(t.Context(), Query{})
	if !errors.Is(err, ErrPartial) {
		t.Fatalf("Query during the outage: err = %v, want ErrPartial", err)
	}
	if w := want(during, 100, func(int, Record) bool { return true }); ids(got) != w {
		t.Errorf("records from the file:\n got %s\nwant %s", ids(got), w)
	}

	// Redis comes back (empty); after the back-off records go to it again.
	r.Restart()
	raw := rawClient(t, r.Addr())
	var after []Record
	deadline := time.Now().Add(10 * time.Second)
	for {
		rec := recent(1, fmt.Sprintf("c%02d-", len(after)))[0]
		after = append(after, rec)
		j.Record(rec)
		settled(t, j, uint64(20+len(after)))
		if n, _ := raw.XLen(t.Context(), "edgecache:journal:{eu-west}").Result(); n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no record reached Redis after its restart: %+v", j.Stats())
		}
		time.Sleep(5 * time.Millisecond) // let the back-off pass
	}
	got, err = j.Query(t.Context(), Query{})
	if err != nil {
		t.Fatalf("Query after recovery: %v", err)
	}
	// Newest first across both sinks: the file holds b* and the c* written
	// during the back-off, Redis the rest.
	both := append(append([]Record(nil), during...), after...)
	if w := want(both, 100, func(int, Record) bool { return true }); ids(got) != w {
		t.Errorf("merged:\n got %s\nwant %s", ids(got), w)
	}
}

func TestRedisOnlyCountsLostRecords(t *testing.T) {
	r := cachetest.StartRedis(t)
	j := newTest(t, Config{Redis: newSink(t, r.Addr(), "", 0)}, nil)
	if j.cfg.Region != DefaultRegion {
		t.Errorf("Region = %q, want the sink's", j.cfg.Region)
	}
	r.Stop()
	for _, rec := range recent(5, "x") {
		if !j.Record(rec) {
			t.Fatal("Record refused")
		}
	}
	s := settled(t, j, 5)
	if s.Lost != 5 || s.Written != 0 || s.Errors == 0 || s.Fallbacks != 0 {
		t.Errorf("Stats = %+v, want 5 lost", s)
	}
	if _, err := j.Query(t.Context(), Query{}); err == nil || errors.Is(err, ErrPartial) {
		t.Errorf("Query without Redis or files = %v, want an error", err)
	}
}

// The sink reaches the deployment it is given, database included (it used
// to take only addresses and a password, so a Sentinel or DB setting was
// lost for the journal alone).
func TestRedisSinkUsesConnDB(t *testing.T) {
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
	if st := settled(t, j, 5); st.Written != 5 || st.Fallbacks != 0 {
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
