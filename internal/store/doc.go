// Package store keeps the latest snapshot of every cluster on local disk,
// one file per cluster, and an in-memory index of their metadata.
//
// It owns the snapshot file format (docs/storage-format.md), the directory
// layout under the storage directory, durable writes (temp file, fsync,
// rename — on Linux an exchange that keeps the old inode as the next temp
// file —, fsync of the directory) and recovery at start-up, which moves
// corrupt files into a quarantine directory instead of failing.
//
// The index holds metadata only; series stay compressed on disk and are read
// one family block at a time. File paths derive from a SHA-256 of the cluster
// ID, never from the ID itself. Every length read from a file is checked
// against the file's size before anything is allocated for it.
//
// This package must never decide who may write what (that is validation and
// authorization), never talk to the network, and never serve a file whose
// checksum it has not verified.
package store
