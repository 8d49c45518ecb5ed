package policy

import (
	"context"
	"encoding/json"
	"time"

	"github.com/redis/go-redis/v9"
)

func (s *Store) readRedis(ctx context.Context) (map[string]Entry, error) {
	m, err := s.cfg.Redis.HGetAll(ctx, s.hashKey()).Result()
	if err != nil {
		return map[string]Entry{}, err
	}
	out := make(map[string]Entry, len(m))
	for name, v := range m {
		var e Entry
		if json.Unmarshal([]byte(v), &e) == nil {
			out[name] = e
		}
	}
	return out, nil
}

// writeRedis stores e with the next version (one greater than what Redis
// holds, so concurrent changes on two replicas never reuse a version) and
// announces it.
func (s *Store) writeRedis(ctx context.Context, name string, e Entry) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if cur, err := s.cfg.Redis.HGet(ctx, s.hashKey(), name).Result(); err == nil {
		var old Entry
		if json.Unmarshal([]byte(cur), &old) == nil && old.Version >= e.Version {
			e.Version = old.Version + 1
		}
	} else if err != redis.Nil {
		return 0, err
	}
	b, _ := json.Marshal(e) // plain values: cannot fail
	if err := s.cfg.Redis.HSet(ctx, s.hashKey(), name, b).Err(); err != nil {
		return 0, err
	}
	if err := s.cfg.Redis.Publish(ctx, s.channel(), name).Err(); err != nil {
		s.log.Warn("route policies: publish", "err", err) // replicas converge on their next resync
	}
	return e.Version, nil
}

func (s *Store) appendAuditRedis(ctx context.Context, a Audit) {
	b, _ := json.Marshal(a)
	err := s.cfg.Redis.XAdd(ctx, &redis.XAddArgs{Stream: s.auditStream(), MaxLen: 10000, Approx: true,
		Values: map[string]any{"audit": b}}).Err()
	if err != nil {
		s.log.Warn("route policies: audit to Redis", "err", err)
	}
}

func (s *Store) readAuditRedis(ctx context.Context, n int) ([]Audit, error) {
	msgs, err := s.cfg.Redis.XRevRangeN(ctx, s.auditStream(), "+", "-", int64(n)).Result()
	if err != nil {
		return nil, err
	}
	out := make([]Audit, 0, len(msgs))
	for _, m := range msgs {
		v, _ := m.Values["audit"].(string)
		var a Audit
		if json.Unmarshal([]byte(v), &a) == nil {
			out = append(out, a)
		}
	}
	return out, nil
}

// Run keeps this replica in step with the region until ctx is done: it
// applies announced changes at once and re-reads every override every
// Resync (which also covers messages missed while disconnected).
func (s *Store) Run(ctx context.Context) {
	if s.cfg.Redis == nil {
		return
	}
	sub := s.cfg.Redis.Subscribe(ctx, s.channel())
	defer sub.Close()
	msgs := sub.Channel()
	tick := time.NewTicker(s.cfg.Resync)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-msgs:
			if !ok {
				return
			}
			s.resync(ctx)
		case <-tick.C:
			s.resync(ctx)
		}
	}
}

// resync installs what Redis holds when it differs from what is in force.
func (s *Store) resync(ctx context.Context) {
	defer func() {
		if v := recover(); v != nil {
			s.log.Error("route policies: resync panicked", "panic", v)
		}
	}()
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	entries, err := s.readRedis(rctx)
	cancel()
	if err != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	same := len(entries) == len(s.entries)
	for k, e := range entries {
		if cur, ok := s.entries[k]; !ok || cur.Version != e.Version {
			same = false
		}
	}
	if same {
		return
	}
	if err := s.install(entries); err != nil {
		s.log.Warn("route policies: resync", "err", err)
	}
}
