package authorizationserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/telemeter/telemeter/internal/auth"
	"github.com/telemeter/telemeter/internal/web"
)

// Defaults of Options.
const (
	DefaultMaxBodyBytes = 16 << 10
	DefaultMaxInFlight  = 256
)

// Options configure Run. Zero fields take defaults.
type Options struct {
	// Listener, if set, is served instead of listening on ListenAddress.
	Listener      net.Listener
	ListenAddress string
	// TokensFile is the JSON array of cluster tokens (see auth.TokenEntry).
	TokensFile string
	// ClaimsFile persists which account claimed each cluster ID; default
	// DefaultClaimsFile(TokensFile).
	ClaimsFile string
	// MaxBodyBytes bounds a token review body (default 16 KiB).
	MaxBodyBytes int64
	// MaxInFlight bounds the reviews served at once (default 256).
	MaxInFlight int
	Server      web.ServerOptions
	Logger      *slog.Logger
	// Registry gets the metrics and is served on /metrics; default a new one.
	Registry *prometheus.Registry
	Now      func() time.Time
}

// DefaultClaimsFile is the claims file beside a tokens file:
// tokens.json → tokens.claims.json.
func DefaultClaimsFile(tokensFile string) string {
	return strings.TrimSuffix(tokensFile, filepath.Ext(tokensFile)) + ".claims.json"
}

// Run serves token reviews until ctx ends, then shuts down gracefully:
// requests in flight finish (their claims are committed) before the claims
// committer stops. Run owns Options.Listener: it is closed when Run returns,
// also when Run fails to start.
func Run(ctx context.Context, o Options) (err error) {
	if o.Listener != nil {
		defer func() { _ = o.Listener.Close() }() // a second Close after Serve's is harmless
	}
	if o.TokensFile == "" {
		return errors.New("run authorization server: no tokens file")
	}
	if o.ClaimsFile == "" {
		o.ClaimsFile = DefaultClaimsFile(o.TokensFile)
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = DefaultMaxInFlight
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	logger := o.Logger

	tokens, err := auth.LoadTokensFile(o.TokensFile)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(o.ClaimsFile), 0o755); err != nil {
		return fmt.Errorf("create claims directory: %w", err)
	}
	unlock, err := lockFile(o.ClaimsFile + ".lock")
	if err != nil {
		return err
	}
	defer unlock()

	f := promauto.With(o.Registry)
	results := f.NewCounterVec(prometheus.CounterOpts{
		Name: "telemeter_authorization_server_reviews_total",
		Help: "Token reviews by result.",
	}, []string{"result"})
	for _, r := range reviewResults {
		results.WithLabelValues(r)
	}
	cm := &claimMetrics{
		claims: f.NewGauge(prometheus.GaugeOpts{
			Name: "telemeter_authorization_server_claims",
			Help: "Cluster IDs claimed, as persisted in the claims file.",
		}),
		writes: f.NewCounterVec(prometheus.CounterOpts{
			Name: "telemeter_authorization_server_claims_file_writes_total",
			Help: "Replacements of the claims file by result.",
		}, []string{"result"}),
	}
	cm.writes.WithLabelValues("success")
	cm.writes.WithLabelValues("error")
	claims, err := openClaims(o.ClaimsFile, o.Now, logger.With("component", "claims"), cm)
	if err != nil {
		return err
	}

	l := o.Listener
	if l == nil {
		if l, err = net.Listen("tcp", o.ListenAddress); err != nil {
			return fmt.Errorf("listen: %w", err)
		}
	}

	review := &reviewHandler{
		tokens:  tokens,
		claims:  claims,
		maxBody: o.MaxBodyBytes,
		logger:  logger.With("component", "review"),
		results: results,
	}
	httpMetrics := web.NewMetrics(o.Registry, "telemeter_authorization_server")
	gate := web.NewGate(o.MaxInFlight, 5*time.Second, nil)
	reviews := gate.Wrap(httpMetrics.Wrap("review", review))
	mux := http.NewServeMux()
	mux.Handle("/{$}", reviews)
	mux.Handle("/authorize", reviews)
	web.Health(mux, nil)
	mux.Handle("/metrics", promhttp.HandlerFor(o.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/", notFound)
	srv := web.NewServer(mux, o.Server, logger)

	logger.Info("authorization server listening", "address", l.Addr().String(),
		"tokens", tokens.Len(), "claims", claims.Len(), "claims_file", o.ClaimsFile)

	var g run.Group
	{
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error { return srv.Serve(ctx, l) }, func(error) { cancel() })
	}
	{
		// The committer outlives the server's shutdown, so that requests in
		// flight get their claims committed: it stops only once Serve has
		// returned.
		ctx, cancel := context.WithCancel(context.Background())
		g.Add(func() error { return claims.run(ctx) }, func(error) { cancel() })
	}
	err = g.Run()
	logger.Info("authorization server stopped")
	return err
}
