// Package transform rewrites metric families on their way out of a site: it
// drops invalid and too-old samples, renames families, adds, requires and
// removes labels, anonymizes label values, keeps only allowed series and puts
// everything into a stable order. telemeter-client runs a Chain of these over
// every batch it pushes; the server reuses the label and allowlist steps.
//
// Transformers work in place on []*dto.MetricFamily. A transformer drops one
// series by setting its entry in mf.Metric to nil, and a whole family by
// returning keep=false; Pack removes the holes. Transformers assume that each
// metric owns its label slice and label pairs, as decoders produce them.
// Every transformer keeps only configuration fixed at construction, so one
// value may be used from several goroutines at once (on different families).
//
// This package must never do I/O, log, read the clock except through an
// injected now function, or import anything beyond the standard library,
// Prometheus's model and PromQL parser packages and internal/upload.
package transform
