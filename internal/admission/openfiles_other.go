//go:build !unix

package admission

// fileLimit is unknown outside unix.
func fileLimit() uint64 { return 0 }
