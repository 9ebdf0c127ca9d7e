// Command telemeter-client federates a curated subset of one Prometheus
// server's metrics, cleans and anonymizes it, and pushes it to a telemeter
// server every --interval. See docs/client.md for every flag.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/telemeter/telemeter/internal/app/client"
)

// multi is a repeatable string flag.
type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

// commaList is a flag of comma-separated names; repeating it adds more.
type commaList []string

func (c *commaList) String() string { return strings.Join(*c, ",") }
func (c *commaList) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*c = append(*c, s)
		}
	}
	return nil
}

// parseFlags turns the command line into Options and validates them.
func parseFlags(args []string, stderr io.Writer) (client.Options, error) {
	o := client.DefaultOptions()
	fs := flag.NewFlagSet("telemeter-client", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.From, "from", o.From, "Base URL of the Prometheus server to federate from, e.g. http://localhost:9090.")
	fs.StringVar(&o.FromToken, "from-token", o.FromToken, "Bearer token sent to Prometheus.")
	fs.StringVar(&o.FromTokenFile, "from-token-file", o.FromTokenFile, "File holding the bearer token for Prometheus, read before every scrape.")
	fs.StringVar(&o.FromCAFile, "from-ca-file", o.FromCAFile, "PEM bundle of the CAs that sign Prometheus's certificate.")
	fs.StringVar(&o.To, "to", o.To, "Base URL of the telemeter server; /authorize and /upload are appended.")
	fs.StringVar(&o.ToAuthorize, "to-auth", o.ToAuthorize, "Full URL of the authorize endpoint (overrides <to>/authorize).")
	fs.StringVar(&o.ToUpload, "to-upload", o.ToUpload, "Full URL of the upload endpoint (overrides <to>/upload).")
	fs.StringVar(&o.ToToken, "to-token", o.ToToken, "The cluster token, exchanged at /authorize for an upload token.")
	fs.StringVar(&o.ToTokenFile, "to-token-file", o.ToTokenFile, "File holding the cluster token, read at every authorization.")
	fs.StringVar(&o.ToCAFile, "to-ca-file", o.ToCAFile, "PEM bundle of the CAs that sign the telemeter server's certificate.")
	fs.StringVar(&o.ToCertFile, "to-cert-file", o.ToCertFile, "Client certificate presented to the server (its mTLS identity mode).")
	fs.StringVar(&o.ToKeyFile, "to-key-file", o.ToKeyFile, "Key of --to-cert-file.")
	fs.StringVar(&o.ID, "id", o.ID, "The cluster ID to authorize as.")
	fs.DurationVar(&o.Interval, "interval", o.Interval, "Time between pushes (each wait jittered by ±5 %; the first push comes after a random part of it).")
	fs.Int64Var(&o.LimitBytes, "limit-bytes", o.LimitBytes, "Largest encoded body pushed, in bytes; a larger batch is dropped with an error.")
	fs.Var((*multi)(&o.Matchers), "match", "PromQL series selector to federate (repeatable); default "+client.DefaultMatch+" when no rule is given.")
	fs.StringVar(&o.MatchFile, "match-file", o.MatchFile, "File of --match selectors, one per line, # for comments; re-read on reload.")
	fs.Var((*multi)(&o.Labels), "label", "name=value added to every series (repeatable).")
	fs.Var((*multi)(&o.Renames), "rename", "old=new metric rename (repeatable); ALERTS=alerts is always added unless overridden.")
	fs.Var((*commaList)(&o.AnonymizeLabels), "anonymize-labels", "Comma-separated label names whose values are replaced by salted hashes.")
	fs.StringVar(&o.AnonymizeSalt, "anonymize-salt", o.AnonymizeSalt, "Salt of the anonymizing hash.")
	fs.StringVar(&o.AnonymizeSaltFile, "anonymize-salt-file", o.AnonymizeSaltFile, "File holding the salt; re-read on reload.")
	fs.StringVar(&o.AnonymizeMode, "anonymize-mode", o.AnonymizeMode, "Hash form: legacy (12 characters, as openshift/telemeter) or hmac (24 characters, HMAC-SHA256).")
	fs.Var((*multi)(&o.ElideLabels), "elide-label", "Label removed from every series (repeatable).")
	fs.DurationVar(&o.MaxSampleAge, "max-sample-age", o.MaxSampleAge, "Samples older than this are dropped before pushing; 0 keeps all.")
	fs.StringVar(&o.Listen, "listen", o.Listen, "Address for /metrics, /healthz, /federate and /-/reload; empty serves nothing.")
	fs.StringVar(&o.LogLevel, "log-level", o.LogLevel, "Log level: debug, info, warn or error.")
	fs.BoolVar(&o.Once, "once", o.Once, "Push once and exit; non-zero exit status on failure.")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q: every setting is a flag", fs.Arg(0))
	}
	return o, o.Validate()
}

func run(args []string, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		_, _ = fmt.Fprintf(stderr, "telemeter-client: %v\n", err)
		return 2
	}
	logger, err := client.NewLogger(stderr, o.LogLevel)
	if err != nil {
		_, _ = fmt.Fprintf(stderr, "telemeter-client: %v\n", err)
		return 2
	}
	o.Logger = logger
	o.Registry = prometheus.NewRegistry()
	o.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	o.Reload = hup

	if err := client.Run(ctx, o); err != nil {
		logger.Error("telemeter-client failed", "err", err)
		return 1
	}
	return 0
}

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}
