package pipeline

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"hash"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/edgecache/edgecache/cache"
	"github.com/edgecache/edgecache/cmd/internal/openai"
)

// keyVersion changes whenever the key material changes shape, so old
// entries are simply never found again.
const keyVersion = "edgecache-key-v1"

var keyBufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// exactKey is the digest of everything that changes the answer: the route,
// the tenant namespace, the query string (e.g. Azure's api-version) and the
// canonical request body minus delivery-only fields.
func exactKey(rt *Route, namespace, scope string, req *openai.Request) cache.Key {
	bp := keyBufPool.Get().(*[]byte)
	b := append((*bp)[:0], keyVersion...)
	if rt.Generation != 0 {
		b = append(b, 0, 'g')
		b = strconv.AppendInt(b, rt.Generation, 10)
	}
	for _, s := range [...]string{rt.Name, namespace, scope} {
		b = append(b, 0)
		b = append(b, s...)
	}
	b = append(b, 0)
	b = req.AppendKeyMaterial(b)
	sum := sha256.Sum256(b)
	*bp = b
	keyBufPool.Put(bp)
	return cache.Key(hex.EncodeToString(sum[:]))
}

// anonymous is the namespace of requests that carry no credentials.
const anonymous = "anon"

// namespace returns the tenant namespace of caller c on route rt: an HMAC
// of the client's API key under the server's secret (raw keys are never
// stored or logged), or "shared" for routes that opt into one namespace.
//
// A purged namespace carries its generation ("t:…#g2"), so its older
// entries and semantic points are never found again.
func (p *Pipeline) namespace(rt *Route, c caller) string {
	ns := anonymous
	if rt.Shared {
		ns = "shared"
	} else if c.known {
		ns = c.tenant()
	}
	if p.cfg.NamespaceGeneration != nil {
		if g := p.cfg.NamespaceGeneration(ns); g > 0 {
			ns += "#g" + strconv.FormatInt(g, 10)
		}
	}
	return ns
}

// caller is who sent a request as keys and quotas see it: the HMAC of the
// client's API key under the server secret, computed once per request
// (the tenant namespace and the quota identity both derive from it), or
// nothing for a request without credentials.
type caller struct {
	mac   [16]byte
	known bool
	// ns and id are the namespace and key id strings of mac, made once
	// (callerOf): several layers log or count them per request.
	ns, id string
}

// identify returns the caller of r.
func (p *Pipeline) identify(r *http.Request) caller { return p.callerOf(clientKey(r)) }

// callerOf hashes apiKey through a pooled HMAC (a new one per request costs
// four allocations and the key schedule), remembered in the keyring.
func (p *Pipeline) callerOf(apiKey string) caller {
	if apiKey == "" {
		return caller{}
	}
	k := p.keys.Load()
	if c, ok := k.cached(apiKey); ok {
		return c
	}
	m := k.macs.Get().(hash.Hash)
	m.Reset()
	m.Write([]byte(apiKey))
	var sum [sha256.Size]byte
	m.Sum(sum[:0])
	k.macs.Put(m)
	c := caller{known: true}
	copy(c.mac[:], sum[:16])
	c.ns, c.id = macID("t:", c.mac[:]), macID("k:", c.mac[:])
	k.remember(apiKey, c)
	return c
}

// tenant is Namespace(secret, apiKey); keyID is KeyID(secret, apiKey).
func (c caller) tenant() string { return c.ns }
func (c caller) keyID() string  { return c.id }

// macID is prefix (at most 8 bytes) and the hex of the first 16 bytes of
// sum, in one allocation.
func macID(prefix string, sum []byte) string {
	var b [40]byte
	n := copy(b[:8], prefix)
	hex.Encode(b[n:n+32], sum[:16])
	return string(b[:n+32])
}

// Namespace is the cache namespace of an API key: an HMAC under the
// server secret.
func Namespace(secret []byte, apiKey string) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(apiKey))
	return macID("t:", m.Sum(nil))
}

// clientKey extracts the client's API key: a Bearer token (OpenAI, DeepSeek,
// vLLM), Azure's api-key header, or Anthropic's x-api-key header.
func clientKey(r *http.Request) string { return headerKey(r.Header) }

// headerKey is clientKey of a request's header (a background job keeps
// its request's).
func headerKey(h http.Header) string {
	if a := h.Get("Authorization"); a != "" {
		if len(a) > 7 && strings.EqualFold(a[:7], "bearer ") {
			return strings.TrimSpace(a[7:])
		}
		return a
	}
	if k := h.Get("Api-Key"); k != "" {
		return k
	}
	return h.Get("X-Api-Key")
}
