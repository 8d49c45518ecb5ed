package pipeline

import (
	"crypto/sha256"
	"net/http"
	"strconv"

	"github.com/dgraph-io/ristretto/v2"

	"github.com/edgecache/edgecache/cache"
	"github.com/edgecache/edgecache/cmd/internal/openai"
)

// aliases remember, for request bodies seen before byte for byte, the exact
// key their canonical form produced, so a repeated request is looked up
// without being parsed again. Identical bytes parse identically, so the
// alias only skips work: it covers the same route, key generation, tenant
// namespace and query as the key it names, and it is used only for lookups
// (a miss takes the full path).
type aliases struct {
	c *ristretto.Cache[string, alias]
}

type alias struct {
	key          cache.Key
	api          openai.API
	stream       bool
	includeUsage bool
}

func newAliases() *aliases {
	c, err := ristretto.NewCache(&ristretto.Config[string, alias]{
		NumCounters: 1 << 20, MaxCost: 100_000, BufferItems: 64,
	})
	if err != nil { // static, valid configuration
		panic(err)
	}
	return &aliases{c: c}
}

// aliasKey digests what names an alias: route, generation, namespace, query
// and the raw body.
func aliasKey(rt *Route, ns, scope string, body []byte) string {
	h := sha256.New()
	// One buffer for all but the body: converting ns and scope to []byte
	// for Write would allocate each time (they are longer than the
	// compiler's 32-byte stack buffer).
	var buf [256]byte
	b := append(buf[:0], "edgecache-alias-v1\x00"...)
	b = append(b, rt.Name...)
	b = append(b, 0)
	b = strconv.AppendInt(b, rt.Generation, 10)
	b = append(b, 0)
	b = append(b, ns...)
	b = append(b, 0)
	b = append(b, scope...)
	b = append(b, 0)
	h.Write(b)
	h.Write(body)
	var sum [sha256.Size]byte
	return string(h.Sum(sum[:0]))
}

// aliasable reports whether r may take the alias path: a cached route and
// no request header that changes the cache decision.
func (p *Pipeline) aliasable(rt *Route, r *http.Request) bool {
	return p.aliases != nil && rt.Cache && p.cfg.Cache != nil &&
		(p.cfg.Admission == nil || p.cfg.Admission.Quota == nil) && // quotas need the parsed estimate
		r.Header.Get("Cache-Control") == "" && r.Header.Get("Pragma") == ""
}
