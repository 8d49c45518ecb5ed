package bench

import (
	"bufio"
	"debug/buildinfo"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"
)

// describeMachine collects the header line's facts. edgecacheBin, when
// readable, gives the Go version and VCS revision the server under test was
// built with.
func describeMachine(edgecacheBin string, now time.Time) Machine {
	m := Machine{
		NProc:     runtime.NumCPU(), // like nproc: the CPUs this process may run on
		CPUModel:  cpuModel("/proc/cpuinfo"),
		GoVersion: runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH,
		Date:      now.UTC().Format(time.RFC3339),
	}
	if bi, err := buildinfo.ReadFile(edgecacheBin); err == nil {
		m.GoVersion = bi.GoVersion + " " + runtime.GOOS + "/" + runtime.GOARCH
		var rev, modified string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				modified = s.Value
			}
		}
		if len(rev) > 12 {
			rev = rev[:12]
		}
		if rev != "" && modified == "true" {
			rev += " (modified)"
		}
		m.Revision = rev
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			m.LoadAvg = strings.Join(f[:3], " ")
		}
	}
	// wrk --version prints its banner and exits 1.
	out, _ := exec.Command("wrk", "--version").CombinedOutput()
	if line, _, _ := strings.Cut(string(out), "\n"); strings.HasPrefix(line, "wrk ") {
		line, _, _ = strings.Cut(line, " Copyright")
		m.Wrk = strings.TrimSpace(line)
	}
	return m
}

// cpuModel returns the first "model name" in a /proc/cpuinfo file.
func cpuModel(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return "unknown CPU"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}
