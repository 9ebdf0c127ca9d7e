package authorizationserver

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/telemeter/telemeter/internal/upload"
)

func openTestClaims(t *testing.T, path string) *claimStore {
	t.Helper()
	m := &claimMetrics{
		claims: prometheus.NewGauge(prometheus.GaugeOpts{Name: "claims", Help: "h"}),
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "writes_total", Help: "h"}, []string{"result"}),
	}
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	s, err := openClaims(path, func() time.Time { return now }, slog.New(slog.DiscardHandler), m)
	require.NoError(t, err)
	return s
}

// newTestClaims opens a claim store and runs its committer until the test
// ends.
func newTestClaims(t *testing.T, path string) *claimStore {
	t.Helper()
	s := openTestClaims(t, path)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(10 * time.Second):
			t.Error("committer did not stop")
		}
	})
	return s
}

// TestClaimNotPersistedIsNotGranted: when the claims file cannot be written
// the claim is refused with a retryable 503 and not remembered, so nobody
// is told they own an ID a restart would forget.
func TestClaimNotPersistedIsNotGranted(t *testing.T) {
	path := filepath.Join(t.TempDir(), "claims.json")
	s := newTestClaims(t, path)
	ctx := context.Background()

	created, err := s.Claim(ctx, "c1", "acct-a")
	require.NoError(t, err)
	require.True(t, created)
	before, err := os.ReadFile(path)
	require.NoError(t, err)

	var failing atomic.Bool
	failing.Store(true)
	s.write = func(p string, data []byte) error {
		if failing.Load() {
			return errors.New("disk full")
		}
		return writeFileAtomic(p, data)
	}
	_, err = s.Claim(ctx, "c2", "acct-a")
	require.ErrorIs(t, err, upload.ErrUnavailable)
	require.Positive(t, upload.RetryAfter(err))
	require.Equal(t, 1, s.Len())
	after, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, before, after)
	require.Equal(t, 1.0, testutil.ToFloat64(s.m.writes.WithLabelValues("error")))

	// Claims already held need no write and keep working.
	created, err = s.Claim(ctx, "c1", "acct-a")
	require.NoError(t, err)
	require.False(t, created)

	// Once the disk recovers, so do claims, without a restart; another
	// account may take c2, since nobody was told they own it.
	failing.Store(false)
	created, err = s.Claim(ctx, "c2", "acct-b")
	require.NoError(t, err)
	require.True(t, created)
	require.Equal(t, 2.0, testutil.ToFloat64(s.m.claims))
}

func TestClaimBatchDecidesInOrder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "claims.json")
	// No committer runs: the test plays it, with one batch as the committer
	// would see it under load.
	s := openTestClaims(t, path)
	first := &claimRequest{cluster: "held", account: "acct-a", reply: make(chan claimResult, 1)}
	s.commit([]*claimRequest{first})
	require.NoError(t, (<-first.reply).err)

	reqs := []*claimRequest{
		{cluster: "new", account: "acct-b"},
		{cluster: "new", account: "acct-a"},
		{cluster: "new", account: "acct-b"},
		{cluster: "held", account: "acct-b"},
		{cluster: "held", account: "acct-a"},
	}
	for _, r := range reqs {
		r.reply = make(chan claimResult, 1)
	}
	writes := testutil.ToFloat64(s.m.writes.WithLabelValues("success"))
	s.commit(reqs)
	want := []struct {
		created bool
		err     error
	}{{true, nil}, {false, upload.ErrConflict}, {false, nil}, {false, upload.ErrConflict}, {false, nil}}
	for i, r := range reqs {
		got := <-r.reply
		require.Equal(t, want[i].created, got.created, "request %d", i)
		if want[i].err != nil {
			require.ErrorIs(t, got.err, want[i].err, "request %d", i)
		} else {
			require.NoError(t, got.err, "request %d", i)
		}
	}
	require.Equal(t, writes+1, testutil.ToFloat64(s.m.writes.WithLabelValues("success")), "one write for the batch")
}

func TestClaimAfterStop(t *testing.T) {
	s := openTestClaims(t, filepath.Join(t.TempDir(), "claims.json"))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.NoError(t, s.run(ctx))
	_, err := s.Claim(context.Background(), "c1", "a")
	require.ErrorIs(t, err, upload.ErrUnavailable)
}
