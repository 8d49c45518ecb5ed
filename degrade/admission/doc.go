// Package admission decides whether a request may proceed, before it costs
// the upstream model anything, and says honestly when it may come back.
//
// It implements rungs 1, 2 and 4 of the degradation ladder
// (design/DEGRADATION.md), each as its own small type so the caller can
// order them:
//
//   - Protector (rung 1, self-protection): in-flight and heap pressure shed
//     the lowest lane first (batch above 80 % of the configured maximum,
//     free above 90 %, paid above 95 %, enterprise at 100 %).
//   - Buckets (rung 2, own quotas, per instance): token buckets per API key,
//     tenant and client IP, one for requests and one for estimated tokens,
//     settled with the real usage after the answer.
//   - Global (rung 2, own quotas, per region): the same buckets held in
//     Redis and checked-and-reserved atomically by one Lua script, so two
//     instances sharing a Redis admit the limit, not limit × replicas. When
//     Redis is slow or down, each instance falls back to its share of the
//     limit (limit / GlobalConfig.Replicas).
//   - Concurrency (rung 4, upstream admission): an adaptive concurrency
//     limit per upstream measured on time to first token (slow start, which
//     about doubles it per TTFT until TTFT rises or the upstream refuses,
//     then Gradient2; a stream reports its TTFT at its first token), lanes
//     as partitions whose guaranteed shares apply only when the limit is
//     saturated, and a bounded priority queue whose wait never exceeds the
//     lane's maximum wait nor the client's deadline.
//
// Every limiter has a shadow mode: would-be rejections are counted and the
// request is admitted anyway. Every limiter exposes a Stats snapshot.
//
// Decisions are plain values; mapping them to a protocol is the caller's
// job. A Decision that denies maps to 429 with code rate_limit_exceeded
// (CodeRateLimitExceeded), Retry-After from the bucket's real delay and the
// x-ratelimit-* headers (Decision.Headers). ErrShed and ErrQueueTimeout map
// to 503 with the Retry-After that RetryAfter extracts from the error.
//
// Time comes from an injected Clock; the state machines are driven by
// explicit times in tests (reserve(now, …), observe(now, …)). Nothing here
// starts a goroutine of its own: timers are the Clock's, and idle state is
// swept inline.
package admission
