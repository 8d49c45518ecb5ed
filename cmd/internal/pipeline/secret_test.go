package pipeline

import (
	"context"
	"fmt"
	"sync"
	"testing"
)

// SetSecret switches tenant namespaces and key ids for requests that come
// after it; requests hashing meanwhile get one secret's answer or the
// other's, never a mix.
func TestSetSecret(t *testing.T) {
	oldS, newS := []byte("temporary-secret"), []byte("the-regions-secret")
	p := New(Config{Secret: oldS})
	defer p.Close(context.Background())
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for g := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				k := fmt.Sprintf("sk-%d-%d", g, i%5)
				c := p.callerOf(k)
				switch {
				case c.tenant() == Namespace(oldS, k) && c.keyID() == KeyID(oldS, k):
				case c.tenant() == Namespace(newS, k) && c.keyID() == KeyID(newS, k):
				default:
					t.Errorf("callerOf(%q) = %q, %q: neither secret's", k, c.tenant(), c.keyID())
					return
				}
			}
		})
	}
	p.SetSecret(newS)
	close(stop)
	wg.Wait()
	if got, want := p.callerOf("sk-a").tenant(), Namespace(newS, "sk-a"); got != want {
		t.Errorf("after SetSecret: %q, want %q", got, want)
	}
}

// The keyring's remembered callers are the HMAC's answer, key for key:
// the same after the cache is full and starts over, never another key's,
// and gone with the secret.
func TestRememberedCallers(t *testing.T) {
	secret := []byte("s3cret")
	p := New(Config{Secret: secret})
	defer p.Close(context.Background())
	for round := range 2 {
		for i := range maxCallers + 10 {
			key := fmt.Sprintf("sk-%d", i)
			c := p.callerOf(key)
			if c.tenant() != Namespace(secret, key) || c.keyID() != KeyID(secret, key) {
				t.Fatalf("round %d, key %d: caller %s/%s, want %s/%s", round, i, c.tenant(), c.keyID(),
					Namespace(secret, key), KeyID(secret, key))
			}
		}
	}
	if n := len(p.keys.Load().callers); n > maxCallers {
		t.Errorf("%d callers remembered, bound %d", n, maxCallers)
	}
	p.SetSecret([]byte("another"))
	if c := p.callerOf("sk-1"); c.tenant() != Namespace([]byte("another"), "sk-1") {
		t.Errorf("after SetSecret: %s, the old secret's caller", c.tenant())
	}
}
