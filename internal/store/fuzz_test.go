package store

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	runtimemetrics "runtime/metrics"
	"strconv"
	"sync/atomic"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite the fuzz seed corpus in testdata/fuzz")

// FuzzReadSnapshot decodes arbitrary bytes as a snapshot file. It must never
// panic or allocate far beyond the input: it either fails with ErrCorrupt or
// returns a snapshot that is consistent with itself and survives a round
// trip through the encoder.
func FuzzReadSnapshot(f *testing.F) {
	var calls atomic.Int64
	f.Fuzz(func(t *testing.T, data []byte) {
		// Reading the allocation counter costs more than a decode, so it is
		// sampled: every large input and one small input in 32.
		measure := len(data) >= 4<<10 || calls.Add(1)%32 == 0
		checkSnapshotBytes(t, data, measure)
		// The checksum stops nearly every mutation at the door; with the
		// trailer fixed up the fuzzer reaches the structural checks.
		if len(data) >= trailerSize {
			checkSnapshotBytes(t, fixCRC(append([]byte(nil), data...)), measure)
		}
	})
}

func checkSnapshotBytes(t *testing.T, data []byte, measure bool) {
	var before uint64
	if measure {
		before = allocatedBytes()
	}
	m, _, err := verifySnapshot(data, nil, "")
	if measure {
		// The counter is process-wide, so the limit leaves room for others.
		if n, limit := allocatedBytes()-before, uint64(32*len(data)+1<<20); n > limit {
			t.Fatalf("verifying %d bytes allocated %d bytes, limit %d", len(data), n, limit)
		}
	}
	if err != nil {
		require.ErrorIs(t, err, ErrCorrupt)
		return
	}
	require.Equal(t, int64(len(data)), m.Bytes)
	series := 0
	for _, fm := range m.Families {
		series += fm.Series
	}
	require.Equal(t, m.Series, series)

	fams, err := decodeFamilies(data, m)
	if err != nil {
		// Blocks are checked down to the series; what is inside a series is
		// only checked by a full decode.
		require.ErrorIs(t, err, ErrCorrupt)
		return
	}
	require.Len(t, fams, len(m.Families))
	out, _, m2, err := encodeSnapshot(nil, nil, m.ClusterID, m.Received, fams, nil)
	require.NoError(t, err)
	require.Equal(t, m.Series, m2.Series)
	require.True(t, m.DataTime.Equal(m2.DataTime))
	require.Len(t, m2.Families, len(m.Families))
	for i := range m.Families {
		require.Equal(t, m.Families[i].Name, m2.Families[i].Name)
		require.Equal(t, m.Families[i].Type, m2.Families[i].Type)
		require.Equal(t, m.Families[i].Help, m2.Families[i].Help)
	}
	_, err = parseSnapshot(out)
	require.NoError(t, err)
}

// TestFuzzSeeds keeps the seed corpus in testdata/fuzz/FuzzReadSnapshot in
// step with the format: every valid seed must still verify. Run with -update
// to regenerate it.
func TestFuzzSeeds(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzReadSnapshot")
	seeds := fuzzSeeds(t)
	if *update {
		require.NoError(t, os.MkdirAll(dir, 0o750))
		for name, data := range seeds {
			content := "go test fuzz v1\n[]byte(" + strconv.Quote(string(data)) + ")\n"
			require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(content), 0o640))
		}
	}
	for name, data := range seeds {
		got, err := os.ReadFile(filepath.Join(dir, name))
		require.NoError(t, err, "seed %s missing: run go test -run TestFuzzSeeds -update", name)
		want := "go test fuzz v1\n[]byte(" + strconv.Quote(string(data)) + ")\n"
		require.Equal(t, want, string(got), "seed %s is stale: run go test -run TestFuzzSeeds -update", name)
	}
}

func fuzzSeeds(t *testing.T) map[string][]byte {
	seeds := map[string][]byte{}
	valid := func(name string, id string, fams []*dto.MetricFamily) []byte {
		b, _, _, err := encodeSnapshot(nil, nil, id, t0, fams, nil)
		require.NoError(t, err)
		_, _, err = verifySnapshot(b, nil, "")
		require.NoError(t, err)
		seeds[name] = b
		return b
	}
	mixedFile := valid("valid-every-type", "cluster-a", mixed(t0.UnixMilli()))
	valid("valid-empty", "x", nil)
	valid("valid-t232-head", "c", t232(t)[:6])
	seeds["truncated-header"] = mixedFile[:headerSize-2]
	seeds["truncated-table"] = mixedFile[:headerSize+40]
	bad := append([]byte(nil), mixedFile...)
	bad[0] = 'X'
	seeds["bad-magic"] = fixCRC(bad)
	huge := append([]byte(nil), mixedFile...)
	putU32(huge[28:], 0xffffffff)
	seeds["huge-family-count"] = fixCRC(huge)
	flipped := append([]byte(nil), mixedFile...)
	flipped[len(flipped)/2] ^= 4
	seeds["bit-flip"] = flipped
	for i := range 3 {
		seeds[fmt.Sprintf("zero-%d", i)] = make([]byte, (i+1)*minFileSize)
	}
	return seeds
}

// allocatedBytes reads the cumulative heap allocation counter without
// stopping the world, unlike runtime.ReadMemStats.
func allocatedBytes() uint64 {
	s := []runtimemetrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	runtimemetrics.Read(s)
	return s[0].Value.Uint64()
}
