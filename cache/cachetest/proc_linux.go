package cachetest

import (
	"os/exec"
	"syscall"
)

// configureProc makes the kernel kill redis-server if the test binary dies
// without running its cleanups (a timeout panic, a SIGKILL).
func configureProc(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
