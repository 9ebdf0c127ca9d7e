//go:build e2e

package e2e

import (
	crand "crypto/rand"
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// churnEvents are the membership events a healthy, stable cluster never
// counts: a member left or was declared dead, this node suspected one or
// declared one dead, or refuted a suspicion of itself.
var churnEvents = []string{"leave", "failed", "suspect", "refute"}

func newGossipKey(t *testing.T) string {
	t.Helper()
	k := make([]byte, 32)
	_, err := crand.Read(k)
	require.NoError(t, err)
	return base64.StdEncoding.EncodeToString(k)
}

// outsider starts a server that tries to join every node of c but is not
// one of c's nodes. keyFile may be empty: no gossip encryption at all.
func outsider(c *testCluster, name, keyFile string) *node {
	c.t.Helper()
	n := &node{t: c.t, name: name, clusterAddr: freeAddr(c.t), ext: freeAddr(c.t), internal: freeAddr(c.t)}
	n.args = []string{
		"--listen=" + n.ext, "--listen-internal=" + n.internal,
		"--listen-cluster=" + n.clusterAddr, "--name=" + n.name,
		"--shared-key=" + c.keyFile, "--tokens-file=" + c.tokensFile,
		"--storage-dir=" + c.t.TempDir(), "--log-level=debug", "--ratelimit=0s",
	}
	if keyFile != "" {
		n.args = append(n.args, "--gossip-key-file="+keyFile)
	}
	for _, o := range c.nodes {
		n.args = append(n.args, "--join="+o.clusterAddr)
	}
	n.start()
	return n
}

func memberNames(d clusterDebug) []string {
	var out []string
	for _, m := range d.Members {
		out = append(out, m.Name)
	}
	slices.Sort(out)
	return out
}

func churn(t *testing.T, n *node) float64 {
	t.Helper()
	sum := 0.0
	for _, e := range churnEvents {
		v, err := metricValue(n.InternalURL, "telemeter_server_cluster_member_events_total", "event", e)
		require.NoError(t, err)
		sum += v
	}
	return sum
}

// QUALITY R14, first half: a server with the wrong gossip key and one with
// no key at all, both told to join, never become members. A third server
// with the right key, started after them, joins at once: the wait was long
// enough to see a join.
func TestGossipForeignNodesNeverJoin(t *testing.T) {
	c := newTestCluster(t)
	c.add("--ratelimit=0s")
	c.add("--ratelimit=0s")
	c.converged(60 * time.Second)
	joinsBefore := make([]float64, len(c.nodes))
	for i, n := range c.nodes {
		v, err := metricValue(n.InternalURL, "telemeter_server_cluster_member_events_total", "event", "join")
		require.NoError(t, err)
		joinsBefore[i] = v
	}

	wrongKey := writeFile(t, "wrong-gossip.key", newGossipKey(t)+"\n")
	intruders := []*node{
		outsider(c, "intruder-wrong-key", wrongKey),
		outsider(c, "intruder-no-key", ""),
	}
	insiders := []string{"node-0", "node-1"}

	// Both intruders keep re-joining (every second until a first join
	// succeeds), so 15 s is many refused attempts each.
	deadline := time.Now().Add(15 * time.Second)
	polls := 0
	for time.Now().Before(deadline) {
		polls++
		for _, n := range c.nodes {
			d, err := n.debug()
			require.NoError(t, err)
			require.Equal(t, insiders, memberNames(d), "%s's members", n.name)
			require.Equal(t, insiders, d.Ring, "%s's ring", n.name)
		}
		for _, n := range intruders {
			require.False(t, n.exited(), "%s exited: the test would prove nothing", n.name)
			d, err := n.debug()
			require.NoError(t, err)
			require.Equal(t, []string{n.name}, memberNames(d), "%s learned members of the cluster", n.name)
		}
		time.Sleep(250 * time.Millisecond)
	}
	for _, n := range intruders {
		failed, err := metricValue(n.InternalURL, "telemeter_server_cluster_failed_rejoins_total")
		require.NoError(t, err)
		require.GreaterOrEqual(t, failed, 5.0, "%s did not keep trying to join", n.name)
		t.Logf("%s: %v refused joins in 15 s", n.name, failed)
	}
	for i, n := range c.nodes {
		v, err := metricValue(n.InternalURL, "telemeter_server_cluster_member_events_total", "event", "join")
		require.NoError(t, err)
		require.Equal(t, joinsBefore[i], v, "%s counted a join", n.name)
	}

	// Control: the right key joins within the same kind of wait.
	began := time.Now()
	c.add("--ratelimit=0s")
	c.converged(15 * time.Second)
	t.Logf("a node with the right key joined in %s (%d polls while the intruders were kept out)", time.Since(began).Round(time.Millisecond), polls)
	for _, n := range c.nodes {
		d, err := n.debug()
		require.NoError(t, err)
		require.Equal(t, []string{"node-0", "node-1", "node-2"}, memberNames(d), "%s's members", n.name)
	}
}

// QUALITY R14, second half: rotate the gossip key of a 3-node cluster under
// push load, in the documented order (add the new key as secondary, make
// it primary, remove the old one; every node reloaded between steps).
// Nothing may notice: no upload lost, 3 members throughout, no leave,
// failed, suspect or refute event on any node.
func TestGossipKeyRotationUnderLoad(t *testing.T) {
	c := newTestCluster(t)
	oldBytes, err := os.ReadFile(c.gossipFile)
	require.NoError(t, err)
	oldKey, newKey := strings.TrimSpace(string(oldBytes)), newGossipKey(t)
	keyFiles := make([]string, 3)
	for i := range keyFiles {
		// One key file per node, as on separate hosts.
		keyFiles[i] = writeFile(t, fmt.Sprintf("gossip-%d.key", i), oldKey+"\n")
		c.add("--ratelimit=0s", "--gossip-key-file="+keyFiles[i])
	}
	c.converged(60 * time.Second)

	p := newPusher(c.token)
	ids := clusterIDs(30, "rotate")
	base := c.pushAll(p, ids, 1)
	c.exactlyOnce(base, 30*time.Second)
	before := make([]float64, len(c.nodes))
	for i, n := range c.nodes {
		before[i] = churn(t, n)
	}

	// Membership watch: every node's view, every 200 ms.
	var (
		stopWatch           atomic.Bool
		watchDone           = make(chan struct{})
		wmu                 sync.Mutex
		minMembers, minRing = 99, 99
		maxMembers, maxRing int
		views, viewErrs     int
	)
	go func() {
		defer close(watchDone)
		deadline := time.Now().Add(3 * time.Minute)
		for !stopWatch.Load() && time.Now().Before(deadline) {
			for _, n := range c.nodes {
				d, err := n.debug()
				wmu.Lock()
				if err != nil {
					viewErrs++
				} else {
					views++
					minMembers, maxMembers = min(minMembers, len(d.Members)), max(maxMembers, len(d.Members))
					minRing, maxRing = min(minRing, len(d.Ring)), max(maxRing, len(d.Ring))
				}
				wmu.Unlock()
			}
			time.Sleep(200 * time.Millisecond)
		}
	}()

	load := startLoad(p, ids, 1, loadOptions{
		workers: 3, pause: 50 * time.Millisecond, limit: 3 * time.Minute,
		entry: func() string { return c.nodes[rand.IntN(len(c.nodes))].URL },
	})
	t.Cleanup(func() { load.halt(); stopWatch.Store(true); <-watchDone })

	reloadAll := func(step string, keys ...string) {
		t.Helper()
		for _, f := range keyFiles {
			require.NoError(t, os.WriteFile(f, []byte(strings.Join(keys, "\n")+"\n"), 0o600))
		}
		for _, n := range c.nodes {
			resp, err := http.Post(n.InternalURL+"/-/reload", "", nil)
			require.NoError(t, err)
			resp.Body.Close()
			require.Equal(t, http.StatusNoContent, resp.StatusCode, "%s: reload %s", n.name, step)
		}
		// Several probe and gossip rounds with this key set everywhere,
		// longer than memberlist's suspicion timeout (4 s for 3 nodes).
		time.Sleep(6 * time.Second)
	}
	time.Sleep(2 * time.Second)
	reloadAll("add new key as secondary", oldKey, newKey)
	reloadAll("make new key primary", newKey, oldKey)
	reloadAll("remove old key", newKey)
	time.Sleep(4 * time.Second) // a failure caused by the removal would show by now

	load.halt()
	stopWatch.Store(true)
	<-watchDone
	c.exactlyOnce(load.log.acked(base), 30*time.Second)

	statuses, total := load.log.counts()
	t.Logf("pushes during rotation: %s", load.log)
	wmu.Lock()
	t.Logf("membership views: %d (%d failed reads); members %d..%d, ring %d..%d", views, viewErrs, minMembers, maxMembers, minRing, maxRing)
	require.Greater(t, views, 100)
	require.Equal(t, 3, minMembers, "a node saw fewer than 3 members during rotation")
	require.Equal(t, 3, maxMembers)
	require.Equal(t, 3, minRing, "a node's ring lost a member during rotation")
	wmu.Unlock()
	for i, n := range c.nodes {
		after := churn(t, n)
		require.Equal(t, before[i], after, "%s counted leave/failed/suspect/refute events during rotation", n.name)
		keys, err := metricValue(n.InternalURL, "telemeter_server_cluster_keyring_keys")
		require.NoError(t, err)
		require.Equal(t, 1.0, keys, "%s still holds the old key", n.name)
		ok, err := metricValue(n.InternalURL, "telemeter_server_cluster_keyring_reloads_total", "result", "success")
		require.NoError(t, err)
		require.Equal(t, 3.0, ok, "%s reloads", n.name)
	}
	require.Greater(t, total, 100, "too little load to judge")
	require.Equal(t, total, statuses[http.StatusOK], "every push during rotation is accepted: %s", load.log)

	// The cluster now speaks the new key only: a node holding just the new
	// key joins (its seed answers with the new primary key).
	newOnly := writeFile(t, "gossip-new.key", newKey+"\n")
	c.add("--ratelimit=0s", "--gossip-key-file="+newOnly)
	c.converged(30 * time.Second)
}
