package semantic_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/qdrant/go-client/qdrant"

	"github.com/edgecache/edgecache/cache/semantic"
	"github.com/edgecache/edgecache/cache/semantic/semantictest"
)

const qdrantAddrEnv = "EDGECACHE_QDRANT_ADDR"

func newQdrant(t *testing.T, cfg semantic.QdrantConfig) *semantic.Qdrant {
	t.Helper()
	if cfg.Model == "" {
		cfg.Model = "test-embedder"
	}
	if cfg.Dim == 0 {
		cfg.Dim = semantictest.Dim
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(&testWriter{t: t}, nil))
	}
	q, err := semantic.NewQdrant(t.Context(), cfg)
	if err != nil {
		t.Fatalf("NewQdrant: %v", err)
	}
	t.Cleanup(func() {
		if err := q.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return q
}

func TestQdrantConformance(t *testing.T) {
	t.Run("Fake", func(t *testing.T) {
		semantictest.RunIndex(t, func(t *testing.T) semantic.Index {
			fq := semantictest.StartQdrantStandIn(t)
			return newQdrant(t, semantic.QdrantConfig{Addr: fq.Addr()})
		})
	})
	t.Run("Real", func(t *testing.T) {
		addr := os.Getenv(qdrantAddrEnv)
		if addr == "" {
			t.Skip(qdrantAddrEnv + " is not set: no real Qdrant to run against (see deploy/compose.qdrant.yaml)")
		}
		prefix := "edgecache_test_" + rand.Text()[:8] + "_"
		t.Cleanup(func() { dropCollections(t, addr, prefix) })
		semantictest.RunIndex(t, func(t *testing.T) semantic.Index {
			// Real Qdrant applies Wait=false writes asynchronously; the
			// suite reads its own writes.
			return newQdrant(t, semantic.QdrantConfig{Addr: addr, CollectionPrefix: prefix, WaitForWrites: true})
		})
		t.Run("Purge", func(t *testing.T) {
			testPurge(t, newQdrant(t, semantic.QdrantConfig{Addr: addr, CollectionPrefix: prefix, WaitForWrites: true}))
		})
	})
}

// dropCollections deletes the collections a real-Qdrant run created.
func dropCollections(t *testing.T, addr, prefix string) {
	host, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	c, err := qdrant.NewClient(&qdrant.Config{Host: host, Port: p, SkipCompatibilityCheck: true})
	if err != nil {
		t.Logf("cleanup client: %v", err)
		return
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	names, err := c.ListCollections(ctx)
	if err != nil {
		t.Logf("cleanup list: %v", err)
		return
	}
	for _, n := range names {
		if len(n) >= len(prefix) && n[:len(prefix)] == prefix {
			if err := c.DeleteCollection(ctx, n); err != nil {
				t.Logf("cleanup delete %s: %v", n, err)
			}
		}
	}
}

func TestQdrantStartupCreatesCollectionAndIndexes(t *testing.T) {
	fq := semantictest.StartQdrantStandIn(t)
	q := newQdrant(t, semantic.QdrantConfig{Addr: fq.Addr(), Model: "USE-lite/v1", Dim: 512})
	if want := semantic.CollectionName("edgecache_", "USE-lite/v1", 512); q.Collection() != want {
		t.Errorf("Collection() = %q, want %q", q.Collection(), want)
	}
	want := map[string]qdrant.FieldType{
		"namespace":  qdrant.FieldType_FieldTypeKeyword,
		"route":      qdrant.FieldType_FieldTypeKeyword,
		"model":      qdrant.FieldType_FieldTypeKeyword,
		"context":    qdrant.FieldType_FieldTypeKeyword,
		"key":        qdrant.FieldType_FieldTypeKeyword,
		"expires_at": qdrant.FieldType_FieldTypeInteger,
	}
	got := fq.Indexes(q.Collection())
	if len(got) != len(want) {
		t.Errorf("payload indexes = %v, want %v", got, want)
	}
	for field, typ := range want {
		if got[field] != typ {
			t.Errorf("payload index %q = %v (present %t), want %v", field, got[field], got != nil, typ)
		}
	}

	// A second instance adopts the existing collection.
	newQdrant(t, semantic.QdrantConfig{Addr: fq.Addr(), Model: "USE-lite/v1", Dim: 512})
}

func TestQdrantStartupFailures(t *testing.T) {
	t.Run("IndexRejected", func(t *testing.T) {
		fq := semantictest.StartQdrantStandIn(t)
		fq.RejectIndex("expires_at")
		_, err := semantic.NewQdrant(t.Context(), semantic.QdrantConfig{Addr: fq.Addr(), Model: "m", Dim: 4})
		if err == nil || !regexp.MustCompile(`expires_at`).MatchString(err.Error()) {
			t.Fatalf("NewQdrant with a failing payload index = %v, want an error naming expires_at", err)
		}
	})
	t.Run("WrongDimension", func(t *testing.T) {
		fq := semantictest.StartQdrantStandIn(t)
		// Another deployment made the collection with other vectors.
		host, port, _ := net.SplitHostPort(fq.Addr())
		p, _ := strconv.Atoi(port)
		c, err := qdrant.NewClient(&qdrant.Config{Host: host, Port: p, SkipCompatibilityCheck: true})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		name := semantic.CollectionName("edgecache_", "m", 4)
		err = c.CreateCollection(t.Context(), &qdrant.CreateCollection{
			CollectionName: name,
			VectorsConfig:  qdrant.NewVectorsConfig(&qdrant.VectorParams{Size: 8, Distance: qdrant.Distance_Cosine}),
		})
		if err != nil {
			t.Fatal(err)
		}
		_, err = semantic.NewQdrant(t.Context(), semantic.QdrantConfig{Addr: fq.Addr(), Model: "m", Dim: 4})
		if err == nil || errors.Is(err, semantic.ErrUnavailable) {
			t.Fatalf("NewQdrant on a collection of another dimension = %v, want a configuration error", err)
		}
	})
	t.Run("Config", func(t *testing.T) {
		for _, cfg := range []semantic.QdrantConfig{
			{Dim: 4},
			{Model: "m"},
			{Model: "m", Dim: 4, Addr: "host:notaport"},
		} {
			if _, err := semantic.NewQdrant(t.Context(), cfg); err == nil {
				t.Errorf("NewQdrant(%+v) succeeded", cfg)
			}
		}
	})
}

func TestQdrantRequestPathDoesNotWait(t *testing.T) {
	fq := semantictest.StartQdrantStandIn(t)
	q := newQdrant(t, semantic.QdrantConfig{Addr: fq.Addr()})
	p := semantic.Point{Key: "k", Vector: semantictest.Axis(0), ExpiresAt: time.Now().Add(time.Hour)}
	if err := q.Upsert(t.Context(), p); err != nil {
		t.Fatal(err)
	}
	if w := fq.UpsertWaits(); len(w) != 1 || w[0] {
		t.Errorf("upsert Wait flags = %v, want [false]", w)
	}
}

func TestQdrantUnavailable(t *testing.T) {
	const timeout = 300 * time.Millisecond
	const slack = 2 * time.Second // scheduling on a loaded machine
	check := func(t *testing.T, what string, start time.Time, err error) {
		t.Helper()
		if !errors.Is(err, semantic.ErrUnavailable) {
			t.Errorf("%s: error = %v, want one wrapping ErrUnavailable", what, err)
		}
		if took := time.Since(start); took > timeout+slack {
			t.Errorf("%s took %v, want about the %v timeout", what, took, timeout)
		}
	}
	t.Run("NothingListening", func(t *testing.T) {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := lis.Addr().String()
		lis.Close()
		start := time.Now()
		_, err = semantic.NewQdrant(t.Context(), semantic.QdrantConfig{Addr: addr, Model: "m", Dim: 4, Timeout: timeout})
		check(t, "NewQdrant", start, err)
	})
	t.Run("ServerStopped", func(t *testing.T) {
		fq := semantictest.StartQdrantStandIn(t)
		q := newQdrant(t, semantic.QdrantConfig{Addr: fq.Addr(), Timeout: timeout})
		fq.Stop()
		ctx := t.Context()
		start := time.Now()
		_, err := q.Search(ctx, semantictest.Axis(0), semantic.Filter{}, 1, 0)
		check(t, "Search", start, err)
		start = time.Now()
		err = q.Upsert(ctx, semantic.Point{Key: "k", Vector: semantictest.Axis(0), ExpiresAt: time.Now().Add(time.Hour)})
		check(t, "Upsert", start, err)
		start = time.Now()
		check(t, "Delete", start, q.Delete(ctx, "k"))
	})
	t.Run("ServerSlow", func(t *testing.T) {
		fq := semantictest.StartQdrantStandIn(t)
		q := newQdrant(t, semantic.QdrantConfig{Addr: fq.Addr(), Timeout: timeout})
		fq.SetDelay(10 * time.Second)
		start := time.Now()
		_, err := q.Search(t.Context(), semantictest.Axis(0), semantic.Filter{}, 1, 0)
		check(t, "Search", start, err)
		fq.SetDelay(0)
	})
	t.Run("CallerCancelled", func(t *testing.T) {
		fq := semantictest.StartQdrantStandIn(t)
		q := newQdrant(t, semantic.QdrantConfig{Addr: fq.Addr(), Timeout: timeout})
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		_, err := q.Search(ctx, semantictest.Axis(0), semantic.Filter{}, 1, 0)
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Search with a cancelled context = %v, want context.Canceled", err)
		}
	})
}

func TestQdrantPurge(t *testing.T) {
	fq := semantictest.StartQdrantStandIn(t)
	testPurge(t, newQdrant(t, semantic.QdrantConfig{Addr: fq.Addr()}))
}

func TestQdrantSweep(t *testing.T) {
	fq := semantictest.StartQdrantStandIn(t)
	clk := &clock{now: time.Now()}
	q := newQdrant(t, semantic.QdrantConfig{Addr: fq.Addr(), Now: clk.Now, SweepInterval: -1})
	f := filterN(0)
	for i := range 10 {
		ttl := time.Hour
		if i%2 == 0 {
			ttl = time.Minute
		}
		p := semantic.Point{Key: fmt.Sprint(i), Vector: semantictest.Axis(i), Filter: f, ExpiresAt: clk.Now().Add(ttl)}
		if err := q.Upsert(t.Context(), p); err != nil {
			t.Fatal(err)
		}
	}
	clk.Add(2 * time.Minute)
	// Expired points are filtered on read before any sweep...
	for i := range 10 {
		ms, err := q.Search(t.Context(), semantictest.Axis(i), f, 1, 0.99)
		if err != nil {
			t.Fatal(err)
		}
		if (len(ms) == 1) != (i%2 == 1) {
			t.Errorf("point %d before sweep: %v", i, ms)
		}
	}
	if err := q.Sweep(t.Context()); err != nil {
		t.Fatal(err)
	}
	// ...and gone from the store after it.
	if n := fq.PointCount(q.Collection()); n != 5 {
		t.Errorf("after Sweep the collection holds %d points, want 5", n)
	}
}

func TestQdrantBackgroundSweeper(t *testing.T) {
	fq := semantictest.StartQdrantStandIn(t)
	q := newQdrant(t, semantic.QdrantConfig{Addr: fq.Addr(), SweepInterval: 20 * time.Millisecond})
	p := semantic.Point{Key: "soon", Vector: semantictest.Axis(0), ExpiresAt: time.Now().Add(100 * time.Millisecond)}
	if err := q.Upsert(t.Context(), p); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if fq.PointCount(q.Collection()) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the sweeper did not delete an expired point within 10s")
		}
		time.Sleep(20 * time.Millisecond) // polling the background sweeper
	}
}

func TestPointID(t *testing.T) {
	uuid := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	a, b := semantic.PointID("key-a"), semantic.PointID("key-b")
	if !uuid.MatchString(a) || !uuid.MatchString(b) {
		t.Errorf("PointID = %q, %q: not version-8 RFC 9562 UUIDs", a, b)
	}
	if a != semantic.PointID("key-a") {
		t.Error("PointID is not deterministic")
	}
	if a == b {
		t.Error("different keys share a PointID")
	}
	// Pinned so that a change (which would orphan every stored point) is
	// deliberate.
	if got, want := semantic.PointID("hello"), "2cf24dba-5fb0-830e-a6e8-3b2ac5b9e29e"; got != want {
		t.Errorf("PointID(hello) = %s, want %s", got, want)
	}
}

func TestCollectionName(t *testing.T) {
	tests := []struct {
		prefix, model string
		dim           int
		want          string
	}{
		{"edgecache_", "use-lite", 512, "edgecache_use-lite_512"},
		{"p_", "text_embedding_3", 1536, "p_text_embedding_3_1536"},
	}
	for _, tc := range tests {
		if got := semantic.CollectionName(tc.prefix, tc.model, tc.dim); got != tc.want {
			t.Errorf("CollectionName(%q, %q, %d) = %q, want %q", tc.prefix, tc.model, tc.dim, got, tc.want)
		}
	}
	valid := regexp.MustCompile(`^[a-z0-9_-]+$`)
	x, y := semantic.CollectionName("e_", "Text/Embedding 3", 8), semantic.CollectionName("e_", "text_embedding_3", 8)
	if !valid.MatchString(x) || x == y {
		t.Errorf("sanitised names %q and %q must be valid and distinct", x, y)
	}
}
