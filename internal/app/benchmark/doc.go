// Package benchmark is the composition root of telemeter-benchmark, a load
// generator: N simulated clusters, each with its own cluster ID and upload
// token, push evolving copies of a template payload to a telemeter server on
// a jittered interval (or back to back), and Run reports throughput, latency
// and answers by status code. The same clusters can push the same payloads
// to the peers the project compares itself with: a Prometheus remote-write
// receiver and a Pushgateway (Options.Target).
//
// It owns the simulated clusters' state (token, values, schedule) and the
// pre-encoded template their bodies are built from. It must never retry an
// upload behind the report's back (every request is counted), never run
// without a bound when a count or a duration is given, and never handle
// signals itself: main turns them into a context.
package benchmark
