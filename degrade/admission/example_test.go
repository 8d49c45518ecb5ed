package admission_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/edgecache/edgecache/degrade/admission"
)

// stopped is a Clock frozen at one instant, so the example's output is
// stable. Any degrade.Clock fits too.
type stopped struct{ t time.Time }

func (s stopped) Now() time.Time { return s.t }

// The ladder in a request handler: self-protection, own quotas, then the
// upstream's concurrency limit; settle the quota with the real usage.
func Example() {
	clock := stopped{time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	protect, _ := admission.NewProtector(admission.ProtectConfig{MaxInFlight: 1000})
	quotas, _ := admission.NewBuckets(admission.BucketsConfig{
		Clock: clock,
		Defaults: admission.Rules{
			Tenant: admission.Limits{RequestsPerSecond: 1, RequestBurst: 2, TokensPerMinute: 60_000},
		},
	})
	upstream, _ := admission.NewConcurrency(admission.ConcurrencyConfig{Name: "llmsim/gpt-4o", Clock: clock})

	handle := func(lane admission.Lane, tenant string, estimated int64) (int, http.Header) {
		h := http.Header{}
		if err := protect.Enter(lane); err != nil {
			ra, _ := admission.RetryAfter(err)
			h.Set("Retry-After", fmt.Sprint(admission.RetryAfterSeconds(ra)))
			return http.StatusServiceUnavailable, h
		}
		defer protect.Leave()

		subjects := []admission.Subject{{Dim: admission.DimTenant, ID: tenant}}
		d := quotas.Reserve(estimated, subjects...)
		d.Headers(h.Set)
		if !d.Allowed { // 429, code rate_limit_exceeded, d.Message() as the message
			return http.StatusTooManyRequests, h
		}

		release, err := upstream.Acquire(context.Background(), lane, time.Time{})
		if errors.Is(err, admission.ErrShed) || errors.Is(err, admission.ErrQueueTimeout) {
			ra, _ := admission.RetryAfter(err)
			h.Set("Retry-After", fmt.Sprint(admission.RetryAfterSeconds(ra)))
			return http.StatusServiceUnavailable, h
		}
		// … call the upstream, measure the time to first token …
		release(180*time.Millisecond, true)
		quotas.Settle(estimated, 700, subjects...) // the answer used 700 tokens
		return http.StatusOK, h
	}

	for range 3 {
		status, h := handle(admission.Paid, "acme", 1200)
		fmt.Printf("%d requests=%s tokens=%s retry-after=%q\n", status,
			h.Get("x-ratelimit-remaining-requests"), h.Get("x-ratelimit-remaining-tokens"), h.Get("Retry-After"))
	}
	// Output:
	// 200 requests=1 tokens=58800 retry-after=""
	// 200 requests=0 tokens=58100 retry-after=""
	// 429 requests=0 tokens=58600 retry-after="1"
}
