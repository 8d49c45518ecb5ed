package embed

import (
	"context"
	"runtime"
	"sync"
)

// Batcher lets concurrent callers share calls to an embedder that is faster
// per text in batches (the local model multiplies one matrix per layer for
// the whole batch). It never waits to fill a batch: a worker takes whatever
// is queued when it becomes free, so a lone request costs no extra latency
// and batches form only under load.
type Batcher struct {
	inner    Embedder
	maxBatch int
	queue    chan *batchReq
	stop     chan struct{}
	wg       sync.WaitGroup
	once     sync.Once
}

type batchReq struct {
	ctx  context.Context
	text string
	done chan batchRes // buffered 1
}

type batchRes struct {
	v   Vector
	err error
}

var _ Embedder = (*Batcher)(nil)

// NewBatcher starts workers goroutines (0 → 1) calling e with up to
// maxBatch texts (0 → 16). Close stops them.
func NewBatcher(e Embedder, workers, maxBatch int) *Batcher {
	if workers <= 0 {
		workers = 1
	}
	if maxBatch <= 0 {
		maxBatch = 16
	}
	b := &Batcher{inner: e, maxBatch: maxBatch, queue: make(chan *batchReq, 1024), stop: make(chan struct{})}
	for range workers {
		b.wg.Add(1)
		go b.work()
	}
	return b
}

// Name implements Embedder.
func (b *Batcher) Name() string { return b.inner.Name() }

// Dim implements Embedder.
func (b *Batcher) Dim() int { return b.inner.Dim() }

// Coverage implements Coverer for the wrapped embedder.
func (b *Batcher) Coverage(text string) float64 { return CoverageOf(b.inner, text) }

// Space implements Spacer for the wrapped embedder.
func (b *Batcher) Space(text string) (string, float64) { return SpaceOf(b.inner, text) }

// Embed implements Embedder. Each text joins the shared queue; the call
// returns when all are embedded or ctx is done.
func (b *Batcher) Embed(ctx context.Context, texts []string) ([]Vector, error) {
	reqs := make([]*batchReq, len(texts))
	for i, t := range texts {
		r := &batchReq{ctx: ctx, text: t, done: make(chan batchRes, 1)}
		select {
		case b.queue <- r:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-b.stop:
			return nil, ErrUnavailable
		}
		reqs[i] = r
	}
	out := make([]Vector, len(texts))
	for i, r := range reqs {
		select {
		case res := <-r.done:
			if res.err != nil {
				return nil, res.err
			}
			out[i] = res.v
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-b.stop:
			return nil, ErrUnavailable
		}
	}
	return out, nil
}

func (b *Batcher) work() {
	defer b.wg.Done()
	batch := make([]*batchReq, 0, b.maxBatch)
	for {
		select {
		case r := <-b.queue:
			batch = append(batch[:0], r)
		case <-b.stop:
			return
		}
	fill:
		for len(batch) < b.maxBatch {
			select {
			case r := <-b.queue:
				batch = append(batch, r)
			default:
				break fill
			}
		}
		b.run(batch)
		// Yield, so that requests the network poller readied meanwhile
		// (they wait in the scheduler's global queue) run before the next
		// batch: the callers this batch woke run first, from the local
		// queue, and with every core busy the worker would otherwise take
		// the next batch from them at once, leaving new connections to the
		// global queue's every-61st turn (edgebench run, row (j) @128 on one
		// core: p99 1.19–1.33 s at p50 17–28 ms without this).
		runtime.Gosched()
	}
}

// run embeds one batch, skipping requests whose caller has gone.
func (b *Batcher) run(batch []*batchReq) {
	live := batch[:0:0]
	texts := make([]string, 0, len(batch))
	for _, r := range batch {
		if r.ctx.Err() != nil {
			r.done <- batchRes{err: r.ctx.Err()}
			continue
		}
		live = append(live, r)
		texts = append(texts, r.text)
	}
	if len(live) == 0 {
		return
	}
	vs, err := safeEmbed(b.inner, texts)
	for i, r := range live {
		if err != nil {
			r.done <- batchRes{err: err}
		} else {
			r.done <- batchRes{v: vs[i]}
		}
	}
}

// safeEmbed runs one batch under its own context: requests in a batch have
// different deadlines, and one caller leaving must not fail the others.
func safeEmbed(e Embedder, texts []string) (vs []Vector, err error) {
	defer func() {
		if v := recover(); v != nil {
			vs, err = nil, ErrUnavailable
		}
	}()
	vs, err = e.Embed(context.Background(), texts)
	if err == nil && len(vs) != len(texts) {
		err = ErrUnavailable
	}
	return vs, err
}

// Close stops the workers; queued requests fail with ErrUnavailable.
func (b *Batcher) Close() {
	b.once.Do(func() { close(b.stop) })
	b.wg.Wait()
}
