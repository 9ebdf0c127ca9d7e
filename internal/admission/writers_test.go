package admission

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
)

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) lines() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := strings.TrimSpace(b.buf.String())
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func newTestWriters(window time.Duration, maxEntries int, c *fakeClock) (*Writers, *syncBuffer) {
	logs := &syncBuffer{}
	w := NewWriters(window, maxEntries, prometheus.NewRegistry(), slog.New(slog.NewTextHandler(logs, nil)))
	w.now = c.now
	return w, logs
}

func TestWritersConflicts(t *testing.T) {
	const window = 10 * time.Minute
	type obs struct {
		after    time.Duration // clock advance before this observation
		cluster  string
		writer   string
		conflict bool
	}
	for _, tc := range []struct {
		name string
		obs  []obs
		logs int
	}{
		{
			name: "one writer",
			obs:  []obs{{0, "c", "a", false}, {time.Minute, "c", "a", false}, {time.Minute, "c", "a", false}},
		},
		{
			name: "a token refresh is one change, not a conflict",
			obs:  []obs{{0, "c", "a", false}, {time.Minute, "c", "b", false}, {time.Minute, "c", "b", false}},
		},
		{
			name: "two writers alternating",
			obs: []obs{
				{0, "c", "a", false}, {time.Minute, "c", "b", false}, {time.Minute, "c", "a", true},
				{time.Minute, "c", "b", true}, {time.Minute, "c", "b", false},
			},
			logs: 1,
		},
		{
			name: "changes further apart than the window",
			obs: []obs{
				{0, "c", "a", false}, {time.Minute, "c", "b", false}, {window, "c", "c", false},
				{window, "c", "d", false},
			},
		},
		{
			name: "logged again once the window has passed",
			obs: []obs{
				{0, "c", "a", false}, {time.Second, "c", "b", false}, {time.Second, "c", "a", true},
				{time.Second, "c", "b", true}, {window - time.Second, "c", "a", true},
			},
			logs: 2,
		},
		{
			name: "clusters are independent",
			obs: []obs{
				{0, "c1", "a", false}, {0, "c2", "b", false}, {time.Minute, "c1", "a", false},
				{0, "c2", "b", false}, {0, "c1", "x", false}, {0, "c2", "y", false},
			},
		},
		{
			name: "empty IDs are ignored",
			obs:  []obs{{0, "c", "a", false}, {0, "c", "", false}, {0, "", "b", false}, {0, "c", "a", false}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newFakeClock()
			w, logs := newTestWriters(window, 0, c)
			conflicts := 0
			for i, o := range tc.obs {
				c.advance(o.after)
				require.Equal(t, o.conflict, w.Observe(o.cluster, o.writer), "observation %d", i)
				if o.conflict {
					conflicts++
				}
			}
			require.Equal(t, float64(conflicts), testutil.ToFloat64(w.metrics.conflicts))
			require.Len(t, logs.lines(), tc.logs)
			for _, l := range logs.lines() {
				require.Contains(t, l, "cluster=c")
				require.Contains(t, l, "previous_writer=")
			}
		})
	}
}

func TestWritersDisabled(t *testing.T) {
	c := newFakeClock()
	w, _ := newTestWriters(0, 0, c)
	for _, id := range []string{"a", "b", "a", "b"} {
		require.False(t, w.Observe("c", id))
	}
	require.Zero(t, w.Len())
}

func TestWritersEvictIdle(t *testing.T) {
	c := newFakeClock()
	w, _ := newTestWriters(time.Minute, 0, c)
	w.Observe("old", "a")
	c.advance(30 * time.Second)
	w.Observe("new", "a")
	c.advance(30 * time.Second)
	require.Equal(t, 1, w.Evict())
	require.Equal(t, 1, w.Len())
	require.Equal(t, 1.0, testutil.ToFloat64(w.metrics.evicted))
}

func TestWritersBounded(t *testing.T) {
	c := newFakeClock()
	const maxEntries = 128
	w, _ := newTestWriters(time.Hour, maxEntries, c)
	for i := range 10_000 {
		w.Observe(fmt.Sprintf("cluster-%d", i), "a")
	}
	// The bound is per shard, so the total may round up by one per shard.
	require.LessOrEqual(t, w.Len(), maxEntries+writerShards)
	require.Positive(t, testutil.ToFloat64(w.metrics.evicted))
	// The newest cluster is always tracked.
	w.Observe("cluster-9999", "b")
	c.advance(time.Second)
	require.True(t, w.Observe("cluster-9999", "a"))
}

func TestWritersConcurrent(t *testing.T) {
	c := newFakeClock()
	w, logs := newTestWriters(time.Hour, 1000, c)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 2000 {
				w.Observe(fmt.Sprintf("c%d", i%50), fmt.Sprintf("w%d", (g+i)%2))
				if i%500 == 0 {
					w.Evict()
				}
			}
		})
	}
	wg.Wait()
	require.Positive(t, testutil.ToFloat64(w.metrics.conflicts))
	require.LessOrEqual(t, len(logs.lines()), 50, "at most one line per cluster per window")
}

func TestWritersRun(t *testing.T) {
	w := NewWriters(time.Second, 0, nil, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

func TestWritersObserveDoesNotAllocate(t *testing.T) {
	c := newFakeClock()
	w, _ := newTestWriters(time.Hour, 0, c)
	w.Observe("cluster", "writer")
	allocs := testing.AllocsPerRun(100, func() {
		if w.Observe("cluster", "writer") {
			t.Fatal("conflict with one writer")
		}
	})
	require.Zero(t, allocs)
}
