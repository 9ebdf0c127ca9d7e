package client

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"

	"github.com/telemeter/telemeter/internal/push"
	"github.com/telemeter/telemeter/internal/scrape"
	"github.com/telemeter/telemeter/internal/transform"
)

// Defaults of the options, as in openshift/telemeter where it has them.
const (
	DefaultInterval     = 4*time.Minute + 30*time.Second
	DefaultLimitBytes   = push.DefaultLimitBytes
	DefaultListen       = "localhost:9002"
	DefaultMatch        = `{__name__="up"}`
	DefaultMaxSampleAge = 10 * time.Minute
	DefaultLogLevel     = "info"
	DefaultAnonymize    = "legacy"
)

// DefaultRenames are applied unless a --rename flag renames the same family
// or targets the same name.
var defaultRenames = map[string]string{"ALERTS": "alerts"}

// Options is every setting of telemeter-client. Each field of the first
// group is a command-line flag of the same name; the rest is wiring.
type Options struct {
	From          string // --from: base URL of the source Prometheus
	FromToken     string // --from-token
	FromTokenFile string // --from-token-file, read before every scrape
	FromCAFile    string // --from-ca-file

	To          string // --to: base URL of the telemeter server
	ToAuthorize string // --to-auth: overrides <to>/authorize
	ToUpload    string // --to-upload: overrides <to>/upload
	ToToken     string // --to-token: the cluster token
	ToTokenFile string // --to-token-file, read at every authorization
	ToCAFile    string // --to-ca-file
	ToCertFile  string // --to-cert-file: client certificate for the server's mTLS mode
	ToKeyFile   string // --to-key-file

	ID         string        // --id: the cluster ID
	Interval   time.Duration // --interval
	LimitBytes int64         // --limit-bytes: largest encoded body sent

	Matchers  []string // --match, repeatable
	MatchFile string   // --match-file: one rule per line, # comments
	Labels    []string // --label name=value, repeatable
	Renames   []string // --rename old=new, repeatable

	AnonymizeLabels   []string // --anonymize-labels, comma-separated
	AnonymizeSalt     string   // --anonymize-salt
	AnonymizeSaltFile string   // --anonymize-salt-file
	AnonymizeMode     string   // --anonymize-mode: legacy or hmac
	ElideLabels       []string // --elide-label, repeatable

	MaxSampleAge time.Duration // --max-sample-age: older samples are dropped
	Listen       string        // --listen: "" serves nothing
	LogLevel     string        // --log-level
	Once         bool          // --once

	// Listener replaces Listen (tests bind 127.0.0.1:0).
	Listener net.Listener
	// Logger replaces the logger Run builds from LogLevel.
	Logger *slog.Logger
	// Registry is served on /metrics; nil: a new one.
	Registry *prometheus.Registry
	// Reload delivers SIGHUP.
	Reload <-chan os.Signal

	// Now, Sleep and Rand replace the clock, the waits and the random source
	// of the schedule and the retries (tests).
	Now   func() time.Time
	Sleep func(ctx context.Context, d time.Duration) error
	Rand  *rand.Rand
	// Backoff and RequestTimeout shape the pushes; zero values: push defaults.
	Backoff        push.Backoff
	RequestTimeout time.Duration
	// Transport replaces the HTTP transport of scrape and push (tests).
	Transport http.RoundTripper
}

// DefaultOptions returns Options with every default set.
func DefaultOptions() Options {
	return Options{
		Interval:      DefaultInterval,
		LimitBytes:    DefaultLimitBytes,
		Listen:        DefaultListen,
		LogLevel:      DefaultLogLevel,
		AnonymizeMode: DefaultAnonymize,
		MaxSampleAge:  DefaultMaxSampleAge,
	}
}

func (o *Options) authorizeURL() string {
	if o.ToAuthorize != "" {
		return o.ToAuthorize
	}
	return strings.TrimSuffix(o.To, "/") + "/authorize"
}

func (o *Options) uploadURL() string {
	if o.ToUpload != "" {
		return o.ToUpload
	}
	return strings.TrimSuffix(o.To, "/") + "/upload"
}

// Validate refuses options the client cannot run with, reading the files
// they name, and says which flag is wrong.
func (o *Options) Validate() error {
	if o.From == "" {
		return errors.New("--from is required: the URL of the Prometheus server to federate from")
	}
	if _, err := scrape.FederateURL(o.From); err != nil {
		return fmt.Errorf("--from: %w", err)
	}
	if o.To == "" && (o.ToAuthorize == "" || o.ToUpload == "") {
		return errors.New("--to is required: the URL of the telemeter server (or both --to-auth and --to-upload)")
	}
	for _, u := range []struct{ flag, url string }{{"--to-auth", o.authorizeURL()}, {"--to-upload", o.uploadURL()}} {
		if p, err := url.Parse(u.url); err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			return fmt.Errorf("%s: %q is not an http(s) URL (check --to)", u.flag, u.url)
		}
	}
	if o.ID == "" {
		return errors.New("--id is required: the cluster ID to authorize as")
	}
	if o.ToToken == "" && o.ToTokenFile == "" {
		return errors.New("--to-token or --to-token-file is required: the cluster token for /authorize")
	}
	if o.ToToken != "" && o.ToTokenFile != "" {
		return errors.New("--to-token and --to-token-file: set only one")
	}
	if o.FromToken != "" && o.FromTokenFile != "" {
		return errors.New("--from-token and --from-token-file: set only one")
	}
	if o.Interval <= 0 {
		return fmt.Errorf("--interval must be positive, got %s", o.Interval)
	}
	if o.LimitBytes <= 0 {
		return fmt.Errorf("--limit-bytes must be positive, got %d", o.LimitBytes)
	}
	if o.MaxSampleAge < 0 {
		return fmt.Errorf("--max-sample-age must not be negative, got %s", o.MaxSampleAge)
	}
	if _, err := parseLevel(o.LogLevel); err != nil {
		return err
	}
	if len(o.AnonymizeLabels) > 0 && o.AnonymizeSalt == "" && o.AnonymizeSaltFile == "" {
		return errors.New("--anonymize-labels needs a salt: set --anonymize-salt or --anonymize-salt-file")
	}
	if o.AnonymizeSalt != "" && o.AnonymizeSaltFile != "" {
		return errors.New("--anonymize-salt and --anonymize-salt-file: set only one")
	}
	for _, name := range slices.Concat(o.AnonymizeLabels, o.ElideLabels) {
		if !model.LegacyValidation.IsValidLabelName(name) {
			return fmt.Errorf("--anonymize-labels/--elide-label: invalid label name %q", name)
		}
	}
	if _, err := loadConfig(o); err != nil {
		return err
	}
	return nil
}

// config is what a reload may change. It is immutable once built.
type config struct {
	rules   []string        // match[] rules, also the allowlist
	chain   transform.Chain // everything up to and including --label
	toToken string          // content of --to-token-file, to notice a change
}

// loadConfig parses the flags and reads the files they name: the match file,
// the salt file and the token files.
func loadConfig(o *Options) (*config, error) {
	now := o.Now
	if now == nil {
		now = time.Now
	}
	rules := slices.Clone(o.Matchers)
	if o.MatchFile != "" {
		fromFile, err := readRules(o.MatchFile)
		if err != nil {
			return nil, err
		}
		rules = append(rules, fromFile...)
	}
	if len(rules) == 0 {
		rules = []string{DefaultMatch}
	}
	selectors, err := transform.ParseSelectors(rules)
	if err != nil {
		return nil, fmt.Errorf("--match: %w", err)
	}
	renames, err := parseRenames(o.Renames)
	if err != nil {
		return nil, fmt.Errorf("--rename: %w", err)
	}
	labels, err := transform.ParseLabels(o.Labels)
	if err != nil {
		return nil, fmt.Errorf("--label: %w", err)
	}
	mode, err := transform.ParseAnonymizeMode(o.AnonymizeMode)
	if err != nil {
		return nil, fmt.Errorf("--anonymize-mode: %w", err)
	}
	salt := o.AnonymizeSalt
	if o.AnonymizeSaltFile != "" {
		if salt, err = readSecret(o.AnonymizeSaltFile); err != nil {
			return nil, fmt.Errorf("--anonymize-salt-file: %w", err)
		}
	}
	if o.FromTokenFile != "" {
		if _, err := readSecret(o.FromTokenFile); err != nil {
			return nil, fmt.Errorf("--from-token-file: %w", err)
		}
	}
	cfg := &config{rules: rules}
	if o.ToTokenFile != "" {
		if cfg.toToken, err = readSecret(o.ToTokenFile); err != nil {
			return nil, fmt.Errorf("--to-token-file: %w", err)
		}
	}

	cfg.chain = transform.Chain{
		transform.DropInvalid(now, o.MaxSampleAge),
		transform.Allowlist(selectors),
		transform.Rename(renames),
	}
	if len(o.AnonymizeLabels) > 0 {
		cfg.chain = append(cfg.chain, transform.Anonymize(salt, o.AnonymizeLabels, mode))
	}
	if len(o.ElideLabels) > 0 {
		cfg.chain = append(cfg.chain, transform.Elide(o.ElideLabels...))
	}
	if len(labels) > 0 {
		cfg.chain = append(cfg.chain, transform.AddLabels(labels))
	}
	return cfg, nil
}

// parseRenames adds the default renames to the flags', unless a flag renames
// the same family or claims the same target name.
func parseRenames(flags []string) (map[string]string, error) {
	renames, err := transform.ParseRenames(flags)
	if err != nil {
		return nil, err
	}
	for from, to := range defaultRenames {
		if _, ok := renames[from]; ok {
			continue
		}
		taken := false
		for _, t := range renames {
			taken = taken || t == to
		}
		if !taken {
			renames[from] = to
		}
	}
	return renames, nil
}

// readRules reads a match file: one selector per line; blank lines and lines
// starting with # are skipped. A file without rules is an error, so that an
// emptied file does not silently fall back to the default rule.
func readRules(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--match-file: %w", err)
	}
	var rules []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		rules = append(rules, line)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("--match-file: read %s: %w", path, err)
	}
	if len(rules) == 0 {
		return nil, fmt.Errorf("--match-file: %s holds no rule", path)
	}
	return rules, nil
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
