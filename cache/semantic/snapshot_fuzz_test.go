package semantic_test

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgecache/edgecache/cache/semantic"
	"github.com/edgecache/edgecache/cache/semantic/semantictest"
)

// FuzzSnapshotLoad feeds arbitrary snapshot files to NewEmbedded. The
// trailing CRC is recomputed first, so mutations reach the structural
// checks instead of stopping at the checksum. Whatever the bytes, start-up
// must succeed (empty or not) and the index must then work.
func FuzzSnapshotLoad(f *testing.F) {
	seed := filepath.Join(f.TempDir(), "seed.snap")
	cfg := semantic.EmbeddedConfig{Dim: semantictest.Dim, SnapshotPath: seed, ExactBelow: 4, M: 4,
		Logger: slog.New(slog.DiscardHandler)}
	e, err := semantic.NewEmbedded(cfg)
	if err != nil {
		f.Fatal(err)
	}
	for i := range 12 {
		p := semantic.Point{Key: fmt.Sprint(i), Vector: semantictest.Axis(i), Filter: filterN(i % 2),
			Text: "t", ExpiresAt: time.Now().Add(time.Hour)}
		if err := e.Upsert(f.Context(), p); err != nil {
			f.Fatal(err)
		}
	}
	e.Delete(f.Context(), "3") // a dead graph slot
	if err := e.Close(); err != nil {
		f.Fatal(err)
	}
	data, err := os.ReadFile(seed)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(data)
	f.Add(data[:len(data)/2])
	if v1, err := os.ReadFile(filepath.Join("testdata", "v1.snap")); err == nil {
		f.Add(v1) // the float32 format, still read
	} else {
		f.Fatal(err)
	}

	table := crc32.MakeTable(crc32.Castagnoli)
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) >= 4 {
			binary.LittleEndian.PutUint32(data[len(data)-4:], crc32.Checksum(data[:len(data)-4], table))
		}
		path := filepath.Join(fastTempDir(t), "fuzz.snap")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		c := cfg
		c.SnapshotPath = path
		ix, err := semantic.NewEmbedded(c)
		if err != nil {
			t.Fatalf("NewEmbedded: %v", err)
		}
		defer ix.Close()
		ctx := t.Context()
		for i := range 3 {
			if _, err := ix.Search(ctx, semantictest.Axis(i), filterN(i), 3, -1); err != nil {
				t.Fatal(err)
			}
		}
		for i := range 6 {
			p := semantic.Point{Key: fmt.Sprint(i), Vector: semantictest.Axis(i + 1), Filter: filterN(i),
				ExpiresAt: time.Now().Add(time.Hour)}
			if err := ix.Upsert(ctx, p); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := ix.Purge(ctx, "", ""); err != nil {
			t.Fatal(err)
		}
	})
}

// fastTempDir is a temporary directory on tmpfs when there is one: every
// execution ends with Close writing and fsyncing a snapshot, which on a
// busy disk would make fuzzing crawl.
func fastTempDir(t *testing.T) string {
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		if dir, err := os.MkdirTemp("/dev/shm", "semantic-fuzz-"); err == nil {
			t.Cleanup(func() { os.RemoveAll(dir) })
			return dir
		}
	}
	return t.TempDir()
}
