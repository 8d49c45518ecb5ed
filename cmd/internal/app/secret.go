package app

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/edgecache/edgecache/cache"
)

// Where the tenant secret comes from, as /readyz reports it.
const (
	secretConfigured = "configured" // EDGECACHE_TENANT_SECRET
	secretRegion     = "region"     // agreed through Redis with the region's replicas
	secretTemporary  = "temporary"  // Redis did not answer at start; the region's is adopted when it does
	secretProcess    = "process"    // no Redis: random for this process
)

// secretName is the name of the region's secret in Redis (under L2's prefix).
const secretName = "tenant-secret"

// Timing of the background checks (see tenantSecret).
const (
	secretCheckInterval = time.Second
	secretCheckTimeout  = time.Second
	secretStartTimeout  = 2 * time.Second
	// secretAbsentChecks is how many checks in a row a replica on a
	// temporary secret must find Redis without one before it proposes its
	// own: replicas that hold the region's secret re-propose it every
	// check, and theirs should win over a newcomer's.
	secretAbsentChecks = 3
)

// secretStore is where a region's replicas agree on the secret
// (*shared.Shared).
type secretStore interface {
	// SetIfAbsent stores val unless a value is there and returns the value
	// held (SET NX, then GET).
	SetIfAbsent(ctx context.Context, name string, val []byte) ([]byte, error)
	// Lookup returns the value held, or cache.ErrMiss.
	Lookup(ctx context.Context, name string) ([]byte, error)
}

// tenantSecret is the secret that keys tenant namespaces and key ids (an
// HMAC of the client's API key): exact and semantic cache keys, purges by
// API key, quota identities. Every replica of a region must hold the same
// one, or their L2 entries, purges and global quotas never meet.
//
// A configured secret (EDGECACHE_TENANT_SECRET) is used as it is. Without
// one it is agreed through Redis: at start a replica proposes a random
// secret (SET NX) and takes the one Redis holds. A replica that finds Redis
// down at start serves on a temporary random secret, reports it in /readyz
// (tenant_secret: temporary), and asks Redis again every second; as soon as
// Redis holds a secret the replica adopts it (onChange switches the
// pipeline and the admin API: from then on its requests meet the region's
// entries, and what it cached under the temporary secret is simply not
// found again and ages out). If Redis answers but holds no secret for three
// checks in a row (a region whose replicas all started without Redis, or a
// Redis that lost its data), it proposes its own. A replica holding the
// region's secret proposes it again every check, so a Redis restarted empty
// gets it back; should Redis hold another one (another replica proposed
// first), it adopts that: replicas converge on one secret within seconds.
type tenantSecret struct {
	store    secretStore // nil: configured, or no Redis
	log      *slog.Logger
	onChange func(secret []byte) // set before run

	interval, timeout time.Duration
	absentChecks      int

	cur    atomic.Pointer[secretState]
	absent int // run's goroutine only
}

type secretState struct {
	secret []byte
	source string
}

// newTenantSecret settles the secret at start. store is nil without Redis.
func newTenantSecret(ctx context.Context, configured []byte, store secretStore, log *slog.Logger) (*tenantSecret, error) {
	t := &tenantSecret{log: log, interval: secretCheckInterval, timeout: secretCheckTimeout, absentChecks: secretAbsentChecks}
	if len(configured) > 0 {
		t.cur.Store(&secretState{configured, secretConfigured})
		return t, nil
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	if store == nil {
		log.Info("tenant secret: random for this process (set EDGECACHE_TENANT_SECRET to keep namespaces across restarts)")
		t.cur.Store(&secretState{b, secretProcess})
		return t, nil
	}
	t.store = store
	sctx, cancel := context.WithTimeout(ctx, secretStartTimeout)
	defer cancel()
	s, err := store.SetIfAbsent(sctx, secretName, b)
	if err != nil {
		log.Warn("tenant secret: Redis unreachable; a temporary one until Redis answers, then the region's "+
			"(entries cached meanwhile are this replica's own); or set EDGECACHE_TENANT_SECRET", "err", err)
		t.cur.Store(&secretState{b, secretTemporary})
		return t, nil
	}
	t.cur.Store(&secretState{s, secretRegion})
	return t, nil
}

// current returns the secret in force.
func (t *tenantSecret) current() []byte { return t.cur.Load().secret }

// source says where the current secret comes from (the secret* constants).
func (t *tenantSecret) source() string { return t.cur.Load().source }

// run checks Redis every interval until ctx ends (nothing to do for a
// configured secret or without Redis).
func (t *tenantSecret) run(ctx context.Context) {
	if t.store == nil {
		return
	}
	tick := time.NewTicker(t.interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			t.check(ctx)
		}
	}
}

// check is one look at Redis (see tenantSecret).
func (t *tenantSecret) check(ctx context.Context) {
	defer func() {
		if r := recover(); r != nil {
			t.log.Error("tenant secret: check panicked", "panic", r, "stack", string(debug.Stack()))
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	st := t.cur.Load()
	if st.source == secretRegion {
		if v, err := t.store.SetIfAbsent(ctx, secretName, st.secret); err == nil {
			t.adopt(v)
		}
		return
	}
	v, err := t.store.Lookup(ctx, secretName)
	switch {
	case err == nil:
		t.adopt(v)
	case errors.Is(err, cache.ErrMiss):
		if t.absent++; t.absent < t.absentChecks {
			return
		}
		if v, err := t.store.SetIfAbsent(ctx, secretName, st.secret); err == nil {
			t.adopt(v)
		}
	default:
		t.absent = 0 // Redis is still away: three answers in a row are needed
	}
}

// adopt makes v, which Redis holds, the secret in force.
func (t *tenantSecret) adopt(v []byte) {
	t.absent = 0
	st := t.cur.Load()
	if bytes.Equal(v, st.secret) {
		if st.source != secretRegion {
			t.cur.Store(&secretState{st.secret, secretRegion})
			t.log.Info("tenant secret: Redis holds none; this replica's temporary secret is now the region's")
		}
		return
	}
	t.cur.Store(&secretState{v, secretRegion})
	if t.onChange != nil {
		t.onChange(v)
	}
	t.log.Warn("tenant secret: adopted the region's from Redis; answers cached and quotas counted under the previous secret are not found again",
		"previous", st.source)
}
