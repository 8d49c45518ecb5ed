package semantic

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/qdrant/go-client/qdrant"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// QdrantConfig configures NewQdrant. Zero values mean the documented
// defaults; NewQdrant copies the config and never modifies it.
type QdrantConfig struct {
	// Addr is the host:port of Qdrant's gRPC API. A missing port means
	// 6334; empty means "localhost:6334".
	Addr string

	// APIKey is sent as the api-key header when set. Use it with UseTLS:
	// without TLS the key crosses the network in clear text.
	APIKey string

	// UseTLS dials with TLS (system roots).
	UseTLS bool

	// CollectionPrefix starts every collection name. If empty,
	// defaults to "edgecache_".
	CollectionPrefix string

	// Model names the embedder whose vectors are stored; with Dim it
	// chooses the collection, so two embedders never share one. Required.
	Model string

	// Dim is the vector dimension. Required.
	Dim int

	// Timeout bounds every call to Qdrant (on top of the caller's
	// context). If zero, defaults to 2s.
	Timeout time.Duration

	// SweepInterval is how often points past expires_at are deleted.
	// Searches filter them out regardless. If zero, defaults to 1m; a
	// negative value disables the sweeper (another instance sweeps).
	SweepInterval time.Duration

	// WaitForWrites makes Upsert and Delete wait until Qdrant has applied
	// the change. The default (false) returns once Qdrant has accepted
	// it, which is what the request path wants; tests and bulk loaders
	// that read their own writes set it.
	WaitForWrites bool

	// Now is the clock for expiry. If nil, time.Now.
	Now func() time.Time

	// Logger receives start-up and sweeper events. If nil, slog.Default().
	Logger *slog.Logger
}

func (c QdrantConfig) withDefaults() QdrantConfig {
	switch {
	case c.Addr == "":
		c.Addr = "localhost:6334"
	case !hasPort(c.Addr):
		c.Addr = net.JoinHostPort(strings.Trim(c.Addr, "[]"), "6334")
	}
	if c.CollectionPrefix == "" {
		c.CollectionPrefix = "edgecache_"
	}
	if c.Timeout == 0 {
		c.Timeout = 2 * time.Second
	}
	if c.SweepInterval == 0 {
		c.SweepInterval = time.Minute
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

func hasPort(addr string) bool {
	_, port, err := net.SplitHostPort(addr)
	return err == nil && port != ""
}

// Validate reports the first invalid field after defaults are applied.
func (c QdrantConfig) Validate() error {
	c = c.withDefaults()
	switch {
	case c.Model == "":
		return errors.New("semantic: QdrantConfig.Model is required")
	case c.Dim <= 0:
		return fmt.Errorf("semantic: QdrantConfig.Dim = %d, must be positive", c.Dim)
	case c.Timeout < 0:
		return fmt.Errorf("semantic: QdrantConfig.Timeout = %s, must not be negative", c.Timeout)
	}
	if _, port, err := net.SplitHostPort(c.Addr); err != nil {
		return fmt.Errorf("semantic: QdrantConfig.Addr %q: %w", c.Addr, err)
	} else if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 {
		return fmt.Errorf("semantic: QdrantConfig.Addr %q: bad port", c.Addr)
	}
	return nil
}

// Payload field names. Every field a search or sweep filters on has a
// payload index, created by NewQdrant.
const (
	fieldKey       = "key"
	fieldNamespace = "namespace"
	fieldRoute     = "route"
	fieldModel     = "model"
	fieldContext   = "context"
	fieldText      = "text"
	fieldExpiresAt = "expires_at" // unix milliseconds; MaxInt64 for never
)

// Qdrant is the Index backed by a Qdrant collection over gRPC. Points live
// in one collection per embedding model and dimension; a point's ID is a
// UUID derived from its exact key, so upserts are idempotent and Delete
// needs no lookup. Qdrant has no TTL: expires_at is stored in the payload,
// filtered on every search, and an owned sweeper deletes expired points.
type Qdrant struct {
	cfg        QdrantConfig
	log        *slog.Logger
	client     *qdrant.Client
	collection string

	stopSweep context.CancelFunc
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error
}

var _ Index = (*Qdrant)(nil)
var _ Purger = (*Qdrant)(nil)

// NewQdrant connects to Qdrant, creates the collection if it is missing
// (cosine distance, cfg.Dim), checks an existing one has that dimension
// and distance, creates a payload index on every filtered field, and
// starts the sweeper. Any failure is returned; one caused by an
// unreachable server wraps ErrUnavailable.
func NewQdrant(ctx context.Context, cfg QdrantConfig) (*Qdrant, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	host, portStr, _ := net.SplitHostPort(cfg.Addr)
	port, _ := strconv.Atoi(portStr)
	client, err := qdrant.NewClient(&qdrant.Config{
		Host:   host,
		Port:   port,
		APIKey: cfg.APIKey,
		UseTLS: cfg.UseTLS,
		// The client's own check logs through slog.Default with a
		// one-minute timeout; we check health under our timeout below.
		SkipCompatibilityCheck: true,
	})
	if err != nil {
		return nil, fmt.Errorf("qdrant client for %s: %w", cfg.Addr, err)
	}
	q := &Qdrant{
		cfg:        cfg,
		log:        cfg.Logger,
		client:     client,
		collection: CollectionName(cfg.CollectionPrefix, cfg.Model, cfg.Dim),
		done:       make(chan struct{}),
	}
	if err := q.setup(ctx); err != nil {
		client.Close()
		return nil, err
	}
	sweepCtx, stop := context.WithCancel(context.Background())
	q.stopSweep = stop
	go q.background(sweepCtx)
	return q, nil
}

// Collection returns the name of the collection in use.
func (q *Qdrant) Collection() string { return q.collection }

func (q *Qdrant) setup(ctx context.Context) error {
	cctx, cancel := q.callCtx(ctx)
	health, err := q.client.GetQdrantClient().HealthCheck(cctx, &qdrant.HealthCheckRequest{})
	cancel()
	if err != nil {
		return q.fail(ctx, "health check", err)
	}

	cctx, cancel = q.callCtx(ctx)
	exists, err := q.client.CollectionExists(cctx, q.collection)
	cancel()
	if err != nil {
		return q.fail(ctx, "collection exists", err)
	}
	if exists {
		if err := q.checkCollection(ctx); err != nil {
			return err
		}
	} else {
		cctx, cancel = q.callCtx(ctx)
		err = q.client.CreateCollection(cctx, &qdrant.CreateCollection{
			CollectionName: q.collection,
			VectorsConfig: qdrant.NewVectorsConfig(&qdrant.VectorParams{
				Size:     uint64(q.cfg.Dim),
				Distance: qdrant.Distance_Cosine,
			}),
		})
		cancel()
		// Another instance may have created it since we looked.
		if err != nil && status.Code(err) != codes.AlreadyExists {
			return q.fail(ctx, "create collection", err)
		}
	}

	for _, ix := range payloadIndexes {
		cctx, cancel = q.callCtx(ctx)
		_, err := q.client.CreateFieldIndex(cctx, &qdrant.CreateFieldIndexCollection{
			CollectionName: q.collection,
			FieldName:      ix.field,
			FieldType:      ix.typ.Enum(),
			Wait:           qdrant.PtrOf(true),
		})
		cancel()
		if err != nil {
			return q.fail(ctx, "create payload index "+ix.field, err)
		}
	}
	q.log.Info("semantic: qdrant ready", "addr", q.cfg.Addr, "server", health.GetVersion(),
		"collection", q.collection, "created", !exists)
	return nil
}

// payloadIndexes lists every field that filters use, with its index type.
var payloadIndexes = []struct {
	field string
	typ   qdrant.FieldType
}{
	{fieldNamespace, qdrant.FieldType_FieldTypeKeyword},
	{fieldRoute, qdrant.FieldType_FieldTypeKeyword},
	{fieldModel, qdrant.FieldType_FieldTypeKeyword},
	{fieldContext, qdrant.FieldType_FieldTypeKeyword},
	{fieldKey, qdrant.FieldType_FieldTypeKeyword},
	{fieldExpiresAt, qdrant.FieldType_FieldTypeInteger},
}

// checkCollection verifies an existing collection stores single unnamed
// cosine vectors of our dimension.
func (q *Qdrant) checkCollection(ctx context.Context) error {
	cctx, cancel := q.callCtx(ctx)
	info, err := q.client.GetCollectionInfo(cctx, q.collection)
	cancel()
	if err != nil {
		return q.fail(ctx, "get collection", err)
	}
	params := info.GetConfig().GetParams().GetVectorsConfig().GetParams()
	if params == nil {
		return fmt.Errorf("qdrant collection %s does not hold a single unnamed vector", q.collection)
	}
	if int(params.GetSize()) != q.cfg.Dim || params.GetDistance() != qdrant.Distance_Cosine {
		return fmt.Errorf("qdrant collection %s holds %d-d %s vectors, want %d-d Cosine",
			q.collection, params.GetSize(), params.GetDistance(), q.cfg.Dim)
	}
	return nil
}

// CollectionName is the collection for an embedding model and dimension:
// prefix + model + "_" + dim, with every character outside [a-z0-9_-]
// (after lowercasing) replaced by "_". When that changes the model name, a
// short hash of the original is appended so that two models differing
// only in such characters never share a collection.
func CollectionName(prefix, model string, dim int) string {
	var b strings.Builder
	changed := false
	for _, r := range strings.ToLower(model) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '_', r == '-':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
			changed = true
		}
	}
	clean := b.String()
	if changed || clean != model {
		sum := sha256.Sum256([]byte(model))
		clean += "_" + hex.EncodeToString(sum[:4])
	}
	if len(clean) > 200 {
		clean = clean[:200]
	}
	return prefix + clean + "_" + strconv.Itoa(dim)
}

// PointID is the Qdrant point ID for an exact cache key: the first 16
// bytes of SHA-256(key) as an RFC 9562 version-8 (custom) UUID, in the
// canonical lowercase form Qdrant returns.
func PointID(key string) string {
	sum := sha256.Sum256([]byte(key))
	u := sum[:16]
	u[6] = u[6]&0x0f | 0x80 // version 8
	u[8] = u[8]&0x3f | 0x80 // RFC 9562 variant
	var buf [36]byte
	hex.Encode(buf[0:8], u[0:4])
	buf[8] = '-'
	hex.Encode(buf[9:13], u[4:6])
	buf[13] = '-'
	hex.Encode(buf[14:18], u[6:8])
	buf[18] = '-'
	hex.Encode(buf[19:23], u[8:10])
	buf[23] = '-'
	hex.Encode(buf[24:36], u[10:16])
	return string(buf[:])
}

func (q *Qdrant) callCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, q.cfg.Timeout)
}

// fail classifies err from operation op. A server that cannot answer now
// (down, overloaded, too slow, collection gone) wraps ErrUnavailable; the
// caller's own cancellation wraps the context's error; anything else (a
// rejected request) is returned as is, wrapped with op.
func (q *Qdrant) fail(ctx context.Context, op string, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("qdrant %s: %w (%v)", op, cerr, err)
	}
	var exhausted *qdrant.QdrantResourceExhaustedError
	if errors.As(err, &exhausted) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("qdrant %s: %w: %w", op, ErrUnavailable, err)
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted,
		codes.Aborted, codes.NotFound, codes.Canceled:
		return fmt.Errorf("qdrant %s: %w: %w", op, ErrUnavailable, err)
	}
	return fmt.Errorf("qdrant %s: %w", op, err)
}

func expMillis(t time.Time) int64 {
	if t.IsZero() {
		return math.MaxInt64
	}
	return t.UnixMilli()
}

func (q *Qdrant) nowMillis() int64 { return q.cfg.Now().UnixMilli() }

// Upsert writes p under its key's point ID, replacing any earlier point
// with that key (whatever its filter).
func (q *Qdrant) Upsert(ctx context.Context, p Point) error {
	if p.Key == "" {
		return errors.New("semantic: upsert with an empty key")
	}
	if len(p.Vector) != q.cfg.Dim {
		return fmt.Errorf("semantic: vector has %d dimensions, index has %d", len(p.Vector), q.cfg.Dim)
	}
	exp := expMillis(p.ExpiresAt)
	if exp <= q.nowMillis() {
		return q.Delete(ctx, p.Key)
	}
	cctx, cancel := q.callCtx(ctx)
	defer cancel()
	_, err := q.client.Upsert(cctx, &qdrant.UpsertPoints{
		CollectionName: q.collection,
		Wait:           qdrant.PtrOf(q.cfg.WaitForWrites),
		Points: []*qdrant.PointStruct{{
			Id:      qdrant.NewIDUUID(PointID(p.Key)),
			Vectors: qdrant.NewVectorsDense(p.Vector),
			Payload: map[string]*qdrant.Value{
				fieldKey:       qdrant.NewValueString(p.Key),
				fieldNamespace: qdrant.NewValueString(p.Filter.Namespace),
				fieldRoute:     qdrant.NewValueString(p.Filter.Route),
				fieldModel:     qdrant.NewValueString(p.Filter.Model),
				fieldContext:   qdrant.NewValueString(p.Filter.Context),
				fieldText:      qdrant.NewValueString(p.Text),
				fieldExpiresAt: qdrant.NewValueInt(exp),
			},
		}},
	})
	if err != nil {
		return q.fail(ctx, "upsert", err)
	}
	return nil
}

// Search queries the collection with a filter that must match all four
// Filter fields and expires_at > now, a score threshold and a limit.
func (q *Qdrant) Search(ctx context.Context, v []float32, f Filter, k int, minScore float32) ([]Match, error) {
	if len(v) != q.cfg.Dim {
		return nil, fmt.Errorf("semantic: vector has %d dimensions, index has %d", len(v), q.cfg.Dim)
	}
	if k <= 0 {
		return nil, nil
	}
	now := q.nowMillis()
	cctx, cancel := q.callCtx(ctx)
	defer cancel()
	res, err := q.client.Query(cctx, &qdrant.QueryPoints{
		CollectionName: q.collection,
		Query:          qdrant.NewQueryDense(v),
		Filter: &qdrant.Filter{Must: []*qdrant.Condition{
			qdrant.NewMatchKeyword(fieldNamespace, f.Namespace),
			qdrant.NewMatchKeyword(fieldRoute, f.Route),
			qdrant.NewMatchKeyword(fieldModel, f.Model),
			qdrant.NewMatchKeyword(fieldContext, f.Context),
			qdrant.NewRange(fieldExpiresAt, &qdrant.Range{Gt: qdrant.PtrOf(float64(now))}),
		}},
		ScoreThreshold: qdrant.PtrOf(minScore),
		Limit:          qdrant.PtrOf(uint64(k)),
		WithPayload:    qdrant.NewWithPayload(true),
		WithVectors:    qdrant.NewWithVectors(true),
	})
	if err != nil {
		return nil, q.fail(ctx, "query", err)
	}
	out := make([]Match, 0, len(res))
	for _, sp := range res {
		m, ok := matchFrom(sp, now)
		if !ok || m.Filter != f || m.Score < minScore {
			continue // defensive: the server already filtered
		}
		out = append(out, m)
		if len(out) == k {
			break
		}
	}
	return out, nil
}

func matchFrom(sp *qdrant.ScoredPoint, now int64) (Match, bool) {
	pl := sp.GetPayload()
	str := func(k string) string { return pl[k].GetStringValue() }
	exp := pl[fieldExpiresAt].GetIntegerValue()
	if str(fieldKey) == "" || exp <= now {
		return Match{}, false
	}
	m := Match{
		Point: Point{
			Key: str(fieldKey),
			Filter: Filter{
				Namespace: str(fieldNamespace),
				Route:     str(fieldRoute),
				Model:     str(fieldModel),
				Context:   str(fieldContext),
			},
			Text: str(fieldText),
		},
		Score: sp.GetScore(),
	}
	if exp != math.MaxInt64 {
		m.ExpiresAt = time.UnixMilli(exp)
	}
	if dv := sp.GetVectors().GetVector().GetDense(); dv != nil {
		m.Vector = dv.GetData()
	} else if data := sp.GetVectors().GetVector().GetData(); len(data) > 0 {
		m.Vector = data // servers before the dense oneof
	}
	return m, true
}

// Delete removes the point with key by its derived ID.
func (q *Qdrant) Delete(ctx context.Context, key string) error {
	cctx, cancel := q.callCtx(ctx)
	defer cancel()
	_, err := q.client.Delete(cctx, &qdrant.DeletePoints{
		CollectionName: q.collection,
		Wait:           qdrant.PtrOf(q.cfg.WaitForWrites),
		Points:         qdrant.NewPointsSelector(qdrant.NewIDUUID(PointID(key))),
	})
	if err != nil {
		return q.fail(ctx, "delete", err)
	}
	return nil
}

// Purge deletes the points of a namespace and/or route (empty matches
// any), counting them first, and waits for the delete to apply.
func (q *Qdrant) Purge(ctx context.Context, namespace, route string) (int, error) {
	filter := &qdrant.Filter{}
	if namespace != "" {
		filter.Must = append(filter.Must, qdrant.NewMatchKeyword(fieldNamespace, namespace))
	}
	if route != "" {
		filter.Must = append(filter.Must, qdrant.NewMatchKeyword(fieldRoute, route))
	}
	cctx, cancel := q.callCtx(ctx)
	n, err := q.client.Count(cctx, &qdrant.CountPoints{
		CollectionName: q.collection,
		Filter:         filter,
		Exact:          qdrant.PtrOf(true),
	})
	cancel()
	if err != nil {
		return 0, q.fail(ctx, "purge count", err)
	}
	if err := q.deleteWhere(ctx, "purge", filter); err != nil {
		return 0, err
	}
	return int(n), nil
}

// Sweep deletes every point whose expires_at has passed; the background
// sweeper calls it every SweepInterval.
func (q *Qdrant) Sweep(ctx context.Context) error {
	return q.deleteWhere(ctx, "sweep", &qdrant.Filter{Must: []*qdrant.Condition{
		qdrant.NewRange(fieldExpiresAt, &qdrant.Range{Lte: qdrant.PtrOf(float64(q.nowMillis()))}),
	}})
}

func (q *Qdrant) deleteWhere(ctx context.Context, op string, filter *qdrant.Filter) error {
	cctx, cancel := q.callCtx(ctx)
	defer cancel()
	_, err := q.client.Delete(cctx, &qdrant.DeletePoints{
		CollectionName: q.collection,
		Wait:           qdrant.PtrOf(true),
		Points:         qdrant.NewPointsSelectorFilter(filter),
	})
	if err != nil {
		return q.fail(ctx, op, err)
	}
	return nil
}

// background runs the sweeper until ctx (cancelled by Close) is done; a
// sweep in flight is cancelled with it.
func (q *Qdrant) background(ctx context.Context) {
	defer close(q.done)
	if q.cfg.SweepInterval < 0 {
		<-ctx.Done()
		return
	}
	t := time.NewTicker(q.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			q.sweepOnce(ctx)
		}
	}
}

func (q *Qdrant) sweepOnce(ctx context.Context) {
	defer func() {
		if r := recover(); r != nil {
			q.log.Error("semantic: qdrant sweeper panicked", "panic", r, "stack", string(debug.Stack()))
		}
	}()
	if err := q.Sweep(ctx); err != nil && ctx.Err() == nil {
		q.log.Warn("semantic: qdrant sweep", "collection", q.collection, "err", err)
	}
}

// Close stops the sweeper and closes the connections. Later calls return
// the first call's result.
func (q *Qdrant) Close() error {
	q.closeOnce.Do(func() {
		q.stopSweep()
		<-q.done
		q.closeErr = q.client.Close()
	})
	return q.closeErr
}
