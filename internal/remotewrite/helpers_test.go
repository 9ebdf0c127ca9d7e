package remotewrite

import (
	"bytes"
	"os"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/telemeter/telemeter/internal/store"
	"github.com/telemeter/telemeter/internal/upload"
)

// loadT232 decodes the reference payload, one real cluster's upload.
func loadT232(tb testing.TB) []*dto.MetricFamily {
	tb.Helper()
	b, err := os.ReadFile("testdata/timeseries.txt")
	require.NoError(tb, err)
	fams, err := upload.Decode(bytes.NewReader(b), upload.MediaTypeText, "", upload.Limits{})
	require.NoError(tb, err)
	return fams
}

// fakeSource holds one snapshot per cluster, as the store does.
type fakeSource struct {
	mu    sync.Mutex
	snaps map[string]fakeSnap
	reads map[string]int
	err   error // returned by every read when set
}

type fakeSnap struct {
	families []*dto.MetricFamily
	received time.Time
}

func newFakeSource() *fakeSource {
	return &fakeSource{snaps: map[string]fakeSnap{}, reads: map[string]int{}}
}

func (s *fakeSource) put(id string, received time.Time, families []*dto.MetricFamily) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.snaps[id] = fakeSnap{families: families, received: received}
}

func (s *fakeSource) Families(id string) ([]*dto.MetricFamily, store.Meta, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reads[id]++
	if s.err != nil {
		return nil, store.Meta{}, s.err
	}
	snap, ok := s.snaps[id]
	if !ok {
		return nil, store.Meta{}, store.ErrNotFound
	}
	return snap.families, store.Meta{ClusterID: id, Received: snap.received}, nil
}

func (s *fakeSource) readsOf(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reads[id]
}
