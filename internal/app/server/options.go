package server

import (
	"errors"
	"time"

	"github.com/telemeter/telemeter/internal/upload"
)

// Options are the server's flags (DESIGN §8).
type Options struct {
	Listen         string // external API: /authorize, /upload
	ListenInternal string // /federate, /metrics, health, pprof
	ListenCluster  string // gossip; empty: a single node
	Join           []string
	Name           string
	GossipKeyFile  string

	ReplicationFactor int

	StorageDir string
	TTL        time.Duration

	// Authentication.
	SharedKeyFile      string        // PEM private key that signs tokens
	VerificationKeys   string        // PEM public keys still accepted (rotation)
	TokenExpire        time.Duration // --token-expire-seconds
	AuthorizeURL       string        // upstream authorizer
	TokensFile         string        // built-in authorizer
	InsecureNoAuth     bool          // accept every cluster token: tests and demos only
	AuthorizeCacheTTL  time.Duration
	AuthorizeNegCache  time.Duration
	AuthorizeRateLimit time.Duration // reserved

	// Validation.
	PartitionLabel string
	Labels         []string // name=value
	RequiredLabels []string
	Whitelist      []string
	WhitelistFile  string
	ElideLabels    []string
	SeriesBudget   int
	MaxAge         time.Duration
	MaxFuture      time.Duration

	// Limits.
	Limits      upload.Limits // LimitBytes is Limits.CompressedBytes
	RateLimit   time.Duration
	MaxInflight int
	// Admission under abuse.
	MaxInflightBytes int64   // bodies being read at once, in bytes
	MinBodyRate      int64   // bytes per second a body must arrive at, after a grace
	MaxConnections   int     // per listener; 0: three quarters of the open-file limit
	MemoryHighWater  float64 // shed load above this share of the memory limit
	WriterWindow     time.Duration
	TokenCacheSize   int // verified upload tokens remembered; 0 checks every signature

	FederateKeepTimestamps bool
	DisableFederate        bool

	// Remote write out (--forward-url) and in (/metrics/v1/receive).
	ForwardURL               string
	ForwardTenantHeader      string
	ForwardBearerTokenFile   string
	ForwardBasicUser         string
	ForwardBasicPasswordFile string
	ForwardCAFile            string
	ReceiveRateLimit         time.Duration

	// Reload, when not nil, asks for a reload (main sends on SIGHUP).
	Reload <-chan struct{}

	// ClientCAFile turns on the mTLS identity mode: the external listener
	// asks for client certificates signed by these CAs, and a cluster's
	// identity is its certificate's subject common name.
	ClientCAFile string

	TLSCert, TLSKey                 string
	InternalTLSCert, InternalTLSKey string
}

// DefaultOptions are the defaults of openshift/telemeter's server where it
// has the flag, and ours where it does not.
func DefaultOptions() Options {
	return Options{
		Listen:            "0.0.0.0:9003",
		ListenInternal:    "localhost:9004",
		ReplicationFactor: 1,
		StorageDir:        "data",
		TTL:               10 * time.Minute,
		TokenExpire:       24 * time.Hour,
		AuthorizeCacheTTL: time.Minute,
		AuthorizeNegCache: 10 * time.Second,
		PartitionLabel:    upload.IDLabel,
		SeriesBudget:      10000,
		MaxAge:            time.Hour,
		MaxFuture:         10 * time.Minute,
		Limits:            upload.DefaultLimits(),
		RateLimit:         4*time.Minute + 30*time.Second,
		MaxInflight:       256,
		MaxInflightBytes:  64 << 20,
		MinBodyRate:       1024,
		MemoryHighWater:   0.8,
		WriterWindow:      time.Hour,
		TokenCacheSize:    100000,

		ForwardTenantHeader: "THANOS-TENANT",
		ReceiveRateLimit:    time.Second,
	}
}

// Validate reports flag combinations the server refuses to start with.
func (o Options) Validate() error {
	switch {
	case o.TokensFile != "" && o.AuthorizeURL != "":
		return errors.New("--tokens-file and --authorize are exclusive: choose one authorizer")
	case o.TokensFile == "" && o.AuthorizeURL == "" && !o.InsecureNoAuth:
		return errors.New("no authorizer configured: set --tokens-file or --authorize (or --insecure-no-auth for a test setup)")
	case o.StorageDir == "":
		return errors.New("--storage-dir is required")
	case o.Listen == "" || o.ListenInternal == "":
		return errors.New("--listen and --listen-internal are required")
	case o.ReplicationFactor < 1:
		return errors.New("--replication-factor must be at least 1")
	case (o.TLSCert == "") != (o.TLSKey == ""):
		return errors.New("--tls-crt and --tls-key go together")
	case o.ClientCAFile != "" && o.TLSCert == "":
		return errors.New("--client-ca-file needs TLS on the external listener: set --tls-crt and --tls-key")
	case (o.InternalTLSCert == "") != (o.InternalTLSKey == ""):
		return errors.New("--internal-tls-crt and --internal-tls-key go together")
	case o.TokenExpire < time.Minute:
		return errors.New("--token-expire-seconds must be at least 60")
	}
	return nil
}
