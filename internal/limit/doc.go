// Package limit owns the per-cluster upload rate limit: at most one accepted
// upload per cluster per interval.
//
// A slot is reserved when a request passes authentication and is only spent
// when the upload is stored; a request that fails later gives its slot back,
// so a rejected upload never locks a well-behaved client out for a whole
// interval. Idle entries are evicted, so memory follows the clusters that
// pushed recently, never every cluster ever seen.
//
// The package must never decode payloads or know about the store.
package limit
