package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/telemeter/telemeter/internal/auth"
	"github.com/telemeter/telemeter/internal/cluster"
	"github.com/telemeter/telemeter/internal/forward"
	"github.com/telemeter/telemeter/internal/ring"
	"github.com/telemeter/telemeter/internal/store"
	"github.com/telemeter/telemeter/internal/upload"
	"github.com/telemeter/telemeter/internal/web"
)

const (
	peerAudience = "telemeter-peer"
	peerTokenTTL = 5 * time.Minute
	// reconcileInterval bounds how long a missed hand-off or replica waits
	// for its next attempt.
	reconcileInterval = 30 * time.Second
	vnodes            = ring.DefaultVirtualNodes
	// maxSnapshotBytes bounds a snapshot received from a peer.
	maxSnapshotBytes = 256 << 20
)

// placement is this node's view of who owns which cluster. A single node
// owns everything.
type placement struct {
	self    string
	rf      int
	peer    *cluster.Peer
	store   *store.Store
	fwd     *forward.Client
	verify  *auth.Verifier
	logger  *slog.Logger
	ring    atomic.Pointer[ring.Ring]
	members atomic.Pointer[map[string]cluster.Member]

	kick chan struct{} // asks the reconciler for a pass

	mu   sync.Mutex
	sent map[sentKey]time.Time // snapshot versions already on a peer

	rebuildMu sync.Mutex  // serialises rebuild
	leaving   atomic.Bool // after handOffAll the ring no longer follows gossip

	metrics struct {
		handoffs    *prometheus.CounterVec
		replication prometheus.Histogram
		ringChanges prometheus.Counter
		pending     prometheus.Gauge
	}
}

type sentKey struct{ cluster, node string }

func newPlacement(s *server, peer *cluster.Peer, key *auth.Issuer, verify *auth.Verifier) *placement {
	p := &placement{
		self:   peer.Name(),
		rf:     s.o.ReplicationFactor,
		peer:   peer,
		store:  s.store,
		verify: verify,
		logger: s.logger.With("component", "placement"),
		kick:   make(chan struct{}, 1),
		sent:   make(map[sentKey]time.Time),
	}
	p.fwd = forward.New(forward.Options{
		Node:      p.self,
		PeerToken: newPeerTokens(key, p.self).get,
	}, s.logger.With("component", "forward"), s.reg)
	f := promauto.With(s.reg)
	p.metrics.handoffs = f.NewCounterVec(prometheus.CounterOpts{
		Name: "telemeter_server_handoffs_total",
		Help: "Snapshots handed to a new owner after a ring change, by result.",
	}, []string{"result"})
	p.metrics.replication = f.NewHistogram(prometheus.HistogramOpts{
		Name:    "telemeter_server_replication_lag_seconds",
		Help:    "Time from a stored upload until its snapshot is on every replica.",
		Buckets: []float64{.001, .005, .01, .05, .1, .5, 1, 5, 30, 60, 300},
	})
	p.metrics.ringChanges = f.NewCounter(prometheus.CounterOpts{
		Name: "telemeter_server_ring_changes_total",
		Help: "Times this node's ring changed membership.",
	})
	p.metrics.pending = f.NewGauge(prometheus.GaugeOpts{
		Name: "telemeter_server_replication_pending",
		Help: "Snapshot copies a peer should hold but does not yet, as of the last reconcile pass.",
	})
	p.rebuild()
	return p
}

// peerTokens caches this node's peer token and signs a new one when half
// of its lifetime has passed, so forwards do not pay for a signature each.
type peerTokens struct {
	iss  *auth.Issuer
	node string

	mu      sync.Mutex
	token   string
	renewAt time.Time
}

func newPeerTokens(iss *auth.Issuer, node string) *peerTokens {
	return &peerTokens{iss: iss, node: node}
}

func (t *peerTokens) get() (string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if now := time.Now(); t.token == "" || now.After(t.renewAt) {
		tok, ttl, err := t.iss.Issue(t.node, "peer", nil)
		if err != nil {
			return "", err
		}
		t.token, t.renewAt = tok, now.Add(ttl/2)
	}
	return t.token, nil
}

// rebuild recomputes the ring from the alive members. It reports whether
// the membership changed.
func (p *placement) rebuild() bool {
	p.rebuildMu.Lock()
	defer p.rebuildMu.Unlock()
	if p.leaving.Load() {
		return false
	}
	ms := p.peer.Members()
	names := make([]string, 0, len(ms))
	byName := make(map[string]cluster.Member, len(ms))
	for _, m := range ms {
		names = append(names, m.Name)
		byName[m.Name] = m
	}
	r := ring.New(names, vnodes)
	p.members.Store(&byName)
	if old := p.ring.Load(); old != nil && old.Equal(r) {
		return false
	}
	p.ring.Store(r)
	p.metrics.ringChanges.Inc()
	p.logger.Info("ring changed", "members", names)
	return true
}

// owner returns the owner of a cluster and its API URL.
func (p *placement) owner(clusterID string) (name, apiURL string) {
	name = p.ring.Load().Owner(clusterID)
	if m, ok := (*p.members.Load())[name]; ok {
		apiURL = m.Meta.APIURL
	}
	return name, apiURL
}

// owns reports whether this node exports the cluster at /federate.
func (p *placement) owns(clusterID string) bool {
	return p.ring.Load().Owner(clusterID) == p.self
}

// watch follows membership changes and runs the reconciler until ctx ends.
func (p *placement) watch(ctx context.Context) error {
	// Membership changes update the ring at once, even while a reconcile
	// pass is running; the pass itself follows.
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-p.peer.Changes():
				if p.rebuild() {
					p.requestReconcile()
				}
			}
		}
	}()
	t := time.NewTicker(reconcileInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-p.kick:
			p.reconcile(ctx)
		case <-t.C:
			p.rebuild()
			p.reconcile(ctx)
		}
	}
}

// reconcile makes the peers hold what the ring says: every snapshot this
// node has goes to each of its cluster's owners that may lack it, and a
// snapshot this node no longer should hold is deleted once its new owner
// has it.
func (p *placement) reconcile(ctx context.Context) {
	r := p.ring.Load()
	pending := 0
	for _, meta := range p.store.List() {
		if ctx.Err() != nil {
			return
		}
		owners := r.Owners(meta.ClusterID, p.rf)
		keep := false
		handedOff := false
		for i, node := range owners {
			if node == p.self {
				keep = true
				continue
			}
			kind := forward.KindReplica
			if i == 0 {
				kind = forward.KindHandoff
			}
			if err := p.send(ctx, meta, node, kind); err != nil {
				pending++
				continue
			}
			if i == 0 {
				handedOff = true
			}
		}
		if !keep && handedOff {
			if err := p.store.Delete(meta.ClusterID); err != nil {
				p.logger.Warn("delete handed-off snapshot", "cluster", meta.ClusterID, "err", err)
			}
			p.forget(meta.ClusterID)
		}
	}
	p.metrics.pending.Set(float64(pending))
}

// send pushes one snapshot to node unless that version was sent already.
func (p *placement) send(ctx context.Context, meta store.Meta, node, kind string) error {
	k := sentKey{meta.ClusterID, node}
	p.mu.Lock()
	done := p.sent[k].Equal(meta.Received)
	p.mu.Unlock()
	if done {
		return nil
	}
	m, ok := (*p.members.Load())[node]
	if !ok || m.Meta.APIURL == "" {
		return fmt.Errorf("no address for %s", node)
	}
	raw, cur, err := p.store.ReadRaw(meta.ClusterID)
	if err != nil {
		return err
	}
	err = p.fwd.PushSnapshot(ctx, m.Meta.APIURL, kind, raw)
	if kind == forward.KindHandoff {
		result := "ok"
		if err != nil {
			result = "error"
		}
		p.metrics.handoffs.WithLabelValues(result).Inc()
	}
	if err != nil {
		p.logger.Warn("snapshot transfer failed", "cluster", meta.ClusterID, "peer", node, "kind", kind, "err", err)
		return err
	}
	p.mu.Lock()
	p.sent[k] = cur.Received
	p.mu.Unlock()
	return nil
}

func (p *placement) forget(clusterID string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k := range p.sent {
		if k.cluster == clusterID {
			delete(p.sent, k)
		}
	}
}

// replicate copies a freshly stored snapshot to the cluster's other owners,
// synchronously and bounded in time. A replica that cannot be reached does
// not fail the upload (the owner holds it durably); the reconciler retries.
func (p *placement) replicate(ctx context.Context, meta store.Meta) {
	if p.rf <= 1 {
		return
	}
	start := time.Now()
	ok := true
	for _, node := range p.ring.Load().Owners(meta.ClusterID, p.rf) {
		if node == p.self {
			continue
		}
		if err := p.send(ctx, meta, node, forward.KindReplica); err != nil {
			ok = false
		}
	}
	if ok {
		p.metrics.replication.Observe(time.Since(start).Seconds())
	} else {
		p.requestReconcile()
	}
}

func (p *placement) requestReconcile() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// handOffAll runs before a graceful leave: every snapshot goes to its owner
// in the ring without this node.
func (p *placement) handOffAll(ctx context.Context) {
	var others []string
	for _, m := range p.peer.Members() {
		if m.Name != p.self {
			others = append(others, m.Name)
		}
	}
	if len(others) == 0 {
		return
	}
	p.rebuildMu.Lock()
	p.leaving.Store(true)
	p.ring.Store(ring.New(others, vnodes)) // stop exporting at once
	p.rebuildMu.Unlock()
	p.reconcile(ctx)
}

// checkPeer verifies the peer token of a node-to-node request.
func (p *placement) checkPeer(r *http.Request) (string, error) {
	tok := r.Header.Get(forward.HeaderPeerToken)
	if tok == "" {
		return "", upload.Errorf(upload.ErrUnauthorized, "missing peer token")
	}
	c, err := p.verify.Verify(tok)
	if err != nil {
		return "", err
	}
	if _, ok := (*p.members.Load())[c.ClusterID]; !ok {
		// Possibly a node that joined a moment ago: the sender may retry.
		return "", upload.WithRetryAfter(upload.ErrUnavailable, time.Second, fmt.Sprintf("%q is not a member yet", c.ClusterID))
	}
	return c.ClusterID, nil
}

// handleSnapshot receives a snapshot from a peer (hand-off or replica).
func (p *placement) handleSnapshot(w http.ResponseWriter, r *http.Request) {
	err := func() error {
		if r.Method != http.MethodPut {
			return upload.ErrMethodNotAllowed
		}
		if _, err := p.checkPeer(r); err != nil {
			return err
		}
		raw, err := io.ReadAll(io.LimitReader(r.Body, maxSnapshotBytes+1))
		if err != nil {
			return upload.Errorf(upload.ErrInvalid, "read snapshot: %v", err)
		}
		if len(raw) > maxSnapshotBytes {
			return upload.Errorf(upload.ErrTooLarge, "snapshot over %d bytes", maxSnapshotBytes)
		}
		_, err = p.store.PutRaw(raw)
		return err
	}()
	if err != nil {
		if !errors.Is(err, store.ErrStale) {
			p.logger.Warn("snapshot from peer refused", "err", err)
		}
		web.WriteError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// debugView is /debug/cluster.
type debugView struct {
	Self     string           `json:"self"`
	Ready    bool             `json:"ready"`
	Members  []cluster.Member `json:"members"`
	Ring     []string         `json:"ring"`
	VNodes   int              `json:"vnodes_per_member"`
	RF       int              `json:"replication_factor"`
	Stored   int              `json:"clusters_stored"`
	Owned    map[string]int   `json:"clusters_owned_by_node"`
	Replicas map[string]int   `json:"replicas_held_for_node"`
}

func (p *placement) handleDebug(w http.ResponseWriter, _ *http.Request) {
	r := p.ring.Load()
	v := debugView{
		Self: p.self, Ready: p.peer.Ready(), Members: p.peer.Members(), Ring: r.Members(),
		VNodes: vnodes, RF: p.rf, Owned: map[string]int{}, Replicas: map[string]int{},
	}
	for _, m := range p.store.List() {
		v.Stored++
		owner := r.Owner(m.ClusterID)
		if owner == p.self {
			v.Owned[owner]++
		} else {
			v.Replicas[owner]++
		}
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// apiURL derives the URL peers use to reach this node's external listener:
// the listen address, with an unspecified host replaced by the gossip host.
func apiURL(listen, clusterAddr string, tls bool) (string, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", fmt.Errorf("parse --listen: %w", err)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		if host, _, err = net.SplitHostPort(clusterAddr); err != nil {
			return "", fmt.Errorf("parse --listen-cluster: %w", err)
		}
		if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
			return "", errors.New("peers cannot reach this node: give --listen or --listen-cluster a routable address, not " + listen)
		}
	}
	scheme := "http"
	if tls {
		scheme = "https"
	}
	if _, err := strconv.Atoi(port); err != nil {
		return "", fmt.Errorf("parse --listen port %q", port)
	}
	return scheme + "://" + net.JoinHostPort(host, port), nil
}
