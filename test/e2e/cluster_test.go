//go:build e2e

package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// node is one telemeter-server of a test cluster; restart keeps its name,
// addresses and storage.
type node struct {
	*telemeterServer
	t                 *testing.T
	name, clusterAddr string
	ext, internal     string
	args              []string
}

type testCluster struct {
	t                          *testing.T
	keyFile, gossipFile, token string
	tokensFile                 string
	nodes                      []*node
}

func newTestCluster(t *testing.T) *testCluster {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	der, err := x509.MarshalECPrivateKey(k)
	require.NoError(t, err)
	gossip := make([]byte, 32)
	_, _ = rand.Read(gossip)
	return &testCluster{
		t:          t,
		keyFile:    writeFile(t, "shared-key.pem", string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}))),
		gossipFile: writeFile(t, "gossip.key", base64.StdEncoding.EncodeToString(gossip)+"\n"),
		tokensFile: writeFile(t, "tokens.json", `[{"token":"fleet-token"}]`),
		token:      "fleet-token",
	}
}

// add starts a node that joins the first node (if any).
func (c *testCluster) add(extra ...string) *node {
	c.t.Helper()
	n := &node{
		t:           c.t,
		name:        fmt.Sprintf("node-%d", len(c.nodes)),
		clusterAddr: freeAddr(c.t),
		ext:         freeAddr(c.t),
		internal:    freeAddr(c.t),
	}
	n.args = []string{
		"--listen=" + n.ext, "--listen-internal=" + n.internal,
		"--listen-cluster=" + n.clusterAddr, "--name=" + n.name,
		"--shared-key=" + c.keyFile, "--gossip-key-file=" + c.gossipFile,
		"--tokens-file=" + c.tokensFile, "--storage-dir=" + c.t.TempDir(),
		"--log-level=debug",
	}
	for _, o := range c.nodes {
		n.args = append(n.args, "--join="+o.clusterAddr)
	}
	n.args = append(n.args, extra...)
	c.nodes = append(c.nodes, n)
	n.start()
	return n
}

func (n *node) start() {
	n.t.Helper()
	n.telemeterServer = &telemeterServer{URL: "http://" + n.ext, InternalURL: "http://" + n.internal}
	n.proc = start(n.t, n.name, bin("telemeter-server"), n.args...)
	waitHTTP(n.t, n.InternalURL+"/healthz", 30*time.Second)
}

type clusterDebug struct {
	Self    string `json:"self"`
	Ready   bool   `json:"ready"`
	Members []struct {
		Name string `json:"Name"`
	} `json:"members"`
	Ring []string `json:"ring"`
}

func (n *node) debug() (clusterDebug, error) {
	var d clusterDebug
	code, body, err := httpGet(n.InternalURL+"/debug/cluster", nil)
	if err != nil {
		return d, err
	}
	if code != http.StatusOK {
		return d, fmt.Errorf("debug/cluster: %d", code)
	}
	return d, json.Unmarshal(body, &d)
}

// converged waits until every running node's ring has exactly the running nodes.
func (c *testCluster) converged(timeout time.Duration) {
	c.t.Helper()
	var want []string
	for _, n := range c.nodes {
		if !n.exited() {
			want = append(want, n.name)
		}
	}
	eventually(c.t, timeout, fmt.Sprintf("ring converges on %v", want), func() error {
		for _, n := range c.nodes {
			if n.exited() {
				continue
			}
			d, err := n.debug()
			if err != nil {
				return err
			}
			if fmt.Sprint(d.Ring) != fmt.Sprint(want) {
				return fmt.Errorf("%s sees ring %v", n.name, d.Ring)
			}
			code, _, err := httpGet(n.InternalURL+"/healthz/ready", nil)
			if err != nil || code != http.StatusOK {
				return fmt.Errorf("%s not ready (%d): %w", n.name, code, err)
			}
		}
		return nil
	})
}

// exports collects, per cluster ID, which nodes export it and the value.
func (c *testCluster) exports() (map[string][]string, map[string]float64, error) {
	who := map[string][]string{}
	val := map[string]float64{}
	for _, n := range c.nodes {
		if n.exited() {
			continue
		}
		m, err := federated(n.InternalURL)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", n.name, err)
		}
		for id, v := range m {
			who[id] = append(who[id], n.name)
			val[id] = v
		}
	}
	return who, val, nil
}

// exactlyOnce waits until each id is exported by exactly one node with a
// value of at least want[id].
func (c *testCluster) exactlyOnce(want map[string]float64, timeout time.Duration) {
	c.t.Helper()
	eventually(c.t, timeout, "each cluster exported by exactly one node", func() error {
		who, val, err := c.exports()
		if err != nil {
			return err
		}
		for id, min := range want {
			if len(who[id]) != 1 {
				return fmt.Errorf("cluster %s exported by %v", id, who[id])
			}
			if val[id] < min {
				return fmt.Errorf("cluster %s exports %v, acknowledged %v", id, val[id], min)
			}
		}
		if len(who) != len(want) {
			return fmt.Errorf("%d clusters exported, want %d", len(who), len(want))
		}
		return nil
	})
}

// pushAll pushes seq for every id, round-robin over the running nodes,
// retrying retryable answers a bounded number of times. It returns the
// acknowledged value per id.
func (c *testCluster) pushAll(p *pusher, ids []string, seq float64) map[string]float64 {
	c.t.Helper()
	acked := map[string]float64{}
	for i, id := range ids {
		for attempt := 0; attempt < 20; attempt++ {
			n := c.nodes[(i+attempt)%len(c.nodes)]
			if n.exited() {
				continue
			}
			code, err := p.push(context.Background(), n.URL, id, seq)
			if err == nil && code == http.StatusOK {
				acked[id] = seq
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		require.Contains(c.t, acked, id, "no node accepted cluster %s", id)
	}
	return acked
}

// Pushes entering any node end up exported by exactly one node, and a
// central Prometheus scraping every node sees each cluster's series once.
func TestClusterThreeNodesExportOnce(t *testing.T) {
	c := newTestCluster(t)
	for range 3 {
		c.add("--ratelimit=0s")
	}
	c.converged(60 * time.Second)

	p := newPusher(c.token)
	ids := clusterIDs(30, "three")
	acked := c.pushAll(p, ids, 1)
	c.exactlyOnce(acked, 30*time.Second)

	central := startCentral(t, c.nodes[0].telemeterServer, c.nodes[1].telemeterServer, c.nodes[2].telemeterServer)
	eventually(t, 60*time.Second, "central Prometheus sees every cluster's series once", func() error {
		v, err := central.query(`count by (_id) (e2e_sequence)`)
		if err != nil {
			return err
		}
		if len(v) != len(ids) {
			return fmt.Errorf("%d clusters, want %d", len(v), len(ids))
		}
		for _, s := range v {
			if s.Value[1] != "3" {
				return fmt.Errorf("cluster %s has %v series, want 3", s.Metric["_id"], s.Value[1])
			}
		}
		return nil
	})
}

// QUALITY R16: a 4th node takes at most 30 % of the clusters, and the ones
// it takes are handed to it: still exported exactly once.
func TestClusterAddFourthNode(t *testing.T) {
	c := newTestCluster(t)
	for range 3 {
		c.add("--ratelimit=0s")
	}
	c.converged(60 * time.Second)
	p := newPusher(c.token)
	ids := clusterIDs(60, "grow")
	acked := c.pushAll(p, ids, 1)
	c.exactlyOnce(acked, 30*time.Second)
	before, _, err := c.exports()
	require.NoError(t, err)

	c.add("--ratelimit=0s")
	c.converged(60 * time.Second)
	c.exactlyOnce(acked, 60*time.Second)
	after, _, err := c.exports()
	require.NoError(t, err)
	moved := 0
	for id := range acked {
		if before[id][0] != after[id][0] {
			moved++
			require.Equal(t, "node-3", after[id][0], "a cluster moved between old nodes")
		}
	}
	require.Greater(t, moved, 0, "the new node took no cluster")
	require.LessOrEqual(t, float64(moved)/float64(len(ids)), 0.30, "moved %d of %d", moved, len(ids))
}

// QUALITY R1: SIGKILL the owner of a third of the clusters mid-push, then
// restart it. No acknowledged upload is lost and clients succeed again.
func TestClusterKillOwnerMidPush(t *testing.T) {
	c := newTestCluster(t)
	for range 3 {
		c.add("--ratelimit=0s", "--replication-factor=2")
	}
	c.converged(60 * time.Second)
	p := newPusher(c.token)
	ids := clusterIDs(30, "kill")
	acked := c.pushAll(p, ids, 1)
	c.exactlyOnce(acked, 30*time.Second)

	// Push continuously through the two survivors while node-1 dies.
	var (
		mu      sync.Mutex
		latest  = map[string]float64{}
		stop    atomic.Bool
		wg      sync.WaitGroup
		seq     atomic.Int64
		entries = []*node{c.nodes[0], c.nodes[2]}
	)
	seq.Store(1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		deadline := time.Now().Add(40 * time.Second)
		for !stop.Load() && time.Now().Before(deadline) {
			v := float64(seq.Add(1))
			for i, id := range ids {
				code, err := p.push(context.Background(), entries[i%2].URL, id, v)
				if err == nil && code == http.StatusOK {
					mu.Lock()
					latest[id] = v
					mu.Unlock()
				}
			}
		}
	}()
	time.Sleep(2 * time.Second)
	c.nodes[1].kill()
	time.Sleep(5 * time.Second)
	c.nodes[1].start()
	c.converged(60 * time.Second)
	time.Sleep(3 * time.Second)
	stop.Store(true)
	wg.Wait()

	mu.Lock()
	want := map[string]float64{}
	for id, v := range acked {
		want[id] = max(v, latest[id])
	}
	mu.Unlock()
	c.exactlyOnce(want, 60*time.Second)

	// Clients succeed again: a fresh push through every node is accepted.
	after := c.pushAll(p, ids, float64(seq.Add(1)))
	c.exactlyOnce(after, 30*time.Second)
}

// QUALITY R17: one cluster pushing 100/s through every node gets one
// accepted upload per interval, and forwards to the owner stay within
// limit × nodes.
func TestClusterAmplificationBound(t *testing.T) {
	c := newTestCluster(t)
	for range 3 {
		c.add("--ratelimit=2s")
	}
	c.converged(60 * time.Second)
	p := newPusher(c.token)

	const duration = 6 * time.Second
	var ok, limited atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for _, n := range c.nodes {
		wg.Add(1)
		go func(n *node) {
			defer wg.Done()
			tick := time.NewTicker(30 * time.Millisecond) // ~33/s per node, 100/s in all
			defer tick.Stop()
			seq := 0.0
			for time.Since(start) < duration {
				<-tick.C
				seq++
				code, err := p.push(context.Background(), n.URL, "noisy", seq)
				if err != nil {
					continue
				}
				switch code {
				case http.StatusOK:
					ok.Add(1)
				case http.StatusTooManyRequests:
					limited.Add(1)
				}
			}
		}(n)
	}
	wg.Wait()
	elapsed := time.Since(start)
	intervals := int64(elapsed/(2*time.Second)) + 1
	require.Greater(t, limited.Load(), int64(0))
	require.LessOrEqual(t, ok.Load(), intervals, "accepted uploads: at most one per interval")
	require.GreaterOrEqual(t, ok.Load(), int64(1))

	forwards := 0.0
	for _, n := range c.nodes {
		v, err := metricValue(n.InternalURL, "telemeter_server_forwards_total")
		require.NoError(t, err)
		forwards += v
	}
	require.LessOrEqual(t, forwards, float64(intervals*int64(len(c.nodes))), "forwards to the owner ≤ limit × nodes")
}
