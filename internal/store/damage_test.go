package store

import (
	"bytes"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
)

// damage is one way of breaking a file: it returns the new contents.
type damage struct {
	name  string
	apply func(b []byte) []byte
}

func truncateAt(off int) damage {
	return damage{fmt.Sprintf("truncate at %d", off), func(b []byte) []byte { return b[:off] }}
}

func flipBit(off int, bit uint) damage {
	return damage{fmt.Sprintf("flip bit %d of byte %d", bit, off), func(b []byte) []byte {
		b[off] ^= 1 << bit
		return b
	}}
}

func zeroFill(off, n int) damage {
	return damage{fmt.Sprintf("zero %d bytes at %d", n, off), func(b []byte) []byte {
		clear(b[off:min(off+n, len(b))])
		return b
	}}
}

// damageVariants builds n deterministic variants for a file of size bytes.
// Each variant changes the file (a zero fill of bytes that are already zero
// would not be damage; the caller skips those).
func damageVariants(rng *rand.Rand, size int) []damage {
	fixed := []damage{
		truncateAt(0), truncateAt(1), truncateAt(4), truncateAt(headerSize - 1), truncateAt(headerSize + 3),
		truncateAt(size / 2), truncateAt(size - trailerSize), truncateAt(size - 1),
		flipBit(0, 0), flipBit(4, 1), flipBit(6, 7), flipBit(24, 3), flipBit(28, 0), flipBit(size-1, 7),
		zeroFill(0, size), zeroFill(0, headerSize), zeroFill(size-trailerSize, trailerSize),
	}
	out := fixed
	for len(out) < 100 {
		switch rng.IntN(3) {
		case 0:
			out = append(out, truncateAt(rng.IntN(size)))
		case 1:
			out = append(out, flipBit(rng.IntN(size), uint(rng.IntN(8))))
		default:
			out = append(out, zeroFill(rng.IntN(size), 1+rng.IntN(256)))
		}
	}
	return out
}

func copyTree(tb testing.TB, src, dst string) {
	tb.Helper()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o750)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o640)
	})
	require.NoError(tb, err)
}

// TestDamagedFilesAreQuarantined is QUALITY R3: 100 damaged variants of the
// files of a store of several clusters. Reopening never fails or panics, only
// the damaged clusters are missing, and each is counted and logged.
func TestDamagedFilesAreQuarantined(t *testing.T) {
	const clusters = 5
	pristine := t.TempDir()
	s, _ := openStore(t, pristine, Options{})
	want := map[string][]*dto.MetricFamily{}
	for i := range clusters {
		id := clusterName(i)
		fams := withID(t232(t), id)
		if i%2 == 0 {
			fams = append(fams, mixed(t0.UnixMilli())...)
		}
		_, err := s.Put(id, t0, fams)
		require.NoError(t, err)
		want[id] = sorted(fams)
	}

	rng := rand.New(rand.NewPCG(3, 19))
	// Offsets are drawn within the smallest file, so they fit every file.
	size := int(mustMeta(t, s, clusterName(0)).Bytes)
	for i := range clusters {
		size = min(size, int(mustMeta(t, s, clusterName(i)).Bytes))
	}
	variants := damageVariants(rng, size)
	require.Len(t, variants, 100)
	for vi, dmg := range variants {
		// Most variants damage one cluster; every tenth damages three.
		victims := []string{clusterName(vi % clusters)}
		if vi%10 == 9 {
			victims = append(victims, clusterName((vi+1)%clusters), clusterName((vi+3)%clusters))
		}
		t.Run(fmt.Sprintf("%02d %s of %d", vi, dmg.name, len(victims)), func(t *testing.T) {
			dir := t.TempDir()
			copyTree(t, pristine, dir)
			for _, id := range victims {
				path := s.pathsOf(id).file
				path = filepath.Join(dir, strings.TrimPrefix(path, pristine))
				b, err := os.ReadFile(path)
				require.NoError(t, err)
				orig := append([]byte(nil), b...)
				b = dmg.apply(b)
				if bytes.Equal(orig, b) {
					// Zeroing bytes that were zero already: damage the
					// first byte as well so the variant is real.
					b[0] ^= 0xff
				}
				require.NoError(t, os.WriteFile(path, b, 0o640))
			}

			var logs bytes.Buffer
			reg := prometheus.NewRegistry()
			r, err := Open(dir, Options{NoSync: true}, slog.New(slog.NewTextHandler(&logs, nil)), reg)
			require.NoError(t, err)
			require.Equal(t, clusters-len(victims), r.Len())
			require.Equal(t, float64(len(victims)), testutil.ToFloat64(r.metrics.quarantined))
			require.Equal(t, len(victims), strings.Count(logs.String(), "corrupt snapshot quarantined"))
			q, err := os.ReadDir(filepath.Join(dir, quarantineDir))
			require.NoError(t, err)
			require.Len(t, q, len(victims))
			decoded := false
			for id, fams := range want {
				m, ok := r.Get(id)
				if slices.Contains(victims, id) {
					require.False(t, ok, "damaged cluster %s served", id)
					continue
				}
				require.True(t, ok, "intact cluster %s lost", id)
				require.Equal(t, mustMeta(t, s, id), m)
				if !decoded { // one full decode per variant keeps the test quick
					got, _, err := r.Families(id)
					require.NoError(t, err)
					requireFamiliesEqual(t, fams, got)
					decoded = true
				}
			}
			// A quarantined file is not looked at again.
			r2, err := Open(dir, Options{NoSync: true}, nil, prometheus.NewRegistry())
			require.NoError(t, err)
			require.Equal(t, 0.0, testutil.ToFloat64(r2.metrics.quarantined))
			require.Equal(t, clusters-len(victims), r2.Len())
		})
	}
}

func mustMeta(tb testing.TB, s *Store, id string) Meta {
	tb.Helper()
	m, ok := s.Get(id)
	require.True(tb, ok)
	return m
}
