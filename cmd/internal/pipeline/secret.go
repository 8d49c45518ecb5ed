package pipeline

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"strings"
	"sync"
)

// keyring is the server secret and a pool of HMACs keyed with it (a new
// HMAC per request costs four allocations and the key schedule). The
// pipeline swaps the whole keyring when the secret changes, so a request
// hashes with one secret throughout.
type keyring struct {
	secret []byte
	macs   sync.Pool // hash.Hash: HMAC-SHA256 under secret

	// callers remembers the caller of recent API keys: the HMAC and the
	// two id strings cost about 0.4 µs and three allocations per request,
	// a few percent of a cache hit, and a client sends the same key
	// again and again. Exact keys (never a hash of them), so two keys
	// can never share an entry; at most maxCallers, then it starts over
	// (keys sent once each cost what they did before). A new secret is a
	// new keyring, so nothing outlives it.
	mu      sync.RWMutex
	callers map[string]caller
}

// maxCallers bounds keyring.callers (about 200 bytes an entry).
const maxCallers = 8192

func (k *keyring) cached(apiKey string) (caller, bool) {
	k.mu.RLock()
	c, ok := k.callers[apiKey]
	k.mu.RUnlock()
	return c, ok
}

func (k *keyring) remember(apiKey string, c caller) {
	k.mu.Lock()
	if len(k.callers) >= maxCallers {
		clear(k.callers)
	}
	k.callers[strings.Clone(apiKey)] = c // not a view of a request's header bytes
	k.mu.Unlock()
}

func newKeyring(secret []byte) *keyring {
	k := &keyring{secret: bytes.Clone(secret), callers: map[string]caller{}}
	k.macs.New = func() any { return hmac.New(sha256.New, k.secret) }
	return k
}

// SetSecret replaces the secret that keys tenant namespaces and key ids
// (Config.Secret) for requests that arrive from now on; requests in flight
// finish under the old one. It is how a replica that started while Redis
// was down adopts its region's secret. Cache entries and quota buckets
// keyed under the old secret are not found again (their keys hold the old
// namespaces and key ids); they age out.
func (p *Pipeline) SetSecret(secret []byte) { p.keys.Store(newKeyring(secret)) }
