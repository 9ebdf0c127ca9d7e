// Package authorizationserver is the composition root of the
// authorization-server binary: the upstream authorizer telemeter-server asks,
// over the token review protocol of DESIGN §3, whether a cluster token may
// claim a cluster ID.
//
// It owns the claims file, the record of which account claimed which cluster
// ID first. A claim is on disk (temporary file, fsync, rename, fsync of the
// directory) before it is acknowledged, so a restart or a crash never lets a
// second account take an ID the first was told it holds. It must never log a
// cluster token, answer 2xx for a claim it did not persist, or share its
// state with another process: one authorization-server owns one claims file.
package authorizationserver
