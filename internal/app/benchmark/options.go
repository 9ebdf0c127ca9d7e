package benchmark

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Modes of --mode.
const (
	// ModeInterval: every cluster pushes once per --interval (jittered),
	// its first push at a random point of the first interval.
	ModeInterval = "interval"
	// ModeSaturate: --concurrency pushers push back to back, taking the
	// clusters in turn, ignoring the interval.
	ModeSaturate = "saturate"
)

// Formats of --report.
const (
	ReportJSON = "json"
	ReportText = "text"
)

// Defaults, as in openshift/telemeter's benchmark where it has them.
const (
	DefaultInterval       = 4*time.Minute + 30*time.Second
	DefaultWorkers        = 1000
	DefaultListen         = "localhost:8080"
	DefaultIDPrefix       = "benchmark-"
	DefaultConcurrency    = 64
	DefaultRequestTimeout = 30 * time.Second
	DefaultLogLevel       = "info"
)

// jitter is how far apart from --interval consecutive pushes of one cluster
// may be, as a fraction of it (as telemeter-client's schedule).
const jitter = 0.05

// drainTimeout is how long requests in flight may finish after the run is
// over (--duration reached or a signal) before they are cancelled.
const drainTimeout = 5 * time.Second

// Options is every setting of telemeter-benchmark. Each field of the first
// group is a command-line flag of the same name; the rest is wiring.
type Options struct {
	Target      string // --target: telemeter, remote-write or pushgateway
	To          string // --to: base URL of the telemeter server (or the peer)
	ToAuthorize string // --to-auth: overrides <to>/authorize
	ToUpload    string // --to-upload: overrides <to>/upload
	ToToken     string // --to-token: the cluster token every simulated cluster uses
	ToTokenFile string // --to-token-file
	ToCAFile    string // --to-ca-file: CAs trusted besides the system's

	MetricsFile      string        // --metrics-file: text exposition template; "" = T232
	SeriesMultiplier int           // --series-multiplier: copies of each template series
	Interval         time.Duration // --interval
	Workers          int           // --workers: simulated clusters
	IDPrefix         string        // --id-prefix: cluster IDs are prefix + zero-padded index
	IDsFile          string        // --ids-file: cluster IDs, one a line; replaces Workers and IDPrefix
	Duration         time.Duration // --duration: 0 = until Count or ctx
	Count            int           // --count: pushes per cluster; 0 = unlimited
	Concurrency      int           // --concurrency: requests in flight at most
	Mode             string        // --mode: interval or saturate
	RequestTimeout   time.Duration // --request-timeout: one authorize or upload
	Preauthorize     bool          // --preauthorize: every token before the schedule starts
	Seed             uint64        // --seed: 0 = random
	Listen           string        // --listen: /metrics and /healthz; "" serves nothing
	Report           string        // --report: json or text (main prints it)
	LogLevel         string        // --log-level

	// Listener replaces Listen (tests bind 127.0.0.1:0).
	Listener net.Listener
	// Logger replaces the logger Run builds from LogLevel.
	Logger *slog.Logger
	// Registry is served on /metrics; nil: a new one.
	Registry *prometheus.Registry
	// Transport replaces the HTTP transport (tests).
	Transport http.RoundTripper
}

// DefaultOptions returns Options with every default set.
func DefaultOptions() Options {
	return Options{
		Target:           TargetTelemeter,
		SeriesMultiplier: 1,
		Interval:         DefaultInterval,
		Workers:          DefaultWorkers,
		IDPrefix:         DefaultIDPrefix,
		Concurrency:      DefaultConcurrency,
		Mode:             ModeInterval,
		RequestTimeout:   DefaultRequestTimeout,
		Listen:           DefaultListen,
		Report:           ReportText,
		LogLevel:         DefaultLogLevel,
	}
}

func (o *Options) authorizeURL() string {
	if o.ToAuthorize != "" {
		return o.ToAuthorize
	}
	return strings.TrimSuffix(o.To, "/") + "/authorize"
}

// target is --target, telemeter when unset.
func (o *Options) target() string {
	if o.Target == "" {
		return TargetTelemeter
	}
	return o.Target
}

// uploadURL is where uploads go: for telemeter <to>/upload, for remote
// write <to> itself; for a Pushgateway, the base of every cluster's URL.
func (o *Options) uploadURL() string {
	if o.ToUpload != "" {
		return o.ToUpload
	}
	switch o.target() {
	case TargetRemoteWrite, TargetPushgateway:
		return o.To
	}
	return strings.TrimSuffix(o.To, "/") + "/upload"
}

// Validate refuses options the benchmark cannot run with and says which
// flag is wrong. It does not read files; Run does.
func (o *Options) Validate() error {
	switch o.target() {
	case TargetTelemeter:
		if err := o.validateTelemeter(); err != nil {
			return err
		}
	case TargetRemoteWrite, TargetPushgateway:
		if o.To == "" && o.ToUpload == "" {
			return fmt.Errorf("--to is required: the URL of the %s peer", o.target())
		}
		if err := checkURL("--to", o.uploadURL()); err != nil {
			return err
		}
	default:
		return fmt.Errorf("--target %q: want %s, %s or %s", o.Target, TargetTelemeter, TargetRemoteWrite, TargetPushgateway)
	}
	switch {
	case o.Workers <= 0 && o.IDsFile == "":
		return fmt.Errorf("--workers must be positive, got %d", o.Workers)
	case o.Concurrency <= 0:
		return fmt.Errorf("--concurrency must be positive, got %d", o.Concurrency)
	case o.SeriesMultiplier <= 0:
		return fmt.Errorf("--series-multiplier must be positive, got %d", o.SeriesMultiplier)
	case o.Count < 0:
		return fmt.Errorf("--count must not be negative, got %d", o.Count)
	case o.Duration < 0:
		return fmt.Errorf("--duration must not be negative, got %s", o.Duration)
	case o.RequestTimeout <= 0:
		return fmt.Errorf("--request-timeout must be positive, got %s", o.RequestTimeout)
	}
	switch o.Mode {
	case ModeInterval:
		if o.Interval <= 0 {
			return fmt.Errorf("--interval must be positive, got %s", o.Interval)
		}
	case ModeSaturate:
	default:
		return fmt.Errorf("--mode %q: want %s or %s", o.Mode, ModeInterval, ModeSaturate)
	}
	switch o.Report {
	case ReportJSON, ReportText:
	default:
		return fmt.Errorf("--report %q: want %s or %s", o.Report, ReportJSON, ReportText)
	}
	if _, err := parseLevel(o.LogLevel); err != nil {
		return err
	}
	return nil
}

func (o *Options) validateTelemeter() error {
	if o.To == "" && (o.ToAuthorize == "" || o.ToUpload == "") {
		return errors.New("--to is required: the URL of the telemeter server (or both --to-auth and --to-upload)")
	}
	if err := checkURL("--to-auth", o.authorizeURL()); err != nil {
		return err
	}
	if err := checkURL("--to-upload", o.uploadURL()); err != nil {
		return err
	}
	if o.ToToken == "" && o.ToTokenFile == "" {
		return errors.New("--to-token or --to-token-file is required: the cluster token for /authorize")
	}
	if o.ToToken != "" && o.ToTokenFile != "" {
		return errors.New("--to-token and --to-token-file: set only one")
	}
	return nil
}

func checkURL(flag, u string) error {
	if p, err := url.Parse(u); err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
		return fmt.Errorf("%s: %q is not an http(s) URL (check --to)", flag, u)
	}
	return nil
}

// NewLogger returns a logfmt logger writing to w at level (debug, info,
// warn, error).
func NewLogger(w io.Writer, level string) (*slog.Logger, error) {
	l, err := parseLevel(level)
	if err != nil {
		return nil, err
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}

func parseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug, nil
	case "info", "":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("--log-level %q: want debug, info, warn or error", s)
}

func readSecret(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return s, nil
}
