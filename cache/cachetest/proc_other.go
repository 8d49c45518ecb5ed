//go:build !linux

package cachetest

import "os/exec"

// configureProc has nothing to add where the kernel cannot tie a child's
// life to its parent; the test's cleanup still stops the server.
func configureProc(*exec.Cmd) {}
