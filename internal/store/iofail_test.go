package store

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/telemeter/telemeter/internal/upload"
)

// ioFailure breaks the disk under a store that holds cluster c1 and returns
// a function that repairs it.
type ioFailure struct {
	name    string
	root    bool // whether the failure is real when the test runs as root
	inflict func(t *testing.T, s *Store) (repair func())
}

func ioFailures() []ioFailure {
	return []ioFailure{
		{
			name: "read-only directory",
			inflict: func(t *testing.T, s *Store) func() {
				p := s.pathsOf("c1")
				require.NoError(t, os.Chmod(p.dir, 0o555))
				require.NoError(t, os.Chmod(s.dir, 0o555))
				return func() {
					require.NoError(t, os.Chmod(p.dir, 0o750))
					require.NoError(t, os.Chmod(s.dir, 0o750))
				}
			},
		},
		{
			// A directory where the temp file goes: creating the temp file
			// fails with EISDIR, root or not.
			name: "temp path taken by a directory",
			root: true,
			inflict: func(t *testing.T, s *Store) func() {
				p := s.pathsOf("c1")
				require.NoError(t, os.Mkdir(p.temp, 0o750))
				require.NoError(t, os.WriteFile(filepath.Join(p.temp, "x"), nil, 0o640))
				return func() { require.NoError(t, os.RemoveAll(p.temp)) }
			},
		},
		{
			name: "fsync of the file fails",
			root: true,
			inflict: func(t *testing.T, s *Store) func() {
				s.hooks.syncFile = func(*os.File) error { return syscall.EIO }
				return func() { s.hooks.syncFile = (*os.File).Sync }
			},
		},
		{
			name: "file size limit reached",
			root: true,
			inflict: func(t *testing.T, s *Store) func() {
				return limitFileSize(t, 64)
			},
		},
	}
}

// TestIOFailure is QUALITY R19: a store whose disk fails answers a retryable
// error, never success, keeps serving the last good snapshot, and recovers
// once the disk does, without a restart.
func TestIOFailure(t *testing.T) {
	for _, f := range ioFailures() {
		t.Run(f.name, func(t *testing.T) {
			if !f.root && os.Geteuid() == 0 {
				t.Skip("root ignores file permissions; the other cases fail for real as root")
			}
			s, err := Open(t.TempDir(), Options{}, nil, prometheus.NewRegistry())
			require.NoError(t, err)
			oldFams := mixed(t0.UnixMilli())
			old, err := s.Put("c1", t0, oldFams)
			require.NoError(t, err)

			repair := f.inflict(t, s)
			newFams := withID(t232(t), "c1")
			for _, m := range newFams {
				for _, s := range m.Metric {
					s.TimestampMs = nil
				}
			}
			later := t0.Add(time.Minute)
			_, err = s.Put("c1", later, newFams)
			repaired := false
			defer func() {
				if !repaired {
					repair()
				}
			}()
			require.ErrorIs(t, err, upload.ErrUnavailable)
			require.Equal(t, http.StatusServiceUnavailable, upload.StatusCode(err))
			require.True(t, upload.Retryable(err))
			require.Equal(t, 1.0, testutil.ToFloat64(s.metrics.writes.WithLabelValues(resultError)))

			// The last good snapshot is still served, whole.
			m, ok := s.Get("c1")
			require.True(t, ok)
			require.Equal(t, old, m)
			list := s.List()
			require.Len(t, list, 1)
			for i := range list[0].Families {
				_, err := s.ReadFamilyBlock(list[0], i, nil)
				require.NoError(t, err)
			}
			repair()
			repaired = true
			got, _, err := s.Families("c1")
			require.NoError(t, err)
			requireFamiliesEqual(t, sorted(oldFams), got)
			if _, err := os.Lstat(s.pathsOf("c1").temp); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("temp file left behind: %v", err)
			}

			// The disk is back: the next write succeeds without a restart.
			_, err = s.Put("c1", later, newFams)
			require.NoError(t, err)
			got, _, err = s.Families("c1")
			require.NoError(t, err)
			requireFamiliesEqual(t, sorted(newFams), got)
		})
	}
}

func TestDirectorySyncFailure(t *testing.T) {
	s, err := Open(t.TempDir(), Options{}, nil, prometheus.NewRegistry())
	require.NoError(t, err)
	_, err = s.Put("c1", t0, mixed(t0.UnixMilli()))
	require.NoError(t, err)
	s.hooks.syncDir = func(string) error { return syscall.EIO }
	_, err = s.Put("c1", t0.Add(time.Minute), mixed(t0.Add(time.Minute).UnixMilli()))
	// The rename happened but is not known to be durable: no success.
	require.ErrorIs(t, err, upload.ErrUnavailable)
	// A brand-new cluster needs its fan-out directory synced as well.
	_, err = s.Put("new", t0, []*dto.MetricFamily{})
	require.ErrorIs(t, err, upload.ErrUnavailable)
}
