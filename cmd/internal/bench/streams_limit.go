package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

// The adaptive concurrency limit during `edgebench streams`: how fast slow
// start finds llmsim's capacity for the burst, and — with --degrade-after —
// how fast the limit clamps down when llmsim's time to first token rises
// mid-run, read from /admin/upstreams every limitSampleEvery.

// limitSampleEvery is the period of the limit timeline.
const limitSampleEvery = 250 * time.Millisecond

// LimitPoint is one reading of the primary target's limiter.
type LimitPoint struct {
	T         float64 `json:"t_s"` // seconds since the burst through edgecache started
	Limit     int     `json:"limit"`
	InFlight  int     `json:"in_flight"`
	Queued    int     `json:"queued"`
	TTFTMs    float64 `json:"ttft_p90_ms"` // the last closed window's
	SlowStart bool    `json:"slow_start"`
}

// limitSampler reads the limiter until stopped.
type limitSampler struct {
	mu     sync.Mutex
	points []LimitPoint
	errs   int
	stop   chan struct{}
	done   chan struct{}
}

// startLimitSampler reads GET adminURL/admin/upstreams every
// limitSampleEvery from now (t = 0) until Stop.
func startLimitSampler(ctx context.Context, client *http.Client, adminURL string) *limitSampler {
	s := &limitSampler{stop: make(chan struct{}), done: make(chan struct{})}
	start := time.Now()
	go func() {
		defer close(s.done)
		t := time.NewTicker(limitSampleEvery)
		defer t.Stop()
		for {
			ls, err := readLimiter(ctx, client, adminURL)
			s.mu.Lock()
			if err != nil {
				s.errs++
			} else {
				s.points = append(s.points, LimitPoint{T: time.Since(start).Seconds(), Limit: ls.Limit,
					InFlight: ls.InFlight, Queued: ls.Queued, TTFTMs: ls.TTFTMs, SlowStart: ls.SlowStart})
			}
			s.mu.Unlock()
			select {
			case <-s.stop:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// Stop ends the sampling and returns the timeline and the failed reads.
func (s *limitSampler) Stop() ([]LimitPoint, int) {
	close(s.stop)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.points, s.errs
}

func readLimiter(ctx context.Context, client *http.Client, adminURL string) (*LimiterStats, error) {
	b, err := getBody(ctx, client, strings.TrimSuffix(adminURL, "/")+"/admin/upstreams")
	if err != nil {
		return nil, err
	}
	return parseUpstreams(b)
}

// setSimTTFT changes a running llmsim's time to first token.
func setSimTTFT(ctx context.Context, client *http.Client, simAddr string, ttft time.Duration) error {
	body := fmt.Sprintf(`{"ttft_ms":%d}`, ttft.Milliseconds())
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, "http://"+simAddr+"/_sim/config", strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("llmsim PUT /_sim/config: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("llmsim PUT /_sim/config: %s", resp.Status)
	}
	return nil
}

// LimitSummary is what the timeline says, in a few figures.
type LimitSummary struct {
	Start     int     `json:"start"`
	Peak      int     `json:"peak"`
	PeakAtS   float64 `json:"peak_at_s"`
	AtBurstS  float64 `json:"admitted_burst_at_s"` // first reading with nothing queued after the peak of the queue (0: never)
	MaxQueued int     `json:"max_queued"`
	// With --degrade-after: the limit at the rise and 2, 5 and 10 s later,
	// and when slow start ended (seconds after the rise, -1: it did not).
	BeforeDegrade   int     `json:"before_degrade,omitempty"`
	After2s         int     `json:"after_2s,omitempty"`
	After5s         int     `json:"after_5s,omitempty"`
	After10s        int     `json:"after_10s,omitempty"`
	SlowStartEndedS float64 `json:"slow_start_ended_after_s,omitempty"`
}

// summarizeLimit reads the timeline; degradeAt ≤ 0 means no rise.
func summarizeLimit(pts []LimitPoint, degradeAt float64) LimitSummary {
	var s LimitSummary
	if len(pts) == 0 {
		return s
	}
	s.Start = pts[0].Limit
	queuePeak := -1
	for i, p := range pts {
		if degradeAt > 0 && p.T >= degradeAt {
			break
		}
		if p.Limit > s.Peak {
			s.Peak, s.PeakAtS = p.Limit, p.T
		}
		if p.Queued > s.MaxQueued {
			s.MaxQueued, queuePeak = p.Queued, i
		}
	}
	if queuePeak >= 0 {
		for _, p := range pts[queuePeak:] {
			if p.Queued == 0 {
				s.AtBurstS = p.T
				break
			}
		}
	}
	if degradeAt <= 0 {
		return s
	}
	at := func(t float64) int { // the last reading at or before t
		v := 0
		for _, p := range pts {
			if p.T > t {
				break
			}
			v = p.Limit
		}
		return v
	}
	s.BeforeDegrade = at(degradeAt)
	s.After2s, s.After5s, s.After10s = at(degradeAt+2), at(degradeAt+5), at(degradeAt+10)
	s.SlowStartEndedS = -1
	wasSlow := false
	for _, p := range pts {
		if p.T < degradeAt {
			wasSlow = p.SlowStart
			continue
		}
		if wasSlow && !p.SlowStart {
			s.SlowStartEndedS = p.T - degradeAt
			break
		}
		wasSlow = p.SlowStart
	}
	return s
}

// writeLimitTimeline prints the timeline as a Markdown table: a row when
// the limit moved by 5 % or more, slow start ended, the queue emptied or
// filled, or every 2 s otherwise.
func writeLimitTimeline(b *strings.Builder, pts []LimitPoint, degradeAt float64) {
	if len(pts) == 0 {
		return
	}
	b.WriteString("\n| t | limit | in flight | queued | TTFT p90 (window) | regime |\n|--:|--:|--:|--:|--:|---|\n")
	var last LimitPoint
	marked := degradeAt <= 0
	for i, p := range pts {
		if !marked && p.T >= degradeAt {
			marked = true
			fmt.Fprintf(b, "| %.2f s | | | | | **llmsim TTFT raised** |\n", degradeAt)
		}
		moved := float64(p.Limit) >= 1.05*float64(last.Limit) || float64(p.Limit) <= 0.95*float64(last.Limit)
		show := i == 0 || i == len(pts)-1 || moved || p.SlowStart != last.SlowStart ||
			(p.Queued == 0) != (last.Queued == 0) || p.T-last.T >= 2
		if !show {
			continue
		}
		regime := "gradient"
		if p.SlowStart {
			regime = "slow start"
		}
		fmt.Fprintf(b, "| %.2f s | %d | %d | %d | %.0f ms | %s |\n", p.T, p.Limit, p.InFlight, p.Queued, p.TTFTMs, regime)
		last = p
	}
}

// RecoverySummary is what the limit did after llmsim's TTFT went back to
// normal (--recover-after): its value then, its highest after, and when
// slow start began again (seconds after the recovery; -1: it did not).
type RecoverySummary struct {
	AtRecover  int
	Peak       int
	PeakAfterS float64
	SlowStartS float64
}

// summarizeRecovery reads the timeline from at (seconds on its clock) on.
func summarizeRecovery(points []LimitPoint, at float64) RecoverySummary {
	rs := RecoverySummary{SlowStartS: -1}
	seen := false
	for _, p := range points {
		if p.T < at {
			rs.AtRecover = p.Limit
			continue
		}
		if !seen {
			seen = true
			if rs.AtRecover == 0 {
				rs.AtRecover = p.Limit
			}
		}
		if p.Limit > rs.Peak {
			rs.Peak, rs.PeakAfterS = p.Limit, p.T-at
		}
		if p.SlowStart && rs.SlowStartS < 0 {
			rs.SlowStartS = p.T - at
		}
	}
	return rs
}
