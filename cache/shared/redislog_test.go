package shared

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// A burst of identical go-redis lines becomes one warning per window, the
// next one counting what was left out; other messages keep their own
// window.
func TestRedisLogRateLimited(t *testing.T) {
	var buf bytes.Buffer
	now := time.Unix(0, 0)
	l := newRedisLog(slog.New(slog.NewJSONHandler(&buf, nil)), 10*time.Second, func() time.Time { return now })
	const dial = "redis: connection pool: failed to dial after %d attempts: %v"
	for range 100 {
		l.Printf(context.Background(), dial, 1, "connection refused")
	}
	l.Printf(context.Background(), "redis: other %s", "thing")
	now = now.Add(11 * time.Second)
	l.Printf(context.Background(), dial, 1, "connection refused")

	var recs []map[string]any
	for line := range strings.SplitSeq(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		recs = append(recs, m)
	}
	if len(recs) != 3 {
		t.Fatalf("%d records, want 3:\n%s", len(recs), buf.String())
	}
	if recs[0]["msg"] != "redis client: connection pool: failed to dial after 1 attempts: connection refused" ||
		recs[0]["level"] != "WARN" || recs[0]["suppressed"] != nil {
		t.Errorf("first record %v", recs[0])
	}
	if recs[1]["msg"] != "redis client: other thing" {
		t.Errorf("second record %v", recs[1])
	}
	if recs[2]["suppressed"] != float64(99) {
		t.Errorf("third record %v: want suppressed 99", recs[2])
	}
}
