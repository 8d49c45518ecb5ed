package app

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgecache/edgecache/cache/cachetest"
	"github.com/edgecache/edgecache/cache/shared"
	"github.com/edgecache/edgecache/cmd/internal/llmsim"
	"github.com/edgecache/edgecache/degrade/journal"
)

// TestJournalAcrossRedisRestartAndRefusalFlood runs edgecache with Redis:
// degraded answers journaled before Redis restarts (empty) are still
// listed by /admin/degradations after it, with those journaled while it was
// down and after; and a key hammering its quota makes a record at once and
// one folded record for the rest of the window, in the file and in the
// stream alike.
func TestJournalAcrossRedisRestartAndRefusalFlood(t *testing.T) {
	r := cachetest.StartRedis(t)
	sim, err := llmsim.Start(context.Background(), "127.0.0.1:0", llmsim.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	cfgPath := filepath.Join(t.TempDir(), "edgecache.yaml")
	doc := fmt.Sprintf("redis: {addrs: [%q]}\ndegrade: {region: eu-west}\nsemantic: {embedder: lexical}\n"+
		"admission:\n  limits:\n    key: {requests_per_second: 0.01, request_burst: 2}\n", r.Addr())
	if err := os.WriteFile(cfgPath, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	client := &http.Client{}
	busy := func(admin string) int {
		t.Helper()
		code, b := get(t, admin+"/admin/degradations?since=1h&rung=busy&limit=1000", "")
		var res struct{ Count int }
		if code != 200 || json.Unmarshal(b, &res) != nil {
			t.Fatalf("/admin/degradations: %d %s", code, b)
		}
		return res.Count
	}

	var refused, busyAnswers int
	t.Run("serve", func(t *testing.T) { // edgecache stops (and flushes its journal) when this ends
		data, admin := startEdgecache(t, sim.URL(), "--config", cfgPath, "--journal-dir", dir)
		sim.Server.SetFault(llmsim.Fault{Status: 503, Probability: 1})
		for i := range 5 {
			if a := globalPost(client, data, fmt.Sprint("sk-before-", i), "before"); a.status != 503 {
				t.Fatalf("before the restart: %d, want a busy 503", a.status)
			}
		}
		waitUntil(t, func() bool { return busy(admin) == 5 })

		r.Restart() // empty: the stream is gone
		for i := range 3 {
			if a := globalPost(client, data, fmt.Sprint("sk-after-", i), "after"); a.status != 503 {
				t.Fatalf("after the restart: %d, want a busy 503", a.status)
			}
		}
		waitUntil(t, func() bool { return busy(admin) == 8 })
		// The first of those met the emptied Redis: the sink now skips it
		// for a second (journal's redisMinBackoff) and writes records to
		// the file alone.
		failedAt := time.Now()

		sim.Server.SetFault(llmsim.Fault{})
		answers, _ := globalBurstOf(client, []string{data}, func(int) string { return "sk-flood" }, "flood", 300, 8)
		busyAnswers = 8
		for _, a := range answers {
			switch a.status {
			case http.StatusTooManyRequests:
				refused++
			case http.StatusServiceUnavailable: // the breaker the 503s opened
				busyAnswers++
			}
		}
		if refused < 290 {
			t.Fatalf("%d of 300 refused, want all but the burst of 2", refused)
		}
		// The first refusal is listed at once; the others fold into one
		// record written when the 10 s window ends (here: at shutdown).
		waitUntil(t, func() bool {
			_, b := get(t, admin+"/admin/degradations?since=1h&rung=shed", "")
			var res struct{ Count int }
			return json.Unmarshal(b, &res) == nil && res.Count == 1
		})
		// The folded refusal record is written at shutdown; it reaches the
		// stream only once the sink's backoff is over. On a fast machine
		// all of the above takes well under a second (CI saw 0.6 s and an
		// empty stream).
		time.Sleep(time.Until(failedAt.Add(1500 * time.Millisecond)))
	})
	if t.Failed() {
		return
	}

	// What the stopped replica left, in its file and in the region's stream.
	rc, err := shared.NewClient(shared.Conn{Addrs: []string{r.Addr()}}, shared.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	sink, err := journal.NewRedisSink(rc, "eu-west", 0)
	if err != nil {
		t.Fatal(err)
	}
	rd, err := journal.New(journal.Config{Dir: dir, Redis: sink})
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close(context.Background())
	got, err := rd.Query(t.Context(), journal.Query{Rung: journal.RungShed, Limit: journal.MaxQueryLimit})
	if err != nil {
		t.Fatal(err)
	}
	sum := 0
	for _, rec := range got {
		sum += rec.Count
		if rec.Status != http.StatusTooManyRequests || rec.Reason != "rate_limit_exceeded" || rec.Tenant != got[0].Tenant {
			t.Errorf("refusal record %+v", rec)
		}
	}
	if len(got) != 2 || sum != refused {
		t.Errorf("%d refusal records standing for %d refusals; want 2 for the %d refused", len(got), sum, refused)
	}
	if got, err := rd.Query(t.Context(), journal.Query{Rung: journal.RungBusy}); err != nil || len(got) != busyAnswers {
		t.Errorf("busy answers: %d, %v; want %d: 5 from before the restart, 3 after, the rest from the flood", len(got), err, busyAnswers)
	}
	// The stream holds only what reached it after the restart (while it
	// backs off after a failure, records are in the file alone).
	if n, err := rc.XLen(t.Context(), journal.StreamKey("eu-west")).Result(); err != nil || n == 0 || n > int64(busyAnswers-5+2) {
		t.Errorf("stream after the restart: %d entries, %v; want some of the %d records written after it", n, err, busyAnswers-5+2)
	}
}
