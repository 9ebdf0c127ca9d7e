// Command telemeter-server receives pushes from telemeter-client, validates
// and stores them per cluster, and serves them to a central Prometheus at
// /federate. See docs/operations.md for every flag.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/telemeter/telemeter/internal/app/server"
)

// multi is a repeatable string flag.
type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

func main() {
	o := server.DefaultOptions()
	fs := flag.NewFlagSet("telemeter-server", flag.ContinueOnError)
	fs.StringVar(&o.Listen, "listen", o.Listen, "Address for the external API: /authorize and /upload.")
	fs.StringVar(&o.ListenInternal, "listen-internal", o.ListenInternal, "Address for /federate, /metrics, health and pprof.")
	fs.StringVar(&o.ListenCluster, "listen-cluster", o.ListenCluster, "Address for gossip with the other servers; empty runs a single node.")
	fs.Var((*multi)(&o.Join), "join", "A peer's cluster address to join (repeatable).")
	fs.StringVar(&o.Name, "name", o.Name, "This node's name in the cluster (default: hostname and a random suffix).")
	fs.StringVar(&o.GossipKeyFile, "gossip-key-file", o.GossipKeyFile, "File of base64 gossip encryption keys, primary first.")
	fs.IntVar(&o.ReplicationFactor, "replication-factor", o.ReplicationFactor, "Nodes that keep each cluster's snapshot, the owner included.")
	fs.StringVar(&o.StorageDir, "storage-dir", o.StorageDir, "Directory for snapshots and the generated token key.")
	fs.DurationVar(&o.TTL, "ttl", o.TTL, "Snapshots older than this are no longer served and are removed.")
	fs.StringVar(&o.SharedKeyFile, "shared-key", o.SharedKeyFile, "PEM private key (EC or RSA) that signs upload tokens; generated in --storage-dir when empty on a single node.")
	fs.StringVar(&o.VerificationKeys, "verification-keys", o.VerificationKeys, "PEM file of public keys whose tokens stay valid (key rotation).")
	fs.IntVar(&o.TokenCacheSize, "token-cache-size", o.TokenCacheSize, "Verified upload tokens remembered so that a client's next upload skips the signature check (0: check every time).")
	expire := fs.Int64("token-expire-seconds", int64(o.TokenExpire/time.Second), "Lifetime of upload tokens, in seconds.")
	fs.StringVar(&o.AuthorizeURL, "authorize", o.AuthorizeURL, "URL of an upstream authorizer (authorization-server protocol).")
	fs.StringVar(&o.TokensFile, "tokens-file", o.TokensFile, "JSON tokens file for the built-in authorizer: [{\"token\":\"...\"}].")
	fs.BoolVar(&o.InsecureNoAuth, "insecure-no-auth", o.InsecureNoAuth, "Accept any cluster token. For tests only.")
	fs.StringVar(&o.PartitionLabel, "partition-label", o.PartitionLabel, "Label that carries the cluster ID on every series.")
	fs.Var((*multi)(&o.Labels), "label", "name=value set on every stored series (repeatable).")
	fs.Var((*multi)(&o.RequiredLabels), "required-label", "Label every series must carry (repeatable).")
	fs.Var((*multi)(&o.Whitelist), "whitelist", "PromQL series selector of series to keep (repeatable); none keeps all.")
	fs.StringVar(&o.WhitelistFile, "whitelist-file", o.WhitelistFile, "File of --whitelist selectors, one per line.")
	fs.Var((*multi)(&o.ElideLabels), "elide-label", "Label removed from every series (repeatable).")
	fs.Int64Var(&o.Limits.CompressedBytes, "limit-bytes", o.Limits.CompressedBytes, "Largest upload body accepted, in bytes, as sent.")
	fs.Int64Var(&o.Limits.DecodedBytes, "limit-decoded-bytes", o.Limits.DecodedBytes, "Largest upload accepted after decompression, in bytes.")
	fs.IntVar(&o.Limits.Series, "limit-series", o.Limits.Series, "Most series in one upload.")
	fs.IntVar(&o.Limits.Families, "limit-families", o.Limits.Families, "Most metric families in one upload.")
	fs.IntVar(&o.Limits.LabelsPerSeries, "limit-labels", o.Limits.LabelsPerSeries, "Most labels on one series.")
	fs.IntVar(&o.Limits.NameLength, "limit-name-length", o.Limits.NameLength, "Longest metric or label name, in bytes.")
	fs.IntVar(&o.Limits.ValueLength, "limit-value-length", o.Limits.ValueLength, "Longest label value, in bytes.")
	fs.IntVar(&o.SeriesBudget, "limit-series-per-cluster", o.SeriesBudget, "Series budget of one cluster; a larger upload is refused and the last snapshot kept.")
	fs.DurationVar(&o.RateLimit, "ratelimit", o.RateLimit, "Minimum time between two accepted uploads of one cluster.")
	fs.IntVar(&o.MaxInflight, "max-inflight", o.MaxInflight, "Requests served at once; more are answered 503.")
	fs.Int64Var(&o.MaxInflightBytes, "max-inflight-bytes", o.MaxInflightBytes, "Upload bytes being received at once; more are answered 503.")
	fs.Int64Var(&o.MinBodyRate, "min-body-rate", o.MinBodyRate, "Bytes per second an upload body must arrive at after a 10s grace; slower bodies are cut.")
	fs.IntVar(&o.MaxConnections, "max-connections", o.MaxConnections, "Open connections per listener (0: three quarters of the open-file limit).")
	fs.Float64Var(&o.MemoryHighWater, "memory-high-water", o.MemoryHighWater, "Share of the memory limit (GOMEMLIMIT or cgroup) above which uploads are answered 503.")
	fs.DurationVar(&o.WriterWindow, "writer-conflict-window", o.WriterWindow, "Window in which two writers of one cluster ID are reported as a conflict.")
	fs.DurationVar(&o.MaxAge, "timestamp-max-age", o.MaxAge, "Samples older than this are dropped.")
	fs.DurationVar(&o.MaxFuture, "timestamp-max-future", o.MaxFuture, "Samples further ahead than this are dropped.")
	fs.BoolVar(&o.FederateKeepTimestamps, "federate-keep-timestamps", o.FederateKeepTimestamps, "Serve sample timestamps at /federate (default: none, so Prometheus stamps scrape time).")
	fs.BoolVar(&o.DisableFederate, "disable-federate", o.DisableFederate, "Do not serve /federate (for operators who only forward with --forward-url).")
	fs.StringVar(&o.ForwardURL, "forward-url", o.ForwardURL, "Remote-write URL every accepted upload is also sent to (Thanos Receive, Mimir, Prometheus).")
	fs.StringVar(&o.ForwardTenantHeader, "forward-tenant-header", o.ForwardTenantHeader, "Header that carries the cluster ID as tenant toward --forward-url (X-Scope-OrgID for Mimir).")
	fs.StringVar(&o.ForwardBearerTokenFile, "forward-bearer-token-file", o.ForwardBearerTokenFile, "File with a bearer token for --forward-url.")
	fs.StringVar(&o.ForwardBasicUser, "forward-basic-user", o.ForwardBasicUser, "Basic-auth user for --forward-url.")
	fs.StringVar(&o.ForwardBasicPasswordFile, "forward-basic-password-file", o.ForwardBasicPasswordFile, "File with the basic-auth password for --forward-url.")
	fs.StringVar(&o.ForwardCAFile, "forward-ca-file", o.ForwardCAFile, "CA certificates to trust for --forward-url.")
	fs.DurationVar(&o.ReceiveRateLimit, "receive-ratelimit", o.ReceiveRateLimit, "Minimum time between two accepted remote-write requests of one cluster at /metrics/v1/receive.")
	fs.StringVar(&o.ClientCAFile, "client-ca-file", o.ClientCAFile, "CAs of client certificates: turns on mTLS identity, the cluster ID must equal the certificate's subject CN.")
	fs.StringVar(&o.TLSCert, "tls-crt", o.TLSCert, "TLS certificate for the external listener.")
	fs.StringVar(&o.TLSKey, "tls-key", o.TLSKey, "TLS key for the external listener.")
	fs.StringVar(&o.InternalTLSCert, "internal-tls-crt", o.InternalTLSCert, "TLS certificate for the internal listener.")
	fs.StringVar(&o.InternalTLSKey, "internal-tls-key", o.InternalTLSKey, "TLS key for the internal listener.")
	logLevel := fs.String("log-level", "info", "Log level: debug, info, warn or error.")

	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		os.Exit(2)
	}
	o.TokenExpire = time.Duration(*expire) * time.Second

	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(os.Stderr, "telemeter-server: --log-level %q: want debug, info, warn or error\n", *logLevel)
		os.Exit(2)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if err := o.Validate(); err != nil {
		fmt.Fprintf(os.Stderr, "telemeter-server: %v\n", err)
		os.Exit(2)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	reload := make(chan struct{}, 1)
	go func() {
		for range hup {
			select {
			case reload <- struct{}{}:
			default:
			}
		}
	}()
	o.Reload = reload
	if err := server.Run(ctx, o, logger, reg); err != nil {
		stop()
		logger.Error("server stopped", "err", err)
		os.Exit(1) //nolint:gocritic // stop() ran above.
	}
}
