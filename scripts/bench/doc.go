// Command bench is the harness behind `make bench`: it runs the performance
// workloads W1–W7 of the project's targets against real binaries on
// 127.0.0.1 (telemeter-server, and Prometheus and the Pushgateway as peers,
// driven by telemeter-benchmark), then the micro-benchmarks, and writes
// docs/benchmarks.md. scripts/bench.sh installs the peers, builds the
// binaries and runs it.
//
// It owns the processes it starts and the measurements it takes of them
// (CPU from /proc/<pid>/stat, RSS from /proc/<pid>/status and /metrics).
// It must never leave a process running or a load unbounded (everything
// stops by itself and is stopped at the end, also on SIGINT or SIGTERM),
// never listen or connect beyond 127.0.0.1, and never write a figure it did
// not measure: a missing number fails the run.
package main
