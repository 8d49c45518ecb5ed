package admission

import (
	"errors"
	"fmt"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of ProtectConfig.
const (
	DefaultSampleInterval    = 100 * time.Millisecond
	DefaultProtectRetryAfter = time.Second
)

// DefaultThresholds are the fractions of MaxInFlight and MaxHeapBytes above
// which each lane is shed, indexed by Lane: batch first, enterprise last.
var DefaultThresholds = [NumLanes]float64{Batch: 0.80, Free: 0.90, Paid: 0.95, Enterprise: 1.0}

// heapMetric is the live-and-not-yet-swept heap: what a memory limit feels.
const heapMetric = "/memory/classes/heap/objects:bytes"

// ProtectConfig configures a Protector. With MaxInFlight and MaxHeapBytes
// both zero it admits everything.
type ProtectConfig struct {
	// MaxInFlight is the number of requests the instance holds at once
	// (all of them, cached or not). If zero, in-flight is not limited.
	MaxInFlight int
	// MaxHeapBytes is the heap size the instance must stay under, e.g. 80 %
	// of the container's memory limit. If zero, memory is not watched.
	MaxHeapBytes uint64
	// Thresholds are the fractions of MaxInFlight and MaxHeapBytes above
	// which a lane is shed, indexed by Lane. If all zero, DefaultThresholds
	// (batch 0.80, free 0.90, paid 0.95, enterprise 1.0).
	Thresholds [NumLanes]float64
	// SampleInterval is how often the heap size is read (inline, by one
	// request). If zero, 100ms.
	SampleInterval time.Duration
	// RetryAfter is the delay suggested to shed requests. If zero, 1s.
	RetryAfter time.Duration
	// Shadow counts would-be sheds without shedding.
	Shadow bool
	// HeapBytes reads the heap size; nil reads runtime/metrics
	// (/memory/classes/heap/objects:bytes).
	HeapBytes func() uint64
	// Clock is the time source; nil means the real time.
	Clock Clock
}

// Validate reports a configuration NewProtector would reject.
func (c ProtectConfig) Validate() error {
	var errs []error
	if c.MaxInFlight < 0 || c.SampleInterval < 0 || c.RetryAfter < 0 {
		errs = append(errs, errors.New("negative MaxInFlight, SampleInterval or RetryAfter"))
	}
	for l, t := range c.Thresholds {
		if t < 0 || t > 1 {
			errs = append(errs, fmt.Errorf("lane %s threshold %v: want [0,1]", Lane(l), t))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("admission: invalid protect config: %w", err)
	}
	return nil
}

// Protector is rung 1: it sheds new requests when the instance holds too
// many in flight or its heap is too large, lowest lane first. A nil
// *Protector admits everything. It is safe for concurrent use.
type Protector struct {
	maxInFlight float64
	maxHeap     float64
	thresholds  [NumLanes]float64
	interval    int64
	retryAfter  time.Duration
	shadow      bool
	heapFn      func() uint64
	clock       Clock

	inflight   atomic.Int64
	heap       atomic.Uint64
	nextSample atomic.Int64
	sampleMu   sync.Mutex
	sample     [1]metrics.Sample // guarded by sampleMu

	shed, shadowShed [NumLanes]atomic.Uint64
}

// NewProtector returns a Protector configured by cfg.
func NewProtector(cfg ProtectConfig) (*Protector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Thresholds == ([NumLanes]float64{}) {
		cfg.Thresholds = DefaultThresholds
	}
	if cfg.SampleInterval == 0 {
		cfg.SampleInterval = DefaultSampleInterval
	}
	if cfg.RetryAfter == 0 {
		cfg.RetryAfter = DefaultProtectRetryAfter
	}
	p := &Protector{
		maxInFlight: float64(cfg.MaxInFlight),
		maxHeap:     float64(cfg.MaxHeapBytes),
		thresholds:  cfg.Thresholds,
		interval:    int64(cfg.SampleInterval),
		retryAfter:  cfg.RetryAfter,
		shadow:      cfg.Shadow,
		heapFn:      cfg.HeapBytes,
		clock:       clockOr(cfg.Clock),
	}
	p.sample[0].Name = heapMetric
	return p, nil
}

// Enter admits a request of lane, or sheds it with a *RejectError
// (ErrShed, ReasonInFlight or ReasonMemory). Every nil return must be
// paired with one Leave.
func (p *Protector) Enter(lane Lane) error {
	if p == nil {
		return nil
	}
	if !lane.Valid() {
		lane = Batch
	}
	n := p.inflight.Add(1)
	reason := ""
	t := p.thresholds[lane]
	switch {
	case p.maxInFlight > 0 && float64(n) > t*p.maxInFlight:
		reason = ReasonInFlight
	case p.maxHeap > 0 && float64(p.heapBytes()) > t*p.maxHeap:
		reason = ReasonMemory
	default:
		return nil
	}
	if p.shadow {
		p.shadowShed[lane].Add(1)
		return nil
	}
	p.inflight.Add(-1)
	p.shed[lane].Add(1)
	return &RejectError{Err: ErrShed, Reason: reason, Lane: lane, RetryAfter: p.retryAfter}
}

// Leave ends a request Enter admitted.
func (p *Protector) Leave() {
	if p != nil {
		p.inflight.Add(-1)
	}
}

// heapBytes returns the heap size, read at most once per interval by one
// caller; the others use the last reading.
func (p *Protector) heapBytes() uint64 {
	now := p.clock.Now().UnixNano()
	if now >= p.nextSample.Load() && p.sampleMu.TryLock() {
		p.nextSample.Store(now + p.interval)
		var h uint64
		if p.heapFn != nil {
			h = p.heapFn()
		} else {
			metrics.Read(p.sample[:])
			if p.sample[0].Value.Kind() == metrics.KindUint64 {
				h = p.sample[0].Value.Uint64()
			}
		}
		p.heap.Store(h)
		p.sampleMu.Unlock()
	}
	return p.heap.Load()
}

// ProtectStats is a snapshot of a Protector.
type ProtectStats struct {
	InFlight     int
	MaxInFlight  int
	HeapBytes    uint64 // last reading (0 if memory is not watched)
	MaxHeapBytes uint64
	Shed         [NumLanes]uint64 // by lane
	ShadowShed   [NumLanes]uint64 // by lane, shadow mode
}

// Stats returns a snapshot; a nil Protector has zero stats.
func (p *Protector) Stats() ProtectStats {
	if p == nil {
		return ProtectStats{}
	}
	s := ProtectStats{
		InFlight:     int(p.inflight.Load()),
		MaxInFlight:  int(p.maxInFlight),
		HeapBytes:    p.heap.Load(),
		MaxHeapBytes: uint64(p.maxHeap),
	}
	for l := range s.Shed {
		s.Shed[l] = p.shed[l].Load()
		s.ShadowShed[l] = p.shadowShed[l].Load()
	}
	return s
}
