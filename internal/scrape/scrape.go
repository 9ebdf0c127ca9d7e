package scrape

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	dto "github.com/prometheus/client_model/go"

	"github.com/telemeter/telemeter/internal/upload"
)

// Accept prefers delimited protobuf, the cheapest format to decode, and
// falls back to the text format, which every Prometheus serves.
const Accept = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.7," +
	"text/plain;version=0.0.4;q=0.3"

// Options configure a Scraper. Only From is required.
type Options struct {
	// From is the base URL of the Prometheus server. "/federate" is appended
	// to its path unless the path already ends with it.
	From string
	// Token is a bearer token sent to Prometheus. TokenFile, when set, is
	// read before every scrape instead, so a rotated token is picked up.
	Token     string
	TokenFile string
	// CAFile is a PEM bundle of the authorities that may sign Prometheus's
	// certificate. Empty: the system roots.
	CAFile string
	// Timeout bounds one scrape, from request to decoded body. Default 1m.
	Timeout time.Duration
	// Limits bound the decoded response. Zero: DefaultLimits.
	Limits upload.Limits
	// Transport replaces the HTTP transport (tests). CAFile is ignored then.
	Transport http.RoundTripper
}

// DefaultLimits are far above a sane federation (a few thousand series) and
// keep a misconfigured match rule from exhausting the client's memory.
func DefaultLimits() upload.Limits {
	return upload.Limits{
		CompressedBytes: 128 << 20,
		DecodedBytes:    128 << 20,
		Families:        100000,
		Series:          1000000,
		LabelsPerSeries: 128,
		NameLength:      1024,
		ValueLength:     16 << 10,
	}
}

type metrics struct {
	duration prometheus.Histogram
	scrapes  *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	m := &metrics{
		duration: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "telemeter_client_scrape_duration_seconds",
			Help:    "Time to read and decode /federate from the source Prometheus.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}),
		scrapes: f.NewCounterVec(prometheus.CounterOpts{
			Name: "telemeter_client_scrapes_total",
			Help: "Scrapes of the source Prometheus by result (success, failure).",
		}, []string{"result"}),
	}
	m.scrapes.WithLabelValues("success")
	m.scrapes.WithLabelValues("failure")
	return m
}

// Scraper reads /federate from one Prometheus server.
type Scraper struct {
	url       *url.URL
	client    *http.Client
	token     string
	tokenFile string
	timeout   time.Duration
	limits    upload.Limits
	metrics   *metrics
	logger    *slog.Logger
}

// New returns a Scraper for o. It fails when From is not an http(s) URL or
// the CA file cannot be used.
func New(o Options, logger *slog.Logger, reg prometheus.Registerer) (*Scraper, error) {
	u, err := FederateURL(o.From)
	if err != nil {
		return nil, err
	}
	rt := o.Transport
	if rt == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.Proxy = http.ProxyFromEnvironment
		if o.CAFile != "" {
			pool, err := loadCA(o.CAFile)
			if err != nil {
				return nil, err
			}
			t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		}
		rt = t
	}
	if o.Timeout <= 0 {
		o.Timeout = time.Minute
	}
	if o.Limits == (upload.Limits{}) {
		o.Limits = DefaultLimits()
	}
	return &Scraper{
		url:       u,
		client:    &http.Client{Transport: rt},
		token:     o.Token,
		tokenFile: o.TokenFile,
		timeout:   o.Timeout,
		limits:    o.Limits,
		metrics:   newMetrics(reg),
		logger:    logger,
	}, nil
}

// FederateURL turns the --from base URL into the /federate URL.
func FederateURL(from string) (*url.URL, error) {
	u, err := url.Parse(from)
	if err != nil {
		return nil, fmt.Errorf("parse prometheus url: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("parse prometheus url %q: want http(s)://host[:port][/path]", from)
	}
	if !strings.HasSuffix(u.Path, "/federate") {
		u.Path = strings.TrimSuffix(u.Path, "/") + "/federate"
	}
	u.RawQuery = ""
	return u, nil
}

func loadCA(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read ca file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("read ca file %s: no PEM certificate found", path)
	}
	return pool, nil
}

// ReadToken returns the trimmed content of a token file. An empty file is
// an error: sending no credentials by accident is worse than failing.
func ReadToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read token file: %w", err)
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", fmt.Errorf("read token file %s: file is empty", path)
	}
	return t, nil
}

// Scrape fetches the series selected by rules, one match[] parameter each.
func (s *Scraper) Scrape(ctx context.Context, rules []string) ([]*dto.MetricFamily, error) {
	start := time.Now()
	families, err := s.scrape(ctx, rules)
	s.metrics.duration.Observe(time.Since(start).Seconds())
	if err != nil {
		s.metrics.scrapes.WithLabelValues("failure").Inc()
		return nil, err
	}
	s.metrics.scrapes.WithLabelValues("success").Inc()
	return families, nil
}

func (s *Scraper) scrape(ctx context.Context, rules []string) ([]*dto.MetricFamily, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()

	u := *s.url
	q := url.Values{}
	for _, r := range rules {
		q.Add("match[]", r)
	}
	u.RawQuery = q.Encode()

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("scrape federate: %w", err)
	}
	req.Header.Set("Accept", Accept)
	token := s.token
	if s.tokenFile != "" {
		if token, err = ReadToken(s.tokenFile); err != nil {
			return nil, fmt.Errorf("scrape federate: %w", err)
		}
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}

	resp, err := s.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape federate: %w", err)
	}
	defer func() {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		_ = resp.Body.Close()
	}()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		reason := strings.TrimSpace(string(b))
		if i := strings.IndexByte(reason, '\n'); i >= 0 {
			reason = reason[:i]
		}
		return nil, fmt.Errorf("scrape federate: prometheus at %s answered %s: %s", s.url.Redacted(), resp.Status, reason)
	}
	families, err := upload.Decode(resp.Body, resp.Header.Get("Content-Type"), resp.Header.Get("Content-Encoding"), s.limits)
	if err != nil {
		if errors.Is(err, upload.ErrTooLarge) {
			return nil, fmt.Errorf("decode federate response: %w (narrow the match rules)", err)
		}
		return nil, fmt.Errorf("decode federate response: %w", err)
	}
	s.logger.Debug("scraped federate", "families", len(families), "format", resp.Header.Get("Content-Type"))
	return families, nil
}
