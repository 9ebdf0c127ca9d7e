// Package federate serves /federate: the stored snapshots of the clusters this
// node owns, in the Prometheus text format 0.0.4 or as delimited protobuf, for
// a central Prometheus that scrapes every server with honor_labels.
//
// It owns the merge of many clusters into one exposition: one HELP and TYPE
// per family name, a type conflict between clusters resolved in favour of the
// first cluster, sample timestamps stripped by default (so the scraper stamps
// scrape time and writes staleness markers) or kept on request. It streams one
// family block of one cluster at a time, so its memory does not grow with the
// number of clusters or series it serves.
//
// This package must never modify the store, decide ownership itself (it asks
// Owns), or buffer a whole response.
package federate
