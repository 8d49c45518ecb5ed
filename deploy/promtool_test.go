package deploy_test

import (
	"os/exec"
	"path/filepath"
	"testing"
)

// TestPromtoolRules checks the alert rules with promtool (check rules) and
// runs their unit tests (prometheus/alerts_test.yaml: test rules) when
// promtool is installed (Debian: apt-get install prometheus; make deps
// installs it); it skips, saying why, otherwise.
func TestPromtoolRules(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not installed (apt-get install prometheus): alert rules not checked with promtool check rules / test rules")
	}
	dir := filepath.Dir(alertsFile)
	for _, args := range [][]string{
		{"check", "rules", filepath.Base(alertsFile)},
		{"test", "rules", "alerts_test.yaml"},
	} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %v: %v\n%s", args, err, out)
		}
	}
}
