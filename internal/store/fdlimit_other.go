//go:build !unix

package store

// fileLimit is a conservative guess where the limit cannot be read.
func fileLimit() int { return 1024 }
