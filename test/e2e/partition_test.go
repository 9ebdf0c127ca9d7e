//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// netLab is a small network the test builds for itself: one network
// namespace per node, each with a veth whose other end sits on a bridge in
// a namespace of its own. Nothing is added to the host's namespace: the
// test reaches a node by opening its sockets inside that node's namespace
// (see dial), so the addresses below exist only inside namespaces the
// test created and removes.
type netLab struct {
	t      *testing.T
	prefix string   // of every namespace name: tme2e-<pid>
	bridge string   // namespace holding the bridge
	nodes  []string // namespace per node
	ips    []string
	byIP   map[string]string // node IP → namespace file
}

const netLabPrefix = "tme2e-"

// newNetLab builds the network for n nodes, or skips the test when this
// machine does not let it (not root, no iproute2, namespaces refused).
func newNetLab(t *testing.T, n int) *netLab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("partition test needs root to create network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("partition test needs iproute2's ip command")
	}
	removeStaleNetLabs(t)
	lab := &netLab{t: t, prefix: fmt.Sprintf("%s%d", netLabPrefix, os.Getpid()), byIP: map[string]string{}}
	lab.bridge = lab.prefix + "-br"
	if out, err := lab.ip("netns", "add", lab.bridge); err != nil {
		t.Skipf("cannot create a network namespace here (%v: %s)", err, out)
	}
	t.Cleanup(func() { lab.delete(lab.bridge) })
	lab.must("-n", lab.bridge, "link", "set", "lo", "up")
	lab.must("-n", lab.bridge, "link", "add", "br0", "type", "bridge")
	lab.must("-n", lab.bridge, "link", "set", "br0", "up")
	for i := range n {
		ns := fmt.Sprintf("%s-n%d", lab.prefix, i)
		lab.must("netns", "add", ns)
		t.Cleanup(func() { lab.delete(ns) })
		ip := fmt.Sprintf("10.213.0.%d", i+1)
		veth := fmt.Sprintf("v%d", i)
		// Created inside the bridge namespace, peer moved straight into
		// the node's namespace: neither end ever lives in the host's.
		lab.must("-n", lab.bridge, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
		lab.must("-n", lab.bridge, "link", "set", veth, "master", "br0")
		lab.must("-n", lab.bridge, "link", "set", veth, "up")
		lab.must("-n", ns, "link", "set", "lo", "up")
		lab.must("-n", ns, "addr", "add", ip+"/24", "dev", "eth0")
		lab.must("-n", ns, "link", "set", "eth0", "up")
		lab.nodes = append(lab.nodes, ns)
		lab.ips = append(lab.ips, ip)
		lab.byIP[ip] = "/run/netns/" + ns
		_, err := os.Stat(lab.byIP[ip])
		require.NoError(t, err, "namespace file of %s", ns)
	}
	return lab
}

func (l *netLab) ip(args ...string) (string, error) {
	out, err := exec.Command("ip", args...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func (l *netLab) must(args ...string) {
	l.t.Helper()
	out, err := l.ip(args...)
	require.NoError(l.t, err, "ip %s: %s", strings.Join(args, " "), out)
}

func (l *netLab) delete(ns string) {
	if out, err := l.ip("netns", "del", ns); err != nil {
		l.t.Logf("remove namespace %s: %v: %s", ns, err, out)
	}
}

// removeStaleNetLabs deletes namespaces left by an earlier run of this test
// that was killed before its cleanup: only ours (by prefix) and only when
// the process that made them is gone.
func removeStaleNetLabs(t *testing.T) {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		rest, ok := strings.CutPrefix(name, netLabPrefix)
		if !ok {
			continue
		}
		pidText, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidText)
		if err != nil || pid == os.Getpid() || syscall.Kill(pid, 0) == nil {
			continue
		}
		if err := exec.Command("ip", "netns", "del", name).Run(); err == nil {
			t.Logf("removed stale namespace %s", name)
		}
	}
}

// setLink takes node i's end of the wire down (partition) or up (heal).
func (l *netLab) setLink(i int, up bool) {
	l.t.Helper()
	state := "down"
	if up {
		state = "up"
	}
	l.must("-n", l.bridge, "link", "set", fmt.Sprintf("v%d", i), state)
}

// dial opens connections to a lab address from inside the namespace that
// owns it, so the test needs no route from the host's namespace; other
// addresses are dialled as usual. The socket is created on a thread that
// entered the namespace and then went back. The thread must not die:
// children started with Pdeathsig (the harness's) are killed when the
// thread that forked them ends, and a Go thread that ends locked may be
// one that forked a node.
func (l *netLab) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	nsFile, ok := l.byIP[host]
	if !ok {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		home, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{nil, err}
			return
		}
		defer func() { _ = home.Close() }()
		target, err := os.Open(nsFile)
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{nil, err}
			return
		}
		defer func() { _ = target.Close() }()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- result{nil, fmt.Errorf("enter namespace %s: %w", nsFile, err)}
			return
		}
		d := net.Dialer{Timeout: 5 * time.Second}
		c, err := d.DialContext(ctx, network, addr)
		if rerr := unix.Setns(int(home.Fd()), unix.CLONE_NEWNET); rerr != nil {
			// Stay locked: this thread ends with the goroutine rather
			// than run other goroutines in the wrong namespace.
			fmt.Fprintf(os.Stderr, "partition test: return to the host namespace: %v\n", rerr)
		} else {
			runtime.UnlockOSThread()
		}
		ch <- result{c, err}
	}()
	r := <-ch
	return r.c, r.err
}

// transport is an HTTP transport that dials through the lab.
func (l *netLab) transport() *http.Transport {
	return &http.Transport{
		DialContext:         l.dial,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     30 * time.Second,
	}
}

// startIn runs n's server inside namespace ns.
func (n *node) startIn(ns string) {
	n.t.Helper()
	n.telemeterServer = &telemeterServer{URL: "http://" + n.ext, InternalURL: "http://" + n.internal}
	args := append([]string{"netns", "exec", ns, bin("telemeter-server")}, n.args...)
	n.proc = start(n.t, n.name, "ip", args...)
	waitHTTP(n.t, n.InternalURL+"/healthz", 30*time.Second)
}

// ringsEqual waits until every listed node's ring is want, polling every
// 100 ms, and returns how long that took; it fails after timeout.
func ringsEqual(t *testing.T, nodes []*node, want []string, timeout time.Duration) time.Duration {
	t.Helper()
	began := time.Now()
	eventually(t, timeout, fmt.Sprintf("rings become %v", want), func() error {
		for _, n := range nodes {
			d, err := n.debug()
			if err != nil {
				return fmt.Errorf("%s: %w", n.name, err)
			}
			if fmt.Sprint(d.Ring) != fmt.Sprint(want) {
				return fmt.Errorf("%s sees ring %v", n.name, d.Ring)
			}
		}
		return nil
	})
	return time.Since(began)
}

// QUALITY R13: cut one of 3 nodes off the network for 90 s under push load
// through the other two, then heal.
//
// Pass: the two detect the loss (their rings drop it) within 10 s; every
// push to them is stored or answered 503, and every 200 is exported after
// the heal (no dropped 2xx); the node re-joins (every ring has 3 members
// again) within 30 s of the heal, and then each cluster is exported by
// exactly one node.
func TestPartitionOneOfThree(t *testing.T) {
	const (
		partition = 90 * time.Second
		victim    = 2
	)
	lab := newNetLab(t, 3)
	prev, tr := http.DefaultClient.Transport, lab.transport()
	http.DefaultClient.Transport = tr // the harness's helpers read nodes through it
	t.Cleanup(func() { http.DefaultClient.Transport = prev; tr.CloseIdleConnections() })

	c := newTestCluster(t)
	for i, ip := range lab.ips {
		c.nodes = append(c.nodes, &node{
			t: t, name: fmt.Sprintf("node-%d", i),
			clusterAddr: ip + ":7946", ext: ip + ":9003", internal: ip + ":9004",
		})
	}
	for _, n := range c.nodes {
		n.args = []string{
			"--listen=" + n.ext, "--listen-internal=" + n.internal,
			"--listen-cluster=" + n.clusterAddr, "--name=" + n.name,
			"--shared-key=" + c.keyFile, "--gossip-key-file=" + c.gossipFile,
			"--tokens-file=" + c.tokensFile, "--storage-dir=" + t.TempDir(),
			"--log-level=debug", "--ratelimit=0s", "--replication-factor=2",
		}
		for _, o := range c.nodes {
			if o != n {
				n.args = append(n.args, "--join="+o.clusterAddr)
			}
		}
	}
	for i, n := range c.nodes {
		n.startIn(lab.nodes[i])
	}
	all := []string{"node-0", "node-1", "node-2"}
	c.converged(60 * time.Second)

	p := newPusher(c.token)
	ptr := lab.transport()
	p.client.Transport = ptr
	t.Cleanup(ptr.CloseIdleConnections)
	ids := clusterIDs(30, "partition")
	base := c.pushAll(p, ids, 1)
	c.exactlyOnce(base, 30*time.Second)

	majority := []*node{c.nodes[0], c.nodes[1]}
	load := startLoad(p, ids, 1, loadOptions{
		workers: 3, pause: 50 * time.Millisecond, limit: partition + time.Minute,
		entry: func() string { return majority[rand.IntN(len(majority))].URL },
	})
	t.Cleanup(load.halt)
	time.Sleep(2 * time.Second)

	cut := time.Now()
	lab.setLink(victim, false)
	healed := false
	t.Cleanup(func() {
		if !healed {
			lab.setLink(victim, true)
		}
	})
	detected := ringsEqual(t, majority, []string{"node-0", "node-1"}, 30*time.Second)
	t.Logf("partition detected by both other nodes after %s", detected.Round(time.Millisecond))
	atDetection := load.log.acked(base)

	// Hold the partition; look at the cut-off node's own view once.
	time.Sleep(time.Until(cut.Add(partition)))
	if d, err := c.nodes[victim].debug(); err == nil {
		t.Logf("cut-off node's view after %s: members %v, ring %v", partition, memberNames(d), d.Ring)
	}
	load.halt()
	atHeal := load.log.acked(base)

	lab.setLink(victim, true)
	healed = true
	rejoined := ringsEqual(t, c.nodes, all, 60*time.Second)
	t.Logf("re-joined (every ring has 3 members) %s after the heal", rejoined.Round(time.Millisecond))

	c.exactlyOnce(atHeal, 60*time.Second)

	statuses, total := load.log.counts()
	t.Logf("pushes to the majority side: %s", load.log)
	require.Greater(t, total, 100, "too little load to judge")
	for code, count := range statuses {
		require.Contains(t, []int{http.StatusOK, http.StatusServiceUnavailable}, code,
			"%d pushes answered %d (0: no answer): only 200 (stored) or 503 are allowed: %s", count, code, load.log)
	}
	for _, id := range ids {
		require.Greater(t, atHeal[id], atDetection[id], "the majority side accepted no push of %s during the partition", id)
	}
	require.LessOrEqual(t, detected, 10*time.Second, "partition detected too late")
	require.LessOrEqual(t, rejoined, 30*time.Second, "re-join after heal too late")
}
