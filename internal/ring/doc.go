// Package ring places keys (cluster IDs) on members (node names) with
// consistent hashing over virtual nodes. Every node that builds a Ring from
// the same set of member names computes the same owner for every key, so no
// coordination is needed beyond agreeing on membership.
//
// The algorithm is fixed and documented in docs/ring.md precisely enough to
// be reimplemented bit for bit; changing it moves clusters between nodes.
//
// This package is pure: it must never do I/O, log, keep global state, or
// import anything beyond the standard library.
package ring
