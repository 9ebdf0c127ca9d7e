// Package cluster owns membership of the telemeter-server fleet: it wraps
// hashicorp/memberlist with LAN timers, an optional encrypted gossip keyring
// that can rotate live, a periodic re-join of seed peers so a healed
// partition merges again, readiness (joined and settled), Prometheus metrics,
// and a bridge from memberlist's log output to slog.
//
// Peers learn from each other only names, addresses and the small NodeMeta
// each node publishes. This package must never know about the store, the
// ring or uploads, must never derive the gossip key from any other secret,
// and must never log key material.
package cluster
