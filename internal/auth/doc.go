// Package auth is the server side of authentication: the signing and
// verification keys, the JWTs that /authorize hands out and /upload checks,
// the authorizers that decide whether a cluster token may claim a cluster ID
// (a tokens file or an upstream authorization service), and the /authorize
// HTTP endpoint that ties them together.
//
// Every token it sees is hostile until verified: Verify rejects malformed
// tokens before any cryptography and every failure maps to 401. This package
// must never log or keep a raw cluster token (caches are keyed by a salted
// hash), never accept unsigned or HMAC tokens, and never import the client
// side or any app package.
package auth
