// Package server is the composition root of telemeter-server: it wires
// authentication, rate limits, validation, the store, federation and (in a
// cluster) membership, ring and forwarding, and runs them as oklog/run actors.
//
// It holds no protocol or storage logic of its own beyond the order of the
// upload pipeline (DESIGN §4).
package server
