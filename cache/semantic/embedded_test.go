package semantic_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/edgecache/edgecache/cache/semantic"
	"github.com/edgecache/edgecache/cache/semantic/semantictest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// grpc-go's resolver and balancer goroutines wind down
		// asynchronously after ClientConn.Close.
		goleak.IgnoreTopFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"),
		goleak.IgnoreTopFunction("google.golang.org/grpc/internal/transport.(*controlBuffer).get"),
	)
}

func newEmbedded(t *testing.T, cfg semantic.EmbeddedConfig) *semantic.Embedded {
	t.Helper()
	if cfg.Dim == 0 {
		cfg.Dim = semantictest.Dim
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(&testWriter{t: t}, nil))
	}
	e, err := semantic.NewEmbedded(cfg)
	if err != nil {
		t.Fatalf("NewEmbedded: %v", err)
	}
	t.Cleanup(func() {
		if err := e.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return e
}

// testWriter sends log lines to t.Log and keeps them for assertions.
type testWriter struct {
	t   *testing.T
	mu  sync.Mutex
	buf bytes.Buffer
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	w.buf.Write(p)
	w.mu.Unlock()
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func (w *testWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// embeddedTolerance is the score tolerance the embedded index documents
// for the conformance suite's 32-dimension vectors (int8 storage; see
// EmbeddedConfig): larger than at 512 dimensions, where it is 0.002.
const embeddedTolerance = 0.004

func TestEmbeddedConformance(t *testing.T) {
	o := semantictest.Options{ScoreTolerance: embeddedTolerance}
	t.Run("Exact", func(t *testing.T) {
		// The default partition threshold: small partitions are exact,
		// ManyPoints crosses into a graph.
		semantictest.RunIndexWith(t, o, func(t *testing.T) semantic.Index {
			return newEmbedded(t, semantic.EmbeddedConfig{})
		})
	})
	t.Run("Graph", func(t *testing.T) {
		// Every partition of two or more points is a graph.
		semantictest.RunIndexWith(t, o, func(t *testing.T) semantic.Index {
			return newEmbedded(t, semantic.EmbeddedConfig{ExactBelow: 2, EfConstruction: 40, EfSearch: 32})
		})
	})
	t.Run("SweptQuickly", func(t *testing.T) {
		semantictest.RunIndexWith(t, o, func(t *testing.T) semantic.Index {
			return newEmbedded(t, semantic.EmbeddedConfig{ExactBelow: 8, SweepInterval: 10 * time.Millisecond})
		})
	})
}

func TestEmbeddedConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  semantic.EmbeddedConfig
	}{
		{"no dim", semantic.EmbeddedConfig{}},
		{"negative capacity", semantic.EmbeddedConfig{Dim: 4, MaxPoints: -1}},
		{"tiny M", semantic.EmbeddedConfig{Dim: 4, M: 1}},
		{"ExactBelow 1", semantic.EmbeddedConfig{Dim: 4, ExactBelow: 1}},
	}
	for _, tc := range tests {
		if _, err := semantic.NewEmbedded(tc.cfg); err == nil {
			t.Errorf("%s: NewEmbedded succeeded", tc.name)
		}
	}
}

// clock is a settable time source.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func filterN(i int) semantic.Filter {
	return semantic.Filter{Namespace: "t", Route: "chat", Model: "m", Context: fmt.Sprintf("c%d", i%3)}
}

func TestEmbeddedSnapshotSurvivesRestart(t *testing.T) {
	for _, exactBelow := range []int{1000, 8} { // exact partitions; graphs
		t.Run(fmt.Sprint("ExactBelow", exactBelow), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "semantic.snap")
			clk := &clock{now: time.Unix(1_700_000_000, 0)}
			cfg := semantic.EmbeddedConfig{Dim: semantictest.Dim, SnapshotPath: path, Now: clk.Now, ExactBelow: exactBelow}
			a, err := semantic.NewEmbedded(cfg)
			if err != nil {
				t.Fatal(err)
			}
			ctx := t.Context()
			vecs := map[string][]float32{}
			for i := range 60 {
				key := fmt.Sprintf("k%d", i)
				ttl := time.Hour
				if i%10 == 0 {
					ttl = time.Minute // expired by the time it is loaded
				}
				vecs[key] = semantictest.Blend(0.5, semantictest.Axis(i), semantictest.Axis(i+1))
				p := semantic.Point{Key: key, Vector: vecs[key], Filter: filterN(i), Text: "t" + key, ExpiresAt: clk.Now().Add(ttl)}
				if err := a.Upsert(ctx, p); err != nil {
					t.Fatal(err)
				}
			}
			for i := 1; i < 60; i += 10 {
				if err := a.Delete(ctx, fmt.Sprintf("k%d", i)); err != nil {
					t.Fatal(err)
				}
			}
			if err := a.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			clk.Add(2 * time.Minute)

			b := newEmbedded(t, cfg)
			st := b.Stats()
			if want := 60 - 6 - 6; st.Points != want {
				t.Errorf("after restart Points = %d, want %d", st.Points, want)
			}
			for i := range 60 {
				key := fmt.Sprintf("k%d", i)
				ms, err := b.Search(ctx, vecs[key], filterN(i), 1, 0.999)
				if err != nil {
					t.Fatal(err)
				}
				gone := i%10 == 0 || i%10 == 1
				switch {
				case gone && len(ms) > 0:
					t.Errorf("%s (expired or deleted) found after restart", key)
				case !gone && (len(ms) != 1 || ms[0].Key != key || ms[0].Text != "t"+key || ms[0].Filter != filterN(i)):
					t.Errorf("%s after restart: %+v", key, ms)
				}
			}
			// The loaded index keeps working: replace, delete, insert.
			p := semantic.Point{Key: "k5", Vector: semantictest.Axis(0), Filter: filterN(5), ExpiresAt: clk.Now().Add(time.Hour)}
			if err := b.Upsert(ctx, p); err != nil {
				t.Fatal(err)
			}
			if ms, _ := b.Search(ctx, vecs["k5"], filterN(5), 5, 0.999); len(ms) != 0 {
				t.Errorf("replaced k5 still found at its old vector")
			}
		})
	}
}

func TestEmbeddedCorruptSnapshot(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.snap")
	cfg := semantic.EmbeddedConfig{Dim: semantictest.Dim, SnapshotPath: good, ExactBelow: 4}
	a := newEmbedded(t, cfg)
	for i := range 20 {
		p := semantic.Point{Key: fmt.Sprint(i), Vector: semantictest.Axis(i), Filter: filterN(0), ExpiresAt: time.Now().Add(time.Hour)}
		if err := a.Upsert(t.Context(), p); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Snapshot(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	flipped := bytes.Clone(data)
	flipped[len(flipped)/2] ^= 0x40
	wrongDim := bytes.Clone(data)
	wrongDim[12] = 7 // the dimension field
	cases := map[string][]byte{
		"empty":     {},
		"garbage":   []byte("this is not a snapshot at all, not even close"),
		"truncated": data[:len(data)*2/3],
		"bit flip":  flipped,
		"trailing":  append(bytes.Clone(data), 0),
		"wrong dim": wrongDim,
		"huge count": func() []byte {
			b := bytes.Clone(data[:28])
			return append(b, 0xff, 0xff, 0xff, 0x7f)
		}(),
	}
	for name, content := range cases {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "bad.snap")
			if err := os.WriteFile(path, content, 0o600); err != nil {
				t.Fatal(err)
			}
			logs := &testWriter{t: t}
			c := cfg
			c.SnapshotPath = path
			c.Logger = slog.New(slog.NewTextHandler(logs, nil))
			b := newEmbedded(t, c)
			if n := b.Stats().Points; n != 0 {
				t.Errorf("loaded %d points from a bad snapshot", n)
			}
			if !strings.Contains(logs.String(), "ignoring unreadable snapshot") {
				t.Errorf("no warning logged; logs: %s", logs)
			}
			// Still usable, and its next snapshot replaces the bad file.
			p := semantic.Point{Key: "x", Vector: semantictest.Axis(1), Filter: filterN(0), ExpiresAt: time.Now().Add(time.Hour)}
			if err := b.Upsert(t.Context(), p); err != nil {
				t.Fatal(err)
			}
			if err := b.Snapshot(); err != nil {
				t.Fatal(err)
			}
		})
	}
	// The good file still loads.
	b := newEmbedded(t, semantic.EmbeddedConfig{Dim: semantictest.Dim, SnapshotPath: good, ExactBelow: 4})
	if n := b.Stats().Points; n != 20 {
		t.Errorf("good snapshot loaded %d points, want 20", n)
	}
}

func TestEmbeddedCapacityEviction(t *testing.T) {
	clk := &clock{now: time.Unix(1_700_000_000, 0)}
	e := newEmbedded(t, semantic.EmbeddedConfig{MaxPoints: 10, Now: clk.Now, ExactBelow: 4})
	ctx := t.Context()
	f := filterN(0)
	up := func(key string, v []float32, ttl time.Duration) {
		t.Helper()
		if err := e.Upsert(ctx, semantic.Point{Key: key, Vector: v, Filter: f, ExpiresAt: clk.Now().Add(ttl)}); err != nil {
			t.Fatal(err)
		}
	}
	// Ten points; p3 expires soonest, p0..p9 otherwise by insertion.
	for i := range 10 {
		ttl := time.Hour
		if i == 3 {
			ttl = time.Minute
		}
		up(fmt.Sprintf("p%d", i), semantictest.Axis(i), ttl)
	}
	up("new1", semantictest.Axis(20), time.Hour)  // evicts p3 (soonest expiry)
	up("new2", semantictest.Axis(21), time.Hour)  // evicts p0 (same expiry as the rest, oldest)
	clk.Add(2 * time.Hour)                        // everything above has expired: the
	up("fresh", semantictest.Axis(22), time.Hour) // first to expire (p1) makes room
	st := e.Stats()
	if st.Points != 10 {
		t.Errorf("Points = %d, want 10 (the capacity)", st.Points)
	}
	if st.Evictions != 2 {
		t.Errorf("Evictions = %d, want 2", st.Evictions)
	}
	if st.Expired != 1 {
		t.Errorf("Expired = %d, want 1 (an expired point made room first)", st.Expired)
	}
	clk.Add(-2 * time.Hour)
	for key, axis := range map[string]int{"p3": 3, "p0": 0, "p1": 1} {
		if ms, _ := e.Search(ctx, semantictest.Axis(axis), f, 1, 0.99); len(ms) != 0 {
			t.Errorf("%s survived eviction", key)
		}
	}
	for key, axis := range map[string]int{"p2": 2, "p9": 9, "new1": 20, "new2": 21, "fresh": 22} {
		if ms, _ := e.Search(ctx, semantictest.Axis(axis), f, 1, 0.99); len(ms) != 1 || ms[0].Key != key {
			t.Errorf("%s missing after eviction: %v", key, ms)
		}
	}
}

func TestEmbeddedSweep(t *testing.T) {
	clk := &clock{now: time.Unix(1_700_000_000, 0)}
	e := newEmbedded(t, semantic.EmbeddedConfig{Now: clk.Now, ExactBelow: 16})
	for i := range 100 {
		ttl := time.Hour
		if i%2 == 0 {
			ttl = time.Minute
		}
		p := semantic.Point{Key: fmt.Sprint(i), Vector: semantictest.Axis(i), Filter: filterN(i), ExpiresAt: clk.Now().Add(ttl)}
		if err := e.Upsert(t.Context(), p); err != nil {
			t.Fatal(err)
		}
	}
	if n := e.Sweep(); n != 0 {
		t.Errorf("Sweep before expiry removed %d", n)
	}
	clk.Add(2 * time.Minute)
	if n := e.Sweep(); n != 50 {
		t.Errorf("Sweep removed %d, want 50", n)
	}
	if st := e.Stats(); st.Points != 50 || st.Expired != 50 {
		t.Errorf("Stats after sweep = %+v", st)
	}
}

func TestEmbeddedPurge(t *testing.T) {
	testPurge(t, newEmbedded(t, semantic.EmbeddedConfig{ExactBelow: 4}))
}

// testPurge checks Purger semantics on any index.
func testPurge(t *testing.T, ix semantic.Index) {
	t.Helper()
	ctx := t.Context()
	p, ok := ix.(semantic.Purger)
	if !ok {
		t.Fatalf("%T does not implement semantic.Purger", ix)
	}
	ns := "purge-" + fmt.Sprint(time.Now().UnixNano())
	filters := []semantic.Filter{
		{Namespace: ns + "-a", Route: "chat", Model: "m", Context: "c1"},
		{Namespace: ns + "-a", Route: "chat", Model: "m", Context: "c2"},
		{Namespace: ns + "-a", Route: "faq", Model: "m", Context: "c1"},
		{Namespace: ns + "-b", Route: "chat", Model: "m", Context: "c1"},
	}
	for i, f := range filters {
		for j := range 3 {
			pt := semantic.Point{Key: fmt.Sprintf("%s-%d-%d", ns, i, j), Vector: semantictest.Axis(j), Filter: f, ExpiresAt: time.Now().Add(time.Hour)}
			if err := ix.Upsert(ctx, pt); err != nil {
				t.Fatal(err)
			}
		}
	}
	count := func(f semantic.Filter) int {
		n := 0
		for j := range 3 {
			ms, err := ix.Search(ctx, semantictest.Axis(j), f, 10, 0.99)
			if err != nil {
				t.Fatal(err)
			}
			n += len(ms)
		}
		return n
	}
	n, err := p.Purge(ctx, ns+"-a", "chat")
	if err != nil || n != 6 {
		t.Fatalf("Purge(a, chat) = %d, %v; want 6", n, err)
	}
	for i, want := range []int{0, 0, 3, 3} {
		if got := count(filters[i]); got != want {
			t.Errorf("after Purge(a, chat): filter %d has %d points, want %d", i, got, want)
		}
	}
	n, err = p.Purge(ctx, ns+"-b", "")
	if err != nil || n != 3 {
		t.Fatalf("Purge(b, any) = %d, %v; want 3", n, err)
	}
	if got := count(filters[3]); got != 0 {
		t.Errorf("after Purge(b, any): %d points left", got)
	}
	if got := count(filters[2]); got != 3 {
		t.Errorf("Purge(b, any) touched namespace a: %d left of 3", got)
	}
}

func TestEmbeddedClosed(t *testing.T) {
	e, err := semantic.NewEmbedded(semantic.EmbeddedConfig{Dim: 4})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	err = e.Upsert(context.Background(), semantic.Point{Key: "k", Vector: []float32{1, 0, 0, 0}})
	if !errors.Is(err, semantic.ErrUnavailable) {
		t.Errorf("Upsert after Close = %v, want ErrUnavailable", err)
	}
	if _, err := e.Search(context.Background(), []float32{1, 0, 0, 0}, semantic.Filter{}, 1, 0); !errors.Is(err, semantic.ErrUnavailable) {
		t.Errorf("Search after Close = %v, want ErrUnavailable", err)
	}
}

// TestEmbeddedUpsertBatch loads points through UpsertBatch (a key twice,
// an expired point, enough points to make a graph) and checks what is
// found.
func TestEmbeddedUpsertBatch(t *testing.T) {
	e := newEmbedded(t, semantic.EmbeddedConfig{ExactBelow: 16, M: 8, EfConstruction: 48, EfSearch: 64})
	ctx := t.Context()
	r := rand.New(rand.NewPCG(5, 5))
	f := filterN(0)
	var ps []semantic.Point
	want := map[string][]float32{}
	for i := range 600 {
		key := fmt.Sprintf("b%d", i%500) // the last 100 replace earlier keys
		v := semantictest.Random(r)
		ps = append(ps, semantic.Point{Key: key, Vector: v, Filter: f, Text: key, ExpiresAt: time.Now().Add(time.Hour)})
		want[key] = v
	}
	ps = append(ps, semantic.Point{Key: "gone", Vector: semantictest.Axis(0), Filter: f, ExpiresAt: time.Now().Add(-time.Second)})
	if err := e.UpsertBatch(ctx, ps); err != nil {
		t.Fatal(err)
	}
	if st := e.Stats(); st.Points != 500 || st.Graphs != 1 {
		t.Fatalf("after the batch: %+v, want 500 points in one graph", st)
	}
	found := 0
	for key, v := range want {
		ms, err := e.Search(ctx, v, f, 1, 0.99)
		if err != nil {
			t.Fatal(err)
		}
		if len(ms) == 1 && ms[0].Key == key {
			found++
		}
	}
	if found < 490 {
		t.Errorf("found %d of 500 points at their own vector", found)
	}
	if err := e.UpsertBatch(ctx, []semantic.Point{{Key: "", Vector: semantictest.Axis(0)}}); err == nil {
		t.Error("UpsertBatch accepted an empty key")
	}
}

// TestEmbeddedLoadsSnapshotV1 loads testdata/v1.snap, written by the float32
// index (snapshot format 1, commit df53dea, M=8: 40 random unit vectors
// from PCG(1, 1) in a graph partition, g7 deleted, then 3 in an exact
// one; see snapshot.go), checks every
// point is found at its vector, then that Close rewrites the file as
// version 2, which loads too, and again with another M (rebuilt on load).
func TestEmbeddedLoadsSnapshotV1(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "v1.snap"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "semantic.snap")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := semantic.EmbeddedConfig{Dim: semantictest.Dim, SnapshotPath: path, ExactBelow: 8, M: 8,
		SnapshotInterval: -1, Logger: slog.New(slog.DiscardHandler)}
	// The vectors, in the order the generator drew them.
	r := rand.New(rand.NewPCG(1, 1))
	var vecs [43][]float32
	for i := range vecs {
		vecs[i] = semantictest.Random(r)
	}
	check := func(e *semantic.Embedded, version string) {
		t.Helper()
		if st := e.Stats(); st.Points != 42 || st.Partitions != 2 || st.Graphs != 1 {
			t.Fatalf("%s: loaded %+v, want 42 points in 2 partitions, 1 graph", version, st)
		}
		ctx := t.Context()
		for i := range 40 {
			key := fmt.Sprintf("g%d", i)
			v := vecs[i]
			ms, err := e.Search(ctx, v, semantic.Filter{Namespace: "v1", Route: "graph"}, 1, 0.99)
			if err != nil {
				t.Fatal(err)
			}
			if i == 7 {
				if len(ms) != 0 {
					t.Errorf("%s: deleted g7 found: %+v", version, ms)
				}
				continue
			}
			if len(ms) != 1 || ms[0].Key != key || ms[0].Text != "text "+key {
				t.Errorf("%s: %s: %+v", version, key, ms)
			}
		}
		for i := range 3 {
			key := fmt.Sprintf("f%d", i)
			v := vecs[40+i]
			ms, err := e.Search(ctx, v, semantic.Filter{Namespace: "v1", Route: "flat"}, 1, 0.99)
			if err != nil {
				t.Fatal(err)
			}
			if len(ms) != 1 || ms[0].Key != key || ms[0].Text != "text "+key {
				t.Errorf("%s: %s: %+v", version, key, ms)
			}
		}
	}
	a, err := semantic.NewEmbedded(cfg)
	if err != nil {
		t.Fatal(err)
	}
	check(a, "version 1")
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	data, err = os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) < 12 || data[8] != 2 {
		t.Fatalf("rewritten snapshot is not version 2: % x", data[:min(12, len(data))])
	}
	b, err := semantic.NewEmbedded(cfg)
	if err != nil {
		t.Fatal(err)
	}
	check(b, "version 2")
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	// Another M: the graph is rebuilt (in parallel) on load.
	cfg.M = 6
	c, err := semantic.NewEmbedded(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	check(c, "version 2 rebuilt with M=6")
}
