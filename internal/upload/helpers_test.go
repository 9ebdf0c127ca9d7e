package upload

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"os"
	"runtime"
	"testing"

	"github.com/klauspost/compress/s2"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
)

// t232Path is the T232 reference payload: one real cluster's upload.
const t232Path = "testdata/timeseries.txt"

func readT232(tb testing.TB) []byte {
	tb.Helper()
	b, err := os.ReadFile(t232Path)
	require.NoError(tb, err)
	return b
}

// loadT232 decodes the reference payload from its text form.
func loadT232(tb testing.TB) []*dto.MetricFamily {
	tb.Helper()
	fams, err := Decode(bytes.NewReader(readT232(tb)), MediaTypeText, "", Limits{})
	require.NoError(tb, err)
	return fams
}

func encodeProto(tb testing.TB, fams []*dto.MetricFamily) []byte {
	tb.Helper()
	var buf bytes.Buffer
	require.NoError(tb, Encode(&buf, fams))
	return buf.Bytes()
}

func encodeFramed(tb testing.TB, payload []byte) []byte {
	tb.Helper()
	var buf bytes.Buffer
	w := s2.NewWriter(&buf, s2.WriterSnappyCompat(), s2.WriterConcurrency(1))
	_, err := w.Write(payload)
	require.NoError(tb, err)
	require.NoError(tb, w.Close())
	return buf.Bytes()
}

func encodeBlock(payload []byte) []byte {
	return s2.EncodeSnappy(nil, payload)
}

// delimited length-prefixes each raw message, as the upload body does.
func delimited(msgs ...[]byte) []byte {
	var out []byte
	for _, m := range msgs {
		out = binary.AppendUvarint(out, uint64(len(m)))
		out = append(out, m...)
	}
	return out
}

func marshal(tb testing.TB, m proto.Message) []byte {
	tb.Helper()
	b, err := proto.Marshal(m)
	require.NoError(tb, err)
	return b
}

func protoBody(tb testing.TB, fams ...*dto.MetricFamily) []byte {
	tb.Helper()
	return encodeProto(tb, fams)
}

// family builds a family of type t from metrics.
func family(name string, t dto.MetricType, metrics ...*dto.Metric) *dto.MetricFamily {
	return &dto.MetricFamily{Name: proto.String(name), Type: t.Enum(), Metric: metrics}
}

// labels turns name, value, name, value... into label pairs.
func labels(kv ...string) []*dto.LabelPair {
	var out []*dto.LabelPair
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, &dto.LabelPair{Name: proto.String(kv[i]), Value: proto.String(kv[i+1])})
	}
	return out
}

func gauge(v float64, kv ...string) *dto.Metric {
	return &dto.Metric{Label: labels(kv...), Gauge: &dto.Gauge{Value: proto.Float64(v)}}
}

func counter(v float64, kv ...string) *dto.Metric {
	return &dto.Metric{Label: labels(kv...), Counter: &dto.Counter{Value: proto.Float64(v)}}
}

func untyped(v float64, kv ...string) *dto.Metric {
	return &dto.Metric{Label: labels(kv...), Untyped: &dto.Untyped{Value: proto.Float64(v)}}
}

func summary(kv ...string) *dto.Metric {
	return &dto.Metric{Label: labels(kv...), Summary: &dto.Summary{
		SampleCount: proto.Uint64(3),
		SampleSum:   proto.Float64(1.5),
		Quantile: []*dto.Quantile{
			{Quantile: proto.Float64(0.5), Value: proto.Float64(0.4)},
			{Quantile: proto.Float64(0.9), Value: proto.Float64(0.8)},
		},
	}}
}

func histogram(kv ...string) *dto.Metric {
	return &dto.Metric{Label: labels(kv...), Histogram: &dto.Histogram{
		SampleCount: proto.Uint64(3),
		SampleSum:   proto.Float64(1.5),
		Bucket: []*dto.Bucket{
			{UpperBound: proto.Float64(0.5), CumulativeCount: proto.Uint64(1)},
			{UpperBound: proto.Float64(1), CumulativeCount: proto.Uint64(3)},
		},
	}}
}

// requireSameFamilies compares two decoded payloads message by message.
func requireSameFamilies(tb testing.TB, want, got []*dto.MetricFamily) {
	tb.Helper()
	require.Len(tb, got, len(want))
	for i := range want {
		if !proto.Equal(want[i], got[i]) {
			require.Equal(tb, prototext.Format(want[i]), prototext.Format(got[i]), "family %d", i)
			require.Fail(tb, "families differ only in ways prototext hides", "family %d", i)
		}
	}
}

// requireStatus asserts that err is a StatusError for sentinel.
func requireStatus(tb testing.TB, err error, sentinel error) {
	tb.Helper()
	require.Error(tb, err)
	var se *StatusError
	require.ErrorAs(tb, err, &se, "error %v is not a StatusError", err)
	require.ErrorIs(tb, err, sentinel)
}

// countingReader counts the bytes its reader hands out.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// patternReader never ends: it repeats p.
type patternReader struct {
	p   []byte
	off int
}

func (r *patternReader) Read(b []byte) (int, error) {
	for i := range b {
		b[i] = r.p[r.off]
		r.off = (r.off + 1) % len(r.p)
	}
	return len(b), nil
}

// failingReader hands out its data and then fails with err.
type failingReader struct {
	data []byte
	err  error
}

func (f *failingReader) Read(p []byte) (int, error) {
	if len(f.data) == 0 {
		return 0, f.err
	}
	n := copy(p, f.data)
	f.data = f.data[n:]
	return n, nil
}

var errConnReset = errors.New("connection reset by peer")

// maskedCRC is the checksum of a snappy framing chunk: CRC-32C of the
// uncompressed data, rotated right by 15 bits, plus a constant.
func maskedCRC(data []byte) uint32 {
	c := crc32.Checksum(data, crc32.MakeTable(crc32.Castagnoli))
	return (c>>15 | c<<17) + 0xa282ead8
}

// frameChunk builds one snappy framing chunk: type, 3-byte little-endian
// length, body.
func frameChunk(typ byte, body []byte) []byte {
	out := []byte{typ, byte(len(body)), byte(len(body) >> 8), byte(len(body) >> 16)}
	return append(out, body...)
}

// dataChunk builds a chunk of type 0x00 (compressed) or 0x01 (uncompressed)
// carrying data, with a correct checksum.
func dataChunk(typ byte, data []byte) []byte {
	body := binary.LittleEndian.AppendUint32(nil, maskedCRC(data))
	if typ == 0x00 {
		body = append(body, encodeBlock(data)...)
	} else {
		body = append(body, data...)
	}
	return frameChunk(typ, body)
}

func streamOf(chunks ...[]byte) []byte {
	out := bytes.Clone(snappyStreamMagic)
	for _, c := range chunks {
		out = append(out, c...)
	}
	return out
}

// allocatedBy reports the bytes the heap handed out while f ran. Callers
// must not run in parallel with other tests.
func allocatedBy(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// zerosBlock is the densest snappy block there is for n zero bytes: a
// one-byte literal, then copies of 64 bytes at offset 1, 3 bytes each.
func zerosBlock(n int) []byte {
	b := binary.AppendUvarint(nil, uint64(n))
	b = append(b, 0x00, 0x00) // literal of length 1: a zero
	for left := n - 1; left > 0; left -= 64 {
		l := min(left, 64)
		b = append(b, byte(l-1)<<2|0x02, 0x01, 0x00) // copy, 2-byte offset 1
	}
	return b
}

// snappyBomb is a framed stream that decodes to one delimited message whose
// length prefix promises size bytes, followed by size zero bytes, in 64 KiB
// chunks that each expand about 21 times: the most snappy allows.
func snappyBomb(tb testing.TB, size int) []byte {
	tb.Helper()
	prefix := binary.AppendUvarint(nil, uint64(size))
	out := streamOf(dataChunk(0x01, prefix))
	zeros := make([]byte, maxSnappyChunk)
	for left := size; left > 0; left -= maxSnappyChunk {
		n := min(left, maxSnappyChunk)
		body := binary.LittleEndian.AppendUint32(nil, maskedCRC(zeros[:n]))
		out = append(out, frameChunk(0x00, append(body, zerosBlock(n)...))...)
	}
	return out
}
