package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is a server process started pinned to a CPU, in its own process
// group so that stopping it also stops anything it started.
type proc struct {
	name    string
	cpu     int // the CPU it is pinned to
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed when Wait returned
	waitErr error
	once    sync.Once
	stopErr error
}

// procs tracks every started process so that all of them are stopped on
// the way out, whatever happens.
type procs struct {
	mu   sync.Mutex
	list []*proc
}

// startPinned starts `taskset -c cpu bin args...` with stdout and stderr
// going to a log file in dir. The child gets the environment minus
// EDGECACHE_* variables, so that the caller's configuration does not leak
// into the measurement.
func (ps *procs) startPinned(dir, name string, cpu int, bin string, args ...string) (*proc, error) {
	return ps.startPinnedEnv(dir, name, cpu, nil, bin, args...)
}

// startPinnedEnv is startPinned with extra environment variables
// ("NAME=value") added to the cleaned environment.
func (ps *procs) startPinnedEnv(dir, name string, cpu int, env []string, bin string, args ...string) (*proc, error) {
	logPath := filepath.Join(dir, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child has its own descriptor
	cmd := exec.Command("taskset", append([]string{"-c", strconv.Itoa(cpu), bin}, args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(cleanEnv(os.Environ()), env...)
	// Own process group: a terminal's ^C reaches only edgebench, which then
	// stops the group; Pdeathsig covers edgebench being killed outright.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cpu: cpu, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	ps.mu.Lock()
	ps.list = append(ps.list, p)
	ps.mu.Unlock()
	return p, nil
}

func cleanEnv(env []string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, "EDGECACHE_") {
			out = append(out, kv)
		}
	}
	return out
}

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// logTail returns the last lines of the process's output, for errors.
func (p *proc) logTail() string {
	data, _ := os.ReadFile(p.logPath)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) > 10 {
		lines = lines[len(lines)-10:]
	}
	return strings.Join(lines, "\n")
}

// stop sends SIGTERM to the process group, waits up to grace for the
// process to exit, then SIGKILLs the group. It returns once the process has
// been reaped. It is safe to call more than once.
func (p *proc) stop(grace time.Duration) error {
	p.once.Do(func() {
		pgid := p.cmd.Process.Pid
		if !p.exited() {
			_ = syscall.Kill(-pgid, syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(grace):
				p.stopErr = fmt.Errorf("%s did not stop within %v after SIGTERM; killed", p.name, grace)
			}
		}
		// Whatever is left in the group (there should be nothing) goes too.
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
		waitGroupGone(pgid, 2*time.Second)
	})
	return p.stopErr
}

// waitGroupGone waits, at most timeout, until no live process of group
// pgid is left. Killed grandchildren are reaped by init, not by us, and may
// linger a while as zombies; those count as gone.
func waitGroupGone(pgid int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		if len(liveInGroup(pgid)) == 0 {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// liveInGroup returns the pids of the processes in group pgid that are not
// zombies, from /proc.
func liveInGroup(pgid int) []int {
	if err := syscall.Kill(-pgid, 0); errors.Is(err, syscall.ESRCH) {
		return nil
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return []int{pgid} // cannot tell: assume alive
	}
	var live []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...; comm may hold spaces and parens.
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) < 3 || f[0] == "Z" || f[0] == "X" {
			continue
		}
		if g, err := strconv.Atoi(f[2]); err == nil && g == pgid {
			live = append(live, pid)
		}
	}
	return live
}

// serverUnderTest returns the pid of the live process last started on the
// server CPU (taskset execs, so it is the server's own pid), or 0.
func (ps *procs) serverUnderTest() int {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	for i := len(ps.list) - 1; i >= 0; i-- {
		if p := ps.list[i]; p.cpu == serverCPU && !p.exited() {
			return p.cmd.Process.Pid
		}
	}
	return 0
}

// stopAll stops every tracked process, the last started first.
func (ps *procs) stopAll() error {
	ps.mu.Lock()
	list := ps.list
	ps.list = nil
	ps.mu.Unlock()
	var errs []error
	for i := len(list) - 1; i >= 0; i-- {
		errs = append(errs, list[i].stop(10*time.Second))
	}
	return errors.Join(errs...)
}

// freePorts returns n distinct free loopback TCP ports. It holds all
// listeners until it has them all, so the ports differ.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// waitReady polls until ready returns nil, the process exits, ctx ends or
// timeout passes.
func waitReady(ctx context.Context, p *proc, timeout time.Duration, ready func(context.Context) error) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		if p.exited() {
			return fmt.Errorf("%s exited during start-up (%v); its output:\n%s", p.name, p.waitErr, p.logTail())
		}
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		last = ready(rctx)
		cancel()
		if last == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %v: %v; its output:\n%s", p.name, timeout, last, p.logTail())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// dialReady is ready once addr accepts a TCP connection.
func dialReady(addr string) func(context.Context) error {
	return func(ctx context.Context) error {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		return c.Close()
	}
}

// httpReady is ready once GET url answers 200.
func httpReady(client *http.Client, url string) func(context.Context) error {
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		return nil
	}
}
