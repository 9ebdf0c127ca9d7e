//go:build !linux

package store

import "testing"

func limitFileSize(t *testing.T, n uint64) func() {
	t.Skip("RLIMIT_FSIZE is only exercised on Linux")
	return func() {}
}
