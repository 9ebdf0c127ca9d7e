//go:build unix

package remotewrite

import (
	"syscall"
	"time"
)

// processCPU is the CPU time, user and system, this process has used. On a
// shared machine it measures the work better than wall time does.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
