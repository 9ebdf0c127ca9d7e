package store

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// BenchmarkPut writes the T232 payload for 100 clusters in turn. "nosync"
// measures the encoder and the file system calls; "fsync" adds the two
// fsyncs a durable write costs on the machine's disk.
func BenchmarkPut(b *testing.B) {
	fams := t232(b)
	ids := make([]string, 100)
	for i := range ids {
		ids[i] = clusterName(i)
	}
	for _, tc := range []struct {
		name   string
		noSync bool
	}{{"nosync", true}, {"fsync", false}} {
		b.Run(tc.name, func(b *testing.B) {
			s, err := Open(b.TempDir(), Options{NoSync: tc.noSync}, nil, nil)
			require.NoError(b, err)
			b.ReportAllocs()
			i := 0
			var m Meta
			cpu := cpuTime()
			for b.Loop() {
				m, err = s.Put(ids[i%len(ids)], t0.Add(time.Duration(i)), fams)
				if err != nil {
					b.Fatal(err)
				}
				i++
			}
			b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/op")
			b.ReportMetric(float64(m.Bytes)/float64(m.Series), "disk-B/series")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(m.Series), "ns/series")
		})
	}
}

// BenchmarkOpen measures start-up: recovering the index of 1,000 T232
// snapshots (232,000 series).
func BenchmarkOpen(b *testing.B) {
	dir := b.TempDir()
	s, err := Open(dir, Options{NoSync: true}, nil, nil)
	require.NoError(b, err)
	fams := t232(b)
	const clusters = 1000
	for i := range clusters {
		_, err := s.Put(clusterName(i), t0, fams)
		require.NoError(b, err)
	}
	b.ReportAllocs()
	cpu := cpuTime()
	for b.Loop() {
		r, err := Open(dir, Options{NoSync: true}, nil, nil)
		if err != nil || r.Len() != clusters {
			b.Fatalf("open: %v, %d snapshots", err, r.Len())
		}
	}
	b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/op")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(clusters*232), "ns/series")
}

// BenchmarkReadFamilyBlock reads every family of a T232 snapshot, as
// /federate does.
func BenchmarkReadFamilyBlock(b *testing.B) {
	s, err := Open(b.TempDir(), Options{NoSync: true}, nil, nil)
	require.NoError(b, err)
	m, err := s.Put("c1", t0, t232(b))
	require.NoError(b, err)
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		for i := range m.Families {
			buf, err = s.ReadFamilyBlock(m, i, buf)
			if err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(m.Families)), "ns/block")
}
