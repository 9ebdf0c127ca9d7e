package server

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/telemeter/telemeter/internal/admission"
	"github.com/telemeter/telemeter/internal/auth"
	"github.com/telemeter/telemeter/internal/cluster"
	"github.com/telemeter/telemeter/internal/federate"
	"github.com/telemeter/telemeter/internal/forward"
	"github.com/telemeter/telemeter/internal/limit"
	"github.com/telemeter/telemeter/internal/remotewrite"
	"github.com/telemeter/telemeter/internal/store"
	"github.com/telemeter/telemeter/internal/transform"
	"github.com/telemeter/telemeter/internal/upload"
	"github.com/telemeter/telemeter/internal/validate"
	"github.com/telemeter/telemeter/internal/web"
)

// peerTokenCacheSize bounds the verified peer tokens remembered: each node
// holds one at a time (renewed at half its life), so a few per peer.
const peerTokenCacheSize = 1024

// uploadHeapFactor is the peak heap of an upload in flight per byte of its
// compressed body, rounded up from W3's 180–238× (docs/benchmarks.md).
const uploadHeapFactor = 256

const (
	tokenIssuer   = "telemeter"
	tokenAudience = "telemeter-upload"
	tokenSkew     = 30 * time.Second
)

// Run starts the server and blocks until ctx is done or a part fails.
func Run(ctx context.Context, o Options, logger *slog.Logger, reg *prometheus.Registry) error {
	if err := o.Validate(); err != nil {
		return err
	}
	s, err := newServer(o, logger, reg)
	if err != nil {
		return err
	}
	return s.run(ctx)
}

type server struct {
	o      Options
	logger *slog.Logger
	reg    *prometheus.Registry

	authorizer auth.Authorizer
	issuer     *auth.Issuer
	verifier   *auth.Verifier
	limiter    *limit.Limiter
	validator  *validate.Validator
	store      *store.Store
	metrics    *metrics
	key        crypto.Signer
	pubs       []crypto.PublicKey
	placement  *placement // nil on a single node

	receiveLimiter *limit.Limiter
	receiveLimits  remotewrite.ReceiveLimits
	remoteWrite    *remotewrite.Forwarder // nil without --forward-url

	budget   *admission.Budget
	pressure *admission.Pressure
	writers  *admission.Writers

	ready atomic.Bool
}

func newServer(o Options, logger *slog.Logger, reg *prometheus.Registry) (*server, error) {
	s := &server{o: o, logger: logger, reg: reg, metrics: newMetrics(reg)}
	if err := os.MkdirAll(o.StorageDir, 0o750); err != nil {
		return nil, fmt.Errorf("create storage dir: %w", err)
	}

	// Authorizer.
	switch {
	case o.TokensFile != "":
		tf, err := auth.LoadTokensFile(o.TokensFile)
		if err != nil {
			return nil, fmt.Errorf("load tokens file: %w", err)
		}
		s.authorizer = tf
	case o.AuthorizeURL != "":
		s.authorizer = auth.NewUpstream(o.AuthorizeURL, &http.Client{Timeout: 15 * time.Second}, auth.UpstreamOptions{
			CacheTTL:    o.AuthorizeCacheTTL,
			NegativeTTL: o.AuthorizeNegCache,
		}, logger.With("component", "authorize"), reg)
	default:
		logger.Warn("no authorizer: every cluster token is accepted (--insecure-no-auth)")
		s.authorizer = insecureAuthorizer{}
	}

	// Signing and verification keys.
	var key crypto.Signer
	if o.SharedKeyFile != "" {
		pemBytes, err := os.ReadFile(o.SharedKeyFile)
		if err != nil {
			return nil, fmt.Errorf("read shared key: %w", err)
		}
		if key, err = auth.LoadKey(pemBytes); err != nil {
			return nil, fmt.Errorf("load shared key: %w", err)
		}
	} else {
		if o.ListenCluster != "" {
			return nil, errors.New("a cluster needs one signing key on every node: set --shared-key")
		}
		path := filepath.Join(o.StorageDir, "token-key.pem")
		k, created, err := auth.LoadOrCreateKey(path)
		if err != nil {
			return nil, fmt.Errorf("load or create token key: %w", err)
		}
		if created {
			logger.Info("generated a token signing key; pass --shared-key to choose one", "path", path)
		}
		key = k
	}
	pubs := []crypto.PublicKey{key.Public()}
	if o.VerificationKeys != "" {
		pemBytes, err := os.ReadFile(o.VerificationKeys)
		if err != nil {
			return nil, fmt.Errorf("read verification keys: %w", err)
		}
		extra, err := auth.LoadPublicKeys(pemBytes)
		if err != nil {
			return nil, fmt.Errorf("load verification keys: %w", err)
		}
		pubs = append(pubs, extra...)
	}
	var err error
	if s.issuer, err = auth.NewIssuer(key, tokenIssuer, tokenAudience, o.TokenExpire, nil); err != nil {
		return nil, err
	}
	s.verifier = auth.NewVerifier(pubs, tokenIssuer, tokenAudience, tokenSkew, nil).CacheVerified(o.TokenCacheSize)
	s.metrics.watchTokenCache(reg, s.verifier)
	s.key, s.pubs = key, pubs

	// Validation.
	serverLabels, err := transform.ParseLabels(o.Labels)
	if err != nil {
		return nil, err
	}
	rules := append([]string(nil), o.Whitelist...)
	if o.WhitelistFile != "" {
		b, err := os.ReadFile(o.WhitelistFile)
		if err != nil {
			return nil, fmt.Errorf("read whitelist file: %w", err)
		}
		rules = append(rules, splitRules(string(b))...)
	}
	var allow [][]*labels.Matcher
	if len(rules) > 0 {
		if allow, err = transform.ParseSelectors(rules); err != nil {
			return nil, err
		}
	}
	s.validator = validate.New(validate.Options{
		PartitionLabel: o.PartitionLabel,
		Labels:         serverLabels,
		RequiredLabels: o.RequiredLabels,
		Elide:          o.ElideLabels,
		Allow:          allow,
		MaxSeries:      o.SeriesBudget,
		MaxAge:         o.MaxAge,
		MaxFuture:      o.MaxFuture,
	}, reg)
	s.limiter = limit.New(limit.Options{Interval: o.RateLimit}, prometheus.WrapRegistererWith(prometheus.Labels{"endpoint": "upload"}, reg))
	s.receiveLimiter = limit.New(limit.Options{Interval: o.ReceiveRateLimit}, prometheus.WrapRegistererWith(prometheus.Labels{"endpoint": "receive"}, reg))
	s.receiveLimits = remotewrite.DefaultReceiveLimits()

	limit, source := admission.MemoryLimit()
	if set := admission.ApplyGoMemLimit(limit, 0.9); set > 0 {
		logger.Info("set the Go memory limit from the cgroup", "limit_bytes", set)
	}
	if limit > 0 {
		logger.Info("shedding load near the memory limit", "limit_bytes", limit, "source", source, "high_water", o.MemoryHighWater)
	}
	s.pressure = admission.NewPressure(limit, o.MemoryHighWater, nil, reg)
	// Bytes in flight, on the wire. An upload's peak heap is about 200
	// times its compressed body (W3 in docs/benchmarks.md: snappy expands
	// it up to ~21×, and every series becomes decoded objects), so under a
	// memory limit the budget lets the uploads in flight reach half the
	// limit at most: bodies past that wait for a quiet moment instead of
	// growing the heap into an OOM kill. A body larger than a quarter of
	// the budget still passes alone (admission.Budget).
	budget := max(o.MaxInflightBytes, 4*o.Limits.CompressedBytes)
	if limit > 0 {
		budget = min(budget, limit/2/uploadHeapFactor)
	}
	s.budget = admission.NewBudget(budget, reg)
	s.writers = admission.NewWriters(o.WriterWindow, 1_000_000, reg, logger.With("component", "admission"))

	st, err := store.Open(filepath.Join(o.StorageDir, "snapshots"), store.Options{TTL: o.TTL, IdentityLabel: o.PartitionLabel}, logger.With("component", "store"), reg)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	s.store = st
	if o.ForwardURL != "" {
		s.remoteWrite, err = remotewrite.NewForwarder(remotewrite.ForwarderOptions{
			URL:               o.ForwardURL,
			TenantHeader:      o.ForwardTenantHeader,
			BearerTokenFile:   o.ForwardBearerTokenFile,
			BasicUser:         o.ForwardBasicUser,
			BasicPasswordFile: o.ForwardBasicPasswordFile,
			CAFile:            o.ForwardCAFile,
		}, st, logger.With("component", "remote-write"), reg)
		if err != nil {
			return nil, fmt.Errorf("configure --forward-url: %w", err)
		}
		// Catch up after a restart: every stored snapshot is sent once.
		s.remoteWrite.NotifyAll(st.List())
	}
	return s, nil
}

func (s *server) run(ctx context.Context) error {
	o := s.o
	defer func() { _ = s.store.Close() }()
	extTLS, err := web.LoadTLS(o.TLSCert, o.TLSKey)
	if err != nil {
		return fmt.Errorf("external listener: %w", err)
	}
	if o.ClientCAFile != "" {
		pemBytes, err := os.ReadFile(o.ClientCAFile)
		if err != nil {
			return fmt.Errorf("read --client-ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemBytes) {
			return errors.New("--client-ca-file holds no PEM certificate")
		}
		// Peers reach each other on this listener without client
		// certificates (they carry peer tokens), so certificates are asked
		// for and verified when given; the handlers require them.
		extTLS.ClientCAs = pool
		extTLS.ClientAuth = tls.VerifyClientCertIfGiven
	}
	intTLS, err := web.LoadTLS(o.InternalTLSCert, o.InternalTLSKey)
	if err != nil {
		return fmt.Errorf("internal listener: %w", err)
	}
	extL, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	intL, err := net.Listen("tcp", o.ListenInternal)
	if err != nil {
		extL.Close()
		return fmt.Errorf("listen internal: %w", err)
	}
	s.logger.Info("listening", "external", extL.Addr().String(), "internal", intL.Addr().String())
	maxConns := o.MaxConnections
	if maxConns <= 0 {
		maxConns = max(int(admission.NewOpenFiles(s.reg).Limit()*3/4), 64)
	}
	extL = admission.LimitListener(extL, maxConns, s.reg, "external")
	intL = admission.LimitListener(intL, maxConns, s.reg, "internal")

	var peer *cluster.Peer
	if o.ListenCluster != "" {
		if peer, err = s.joinCluster(extL.Addr().String(), extTLS != nil); err != nil {
			extL.Close()
			intL.Close()
			return err
		}
	}
	owns := func(string) bool { return true }
	if s.placement != nil {
		owns = s.placement.owns
	}

	httpMetrics := web.NewMetrics(s.reg, "telemeter_server")
	gate := web.NewGate(o.MaxInflight, 5*time.Second, s.metrics.gateRejected.Inc)

	ext := http.NewServeMux()
	ext.Handle("/authorize", httpMetrics.Wrap("authorize", gate.Wrap(s.shedUnderPressure(s.requireCertForID(
		auth.NewAuthorizeHandler(s.authorizer, s.issuer, s.tokenLabels, s.logger.With("component", "authorize"), s.reg))))))
	ext.Handle("/upload", httpMetrics.Wrap("upload", gate.Wrap(http.HandlerFunc(s.handleUpload))))
	ext.Handle(receivePath, httpMetrics.Wrap("receive", gate.Wrap(http.HandlerFunc(s.handleReceive))))
	web.Health(ext, s.readiness)
	if s.placement != nil {
		ext.Handle(forward.PathSnapshot, httpMetrics.Wrap("peer_snapshot", http.HandlerFunc(s.placement.handleSnapshot)))
	}

	internal := http.NewServeMux()
	if !o.DisableFederate {
		internal.Handle("/federate", httpMetrics.Wrap("federate", federate.NewHandler(s.store, federate.Options{
			KeepTimestamps: o.FederateKeepTimestamps,
			Owns:           owns,
		}, s.logger.With("component", "federate"), s.reg)))
	}
	internal.Handle("/metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{Registry: s.reg}))
	web.Health(internal, s.readiness)
	internal.HandleFunc("/-/reload", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			web.WriteError(w, upload.ErrMethodNotAllowed)
			return
		}
		if err := s.reload(); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	if s.placement != nil {
		internal.HandleFunc("/debug/cluster", s.placement.handleDebug)
	}
	internal.HandleFunc("/debug/pprof/", pprof.Index)
	internal.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	internal.HandleFunc("/debug/pprof/profile", pprof.Profile)
	internal.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	internal.HandleFunc("/debug/pprof/trace", pprof.Trace)

	extSrv := web.NewServer(ext, web.ServerOptions{TLSConfig: extTLS, ReadTimeout: time.Minute}, s.logger)
	intSrv := web.NewServer(internal, web.ServerOptions{TLSConfig: intTLS}, s.logger)

	// On shutdown the listeners stay open until this node has handed off
	// its snapshots and left the cluster, and a moment more while the peers
	// learn of the leave: until then they may still forward to this node.
	left := make(chan struct{})
	if peer == nil {
		close(left)
	}
	afterLeave := func(cancel context.CancelFunc) func(error) {
		return func(error) {
			go func() {
				<-left
				if peer != nil {
					time.Sleep(leaveDrain)
				}
				cancel()
			}()
		}
	}
	var g run.Group
	{
		sctx, cancel := context.WithCancel(context.Background())
		g.Add(func() error { return extSrv.Serve(sctx, extL) }, afterLeave(cancel))
	}
	{
		sctx, cancel := context.WithCancel(context.Background())
		g.Add(func() error { return intSrv.Serve(sctx, intL) }, afterLeave(cancel))
	}
	{
		// Housekeeping: snapshots past --ttl, idle rate-limit entries.
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error {
			t := time.NewTicker(housekeepingInterval(o.TTL))
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return nil
				case <-t.C:
					if n := s.store.GC(); n > 0 {
						s.logger.Info("removed expired snapshots", "count", n)
					}
					s.limiter.Evict()
				}
			}
		}, func(error) { cancel() })
	}
	if peer != nil {
		// Membership and placement. On shutdown: hand every snapshot to its
		// next owner, then leave gracefully so peers re-balance at once.
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error {
			defer close(left)
			done := make(chan struct{})
			go func() {
				defer close(done)
				_ = s.placement.watch(ctx)
			}()
			go peer.Settle(ctx, 500*time.Millisecond)
			err := peer.Run(ctx)
			<-done
			hctx, hcancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer hcancel()
			s.placement.handOffAll(hctx)
			if lerr := peer.Leave(5 * time.Second); lerr != nil {
				s.logger.Warn("leave cluster", "err", lerr)
			}
			return err
		}, func(error) { cancel() })
	}
	{
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error { return s.pressure.Run(ctx) }, func(error) { cancel() })
	}
	if s.remoteWrite != nil {
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error { return s.remoteWrite.Run(ctx) }, func(error) { cancel() })
	}
	{
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error { return s.writers.Run(ctx) }, func(error) { cancel() })
	}
	if o.Reload != nil {
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error {
			for {
				select {
				case <-ctx.Done():
					return nil
				case <-o.Reload:
					if err := s.reload(); err != nil {
						s.logger.Error("reload failed; keeping the previous configuration", "err", err)
					}
				}
			}
		}, func(error) { cancel() })
	}
	s.ready.Store(true)
	s.logger.Info("ready", "clusters", s.store.Len())
	return g.Run()
}

// reload re-reads what can change without a restart: the gossip keyring
// (live key rotation).
func (s *server) reload() error {
	if s.placement == nil || s.o.GossipKeyFile == "" {
		return nil
	}
	if err := s.placement.peer.ReloadKeyring(); err != nil {
		return fmt.Errorf("reload gossip keyring: %w", err)
	}
	s.logger.Info("reloaded gossip keyring")
	return nil
}

// leaveDrain is how long the listeners stay open after a graceful leave,
// for the peers to hear of it (a few gossip rounds).
const leaveDrain = 2 * time.Second

// certIdentity returns the cluster ID a verified client certificate names
// (its subject CN), "" when mTLS identity is off, or an error when it is on
// and no verified certificate came with the request.
func (s *server) certIdentity(r *http.Request) (string, error) {
	if s.o.ClientCAFile == "" {
		return "", nil
	}
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
		return "", upload.Errorf(upload.ErrUnauthorized, "a client certificate is required")
	}
	cn := r.TLS.VerifiedChains[0][0].Subject.CommonName
	if cn == "" {
		return "", upload.Errorf(upload.ErrForbidden, "the client certificate names no cluster (empty CN)")
	}
	return cn, nil
}

// requireCertForID refuses an /authorize for a cluster ID other than the
// one the client certificate names, in mTLS identity mode.
func (s *server) requireCertForID(h http.Handler) http.Handler {
	if s.o.ClientCAFile == "" {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cn, err := s.certIdentity(r)
		if err == nil {
			id := r.URL.Query().Get("id")
			if id == "" {
				// The form body is read by the handler; a certificate
				// mode client must name the ID in the query.
				err = upload.Errorf(upload.ErrInvalid, "in mTLS mode the cluster ID goes in the query: /authorize?id=")
			} else if id != cn {
				err = upload.Errorf(upload.ErrForbidden, "certificate for %q cannot authorize cluster %q", cn, id)
			}
		}
		if err != nil {
			web.WriteError(w, err)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// shedUnderPressure answers 503 near the memory limit, before h runs (and
// before any upstream authorizer call).
func (s *server) shedUnderPressure(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := s.pressure.Check(); err != nil {
			web.WriteError(w, err)
			return
		}
		h.ServeHTTP(w, r)
	})
}

func housekeepingInterval(ttl time.Duration) time.Duration {
	d := ttl / 10
	return min(max(d, time.Second), time.Minute)
}

func (s *server) readiness() error {
	if !s.ready.Load() {
		return errors.New("store not recovered yet")
	}
	if s.placement != nil && !s.placement.peer.Ready() {
		return errors.New("cluster membership not settled yet")
	}
	return nil
}

// joinCluster starts gossip and placement. extAddr is the bound external
// listener, which peers reach for forwards and transfers.
func (s *server) joinCluster(extAddr string, tls bool) (*cluster.Peer, error) {
	o := s.o
	host, port, _ := net.SplitHostPort(extAddr)
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		extAddr = net.JoinHostPort("", port)
	}
	url, err := apiURL(extAddr, o.ListenCluster, tls)
	if err != nil {
		return nil, err
	}
	if o.GossipKeyFile == "" {
		s.logger.Warn("gossip is not encrypted: set --gossip-key-file")
	}
	peer, err := cluster.Join(cluster.Options{
		Name:        o.Name,
		BindAddr:    o.ListenCluster,
		Join:        o.Join,
		KeyringFile: o.GossipKeyFile,
		Meta:        cluster.NodeMeta{APIURL: url},
	}, s.logger, s.reg)
	if err != nil {
		return nil, fmt.Errorf("join cluster: %w", err)
	}
	peerIssuer, err := auth.NewIssuer(s.key, tokenIssuer, peerAudience, peerTokenTTL, nil)
	if err != nil {
		return nil, err
	}
	s.placement = newPlacement(s, peer, peerIssuer, auth.NewVerifier(s.pubs, tokenIssuer, peerAudience, tokenSkew, nil).CacheVerified(peerTokenCacheSize))
	return peer, nil
}

// tokenLabels are the labels /authorize returns for a cluster, and that
// every series it uploads must carry.
func (s *server) tokenLabels(clusterID string) map[string]string {
	return map[string]string{s.o.PartitionLabel: clusterID}
}

// splitRules reads a whitelist file: one selector per line, # comments.
func splitRules(s string) []string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		out = append(out, line)
	}
	return out
}

// insecureAuthorizer accepts every token: only with --insecure-no-auth.
type insecureAuthorizer struct{}

func (insecureAuthorizer) Authorize(_ context.Context, token, _ string) (string, error) {
	if token == "" {
		return "", upload.Errorf(upload.ErrUnauthorized, "missing cluster token")
	}
	return "insecure", nil
}
