package cachetest

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// startTimeout bounds how long a redis-server may take to answer PING, and
// a cluster to report cluster_state:ok.
const startTimeout = 15 * time.Second

// Redis is a real redis-server process started for one test. It listens on
// a loopback port that stays the same across Stop and Restart, keeps no
// data on disk, and is killed by the test's cleanup.
type Redis struct {
	tb   testing.TB
	bin  string
	dir  string
	port int
	args []string // extra arguments (cluster mode)

	mu   sync.Mutex
	proc *process // nil while stopped
}

// process is one run of redis-server.
type process struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed once cmd.Wait has returned
}

// StartRedis starts a redis-server on a free loopback port and waits until
// it answers PING. The binary is looked up on PATH; if it is missing the
// test fails (it does not skip) and says how to install it. Stop and the
// process are registered with tb.Cleanup.
func StartRedis(tb testing.TB) *Redis {
	tb.Helper()
	return startRedis(tb, nil)
}

func startRedis(tb testing.TB, args []string) *Redis {
	tb.Helper()
	bin := lookPath(tb, "redis-server")
	r := &Redis{tb: tb, bin: bin, dir: tb.TempDir(), args: args}
	tb.Cleanup(r.Stop)
	// The free port is found by binding and releasing it, so another
	// process may take it before redis-server binds: try a few ports.
	var err error
	for range 3 {
		if r.port, err = freePort(); err != nil {
			break
		}
		if err = r.start(); err == nil {
			return r
		}
	}
	tb.Fatalf("cachetest: start redis-server: %v", err)
	return nil
}

// Addr returns the server's host:port.
func (r *Redis) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port)) }

// Stop kills the server and waits for it to exit. The port is kept for
// Restart. Stopping a stopped server does nothing.
func (r *Redis) Stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.proc == nil {
		return
	}
	_ = r.proc.cmd.Process.Kill() // fails only if it already exited
	<-r.proc.exited
	r.proc = nil
}

// Restart stops the server if it runs and starts it again, empty, on the
// same port; it fails the test if the server does not answer PING.
func (r *Redis) Restart() {
	r.tb.Helper()
	r.Stop()
	if err := r.start(); err != nil {
		r.tb.Fatalf("cachetest: restart redis-server on %s: %v", r.Addr(), err)
	}
}

// start runs redis-server on r.port and waits for PING.
func (r *Redis) start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.proc != nil {
		return errors.New("already running")
	}
	logPath := filepath.Join(r.dir, fmt.Sprintf("redis-%d.log", r.port))
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logFile.Close() // the child keeps its own descriptor
	args := append([]string{
		"--port", strconv.Itoa(r.port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", r.dir,
		"--daemonize", "no",
	}, r.args...)
	cmd := exec.Command(r.bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	configureProc(cmd)
	if err := cmd.Start(); err != nil {
		return err
	}
	p := &process{cmd: cmd, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait() // the exit status of a killed test server is noise
		close(p.exited)
	}()

	deadline := time.Now().Add(startTimeout)
	for {
		reply, err := respDo(r.Addr(), 200*time.Millisecond, "PING")
		if err == nil && reply == "PONG" {
			r.proc = p
			return nil
		}
		select {
		case <-p.exited:
			return fmt.Errorf("redis-server exited on start: %s", tail(logPath))
		default:
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-p.exited
			return fmt.Errorf("no PONG from %s within %v (last: %q, %v): %s", r.Addr(), startTimeout, reply, err, tail(logPath))
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
}

// StartRedisCluster starts three redis-server masters in cluster mode,
// joins them with redis-cli --cluster create (no replicas), waits until
// every node reports cluster_state:ok, and returns their addresses. The
// servers are killed by tb's cleanup.
func StartRedisCluster(tb testing.TB) []string {
	tb.Helper()
	cli := lookPath(tb, "redis-cli")
	addrs := make([]string, 3)
	for i := range addrs {
		dir := tb.TempDir()
		r := startRedis(tb, []string{
			"--cluster-enabled", "yes",
			"--cluster-config-file", filepath.Join(dir, "nodes.conf"),
			"--cluster-node-timeout", "5000",
		})
		addrs[i] = r.Addr()
	}
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
		tb.Fatalf("cachetest: redis-cli %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	deadline := time.Now().Add(startTimeout)
	for _, addr := range addrs {
		for {
			info, err := respDo(addr, time.Second, "CLUSTER", "INFO")
			if err == nil && strings.Contains(info, "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				tb.Fatalf("cachetest: cluster node %s not ok within %v: %v\n%s", addr, startTimeout, err, info)
			}
			time.Sleep(50 * time.Millisecond) // polling interval
		}
	}
	return addrs
}

func lookPath(tb testing.TB, name string) string {
	tb.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		tb.Fatalf("cachetest: %s not found on PATH (%v); these tests need a real Redis: run `make deps` "+
			"(it installs the Debian redis-server package, which provides redis-server and redis-cli)", name, err)
	}
	return p
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// tail returns the last lines of a log file for error messages.
func tail(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > 10 {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}
