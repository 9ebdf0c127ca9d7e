package upload

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"mime"
	"strings"
	"unicode/utf8"

	"github.com/klauspost/compress/s2"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/proto"
)

// Limits bound what a decoder accepts. A zero field means the default.
type Limits struct {
	CompressedBytes    int64 // body as sent
	DecodedBytes       int64 // after decompression
	Families           int
	Series             int // metrics across all families
	LabelsPerSeries    int
	NameLength         int // metric and label names, in bytes
	ValueLength        int // label values and help text, in bytes
}

// DefaultLimits are generous for a real cluster's upload (a few thousand
// series) and small enough that a hostile body cannot hurt the server.
func DefaultLimits() Limits {
	return Limits{
		CompressedBytes: 500 << 10,
		DecodedBytes:    16 << 20,
		Families:        10000,
		Series:          100000,
		LabelsPerSeries: 64,
		NameLength:      256,
		ValueLength:     2048,
	}
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.CompressedBytes <= 0 {
		l.CompressedBytes = d.CompressedBytes
	}
	if l.DecodedBytes <= 0 {
		l.DecodedBytes = d.DecodedBytes
	}
	if l.Families <= 0 {
		l.Families = d.Families
	}
	if l.Series <= 0 {
		l.Series = d.Series
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

// snappyStreamMagic opens every snappy framed stream: the stream identifier
// chunk (type 0xff, length 6, "sNaPpY").
var snappyStreamMagic = []byte("\xff\x06\x00\x00sNaPpY")

// maxSnappyChunk is the largest uncompressed chunk the framing format allows.
const maxSnappyChunk = 65536

// Decode reads one upload body. contentType and contentEncoding are the
// request's headers; an empty contentType means delimited protobuf, as the
// v1 client sends. The body is read up to the limits and no further.
func Decode(body io.Reader, contentType, contentEncoding string, l Limits) ([]*dto.MetricFamily, error) {
	l = l.withDefaults()
	text, err := isText(contentType)
	if err != nil {
		return nil, err
	}
	r, err := Decompress(body, contentEncoding, l)
	if err != nil {
		return nil, err
	}
	if text {
		return decodeText(r, l)
	}
	return decodeProto(r, l)
}

func isText(contentType string) (bool, error) {
	if contentType == "" {
		return false, nil
	}
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		return false, Errorf(ErrUnsupportedMedia, "parse content type: %v", err)
	}
	switch mt {
	case "application/vnd.google.protobuf":
		if p := params["proto"]; p != "" && p != "io.prometheus.client.MetricFamily" {
			return false, Errorf(ErrUnsupportedMedia, "proto %q", p)
		}
		if e := params["encoding"]; e != "" && e != "delimited" {
			return false, Errorf(ErrUnsupportedMedia, "protobuf encoding %q", e)
		}
		return false, nil
	case "text/plain":
		if v := params["version"]; v != "" && v != "0.0.4" {
			return false, Errorf(ErrUnsupportedMedia, "text version %q", v)
		}
		return true, nil
	}
	return false, Errorf(ErrUnsupportedMedia, "%q", mt)
}

// Decompress wraps body so that reading it yields the decoded payload, never
// more than l.DecodedBytes of it, and never reads more than l.CompressedBytes
// of body. Past either limit a read fails with ErrTooLarge.
//
// With Content-Encoding snappy, a framed stream (as the v1 client sends) and
// a single snappy block (as remote write sends) are both accepted. A block's
// declared length is checked against the limit before anything is allocated.
func Decompress(body io.Reader, contentEncoding string, l Limits) (io.Reader, error) {
	l = l.withDefaults()
	compressed := &limitedReader{r: body, n: l.CompressedBytes, what: "body"}
	switch strings.ToLower(strings.TrimSpace(contentEncoding)) {
	case "", "identity":
		return &limitedReader{r: compressed, n: min(l.DecodedBytes, l.CompressedBytes), what: "body"}, nil
	case EncodingSnappy:
	default:
		return nil, Errorf(ErrUnsupportedMedia, "content encoding %q", contentEncoding)
	}
	br := bufio.NewReaderSize(compressed, len(snappyStreamMagic))
	head, err := br.Peek(len(snappyStreamMagic))
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	if bytes.Equal(head, snappyStreamMagic) {
		sr := s2.NewReader(br, s2.ReaderMaxBlockSize(maxSnappyChunk), s2.ReaderIgnoreCRC())
		return &limitedReader{r: &snappyStreamReader{r: sr}, n: l.DecodedBytes, what: "decoded body"}, nil
	}
	block, err := io.ReadAll(br)
	if err != nil {
		return nil, err
	}
	n, err := s2.DecodedLen(block)
	if err != nil {
		return nil, Errorf(ErrInvalid, "snappy block: %v", err)
	}
	if int64(n) > l.DecodedBytes {
		return nil, Errorf(ErrTooLarge, "snappy block declares %d decoded bytes, limit is %d", n, l.DecodedBytes)
	}
	out, err := s2.Decode(make([]byte, n), block)
	if err != nil {
		return nil, Errorf(ErrInvalid, "snappy block: %v", err)
	}
	return bytes.NewReader(out), nil
}

// snappyStreamReader maps the framing decoder's corruption errors to ErrInvalid.
type snappyStreamReader struct{ r *s2.Reader }

func (s *snappyStreamReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) && !isStatus(err) {
		err = Errorf(ErrInvalid, "snappy stream: %v", err)
	}
	return n, err
}

func isStatus(err error) bool {
	var se *StatusError
	return errors.As(err, &se)
}

// limitedReader fails with ErrTooLarge once more than n bytes would be read,
// unlike io.LimitReader, which ends silently.
type limitedReader struct {
	r    io.Reader
	n    int64
	what string
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.n < 0 {
		return 0, Errorf(ErrTooLarge, "%s exceeds limit", l.what)
	}
	if int64(len(p)) > l.n+1 {
		p = p[:l.n+1]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	if l.n < 0 {
		return n, Errorf(ErrTooLarge, "%s exceeds limit", l.what)
	}
	return n, err
}

// decodeProto reads length-delimited MetricFamily messages. A message's
// length is checked against what remains of the decoded budget before its
// buffer is allocated; the buffer is reused between messages.
func decodeProto(r io.Reader, l Limits) ([]*dto.MetricFamily, error) {
	br := bufio.NewReaderSize(r, 32<<10)
	var (
		families []*dto.MetricFamily
		buf      []byte
		series   int
	)
	for {
		size, err := binary.ReadUvarint(br)
		if errors.Is(err, io.EOF) {
			return families, nil
		}
		if err != nil {
			return nil, protoErr("read message length", err)
		}
		if size > uint64(l.DecodedBytes) {
			return nil, Errorf(ErrTooLarge, "message of %d bytes exceeds decoded limit %d", size, l.DecodedBytes)
		}
		if len(families) >= l.Families {
			return nil, Errorf(ErrTooLarge, "more than %d metric families", l.Families)
		}
		if cap(buf) < int(size) {
			buf = make([]byte, size)
		}
		buf = buf[:size]
		if _, err := io.ReadFull(br, buf); err != nil {
			return nil, protoErr("read message", err)
		}
		mf := &dto.MetricFamily{}
		if err := proto.Unmarshal(buf, mf); err != nil {
			return nil, Errorf(ErrInvalid, "unmarshal metric family %d: %v", len(families), err)
		}
		series += len(mf.GetMetric())
		if series > l.Series {
			return nil, Errorf(ErrTooLarge, "more than %d series", l.Series)
		}
		if err := CheckFamily(mf, l); err != nil {
			return nil, err
		}
		families = append(families, mf)
	}
}

func protoErr(what string, err error) error {
	if isStatus(err) {
		return err
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return Errorf(ErrInvalid, "%s: truncated", what)
	}
	if errors.Is(err, binaryOverflow) || strings.Contains(err.Error(), "overflow") {
		return Errorf(ErrInvalid, "%s: varint overflow", what)
	}
	return fmt.Errorf("%s: %w", what, err)
}

var binaryOverflow = errors.New("binary: varint overflows a 64-bit integer")

// decodeText parses the text exposition format. The parser builds the whole
// result in memory, so its input is bounded by the decoded limit; the
// structural limits are checked on the result.
func decodeText(r io.Reader, l Limits) ([]*dto.MetricFamily, error) {
	p := expfmt.NewTextParser(model.LegacyValidation)
	byName, err := p.TextToMetricFamilies(r)
	if err != nil {
		if isStatus(err) {
			return nil, err
		}
		var se *StatusError
		if errors.As(err, &se) {
			return nil, se
		}
		return nil, Errorf(ErrInvalid, "parse text: %v", err)
	}
	if len(byName) > l.Families {
		return nil, Errorf(ErrTooLarge, "more than %d metric families", l.Families)
	}
	families := make([]*dto.MetricFamily, 0, len(byName))
	series := 0
	for _, mf := range byName {
		series += len(mf.GetMetric())
		if series > l.Series {
			return nil, Errorf(ErrTooLarge, "more than %d series", l.Series)
		}
		if err := CheckFamily(mf, l); err != nil {
			return nil, err
		}
		families = append(families, mf)
	}
	SortFamilies(families)
	return families, nil
}

// CheckFamily validates one family: a legal metric name, a type that matches
// every metric's value, legal and unique label names, no reserved labels,
// valid UTF-8, and the length limits.
func CheckFamily(mf *dto.MetricFamily, l Limits) error {
	l = l.withDefaults()
	name := mf.GetName()
	if len(name) > l.NameLength {
		return Errorf(ErrInvalid, "metric name of %d bytes exceeds %d", len(name), l.NameLength)
	}
	if !model.LegacyValidation.IsValidMetricName(name) {
		return Errorf(ErrInvalid, "invalid metric name %q", truncate(name))
	}
	if len(mf.GetHelp()) > l.ValueLength || !utf8.ValidString(mf.GetHelp()) {
		return Errorf(ErrInvalid, "metric %s: invalid help text", name)
	}
	if _, ok := dto.MetricType_name[int32(mf.GetType())]; !ok {
		return Errorf(ErrInvalid, "metric %s: unknown type %d", name, mf.GetType())
	}
	for _, m := range mf.GetMetric() {
		if err := checkValue(mf.GetType(), m); err != nil {
			return Errorf(ErrInvalid, "metric %s: %v", name, err)
		}
		lps := m.GetLabel()
		if len(lps) > l.LabelsPerSeries {
			return Errorf(ErrTooLarge, "metric %s: %d labels exceed %d per series", name, len(lps), l.LabelsPerSeries)
		}
		for i, lp := range lps {
			ln, lv := lp.GetName(), lp.GetValue()
			if len(ln) > l.NameLength {
				return Errorf(ErrInvalid, "metric %s: label name of %d bytes exceeds %d", name, len(ln), l.NameLength)
			}
			if !model.LegacyValidation.IsValidLabelName(ln) || strings.HasPrefix(ln, "__") {
				return Errorf(ErrInvalid, "metric %s: invalid label name %q", name, truncate(ln))
			}
			if len(lv) > l.ValueLength {
				return Errorf(ErrInvalid, "metric %s: value of label %s has %d bytes, limit %d", name, ln, len(lv), l.ValueLength)
			}
			if !utf8.ValidString(lv) {
				return Errorf(ErrInvalid, "metric %s: value of label %s is not valid UTF-8", name, ln)
			}
			for _, prev := range lps[:i] {
				if prev.GetName() == ln {
					return Errorf(ErrInvalid, "metric %s: duplicate label %s", name, ln)
				}
			}
		}
	}
	return nil
}

func checkValue(t dto.MetricType, m *dto.Metric) error {
	ok := false
	switch t {
	case dto.MetricType_COUNTER:
		ok = m.Counter != nil
	case dto.MetricType_GAUGE:
		ok = m.Gauge != nil
	case dto.MetricType_UNTYPED:
		ok = m.Untyped != nil
	case dto.MetricType_SUMMARY:
		ok = m.Summary != nil
	case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
		ok = m.Histogram != nil
	}
	if !ok {
		return fmt.Errorf("value does not match type %s", t)
	}
	return nil
}

func truncate(s string) string {
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	return s
}
