// Package examples tests the operator examples in the repository's
// examples/ directory: the central Prometheus configuration, the alerting
// rules and their unit tests (all through promtool), and the Grafana
// dashboard. It also checks that every telemeter_* metric the examples
// name is defined in the Go source, so renaming a metric without updating
// the examples fails the build.
//
// It holds no code of its own and must never be imported.
package examples
