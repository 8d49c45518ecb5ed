package journal

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// go-redis starts this when a pool's dials keep failing; it re-dials
		// every second and only notices Close at its next wake-up.
		goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).tryDial"),
	)
}

var quiet = slog.New(slog.DiscardHandler)

func newTest(t *testing.T, cfg Config, beforeWrite func([]Record)) *Journal {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quiet
	}
	j, err := newJournal(cfg, beforeWrite)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := j.Close(context.Background()); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return j
}

// settled waits until n records have been taken from the buffer and
// stored or lost.
func settled(t *testing.T, j *Journal, n uint64) Stats {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s := j.Stats()
		if s.Written+s.Lost >= n {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %d records to be written: %+v", n, s)
		}
		time.Sleep(2 * time.Millisecond) // polling interval
	}
}

// base is a fixed time for file-only tests (Redis tests use the present,
// as stream IDs are the server's clock).
var base = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func full() Record {
	return Record{
		Time:           base.Add(123456789 * time.Nanosecond),
		Region:         "eu-west",
		RequestID:      "req-1",
		TraceID:        "4bf92f3577b34da6a3ce929d0e0e4736",
		Tenant:         HashTenant("sk-secret"),
		Lane:           "paid",
		Route:          "chat",
		ModelRequested: "gpt-4o",
		ModelServed:    "gpt-4o-mini",
		Upstream:       "openai",
		Rung:           RungFailover,
		Reason:         "upstream_503",
		UpstreamStatus: 503,
		ErrorClass:     "status",
		Attempts: []Attempt{
			{Target: "openai", Status: 503, TTFTMillis: 0, DurationMillis: 120, RetryAfterSeconds: 7, Error: "service unavailable"},
			{Target: "azure", Status: 200, TTFTMillis: 340, DurationMillis: 2100},
		},
		BreakerState:      "open",
		Limiter:           &Limiter{Name: "openai/gpt-4o", Limit: 20, InFlight: 20, QueueWaitMillis: 480},
		Cache:             &Cache{Key: "k1", AgeSeconds: 3600, Similarity: 0.93, Score: 0.81, Disclosed: true, MatchedHash: "00112233445566778899aabbccddeeff"},
		Tokens:            &Tokens{Estimated: 800, Actual: 912},
		Client:            &Client{SDKRetryCount: 1, TimeoutMillis: 60000},
		Status:            200,
		RetryAfterSeconds: 0,
		BytesStreamed:     0,
	}
}

func TestRecordJSON(t *testing.T) {
	b, err := json.Marshal(full())
	if err != nil {
		t.Fatal(err)
	}
	want := `{"time":"2026-03-01T12:00:00.123456789Z","region":"eu-west","request_id":"req-1",` +
		`"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","tenant":"` + HashTenant("sk-secret") + `","lane":"paid",` +
		`"route":"chat","model_requested":"gpt-4o","model_served":"gpt-4o-mini","upstream":"openai",` +
		`"rung":"failover","reason":"upstream_503","upstream_status":503,"error_class":"status",` +
		`"attempts":[{"target":"openai","status":503,"duration_ms":120,"retry_after_s":7,"error":"service unavailable"},` +
		`{"target":"azure","status":200,"ttft_ms":340,"duration_ms":2100}],"breaker_state":"open",` +
		`"limiter":{"name":"openai/gpt-4o","limit":20,"in_flight":20,"queue_wait_ms":480},` +
		`"cache":{"key":"k1","age_s":3600,"similarity":0.93,"score":0.81,"disclosed":true,"matched_hash":"00112233445566778899aabbccddeeff"},"tokens":{"estimated":800,"actual":912},` +
		`"client":{"sdk_retry_count":1,"timeout_ms":60000},"status":200}`
	if string(b) != want {
		t.Errorf("JSON:\n got %s\nwant %s", b, want)
	}
	b, _ = json.Marshal(Record{Time: base, Rung: RungBusy, Status: 503, RetryAfterSeconds: 30})
	if want := `{"time":"2026-03-01T12:00:00Z","rung":"busy","status":503,"retry_after_s":30}`; string(b) != want {
		t.Errorf("minimal JSON:\n got %s\nwant %s", b, want)
	}
}

func TestHashTenant(t *testing.T) {
	a, b := HashTenant("sk-1"), HashTenant("sk-2")
	if a == b || a != HashTenant("sk-1") || len(a) != 26 || !strings.HasPrefix(a, "t-") || strings.Contains(a, "sk-1") {
		t.Errorf("HashTenant = %q, %q", a, b)
	}
}

func TestRungs(t *testing.T) {
	for _, r := range Rungs() {
		if !r.Valid() {
			t.Errorf("%q not valid", r)
		}
	}
	if Rung("panic").Valid() || Rung("").Valid() {
		t.Error("invalid rung reported valid")
	}
}

func TestConfigValidate(t *testing.T) {
	for _, cfg := range []Config{
		{},
		{Dir: "x", MaxFileBytes: -1},
		{Dir: "x", MaxFiles: -1},
		{Dir: "x", Buffer: -1},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
}

// sample returns records i = 0..n-1, one minute apart from base, with
// fields cycling so that every filter selects a known subset.
func sample(n int) []Record {
	routes := []string{"chat", "completions", "support"}
	rungs := []Rung{RungStale, RungTemplate, RungBusy, RungShed}
	reasons := []string{"upstream_503", "timeout", "breaker_open", "shed", "rate_limit_exceeded"}
	out := make([]Record, n)
	for i := range out {
		out[i] = Record{
			Time:      base.Add(time.Duration(i) * time.Minute),
			RequestID: fmt.Sprintf("req-%03d", i),
			Tenant:    fmt.Sprintf("t-%d", i%2),
			Route:     routes[i%len(routes)],
			Rung:      rungs[i%len(rungs)],
			Reason:    reasons[i%len(reasons)],
			Status:    503,
		}
	}
	return out
}

func ids(rs []Record) string {
	var b strings.Builder
	for i, r := range rs {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(strings.TrimPrefix(r.RequestID, "req-"))
	}
	return b.String()
}

// want filters sample(n) newest first, as a query should.
func want(rs []Record, limit int, keep func(i int, r Record) bool) string {
	var out []Record
	for i := len(rs) - 1; i >= 0 && len(out) < limit; i-- {
		if keep(i, rs[i]) {
			out = append(out, rs[i])
		}
	}
	return ids(out)
}

func TestQueryFilters(t *testing.T) {
	dir := t.TempDir()
	j := newTest(t, Config{Dir: dir, Region: "eu-west"}, nil)
	recs := sample(60)
	for _, r := range recs {
		if !j.Record(r) {
			t.Fatal("Record refused")
		}
	}
	settled(t, j, uint64(len(recs)))

	tests := []struct {
		name string
		q    Query
		keep func(i int, r Record) bool
	}{
		{"all, default limit", Query{}, func(int, Record) bool { return true }},
		{"limit", Query{Limit: 7}, func(int, Record) bool { return true }},
		{"route", Query{Route: "support"}, func(_ int, r Record) bool { return r.Route == "support" }},
		{"tenant", Query{Tenant: "t-1"}, func(_ int, r Record) bool { return r.Tenant == "t-1" }},
		{"rung", Query{Rung: RungTemplate}, func(_ int, r Record) bool { return r.Rung == RungTemplate }},
		{"reason", Query{Reason: "breaker_open"}, func(_ int, r Record) bool { return r.Reason == "breaker_open" }},
		{"since", Query{Since: base.Add(50 * time.Minute)}, func(i int, _ Record) bool { return i >= 50 }},
		{"until", Query{Until: base.Add(10 * time.Minute)}, func(i int, _ Record) bool { return i < 10 }},
		{"range", Query{Since: base.Add(20*time.Minute + time.Second), Until: base.Add(30 * time.Minute)},
			func(i int, _ Record) bool { return i > 20 && i < 30 }},
		{"combined", Query{Route: "chat", Rung: RungStale, Tenant: "t-0", Limit: 3},
			func(_ int, r Record) bool { return r.Route == "chat" && r.Rung == RungStale && r.Tenant == "t-0" }},
		{"nothing", Query{Route: "nope"}, func(int, Record) bool { return false }},
		{"other region has no files", Query{Region: "us-east"}, func(int, Record) bool { return false }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := j.Query(t.Context(), tt.q)
			if err != nil {
				t.Fatal(err)
			}
			limit := tt.q.Limit
			if limit == 0 {
				limit = DefaultQueryLimit
			}
			if w := want(recs, limit, tt.keep); ids(got) != w {
				t.Errorf("got  %s\nwant %s", ids(got), w)
			}
		})
	}

	// Every field survives the round trip; Region defaults from Config.
	r := full()
	r.Region = ""
	r.Time = base.Add(-time.Hour)
	j.Record(r)
	settled(t, j, uint64(len(recs))+1)
	got, err := j.Query(t.Context(), Query{Until: base})
	if err != nil || len(got) != 1 {
		t.Fatalf("Query = %d records, %v", len(got), err)
	}
	r.Region = "eu-west"
	if got[0].ID == "" {
		t.Error("no ID set")
	}
	r.ID = got[0].ID
	if !reflect.DeepEqual(got[0], r) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got[0], r)
	}
}

func TestQueryValidation(t *testing.T) {
	j := newTest(t, Config{Dir: t.TempDir()}, nil)
	for _, q := range []Query{
		{Limit: -1},
		{Limit: MaxQueryLimit + 1},
		{Since: base, Until: base},
		{Since: base.Add(time.Second), Until: base},
		{Rung: "exploded"},
	} {
		if _, err := j.Query(t.Context(), q); err == nil {
			t.Errorf("Query(%+v) succeeded", q)
		}
	}
}

func TestRecordSetsTime(t *testing.T) {
	j := newTest(t, Config{Dir: t.TempDir()}, nil)
	before := time.Now()
	j.Record(Record{Rung: RungBusy, Status: 503})
	settled(t, j, 1)
	got, err := j.Query(t.Context(), Query{})
	if err != nil || len(got) != 1 {
		t.Fatalf("Query = %v, %v", got, err)
	}
	if got[0].Time.Before(before.Add(-time.Second)) || got[0].Time.After(time.Now()) {
		t.Errorf("Time = %v, want about %v", got[0].Time, before)
	}
}

func TestRotationKeepsMaxFiles(t *testing.T) {
	dir := t.TempDir()
	const maxBytes, maxFiles = 1024, 3
	j := newTest(t, Config{Dir: dir, MaxFileBytes: maxBytes, MaxFiles: maxFiles}, nil)
	recs := sample(200)
	for i, r := range recs {
		j.Record(r)
		if i%10 == 9 {
			settled(t, j, uint64(i+1)) // several batches, so rotations happen between and within them
		}
	}
	settled(t, j, uint64(len(recs)))

	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
		st, _ := e.Info()
		if st.Size() > maxBytes {
			t.Errorf("%s is %d bytes, more than %d", e.Name(), st.Size(), maxBytes)
		}
	}
	if len(names) != maxFiles || names[len(names)-1] != currentFile {
		t.Fatalf("files = %v, want %d with %s", names, maxFiles, currentFile)
	}
	if !strings.HasPrefix(names[0], rotatedPrefix) {
		t.Errorf("rotated name %q", names[0])
	}

	// What is kept is the newest records, contiguous, newest first.
	got, err := j.Query(t.Context(), Query{Limit: MaxQueryLimit})
	if err != nil {
		t.Fatal(err)
	}
	n := len(got)
	if n == 0 || n >= len(recs) {
		t.Fatalf("kept %d of %d records", n, len(recs))
	}
	if w := want(recs, n, func(int, Record) bool { return true }); ids(got) != w {
		t.Errorf("got  %s\nwant %s", ids(got), w)
	}

	// A query stops at rotated files older than Since.
	got, err = j.Query(t.Context(), Query{Since: recs[len(recs)-3].Time})
	if err != nil || ids(got) != "199 198 197" {
		t.Errorf("since: %s, %v", ids(got), err)
	}
}

func TestRotationWithinOneBatchAndSyncEveryBatch(t *testing.T) {
	dir := t.TempDir()
	release := make(chan struct{})
	var once sync.Once
	j := newTest(t, Config{Dir: dir, MaxFileBytes: 600, MaxFiles: 100, SyncInterval: -1}, func([]Record) {
		once.Do(func() { <-release }) // hold the first batch so the rest arrive as one
	})
	recs := sample(40)
	for _, r := range recs {
		j.Record(r)
	}
	close(release)
	settled(t, j, 40)
	rotated, err := listRotated(dir)
	if err != nil || len(rotated) < 3 {
		t.Fatalf("rotated files: %d, %v", len(rotated), err)
	}
	got, err := j.Query(t.Context(), Query{Limit: 100})
	if err != nil || len(got) != 40 || ids(got[:2]) != "039 038" {
		t.Fatalf("Query = %d records (%s), %v", len(got), ids(got), err)
	}
}

func TestFullBufferDropsWithoutBlocking(t *testing.T) {
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	var once sync.Once
	j := newTest(t, Config{Dir: t.TempDir(), Buffer: 4}, func([]Record) {
		once.Do(func() {
			entered <- struct{}{}
			<-release // the writer is stuck on the first batch
		})
	})
	recs := sample(50)
	if !j.Record(recs[0]) {
		t.Fatal("first record refused")
	}
	<-entered // the writer holds record 0; the buffer is empty
	accepted := 1
	for _, r := range recs[1:] {
		if j.Record(r) { // returns at once even though nothing is written
			accepted++
		}
	}
	if accepted != 5 {
		t.Errorf("accepted %d records, want 1 + Buffer (4)", accepted)
	}
	if s := j.Stats(); s.Dropped != 45 || s.Written != 0 {
		t.Errorf("Stats = %+v, want 45 dropped, none written yet", s)
	}
	close(release)
	if err := j.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	if s := j.Stats(); s.Written != 5 || s.Dropped != 45 || s.Lost != 0 {
		t.Errorf("Stats after Close = %+v, want 5 written", s)
	}
}

func TestCloseDrains(t *testing.T) {
	dir := t.TempDir()
	j, err := New(Config{Dir: dir, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	recs := sample(1000)
	for _, r := range recs {
		if !j.Record(r) {
			t.Fatal("Record refused")
		}
	}
	if err := j.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	if s := j.Stats(); s.Written != 1000 || s.Dropped != 0 {
		t.Fatalf("Stats = %+v, want all 1000 written", s)
	}
	if j.Record(recs[0]) {
		t.Error("Record after Close accepted")
	}
	if s := j.Stats(); s.Dropped != 1 {
		t.Errorf("Dropped = %d, want 1", s.Dropped)
	}
	if _, err := j.Query(t.Context(), Query{}); !errors.Is(err, ErrClosed) {
		t.Errorf("Query after Close = %v, want ErrClosed", err)
	}
	if err := j.Close(t.Context()); err != nil {
		t.Errorf("second Close = %v", err)
	}

	// Another journal on the same directory (e.g. the CLI) reads them all.
	r := newTest(t, Config{Dir: dir}, nil)
	got, err := r.Query(t.Context(), Query{Limit: MaxQueryLimit})
	if err != nil || len(got) != 1000 || got[0].RequestID != "req-999" {
		t.Fatalf("reader: %d records, %v", len(got), err)
	}
}

func TestCloseContextExpires(t *testing.T) {
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	var once sync.Once
	j, err := newJournal(Config{Dir: t.TempDir(), Logger: quiet}, func([]Record) {
		once.Do(func() {
			entered <- struct{}{}
			<-release
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	recs := sample(10)
	j.Record(recs[0])
	<-entered
	for _, r := range recs[1:] {
		j.Record(r)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := j.Close(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Close(cancelled) = %v", err)
	}
	close(release)
	if err := j.Close(context.Background()); err != nil { // waits for the writer
		t.Fatal(err)
	}
	s := j.Stats()
	if s.Written != 1 || s.Dropped != 9 {
		t.Errorf("Stats = %+v, want the batch in progress written and the rest dropped", s)
	}
}

func TestCorruptLinesSkipped(t *testing.T) {
	dir := t.TempDir()
	var b bytes.Buffer
	for i, r := range sample(5) {
		line, _ := json.Marshal(r)
		b.Write(line)
		b.WriteByte('\n')
		switch i {
		case 1:
			b.WriteString("{not json\n")
		case 2:
			b.WriteString("{}\n\n   \n") // no time: not a record; blank lines are ignored
		case 3:
			b.WriteString(`{"time":"2026-03-01T12:00:00Z","rung":"busy","route":7}` + "\n")
		}
	}
	b.WriteString(`{"time":"2026-03-01T13:00:00Z","rung":"bu`) // cut by a crash
	if err := os.WriteFile(filepath.Join(dir, currentFile), b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	j := newTest(t, Config{Dir: dir}, nil)
	got, err := j.Query(t.Context(), Query{})
	if err != nil {
		t.Fatal(err)
	}
	if ids(got) != "004 003 002 001 000" {
		t.Errorf("got %s", ids(got))
	}
	if c := j.Stats().Corrupt; c != 4 {
		t.Errorf("Corrupt = %d, want 4", c)
	}

	// New records are appended after the cut line and read back.
	j.Record(Record{Time: base.Add(time.Hour), RequestID: "req-new", Rung: RungBusy})
	settled(t, j, 1)
	got, err = j.Query(t.Context(), Query{Limit: 1})
	if err != nil || len(got) != 1 || got[0].RequestID != "req-new" {
		t.Errorf("after append: %+v, %v", got, err)
	}
}

func TestLongLineIsCorrupt(t *testing.T) {
	var n, corrupt int
	const max = 200 << 10 // several reads of the 64 KiB buffer
	in := `{"time":"2026-03-01T12:00:00Z","rung":"busy","reason":"` + strings.Repeat("x", max) + `"}` + "\n" +
		`{"time":"2026-03-01T12:00:00Z","rung":"busy","reason":"` + strings.Repeat("y", max-100) + `"}` + "\n" +
		`{"time":"2026-03-01T12:00:00Z","rung":"busy"}`
	err := forEachLine(strings.NewReader(in), max, func(line []byte) bool {
		if _, ok := decodeLine(line); ok {
			n++
		} else {
			corrupt++
		}
		return true
	})
	if err != nil || n != 2 || corrupt != 1 {
		t.Errorf("forEachLine: %d good, %d corrupt, %v", n, corrupt, err)
	}
}

func TestReaderDoesNotCreateFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "journal")
	j := newTest(t, Config{Dir: dir}, nil)
	got, err := j.Query(t.Context(), Query{})
	if err != nil || len(got) != 0 {
		t.Fatalf("Query = %v, %v", got, err)
	}
	if err := j.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("dir created by a journal that never recorded: %v", err)
	}
}

func TestUnwritableDirCountsLost(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	j := newTest(t, Config{Dir: filepath.Join(file, "sub")}, nil) // a path below a regular file
	j.Record(Record{Rung: RungBusy})
	s := settled(t, j, 1)
	if s.Lost != 1 || s.Errors == 0 || s.Written != 0 {
		t.Errorf("Stats = %+v, want 1 lost with an error", s)
	}
}

func TestPanicInWriterIsRecovered(t *testing.T) {
	var once sync.Once
	j := newTest(t, Config{Dir: t.TempDir(), SyncInterval: time.Millisecond}, func([]Record) {
		once.Do(func() { panic("boom") })
	})
	j.Record(Record{Rung: RungBusy, RequestID: "a"})
	settled(t, j, 1)
	j.Record(Record{Rung: RungBusy, RequestID: "b"})
	s := settled(t, j, 2)
	if s.Lost != 1 || s.Written != 1 || s.Errors != 1 {
		t.Errorf("Stats = %+v, want the panicking batch lost and the next written", s)
	}
}
