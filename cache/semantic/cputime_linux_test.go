package semantic

import "golang.org/x/sys/unix"

// threadCPU returns the CPU time the calling OS thread has used. With the
// goroutine locked to its thread, the difference across a search is the
// search's own compute time, unaffected by other processes on the machine.
func threadCPU() int64 {
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts) != nil {
		return 0
	}
	return ts.Nano()
}
