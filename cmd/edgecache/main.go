// Command edgecache is an edge cache and degradation service for
// OpenAI-compatible LLM APIs. See README.md.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/edgecache/edgecache/cache/shared"
	"github.com/edgecache/edgecache/cmd/internal/app"
)

func main() {
	// go-redis logs every failed dial; with Redis down that is a line per
	// attempt. One structured warning per message per 10 s instead (the
	// breakers report outages themselves).
	shared.LogRedisTo(slog.New(slog.NewJSONHandler(os.Stderr, nil)), 10*time.Second)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := app.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "edgecache:", err)
		os.Exit(1)
	}
}
