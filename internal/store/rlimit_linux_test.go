package store

import (
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

// limitFileSize makes every write beyond n bytes of a file fail with EFBIG,
// as a full disk does, for the whole test process; the returned function
// restores the limit. Go ignores the SIGXFSZ that comes with it.
func limitFileSize(t *testing.T, n uint64) func() {
	var old syscall.Rlimit
	require.NoError(t, syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old))
	require.NoError(t, syscall.Setrlimit(syscall.RLIMIT_FSIZE, &syscall.Rlimit{Cur: n, Max: old.Max}))
	return func() { require.NoError(t, syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old)) }
}
