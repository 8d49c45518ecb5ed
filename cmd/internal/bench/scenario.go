package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// defaultBinDir is where --bin points unless set: the directory of the
// running edgebench, beside which make build puts the other binaries.
func defaultBinDir() string {
	if exe, err := os.Executable(); err == nil {
		return filepath.Dir(exe)
	}
	return ""
}

// newBinRunner is newRunner for a command that starts the binaries in bin:
// it checks them and the tools (wrk too when needWrk) first and sets the
// runner's bin, made absolute.
func newBinRunner(prefix, bin string, needWrk bool, stderr io.Writer) (*runner, error) {
	if err := checkTools(bin, needWrk); err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(bin)
	if err != nil {
		return nil, err
	}
	r, err := newRunner(prefix, stderr)
	if err != nil {
		return nil, err
	}
	r.cfg.bin = abs
	return r, nil
}

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
