// Package upload is the v1 wire protocol of telemeter, shared by the client
// and the server: media types, the authorize exchange, delimited-protobuf and
// text payloads, snappy streams, and the mapping between protocol conditions,
// HTTP status codes and retry decisions.
//
// Every decoder here reads untrusted bytes. Decoders take Limits, check a size
// before allocating for it, and fail with an error that maps to 400 or 413.
// This package must never log, keep state between calls, or import anything
// beyond the standard library and Prometheus's model packages.
package upload
