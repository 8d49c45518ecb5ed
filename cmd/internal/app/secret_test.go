package app

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/edgecache/edgecache/cache/cachetest"
	"github.com/edgecache/edgecache/cache/shared"
	"github.com/edgecache/edgecache/cmd/internal/llmsim"
)

var quietLog = slog.New(slog.DiscardHandler)

// secretReplica is one replica's tenantSecret with its own L2 client,
// checking every 10ms, and the secrets it switched to.
type secretReplica struct {
	*tenantSecret
	mu      sync.Mutex
	changes [][]byte
}

func newSecretReplica(t *testing.T, addr string, absentChecks int) *secretReplica {
	t.Helper()
	l2, err := shared.New(shared.Config{Conn: shared.Conn{Addrs: []string{addr}}, Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l2.Close() })
	ts, err := newTenantSecret(t.Context(), nil, l2, quietLog)
	if err != nil {
		t.Fatal(err)
	}
	ts.interval, ts.absentChecks = 10*time.Millisecond, absentChecks
	r := &secretReplica{tenantSecret: ts}
	ts.onChange = func(b []byte) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.changes = append(r.changes, b)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); ts.run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return r
}

func (r *secretReplica) changed() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]byte(nil), r.changes...)
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not reached in 10s: %s", what)
		}
		time.Sleep(5 * time.Millisecond) // polling interval
	}
}

// TestTenantSecretAdoptsTheRegions: a replica started while Redis was down
// runs on a temporary secret and adopts the region's once Redis answers; a
// region without a secret gets the temporary one; a Redis that lost its
// data gets the region's back; a replica whose secret Redis no longer holds
// adopts the one it holds.
func TestTenantSecretAdoptsTheRegions(t *testing.T) {
	key := shared.DefaultPrefix + "meta:" + secretName
	t.Run("adopt the region's", func(t *testing.T) {
		r := cachetest.StartRedis(t)
		r.Stop()
		a := newSecretReplica(t, r.Addr(), 1000) // adopts, never proposes
		if a.source() != secretTemporary {
			t.Fatalf("source with Redis down = %q, want %q", a.source(), secretTemporary)
		}
		temp := a.current()
		r.Restart()
		b := newSecretReplica(t, r.Addr(), 3)
		if b.source() != secretRegion || bytes.Equal(b.current(), temp) {
			t.Fatalf("replica started with Redis up: %q", b.source())
		}
		waitFor(t, "the temporary replica adopts the region's secret", func() bool { return a.source() == secretRegion })
		if !bytes.Equal(a.current(), b.current()) {
			t.Errorf("adopted %x, the region's is %x", a.current(), b.current())
		}
		if ch := a.changed(); len(ch) != 1 || !bytes.Equal(ch[0], b.current()) {
			t.Errorf("onChange calls = %x, want one with the region's secret", ch)
		}
	})
	t.Run("no secret in the region: the temporary one becomes it", func(t *testing.T) {
		r := cachetest.StartRedis(t)
		r.Stop()
		a := newSecretReplica(t, r.Addr(), 3)
		temp := a.current()
		r.Restart()
		waitFor(t, "the temporary secret becomes the region's", func() bool { return a.source() == secretRegion })
		got, err := rawRedis(t, r.Addr()).Get(t.Context(), key).Bytes()
		if err != nil || !bytes.Equal(got, temp) || !bytes.Equal(a.current(), temp) || len(a.changed()) != 0 {
			t.Errorf("Redis holds %x (%v), replica %x, changes %d; want its temporary secret %x kept", got, err, a.current(), len(a.changed()), temp)
		}
	})
	t.Run("Redis lost its data", func(t *testing.T) {
		r := cachetest.StartRedis(t)
		b := newSecretReplica(t, r.Addr(), 3)
		s := b.current()
		r.Restart() // empty
		raw := rawRedis(t, r.Addr())
		waitFor(t, "the region's secret is proposed again", func() bool {
			got, err := raw.Get(t.Context(), key).Bytes()
			return err == nil && bytes.Equal(got, s)
		})
		other := []byte("another replica proposed first, 32 bytes")
		if err := raw.Set(t.Context(), key, other, 0).Err(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the replica adopts what Redis holds", func() bool { return bytes.Equal(b.current(), other) })
		if ch := b.changed(); len(ch) != 1 || !bytes.Equal(ch[0], other) {
			t.Errorf("onChange calls = %q", ch)
		}
	})
}

// TestTenantSecretAdoptedWhenRedisReturns: a replica started while Redis
// was down reports a temporary tenant secret, adopts the region's when Redis
// is back, and from then on shares L2 entries and purges with the replica
// that was up all along.
func TestTenantSecretAdoptedWhenRedisReturns(t *testing.T) {
	r := cachetest.StartRedis(t)
	sim, err := llmsim.Start(context.Background(), "127.0.0.1:0", llmsim.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	cfgPath := filepath.Join(t.TempDir(), "edgecache.yaml")
	if err := os.WriteFile(cfgPath, []byte(fmt.Sprintf("redis: {addrs: [%q]}\nsemantic: {embedder: lexical}\n", r.Addr())), 0o600); err != nil {
		t.Fatal(err)
	}
	ready := func(admin string) (secret, redis string) {
		t.Helper()
		code, b := get(t, admin+"/readyz", "")
		var st struct {
			Redis        string `json:"redis"`
			TenantSecret string `json:"tenant_secret"`
		}
		if code != 200 || json.Unmarshal(b, &st) != nil {
			t.Fatalf("/readyz: %d %s", code, b)
		}
		return st.TenantSecret, st.Redis
	}
	ask := func(base, prompt string) string {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, base+"/v1/chat/completions",
			strings.NewReader(`{"model":"m","messages":[{"role":"user","content":"`+prompt+`"}]}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer sk-tenant-a")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d", prompt, resp.StatusCode)
		}
		return resp.Header.Get("Cache-Status")
	}

	up, upAdmin := startEdgecache(t, sim.URL(), "--config", cfgPath)
	if s, _ := ready(upAdmin); s != secretRegion {
		t.Fatalf("replica started with Redis up: tenant_secret %q", s)
	}
	r.Stop()
	late, lateAdmin := startEdgecache(t, sim.URL(), "--config", cfgPath)
	if s, _ := ready(lateAdmin); s != secretTemporary {
		t.Fatalf("replica started with Redis down: tenant_secret %q, want %q", s, secretTemporary)
	}
	r.Restart() // empty: the replica that was up proposes the region's secret again
	waitFor(t, "the late replica adopts the region's secret", func() bool {
		s, _ := ready(lateAdmin)
		return s == secretRegion
	})

	// An answer the first replica stores is an L2 hit at the late one.
	waitFor(t, "L2 up at both replicas", func() bool {
		_, a := ready(upAdmin)
		_, b := ready(lateAdmin)
		return a == "up" && b == "up"
	})
	// Writes to L2 are queued, so the late replica is asked only once the
	// entry is in Redis: asked earlier, it would miss, store the answer in its
	// own L1 and never look at L2 for that prompt again.
	raw := rawRedis(t, r.Addr())
	cacheKeys := func() map[string]bool {
		keys, err := raw.Keys(t.Context(), "edgecache:v1:*").Result()
		if err != nil {
			t.Fatal(err)
		}
		set := make(map[string]bool, len(keys))
		for _, k := range keys {
			set[k] = true
		}
		return set
	}
	before := cacheKeys()
	if cs := ask(up, "stored by the first replica"); !strings.Contains(cs, "stored") {
		t.Fatalf("first replica: Cache-Status %q, want a stored miss", cs)
	}
	waitFor(t, "the first replica's answer in Redis", func() bool {
		for k := range cacheKeys() {
			if !before[k] {
				return true
			}
		}
		return false
	})
	if cs := ask(late, "stored by the first replica"); !strings.HasPrefix(cs, "edgecache; hit; detail=l2") {
		t.Fatalf("late replica: Cache-Status %q, want an L2 hit", cs)
	}

	// A purge of the tenant at the late replica reaches the first one.
	req, _ := http.NewRequest(http.MethodPost, lateAdmin+"/admin/cache/purge", strings.NewReader(`{"api_key":"sk-tenant-a"}`))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("purge: %d %s", resp.StatusCode, b)
	}
	waitFor(t, "the purge reaches the first replica", func() bool {
		return !strings.Contains(ask(up, "stored by the first replica"), "hit")
	})
}

// rawRedis talks to Redis directly, beside the code under test.
func rawRedis(t *testing.T, addr string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { c.Close() })
	return c
}
