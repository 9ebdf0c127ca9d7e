//go:build unix

package admission

import "syscall"

// fileLimit returns the soft RLIMIT_NOFILE, 0 when it cannot be read.
func fileLimit() uint64 {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0
	}
	return uint64(rl.Cur) //nolint:unconvert // Cur is int64 on some BSDs
}
