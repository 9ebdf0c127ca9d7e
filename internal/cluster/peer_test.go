package cluster

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
)

func eventCount(p *Peer, e string) float64 {
	return testutil.ToFloat64(p.metrics.events.WithLabelValues(e))
}

// startCluster starts a, then b and c with a as their seed, and waits until
// every node sees all three.
func startCluster(t *testing.T, opts ...Options) []*Peer {
	t.Helper()
	peers := []*Peer{testPeer(t, opts[0])}
	for _, o := range opts[1:] {
		o.Join = []string{addr(peers[0])}
		peers = append(peers, testPeer(t, o))
	}
	all := make([]string, 0, len(peers))
	for _, p := range peers {
		all = append(all, p.Name())
	}
	slices.Sort(all)
	for _, p := range peers {
		eventually(t, 10*time.Second, func() bool { return seesExactly(p, all...) }, "%s sees %v, want %v", p.Name(), names(p.Members()), all)
	}
	return peers
}

func TestThreePeersJoin(t *testing.T) {
	peers := startCluster(t, fastOptions("a"), fastOptions("b"), fastOptions("c"))
	for _, p := range peers {
		members := p.Members()
		require.Len(t, members, 3)
		for _, m := range members {
			require.Equal(t, "alive", m.State)
			require.Equal(t, "http://"+m.Name+":8080", m.Meta.APIURL)
			require.Equal(t, "http://"+m.Name+":8081", m.Meta.InternalURL)
			require.NotEmpty(t, m.Addr)
		}
		require.GreaterOrEqual(t, eventCount(p, eventJoin), 3.0, "joins seen by %s", p.Name())
		require.Len(t, p.Changes(), 1, "changes are pending and coalesced into one")
	}

	// After draining, a new member wakes Changes again.
	a := peers[0]
	<-a.Changes()
	d := fastOptions("d")
	d.Join = []string{addr(a)}
	testPeer(t, d)
	select {
	case <-a.Changes():
	case <-time.After(10 * time.Second):
		t.Fatal("no change notification after a join")
	}
	eventually(t, 10*time.Second, func() bool { return seesExactly(a, "a", "b", "c", "d") }, "a sees %v", names(a.Members()))
}

func TestMetricsRegistered(t *testing.T) {
	reg := prometheus.NewRegistry()
	p, err := Join(fastOptions("m"), nil, reg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Leave(0) })

	mfs, err := reg.Gather()
	require.NoError(t, err)
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			got[mf.GetName()] += m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	require.Equal(t, map[string]float64{
		"telemeter_server_cluster_members":               1,
		"telemeter_server_cluster_peer_info":             1,
		"telemeter_server_cluster_failed_rejoins_total":  0,
		"telemeter_server_cluster_rejoins_total":         0,
		"telemeter_server_cluster_keyring_keys":          0,
		"telemeter_server_cluster_keyring_reloads_total": 0,
		"telemeter_server_cluster_ready":                 0,
		"telemeter_server_cluster_health_score":          0,
		"telemeter_server_cluster_member_events_total":   1, // its own join
	}, got)

	// A second peer on the same registry is an error, not a panic.
	_, err = Join(fastOptions("m2"), nil, reg)
	require.ErrorContains(t, err, "register cluster metrics")
}

func TestLeaveIsSeenQuickly(t *testing.T) {
	peers := startCluster(t, fastOptions("a"), fastOptions("b"), fastOptions("c"))
	a, b, c := peers[0], peers[1], peers[2]
	require.NoError(t, c.Leave(2*time.Second))
	require.NoError(t, c.Leave(time.Second), "second leave is a no-op")
	for _, p := range []*Peer{a, b} {
		eventually(t, 3*time.Second, func() bool { return seesExactly(p, "a", "b") }, "%s sees %v", p.Name(), names(p.Members()))
		require.Equal(t, 1.0, eventCount(p, eventLeave))
		require.Zero(t, eventCount(p, eventFailed), "a graceful leave is not a failure")
		require.Zero(t, eventCount(p, eventSuspect), "a graceful leave raises no suspicion")
	}
	require.False(t, c.Ready())
}

func TestSettleAndReady(t *testing.T) {
	t.Run("alone without seeds", func(t *testing.T) {
		p := testPeer(t, fastOptions("solo"))
		require.False(t, p.Ready(), "not ready before settling")
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		p.Settle(ctx, 20*time.Millisecond)
		require.NoError(t, ctx.Err(), "settle should return before the deadline")
		require.True(t, p.Ready())
		require.NoError(t, p.Leave(0))
		require.False(t, p.Ready(), "not ready after leaving")
	})
	t.Run("seeds unreachable", func(t *testing.T) {
		gone := testPeer(t, fastOptions("gone"))
		seed := addr(gone)
		require.NoError(t, gone.Leave(0))
		o := fastOptions("lonely")
		o.Join = []string{seed}
		p := testPeer(t, o)
		require.Equal(t, 1.0, testutil.ToFloat64(p.metrics.failedRejoins))
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		defer cancel()
		p.Settle(ctx, 20*time.Millisecond)
		require.Error(t, ctx.Err(), "settle must wait for a join")
		require.False(t, p.Ready())
	})
	t.Run("joined", func(t *testing.T) {
		peers := startCluster(t, fastOptions("a"), fastOptions("b"))
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		for _, p := range peers {
			p.Settle(ctx, 20*time.Millisecond)
			require.True(t, p.Ready(), p.Name())
		}
	})
}

func TestRunReturnsOnCancel(t *testing.T) {
	for _, tc := range []struct {
		name  string
		seeds bool
	}{
		{name: "no seeds"},
		{name: "with seeds", seeds: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := fastOptions("r")
			if tc.seeds {
				o.Join = []string{"127.0.0.1:1"}
			}
			p := testPeer(t, o)
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() { done <- p.Run(ctx) }()
			if tc.seeds {
				// The loop keeps trying while not joined.
				eventually(t, 5*time.Second, func() bool {
					return testutil.ToFloat64(p.metrics.failedRejoins) >= 2
				}, "no retry of the seeds")
			}
			cancel()
			select {
			case err := <-done:
				require.NoError(t, err)
			case <-time.After(5 * time.Second):
				t.Fatal("Run did not return after cancel")
			}
		})
	}
}

// TestRejoinAfterPartition cuts one node off until both sides declared the
// other dead, heals the network, checks that memberlist alone does not merge
// the two sides, then starts the re-join loop and expects a merge.
func TestRejoinAfterPartition(t *testing.T) {
	var cut *blockable
	co := fastOptions("c")
	co.wrapTransport = func(inner memberlist.NodeAwareTransport) memberlist.NodeAwareTransport {
		cut = newBlockable(inner)
		return cut
	}
	peers := startCluster(t, fastOptions("a"), fastOptions("b"), co)
	a, b, c := peers[0], peers[1], peers[2]

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() { _ = a.Run(ctx) }()
	go func() { _ = b.Run(ctx) }()

	cut.blocked.Store(true)
	for _, p := range []*Peer{a, b} {
		eventually(t, 15*time.Second, func() bool { return seesExactly(p, "a", "b") }, "%s still sees %v", p.Name(), names(p.Members()))
	}
	eventually(t, 15*time.Second, func() bool { return seesExactly(c, "c") }, "c still sees %v", names(c.Members()))
	for _, p := range []*Peer{a, b} {
		require.Equal(t, 1.0, eventCount(p, eventLeave), p.Name())
	}
	// Memberlist's own wording of suspicion and death reached the bridge.
	require.Positive(t, eventCount(a, eventSuspect)+eventCount(b, eventSuspect), "no suspicion counted")
	require.Positive(t, eventCount(a, eventFailed)+eventCount(b, eventFailed), "no failure counted")

	// Heal. Nobody gossips with a dead node any more, so the sides stay
	// apart until someone re-joins across.
	time.Sleep(co.GossipToTheDeadTime)
	cut.blocked.Store(false)
	time.Sleep(1500 * time.Millisecond)
	require.True(t, seesExactly(c, "c"), "c merged without the re-join loop: %v", names(c.Members()))

	healed := time.Now()
	go func() { _ = c.Run(ctx) }()
	for _, p := range peers {
		eventually(t, 10*time.Second, func() bool { return seesExactly(p, "a", "b", "c") }, "%s sees %v after healing", p.Name(), names(p.Members()))
	}
	t.Logf("merged %v after the re-join loop started", time.Since(healed))
}
