package shared

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// SetIfAbsent stores val under the prefixed name unless a value is already
// there (SET NX, no expiry) and returns the value that Redis holds, so every
// replica of a region agrees on it (e.g. a generated secret). It ignores the
// breaker: it is meant for start-up, under the caller's deadline.
func (s *Shared) SetIfAbsent(ctx context.Context, name string, val []byte) ([]byte, error) {
	k := s.prefix + "meta:" + name
	if err := s.client.SetArgs(ctx, k, val, redis.SetArgs{Mode: "NX"}).Err(); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("shared set-if-absent %s: %w", name, err)
	}
	b, err := s.client.Get(ctx, k).Bytes()
	if err != nil {
		return nil, fmt.Errorf("shared set-if-absent %s: %w", name, err)
	}
	return b, nil
}
