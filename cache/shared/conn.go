package shared

import (
	"crypto/tls"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// Conn names a Redis deployment: one address is a single node, several are
// the seeds of a Redis Cluster (Cluster forces that with one seed), and with
// MasterName they are Sentinel addresses. Everything edgecache keeps in
// Redis (L2, global limits, the journal stream, route policies) connects
// through it, so each of them reaches the same deployment the same way.
type Conn struct {
	Addrs              []string
	Cluster            bool
	MasterName         string
	Username, Password string
	DB                 int
	// TLS, when set, encrypts every connection (managed Redis offerings
	// such as Azure Cache for Redis or ElastiCache with in-transit
	// encryption require it). The server name defaults to the host of the
	// address dialled. Nil: plaintext.
	TLS *tls.Config
}

// Validate reports a Conn that cannot connect.
func (c Conn) Validate() error {
	var errs []error
	if len(c.Addrs) == 0 {
		errs = append(errs, errors.New("no Addrs"))
	}
	for _, a := range c.Addrs {
		if a == "" {
			errs = append(errs, errors.New("empty address in Addrs"))
			break
		}
	}
	if c.DB < 0 {
		errs = append(errs, fmt.Errorf("DB %d is negative", c.DB))
	}
	if c.DB != 0 && c.MasterName == "" && (c.Cluster || len(c.Addrs) > 1) {
		errs = append(errs, fmt.Errorf("DB %d is set but Redis Cluster has only DB 0", c.DB))
	}
	return errors.Join(errs...)
}

// Options returns go-redis options for c with the settings every edgecache
// client shares: no CLIENT SETINFO round trip per connection, one dial
// attempt (breakers decide what happens next), context deadlines honoured
// and two cluster redirects. Callers add their timeouts, pool and retries.
func (c Conn) Options() *redis.UniversalOptions {
	return &redis.UniversalOptions{
		Addrs:                 append([]string(nil), c.Addrs...),
		IsClusterMode:         c.Cluster,
		MasterName:            c.MasterName,
		Username:              c.Username,
		Password:              c.Password,
		DB:                    c.DB,
		DisableIdentity:       true,
		DialerRetries:         1,
		MaxRedirects:          2,
		ContextTimeoutEnabled: true,
		TLSConfig:             c.TLS.Clone(), // nil stays nil
	}
}
