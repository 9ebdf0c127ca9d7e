// Package remotewrite speaks Prometheus remote write 1.0 in both directions.
//
// Output: a Forwarder sends each cluster's latest stored snapshot to a
// remote-write target (Thanos Receive, Mimir, a Prometheus with the
// remote-write receiver), one tenant per cluster. It keeps a bounded dirty
// set (one entry per cluster, however many uploads arrive) and re-reads the
// snapshot from its Source when it sends, so a target that was down receives
// every cluster's latest snapshot when it returns. It owns the conversion of
// metric families to remote-write series, request splitting, retries and
// backoff.
//
// Input: DecodeWriteRequest decodes a remote-write body under limits, sizes
// checked before anything is allocated for them; ToFamilies turns the
// request into families for the store; ParseCredential reads the original
// telemeter's receive credential.
//
// This package must never write to the store, decide who may send what
// (authorization and validation do), or keep anything per upload: memory
// grows with the number of clusters, never with the number of uploads.
package remotewrite
