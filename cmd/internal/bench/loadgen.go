package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The open-loop load generator of `edgebench overload`. It runs as its own
// process, `edgebench loadgen --spec FILE`, so that it can be pinned to the
// load CPU with taskset like wrk; it prints a LoadResult as JSON on stdout.
//
// Open loop: every lane sends on a fixed schedule (request i at i / rate
// seconds from the phase's start) whatever the server does, so a slow
// server meets more concurrent requests instead of fewer, as it would in
// production. Latency is measured from the scheduled send time, so a
// generator that falls behind its schedule shows up in the numbers instead
// of hiding them (no coordinated omission). Each lane has its own
// connection pool and a cap on requests in flight; a request due while the
// cap is reached is not sent and is counted as skipped, never queued.

// LoadLane is one stream of requests: an API key sent at a fixed rate.
type LoadLane struct {
	Name string  `json:"name"` // "paid", "free": the tenant's lane
	Key  string  `json:"key"`  // sent as Authorization: Bearer
	Rate float64 `json:"rate"` // requests per second
}

// LoadPhase is a time during which some lanes send at their rates.
type LoadPhase struct {
	Name     string        `json:"name"`
	Duration time.Duration `json:"duration"`
	Lanes    []LoadLane    `json:"lanes"`
}

// LoadSpec is what `edgebench loadgen` runs, phase after phase.
type LoadSpec struct {
	// URL receives the POSTs (edgecache's chat completions URL).
	URL string `json:"url"`
	// AdminURL is edgecache's admin base URL; after each phase the
	// generator records /admin/upstreams and /metrics. Empty: no snapshots.
	AdminURL string `json:"admin_url,omitempty"`
	// Timeout bounds one request, body included.
	Timeout time.Duration `json:"timeout"`
	// MaxInFlight caps the requests in flight per lane.
	MaxInFlight int `json:"max_in_flight"`
	// RunID makes the prompts of this run unique (no cache can answer them).
	RunID  string      `json:"run_id"`
	Phases []LoadPhase `json:"phases"`
}

// Validate reports a spec the generator cannot run.
func (s LoadSpec) Validate() error {
	var errs []error
	if !strings.HasPrefix(s.URL, "http://") && !strings.HasPrefix(s.URL, "https://") {
		errs = append(errs, fmt.Errorf("url %q: want an http(s) URL", s.URL))
	}
	if s.Timeout <= 0 || s.MaxInFlight < 1 {
		errs = append(errs, errors.New("timeout and max_in_flight must be positive"))
	}
	if len(s.Phases) == 0 {
		errs = append(errs, errors.New("no phase"))
	}
	for _, p := range s.Phases {
		if p.Duration <= 0 || len(p.Lanes) == 0 {
			errs = append(errs, fmt.Errorf("phase %q: a positive duration and at least one lane are required", p.Name))
		}
		for _, l := range p.Lanes {
			if !(l.Rate > 0) || math.IsInf(l.Rate, 0) {
				errs = append(errs, fmt.Errorf("phase %q, lane %q: rate %v: want a positive number", p.Name, l.Name, l.Rate))
			}
		}
	}
	return errors.Join(errs...)
}

// LoadResult is the generator's output.
type LoadResult struct {
	Phases []PhaseResult `json:"phases"`
}

// PhaseResult is one phase: each lane's tally and edgecache's state after.
type PhaseResult struct {
	Name     string       `json:"name"`
	Duration string       `json:"duration"`
	Lanes    []LaneResult `json:"lanes"`
	// Snapshot is edgecache's admission state once the phase's last
	// request has ended.
	Snapshot *Snapshot `json:"snapshot,omitempty"`
}

// Lane returns the result of the named lane.
func (p PhaseResult) Lane(name string) (LaneResult, bool) {
	for _, l := range p.Lanes {
		if l.Lane == name {
			return l, true
		}
	}
	return LaneResult{}, false
}

// LaneResult is what one lane's requests got in one phase.
type LaneResult struct {
	Lane        string  `json:"lane"`
	OfferedRate float64 `json:"offered_rps"`
	// Scheduled requests were due in the phase; Sent of them went out and
	// Skipped did not (the lane's in-flight cap was reached).
	Scheduled int64 `json:"scheduled"`
	Sent      int64 `json:"sent"`
	Skipped   int64 `json:"skipped"`
	// Answers by status. Other is any status but 2xx, 429 and 503;
	// Other5xx the 5xx among them. Errors are requests without an answer
	// (connection error, client timeout, body cut).
	OK        int64 `json:"ok_2xx"`
	Status429 int64 `json:"status_429"`
	Status503 int64 `json:"status_503"`
	Other     int64 `json:"other_status"`
	Other5xx  int64 `json:"other_5xx"`
	Errors    int64 `json:"errors"`
	// ErrorKinds counts the requests without an answer by cause
	// (timeout, reset, eof, refused, other).
	ErrorKinds map[string]int64 `json:"error_kinds,omitempty"`
	// RetryAfter counts the 429 and 503 answers with a valid Retry-After
	// header; RateLimitCode the 429 answers whose error code is
	// rate_limit_exceeded.
	RetryAfter    int64 `json:"retry_after"`
	RateLimitCode int64 `json:"rate_limit_exceeded"`
	// Reasons counts the X-Edgecache-Degraded-Reason values of non-2xx
	// answers (429 answers without one count as "quota").
	Reasons map[string]int64 `json:"reasons,omitempty"`
	// OKLatency is the latency of 2xx answers (admitted requests),
	// RefusedLatency that of 429 and 503 answers.
	OKLatency      Latency `json:"ok_latency"`
	RefusedLatency Latency `json:"refused_latency"`
	// SendLag is how late the generator sent the requests after their
	// scheduled time: when it is large, the generator (not the server) was
	// short of CPU and the latencies say more about it than about the
	// server.
	SendLag Latency `json:"send_lag"`
}

// Refused is the number of 429 and 503 answers.
func (l LaneResult) Refused() int64 { return l.Status429 + l.Status503 }

// NotOK is the number of scheduled requests that did not get a 2xx answer,
// skipped ones included.
func (l LaneResult) NotOK() int64 { return l.Scheduled - l.OK }

// Success is the share of scheduled requests that got a 2xx answer; ok is
// false when none was scheduled.
func (l LaneResult) Success() (ratio float64, ok bool) {
	if l.Scheduled == 0 {
		return 0, false
	}
	return float64(l.OK) / float64(l.Scheduled), true
}

// Latency summarises latencies in milliseconds.
type Latency struct {
	N     int     `json:"n"`
	P50Ms float64 `json:"p50_ms"`
	P90Ms float64 `json:"p90_ms"`
	P99Ms float64 `json:"p99_ms"`
	MaxMs float64 `json:"max_ms"`
}

// sample is one request's outcome.
type sample struct {
	status     int           // 0: no answer
	latency    time.Duration // from the scheduled send time to the end of the body
	lag        time.Duration // from the scheduled send time to the send
	retryAfter bool          // a valid Retry-After header
	code       string        // error.code of a non-2xx JSON body
	reason     string        // X-Edgecache-Degraded-Reason
	errKind    string        // why there is no answer (status 0)
}

// errorKind classifies why a request got no answer.
func errorKind(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, syscall.ECONNRESET):
		return "reset"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return "eof"
	}
	return "other"
}

// percentileOf returns the nearest-rank p-th percentile (0 < p ≤ 1) of
// sorted, or 0 when it is empty.
func percentileOf(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// summarizeLatency sorts ds and summarises it.
func summarizeLatency(ds []time.Duration) Latency {
	if len(ds) == 0 {
		return Latency{}
	}
	slices.Sort(ds)
	return Latency{N: len(ds), P50Ms: ms(percentileOf(ds, 0.50)), P90Ms: ms(percentileOf(ds, 0.90)),
		P99Ms: ms(percentileOf(ds, 0.99)), MaxMs: ms(ds[len(ds)-1])}
}

// summarize tallies the samples of one lane; skipped requests were due but
// not sent.
func summarize(lane LoadLane, samples []sample, skipped int64) LaneResult {
	r := LaneResult{Lane: lane.Name, OfferedRate: lane.Rate, Sent: int64(len(samples)), Skipped: skipped,
		Scheduled: int64(len(samples)) + skipped}
	var okLat, refusedLat []time.Duration
	lags := make([]time.Duration, 0, len(samples))
	reason := func(s sample) {
		k := s.reason
		if k == "" && s.status == http.StatusTooManyRequests {
			k = "quota"
		}
		if k == "" {
			return
		}
		if r.Reasons == nil {
			r.Reasons = map[string]int64{}
		}
		r.Reasons[k]++
	}
	for _, s := range samples {
		lags = append(lags, s.lag)
		switch {
		case s.status == 0:
			r.Errors++
			k := s.errKind
			if k == "" {
				k = "other"
			}
			if r.ErrorKinds == nil {
				r.ErrorKinds = map[string]int64{}
			}
			r.ErrorKinds[k]++
		case s.status >= 200 && s.status < 300:
			r.OK++
			okLat = append(okLat, s.latency)
		case s.status == http.StatusTooManyRequests || s.status == http.StatusServiceUnavailable:
			if s.status == http.StatusTooManyRequests {
				r.Status429++
				if s.code == "rate_limit_exceeded" {
					r.RateLimitCode++
				}
			} else {
				r.Status503++
			}
			if s.retryAfter {
				r.RetryAfter++
			}
			refusedLat = append(refusedLat, s.latency)
			reason(s)
		default:
			r.Other++
			if s.status >= 500 {
				r.Other5xx++
			}
			reason(s)
		}
	}
	r.OKLatency, r.RefusedLatency = summarizeLatency(okLat), summarizeLatency(refusedLat)
	r.SendLag = summarizeLatency(lags)
	return r
}

// validRetryAfter reports whether v is a Retry-After value: delay seconds
// or an HTTP date.
func validRetryAfter(v string) bool {
	v = strings.TrimSpace(v)
	if v == "" {
		return false
	}
	if n, err := strconv.Atoi(v); err == nil {
		return n >= 0
	}
	_, err := http.ParseTime(v)
	return err == nil
}

// errorCode returns error.code of an OpenAI-shaped error body, or "".
func errorCode(body []byte) string {
	var e struct {
		Error struct {
			Code any `json:"code"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &e) != nil {
		return ""
	}
	if s, ok := e.Error.Code.(string); ok {
		return s
	}
	return ""
}

// scheduledCount is the number of requests a lane sends in d at rate.
func scheduledCount(rate float64, d time.Duration) int {
	return int(math.Floor(rate*d.Seconds() + 1e-9))
}

// sendOffset is when request i of a lane is due, from the phase's start.
func sendOffset(i int, rate float64) time.Duration {
	return time.Duration(float64(i) / rate * float64(time.Second))
}

// promptBody is the request of one send: a chat completion whose prompt no
// other request shares.
func promptBody(runID, phase, lane string, seq int) []byte {
	type msg struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	}
	b, _ := json.Marshal(struct {
		Model       string  `json:"model"`
		Messages    []msg   `json:"messages"`
		Temperature float64 `json:"temperature"`
	}{"sim-1", []msg{{"user", fmt.Sprintf("edgebench overload %s %s %s %d: say something", runID, phase, lane, seq)}}, 0})
	return b
}

// generator runs a LoadSpec.
type generator struct {
	spec    LoadSpec
	clients map[string]*http.Client // by lane name: one connection pool each
	admin   *http.Client
}

func newGenerator(spec LoadSpec) *generator {
	g := &generator{spec: spec, clients: map[string]*http.Client{},
		admin: &http.Client{Timeout: 5 * time.Second}}
	for _, p := range spec.Phases {
		for _, l := range p.Lanes {
			if g.clients[l.Name] != nil {
				continue
			}
			g.clients[l.Name] = &http.Client{Timeout: spec.Timeout, Transport: &http.Transport{
				MaxIdleConns:        spec.MaxInFlight,
				MaxIdleConnsPerHost: spec.MaxInFlight,
				IdleConnTimeout:     90 * time.Second,
				DisableCompression:  true,
			}}
		}
	}
	return g
}

func (g *generator) close() {
	for _, c := range g.clients {
		c.CloseIdleConnections()
	}
}

// run runs the phases in order. Each phase ends once its schedule is over
// and its last request has ended (each is bounded by the spec's Timeout).
func (g *generator) run(ctx context.Context, log io.Writer) (LoadResult, error) {
	var res LoadResult
	for _, p := range g.spec.Phases {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		fmt.Fprintf(log, "edgebench loadgen: phase %s: %s", p.Name, p.Duration)
		for _, l := range p.Lanes {
			fmt.Fprintf(log, ", %s %.0f req/s", l.Name, l.Rate)
		}
		fmt.Fprintln(log)
		pr := PhaseResult{Name: p.Name, Duration: p.Duration.String(), Lanes: make([]LaneResult, len(p.Lanes))}
		start := time.Now().Add(10 * time.Millisecond) // every lane starts together
		var wg sync.WaitGroup
		for i, l := range p.Lanes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				samples, skipped := g.runLane(ctx, p, l, start)
				pr.Lanes[i] = summarize(l, samples, skipped)
			}()
		}
		wg.Wait()
		if g.spec.AdminURL != "" {
			pr.Snapshot = takeSnapshot(ctx, g.admin, g.spec.AdminURL)
		}
		res.Phases = append(res.Phases, pr)
	}
	return res, ctx.Err()
}

// runLane sends lane's requests of phase p on schedule from start and
// returns their samples once the last one has ended, and how many were due
// but not sent.
func (g *generator) runLane(ctx context.Context, p LoadPhase, l LoadLane, start time.Time) ([]sample, int64) {
	client := g.clients[l.Name]
	n := scheduledCount(l.Rate, p.Duration)
	sem := make(chan struct{}, g.spec.MaxInFlight)
	var (
		mu      sync.Mutex
		samples = make([]sample, 0, n)
		skipped int64
		wg      sync.WaitGroup
	)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for i := 0; i < n; i++ {
		at := start.Add(sendOffset(i, l.Rate))
		if d := time.Until(at); d > 0 {
			timer.Reset(d)
			select {
			case <-ctx.Done():
			case <-timer.C:
			}
		}
		if ctx.Err() != nil {
			skipped += int64(n - i) // interrupted: the rest was never sent
			break
		}
		select {
		case sem <- struct{}{}:
		default:
			skipped++
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := g.send(ctx, client, l, promptBody(g.spec.RunID, p.Name, l.Name, i), at)
			<-sem
			mu.Lock()
			samples = append(samples, s)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return samples, skipped
}

// send POSTs body with lane's key and reads the whole answer.
func (g *generator) send(ctx context.Context, client *http.Client, l LoadLane, body []byte, at time.Time) sample {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.spec.URL, bytes.NewReader(body))
	if err != nil {
		return sample{latency: time.Since(at)}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+l.Key)
	req.Header.Set("Cache-Control", "no-store")
	lag := time.Since(at)
	resp, err := client.Do(req)
	if err != nil {
		return sample{latency: time.Since(at), lag: lag, errKind: errorKind(err)}
	}
	defer resp.Body.Close()
	s := sample{status: resp.StatusCode, reason: resp.Header.Get("X-Edgecache-Degraded-Reason"),
		retryAfter: validRetryAfter(resp.Header.Get("Retry-After")), lag: lag}
	if s.status >= 200 && s.status < 300 {
		_, err = io.Copy(io.Discard, resp.Body)
	} else {
		var b []byte
		b, err = io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		s.code = errorCode(b)
	}
	if err != nil {
		s.status, s.errKind = 0, errorKind(err) // the answer was cut: the client got none
	}
	s.latency = time.Since(at)
	return s
}

// loadgenMain is `edgebench loadgen --spec FILE`.
func loadgenMain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("edgebench loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	specPath := fs.String("spec", "", "JSON load spec written by edgebench overload (required)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: edgebench loadgen --spec FILE\n\n"+
			"The open-loop load generator of edgebench overload (which starts it pinned\n"+
			"to the load CPU); prints the per-lane results as JSON.\n\nFlags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if *specPath == "" || fs.NArg() > 0 {
		fs.Usage()
		return errors.New("loadgen: --spec FILE is required, and nothing else")
	}
	data, err := os.ReadFile(*specPath)
	if err != nil {
		return err
	}
	var spec LoadSpec
	if err := json.Unmarshal(data, &spec); err != nil {
		return fmt.Errorf("loadgen: %s: %w", *specPath, err)
	}
	if err := spec.Validate(); err != nil {
		return fmt.Errorf("loadgen: %s: %w", *specPath, err)
	}
	g := newGenerator(spec)
	defer g.close()
	res, err := g.run(ctx, stderr)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(res)
}
