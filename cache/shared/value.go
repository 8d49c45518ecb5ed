package shared

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/edgecache/edgecache/cache"
)

// SetIfAbsent stores val under the prefixed name unless a value is already
// there (SET NX, no expiry) and returns the value that Redis holds, so every
// replica of a region agrees on it (e.g. a generated secret). It ignores the
// breaker: it is meant for start-up and background checks, under the
// caller's deadline.
func (s *Shared) SetIfAbsent(ctx context.Context, name string, val []byte) ([]byte, error) {
	k := s.metaKey(name)
	if err := s.client.SetArgs(ctx, k, val, redis.SetArgs{Mode: "NX"}).Err(); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("shared set-if-absent %s: %w", name, err)
	}
	b, err := s.client.Get(ctx, k).Bytes()
	if err != nil {
		return nil, fmt.Errorf("shared set-if-absent %s: %w", name, err)
	}
	return b, nil
}

// Lookup returns the value SetIfAbsent stored under name, or cache.ErrMiss
// when Redis holds none. Like SetIfAbsent it ignores the breaker.
func (s *Shared) Lookup(ctx context.Context, name string) ([]byte, error) {
	b, err := s.client.Get(ctx, s.metaKey(name)).Bytes()
	switch {
	case errors.Is(err, redis.Nil):
		return nil, cache.ErrMiss
	case err != nil:
		return nil, fmt.Errorf("shared lookup %s: %w", name, err)
	}
	return b, nil
}

func (s *Shared) metaKey(name string) string { return s.prefix + "meta:" + name }
