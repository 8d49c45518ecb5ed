package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

// newRunner makes a runner with its scratch directory (logs, configs,
// scripts) for one edgebench command.
func newRunner(prefix string, stderr io.Writer) (*runner, error) {
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		return nil, err
	}
	return &runner{dir: dir, log: stderr,
		client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}}, nil
}

// runScenario is what every edgebench command does around its scenario:
// run it, stop every process whatever happened, write the report as
// Markdown and, with jsonPath, as JSON, and say where the scratch
// directory (kept: what it holds) stays when something went wrong. The
// caller removes the directory when it is done with it.
func runScenario[T any](ctx context.Context, r *runner, stdout, stderr io.Writer, kept, jsonPath string,
	run func(context.Context) (T, error), md func(io.Writer, T) error) (T, error) {
	rep, runErr := run(ctx)
	if err := r.ps.stopAll(); err != nil {
		runErr = errors.Join(runErr, err)
	}
	if err := md(stdout, rep); err != nil {
		runErr = errors.Join(runErr, err)
	}
	if jsonPath != "" {
		if err := writeJSONFile(jsonPath, rep); err != nil {
			runErr = errors.Join(runErr, fmt.Errorf("--json: %w", err))
		}
	}
	if runErr != nil {
		fmt.Fprintf(stderr, "edgebench: %s kept in %s\n", kept, r.dir)
	}
	return rep, runErr
}
