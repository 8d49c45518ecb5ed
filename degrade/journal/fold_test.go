package journal

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgecache/edgecache/cache/cachetest"
)

// refusal is an own-quota 429 of tenant at t.
func refusal(tenant string, t time.Time, i int) Record {
	return Record{Time: t, RequestID: fmt.Sprintf("%s-%05d", tenant, i), Tenant: tenant, Lane: "free", Route: "chat",
		Rung: RungShed, Reason: "rate_limit_exceeded", Status: 429, RetryAfterSeconds: 1}
}

// fileLines counts the records in the current journal file.
func fileLines(t *testing.T, dir string) int {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, currentFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		n++
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}

// refusals sums the Count of tenant's records and counts them.
func refusals(recs []Record, tenant string) (records, count int) {
	for _, r := range recs {
		if r.Tenant == tenant && r.Rung == RungShed {
			records++
			count += r.Count
		}
	}
	return records, count
}

// TestTenThousandRefusalsOfOneKey is the flood the journal must survive: one
// key refused 10 000 times over 25 s makes two records per 10 s window
// (the first refusal at once, the rest folded with count, time and last),
// in the file and in the Redis stream alike; other tenants' refusals fold
// on their own, and degraded answers are never folded.
func TestTenThousandRefusalsOfOneKey(t *testing.T) {
	r := cachetest.StartRedis(t)
	dir := t.TempDir()
	j, err := New(Config{Dir: dir, Redis: newSink(t, r.Addr(), "eu-west", 0), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	// Times run ahead of the clock, so no window ends by the clock during
	// the loop: windows end when a refusal is past them, and at Close.
	start := time.Now()
	const n, step = 10_000, 2500 * time.Microsecond // 25 s: windows [0,10), [10,20), [20,25)
	var degraded int
	for i := range n {
		at := start.Add(time.Duration(i) * step)
		if !j.Record(refusal("k:flood", at, i)) {
			t.Fatalf("refusal %d not accepted", i)
		}
		if i%20 == 0 {
			j.Record(refusal("k:other", at, i))
		}
		if i%100 == 0 {
			degraded++
			j.Record(Record{Time: at, Tenant: "k:flood", Route: "chat", Rung: RungBusy, Reason: "upstream_503", Status: 503,
				Attempts: []Attempt{{Target: "primary", Status: 503}}})
		}
	}
	if err := j.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	st := j.Stats()
	written := int(st.Written)
	if st.Dropped != 0 || st.Lost != 0 || st.Streamed != st.Written {
		t.Fatalf("Stats = %+v, want every record in the file and the stream", st)
	}
	if lines := fileLines(t, dir); lines != written || written > 3*2*2+degraded {
		t.Fatalf("%d records in the file, %d written; want at most 12 for the refusals and %d degraded answers", lines, written, degraded)
	}
	if xlen, err := rawClient(t, r.Addr()).XLen(t.Context(), StreamKey("eu-west")).Result(); err != nil || int(xlen) != written {
		t.Fatalf("XLEN = %d, %v; want the %d records written", xlen, err, written)
	}

	// A reader (the CLI, or the replica after a restart) sees each record
	// once, merged from both sinks.
	rd := newTest(t, Config{Dir: dir, Redis: newSink(t, r.Addr(), "eu-west", 0)}, nil)
	got, err := rd.Query(t.Context(), Query{Limit: MaxQueryLimit})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != written {
		t.Fatalf("Query = %d records, want %d", len(got), written)
	}
	recs, count := refusals(got, "k:flood")
	if recs != 6 || count != n {
		t.Errorf("k:flood: %d records standing for %d refusals, want 6 (two per window) for %d", recs, count, n)
	}
	if recs, count := refusals(got, "k:other"); recs != 6 || count != n/20 {
		t.Errorf("k:other: %d records standing for %d refusals, want 6 for %d", recs, count, n/20)
	}
	var busy int
	for _, r := range got {
		if r.Rung == RungBusy {
			busy++
			if r.Count != 0 {
				t.Errorf("degraded answer with count %d", r.Count)
			}
		}
	}
	if busy != degraded {
		t.Errorf("%d degraded answers, want %d", busy, degraded)
	}

	// The first window: its first refusal, then the other 3 999 folded,
	// from the second to the last refusal in it.
	var first []Record
	for _, r := range got {
		if r.Tenant == "k:flood" && r.Rung == RungShed && r.Time.Before(start.Add(10*time.Second)) {
			first = append(first, r)
		}
	}
	if len(first) != 2 {
		t.Fatalf("first window: %d records, want 2", len(first))
	}
	folded, lone := first[0], first[1] // newest first
	if lone.Count != 1 || !lone.Time.Equal(start) || lone.RequestID != "k:flood-00000" {
		t.Errorf("first refusal = count %d at %v (%s), want count 1 at the start", lone.Count, lone.Time.Sub(start), lone.RequestID)
	}
	if folded.Count != 3999 || !folded.Time.Equal(start.Add(step)) || !folded.Last.Equal(start.Add(3999*step)) ||
		folded.Status != 429 || folded.Reason != "rate_limit_exceeded" {
		t.Errorf("folded = count %d from %v to %v, status %d %s; want 3999 from %v to %v, 429 rate_limit_exceeded",
			folded.Count, folded.Time.Sub(start), folded.Last.Sub(start), folded.Status, folded.Reason, step, 3999*step)
	}
	if st.Folded != uint64(n+n/20-12) {
		t.Errorf("Stats.Folded = %d, want %d", st.Folded, n+n/20-12)
	}
}

// A window's folded record is written when the window ends by the clock,
// not only at Close.
func TestRefusalWindowEndsByTheClock(t *testing.T) {
	j := newTest(t, Config{Dir: t.TempDir(), RefusalWindow: 50 * time.Millisecond}, nil)
	now := time.Now()
	for i := range 5 {
		j.Record(refusal("k:a", now.Add(time.Duration(i)*time.Millisecond), i))
	}
	s := settled(t, j, 2) // the first at once, the other four once the window ended
	if s.Written != 2 || s.Folded != 3 {
		t.Fatalf("Stats = %+v, want 2 records written, 3 refusals folded", s)
	}
	got, err := j.Query(t.Context(), Query{})
	if err != nil || len(got) != 2 || got[0].Count != 4 || got[1].Count != 1 {
		t.Fatalf("Query = %+v, %v; want the folded record (4) and the first (1)", got, err)
	}
	// The window is closed: the next refusal is written at once again.
	j.Record(refusal("k:a", time.Now(), 5))
	if s := settled(t, j, 3); s.Written != 3 {
		t.Errorf("Stats = %+v", s)
	}
}

// A client rotating keys cannot open unbounded windows: beyond
// MaxRefusalKeys, refusals fold under OtherTenants.
func TestRefusalKeysBounded(t *testing.T) {
	dir := t.TempDir()
	j, err := New(Config{Dir: dir, MaxRefusalKeys: 3, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now().Add(time.Hour) // no window ends by the clock
	const tenants, each = 50, 4
	for i := range tenants * each {
		j.Record(refusal(fmt.Sprintf("k:%02d", i%tenants), start.Add(time.Duration(i)*time.Millisecond), i))
	}
	if err := j.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	got, err := newTest(t, Config{Dir: dir}, nil).Query(t.Context(), Query{Limit: MaxQueryLimit})
	if err != nil {
		t.Fatal(err)
	}
	total, others := 0, 0
	for _, r := range got {
		total += r.Count
		if r.Tenant == OtherTenants {
			others += r.Count
		}
	}
	if len(got) != 3*2+2 || total != tenants*each || others != (tenants-3)*each {
		t.Errorf("%d records for %d refusals (%d under %q); want 8 for %d (%d)", len(got), total, others, OtherTenants,
			tenants*each, (tenants-3)*each)
	}
}

func TestRefusalWindowOff(t *testing.T) {
	j := newTest(t, Config{Dir: t.TempDir(), RefusalWindow: -1}, nil)
	now := time.Now()
	for i := range 20 {
		j.Record(refusal("k:a", now.Add(time.Duration(i)*time.Millisecond), i))
	}
	if s := settled(t, j, 20); s.Written != 20 || s.Folded != 0 {
		t.Errorf("Stats = %+v, want every refusal written", s)
	}
}

func TestRefusal(t *testing.T) {
	for _, tt := range []struct {
		r    Record
		want bool
	}{
		{Record{Rung: RungShed, Reason: "rate_limit_exceeded", Status: 429}, true},
		{Record{Rung: RungShed, Reason: "shed", Status: 503}, true},
		{Record{Rung: RungBusy, Reason: "queued_timeout", Status: 503}, true},
		{Record{Rung: RungBusy, Reason: "shed", Status: 503}, true},
		{Record{Rung: RungBusy, Reason: "shed", Attempts: []Attempt{{Target: "primary"}}}, false},
		{Record{Rung: RungBusy, Reason: "upstream_503", Status: 503}, false},
		{Record{Rung: RungStale, Reason: "queued_timeout", Status: 200}, false},
		{Record{Rung: RungTemplate, Reason: "shed", Status: 200}, false},
	} {
		if got := Refusal(tt.r); got != tt.want {
			t.Errorf("Refusal(%s %s, %d attempts) = %v", tt.r.Rung, tt.r.Reason, len(tt.r.Attempts), got)
		}
	}
}
