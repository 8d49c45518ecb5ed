package semantictest

import (
	"context"
	"fmt"
	"maps"
	"math"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qdrant/go-client/qdrant"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// QdrantStandIn is a STAND-IN for a real Qdrant server, for tests on
// machines where none can run; it is not Qdrant. It is a real gRPC server
// on a loopback port that implements, from the go-client's generated server
// interfaces, the subset of Qdrant's services the adapter
// (semantic.NewQdrant) uses: health check; collection
// exists/create/get/delete; create field index; upsert, delete (by IDs or
// by filter), count and query. It applies filters (must/should/must_not
// with keyword and integer matches and numeric ranges), score thresholds
// and limits for real, by brute force over cosine similarity.
//
// Like a Qdrant collection in strict mode, it refuses to filter on a field
// without a payload index, so a missing index fails a test instead of
// passing silently. It records the indexes created and the Wait flag of
// every write, and can be made slow (SetDelay) or stopped (Stop), as a
// Qdrant that is overloaded or has gone away.
//
// What it does not model: asynchronous application of Wait=false writes
// (every write is applied before the call returns), segments and
// optimisers, named or sparse vectors, persistence, and every filter
// condition the adapter does not send. Tests that need real Qdrant
// behaviour run against a real server (EDGECACHE_QDRANT_ADDR, see
// deploy/compose.qdrant.yaml).
type QdrantStandIn struct {
	addr   string
	srv    *grpc.Server
	served chan struct{} // closed once Serve has returned

	mu          sync.Mutex
	collections map[string]*standInCollection
	upsertWaits []bool
	delay       time.Duration
	rejectIndex string // CreateFieldIndex on this field fails
}

type standInCollection struct {
	dim     int
	indexes map[string]qdrant.FieldType
	points  map[string]standInPoint // by UUID
}

type standInPoint struct {
	vec     []float32 // normalised, as Qdrant stores cosine vectors
	payload map[string]*qdrant.Value
}

// StartQdrantStandIn starts a QdrantStandIn on a free loopback port; its
// Stop is registered with tb.Cleanup.
func StartQdrantStandIn(tb testing.TB) *QdrantStandIn {
	tb.Helper()
	return StartQdrantStandInAt(tb, "127.0.0.1:0")
}

// StartQdrantStandInAt is StartQdrantStandIn on addr: a test can point
// edgecache at an address first and bring the stand-in up there later.
func StartQdrantStandInAt(tb testing.TB, addr string) *QdrantStandIn {
	tb.Helper()
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		tb.Fatalf("qdrant stand-in: listen: %v", err)
	}
	f := &QdrantStandIn{
		addr:        lis.Addr().String(),
		srv:         grpc.NewServer(),
		served:      make(chan struct{}),
		collections: map[string]*standInCollection{},
	}
	qdrant.RegisterQdrantServer(f.srv, standInHealth{})
	qdrant.RegisterCollectionsServer(f.srv, standInCollections{f: f})
	qdrant.RegisterPointsServer(f.srv, standInPoints{f: f})
	go func() {
		defer close(f.served)
		_ = f.srv.Serve(lis)
	}()
	tb.Cleanup(f.Stop)
	return f
}

// Addr is the host:port of the gRPC API (what semantic.QdrantConfig.Addr
// and the semantic.qdrant.addr setting take).
func (f *QdrantStandIn) Addr() string { return f.addr }

// Stop shuts the server down as a Qdrant that has gone away: it closes
// the listener and every connection and fails the calls in flight; new
// connections are refused. It returns once the server has stopped, and is
// safe to call more than once. A stopped stand-in cannot be restarted.
func (f *QdrantStandIn) Stop() {
	f.srv.Stop()
	<-f.served
}

// SetDelay makes every later call wait d (or until its deadline) first,
// as an overloaded Qdrant; zero removes the delay.
func (f *QdrantStandIn) SetDelay(d time.Duration) {
	f.mu.Lock()
	f.delay = d
	f.mu.Unlock()
}

// RejectIndex makes creating a payload index on field fail (as a server
// refusing it would); "" accepts every field again.
func (f *QdrantStandIn) RejectIndex(field string) {
	f.mu.Lock()
	f.rejectIndex = field
	f.mu.Unlock()
}

// Indexes returns the payload indexes of a collection by field, or nil if
// there is no such collection.
func (f *QdrantStandIn) Indexes(collection string) map[string]qdrant.FieldType {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.collections[collection]
	if c == nil {
		return nil
	}
	return maps.Clone(c.indexes)
}

// UpsertWaits returns the Wait flag of every upsert received, in order.
func (f *QdrantStandIn) UpsertWaits() []bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.upsertWaits)
}

// PointCount returns how many points a collection holds, expired ones
// included (the stand-in, like Qdrant, deletes only when asked), or -1 if
// there is no such collection.
func (f *QdrantStandIn) PointCount(collection string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.collections[collection]
	if c == nil {
		return -1
	}
	return len(c.points)
}

// enter applies the configured delay, then locks the state.
func (f *QdrantStandIn) enter(ctx context.Context) error {
	f.mu.Lock()
	d := f.delay
	f.mu.Unlock()
	if d > 0 {
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
	}
	f.mu.Lock()
	return nil
}

func (f *QdrantStandIn) collection(name string) (*standInCollection, error) {
	c := f.collections[name]
	if c == nil {
		return nil, status.Errorf(codes.NotFound, "Not found: Collection `%s` doesn't exist!", name)
	}
	return c, nil
}

type standInHealth struct {
	qdrant.UnimplementedQdrantServer
}

func (standInHealth) HealthCheck(context.Context, *qdrant.HealthCheckRequest) (*qdrant.HealthCheckReply, error) {
	return &qdrant.HealthCheckReply{Title: "semantictest.QdrantStandIn (a test stand-in, not Qdrant)", Version: "1.17.0"}, nil
}

type standInCollections struct {
	qdrant.UnimplementedCollectionsServer
	f *QdrantStandIn
}

func (s standInCollections) CollectionExists(ctx context.Context, req *qdrant.CollectionExistsRequest) (*qdrant.CollectionExistsResponse, error) {
	if err := s.f.enter(ctx); err != nil {
		return nil, err
	}
	defer s.f.mu.Unlock()
	_, ok := s.f.collections[req.GetCollectionName()]
	return &qdrant.CollectionExistsResponse{Result: &qdrant.CollectionExists{Exists: ok}}, nil
}

func (s standInCollections) Create(ctx context.Context, req *qdrant.CreateCollection) (*qdrant.CollectionOperationResponse, error) {
	if err := s.f.enter(ctx); err != nil {
		return nil, err
	}
	defer s.f.mu.Unlock()
	name := req.GetCollectionName()
	if _, ok := s.f.collections[name]; ok {
		return nil, status.Errorf(codes.AlreadyExists, "Wrong input: Collection `%s` already exists!", name)
	}
	params := req.GetVectorsConfig().GetParams()
	if params == nil || params.GetSize() == 0 {
		return nil, status.Error(codes.InvalidArgument, "qdrant stand-in: only a single unnamed vector is supported")
	}
	if params.GetDistance() != qdrant.Distance_Cosine {
		return nil, status.Error(codes.InvalidArgument, "qdrant stand-in: only cosine distance is supported")
	}
	s.f.collections[name] = &standInCollection{
		dim:     int(params.GetSize()),
		indexes: map[string]qdrant.FieldType{},
		points:  map[string]standInPoint{},
	}
	return &qdrant.CollectionOperationResponse{Result: true}, nil
}

func (s standInCollections) Get(ctx context.Context, req *qdrant.GetCollectionInfoRequest) (*qdrant.GetCollectionInfoResponse, error) {
	if err := s.f.enter(ctx); err != nil {
		return nil, err
	}
	defer s.f.mu.Unlock()
	c, err := s.f.collection(req.GetCollectionName())
	if err != nil {
		return nil, err
	}
	schema := map[string]*qdrant.PayloadSchemaInfo{}
	for field, typ := range c.indexes {
		st := qdrant.PayloadSchemaType_Keyword
		if typ == qdrant.FieldType_FieldTypeInteger {
			st = qdrant.PayloadSchemaType_Integer
		}
		schema[field] = &qdrant.PayloadSchemaInfo{DataType: st}
	}
	return &qdrant.GetCollectionInfoResponse{Result: &qdrant.CollectionInfo{
		Status:        qdrant.CollectionStatus_Green,
		PointsCount:   qdrant.PtrOf(uint64(len(c.points))),
		PayloadSchema: schema,
		Config: &qdrant.CollectionConfig{Params: &qdrant.CollectionParams{
			VectorsConfig: qdrant.NewVectorsConfig(&qdrant.VectorParams{Size: uint64(c.dim), Distance: qdrant.Distance_Cosine}),
		}},
	}}, nil
}

func (s standInCollections) Delete(ctx context.Context, req *qdrant.DeleteCollection) (*qdrant.CollectionOperationResponse, error) {
	if err := s.f.enter(ctx); err != nil {
		return nil, err
	}
	defer s.f.mu.Unlock()
	_, ok := s.f.collections[req.GetCollectionName()]
	delete(s.f.collections, req.GetCollectionName())
	return &qdrant.CollectionOperationResponse{Result: ok}, nil
}

type standInPoints struct {
	qdrant.UnimplementedPointsServer
	f *QdrantStandIn
}

func opDone() *qdrant.PointsOperationResponse {
	return &qdrant.PointsOperationResponse{Result: &qdrant.UpdateResult{Status: qdrant.UpdateStatus_Completed}}
}

func (s standInPoints) CreateFieldIndex(ctx context.Context, req *qdrant.CreateFieldIndexCollection) (*qdrant.PointsOperationResponse, error) {
	if err := s.f.enter(ctx); err != nil {
		return nil, err
	}
	defer s.f.mu.Unlock()
	c, err := s.f.collection(req.GetCollectionName())
	if err != nil {
		return nil, err
	}
	if req.FieldType == nil {
		return nil, status.Error(codes.InvalidArgument, "qdrant stand-in: field type required")
	}
	if req.GetFieldName() == s.f.rejectIndex {
		return nil, status.Errorf(codes.Internal, "qdrant stand-in: index on %q rejected", s.f.rejectIndex)
	}
	c.indexes[req.GetFieldName()] = req.GetFieldType()
	return opDone(), nil
}

func (s standInPoints) Upsert(ctx context.Context, req *qdrant.UpsertPoints) (*qdrant.PointsOperationResponse, error) {
	if err := s.f.enter(ctx); err != nil {
		return nil, err
	}
	defer s.f.mu.Unlock()
	c, err := s.f.collection(req.GetCollectionName())
	if err != nil {
		return nil, err
	}
	s.f.upsertWaits = append(s.f.upsertWaits, req.GetWait())
	for _, p := range req.GetPoints() {
		id, err := standInID(p.GetId())
		if err != nil {
			return nil, err
		}
		v := p.GetVectors().GetVector()
		data := v.GetDense().GetData()
		if data == nil {
			data = v.GetData()
		}
		if len(data) != c.dim {
			return nil, status.Errorf(codes.InvalidArgument,
				"Wrong input: Vector dimension error: expected dim: %d, got %d", c.dim, len(data))
		}
		c.points[id] = standInPoint{vec: normalised(data), payload: p.GetPayload()}
	}
	return opDone(), nil
}

func (s standInPoints) Delete(ctx context.Context, req *qdrant.DeletePoints) (*qdrant.PointsOperationResponse, error) {
	if err := s.f.enter(ctx); err != nil {
		return nil, err
	}
	defer s.f.mu.Unlock()
	c, err := s.f.collection(req.GetCollectionName())
	if err != nil {
		return nil, err
	}
	sel := req.GetPoints()
	switch {
	case sel.GetPoints() != nil:
		for _, pid := range sel.GetPoints().GetIds() {
			id, err := standInID(pid)
			if err != nil {
				return nil, err
			}
			delete(c.points, id)
		}
	case sel.GetFilter() != nil:
		for id, p := range c.points {
			ok, err := c.matches(sel.GetFilter(), p.payload)
			if err != nil {
				return nil, err
			}
			if ok {
				delete(c.points, id)
			}
		}
	default:
		return nil, status.Error(codes.InvalidArgument, "qdrant stand-in: delete needs ids or a filter")
	}
	return opDone(), nil
}

func (s standInPoints) Count(ctx context.Context, req *qdrant.CountPoints) (*qdrant.CountResponse, error) {
	if err := s.f.enter(ctx); err != nil {
		return nil, err
	}
	defer s.f.mu.Unlock()
	c, err := s.f.collection(req.GetCollectionName())
	if err != nil {
		return nil, err
	}
	n := 0
	for _, p := range c.points {
		ok, err := c.matches(req.GetFilter(), p.payload)
		if err != nil {
			return nil, err
		}
		if ok {
			n++
		}
	}
	return &qdrant.CountResponse{Result: &qdrant.CountResult{Count: uint64(n)}}, nil
}

func (s standInPoints) Query(ctx context.Context, req *qdrant.QueryPoints) (*qdrant.QueryResponse, error) {
	if err := s.f.enter(ctx); err != nil {
		return nil, err
	}
	defer s.f.mu.Unlock()
	c, err := s.f.collection(req.GetCollectionName())
	if err != nil {
		return nil, err
	}
	if len(req.GetPrefetch()) > 0 || req.Using != nil || req.GetOffset() != 0 {
		return nil, status.Error(codes.Unimplemented, "qdrant stand-in: prefetch, using and offset are not supported")
	}
	q := req.GetQuery().GetNearest().GetDense().GetData()
	if q == nil {
		return nil, status.Error(codes.Unimplemented, "qdrant stand-in: only nearest-dense queries are supported")
	}
	if len(q) != c.dim {
		return nil, status.Errorf(codes.InvalidArgument,
			"Wrong input: Vector dimension error: expected dim: %d, got %d", c.dim, len(q))
	}
	q = normalised(q)
	limit := 10 // Qdrant's default
	if req.Limit != nil {
		limit = int(req.GetLimit())
	}
	var out []*qdrant.ScoredPoint
	for id, p := range c.points {
		ok, err := c.matches(req.GetFilter(), p.payload)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		var score float32
		for i := range q {
			score += q[i] * p.vec[i]
		}
		if req.ScoreThreshold != nil && score < req.GetScoreThreshold() {
			continue
		}
		sp := &qdrant.ScoredPoint{Id: qdrant.NewIDUUID(id), Score: score}
		if req.GetWithPayload().GetEnable() {
			sp.Payload = p.payload
		}
		if req.GetWithVectors().GetEnable() {
			sp.Vectors = &qdrant.VectorsOutput{VectorsOptions: &qdrant.VectorsOutput_Vector{
				Vector: &qdrant.VectorOutput{Vector: &qdrant.VectorOutput_Dense{
					Dense: &qdrant.DenseVector{Data: slices.Clone(p.vec)},
				}},
			}}
		}
		out = append(out, sp)
	}
	slices.SortFunc(out, func(a, b *qdrant.ScoredPoint) int {
		if a.Score != b.Score {
			if a.Score > b.Score {
				return -1
			}
			return 1
		}
		return strings.Compare(a.GetId().GetUuid(), b.GetId().GetUuid())
	})
	if len(out) > limit {
		out = out[:limit]
	}
	return &qdrant.QueryResponse{Result: out}, nil
}

func standInID(pid *qdrant.PointId) (string, error) {
	u := pid.GetUuid()
	if len(u) != 36 || strings.Count(u, "-") != 4 {
		return "", status.Errorf(codes.InvalidArgument, "qdrant stand-in: point id %v is not a UUID", pid)
	}
	return strings.ToLower(u), nil
}

func normalised(v []float32) []float32 {
	var s float64
	for _, x := range v {
		s += float64(x) * float64(x)
	}
	out := make([]float32, len(v))
	if s == 0 {
		return out
	}
	n := 1 / math.Sqrt(s)
	for i, x := range v {
		out[i] = float32(float64(x) * n)
	}
	return out
}

// matches evaluates a filter on a payload. A nil filter matches all.
func (c *standInCollection) matches(f *qdrant.Filter, payload map[string]*qdrant.Value) (bool, error) {
	if f == nil {
		return true, nil
	}
	for _, cond := range f.GetMust() {
		ok, err := c.cond(cond, payload)
		if err != nil || !ok {
			return false, err
		}
	}
	for _, cond := range f.GetMustNot() {
		ok, err := c.cond(cond, payload)
		if err != nil || ok {
			return false, err
		}
	}
	if len(f.GetShould()) > 0 {
		for _, cond := range f.GetShould() {
			ok, err := c.cond(cond, payload)
			if err != nil {
				return false, err
			}
			if ok {
				return true, nil
			}
		}
		return false, nil
	}
	return true, nil
}

func (c *standInCollection) cond(cond *qdrant.Condition, payload map[string]*qdrant.Value) (bool, error) {
	if sub := cond.GetFilter(); sub != nil {
		return c.matches(sub, payload)
	}
	fc := cond.GetField()
	if fc == nil {
		return false, status.Errorf(codes.Unimplemented, "qdrant stand-in: condition %v is not supported", cond)
	}
	typ, indexed := c.indexes[fc.GetKey()]
	if !indexed {
		return false, status.Errorf(codes.InvalidArgument,
			"Bad request: Index required but not found for %q (strict mode)", fc.GetKey())
	}
	v := payload[fc.GetKey()]
	switch {
	case fc.GetMatch() != nil:
		switch m := fc.GetMatch().GetMatchValue().(type) {
		case *qdrant.Match_Keyword:
			if typ != qdrant.FieldType_FieldTypeKeyword {
				return false, status.Errorf(codes.InvalidArgument, "qdrant stand-in: keyword match on a %v index", typ)
			}
			s, ok := v.GetKind().(*qdrant.Value_StringValue)
			return ok && s.StringValue == m.Keyword, nil
		case *qdrant.Match_Integer:
			i, ok := v.GetKind().(*qdrant.Value_IntegerValue)
			return ok && i.IntegerValue == m.Integer, nil
		default:
			return false, status.Errorf(codes.Unimplemented, "qdrant stand-in: match %T is not supported", m)
		}
	case fc.GetRange() != nil:
		var x float64
		switch n := v.GetKind().(type) {
		case *qdrant.Value_IntegerValue:
			x = float64(n.IntegerValue)
		case *qdrant.Value_DoubleValue:
			x = n.DoubleValue
		default:
			return false, nil
		}
		r := fc.GetRange()
		return (r.Lt == nil || x < r.GetLt()) && (r.Lte == nil || x <= r.GetLte()) &&
			(r.Gt == nil || x > r.GetGt()) && (r.Gte == nil || x >= r.GetGte()), nil
	}
	return false, status.Error(codes.Unimplemented, fmt.Sprintf("qdrant stand-in: field condition %v is not supported", fc))
}
