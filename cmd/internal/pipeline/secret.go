package pipeline

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"sync"
)

// keyring is the server secret and a pool of HMACs keyed with it (a new
// HMAC per request costs four allocations and the key schedule). The
// pipeline swaps the whole keyring when the secret changes, so a request
// hashes with one secret throughout.
type keyring struct {
	secret []byte
	macs   sync.Pool // hash.Hash: HMAC-SHA256 under secret
}

func newKeyring(secret []byte) *keyring {
	k := &keyring{secret: bytes.Clone(secret)}
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
