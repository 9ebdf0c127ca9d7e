package cluster

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/hashicorp/memberlist"
)

// DefaultRejoinInterval is how often a peer re-joins its seeds when
// Options.RejoinInterval is zero.
const DefaultRejoinInterval = 15 * time.Second

// DefaultDeadNodeReclaimTime is how long after a node was declared dead its
// name may be taken by a node at another address, when
// Options.DeadNodeReclaimTime is zero. Stable node names matter for
// placement, so a restarted node that comes back on a new IP must be able to
// reclaim its name.
const DefaultDeadNodeReclaimTime = 10 * time.Second

// Options configures a Peer. Zero durations and counts take memberlist's LAN
// defaults (memberlist.DefaultLANConfig); tests shorten them.
type Options struct {
	// Name is this node's unique name in the cluster. Default: the host
	// name plus a random suffix.
	Name string
	// BindAddr is the host:port gossip listens on (TCP and UDP); the host
	// must be an IP or empty for all interfaces, port 0 picks a free port.
	BindAddr string
	// AdvertiseAddr is the IP:port other peers use to reach this one.
	// Optional: by default the bound address (or, bound to all
	// interfaces, a private IP of this host). Port 0 means the bound port.
	AdvertiseAddr string
	// Join lists seed peers (host:port), contacted at start and then every
	// RejoinInterval.
	Join []string
	// KeyringFile holds the gossip encryption keys (see parseKeyring and
	// docs/ring.md). Empty disables encryption.
	KeyringFile string
	// Meta is what peers need to reach this node; published in gossip.
	Meta NodeMeta
	// RejoinInterval is the period of the seed re-join loop (Run).
	RejoinInterval time.Duration

	ProbeInterval       time.Duration
	ProbeTimeout        time.Duration
	GossipInterval      time.Duration
	GossipToTheDeadTime time.Duration
	PushPullInterval    time.Duration
	TCPTimeout          time.Duration
	SuspicionMult       int
	RetransmitMult      int
	DeadNodeReclaimTime time.Duration

	// wrapTransport lets tests in this package interpose on the network.
	wrapTransport func(memberlist.NodeAwareTransport) memberlist.NodeAwareTransport
}

// NodeMeta is published by every node in memberlist's node metadata, JSON
// encoded, at most memberlist.MetaMaxSize (512) bytes.
type NodeMeta struct {
	// APIURL is the base URL of the node's public API (uploads).
	APIURL string `json:"api_url,omitempty"`
	// InternalURL is the base URL of the node's internal listener
	// (node-to-node transfers, /federate).
	InternalURL string `json:"internal_url,omitempty"`
}

func encodeMeta(m NodeMeta) ([]byte, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode node meta: %w", err)
	}
	if len(b) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("encode node meta: %d bytes, limit %d", len(b), memberlist.MetaMaxSize)
	}
	return b, nil
}

// decodeMeta reads a peer's metadata. The bytes come from the network.
func decodeMeta(b []byte) (NodeMeta, error) {
	var m NodeMeta
	if len(b) == 0 {
		return m, nil
	}
	if len(b) > memberlist.MetaMaxSize {
		return NodeMeta{}, fmt.Errorf("decode node meta: %d bytes, limit %d", len(b), memberlist.MetaMaxSize)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return NodeMeta{}, fmt.Errorf("decode node meta: %w", err)
	}
	return m, nil
}

// defaultName is the host name plus a random suffix, so two processes on one
// host never collide.
func defaultName() (string, error) {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "telemeter"
	}
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generate node name: %w", err)
	}
	return host + "-" + hex.EncodeToString(b[:]), nil
}

// splitIPPort parses host:port where host is an IP literal or empty.
func splitIPPort(addr string) (string, int, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return "", 0, fmt.Errorf("port %q: %w", portStr, err)
	}
	if host != "" && net.ParseIP(host) == nil {
		return "", 0, errors.New("host must be an IP address")
	}
	return host, int(port), nil
}

// config builds the memberlist configuration from o, without the transport,
// delegates and keyring.
func (o *Options) config() (*memberlist.Config, error) {
	c := memberlist.DefaultLANConfig()
	c.Name = o.Name

	host, port, err := splitIPPort(o.BindAddr)
	if err != nil {
		return nil, fmt.Errorf("parse bind address %q: %w", o.BindAddr, err)
	}
	if host == "" {
		host = "0.0.0.0"
	}
	c.BindAddr, c.BindPort = host, port
	c.AdvertiseAddr, c.AdvertisePort = "", port
	if o.AdvertiseAddr != "" {
		host, port, err := splitIPPort(o.AdvertiseAddr)
		if err != nil {
			return nil, fmt.Errorf("parse advertise address %q: %w", o.AdvertiseAddr, err)
		}
		if host == "" {
			return nil, fmt.Errorf("parse advertise address %q: host is required", o.AdvertiseAddr)
		}
		c.AdvertiseAddr, c.AdvertisePort = host, port
	}

	setDuration(&c.ProbeInterval, o.ProbeInterval)
	setDuration(&c.ProbeTimeout, o.ProbeTimeout)
	setDuration(&c.GossipInterval, o.GossipInterval)
	setDuration(&c.GossipToTheDeadTime, o.GossipToTheDeadTime)
	setDuration(&c.PushPullInterval, o.PushPullInterval)
	setDuration(&c.TCPTimeout, o.TCPTimeout)
	if o.SuspicionMult > 0 {
		c.SuspicionMult = o.SuspicionMult
	}
	if o.RetransmitMult > 0 {
		c.RetransmitMult = o.RetransmitMult
	}
	c.DeadNodeReclaimTime = DefaultDeadNodeReclaimTime
	setDuration(&c.DeadNodeReclaimTime, o.DeadNodeReclaimTime)
	return c, nil
}

func setDuration(dst *time.Duration, v time.Duration) {
	if v > 0 {
		*dst = v
	}
}
