// Command telemeter-benchmark simulates a fleet of clusters pushing to a
// telemeter server and reports throughput, latency and answers by status
// code. See docs/benchmark-tool.md for every flag and the report.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/telemeter/telemeter/internal/app/benchmark"
)

// parseFlags turns the command line into Options and validates them.
func parseFlags(args []string, stderr io.Writer) (benchmark.Options, error) {
	o := benchmark.DefaultOptions()
	fs := flag.NewFlagSet("telemeter-benchmark", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.Target, "target", o.Target, "What to push to: telemeter (/authorize and /upload), remote-write (Prometheus remote write 1.0 to --to as is, e.g. http://host:9090/api/v1/write) or pushgateway (text format, PUT to <to>/metrics/job/telemeter/_id/<cluster ID>). The peers get the same payloads, without token exchange.")
	fs.StringVar(&o.To, "to", o.To, "Base URL of the telemeter server; /authorize and /upload are appended. For --target remote-write, the write URL; for pushgateway, its base URL.")
	fs.StringVar(&o.ToAuthorize, "to-auth", o.ToAuthorize, "Full URL of the authorize endpoint (overrides <to>/authorize).")
	fs.StringVar(&o.ToUpload, "to-upload", o.ToUpload, "Full URL of the upload endpoint (overrides <to>/upload).")
	fs.StringVar(&o.ToToken, "to-token", o.ToToken, "The cluster token every simulated cluster exchanges at /authorize.")
	fs.StringVar(&o.ToTokenFile, "to-token-file", o.ToTokenFile, "File holding the cluster token.")
	fs.StringVar(&o.ToCAFile, "to-ca-file", o.ToCAFile, "PEM bundle of CAs trusted for the server, besides the system's.")
	fs.StringVar(&o.MetricsFile, "metrics-file", o.MetricsFile, "Text exposition file every cluster sends (evolving its values); default: the built-in T232 payload.")
	fs.IntVar(&o.SeriesMultiplier, "series-multiplier", o.SeriesMultiplier, "Copies of each template series per cluster, told apart by a replica=\"k\" label.")
	fs.DurationVar(&o.Interval, "interval", o.Interval, "Time between pushes of one cluster in interval mode (jittered by ±5 %; first pushes spread over one interval).")
	fs.IntVar(&o.Workers, "workers", o.Workers, "Number of simulated clusters.")
	fs.StringVar(&o.IDPrefix, "id-prefix", o.IDPrefix, "Prefix of the cluster IDs; the rest is the cluster's zero-padded index.")
	fs.StringVar(&o.IDsFile, "ids-file", o.IDsFile, "File of cluster IDs, one a line (# comments); replaces --workers and --id-prefix.")
	fs.DurationVar(&o.Duration, "duration", o.Duration, "Stop after this long; 0 runs until --count is reached or a signal.")
	fs.IntVar(&o.Count, "count", o.Count, "Pushes per cluster, then stop; 0 is unlimited.")
	fs.IntVar(&o.Concurrency, "concurrency", o.Concurrency, "Requests in flight at most; in saturate mode, the number of pushers.")
	fs.StringVar(&o.Mode, "mode", o.Mode, "interval: each cluster pushes every --interval; saturate: push back to back, ignoring --interval.")
	fs.BoolVar(&o.Preauthorize, "preauthorize", o.Preauthorize, "Authorize every cluster before the first push, so the timed run (and --duration) holds no token exchange.")
	fs.DurationVar(&o.RequestTimeout, "request-timeout", o.RequestTimeout, "Timeout of one authorize or upload request.")
	fs.Uint64Var(&o.Seed, "seed", o.Seed, "Seed of the schedule and the values; 0 picks one (logged).")
	fs.StringVar(&o.Listen, "listen", o.Listen, "Address for /metrics and /healthz; empty serves nothing.")
	fs.StringVar(&o.Report, "report", o.Report, "Report printed on stdout at the end: text, or json (one object).")
	fs.StringVar(&o.LogLevel, "log-level", o.LogLevel, "Log level: debug, info, warn or error.")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q: every setting is a flag", fs.Arg(0))
	}
	return o, o.Validate()
}

func run(args []string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		_, _ = fmt.Fprintf(stderr, "telemeter-benchmark: %v\n", err)
		return 2
	}
	logger, err := benchmark.NewLogger(stderr, o.LogLevel)
	if err != nil {
		_, _ = fmt.Fprintf(stderr, "telemeter-benchmark: %v\n", err)
		return 2
	}
	o.Logger = logger
	o.Registry = prometheus.NewRegistry()
	o.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go func() {
		// The first signal ends the run and prints the report; a second
		// one kills the process as usual.
		<-ctx.Done()
		stop()
	}()

	rep, err := benchmark.Run(ctx, o)
	if err != nil && rep.Clusters == 0 {
		logger.Error("telemeter-benchmark failed", "err", err)
		return 1
	}
	write := rep.WriteText
	if o.Report == benchmark.ReportJSON {
		write = rep.WriteJSON
	}
	if werr := write(stdout); werr != nil {
		logger.Error("write report", "err", werr)
		return 1
	}
	if err != nil {
		logger.Error("telemeter-benchmark failed", "err", err)
		return 1
	}
	return 0
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}
