//go:build linux

package eval

import "golang.org/x/sys/unix"

// isTerminal reports whether fd is a terminal (it answers the termios ioctl).
func isTerminal(fd uintptr) bool {
	_, err := unix.IoctlGetTermios(int(fd), unix.TCGETS)
	return err == nil
}
