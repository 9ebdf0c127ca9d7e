package remotewrite

import (
	"encoding/binary"
	"errors"
	"io"
	"math"
	"mime"
	"net/http"
	"strings"
	"unsafe"

	"github.com/klauspost/compress/s2"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/telemeter/telemeter/internal/upload"
)

// Remote-write 1.0 request headers.
const (
	ContentType = "application/x-protobuf"
	// VersionHeader and Version announce remote write 1.0.
	VersionHeader = "X-Prometheus-Remote-Write-Version"
	Version       = "0.1.0"
)

// ReceiveLimits bound what DecodeWriteRequest accepts. A zero field means the
// default (DefaultReceiveLimits).
type ReceiveLimits struct {
	CompressedBytes int64 // body as sent
	DecodedBytes    int64 // after snappy
	Series          int   // TimeSeries entries in one request
	Samples         int   // float samples across the request
	LabelsPerSeries int   // labels of one series, __name__ not counted
	NameLength      int   // label names and the metric name, in bytes
	ValueLength     int   // other label values, in bytes
}

// DefaultReceiveLimits fit a Prometheus agent's batches (a few thousand
// samples each) with room to spare.
func DefaultReceiveLimits() ReceiveLimits {
	return ReceiveLimits{
		CompressedBytes: 1 << 20,
		DecodedBytes:    8 << 20,
		Series:          100000,
		Samples:         100000,
		LabelsPerSeries: 64,
		NameLength:      256,
		ValueLength:     2048,
	}
}

func (l ReceiveLimits) withDefaults() ReceiveLimits {
	d := DefaultReceiveLimits()
	if l.CompressedBytes <= 0 {
		l.CompressedBytes = d.CompressedBytes
	}
	if l.DecodedBytes <= 0 {
		l.DecodedBytes = d.DecodedBytes
	}
	if l.Series <= 0 {
		l.Series = d.Series
	}
	if l.Samples <= 0 {
		l.Samples = d.Samples
	}
	if l.LabelsPerSeries <= 0 {
		l.LabelsPerSeries = d.LabelsPerSeries
	}
	if l.NameLength <= 0 {
		l.NameLength = d.NameLength
	}
	if l.ValueLength <= 0 {
		l.ValueLength = d.ValueLength
	}
	return l
}

// CheckContentType accepts the Content-Type of a remote-write 1.0 request:
// application/x-protobuf, with no proto parameter or
// proto=prometheus.WriteRequest. An empty header is accepted, as older
// senders omit it. Remote write 2.0 is refused with ErrUnsupportedMedia
// (415), which tells a 2.0 sender to fall back to 1.0.
func CheckContentType(contentType string) error {
	if contentType == "" {
		return nil
	}
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		return upload.Errorf(upload.ErrUnsupportedMedia, "parse content type: %v", err)
	}
	if mt != ContentType {
		return upload.Errorf(upload.ErrUnsupportedMedia, "content type %q, want %s", mt, ContentType)
	}
	if p, ok := params["proto"]; ok && p != "prometheus.WriteRequest" {
		return upload.Errorf(upload.ErrUnsupportedMedia, "proto %q, only prometheus.WriteRequest (remote write 1.0) is supported", p)
	}
	return nil
}

// WriteRequest is a decoded remote-write request: the labels and float
// samples of its series. It is leaner than prompb.WriteRequest (a label costs
// 32 bytes instead of 64, a sample 16 instead of 48), which keeps what a
// hostile request of tiny series can make the server allocate within a small
// multiple of its decoded size.
type WriteRequest struct {
	Series []Series
}

// Series is one TimeSeries entry of a request.
type Series struct {
	Labels  []Label // as sent: not checked, not sorted
	Samples []Sample
}

// Label is a label pair.
type Label struct {
	Name, Value string
}

// Sample is a float sample.
type Sample struct {
	Timestamp int64 // milliseconds since the epoch
	Value     float64
}

// DecodeWriteRequest reads a remote-write 1.0 body: a snappy block (or, with
// Content-Encoding identity or none, the bare protobuf) holding a
// prometheus.WriteRequest. It reads at most l.CompressedBytes+1 bytes of
// body; the block's declared decoded length is checked against
// l.DecodedBytes before the decoded buffer is allocated; series, samples and
// labels are counted and their lengths checked before any of them is
// allocated.
//
// The request returned carries labels and float samples only: native
// histograms, exemplars and metadata are skipped (only the framing of their
// fields is checked). Series with no float sample are left out. Its strings
// share the decoded buffer. Errors wrap upload.ErrTooLarge, upload.ErrInvalid or
// upload.ErrUnsupportedMedia.
func DecodeWriteRequest(body io.Reader, contentEncoding string, l ReceiveLimits) (*WriteRequest, error) {
	l = l.withDefaults()
	snappy := false
	switch strings.ToLower(strings.TrimSpace(contentEncoding)) {
	case upload.EncodingSnappy:
		snappy = true
	case "", "identity":
	default:
		return nil, upload.Errorf(upload.ErrUnsupportedMedia, "content encoding %q, want snappy", contentEncoding)
	}
	raw, err := readBody(body, l.CompressedBytes)
	if err != nil {
		return nil, err
	}
	buf := raw
	if snappy {
		if buf, err = decodeBlock(raw, l.DecodedBytes); err != nil {
			return nil, err
		}
	} else if int64(len(raw)) > l.DecodedBytes {
		return nil, upload.Errorf(upload.ErrTooLarge, "body of %d bytes exceeds the decoded limit of %d", len(raw), l.DecodedBytes)
	}
	return unmarshal(buf, l)
}

// readBody reads all of body, failing with ErrTooLarge past limit bytes.
func readBody(body io.Reader, limit int64) ([]byte, error) {
	raw, err := io.ReadAll(io.LimitReader(body, limit+1))
	if err != nil {
		if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
			return nil, upload.Errorf(upload.ErrTooLarge, "body exceeds %d bytes", mbe.Limit)
		}
		var se *upload.StatusError
		if errors.As(err, &se) {
			return nil, err
		}
		return nil, upload.Errorf(upload.ErrInvalid, "read body: %v", err)
	}
	if int64(len(raw)) > limit {
		return nil, upload.Errorf(upload.ErrTooLarge, "body exceeds %d bytes", limit)
	}
	return raw, nil
}

// decodeBlock decodes one snappy block after checking the length it declares
// against limit and against what a block of its size can hold.
func decodeBlock(block []byte, limit int64) ([]byte, error) {
	// The block opens with its decoded length as a uvarint. Read it here,
	// so that a length beyond what snappy allows is still "too large".
	declared, k := binary.Uvarint(block)
	if k <= 0 {
		return nil, upload.Errorf(upload.ErrInvalid, "snappy block: bad length header")
	}
	if declared > uint64(limit) {
		return nil, upload.Errorf(upload.ErrTooLarge, "snappy block declares %d decoded bytes, limit is %d", declared, limit)
	}
	n, err := s2.DecodedLen(block)
	if err != nil {
		return nil, upload.Errorf(upload.ErrInvalid, "snappy block: %v", err)
	}
	if n > maxSnappyExpansion(len(block)) {
		return nil, upload.Errorf(upload.ErrInvalid, "snappy block of %d bytes declares %d decoded bytes, more than it can hold", len(block), n)
	}
	out, err := s2.Decode(make([]byte, n), block)
	if err != nil {
		return nil, upload.Errorf(upload.ErrInvalid, "snappy block: %v", err)
	}
	return out, nil
}

// maxSnappyExpansion bounds what a snappy block of n bytes decodes to: its
// densest element, a copy with a 2-byte offset, spends 3 bytes on 64.
func maxSnappyExpansion(n int) int {
	return n/3*64 + 64
}

// Field numbers of remote write 1.0 (prompb/remote.proto, types.proto).
const (
	fieldWriteTimeseries = 1
	fieldWriteMetadata   = 3
	fieldSeriesLabels    = 1
	fieldSeriesSamples   = 2
	fieldSeriesExemplars = 3
	fieldSeriesHistogram = 4
	fieldLabelName       = 1
	fieldLabelValue      = 2
	fieldSampleValue     = 1
	fieldSampleTimestamp = 2
)

// unmarshal decodes buf in two passes: the first checks the encoding and the
// limits and counts what the second will fill, so that every slice is
// allocated once, at its exact size.
func unmarshal(buf []byte, l ReceiveLimits) (*WriteRequest, error) {
	d := wrDecoder{l: l}
	if err := d.request(buf); err != nil {
		return nil, err
	}
	if d.series == 0 {
		return &WriteRequest{}, nil
	}
	f := &filler{
		// buf is never written again, so its strings can share it.
		str:     unsafe.String(unsafe.SliceData(buf), len(buf)),
		series:  make([]Series, 0, d.series),
		labels:  make([]Label, d.allLabels),
		samples: make([]Sample, d.samples),
	}
	d = wrDecoder{l: l, fill: f}
	if err := d.request(buf); err != nil {
		return nil, err // cannot happen: the first pass accepted buf
	}
	return &WriteRequest{Series: f.series}, nil
}

// wrDecoder walks a WriteRequest. Without fill it only checks and counts.
type wrDecoder struct {
	l         ReceiveLimits
	fill      *filler
	entries   int // TimeSeries entries, kept or not
	series    int // kept: with at least one sample
	allLabels int // of every entry
	samples   int
	base      []byte // the whole buffer, for string offsets
}

type filler struct {
	str             string
	series          []Series
	labels          []Label
	samples         []Sample
	nLabels, nSampl int
}

func invalid(format string, args ...any) error {
	return upload.Errorf(upload.ErrInvalid, format, args...)
}

// fields calls fn for every field of message b, after checking its encoding.
// For a length-delimited field, v is its content.
func fields(b []byte, what string, fn func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return invalid("%s: bad field tag: %v", what, protowire.ParseError(n))
		}
		b = b[n:]
		var (
			v []byte
			x uint64
		)
		switch typ {
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(b)
		case protowire.VarintType:
			x, n = protowire.ConsumeVarint(b)
		case protowire.Fixed64Type:
			x, n = protowire.ConsumeFixed64(b)
		case protowire.Fixed32Type:
			var x32 uint32
			x32, n = protowire.ConsumeFixed32(b)
			x = uint64(x32)
		default: // groups are not part of proto3
			return invalid("%s: field %d has unsupported wire type %d", what, num, typ)
		}
		if n < 0 {
			return invalid("%s: field %d: %v", what, num, protowire.ParseError(n))
		}
		b = b[n:]
		if err := fn(num, typ, v, x); err != nil {
			return err
		}
	}
	return nil
}

func wantType(what string, num protowire.Number, got, want protowire.Type) error {
	if got != want {
		return invalid("%s: field %d has wire type %d, want %d", what, num, got, want)
	}
	return nil
}

func (d *wrDecoder) request(buf []byte) error {
	d.base = buf
	return fields(buf, "write request", func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		switch num {
		case fieldWriteTimeseries:
			if err := wantType("write request", num, typ, protowire.BytesType); err != nil {
				return err
			}
			d.entries++
			if d.entries > d.l.Series {
				return upload.Errorf(upload.ErrTooLarge, "more than %d series", d.l.Series)
			}
			return d.timeSeries(v)
		case fieldWriteMetadata:
			return wantType("write request", num, typ, protowire.BytesType)
		}
		return nil // unknown fields are skipped, as proto3 requires
	})
}

func (d *wrDecoder) timeSeries(b []byte) error {
	var labels, samples int
	var name bool
	err := fields(b, "series", func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		switch num {
		case fieldSeriesLabels:
			if err := wantType("series", num, typ, protowire.BytesType); err != nil {
				return err
			}
			isName, err := d.label(v)
			if err != nil {
				return err
			}
			if isName {
				name = true
			}
			labels++
			if labels > d.l.LabelsPerSeries+1 {
				return upload.Errorf(upload.ErrTooLarge, "more than %d labels in a series", d.l.LabelsPerSeries)
			}
		case fieldSeriesSamples:
			if err := wantType("series", num, typ, protowire.BytesType); err != nil {
				return err
			}
			if err := d.sample(v); err != nil {
				return err
			}
			samples++
			if d.samples+samples > d.l.Samples {
				return upload.Errorf(upload.ErrTooLarge, "more than %d samples", d.l.Samples)
			}
		case fieldSeriesExemplars, fieldSeriesHistogram:
			return wantType("series", num, typ, protowire.BytesType)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if labels == 0 {
		return invalid("series without labels")
	}
	if !name && labels > d.l.LabelsPerSeries {
		return upload.Errorf(upload.ErrTooLarge, "more than %d labels in a series", d.l.LabelsPerSeries)
	}
	d.allLabels += labels
	if samples == 0 {
		// A histogram or exemplar series: skipped. The second pass
		// reuses the label slots it filled.
		if d.fill != nil {
			d.fill.nLabels -= labels
		}
		return nil
	}
	if f := d.fill; f != nil {
		f.series = append(f.series, Series{
			Labels:  f.labels[f.nLabels-labels : f.nLabels : f.nLabels],
			Samples: f.samples[f.nSampl-samples : f.nSampl : f.nSampl],
		})
	}
	d.series++
	d.samples += samples
	return nil
}

// label checks one Label message and reports whether it is __name__.
func (d *wrDecoder) label(b []byte) (bool, error) {
	var name, value []byte
	err := fields(b, "label", func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		switch num {
		case fieldLabelName, fieldLabelValue:
			if err := wantType("label", num, typ, protowire.BytesType); err != nil {
				return err
			}
			if num == fieldLabelName {
				name = v
			} else {
				value = v
			}
		}
		return nil
	})
	if err != nil {
		return false, err
	}
	if len(name) == 0 {
		return false, invalid("label with an empty name")
	}
	if len(name) > d.l.NameLength {
		return false, invalid("label name of %d bytes exceeds %d", len(name), d.l.NameLength)
	}
	isName := string(name) == model.MetricNameLabel
	limit := d.l.ValueLength
	if isName {
		limit = d.l.NameLength
	}
	if len(value) > limit {
		return false, invalid("value of label %s has %d bytes, limit %d", truncate(string(name)), len(value), limit)
	}
	if f := d.fill; f != nil {
		f.labels[f.nLabels] = Label{Name: d.str(name), Value: d.str(value)}
		f.nLabels++
	}
	return isName, nil
}

func (d *wrDecoder) sample(b []byte) error {
	var s Sample
	err := fields(b, "sample", func(num protowire.Number, typ protowire.Type, _ []byte, x uint64) error {
		switch num {
		case fieldSampleValue:
			if err := wantType("sample", num, typ, protowire.Fixed64Type); err != nil {
				return err
			}
			s.Value = math.Float64frombits(x)
		case fieldSampleTimestamp:
			if err := wantType("sample", num, typ, protowire.VarintType); err != nil {
				return err
			}
			s.Timestamp = int64(x)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if f := d.fill; f != nil {
		f.samples[f.nSampl] = s
		f.nSampl++
	}
	return nil
}

// str returns the string of b, a sub-slice of the decoded buffer, without a
// copy. Every slice the decoder takes of the buffer keeps its capacity to the
// buffer's end (protowire slices with two indices), so the capacity tells the
// offset.
func (d *wrDecoder) str(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	off := cap(d.base) - cap(b)
	return d.fill.str[off : off+len(b)]
}

func truncate(s string) string {
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	return s
}
