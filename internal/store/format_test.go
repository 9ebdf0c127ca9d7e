package store

import (
	"encoding/binary"
	"encoding/hex"
	"hash/crc32"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
)

// TestFormatExample checks the example in docs/storage-format.md byte by
// byte; the xx and yy placeholders there are the two checksums.
func TestFormatExample(t *testing.T) {
	fams := []*dto.MetricFamily{{
		Name: proto.String("up"), Type: dto.MetricType_GAUGE.Enum(),
		Metric: []*dto.Metric{{Gauge: &dto.Gauge{Value: proto.Float64(1)}}},
	}}
	got, _, m, err := encodeSnapshot(nil, nil, "c", time.Unix(1, 0), fams, nil)
	require.NoError(t, err)

	doc := strings.Join([]string{
		"54 4c 4d 53 01 00 01 00  00 ca 9a 3b 00 00 00 00",
		"00 ca 9a 3b 00 00 00 00  01 00 00 00 01 00 00 00",
		"63",
		"01 00 02 00 00 00 00 00  01 00 00 00 43 00 00 00",
		"00 00 00 00 0f 00 00 00  0d 00 00 00 xx xx xx xx",
		"75 70",
		"0d 30 22 0b 12 09 09 00  00 00 00 00 00 f0 3f",
		"yy yy yy yy",
	}, " ")
	want := parseHexDump(t, doc, map[string]uint32{
		"xx": crc32.Checksum(got[0x43:0x52], castagnoli),
		"yy": crc32.Checksum(got[:0x52], castagnoli),
	})
	require.Equal(t, hex.Dump(want), hex.Dump(got))
	require.Equal(t, int64(len(want)), m.Bytes)
	_, _, err = verifySnapshot(got, nil, "")
	require.NoError(t, err)
}

// parseHexDump reads space-separated hex bytes; a run of four identical
// placeholders stands for a little-endian uint32 from vars.
func parseHexDump(t *testing.T, s string, vars map[string]uint32) []byte {
	var out []byte
	fields := strings.Fields(s)
	for i := 0; i < len(fields); i++ {
		if v, ok := vars[fields[i]]; ok {
			out = binary.LittleEndian.AppendUint32(out, v)
			i += 3
			continue
		}
		b, err := hex.DecodeString(fields[i])
		require.NoError(t, err)
		out = append(out, b...)
	}
	return out
}
