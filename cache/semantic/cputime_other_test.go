//go:build !linux

package semantic

// threadCPU is unavailable here: CPU-time metrics report zero.
func threadCPU() int64 { return 0 }

// processCPU is unavailable here: CPU-time metrics report zero.
func processCPU() int64 { return 0 }
