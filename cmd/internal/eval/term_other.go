//go:build !linux

package eval

import "os"

// isTerminal reports whether fd is a character device: a terminal, usually.
func isTerminal(fd uintptr) bool {
	fi, err := os.NewFile(fd, "").Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
