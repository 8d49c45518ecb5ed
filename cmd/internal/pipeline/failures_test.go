package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgecache/edgecache/cmd/internal/llmsim"
	"github.com/edgecache/edgecache/degrade/admission"
)

// An upstream that cuts every stream after its first tokens: each cut
// stream ends with an error event for its client and counts as the
// target's failure, so the breaker opens and the next streams come whole
// from the backup.
func TestTruncatingUpstreamTripsAndFailsOver(t *testing.T) {
	backup, err := llmsim.Start(context.Background(), "127.0.0.1:0", llmsim.Config{AnswerTokens: 12})
	if err != nil {
		t.Fatal(err)
	}
	defer backup.Close()
	e := newEdge(t, edgeOpts{sim: llmsim.Config{AnswerTokens: 12}, backups: []string{backup.URL()}})
	e.sim.Server.SetFault(llmsim.Fault{CutAfter: 3})
	cut := 0
	for i := range 10 {
		r := e.post("/v1/chat/completions", chat(fmt.Sprintf("truncated %d", i), `"stream":true`))
		text, done, errEvent := sseText(t, r.body)
		if r.status != 200 || text == "" {
			t.Fatalf("stream %d: %d %s", i, r.status, r.body)
		}
		if errEvent {
			cut++
			continue
		}
		if !done || !strings.HasPrefix(text, simPrefix(fmt.Sprintf("truncated %d", i))) {
			t.Fatalf("stream %d: neither cut nor complete: %s", i, r.body)
		}
		break
	}
	t.Logf("%d cut streams before failover", cut)
	if cut != 5 {
		t.Errorf("%d cut streams before the breaker opened, want 5 (Consecutive)", cut)
	}
	if st := e.targets[0].Breaker.Status(); st.State != "open" || st.LastReason != "stream_cut" {
		t.Errorf("primary breaker %+v, want open for stream_cut", st)
	}
	if n := backup.Server.Stats()["/v1/chat/completions"]; n != 1 {
		t.Errorf("backup called %d times, want 1", n)
	}
}

// The busy answer's status says what went wrong: 504 when the model did
// not answer in time, 502 when its answer was unusable, 503 when it was
// unavailable.
func TestBusyStatusIsTrue(t *testing.T) {
	tests := []struct {
		name         string
		fault        llmsim.Fault
		stream       bool
		status       int
		reason, code string
	}{
		{"hang", llmsim.Fault{Hang: true}, false, 504, "timeout", "upstream_timeout"},
		{"hang, streamed", llmsim.Fault{Hang: true}, true, 504, "timeout", "upstream_timeout"},
		{"empty", llmsim.Fault{Empty: true}, false, 502, "empty_answer", "upstream_bad_response"},
		{"empty, streamed", llmsim.Fault{Empty: true}, true, 502, "empty_answer", "upstream_bad_response"},
		{"half a body", llmsim.Fault{CutAfter: 3}, false, 502, "upstream_error", "upstream_bad_response"},
		{"reset", llmsim.Fault{Reset: true}, false, 502, "upstream_error", "upstream_bad_response"},
		{"503", llmsim.Fault{Status: 503}, false, 503, "upstream_503", "upstream_unavailable"},
		{"500, streamed", llmsim.Fault{Status: 500}, true, 503, "upstream_500", "upstream_unavailable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEdge(t, edgeOpts{})
			e.p.cfg.Guard.TTFTTimeout = 200 * time.Millisecond
			e.sim.Server.SetFault(tt.fault)
			r := e.post("/v1/chat/completions", chat("status", fmt.Sprintf(`"stream":%v`, tt.stream)))
			if r.status != tt.status || r.header.Get("X-Edgecache-Degraded-Reason") != tt.reason ||
				r.header.Get("Retry-After") == "" || !bytes.Contains(r.body, []byte(`"`+tt.code+`"`)) {
				t.Errorf("%d %q Retry-After %q %s, want %d %s %s", r.status, r.header.Get("X-Edgecache-Degraded-Reason"),
					r.header.Get("Retry-After"), r.body, tt.status, tt.reason, tt.code)
			}
			if recs := e.journal.recs; len(recs) != 1 || recs[0].Status != tt.status {
				t.Errorf("journal %+v, want one busy record with status %d", recs, tt.status)
			}
		})
	}
}

// syncBuffer is a log sink a test reads while the pipeline writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// lines returns the JSON log lines with message msg.
func (s *syncBuffer) lines(t *testing.T, msg string) []map[string]any {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for _, l := range bytes.Split(s.b.Bytes(), []byte("\n")) {
		var m map[string]any
		if len(l) == 0 {
			continue
		}
		if err := json.Unmarshal(l, &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		if m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// Upstream failures and breaker transitions are logged, at most one line
// per target and reason per 10 s; the next line counts the ones suppressed.
func TestGuardLogsAreRateLimited(t *testing.T) {
	e := newEdge(t, edgeOpts{})
	var sink syncBuffer
	e.p.log = slog.New(slog.NewJSONHandler(&sink, nil))
	clock := &fakeClock{t: time.Now()}
	e.p.logs.now = clock.Now
	e.sim.Server.SetFault(llmsim.Fault{Status: 500})
	for i := range 20 { // 3 attempts each until the breaker opens (5 failures), then breaker_open
		e.post("/v1/chat/completions", chat(fmt.Sprintf("log %d", i)))
	}
	if got := sink.lines(t, "upstream failure"); len(got) != 1 || got[0]["reason"] != "upstream_500" || got[0]["target"] != "primary" ||
		got[0]["whose"] != "target" {
		t.Errorf("upstream failure lines %v, want one for upstream_500", got)
	}
	if got := sink.lines(t, "upstream breaker opened"); len(got) != 1 || got[0]["reason"] != "upstream_500" {
		t.Errorf("breaker lines %v, want one", got)
	}
	// 10 s later the next failure is logged with the count of those held back.
	clock.advance(logEvery)
	e.p.logUpstreamFailure(context.Background(), e.targets[0], outcome{reason: "upstream_500", att: Attempt{Status: 500}})
	got := sink.lines(t, "upstream failure")
	if len(got) != 2 || got[1]["suppressed"] != float64(4) {
		t.Errorf("after the window: %v, want a second line with suppressed 4 (5 failures, 1 logged)", got)
	}
	// A tenant's own 429 is logged as the tenant's (and never with its key).
	e2 := newEdge(t, edgeOpts{})
	var sink2 syncBuffer
	e2.p.log = slog.New(slog.NewJSONHandler(&sink2, nil))
	e2.sim.Server.SetFault(llmsim.Fault{Status: 429, RetryAfter: 3, Keys: []string{"sk-limited"}})
	e2.post("/v1/chat/completions", chat("limited"), bearer("sk-limited")...)
	if got := sink2.lines(t, "upstream failure"); len(got) != 1 || got[0]["reason"] != "tenant_429" || got[0]["whose"] != "tenant" {
		t.Errorf("tenant 429 lines %v", got)
	}
	sink2.mu.Lock()
	defer sink2.mu.Unlock()
	if bytes.Contains(sink2.b.Bytes(), []byte("sk-limited")) {
		t.Error("the key was logged")
	}
}

// ctxLog adds the request's LogAttrs to each record, as the program's
// handler does.
type ctxLog struct{ slog.Handler }

func (h ctxLog) Handle(ctx context.Context, r slog.Record) error {
	r.AddAttrs(LogAttrs(ctx)...)
	return h.Handler.Handle(ctx, r)
}

// Requests refused by admission are logged at most once per lane and
// reason per window, with the request id of the request refused.
func TestShedLogsAreRateLimited(t *testing.T) {
	e := newEdge(t, edgeOpts{})
	var sink syncBuffer
	e.p.log = slog.New(ctxLog{slog.NewJSONHandler(&sink, nil)})
	clock := &fakeClock{t: time.Now()}
	e.p.logs.now = clock.Now
	b, err := admission.NewBuckets(admission.BucketsConfig{Defaults: admission.Rules{Key: admission.Limits{RequestsPerSecond: 0.01, RequestBurst: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	prot, _ := admission.NewProtector(admission.ProtectConfig{MaxInFlight: 100})
	e.p.cfg.Admission = &AdmissionConfig{Quota: bucketQuota{b}, Protector: prot, DefaultLane: admission.Free}
	for i := range 4 {
		e.post("/v1/chat/completions", chat(fmt.Sprintf("shed %d", i)), bearer("sk-shed")...)
	}
	got := sink.lines(t, "request shed")
	if len(got) != 1 || got[0]["reason"] != admission.CodeRateLimitExceeded || got[0]["lane"] != "free" {
		t.Fatalf("shed lines %v, want one for rate_limit_exceeded", got)
	}
	clock.advance(logEvery)
	ctx, _ := NewRequestLog(context.Background(), "req-7")
	e.p.logShed(ctx, "free", admission.CodeRateLimitExceeded, time.Second)
	got = sink.lines(t, "request shed")
	if len(got) != 2 || got[1]["suppressed"] != float64(2) || got[1]["request_id"] != "req-7" {
		t.Errorf("after the window: %v, want a line with suppressed 2 and request_id req-7", got)
	}
}
