package remotewrite

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"

	"github.com/klauspost/compress/s2"
	"github.com/prometheus/prometheus/prompb"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/telemeter/telemeter/internal/upload"
)

// asPrompb converts a decoded request back to the generated types, to
// compare with them.
func asPrompb(wr *WriteRequest) []prompb.TimeSeries {
	out := make([]prompb.TimeSeries, 0, len(wr.Series))
	for _, s := range wr.Series {
		ts := prompb.TimeSeries{}
		for _, l := range s.Labels {
			ts.Labels = append(ts.Labels, prompb.Label{Name: l.Name, Value: l.Value})
		}
		for _, x := range s.Samples {
			ts.Samples = append(ts.Samples, prompb.Sample{Value: x.Value, Timestamp: x.Timestamp})
		}
		out = append(out, ts)
	}
	return out
}

func marshalWR(tb testing.TB, wr *prompb.WriteRequest) []byte {
	tb.Helper()
	b, err := wr.Marshal()
	require.NoError(tb, err)
	return b
}

func series(ls []prompb.Label, samples ...prompb.Sample) prompb.TimeSeries {
	return prompb.TimeSeries{Labels: ls, Samples: samples}
}

func labelsOf(kv ...string) []prompb.Label {
	out := make([]prompb.Label, 0, len(kv)/2)
	for i := 0; i < len(kv); i += 2 {
		out = append(out, prompb.Label{Name: kv[i], Value: kv[i+1]})
	}
	return out
}

func TestDecodeWriteRequestRoundTrip(t *testing.T) {
	in := &prompb.WriteRequest{
		Timeseries: []prompb.TimeSeries{
			series(labelsOf("__name__", "up", "job", "node"), prompb.Sample{Value: 1, Timestamp: 1000}),
			series(labelsOf("__name__", "temp", "zone", "ä"), prompb.Sample{Value: -2.5, Timestamp: 1000}, prompb.Sample{Value: math.Inf(1), Timestamp: 2000}),
			// Only a native histogram and an exemplar: left out.
			{
				Labels:     labelsOf("__name__", "h"),
				Histograms: []prompb.Histogram{{Count: &prompb.Histogram_CountInt{CountInt: 3}, Sum: 1.5, Schema: 1, Timestamp: 1000}},
				Exemplars:  []prompb.Exemplar{{Labels: labelsOf("trace_id", "x"), Value: 1, Timestamp: 1000}},
			},
			series(labelsOf("__name__", "last"), prompb.Sample{Value: 0, Timestamp: 0}),
		},
		Metadata: []prompb.MetricMetadata{{Type: prompb.MetricMetadata_COUNTER, MetricFamilyName: "up", Help: "x"}},
	}
	raw := marshalWR(t, in)
	want := []prompb.TimeSeries{in.Timeseries[0], in.Timeseries[1], in.Timeseries[3]}
	for _, tc := range []struct {
		name, encoding string
		body           []byte
	}{
		{"snappy", "snappy", s2.EncodeSnappy(nil, raw)},
		{"snappy, header case and spaces", " Snappy ", s2.EncodeSnappy(nil, raw)},
		{"identity", "identity", raw},
		{"none", "", raw},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeWriteRequest(bytes.NewReader(tc.body), tc.encoding, ReceiveLimits{})
			require.NoError(t, err)
			require.Equal(t, seriesLines(want), seriesLines(asPrompb(got)))
		})
	}
}

// TestDecodeWriteRequestMatchesGogo compares with the generated decoder on
// the T232 payload.
func TestDecodeWriteRequestMatchesGogo(t *testing.T) {
	raw := marshalWR(t, &prompb.WriteRequest{Timeseries: ToTimeSeries(loadT232(t), 1700000000000)})
	got, err := DecodeWriteRequest(bytes.NewReader(s2.EncodeSnappy(nil, raw)), "snappy", ReceiveLimits{})
	require.NoError(t, err)
	var ref prompb.WriteRequest
	require.NoError(t, ref.Unmarshal(raw))
	require.Len(t, got.Series, 232)
	require.Equal(t, seriesLines(ref.Timeseries), seriesLines(asPrompb(got)))
}

// appendField appends a length-delimited field.
func appendField(b []byte, num protowire.Number, v []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

func rawLabel(name, value string) []byte {
	var b []byte
	b = appendField(b, fieldLabelName, []byte(name))
	return appendField(b, fieldLabelValue, []byte(value))
}

func rawSample(v float64, ts int64) []byte {
	var b []byte
	b = protowire.AppendTag(b, fieldSampleValue, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, math.Float64bits(v))
	b = protowire.AppendTag(b, fieldSampleTimestamp, protowire.VarintType)
	return protowire.AppendVarint(b, uint64(ts))
}

func rawSeries(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return appendField(nil, fieldWriteTimeseries, b)
}

func TestDecodeWriteRequestErrors(t *testing.T) {
	small := ReceiveLimits{CompressedBytes: 1 << 10, DecodedBytes: 4 << 10, Series: 2, Samples: 3, LabelsPerSeries: 2, NameLength: 8, ValueLength: 16}
	name := appendField(nil, fieldSeriesLabels, rawLabel("__name__", "up"))
	sample := appendField(nil, fieldSeriesSamples, rawSample(1, 1000))
	ok := rawSeries(name, sample)
	many := func(n int, b []byte) []byte { return bytes.Repeat(b, n) }
	for _, tc := range []struct {
		name     string
		body     []byte // bare protobuf unless raw
		raw      bool   // body is sent as is with Content-Encoding snappy
		encoding string
		want     error
		contains string
	}{
		{name: "ok", body: ok},
		{name: "gzip", body: ok, encoding: "gzip", want: upload.ErrUnsupportedMedia},
		{name: "compressed body over the limit", body: many(600, []byte("\x0a\x00")), raw: true, want: upload.ErrTooLarge},
		{name: "declared decoded length over the limit", body: binary.AppendUvarint(nil, 4<<10+1), raw: true, want: upload.ErrTooLarge},
		{name: "declared length a short block cannot hold", body: append(binary.AppendUvarint(nil, 4<<10), 0, 0, 0), raw: true, want: upload.ErrInvalid},
		{name: "bad snappy varint", body: []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, raw: true, want: upload.ErrInvalid},
		{name: "corrupt snappy data", body: []byte{0x05, 0xff, 0xff}, raw: true, want: upload.ErrInvalid},
		{name: "identity over the limit", body: many(3000, []byte("\x1a\x00")), encoding: "identity", want: upload.ErrTooLarge},
		{name: "too many series", body: many(3, ok), want: upload.ErrTooLarge, contains: "series"},
		{name: "too many samples", body: rawSeries(name, sample, sample, sample, sample), want: upload.ErrTooLarge, contains: "samples"},
		{name: "too many samples across series", body: append(rawSeries(name, sample, sample), rawSeries(name, sample, sample)...), want: upload.ErrTooLarge, contains: "samples"},
		{name: "too many labels", body: rawSeries(name, appendField(nil, 1, rawLabel("a", "1")), appendField(nil, 1, rawLabel("b", "1")), appendField(nil, 1, rawLabel("c", "1")), sample), want: upload.ErrTooLarge, contains: "labels"},
		{name: "labels at the limit", body: rawSeries(name, appendField(nil, 1, rawLabel("a", "1")), appendField(nil, 1, rawLabel("b", "1")), sample)},
		{name: "long label name", body: rawSeries(name, appendField(nil, 1, rawLabel("abcdefghi", "1")), sample), want: upload.ErrInvalid, contains: "name"},
		{name: "long label value", body: rawSeries(name, appendField(nil, 1, rawLabel("a", strings.Repeat("v", 17))), sample), want: upload.ErrInvalid},
		{name: "long metric name", body: rawSeries(appendField(nil, 1, rawLabel("__name__", "abcdefghi")), sample), want: upload.ErrInvalid},
		{name: "empty label name", body: rawSeries(name, appendField(nil, 1, rawLabel("", "x")), sample), want: upload.ErrInvalid},
		{name: "series without labels", body: rawSeries(sample), want: upload.ErrInvalid},
		{name: "truncated", body: ok[:len(ok)-1], want: upload.ErrInvalid},
		{name: "series field as varint", body: []byte{0x08, 0x01}, want: upload.ErrInvalid},
		{name: "label field as varint", body: rawSeries([]byte{0x08, 0x01}, sample), want: upload.ErrInvalid},
		{name: "sample value as varint", body: rawSeries(name, appendField(nil, 2, []byte{0x08, 0x01})), want: upload.ErrInvalid},
		{name: "group wire type", body: []byte{0x0b}, want: upload.ErrInvalid},
		{name: "unknown fields are skipped", body: append(append([]byte{0x28, 0x07}, ok...), appendField(nil, 9, []byte("x"))...)},
		{name: "empty request", body: nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body, encoding := tc.body, tc.encoding
			if !tc.raw && encoding == "" {
				body, encoding = s2.EncodeSnappy(nil, tc.body), "snappy"
			} else if tc.raw {
				encoding = "snappy"
			}
			wr, err := DecodeWriteRequest(bytes.NewReader(body), encoding, small)
			if tc.want == nil {
				require.NoError(t, err)
				require.NotNil(t, wr)
				return
			}
			require.ErrorIs(t, err, tc.want)
			require.Nil(t, wr)
			require.Contains(t, err.Error(), tc.contains)
		})
	}
}

func TestDecodeWriteRequestBodyErrors(t *testing.T) {
	// http.MaxBytesReader past its limit: 413.
	rec := httptest.NewRecorder()
	body := http.MaxBytesReader(rec, io.NopCloser(bytes.NewReader(make([]byte, 100))), 10)
	_, err := DecodeWriteRequest(body, "snappy", ReceiveLimits{})
	require.ErrorIs(t, err, upload.ErrTooLarge)

	// A broken connection: 400, never 500.
	_, err = DecodeWriteRequest(io.MultiReader(bytes.NewReader([]byte{1}), errReader{}), "snappy", ReceiveLimits{})
	require.ErrorIs(t, err, upload.ErrInvalid)
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("connection reset") }

// allocated returns the bytes fn allocates.
func allocated(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestDecodeWriteRequestBombs: QUALITY R6. A block declaring 4 GiB and a
// real ×21 snappy bomb just over the decoded limit are refused without
// allocating their decoded size.
func TestDecodeWriteRequestBombs(t *testing.T) {
	lie := append(binary.AppendUvarint(nil, 4<<30), 0x00, 0x00, 0x00, 0x00)
	var err error
	n := allocated(func() {
		_, err = DecodeWriteRequest(bytes.NewReader(lie), "snappy", ReceiveLimits{DecodedBytes: math.MaxInt64})
	})
	require.ErrorIs(t, err, upload.ErrInvalid, "4 GiB cannot fit in a few bytes")
	require.Less(t, n, uint64(64<<10))

	n = allocated(func() {
		_, err = DecodeWriteRequest(bytes.NewReader(lie), "snappy", ReceiveLimits{})
	})
	require.ErrorIs(t, err, upload.ErrTooLarge)
	require.Less(t, n, uint64(64<<10))

	l := DefaultReceiveLimits()
	bomb := snappyBomb(int(l.DecodedBytes) + 1)
	decoded, err := s2.Decode(nil, bomb)
	require.NoError(t, err, "a valid snappy block")
	require.Len(t, decoded, int(l.DecodedBytes)+1)
	require.Less(t, int64(len(bomb)), l.CompressedBytes)
	require.Greater(t, l.DecodedBytes/int64(len(bomb)), int64(20), "a ×21 bomb")
	n = allocated(func() {
		_, err = DecodeWriteRequest(bytes.NewReader(bomb), "snappy", l)
	})
	require.ErrorIs(t, err, upload.ErrTooLarge)
	// Reading the body grows a buffer to its size; the decoded size is never
	// allocated.
	require.Less(t, n, uint64(8*len(bomb)))
	require.Less(t, n, uint64(l.DecodedBytes/2))
}

// snappyBomb is the densest snappy block of n zero bytes: one literal, then
// copies of 64 bytes at offset 1, 3 bytes each.
func snappyBomb(n int) []byte {
	b := binary.AppendUvarint(nil, uint64(n))
	b = append(b, 0x00, 0x00) // literal of length 1: a zero
	left := n - 1
	for left >= 64 {
		b = append(b, 63<<2|2, 1, 0) // copy with a 2-byte offset, length 64
		left -= 64
	}
	if left >= 1 {
		b = append(b, byte(left-1)<<2|2, 1, 0)
	}
	return b
}

// TestDecodeWriteRequestAllocationBound: a hostile request of tiny series
// costs a bounded multiple of its decoded size.
func TestDecodeWriteRequestAllocationBound(t *testing.T) {
	one := rawSeries(appendField(nil, 1, rawLabel("a", "b")), appendField(nil, 2, nil))
	raw := bytes.Repeat(one, 50000)
	body := s2.EncodeSnappy(nil, raw)
	var err error
	n := allocated(func() {
		_, err = DecodeWriteRequest(bytes.NewReader(body), "snappy", ReceiveLimits{})
	})
	require.NoError(t, err)
	t.Logf("allocated %d bytes for %d decoded bytes (x%.1f)", n, len(raw), float64(n)/float64(len(raw)))
	require.Less(t, n, uint64(16*len(raw)), "allocated %d for %d decoded bytes", n, len(raw))
}

func TestCheckContentType(t *testing.T) {
	for _, tc := range []struct {
		ct string
		ok bool
	}{
		{"", true},
		{"application/x-protobuf", true},
		{"application/x-protobuf;proto=prometheus.WriteRequest", true},
		{"application/x-protobuf;proto=io.prometheus.write.v2.Request", false},
		{"application/json", false},
		{"text/plain; version=0.0.4", false},
		{"application/x-protobuf; proto=", false},
		{";;", false},
	} {
		t.Run(tc.ct, func(t *testing.T) {
			err := CheckContentType(tc.ct)
			if tc.ok {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, upload.ErrUnsupportedMedia)
			require.Equal(t, http.StatusUnsupportedMediaType, upload.StatusCode(err))
		})
	}
}
