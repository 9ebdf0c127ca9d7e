package upload

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
)

func TestDecodeFormats(t *testing.T) {
	want := loadT232(t)
	require.Len(t, want, 25)
	require.Equal(t, 232, seriesOfAll(want))

	text := readT232(t)
	pb := encodeProto(t, want)
	framed, err := Body(want)
	require.NoError(t, err)
	// A framed stream built by hand: an uncompressed chunk, padding, a
	// skippable chunk and a compressed chunk, with real checksums.
	half := len(pb) / 2
	mixed := streamOf(
		dataChunk(0x01, pb[:half]),
		frameChunk(0xfe, make([]byte, 7)),
		frameChunk(0x80, []byte("skip me")),
		dataChunk(0x00, pb[half:]),
	)

	tests := []struct {
		name        string
		body        []byte
		contentType string
		encoding    string
	}{
		{"proto, no content type", pb, "", ""},
		{"proto, full media type", pb, MediaTypeProtoDelim, ""},
		{"proto, bare media type", pb, "application/vnd.google.protobuf", ""},
		{"proto, identity", pb, MediaTypeProtoDelim, "identity"},
		{"proto, snappy framed", framed, MediaTypeProtoDelim, EncodingSnappy},
		{"proto, snappy framed, loose header", framed, "", " Snappy "},
		{"proto, snappy framed by hand", mixed, "", EncodingSnappy},
		{"proto, snappy block", encodeBlock(pb), MediaTypeProtoDelim, EncodingSnappy},
		{"text", text, MediaTypeText, ""},
		{"text, no version", text, "text/plain", ""},
		{"text, charset", text, "text/plain; version=0.0.4; charset=utf-8", ""},
		{"text, snappy framed", encodeFramed(t, text), MediaTypeText, EncodingSnappy},
		{"text, snappy block", encodeBlock(text), MediaTypeText, EncodingSnappy},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Decode(bytes.NewReader(tc.body), tc.contentType, tc.encoding, Limits{})
			require.NoError(t, err)
			requireSameFamilies(t, want, got)
		})
	}
}

// TestRoundTripT232 takes the reference payload from text through every
// encoder and back: nothing may be lost or changed on the way.
func TestRoundTripT232(t *testing.T) {
	fromText := loadT232(t)

	fromProto, err := Decode(bytes.NewReader(encodeProto(t, fromText)), "", "", Limits{})
	require.NoError(t, err)
	requireSameFamilies(t, fromText, fromProto)

	var framed bytes.Buffer
	require.NoError(t, EncodeSnappy(&framed, fromProto))
	require.True(t, bytes.HasPrefix(framed.Bytes(), snappyStreamMagic))
	body, err := Body(fromProto)
	require.NoError(t, err)
	require.Equal(t, framed.Bytes(), body, "Body is EncodeSnappy into a buffer")
	require.Less(t, len(body), len(readT232(t))/4, "the snappy body should compress")

	fromSnappy, err := Decode(bytes.NewReader(body), MediaTypeProtoDelim, EncodingSnappy, Limits{})
	require.NoError(t, err)
	requireSameFamilies(t, fromText, fromSnappy)

	// Every sample of the text survives, with its timestamp.
	lines, stamped := 0, 0
	for _, line := range strings.Split(string(readT232(t)), "\n") {
		if line != "" && !strings.HasPrefix(line, "#") {
			lines++
			if strings.Count(line[strings.LastIndexByte(line, '}')+1:], " ") == 2 {
				stamped++
			}
		}
	}
	gotStamped := 0
	for _, mf := range fromSnappy {
		for _, m := range mf.GetMetric() {
			if m.TimestampMs != nil {
				gotStamped++
			}
		}
	}
	require.Equal(t, 232, lines)
	require.Equal(t, stamped, gotStamped)
	require.Positive(t, stamped)
}

func TestSortFamilies(t *testing.T) {
	fams := loadT232(t)
	shuffled := append([]*dto.MetricFamily(nil), fams...)
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(shuffled), func(i, j int) {
		shuffled[i], shuffled[j] = shuffled[j], shuffled[i]
	})
	require.NotEqual(t, names(fams), names(shuffled))
	SortFamilies(shuffled)
	require.Equal(t, names(fams), names(shuffled))
	require.IsIncreasing(t, names(shuffled))
}

func names(fams []*dto.MetricFamily) []string {
	out := make([]string, len(fams))
	for i, mf := range fams {
		out[i] = mf.GetName()
	}
	return out
}

func seriesOfAll(fams []*dto.MetricFamily) int {
	n := 0
	for _, mf := range fams {
		n += seriesOf(mf)
	}
	return n
}

func TestDecodeEmpty(t *testing.T) {
	tests := []struct {
		name        string
		body        []byte
		contentType string
		encoding    string
		want        error
	}{
		{"proto", nil, "", "", nil},
		{"proto, identity", nil, MediaTypeProtoDelim, "identity", nil},
		{"text", nil, MediaTypeText, "", nil},
		{"text, blank lines and comments", []byte("\n# just a comment\n\n"), MediaTypeText, "", nil},
		{"snappy stream of no chunks", bytes.Clone(snappyStreamMagic), "", EncodingSnappy, nil},
		{"snappy block of nothing", encodeBlock(nil), "", EncodingSnappy, nil},
		// Zero bytes are neither a framed stream nor a snappy block.
		{"snappy, no bytes at all", nil, "", EncodingSnappy, ErrInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Decode(bytes.NewReader(tc.body), tc.contentType, tc.encoding, Limits{})
			if tc.want != nil {
				requireStatus(t, err, tc.want)
				return
			}
			require.NoError(t, err)
			require.Empty(t, got)
		})
	}
}

func TestDecodeUnsupportedMedia(t *testing.T) {
	body := encodeProto(t, loadT232(t))
	tests := []struct {
		name        string
		contentType string
		encoding    string
	}{
		{"json", "application/json", ""},
		{"openmetrics", "application/openmetrics-text; version=1.0.0", ""},
		{"other proto message", "application/vnd.google.protobuf; proto=prometheus.WriteRequest", ""},
		{"protobuf text encoding", "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=text", ""},
		{"text of another version", "text/plain; version=1.0.0", ""},
		{"unparsable content type", "text/plain; ;=;", ""},
		{"gzip", MediaTypeProtoDelim, "gzip"},
		{"zstd", MediaTypeProtoDelim, "zstd"},
		{"two codings", MediaTypeProtoDelim, "snappy, gzip"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Decode(bytes.NewReader(body), tc.contentType, tc.encoding, Limits{})
			requireStatus(t, err, ErrUnsupportedMedia)
			require.Equal(t, http.StatusUnsupportedMediaType, StatusCode(err))
			require.Nil(t, got)
		})
	}
}

// t232Extremes measures the reference payload, so that limits can be set
// exactly at and one below what it needs.
type t232Extremes struct {
	families, series, labels, name, value int
}

func measureT232(fams []*dto.MetricFamily) t232Extremes {
	var x t232Extremes
	x.families = len(fams)
	for _, mf := range fams {
		x.series += seriesOf(mf)
		x.name = max(x.name, len(mf.GetName()))
		x.value = max(x.value, len(mf.GetHelp()))
		for _, m := range mf.GetMetric() {
			x.labels = max(x.labels, len(m.GetLabel()))
			for _, lp := range m.GetLabel() {
				x.name = max(x.name, len(lp.GetName()))
				x.value = max(x.value, len(lp.GetValue()))
			}
		}
	}
	return x
}

func TestDecodeLimits(t *testing.T) {
	fams := loadT232(t)
	x := measureT232(fams)
	text := readT232(t)
	pb := encodeProto(t, fams)
	framed := encodeFramed(t, pb)
	block := encodeBlock(pb)
	framedText := encodeFramed(t, text)
	n64 := func(b []byte) int64 { return int64(len(b)) }

	type body struct {
		name        string
		data        []byte
		contentType string
		encoding    string
	}
	protoPlain := body{"proto", pb, "", ""}
	protoFramed := body{"proto snappy framed", framed, "", EncodingSnappy}
	protoBlock := body{"proto snappy block", block, "", EncodingSnappy}
	textPlain := body{"text", text, MediaTypeText, ""}
	textFramed := body{"text snappy framed", framedText, MediaTypeText, EncodingSnappy}
	every := []body{protoPlain, protoFramed, protoBlock, textPlain, textFramed}

	tests := []struct {
		name   string
		bodies []body
		at     func(body) Limits // exactly enough: must pass
		below  func(body) Limits // one less: must fail
		want   error
	}{
		{
			name:   "compressed bytes",
			bodies: every,
			at:     func(b body) Limits { return Limits{CompressedBytes: n64(b.data)} },
			below:  func(b body) Limits { return Limits{CompressedBytes: n64(b.data) - 1} },
			want:   ErrTooLarge,
		},
		{
			name:   "decoded bytes",
			bodies: []body{protoPlain, protoFramed, protoBlock},
			at:     func(body) Limits { return Limits{DecodedBytes: n64(pb)} },
			below:  func(body) Limits { return Limits{DecodedBytes: n64(pb) - 1} },
			want:   ErrTooLarge,
		},
		{
			name:   "decoded bytes of text",
			bodies: []body{textPlain, textFramed},
			at:     func(body) Limits { return Limits{DecodedBytes: n64(text)} },
			below:  func(body) Limits { return Limits{DecodedBytes: n64(text) - 1} },
			want:   ErrTooLarge,
		},
		{
			name:   "families",
			bodies: every,
			at:     func(body) Limits { return Limits{Families: x.families} },
			below:  func(body) Limits { return Limits{Families: x.families - 1} },
			want:   ErrTooLarge,
		},
		{
			name:   "series",
			bodies: every,
			at:     func(body) Limits { return Limits{Series: x.series} },
			below:  func(body) Limits { return Limits{Series: x.series - 1} },
			want:   ErrTooLarge,
		},
		{
			name:   "labels per series",
			bodies: every,
			at:     func(body) Limits { return Limits{LabelsPerSeries: x.labels} },
			below:  func(body) Limits { return Limits{LabelsPerSeries: x.labels - 1} },
			want:   ErrTooLarge,
		},
		{
			name:   "name length",
			bodies: every,
			at:     func(body) Limits { return Limits{NameLength: x.name} },
			below:  func(body) Limits { return Limits{NameLength: x.name - 1} },
			want:   ErrInvalid,
		},
		{
			name:   "value length",
			bodies: every,
			at:     func(body) Limits { return Limits{ValueLength: x.value} },
			below:  func(body) Limits { return Limits{ValueLength: x.value - 1} },
			want:   ErrInvalid,
		},
	}
	for _, tc := range tests {
		for _, b := range tc.bodies {
			t.Run(tc.name+"/"+b.name, func(t *testing.T) {
				got, err := Decode(bytes.NewReader(b.data), b.contentType, b.encoding, tc.at(b))
				require.NoError(t, err)
				requireSameFamilies(t, fams, got)

				got, err = Decode(bytes.NewReader(b.data), b.contentType, b.encoding, tc.below(b))
				requireStatus(t, err, tc.want)
				require.Nil(t, got)
			})
		}
	}
}

// TestDecodeSeriesCountsExposedSeries: a histogram or summary exposes a
// series per bucket or quantile plus _sum and _count, and the limit counts
// them, in both formats.
func TestDecodeSeriesCountsExposedSeries(t *testing.T) {
	fams := []*dto.MetricFamily{
		family("h", dto.MetricType_HISTOGRAM, histogram("a", "1")), // 2 buckets: 4 series
		family("s", dto.MetricType_SUMMARY, summary("a", "1")),     // 2 quantiles: 4 series
		family("g", dto.MetricType_GAUGE, gauge(1)),                // 1 series
	}
	pb := encodeProto(t, fams)
	var text bytes.Buffer
	for _, mf := range fams {
		text.WriteString(textOf(t, mf))
	}
	for _, tc := range []struct {
		name, contentType string
		body              []byte
	}{
		{"proto", "", pb},
		{"text", MediaTypeText, text.Bytes()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Decode(bytes.NewReader(tc.body), tc.contentType, "", Limits{Series: 9})
			require.NoError(t, err)
			require.Equal(t, 9, seriesOfAll(got))
			_, err = Decode(bytes.NewReader(tc.body), tc.contentType, "", Limits{Series: 8})
			requireStatus(t, err, ErrTooLarge)
		})
	}

	// One histogram with more buckets than the limit allows series is
	// refused before it is unmarshalled.
	h := histogram()
	for i := range 1000 {
		h.Histogram.Bucket = append(h.Histogram.Bucket, &dto.Bucket{UpperBound: proto.Float64(float64(i + 2)), CumulativeCount: proto.Uint64(3)})
	}
	_, err := Decode(bytes.NewReader(protoBody(t, family("wide", dto.MetricType_HISTOGRAM, h))), "", "", Limits{Series: 500})
	requireStatus(t, err, ErrTooLarge)
	require.ErrorContains(t, err, "more than 500 series")
}

func TestDecodeMalformed(t *testing.T) {
	valid := marshal(t, family("up", dto.MetricType_GAUGE, gauge(1, "job", "a")))
	pb := delimited(valid)
	bigChunk := make([]byte, maxSnappyChunk+1)

	// A chunk that would decode to a valid body but for its checksum.
	badCRC := dataChunk(0x01, pb)
	badCRC[5] ^= 0xff
	_, err := Decode(bytes.NewReader(streamOf(dataChunk(0x01, pb))), "", EncodingSnappy, Limits{})
	require.NoError(t, err, "the same chunk with its checksum intact")

	tests := []struct {
		name        string
		body        []byte
		contentType string
		encoding    string
		want        error
	}{
		{"truncated message", pb[:len(pb)-1], "", "", ErrInvalid},
		{"truncated length prefix", []byte{0x80}, "", "", ErrInvalid},
		{"varint overflow", bytes.Repeat([]byte{0xff}, 11), "", "", ErrInvalid},
		{"not protobuf", delimited([]byte{0xff, 0xff, 0xff}), "", "", ErrInvalid},
		{"empty message", delimited(nil), "", "", ErrInvalid},
		{"valid then garbage", append(bytes.Clone(pb), 0x05, 0x07), "", "", ErrInvalid},
		{"length prefix over the decoded limit", binary.AppendUvarint(nil, 17<<20), "", "", ErrTooLarge},
		{"text syntax", []byte("up{job=\"a\" 1\n"), MediaTypeText, "", ErrInvalid},
		{"text value", []byte("up one\n"), MediaTypeText, "", ErrInvalid},
		{"text type after samples", []byte("up 1\n# TYPE up gauge\n"), MediaTypeText, "", ErrInvalid},
		{"text __name__ label", []byte("up{__name__=\"down\"} 1\n"), MediaTypeText, "", ErrInvalid},
		{"text duplicate label", []byte("up{a=\"1\",a=\"2\"} 1\n"), MediaTypeText, "", ErrInvalid},
		{"text invalid UTF-8", []byte("up{a=\"\xff\"} 1\n"), MediaTypeText, "", ErrInvalid},
		{"text UTF-8 metric name", []byte("{\"up.time\"} 1\n"), MediaTypeText, "", ErrInvalid},
		{"snappy stream, bad checksum", streamOf(badCRC), "", EncodingSnappy, ErrInvalid},
		{"snappy stream, reserved chunk", streamOf(frameChunk(0x02, []byte("x"))), "", EncodingSnappy, ErrInvalid},
		{"snappy stream, truncated chunk", streamOf(dataChunk(0x00, pb))[:20], "", EncodingSnappy, ErrInvalid},
		{"snappy stream, short chunk", streamOf(frameChunk(0x00, []byte{1, 2})), "", EncodingSnappy, ErrInvalid},
		{"snappy stream, compressed chunk over 64 KiB", streamOf(dataChunk(0x00, bigChunk)), "", EncodingSnappy, ErrInvalid},
		{"snappy stream, uncompressed chunk over 64 KiB", streamOf(dataChunk(0x01, bigChunk)), "", EncodingSnappy, ErrInvalid},
		{"snappy stream, valid frame bad payload", encodeFramed(t, []byte{0x03, 0xff, 0xff, 0xff}), "", EncodingSnappy, ErrInvalid},
		{"snappy block, corrupt", append(binary.AppendUvarint(nil, 100), 0xff, 0xff, 0xff), "", EncodingSnappy, ErrInvalid},
		{"snappy block, lies about its length", append(binary.AppendUvarint(nil, 1<<20), 0x00, 'a', 0xfe, 0x01, 0x00), "", EncodingSnappy, ErrInvalid},
		{"snappy block, over the decoded limit", binary.AppendUvarint(nil, 17<<20), "", EncodingSnappy, ErrTooLarge},
		{"snappy, wrong stream identifier", append([]byte("\xff\x06\x00\x00sNaPpX"), pb...), "", EncodingSnappy, ErrInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Decode(bytes.NewReader(tc.body), tc.contentType, tc.encoding, Limits{})
			requireStatus(t, err, tc.want)
			require.Nil(t, got)
		})
	}
}

// TestDecodeBodyReadErrors: a body that fails to read is the peer's problem,
// never a 500.
func TestDecodeBodyReadErrors(t *testing.T) {
	pb := encodeProto(t, loadT232(t))
	for _, enc := range []string{"", EncodingSnappy} {
		body := pb
		if enc != "" {
			body = encodeFramed(t, pb)
		}
		t.Run("broken connection "+enc, func(t *testing.T) {
			_, err := Decode(&failingReader{data: body[:len(body)/2], err: errConnReset}, "", enc, Limits{})
			requireStatus(t, err, ErrInvalid)
			require.ErrorContains(t, err, errConnReset.Error())
		})
		t.Run("http.MaxBytesReader "+enc, func(t *testing.T) {
			r := http.MaxBytesReader(nil, io.NopCloser(bytes.NewReader(body)), int64(len(body)/2))
			_, err := Decode(r, "", enc, Limits{})
			requireStatus(t, err, ErrTooLarge)
		})
	}
}

func TestCheckFamily(t *testing.T) {
	long := strings.Repeat("a", 257)
	withExemplar := counter(1)
	withExemplar.Counter.Exemplar = &dto.Exemplar{Label: labels("trace_id", "abc"), Value: proto.Float64(1)}
	badExemplar := counter(1)
	badExemplar.Counter.Exemplar = &dto.Exemplar{Label: labels("trace-id", "abc"), Value: proto.Float64(1)}
	badBucketExemplar := histogram()
	badBucketExemplar.Histogram.Bucket[0].Exemplar = &dto.Exemplar{Label: labels("a", "\xff")}
	manyLabels := gauge(1)
	for i := range 65 {
		manyLabels.Label = append(manyLabels.Label, labels(string(rune('a'+i%26))+strings.Repeat("x", i), "v")...)
	}

	tests := []struct {
		name string
		mf   *dto.MetricFamily
		want error // nil: valid
	}{
		{"gauge", family("node_load1", dto.MetricType_GAUGE, gauge(1, "instance", "a")), nil},
		{"counter", family("http_requests_total", dto.MetricType_COUNTER, counter(3, "code", "200")), nil},
		{"untyped", family("up", dto.MetricType_UNTYPED, untyped(1)), nil},
		{"summary", family("rpc_seconds", dto.MetricType_SUMMARY, summary("job", "x")), nil},
		{"histogram", family("req_seconds", dto.MetricType_HISTOGRAM, histogram("job", "x")), nil},
		{"gauge histogram", family("queue_size", dto.MetricType_GAUGE_HISTOGRAM, histogram()), nil},
		{"no metrics", family("empty", dto.MetricType_GAUGE), nil},
		{"recording rule name", family("cluster:cpu_usage_cores:sum", dto.MetricType_GAUGE, gauge(1)), nil},
		{"leading underscore", family("_x", dto.MetricType_GAUGE, gauge(1, "_id", "c1")), nil},
		{"empty label value", family("x", dto.MetricType_GAUGE, gauge(1, "instance", "")), nil},
		{"UTF-8 label value", family("x", dto.MetricType_GAUGE, gauge(1, "city", "Zürich ☃")), nil},
		{"le on a gauge", family("x", dto.MetricType_GAUGE, gauge(1, "le", "1")), nil},
		{"counter exemplar", family("x_total", dto.MetricType_COUNTER, withExemplar), nil},

		{"empty metric name", family("", dto.MetricType_GAUGE, gauge(1)), ErrInvalid},
		{"metric name with digit first", family("1up", dto.MetricType_GAUGE, gauge(1)), ErrInvalid},
		{"metric name with dash", family("up-time", dto.MetricType_GAUGE, gauge(1)), ErrInvalid},
		{"metric name with dot", family("up.time", dto.MetricType_GAUGE, gauge(1)), ErrInvalid},
		{"metric name with space", family("up time", dto.MetricType_GAUGE, gauge(1)), ErrInvalid},
		{"metric name not ASCII", family("ùp", dto.MetricType_GAUGE, gauge(1)), ErrInvalid},
		{"metric name too long", family(long, dto.MetricType_GAUGE, gauge(1)), ErrInvalid},
		{"empty label name", family("x", dto.MetricType_GAUGE, gauge(1, "", "v")), ErrInvalid},
		{"label name with digit first", family("x", dto.MetricType_GAUGE, gauge(1, "1a", "v")), ErrInvalid},
		{"label name with colon", family("x", dto.MetricType_GAUGE, gauge(1, "a:b", "v")), ErrInvalid},
		{"__name__ injected as a label", family("x", dto.MetricType_GAUGE, gauge(1, "__name__", "other")), ErrInvalid},
		{"reserved __ prefix", family("x", dto.MetricType_GAUGE, gauge(1, "__address__", "10.0.0.1")), ErrInvalid},
		{"bare __", family("x", dto.MetricType_GAUGE, gauge(1, "__", "v")), ErrInvalid},
		{"look-alike of _id", family("x", dto.MetricType_GAUGE, gauge(1, "_ıd", "c2")), ErrInvalid},
		{"label name too long", family("x", dto.MetricType_GAUGE, gauge(1, long, "v")), ErrInvalid},
		{"label value too long", family("x", dto.MetricType_GAUGE, gauge(1, "a", strings.Repeat("v", 2049))), ErrInvalid},
		{"duplicate label", family("x", dto.MetricType_GAUGE, gauge(1, "a", "1", "b", "2", "a", "3")), ErrInvalid},
		{"duplicate _id", family("x", dto.MetricType_GAUGE, gauge(1, "_id", "mine", "_id", "theirs")), ErrInvalid},
		{"label value not UTF-8", family("x", dto.MetricType_GAUGE, gauge(1, "a", "\xc3\x28")), ErrInvalid},
		{"help not UTF-8", &dto.MetricFamily{Name: proto.String("x"), Help: proto.String("\xff"), Type: dto.MetricType_GAUGE.Enum()}, ErrInvalid},
		{"help too long", &dto.MetricFamily{Name: proto.String("x"), Help: proto.String(strings.Repeat("h", 2049)), Type: dto.MetricType_GAUGE.Enum()}, ErrInvalid},
		{"too many labels", family("x", dto.MetricType_GAUGE, manyLabels), ErrTooLarge},
		{"gauge carrying a counter", family("x", dto.MetricType_GAUGE, counter(1)), ErrInvalid},
		{"counter without value", family("x", dto.MetricType_COUNTER, &dto.Metric{}), ErrInvalid},
		{"summary carrying a gauge", family("x", dto.MetricType_SUMMARY, gauge(1)), ErrInvalid},
		{"histogram carrying a summary", family("x", dto.MetricType_HISTOGRAM, summary()), ErrInvalid},
		{"untyped carrying a histogram", family("x", dto.MetricType_UNTYPED, histogram()), ErrInvalid},
		{"unknown type", family("x", dto.MetricType(42), gauge(1)), ErrInvalid},
		{"second metric wrong", family("x", dto.MetricType_GAUGE, gauge(1), counter(1)), ErrInvalid},
		{"quantile label on a summary", family("x", dto.MetricType_SUMMARY, summary("quantile", "0.5")), ErrInvalid},
		{"le label on a histogram", family("x", dto.MetricType_HISTOGRAM, histogram("le", "1")), ErrInvalid},
		{"le label on a gauge histogram", family("x", dto.MetricType_GAUGE_HISTOGRAM, histogram("le", "1")), ErrInvalid},
		{"exemplar label name", family("x_total", dto.MetricType_COUNTER, badExemplar), ErrInvalid},
		{"bucket exemplar not UTF-8", family("x", dto.MetricType_HISTOGRAM, badBucketExemplar), ErrInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckFamily(tc.mf, Limits{})
			if tc.want == nil {
				require.NoError(t, err)
				return
			}
			requireStatus(t, err, tc.want)
			// Whatever a family gets wrong, it is never our bug.
			require.Contains(t, []int{400, 413}, StatusCode(err))
		})
	}
}

// TestCheckFamilyInDecode: the rules hold for every way a family arrives.
func TestCheckFamilyInDecode(t *testing.T) {
	injected := family("up", dto.MetricType_GAUGE, gauge(1, "_id", "c1", "__name__", "other_metric"))
	pb := protoBody(t, family("fine", dto.MetricType_GAUGE, gauge(1)), injected)
	for _, tc := range []struct {
		name, encoding string
		body           []byte
	}{
		{"proto", "", pb},
		{"proto snappy framed", EncodingSnappy, encodeFramed(t, pb)},
		{"proto snappy block", EncodingSnappy, encodeBlock(pb)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Decode(bytes.NewReader(tc.body), "", tc.encoding, Limits{})
			requireStatus(t, err, ErrInvalid)
			require.ErrorContains(t, err, `invalid label name "__name__"`)
			require.Nil(t, got, "no family of a rejected body is returned")
		})
	}
}

// textOf renders one family in the text format by hand, as an old client's
// federate scrape would look.
func textOf(tb testing.TB, mf *dto.MetricFamily) string {
	tb.Helper()
	var b strings.Builder
	name := mf.GetName()
	b.WriteString("# TYPE " + name + " " + strings.ToLower(mf.GetType().String()) + "\n")
	lbls := func(m *dto.Metric, extra ...string) string {
		var parts []string
		for _, lp := range m.GetLabel() {
			parts = append(parts, lp.GetName()+`="`+lp.GetValue()+`"`)
		}
		for i := 0; i+1 < len(extra); i += 2 {
			parts = append(parts, extra[i]+`="`+extra[i+1]+`"`)
		}
		if len(parts) == 0 {
			return ""
		}
		return "{" + strings.Join(parts, ",") + "}"
	}
	f := func(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }
	for _, m := range mf.GetMetric() {
		switch mf.GetType() {
		case dto.MetricType_SUMMARY:
			for _, q := range m.GetSummary().GetQuantile() {
				b.WriteString(name + lbls(m, "quantile", f(q.GetQuantile())) + " " + f(q.GetValue()) + "\n")
			}
			b.WriteString(name + "_sum" + lbls(m) + " " + f(m.GetSummary().GetSampleSum()) + "\n")
			b.WriteString(name + "_count" + lbls(m) + " " + f(float64(m.GetSummary().GetSampleCount())) + "\n")
		case dto.MetricType_HISTOGRAM:
			for _, bk := range m.GetHistogram().GetBucket() {
				b.WriteString(name + "_bucket" + lbls(m, "le", f(bk.GetUpperBound())) + " " + f(float64(bk.GetCumulativeCount())) + "\n")
			}
			b.WriteString(name + "_sum" + lbls(m) + " " + f(m.GetHistogram().GetSampleSum()) + "\n")
			b.WriteString(name + "_count" + lbls(m) + " " + f(float64(m.GetHistogram().GetSampleCount())) + "\n")
		default:
			b.WriteString(name + lbls(m) + " " + f(m.GetGauge().GetValue()+m.GetCounter().GetValue()+m.GetUntyped().GetValue()) + "\n")
		}
	}
	return b.String()
}

// TestDecodeStopsAtCompressedLimit is QUALITY R5 at the decoder: a body far
// over the limit fails with ErrTooLarge after at most limit+1 bytes are read.
func TestDecodeStopsAtCompressedLimit(t *testing.T) {
	const limit = 500 << 10
	// Valid families without end: only the byte limit can stop them.
	up := delimited(marshal(t, family("up", dto.MetricType_GAUGE, gauge(1))))
	l := Limits{CompressedBytes: limit, Families: 1 << 30, Series: 1 << 30}
	tests := []struct {
		name        string
		head        []byte
		fill        []byte
		contentType string
		encoding    string
	}{
		{"proto", nil, up, "", ""},
		{"text", nil, []byte("a"), MediaTypeText, ""},
		{"text samples", nil, []byte("up 1\n"), MediaTypeText, ""},
		{"text comment", []byte("# "), []byte("x"), MediaTypeText, ""},
		{"snappy stream", snappyStreamMagic, []byte{0xfe}, "", EncodingSnappy}, // padding chunks
		{"snappy block", binary.AppendUvarint(nil, 8<<20), []byte{0}, "", EncodingSnappy},
	}
	for _, tc := range tests {
		t.Run(tc.name+"/far over", func(t *testing.T) {
			body := io.MultiReader(bytes.NewReader(tc.head), io.LimitReader(&patternReader{p: tc.fill}, 64<<20))
			cr := &countingReader{r: body}
			_, err := Decode(cr, tc.contentType, tc.encoding, l)
			requireStatus(t, err, ErrTooLarge)
			require.LessOrEqual(t, cr.n, int64(limit+1), "read past the limit")
			require.Greater(t, cr.n, int64(limit/2), "failed before the limit: a different check fired")
		})
		t.Run(tc.name+"/endless", func(t *testing.T) {
			cr := &countingReader{r: io.MultiReader(bytes.NewReader(tc.head), &patternReader{p: tc.fill})}
			done := make(chan error, 1)
			go func() {
				_, err := Decode(cr, tc.contentType, tc.encoding, l)
				done <- err
			}()
			select {
			case err := <-done:
				requireStatus(t, err, ErrTooLarge)
				require.LessOrEqual(t, cr.n, int64(limit+1))
			case <-time.After(30 * time.Second):
				t.Fatal("Decode of an endless body did not return")
			}
		})
	}
}

// TestSnappyLengthClaims is QUALITY R6 and R4 for lies: a header that
// promises a huge decoded size is refused before anything is allocated for
// it. The CPU side of R6 is BenchmarkDecodeSnappyBomb.
func TestSnappyLengthClaims(t *testing.T) {
	const ceiling = 1 << 20 // far below any claim here
	fourGiB := uint64(4 << 30)
	claimChunk := frameChunk(0x00, append([]byte{0, 0, 0, 0}, binary.AppendUvarint(nil, fourGiB)...))
	tests := []struct {
		name     string
		body     []byte
		encoding string
		want     error
	}{
		// A block's length is a 32-bit value: 4 GiB cannot even be said.
		{"block claims 4 GiB", append(binary.AppendUvarint(nil, fourGiB), 0x00, 'a'), EncodingSnappy, ErrInvalid},
		{"block claims just under 4 GiB", append(binary.AppendUvarint(nil, fourGiB-1), 0x00, 'a'), EncodingSnappy, ErrTooLarge},
		{"block claims the whole decoded limit", append(binary.AppendUvarint(nil, 16<<20), 0x00, 'a'), EncodingSnappy, ErrInvalid},
		{"stream chunk claims 4 GiB", streamOf(claimChunk), EncodingSnappy, ErrInvalid},
		// A message longer than the rest of the body can hold is refused at
		// its length prefix; a shorter lie costs a first 64 KiB buffer.
		{"length prefix claims the decoded limit", binary.AppendUvarint(nil, 16<<20), "", ErrTooLarge},
		{"length prefix claims more than the body limit", binary.AppendUvarint(nil, 501<<10), "", ErrTooLarge},
		{"length prefix claims the body limit", binary.AppendUvarint(nil, 499<<10), "", ErrInvalid},
		{"snappy length prefix claims the decoded limit", encodeFramed(t, binary.AppendUvarint(nil, 16<<20)), EncodingSnappy, ErrTooLarge},
		{"snappy length prefix claims 10 MiB", encodeFramed(t, binary.AppendUvarint(nil, 10<<20)), EncodingSnappy, ErrInvalid},
		{"bomb beyond what the body limit can expand to", snappyBomb(t, 16<<20), EncodingSnappy, ErrTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			alloc := allocatedBy(func() {
				_, err = Decode(bytes.NewReader(tc.body), "", tc.encoding, Limits{})
			})
			requireStatus(t, err, tc.want)
			require.Less(t, alloc, uint64(ceiling), "allocated %d bytes for a %d-byte body", alloc, len(tc.body))
		})
	}
}

// TestSnappyBomb is QUALITY R6 for a real bomb: a framed stream whose 64 KiB
// chunks of zeros expand about 21 times, decoding to just over the decoded
// limit. It must fail with ErrTooLarge, and the memory it costs is bounded by
// the decoded limit, not by what the stream would expand to.
//
// The bound: the decoder holds one delimited message, grown by doubling as
// bytes arrive (at most 2× the decoded limit in all), plus the framing
// reader's two chunk buffers and a read buffer, well under 1 MiB.
func TestSnappyBomb(t *testing.T) {
	for _, decoded := range []int64{1 << 20, 4 << 20} {
		t.Run(byteSize(decoded), func(t *testing.T) {
			bomb := snappyBomb(t, int(decoded)) // prefix + decoded bytes: just over
			l := Limits{DecodedBytes: decoded}
			require.Less(t, int64(len(bomb)), DefaultLimits().CompressedBytes, "the bomb fits the compressed limit")
			require.Greater(t, decoded/int64(len(bomb)), int64(20), "a real ×21 bomb")

			var err error
			alloc := allocatedBy(func() {
				_, err = Decode(bytes.NewReader(bomb), "", EncodingSnappy, l)
			})
			requireStatus(t, err, ErrTooLarge)
			bound := uint64(2*decoded + 1<<20)
			require.LessOrEqual(t, alloc, bound, "allocated %d bytes for a %d-byte bomb", alloc, len(bomb))
		})
	}
}

func byteSize(n int64) string {
	return fmt.Sprintf("%dMiB", n>>20)
}

// TestDecodeTextLabelFlood: the text parser's work per label grows with the
// labels before it on the line, so one long line of labels once cost
// minutes of CPU and a map per label. It must stop at the label limit, in
// every spelling of a sample line. (The CPU figure is
// BenchmarkDecodeTextLabelFlood; here the allocations show the work.)
func TestDecodeTextLabelFlood(t *testing.T) {
	flood := func(head string) []byte {
		var b strings.Builder
		b.WriteString(head)
		for i := 0; b.Len() < 40<<10; i++ {
			fmt.Fprintf(&b, `l%d="a\"=b",`, i)
		}
		b.WriteString("} 1\n")
		return []byte(b.String())
	}
	for _, tc := range []struct{ name, head string }{
		{"name then brace", "a{"},
		{"blank before brace", "a \t{"},
		{"after a comment and a sample", "# HELP a x{y=\"z\"}\na 1\n  a{"},
		{"brace first", "{"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := flood(tc.head)
			var err error
			alloc := allocatedBy(func() {
				_, err = Decode(bytes.NewReader(body), MediaTypeText, "", Limits{})
			})
			require.Error(t, err)
			require.Contains(t, []int{400, 413}, StatusCode(err))
			require.Less(t, alloc, uint64(1<<20), "the parser saw the whole line")
		})
	}

	// At the limit the line is fine: 64 labels plus a histogram's le.
	var b strings.Builder
	b.WriteString("# TYPE h histogram\n")
	for _, le := range []string{"1", "+Inf"} {
		b.WriteString(`h_bucket{le="` + le + `"`)
		for i := range 64 {
			fmt.Fprintf(&b, `,l%d="v"`, i)
		}
		b.WriteString("} 1\n")
	}
	b.WriteString("h_sum 1\nh_count 1\n")
	got, err := Decode(strings.NewReader(b.String()), MediaTypeText, "", Limits{})
	require.NoError(t, err)
	require.Len(t, got, 1)
	_, err = Decode(strings.NewReader(b.String()), MediaTypeText, "", Limits{LabelsPerSeries: 63})
	requireStatus(t, err, ErrTooLarge)
}

// TestDecodeTextLongLine: the text parser buffers a whole token, so a line
// without end (a comment, a name, a label value) must be cut off at the
// longest line the limits allow, not at the decoded limit.
func TestDecodeTextLongLine(t *testing.T) {
	const size = 8 << 20
	big := Limits{CompressedBytes: 16 << 20, DecodedBytes: 16 << 20}
	for _, tc := range []struct{ name, head string }{
		{"comment", "# "},
		{"help", "# HELP a "},
		{"metric name", "a"},
		{"label value", `a{b="`},
		{"after a good line", "up 1\n# "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := append([]byte(tc.head), bytes.Repeat([]byte("x"), size)...)
			var err error
			alloc := allocatedBy(func() {
				_, err = Decode(bytes.NewReader(body), MediaTypeText, "", big)
			})
			requireStatus(t, err, ErrTooLarge)
			require.ErrorContains(t, err, "line of the text body is longer")
			// The parser's token buffer grows by doubling up to the
			// longest allowed line (about 280 KiB): a few times that.
			require.Less(t, alloc, uint64(4<<20), "the parser buffered the line")
		})
	}

	// The longest valid line passes: every label at the limits, every value
	// byte escaped.
	var b strings.Builder
	b.WriteString(strings.Repeat("n", 256) + "{")
	for i := range 64 {
		fmt.Fprintf(&b, `%s%02d="%s",`, strings.Repeat("l", 254), i, strings.Repeat(`\n`, 2048))
	}
	b.WriteString("} 1 1700000000000\n")
	got, err := Decode(strings.NewReader(b.String()), MediaTypeText, "", big)
	require.NoError(t, err)
	require.Len(t, got, 1)
	require.Len(t, got[0].GetMetric()[0].GetLabel(), 64)
}
