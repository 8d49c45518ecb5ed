// Package bench is the edgebench command: the load-benchmark harness of
// edgecache.
//
// `edgebench run` measures, with wrk pinned to CPU 0 and the server under
// test pinned to CPU 1 (taskset) except in (c2), at each connection count,
// requests/s and p50/p99 latency of
//
//	(a) the ceiling: `edgebench ceiling`, a minimal net/http server that
//	    returns the bytes edgecache sends on a cache hit;
//	(b) exact L1 hits through edgecache (llmsim upstream on CPU 0);
//	(c) llmsim direct, alone on CPU 1;
//	(c2) llmsim direct, on CPU 0 sharing it with wrk, as in (d) and (f) and
//	    in the set-up of issue 16, which set the pass-through goal: its
//	    base, since (c) gives llmsim the core (d) gives edgecache;
//	(d) pass-through: edgecache with Cache-Control: no-store, llmsim on CPU 0
//	    sharing it with wrk;
//	(e) semantic hits: edgecache with a semantic chat route whose remote
//	    embedder is llmsim --embed-fold on CPU 0 (also the model), asked
//	    stored prompts in random letter case (see semantic.go);
//	(f) a reference for (d): `edgebench proxy`, a minimal net/http reverse
//	    proxy in edgecache's place (no parsing, keys, limits or metrics);
//	(g) – (i): exact hits of the Responses and Messages APIs, pass-through
//	    through a pool of two llmsim (responses.go, messages.go, pool.go);
//	(j) semantic hits with the local model: edgecache's default embedder
//	    (USE-lite) and verifier, asked stored questions in wordings never
//	    sent before, one embedding computed per request (see fresh.go);
//
// and prints a Markdown table with the targets (hits ≥ 70 % of the
// ceiling, hit p99 ≤ 1.5 × the ceiling's p99 in the same run at 32
// connections, pass-through ≥ 45 % of (c2), semantic hits ≥ 2,500 req/s,
// (j) ≥ 2,000 req/s) and, with no goal, pass-through / (c) for comparison
// with runs from before (c2); --scenarios runs some rows only. Every row
// also shows the CPU time of the server under test per request
// (/proc/PID/stat over the measured window; llmsim's in (c) and (c2)), and
// (e) and (j) the texts embedded per request (llmsim's /_sim/stats;
// edgecache's edgecache_embed_texts_total). It needs wrk and taskset and
// prebuilt binaries; it installs and builds nothing.
//
// `edgebench overload` measures the lanes instead: a paid tenant alone, then
// under a 10× overload of free traffic, against llmsim with a concurrency
// cap, with its own open-loop generator (`edgebench loadgen`, pinned to
// CPU 0 like wrk) because wrk cannot mix API keys; see overload.go.
//
// `edgebench streams` measures long SSE streams instead: N concurrent
// streams through edgecache against llmsim pacing tokens; see streams.go.
//
// `edgebench jobs` compares M background jobs with M plain clients that
// retry on 503/429, against a saturated llmsim: completion times and the
// model's utilisation; see jobs.go.
package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// ChatBody is the request every scenario sends.
const ChatBody = `{"model":"sim-1","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"What is the capital of France?"}],"temperature":0}`

const usage = `edgebench — load-benchmark harness for edgecache.

Usage:
  edgebench run [--duration 10s] [--warmup 2s] [--conns 32,128] [--scenarios a,…,j] [--bin DIR] [--json FILE]
  edgebench overload [--duration 10s] [--concurrency 16] [--ttft 100ms] [--bin DIR] [--json FILE]
  edgebench streams [--n 2000] [--tps 20] [--tokens 200] [--open-admission] [--bin DIR] [--json FILE]
  edgebench jobs [--m 200] [--concurrency 8] [--ttft 200ms] [--bin DIR] [--json FILE]
  edgebench ceiling --listen ADDR --body FILE
  edgebench proxy --listen ADDR --upstream URL
  edgebench loadgen --spec FILE      (started by edgebench overload)
  edgebench streamgen --spec FILE    (started by edgebench streams)

"edgebench SUBCOMMAND -h" describes the flags of run, overload, streams, jobs, ceiling and proxy.
`

// Main runs the edgebench command. prog is the program name as invoked and
// args the arguments after it; both are recorded in the report as the
// exact command.
func Main(ctx context.Context, prog string, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("missing subcommand")
	}
	switch args[0] {
	case "run":
		return runMain(ctx, shellJoin(append([]string{prog}, args...)), args[1:], stdout, stderr)
	case "overload":
		return overloadMain(ctx, shellJoin(append([]string{prog}, args...)), args[1:], stdout, stderr)
	case "streams":
		return streamsMain(ctx, shellJoin(append([]string{prog}, args...)), args[1:], stdout, stderr)
	case "jobs":
		return jobsMain(ctx, shellJoin(append([]string{prog}, args...)), args[1:], stdout, stderr)
	case "streamgen":
		return streamgenMain(ctx, args[1:], stdout, stderr)
	case "loadgen":
		return loadgenMain(ctx, args[1:], stdout, stderr)
	case "ceiling":
		return helpIsSuccess(ceilingMain(ctx, args[1:], stdout, stderr))
	case "proxy":
		return helpIsSuccess(proxyMain(ctx, args[1:], stdout, stderr))
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown subcommand %q", args[0])
}

// helpIsSuccess maps flag.ErrHelp (-h was asked for and printed) to nil.
func helpIsSuccess(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	return err
}

// shellJoin quotes args for a POSIX shell where needed.
func shellJoin(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if a != "" && strings.Trim(a, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-+=.,/:@%") == "" {
			q[i] = a
		} else {
			q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
	}
	return strings.Join(q, " ")
}
