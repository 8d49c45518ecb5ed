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
