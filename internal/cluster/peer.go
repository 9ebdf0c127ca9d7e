package cluster

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"
)

// settleChecks is how many consecutive equal member counts Settle needs.
const settleChecks = 3

// joinRetryInterval caps the re-join period until the first join succeeded,
// so nodes started together find each other quickly.
const joinRetryInterval = time.Second

// Member is one node of the cluster as this node sees it.
type Member struct {
	Name string
	Addr string // gossip address, ip:port
	Meta NodeMeta
	// State is "alive". Memberlist lists a suspect node as a member until
	// it is declared dead but does not say which members are suspect, so
	// a suspect member is reported alive too.
	State string
}

// Peer is this node's membership in the cluster.
type Peer struct {
	name     string
	addr     string
	seeds    []string
	interval time.Duration
	logger   *slog.Logger
	keyFile  string
	keyring  *memberlist.Keyring
	ml       *memberlist.Memberlist
	meta     []byte
	changes  chan struct{}
	metrics  *metrics

	// view is this node's copy of the member list, kept by the event
	// callbacks. Memberlist updates the nodes that Members() points to in
	// place (hashicorp/memberlist#306), so reading them outside its
	// callbacks races; the callbacks run under memberlist's lock.
	viewMu sync.RWMutex
	view   map[string]Member

	joined  atomic.Bool
	settled atomic.Bool

	left    atomic.Bool
	leaveMu sync.Mutex // serialises Leave
	reload  sync.Mutex // serialises ReloadKeyring
}

// Join starts gossip on o.BindAddr and tries once to join the seeds. A
// failed first join is logged, not returned: Run keeps trying, and Ready
// stays false until another member is seen.
func Join(o Options, logger *slog.Logger, reg prometheus.Registerer) (*Peer, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if o.Name == "" {
		name, err := defaultName()
		if err != nil {
			return nil, err
		}
		o.Name = name
	}
	if o.RejoinInterval <= 0 {
		o.RejoinInterval = DefaultRejoinInterval
	}
	logger = logger.With("component", "cluster")
	cfg, err := o.config()
	if err != nil {
		return nil, fmt.Errorf("configure cluster: %w", err)
	}
	meta, err := encodeMeta(o.Meta)
	if err != nil {
		return nil, err
	}

	p := &Peer{
		name:     o.Name,
		seeds:    slices.DeleteFunc(slices.Clone(o.Join), func(s string) bool { return strings.TrimSpace(s) == "" }),
		interval: o.RejoinInterval,
		logger:   logger,
		keyFile:  o.KeyringFile,
		meta:     meta,
		changes:  make(chan struct{}, 1),
		view:     make(map[string]Member),
	}
	p.metrics = newMetrics(p)

	if o.KeyringFile != "" {
		keys, err := readKeyringFile(o.KeyringFile)
		if err != nil {
			return nil, fmt.Errorf("load gossip keyring: %w", err)
		}
		kr, err := memberlist.NewKeyring(keys[1:], keys[0])
		if err != nil {
			return nil, fmt.Errorf("load gossip keyring: %w", err)
		}
		p.keyring = kr
		cfg.Keyring = kr
		cfg.GossipVerifyIncoming = true
		cfg.GossipVerifyOutgoing = true
	} else {
		logger.Warn("gossip is not encrypted; set a gossip key file to keep foreign nodes out of the cluster")
		cfg.GossipVerifyIncoming = false
		cfg.GossipVerifyOutgoing = false
	}

	mlLogger := log.New(&logBridge{logger: logger, event: p.countEvent}, "", 0)
	cfg.Logger = mlLogger
	cfg.Delegate = (*delegate)(p)
	cfg.Events = (*events)(p)

	transport, err := newTransport(cfg, mlLogger)
	if err != nil {
		return nil, fmt.Errorf("listen for gossip on %s: %w", o.BindAddr, err)
	}
	cfg.BindPort = transport.GetAutoBindPort()
	if cfg.AdvertiseAddr == "" || cfg.AdvertisePort == 0 {
		cfg.AdvertisePort = cfg.BindPort
	}
	cfg.Transport = transport
	if o.wrapTransport != nil {
		cfg.Transport = o.wrapTransport(transport)
	}

	ml, err := memberlist.Create(cfg)
	if err != nil {
		_ = transport.Shutdown()
		return nil, fmt.Errorf("start gossip: %w", err)
	}
	p.ml = ml
	if err := p.metrics.register(reg); err != nil {
		_ = ml.Shutdown()
		return nil, fmt.Errorf("register cluster metrics: %w", err)
	}

	p.addr = ml.LocalNode().Address() // before any gossip can update it
	logger.Info("gossip started", "peer", p.name, "addr", p.addr, "seeds", strings.Join(p.seeds, ","), "encrypted", p.keyring != nil)
	if len(p.seeds) == 0 {
		p.joined.Store(true)
	} else {
		p.join("initial")
	}
	return p, nil
}

// newTransport binds the gossip listeners. With port 0 it retries, as TCP
// and UDP must get the same free port.
func newTransport(cfg *memberlist.Config, logger *log.Logger) (*memberlist.NetTransport, error) {
	nc := &memberlist.NetTransportConfig{
		BindAddrs: []string{cfg.BindAddr},
		BindPort:  cfg.BindPort,
		Logger:    logger,
	}
	attempts := 1
	if cfg.BindPort == 0 {
		attempts = 10
	}
	var err error
	for range attempts {
		var t *memberlist.NetTransport
		if t, err = memberlist.NewNetTransport(nc); err == nil {
			return t, nil
		}
	}
	return nil, err
}

// join contacts the seeds once and reports whether any answered.
func (p *Peer) join(why string) {
	p.metrics.rejoins.Inc()
	n, err := p.ml.Join(p.seeds)
	if err != nil {
		p.metrics.failedRejoins.Inc()
		p.logger.Warn("join seeds failed", "reason", why, "seeds", strings.Join(p.seeds, ","), "err", err)
		return
	}
	p.markJoined()
	p.logger.Debug("joined seeds", "reason", why, "contacted", n, "members", p.ml.NumMembers())
}

// markJoined latches joined once another member is known.
func (p *Peer) markJoined() {
	if p.ml != nil && p.ml.NumMembers() > 1 && !p.joined.Swap(true) {
		p.logger.Info("joined cluster", "members", p.ml.NumMembers())
	}
}

// Name returns this node's name in the cluster.
func (p *Peer) Name() string { return p.name }

// Addr returns the gossip address (ip:port) this node advertises, with the
// real port when it was started on port 0.
func (p *Peer) Addr() string { return p.addr }

// Members returns the alive and suspect members, this node included,
// sorted by name.
func (p *Peer) Members() []Member {
	p.viewMu.RLock()
	out := make([]Member, 0, len(p.view))
	for _, m := range p.view {
		out = append(out, m)
	}
	p.viewMu.RUnlock()
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// record copies n into the view; called from memberlist's callbacks only.
func (p *Peer) record(n *memberlist.Node) {
	meta, err := decodeMeta(n.Meta)
	if err != nil {
		p.logger.Warn("peer published unreadable metadata", "peer", n.Name, "err", err)
	}
	m := Member{Name: n.Name, Addr: n.Address(), Meta: meta, State: "alive"}
	p.viewMu.Lock()
	p.view[n.Name] = m
	p.viewMu.Unlock()
}

func (p *Peer) forget(name string) {
	p.viewMu.Lock()
	delete(p.view, name)
	p.viewMu.Unlock()
}

// Changes delivers a value after any join, leave, failure or update. It has
// a buffer of one, so bursts coalesce: read Members after each receive.
func (p *Peer) Changes() <-chan struct{} { return p.changes }

func (p *Peer) notify() {
	select {
	case p.changes <- struct{}{}:
	default:
	}
}

// Settle returns once this node has joined and then seen the same member
// count for settleChecks consecutive intervals, and marks the peer settled;
// or returns when ctx is done, leaving it unsettled.
func (p *Peer) Settle(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	last, stable := -1, 0
	for {
		select {
		case <-ctx.Done():
			p.logger.Info("cluster settling stopped", "err", ctx.Err())
			return
		case <-t.C:
		}
		p.markJoined()
		if !p.joined.Load() {
			last, stable = -1, 0
			continue
		}
		n := p.ml.NumMembers()
		if n != last {
			last, stable = n, 0
			continue
		}
		stable++
		if stable >= settleChecks {
			p.settled.Store(true)
			p.logger.Info("cluster settled", "members", n)
			return
		}
	}
}

// Ready reports whether this node has joined (or runs alone with no seeds),
// has settled, and has not left.
func (p *Peer) Ready() bool {
	return !p.left.Load() && p.joined.Load() && p.settled.Load()
}

// ReloadKeyring re-reads the keyring file and makes the installed keys equal
// to it: new keys are added, the file's first key becomes the primary, keys
// no longer listed are removed. On error the installed keys are unchanged
// unless the error came from memberlist half-way (then the call can simply
// be repeated).
func (p *Peer) ReloadKeyring() error {
	if p.keyring == nil {
		p.metrics.keyringReloads.WithLabelValues("failure").Inc()
		return fmt.Errorf("reload gossip keyring: %w", ErrNoKeyring)
	}
	p.reload.Lock()
	defer p.reload.Unlock()
	keys, err := readKeyringFile(p.keyFile)
	if err == nil {
		var c keyringChange
		c, err = applyKeys(p.keyring, keys)
		if err == nil {
			p.metrics.keyringReloads.WithLabelValues("success").Inc()
			p.logger.Info("gossip keyring reloaded", "keys", len(keys), "added", c.added, "removed", c.removed, "primary_changed", c.primaryChanged)
			return nil
		}
	}
	p.metrics.keyringReloads.WithLabelValues("failure").Inc()
	p.logger.Error("gossip keyring reload failed", "err", err)
	return fmt.Errorf("reload gossip keyring: %w", err)
}

// Leave tells the other members this node is going, waits up to timeout for
// the message to go out, and shuts gossip down. Later calls do nothing.
func (p *Peer) Leave(timeout time.Duration) error {
	p.leaveMu.Lock()
	defer p.leaveMu.Unlock()
	if p.left.Swap(true) {
		return nil
	}
	p.logger.Info("leaving cluster", "peer", p.name)
	var errs []error
	if err := p.ml.Leave(timeout); err != nil {
		errs = append(errs, fmt.Errorf("leave cluster: %w", err))
	}
	if err := p.ml.Shutdown(); err != nil {
		errs = append(errs, fmt.Errorf("shut down gossip: %w", err))
	}
	return errors.Join(errs...)
}

// Run re-joins the seeds every RejoinInterval (every second at most until
// the first join succeeded), so that a node cut off by a partition merges
// back when it heals: memberlist alone never contacts a node it declared
// dead. It returns nil when ctx is done; call Leave afterwards.
func (p *Peer) Run(ctx context.Context) error {
	if len(p.seeds) == 0 {
		<-ctx.Done()
		return nil
	}
	for {
		wait := p.interval
		if !p.joined.Load() {
			wait = min(wait, joinRetryInterval)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		if p.left.Load() {
			<-ctx.Done()
			return nil
		}
		p.join("rejoin")
	}
}

func (p *Peer) countEvent(event string) {
	p.metrics.events.WithLabelValues(event).Inc()
}

// delegate publishes this node's metadata; it carries no user messages.
type delegate Peer

func (d *delegate) NodeMeta(limit int) []byte {
	if len(d.meta) > limit {
		return nil // cannot happen: Join checked against MetaMaxSize
	}
	return d.meta
}
func (d *delegate) NotifyMsg([]byte)                           {}
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *delegate) LocalState(join bool) []byte                { return nil }
func (d *delegate) MergeRemoteState(buf []byte, join bool)     {}

// events keeps the member view, counts membership changes and wakes
// Changes. Memberlist calls it with its state lock held: it must not call
// back into memberlist.
type events Peer

func (e *events) NotifyJoin(n *memberlist.Node) {
	p := (*Peer)(e)
	p.countEvent(eventJoin)
	p.record(n)
	if n.Name != p.name {
		if !p.joined.Swap(true) {
			p.logger.Info("joined cluster", "peer", n.Name)
		}
		p.logger.Info("peer joined", "peer", n.Name, "addr", n.Address())
	}
	p.notify()
}

// NotifyLeave is called for a graceful leave and for a death alike:
// memberlist does not tell them apart here. Deaths this node decided are
// counted as failed from memberlist's log (see logBridge).
func (e *events) NotifyLeave(n *memberlist.Node) {
	p := (*Peer)(e)
	p.countEvent(eventLeave)
	p.forget(n.Name)
	p.logger.Info("peer left or failed", "peer", n.Name, "addr", n.Address())
	p.notify()
}

func (e *events) NotifyUpdate(n *memberlist.Node) {
	p := (*Peer)(e)
	p.countEvent(eventUpdate)
	p.record(n)
	p.logger.Info("peer updated", "peer", n.Name, "addr", n.Address())
	p.notify()
}
