package push

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/telemeter/telemeter/internal/upload"
)

// DefaultLimitBytes is the largest encoded body the client sends, as in
// openshift/telemeter.
const DefaultLimitBytes = 200 << 10

// ErrBatchTooLarge means the encoded batch exceeded the client's byte limit
// and was dropped without being sent. It wraps upload.ErrTooLarge.
var ErrBatchTooLarge = fmt.Errorf("batch over the byte limit: %w", upload.ErrTooLarge)

// Options configure a Client. AuthorizeURL, UploadURL and ID are required,
// and one of Token or TokenFile.
type Options struct {
	AuthorizeURL string // POST ?id=<ID> with the cluster token
	UploadURL    string // POST the body with the JWT
	ID           string // the cluster ID
	// Token is the cluster token sent to /authorize. TokenFile, when set, is
	// read at every authorization instead.
	Token     string
	TokenFile string
	// CAFile is a PEM bundle for the server's certificate. Empty: system roots.
	CAFile string
	// CertFile and KeyFile are a client certificate presented to the server
	// (its mTLS identity mode). Empty: none.
	CertFile, KeyFile string
	// Transport replaces the HTTP transport (tests). CAFile is ignored then.
	Transport http.RoundTripper
	// RequestTimeout bounds one HTTP request. Default 1m.
	RequestTimeout time.Duration
	// LimitBytes caps the encoded body. Default DefaultLimitBytes.
	LimitBytes int64
	// Backoff shapes the waits between attempts.
	Backoff Backoff
	// MaxAttempts bounds the requests of one Push (authorize excluded).
	// Default 10. The context's deadline bounds them too: a wait that would
	// end after it is not started.
	MaxAttempts int
	// RefreshFraction of a token's lifetime after which it is refreshed
	// before use. Default 0.8.
	RefreshFraction float64

	// Now, Sleep and Rand replace the clock, the wait between attempts and
	// the jitter source (tests). Sleep returns early with ctx's error.
	Now   func() time.Time
	Sleep func(ctx context.Context, d time.Duration) error
	Rand  func() float64
}

// BuildFunc encodes the batch to push, given the labels /authorize asked the
// client to add to every series. It is called again only if those labels
// change during the push (after a re-authorization).
type BuildFunc func(labels map[string]string) ([]byte, error)

type metrics struct {
	pushes         *prometheus.CounterVec
	duration       prometheus.Histogram
	retries        prometheus.Counter
	tokenRefreshes prometheus.Counter
	tokenFailures  prometheus.Counter
	bytes          prometheus.Gauge
}

// Push results, the values of telemeter_client_pushes_total's result label.
const (
	ResultSuccess  = "success"
	ResultTooLarge = "too_large" // dropped by the client: over LimitBytes
	ResultRejected = "rejected"  // a final answer: 400, 401 after re-authorizing, 403, 413, ...
	ResultFailed   = "failed"    // retries exhausted, deadline, transport, cancelled
)

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	m := &metrics{
		pushes: f.NewCounterVec(prometheus.CounterOpts{
			Name: "telemeter_client_pushes_total",
			Help: "Pushes by result: success, too_large (dropped by the client), rejected (final answer), failed (retries exhausted).",
		}, []string{"result"}),
		duration: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "telemeter_client_push_duration_seconds",
			Help:    "Time of one push, authorization and retries included.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300},
		}),
		retries: f.NewCounter(prometheus.CounterOpts{
			Name: "telemeter_client_retries_total",
			Help: "Requests sent again after a retryable failure.",
		}),
		tokenRefreshes: f.NewCounter(prometheus.CounterOpts{
			Name: "telemeter_client_token_refreshes_total",
			Help: "Token exchanges attempted at /authorize.",
		}),
		tokenFailures: f.NewCounter(prometheus.CounterOpts{
			Name: "telemeter_client_token_refresh_failures_total",
			Help: "Token exchanges at /authorize that failed.",
		}),
		bytes: f.NewGauge(prometheus.GaugeOpts{
			Name: "telemeter_client_push_bytes",
			Help: "Encoded size of the last batch built for a push.",
		}),
	}
	for _, r := range []string{ResultSuccess, ResultTooLarge, ResultRejected, ResultFailed} {
		m.pushes.WithLabelValues(r)
	}
	return m
}

// Client pushes batches to one telemeter server.
type Client struct {
	uploadURL   string
	client      *http.Client
	timeout     time.Duration
	limit       int64
	backoff     Backoff
	maxAttempts int
	now         func() time.Time
	sleep       func(context.Context, time.Duration) error
	rand        func() float64
	tokens      *tokenSource
	metrics     *metrics
	logger      *slog.Logger
}

// New returns a Client for o.
func New(o Options, logger *slog.Logger, reg prometheus.Registerer) (*Client, error) {
	authURL, err := parseURL("authorize", o.AuthorizeURL)
	if err != nil {
		return nil, err
	}
	if _, err := parseURL("upload", o.UploadURL); err != nil {
		return nil, err
	}
	if o.ID == "" {
		return nil, errors.New("new push client: the cluster id is empty")
	}
	if o.Token == "" && o.TokenFile == "" {
		return nil, errors.New("new push client: no cluster token")
	}
	rt := o.Transport
	if rt == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.Proxy = http.ProxyFromEnvironment
		if o.CAFile != "" || o.CertFile != "" {
			cfg := &tls.Config{MinVersion: tls.VersionTLS12}
			if o.CAFile != "" {
				pool, err := loadCA(o.CAFile)
				if err != nil {
					return nil, err
				}
				cfg.RootCAs = pool
			}
			if o.CertFile != "" || o.KeyFile != "" {
				cert, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
				if err != nil {
					return nil, fmt.Errorf("load client certificate: %w", err)
				}
				cfg.Certificates = []tls.Certificate{cert}
			}
			t.TLSClientConfig = cfg
		}
		rt = t
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = time.Minute
	}
	if o.LimitBytes <= 0 {
		o.LimitBytes = DefaultLimitBytes
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 10
	}
	if o.RefreshFraction <= 0 || o.RefreshFraction > 1 {
		o.RefreshFraction = 0.8
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Sleep == nil {
		o.Sleep = sleep
	}
	if o.Rand == nil {
		o.Rand = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())).Float64
	}
	m := newMetrics(reg)
	hc := &http.Client{Transport: rt}
	return &Client{
		uploadURL:   o.UploadURL,
		client:      hc,
		timeout:     o.RequestTimeout,
		limit:       o.LimitBytes,
		backoff:     o.Backoff.withDefaults(),
		maxAttempts: o.MaxAttempts,
		now:         o.Now,
		sleep:       o.Sleep,
		rand:        o.Rand,
		metrics:     m,
		logger:      logger,
		tokens: &tokenSource{
			url:          authURL,
			id:           o.ID,
			clusterToken: o.Token,
			tokenFile:    o.TokenFile,
			refresh:      o.RefreshFraction,
			client:       hc,
			timeout:      o.RequestTimeout,
			now:          o.Now,
			logger:       logger,
			metrics:      m,
		},
	}, nil
}

func parseURL(what, s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("parse %s url: %w", what, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("parse %s url %q: want http(s)://host[:port]/path", what, s)
	}
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

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Invalidate drops the cached JWT, so the next push authorizes again (after
// the cluster token changed, for instance).
func (c *Client) Invalidate() { c.tokens.invalidate("") }

// permanentError marks a failure that no retry can fix.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

func permanent(err error) error { return &permanentError{err: err} }

func retryable(err error) bool {
	var pe *permanentError
	if errors.As(err, &pe) {
		return false
	}
	return upload.Retryable(err)
}

// Result classifies the error of a Push for metrics and logs.
func Result(err error) string {
	switch {
	case err == nil:
		return ResultSuccess
	case errors.Is(err, ErrBatchTooLarge):
		return ResultTooLarge
	case !retryable(err):
		return ResultRejected
	default:
		return ResultFailed
	}
}

// Push authorizes if needed, builds the body with the authorized labels and
// uploads it, retrying retryable failures until MaxAttempts or ctx's
// deadline. A 401 from /upload makes it authorize again, once per Push.
func (c *Client) Push(ctx context.Context, build BuildFunc) error {
	start := c.now()
	err := c.push(ctx, build)
	c.metrics.duration.Observe(c.now().Sub(start).Seconds())
	c.metrics.pushes.WithLabelValues(Result(err)).Inc()
	return err
}

// attemptState carries what one Push keeps across its attempts.
type attemptState struct {
	build        BuildFunc
	body         []byte
	labels       map[string]string
	built        bool
	reauthorized bool
}

func (c *Client) push(ctx context.Context, build BuildFunc) error {
	st := &attemptState{build: build}
	for attempt := 1; ; attempt++ {
		err := c.attempt(ctx, st)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("push: stopped: %w (last error: %w)", context.Cause(ctx), err)
		}
		if !retryable(err) {
			return err
		}
		if attempt >= c.maxAttempts {
			return fmt.Errorf("push: giving up after %d attempts: %w", attempt, err)
		}
		wait := upload.RetryAfter(err)
		if wait <= 0 {
			wait = c.backoff.Delay(attempt-1, c.rand())
		}
		if dl, ok := ctx.Deadline(); ok && c.now().Add(wait).After(dl) {
			return fmt.Errorf("push: giving up, the next attempt in %s would end after the deadline: %w", wait, err)
		}
		c.metrics.retries.Inc()
		c.logger.Warn("push failed, retrying", "err", err, "attempt", attempt, "wait", wait.String())
		if err := c.sleep(ctx, wait); err != nil {
			return fmt.Errorf("push: stopped while waiting to retry: %w", err)
		}
	}
}

func (c *Client) attempt(ctx context.Context, st *attemptState) error {
	jwt, labels, err := c.tokens.get(ctx)
	if err != nil {
		return err
	}
	if err := c.prepare(st, labels); err != nil {
		return err
	}
	err = c.upload(ctx, jwt, st.body)
	if !errors.Is(err, upload.ErrUnauthorized) || st.reauthorized {
		return err
	}
	// The JWT was refused (expired early, key rotated): authorize once more
	// and send again at once.
	st.reauthorized = true
	c.logger.Info("upload refused the token, authorizing again", "err", err)
	c.tokens.invalidate(jwt)
	if jwt, labels, err = c.tokens.get(ctx); err != nil {
		return err
	}
	if err := c.prepare(st, labels); err != nil {
		return err
	}
	err = c.upload(ctx, jwt, st.body)
	if errors.Is(err, upload.ErrUnauthorized) {
		return permanent(fmt.Errorf("push: refused a token /authorize just issued: %w", err))
	}
	return err
}

// prepare builds the body for labels unless it was built for equal labels.
func (c *Client) prepare(st *attemptState, labels map[string]string) error {
	if st.built && maps.Equal(st.labels, labels) {
		return nil
	}
	body, err := st.build(labels)
	if err != nil {
		return permanent(fmt.Errorf("push: build batch: %w", err))
	}
	st.body, st.labels, st.built = body, labels, true
	c.metrics.bytes.Set(float64(len(body)))
	if int64(len(body)) > c.limit {
		return permanent(fmt.Errorf("push: encoded batch of %d bytes exceeds the limit of %d bytes (--limit-bytes), dropped unsent: %w",
			len(body), c.limit, ErrBatchTooLarge))
	}
	return nil
}

func (c *Client) upload(ctx context.Context, jwt string, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.uploadURL, bytes.NewReader(body))
	if err != nil {
		return permanent(fmt.Errorf("upload: %w", err))
	}
	req.Header.Set("Authorization", "Bearer "+jwt)
	req.Header.Set("Content-Type", upload.MediaTypeProtoDelim)
	if len(body) > 0 {
		// An empty batch is an empty delimited stream; the snappy encoder
		// writes nothing for it, which is not a valid snappy body.
		req.Header.Set("Content-Encoding", upload.EncodingSnappy)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return fmt.Errorf("upload: %w", err)
	}
	defer drain(resp)
	reason, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if err := upload.FromResponse(resp, reason); err != nil {
		return fmt.Errorf("upload: %w", err)
	}
	return nil
}
