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

// processCPU returns the CPU time (user and system) every thread of the
// process has used.
func processCPU() int64 {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
