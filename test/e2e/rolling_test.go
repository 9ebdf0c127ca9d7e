//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// ackLog records what a load loop was told: per cluster the last value a
// node acknowledged with 200, and every answer counted by status (0 for a
// transport error: refused, reset, timed out).
type ackLog struct {
	mu       sync.Mutex
	latest   map[string]float64
	statuses map[int]int
	errs     []string // first transport errors, for the log
}

func newAckLog() *ackLog {
	return &ackLog{latest: map[string]float64{}, statuses: map[int]int{}}
}

func (a *ackLog) record(id string, seq float64, code int, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err != nil {
		code = 0
		if len(a.errs) < 5 {
			a.errs = append(a.errs, err.Error())
		}
	}
	a.statuses[code]++
	if code == http.StatusOK && seq > a.latest[id] {
		a.latest[id] = seq
	}
}

// acked returns the last acknowledged value per cluster, at least base[id].
func (a *ackLog) acked(base map[string]float64) map[string]float64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[string]float64, len(base))
	for id, v := range base {
		out[id] = max(v, a.latest[id])
	}
	return out
}

// counts returns the answers by status and their total.
func (a *ackLog) counts() (map[int]int, int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[int]int, len(a.statuses))
	total := 0
	for k, v := range a.statuses {
		out[k] = v
		total += v
	}
	return out, total
}

func (a *ackLog) String() string {
	st, total := a.counts()
	codes := make([]int, 0, len(st))
	for k := range st {
		codes = append(codes, k)
	}
	sort.Ints(codes)
	var b strings.Builder
	fmt.Fprintf(&b, "%d answers:", total)
	for _, k := range codes {
		name := fmt.Sprint(k)
		if k == 0 {
			name = "transport-error"
		}
		fmt.Fprintf(&b, " %s=%d", name, st[k])
	}
	a.mu.Lock()
	if len(a.errs) > 0 {
		fmt.Fprintf(&b, " (first errors: %s)", strings.Join(a.errs, "; "))
	}
	a.mu.Unlock()
	return b.String()
}

// loadLoop is a bounded background push load. Each worker owns a share of
// the cluster IDs and pushes them one after another, so per cluster the
// pushed values only grow; values come from one counter shared by all.
type loadLoop struct {
	stop atomic.Bool
	wg   sync.WaitGroup
	seq  atomic.Int64
	log  *ackLog
}

type loadOptions struct {
	workers int
	pause   time.Duration // after each push, per worker
	limit   time.Duration // the loop ends by itself after this
	// entry picks the base URL of the next push. A push that is not
	// acknowledged is not retried at once: the cluster's next push, a
	// round later, carries newer data, as with a real client whose
	// backoff outlasts the failure.
	entry func() string
}

func startLoad(p *pusher, ids []string, firstSeq float64, o loadOptions) *loadLoop {
	l := &loadLoop{log: newAckLog()}
	l.seq.Store(int64(firstSeq))
	deadline := time.Now().Add(o.limit)
	for w := range o.workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			var mine []string
			for i, id := range ids {
				if i%o.workers == w {
					mine = append(mine, id)
				}
			}
			for !l.stop.Load() && time.Now().Before(deadline) {
				for _, id := range mine {
					if l.stop.Load() || !time.Now().Before(deadline) {
						return
					}
					v := float64(l.seq.Add(1))
					code, err := p.push(context.Background(), o.entry(), id, v)
					l.log.record(id, v, code, err)
					time.Sleep(o.pause)
				}
			}
		}()
	}
	return l
}

// halt stops the loop and waits for the pushes in flight.
func (l *loadLoop) halt() {
	l.stop.Store(true)
	l.wg.Wait()
}

// exportWatch polls every node's /federate and records, per cluster, the
// spans in which no node or two and more nodes exported it: what a central
// Prometheus scraping every node would have seen.
type exportWatch struct {
	urls []string      // internal URLs, by node index
	down []atomic.Bool // set by the test around a restart: not scrapeable
	ids  []string

	stop atomic.Bool
	done chan struct{}

	mu                  sync.Mutex
	rounds, skipped     int
	noneSince, dupSince map[string]time.Time
	worstNone, worstDup durations
}

// durations keeps the longest span and whose it was.
type durations struct {
	d       time.Duration
	cluster string
	spans   int
}

func (d *durations) add(id string, span time.Duration) {
	d.spans++
	if span > d.d {
		d.d, d.cluster = span, id
	}
}

func (d durations) String() string {
	if d.spans == 0 {
		return "none"
	}
	return fmt.Sprintf("%d spans, longest %s (cluster %s)", d.spans, d.d.Round(time.Millisecond), d.cluster)
}

func watchExports(urls []string, ids []string, every, limit time.Duration) *exportWatch {
	w := &exportWatch{
		urls: urls, down: make([]atomic.Bool, len(urls)), ids: ids, done: make(chan struct{}),
		noneSince: map[string]time.Time{}, dupSince: map[string]time.Time{},
	}
	go func() {
		defer close(w.done)
		deadline := time.Now().Add(limit)
		for !w.stop.Load() && time.Now().Before(deadline) {
			next := time.Now().Add(every)
			w.round()
			time.Sleep(time.Until(next))
		}
		w.close(time.Now())
	}()
	return w
}

// round reads every node once. A node marked down exports nothing; a
// node that should be up but fails to answer makes the round inconclusive.
func (w *exportWatch) round() {
	at := time.Now()
	count := map[string]int{}
	for i, u := range w.urls {
		if w.down[i].Load() {
			continue
		}
		m, err := federated(u)
		if err != nil {
			if w.down[i].Load() {
				continue // went down while we read it
			}
			w.mu.Lock()
			w.rounds++
			w.skipped++
			w.mu.Unlock()
			return
		}
		for id := range m {
			count[id]++
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.rounds++
	for _, id := range w.ids {
		track(id, at, count[id] == 0, w.noneSince, &w.worstNone)
		track(id, at, count[id] >= 2, w.dupSince, &w.worstDup)
	}
}

// track opens a span at the first bad observation and closes it at the
// first good one: the span is measured from the first poll that saw the
// fault to the first that no longer did, so it errs on the long side by
// at most one poll period.
func track(id string, at time.Time, bad bool, since map[string]time.Time, worst *durations) {
	start, open := since[id]
	switch {
	case bad && !open:
		since[id] = at
	case !bad && open:
		worst.add(id, at.Sub(start))
		delete(since, id)
	}
}

func (w *exportWatch) close(at time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for id, s := range w.noneSince {
		w.worstNone.add(id, at.Sub(s))
	}
	for id, s := range w.dupSince {
		w.worstDup.add(id, at.Sub(s))
	}
	w.noneSince, w.dupSince = map[string]time.Time{}, map[string]time.Time{}
}

func (w *exportWatch) halt() (none, dup durations, rounds, skipped int) {
	w.stop.Store(true)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.worstNone, w.worstDup, w.rounds, w.skipped
}

// exitError is how an exited process ended (nil: status 0).
func exitError(p *proc) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// newSeededCluster starts n nodes that all list every other node as a seed,
// as an operator would configure a fleet, so that any node can be restarted
// and find the others.
func newSeededCluster(t *testing.T, n int, extra ...string) *testCluster {
	t.Helper()
	c := newTestCluster(t)
	for i := range n {
		c.nodes = append(c.nodes, &node{
			t:           t,
			name:        fmt.Sprintf("node-%d", i),
			clusterAddr: freeAddr(t),
			ext:         freeAddr(t),
			internal:    freeAddr(t),
		})
	}
	for _, nd := range c.nodes {
		nd.args = []string{
			"--listen=" + nd.ext, "--listen-internal=" + nd.internal,
			"--listen-cluster=" + nd.clusterAddr, "--name=" + nd.name,
			"--shared-key=" + c.keyFile, "--gossip-key-file=" + c.gossipFile,
			"--tokens-file=" + c.tokensFile, "--storage-dir=" + t.TempDir(),
			"--log-level=debug",
		}
		for _, o := range c.nodes {
			if o != nd {
				nd.args = append(nd.args, "--join="+o.clusterAddr)
			}
		}
		nd.args = append(nd.args, extra...)
	}
	for _, nd := range c.nodes {
		nd.start()
	}
	return c
}

// exportedOnce waits until each id is exported by exactly one running node.
func (c *testCluster) exportedOnce(ids []string, timeout time.Duration) {
	c.t.Helper()
	eventually(c.t, timeout, "each cluster exported by exactly one node", func() error {
		who, _, err := c.exports()
		if err != nil {
			return err
		}
		for _, id := range ids {
			if len(who[id]) != 1 {
				return fmt.Errorf("cluster %s exported by %v", id, who[id])
			}
		}
		return nil
	})
}

// QUALITY R15: a rolling restart of 3 nodes (replication factor 2) under
// a steady push load. Each node in turn gets SIGTERM (hand-off and graceful
// leave) and comes back with the same name, addresses and storage.
//
// Pass: no acknowledged upload lost; at most 1 % of the answers a
// retryable 5xx; no cluster exported by no node or by two nodes for longer
// than one scrape interval, taken here as 15 s (a common scrape interval
// for /federate; the span is measured from a 500 ms poll of every node).
//
// The load is W1 scaled down to a test: 60 clusters pushing in turn about
// every 2-3 s instead of 5,000 every 4m30s, so a restart happens while many
// pushes are in flight.
func TestRollingRestartUnderLoad(t *testing.T) {
	const (
		scrapeInterval = 15 * time.Second
		clusters       = 60
	)
	c := newSeededCluster(t, 3, "--ratelimit=0s", "--replication-factor=2")
	c.converged(60 * time.Second)

	p := newPusher(c.token)
	ids := clusterIDs(clusters, "rolling")
	base := c.pushAll(p, ids, 1)
	c.exactlyOnce(base, 30*time.Second)

	ext := make([]string, len(c.nodes))
	internal := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		ext[i], internal[i] = n.URL, n.InternalURL
	}
	watch := watchExports(internal, ids, 500*time.Millisecond, 8*time.Minute)
	entry := func() string {
		// A random node that is up; the test marks a node down just
		// before it is stopped, as a load balancer's health check would.
		var up []int
		for i := range ext {
			if !watch.down[i].Load() {
				up = append(up, i)
			}
		}
		return ext[up[rand.IntN(len(up))]]
	}
	load := startLoad(p, ids, 1, loadOptions{
		workers: 3, pause: 100 * time.Millisecond, limit: 8 * time.Minute, entry: entry,
	})
	t.Cleanup(func() { load.halt(); watch.halt() })

	time.Sleep(3 * time.Second) // load and polls running before the first restart
	for i, n := range c.nodes {
		watch.down[i].Store(true)
		began := time.Now()
		n.stop(syscall.SIGTERM, 40*time.Second)
		stopped := time.Since(began)
		require.NoError(t, exitError(n.proc), "%s did not exit cleanly on SIGTERM", n.name)
		require.True(t, strings.Contains(n.logText(), "leaving cluster"), "%s did not leave gracefully", n.name)
		t.Logf("%s stopped in %s", n.name, stopped.Round(time.Millisecond))

		began = time.Now()
		n.start()
		watch.down[i].Store(false)
		c.converged(60 * time.Second)
		c.exportedOnce(ids, 60*time.Second)
		t.Logf("%s back, ring converged and each cluster exported once after %s", n.name, time.Since(began).Round(time.Millisecond))
		time.Sleep(2 * time.Second) // steady load between restarts
	}

	load.halt()
	none, dup, rounds, skipped := watch.halt()

	statuses, total := load.log.counts()
	fiveXX := 0
	for code, n := range statuses {
		if code >= 500 {
			fiveXX += n
		}
	}
	share := float64(fiveXX) / float64(max(total, 1))
	t.Logf("pushes: %s", load.log)
	t.Logf("retryable 5xx share: %d of %d = %.3f %%", fiveXX, total, 100*share)
	t.Logf("exported by no node: %s", none)
	t.Logf("exported by two or more nodes: %s", dup)
	t.Logf("export polls: %d rounds, %d inconclusive (a running node did not answer)", rounds, skipped)

	// No acknowledged upload lost: each cluster ends up exported once,
	// with at least the last value a node answered 200 for.
	c.exactlyOnce(load.log.acked(base), 60*time.Second)
	require.Greater(t, total, 200, "too little load to judge")
	require.GreaterOrEqual(t, rounds-skipped, rounds*9/10, "too many inconclusive export polls")
	require.LessOrEqual(t, none.d, scrapeInterval, "a cluster was exported by no node for longer than a scrape interval: %s", none)
	require.LessOrEqual(t, dup.d, scrapeInterval, "a cluster was exported by two nodes for longer than a scrape interval: %s", dup)
	// Answers: 200, or a retryable 503 (at most 1 %). Anything else, a 403
	// above all, tells the client to drop the data for good.
	for code := range statuses {
		require.Contains(t, []int{http.StatusOK, http.StatusServiceUnavailable, 0}, code,
			"unexpected answer %d during a rolling restart: %s", code, load.log)
	}
	require.LessOrEqual(t, share, 0.01, "retryable 5xx above 1 %%: %s", load.log)
	require.LessOrEqual(t, float64(statuses[0])/float64(max(total, 1)), 0.01,
		"transport errors above 1 %% although pushes only go to nodes marked up: %s", load.log)
}
