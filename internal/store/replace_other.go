//go:build !linux

package store

import "os"

// replaceFile puts temp at file atomically with a rename (see the Linux
// version for the exchange it does there).
func replaceFile(temp, file string) (exchanged bool, err error) {
	return false, os.Rename(temp, file)
}
