package app

import (
	"bytes"
	"os/exec"
	"testing"
)

// checkMetricsWithPromtool runs `promtool check metrics` on an exposition
// when promtool is installed (Debian: apt-get install prometheus; make deps
// installs it) and fails on any complaint; it says so and skips the check
// otherwise.
func checkMetricsWithPromtool(t *testing.T, exposition []byte) {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		t.Log("promtool not installed: /metrics not checked with promtool check metrics (apt-get install prometheus)")
		return
	}
	cmd := exec.Command(path, "check", "metrics")
	cmd.Stdin = bytes.NewReader(exposition)
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}
