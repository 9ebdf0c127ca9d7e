// Package forward carries node-to-node traffic of a telemeter-server
// cluster: uploads proxied from the node a client reached to the cluster's
// owner, and snapshots pushed for hand-off and replication.
//
// Every request it sends carries a short-lived peer token signed with the
// cluster's shared key; the receiving node verifies it (and, for uploads,
// the client's own token too: there is no trusted side door). Concurrency
// is bounded, and a peer that cannot be reached is an error wrapping
// upload.ErrUnavailable, never a success.
//
// It knows nothing of the ring, the store or membership.
package forward
