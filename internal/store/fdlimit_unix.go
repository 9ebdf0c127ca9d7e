//go:build unix

package store

import (
	"math"
	"syscall"
)

// fileLimit is the process's soft limit on open file descriptors (Go raises
// it to the hard limit at start-up), or 1024 if it cannot be read.
func fileLimit() int {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 1024
	}
	return int(min(l.Cur, math.MaxInt32))
}
