package upload

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/klauspost/compress/s2"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// Limits bound what a decoder accepts. A zero field means the default.
type Limits struct {
	CompressedBytes int64 // body as sent
	DecodedBytes    int64 // after decompression
	Families        int
	Series          int // exposed series across all families (see seriesOf)
	LabelsPerSeries int
	NameLength      int // metric and label names, in bytes
	ValueLength     int // label values and help text, in bytes
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

// WithDefaults returns l with every zero field set to its default.
func (l Limits) WithDefaults() Limits {
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
	return DecodeTaking(body, contentType, contentEncoding, l, nil)
}

// A Taker is offered every message of a protobuf body, in order, once the
// body's limits on families, series and labels per series hold for it, and
// reports whether it took the message; a message taken is not decoded. msg is
// reused once the call returns.
type Taker func(msg []byte) bool

// DecodeTaking is Decode with take offered every message of a protobuf body;
// it returns the families of the messages take did not take, in body order.
// A text body is decoded whole. take may be nil.
func DecodeTaking(body io.Reader, contentType, contentEncoding string, l Limits, take Taker) ([]*dto.MetricFamily, error) {
	l = l.WithDefaults()
	text, err := isText(contentType)
	if err != nil {
		return nil, err
	}
	r, release, err := decompress(body, contentEncoding, l)
	if err != nil {
		return nil, err
	}
	defer release()
	if text {
		return decodeText(r, l)
	}
	return decodeProto(r, l, take)
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
	r, _, err := decompress(body, contentEncoding, l)
	return r, err
}

// Buffers reused between bodies: every upload needs the same few, and they
// were most of the bytes an upload allocated.
var (
	snappyReaders = sync.Pool{New: func() any { return s2.NewReader(nil, s2.ReaderMaxBlockSize(maxSnappyChunk)) }}
	protoReaders  = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, protoReadSize) }}
	messageBufs   = sync.Pool{New: func() any { return new([]byte) }}
)

const (
	protoReadSize = 32 << 10
	// maxPooledMessage is the largest message buffer kept for reuse.
	maxPooledMessage = 8 << 20
)

// decompress is Decompress with a function that returns its buffers for
// reuse, to be called once the reader is no longer used.
func decompress(body io.Reader, contentEncoding string, l Limits) (io.Reader, func(), error) {
	noop := func() {}
	l = l.WithDefaults()
	compressed := &limitedReader{r: bodyReader{body}, n: l.CompressedBytes, what: "body"}
	switch strings.ToLower(strings.TrimSpace(contentEncoding)) {
	case "", "identity":
		plain := &limitedReader{r: compressed, n: min(l.DecodedBytes, l.CompressedBytes), what: "body"}
		return &decodedReader{Reader: plain, left: func() int64 { return plain.n }}, noop, nil
	case EncodingSnappy:
	default:
		return nil, noop, Errorf(ErrUnsupportedMedia, "content encoding %q", contentEncoding)
	}
	br := bufio.NewReaderSize(compressed, len(snappyStreamMagic))
	head, err := br.Peek(len(snappyStreamMagic))
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, noop, err
	}
	if bytes.Equal(head, snappyStreamMagic) {
		sr := snappyReaders.Get().(*s2.Reader)
		sr.Reset(br)
		release := func() {
			sr.Reset(nil)
			snappyReaders.Put(sr)
		}
		decoded := &limitedReader{r: &snappyStreamReader{r: sr}, n: l.DecodedBytes, what: "decoded body"}
		return &decodedReader{Reader: decoded, left: func() int64 {
			// What the framing reader holds decoded (one chunk at most),
			// plus what the rest of the body can expand to.
			pending := int64(maxSnappyChunk + maxSnappyExpansion(br.Buffered()))
			return min(decoded.n, pending+int64(maxSnappyExpansion(int(max(compressed.n, 0)))))
		}}, release, nil
	}
	block, err := io.ReadAll(br)
	if err != nil {
		return nil, noop, err
	}
	n, err := s2.DecodedLen(block)
	if err != nil {
		return nil, noop, Errorf(ErrInvalid, "snappy block: %v", err)
	}
	if int64(n) > l.DecodedBytes {
		return nil, noop, Errorf(ErrTooLarge, "snappy block declares %d decoded bytes, limit is %d", n, l.DecodedBytes)
	}
	if n > maxSnappyExpansion(len(block)) {
		return nil, noop, Errorf(ErrInvalid, "snappy block of %d bytes declares %d decoded bytes, more than it can hold", len(block), n)
	}
	out, err := s2.Decode(make([]byte, n), block)
	if err != nil {
		return nil, noop, Errorf(ErrInvalid, "snappy block: %v", err)
	}
	r := bytes.NewReader(out)
	return &decodedReader{Reader: r, left: func() int64 { return int64(r.Len()) }}, noop, nil
}

// decodedReader is what Decompress returns: the decoded payload, and a bound
// on how many more decoded bytes the body can yield within the limits. A
// delimited message that claims more than that is refused at its length
// prefix, before a byte of it is buffered.
type decodedReader struct {
	io.Reader
	left func() int64
}

// maxSnappyExpansion is the most a snappy block of n bytes can decode to. The
// densest element is a copy with a 2-byte offset: 3 bytes for 64 output bytes.
// Checking a declared length against it keeps a short block that lies about
// its length from making us allocate for the lie.
func maxSnappyExpansion(n int) int {
	return n/3*64 + 64
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

// bodyReader turns a failure to read the request body (a broken connection, a
// read deadline, http.MaxBytesReader) into a protocol condition, so that it
// never maps to a 500: those are for our own bugs.
type bodyReader struct{ r io.Reader }

func (b bodyReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err == nil || errors.Is(err, io.EOF) || isStatus(err) {
		return n, err
	}
	if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
		return n, Errorf(ErrTooLarge, "body exceeds %d bytes", mbe.Limit)
	}
	return n, Errorf(ErrInvalid, "read body: %v", err)
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
// buffer is allocated; the buffer is reused between messages. Messages of
// the common shape take the hand decoder (fastproto.go), the rest
// proto.Unmarshal.
func decodeProto(r io.Reader, l Limits, take Taker) ([]*dto.MetricFamily, error) {
	br := protoReaders.Get().(*bufio.Reader)
	br.Reset(r)
	bp := messageBufs.Get().(*[]byte)
	var (
		families []*dto.MetricFamily
		buf      = (*bp)[:0]
		series   int
		messages int
	)
	// Nothing decoded refers to buf: the decoders copy what they keep.
	defer func() {
		br.Reset(nil)
		protoReaders.Put(br)
		if cap(buf) <= maxPooledMessage {
			*bp = buf[:0]
			messageBufs.Put(bp)
		}
	}()
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
		if dr, ok := r.(*decodedReader); ok && int64(size) > dr.left()+int64(br.Buffered()) {
			return nil, Errorf(ErrTooLarge, "message of %d bytes is more than the rest of the body can hold within the limits", size)
		}
		if messages >= l.Families {
			return nil, Errorf(ErrTooLarge, "more than %d metric families", l.Families)
		}
		buf, err = readMessage(br, buf, int(size))
		if err != nil {
			return nil, protoErr("read message", err)
		}
		scanned, labels := scanFamily(buf)
		if series+scanned > l.Series {
			return nil, Errorf(ErrTooLarge, "more than %d series", l.Series)
		}
		if labels > l.LabelsPerSeries {
			return nil, Errorf(ErrTooLarge, "metric family %d: %d labels exceed %d per series", messages, labels, l.LabelsPerSeries)
		}
		messages++
		if take != nil && take(buf) {
			series += scanned
			continue
		}
		mf, ok := unmarshalFamilyFast(buf)
		if !ok {
			mf = &dto.MetricFamily{}
			if err := proto.Unmarshal(buf, mf); err != nil {
				return nil, Errorf(ErrInvalid, "unmarshal metric family %d: %v", messages-1, err)
			}
		}
		series += seriesOf(mf)
		if series > l.Series {
			return nil, Errorf(ErrTooLarge, "more than %d series", l.Series)
		}
		if err := CheckFamily(mf, l); err != nil {
			return nil, err
		}
		families = append(families, mf)
	}
}

// readMessage reads a message of size bytes into buf. A buffer larger than
// what buf holds grows by doubling as bytes arrive, so a length prefix that
// promises more than the body delivers costs at most about three times what
// was delivered (the buffers before the last, and the last).
func readMessage(r io.Reader, buf []byte, size int) ([]byte, error) {
	const step = 64 << 10
	if size <= cap(buf) || size <= step {
		if cap(buf) < size {
			buf = make([]byte, size)
		}
		buf = buf[:size]
		_, err := io.ReadFull(r, buf)
		return buf, err
	}
	buf = buf[:0]
	for len(buf) < size {
		start := len(buf)
		next := make([]byte, start+min(size-start, max(start, step)))
		copy(next, buf)
		buf = next
		if _, err := io.ReadFull(r, buf[start:]); err != nil {
			return buf, err
		}
	}
	return buf, nil
}

// scanFamily walks an encoded MetricFamily without allocating. It returns the
// series the family would expose (see seriesOf) and the most label pairs in one
// metric, so that the series and label limits hold before proto.Unmarshal
// allocates an object per element. Malformed wire data ends the scan early;
// Unmarshal then reports it.
func scanFamily(b []byte) (series, maxLabels int) {
	eachField(b, func(num protowire.Number, typ protowire.Type, v []byte) {
		if num != 4 || typ != protowire.BytesType { // MetricFamily.metric
			return
		}
		labels, nested := 0, 0
		eachField(v, func(num protowire.Number, typ protowire.Type, v []byte) {
			if typ != protowire.BytesType {
				return
			}
			switch num {
			case 1: // Metric.label
				labels++
			case 4, 7: // Metric.summary, Metric.histogram
				nested += 2 + countField(v, 3) // _sum, _count, quantile or bucket
			}
		})
		series += max(1, nested)
		maxLabels = max(maxLabels, labels)
	})
	return series, maxLabels
}

// eachField calls fn for every field of an encoded message, with the value's
// bytes for length-delimited fields. It stops at the first malformed field.
func eachField(b []byte, fn func(protowire.Number, protowire.Type, []byte)) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return
		}
		b = b[n:]
		var v []byte
		if typ == protowire.BytesType {
			v, n = protowire.ConsumeBytes(b)
		} else {
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return
		}
		b = b[n:]
		fn(num, typ, v)
	}
}

// countField counts the length-delimited occurrences of field num.
func countField(b []byte, num protowire.Number) int {
	n := 0
	eachField(b, func(got protowire.Number, typ protowire.Type, _ []byte) {
		if got == num && typ == protowire.BytesType {
			n++
		}
	})
	return n
}

// seriesOf counts the series a family exposes: one per metric, except that a
// summary exposes one per quantile plus _sum and _count, and a histogram one
// per bucket plus _sum and _count. The Series limit counts these, so a
// histogram with a million buckets is as large as a million gauges.
func seriesOf(mf *dto.MetricFamily) int {
	n := 0
	for _, m := range mf.GetMetric() {
		switch mf.GetType() {
		case dto.MetricType_SUMMARY:
			n += 2 + len(m.GetSummary().GetQuantile())
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			n += 2 + len(m.GetHistogram().GetBucket())
		default:
			n++
		}
	}
	return n
}

func protoErr(what string, err error) error {
	if isStatus(err) {
		return err
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return Errorf(ErrInvalid, "%s: truncated", what)
	}
	// encoding/binary reports an over-long varint with an unexported error.
	if strings.Contains(err.Error(), "overflow") {
		return Errorf(ErrInvalid, "%s: varint overflow", what)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// decodeText parses the text exposition format. The parser builds the whole
// result in memory, so its input is bounded by the decoded limit; the
// structural limits are checked on the result, except labels per line, which
// textGuard checks on the way in.
func decodeText(r io.Reader, l Limits) ([]*dto.MetricFamily, error) {
	p := expfmt.NewTextParser(model.LegacyValidation)
	// A histogram's le and a summary's quantile sit on the line as well.
	labels := l.LabelsPerSeries + 1
	g := &textGuard{
		r:         r,
		maxLabels: labels,
		// The longest valid line: a name, every label with each value
		// fully escaped, and room for value and timestamp.
		maxLine: int64(l.NameLength + labels*(l.NameLength+2*l.ValueLength+8) + 256),
	}
	byName, err := p.TextToMetricFamilies(g)
	if err != nil {
		if isStatus(err) {
			return nil, err
		}
		return nil, Errorf(ErrInvalid, "parse text: %v", err)
	}
	if len(byName) > l.Families {
		return nil, Errorf(ErrTooLarge, "more than %d metric families", l.Families)
	}
	families := make([]*dto.MetricFamily, 0, len(byName))
	series := 0
	for _, mf := range byName {
		series += seriesOf(mf)
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

// textGuard passes the text format through while counting the label pairs
// of each sample line (the '=' signs between braces, outside quotes) and the
// bytes of each line. The text parser's work per label grows with the labels
// before it on the line, so a line of thousands of labels costs seconds; and
// it buffers a whole comment or name token, so one endless line costs its
// length in memory. textGuard stops a line past maxLabels labels or maxLine
// bytes before the parser sees the rest of it.
type textGuard struct {
	r         io.Reader
	maxLabels int
	maxLine   int64
	state     textState
	labels    int
	line      int64
}

type textState uint8

const (
	lineStart textState = iota // blanks before anything
	inComment                  // # HELP, # TYPE or any comment
	inName                     // the metric name
	afterName                  // blanks after the name: a { may follow
	inBraces                   // between { and }, outside quotes
	inQuotes                   // a label value
	inEscape                   // after a backslash in a label value
	inRest                     // value and timestamp
)

func (g *textGuard) Read(p []byte) (int, error) {
	n, err := g.r.Read(p)
	for i, c := range p[:n] {
		if c == '\n' {
			g.state, g.labels, g.line = lineStart, 0, 0
			continue
		}
		if g.line++; g.line > g.maxLine {
			return i, Errorf(ErrTooLarge, "a line of the text body is longer than %d bytes", g.maxLine)
		}
		switch g.state {
		case lineStart:
			switch c {
			case ' ', '\t':
			case '#':
				g.state = inComment
			case '{':
				g.state = inBraces
			default:
				g.state = inName
			}
		case inName, afterName:
			switch c {
			case '{':
				g.state = inBraces
			case ' ', '\t':
				g.state = afterName
			default:
				if g.state == afterName {
					g.state = inRest
				}
			}
		case inBraces:
			switch c {
			case '"':
				g.state = inQuotes
			case '}':
				g.state = inRest
			case '=':
				if g.labels++; g.labels > g.maxLabels {
					return i, Errorf(ErrTooLarge, "a line of the text body has more than %d labels", g.maxLabels)
				}
			}
		case inQuotes:
			switch c {
			case '\\':
				g.state = inEscape
			case '"':
				g.state = inBraces
			}
		case inEscape:
			g.state = inQuotes
		}
	}
	return n, err
}

// CheckFamily validates one family: a legal metric name, a type that matches
// every metric's value, legal and unique label names, no reserved labels,
// valid UTF-8, and the length limits. Exemplar labels follow the same rules.
func CheckFamily(mf *dto.MetricFamily, l Limits) error {
	l = l.WithDefaults()
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
	if len(mf.GetUnit()) > l.NameLength || !utf8.ValidString(mf.GetUnit()) {
		return Errorf(ErrInvalid, "metric %s: invalid unit", name)
	}
	if _, ok := dto.MetricType_name[int32(mf.GetType())]; !ok {
		return Errorf(ErrInvalid, "metric %s: unknown type %d", name, mf.GetType())
	}
	reserved := reservedLabel(mf.GetType())
	for _, m := range mf.GetMetric() {
		if err := checkValue(mf.GetType(), m); err != nil {
			return Errorf(ErrInvalid, "metric %s: %v", name, err)
		}
		if se := checkLabels(m.GetLabel(), reserved, l); se != nil {
			return &StatusError{Err: se.Err, Reason: "metric " + name + ": " + se.Reason}
		}
		if se := checkExemplars(m, l); se != nil {
			return &StatusError{Err: se.Err, Reason: "metric " + name + ": exemplar: " + se.Reason}
		}
	}
	return nil
}

// checkLabels checks one label set. The reason it gives leaves out the
// metric's name, which the caller adds.
func checkLabels(lps []*dto.LabelPair, reserved string, l Limits) *StatusError {
	fail := func(sentinel error, format string, args ...any) *StatusError {
		return &StatusError{Err: sentinel, Reason: fmt.Sprintf(format, args...)}
	}
	if len(lps) > l.LabelsPerSeries {
		return fail(ErrTooLarge, "%d labels exceed %d per series", len(lps), l.LabelsPerSeries)
	}
	for i, lp := range lps {
		ln, lv := lp.GetName(), lp.GetValue()
		if len(ln) > l.NameLength {
			return fail(ErrInvalid, "label name of %d bytes exceeds %d", len(ln), l.NameLength)
		}
		if !model.LegacyValidation.IsValidLabelName(ln) || strings.HasPrefix(ln, "__") {
			return fail(ErrInvalid, "invalid label name %q", truncate(ln))
		}
		if ln == reserved {
			return fail(ErrInvalid, "label %s is reserved for this type", ln)
		}
		if len(lv) > l.ValueLength {
			return fail(ErrInvalid, "value of label %s has %d bytes, limit %d", ln, len(lv), l.ValueLength)
		}
		if !utf8.ValidString(lv) {
			return fail(ErrInvalid, "value of label %s is not valid UTF-8", ln)
		}
		for _, prev := range lps[:i] {
			if prev.GetName() == ln {
				return fail(ErrInvalid, "duplicate label %s", ln)
			}
		}
	}
	return nil
}

// checkExemplars checks the labels of every exemplar a metric carries: the
// protobuf exposition passes them on as they are.
func checkExemplars(m *dto.Metric, l Limits) *StatusError {
	if e := m.GetCounter().GetExemplar(); e != nil {
		if se := checkLabels(e.GetLabel(), "", l); se != nil {
			return se
		}
	}
	for _, b := range m.GetHistogram().GetBucket() {
		if se := checkLabels(b.GetExemplar().GetLabel(), "", l); se != nil {
			return se
		}
	}
	for _, e := range m.GetHistogram().GetExemplars() {
		if se := checkLabels(e.GetLabel(), "", l); se != nil {
			return se
		}
	}
	return nil
}

// reservedLabel is the label the exposition formats add to every sample of a
// type: a series carrying it as well would be exposed with the label twice,
// which fails the whole scrape of /federate.
func reservedLabel(t dto.MetricType) string {
	switch t {
	case dto.MetricType_SUMMARY:
		return model.QuantileLabel
	case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
		return model.BucketLabel
	}
	return ""
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
