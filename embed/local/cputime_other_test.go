//go:build !unix

package local

import "time"

func processCPU() time.Duration { return 0 }
