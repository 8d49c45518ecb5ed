package semantic_test

import (
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/edgecache/edgecache/cache/semantic"
	"github.com/edgecache/edgecache/cache/semantic/semantictest"
)

func TestZZSlow(t *testing.T) {
	data, _ := os.ReadFile("/tmp/slow.snap")
	os.WriteFile("/dev/shm/zz.snap", data, 0o600)
	start := time.Now()
	ix, err := semantic.NewEmbedded(semantic.EmbeddedConfig{Dim: semantictest.Dim, SnapshotPath: "/dev/shm/zz.snap", ExactBelow: 4, M: 4, Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	t.Logf("load %v err %v stats %+v", time.Since(start), err, ix.Stats())
}
