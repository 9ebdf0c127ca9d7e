package upload

import (
	"bytes"
	"encoding/binary"
	"io"
	"slices"
	"strings"

	"github.com/klauspost/compress/s2"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"
)

// Encode writes families as length-delimited protobuf, the v1 upload body.
// Each message is written into one reused buffer, by the hand encoder where
// it can (fastproto.go), else by proto.Marshal, and then its length prefix.
func Encode(w io.Writer, families []*dto.MetricFamily) error {
	var (
		msg    []byte
		prefix [binary.MaxVarintLen64]byte
	)
	for _, mf := range families {
		var ok bool
		if msg, ok = appendFamilyFast(msg[:0], mf); !ok {
			var err error
			if msg, err = (proto.MarshalOptions{}).MarshalAppend(msg[:0], mf); err != nil {
				return err
			}
		}
		if _, err := w.Write(binary.AppendUvarint(prefix[:0], uint64(len(msg)))); err != nil {
			return err
		}
		if _, err := w.Write(msg); err != nil {
			return err
		}
	}
	return nil
}

// EncodeSnappy writes families as a snappy framed stream of length-delimited
// protobuf, compatible with the framing of golang/snappy's buffered writer.
func EncodeSnappy(w io.Writer, families []*dto.MetricFamily) error {
	sw := s2.NewWriter(w, s2.WriterSnappyCompat(), s2.WriterConcurrency(1))
	if err := Encode(sw, families); err != nil {
		return err
	}
	return sw.Close()
}

// Body encodes families for a push: snappy framed delimited protobuf.
func Body(families []*dto.MetricFamily) ([]byte, error) {
	var buf bytes.Buffer
	if err := EncodeSnappy(&buf, families); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// SortFamilies orders families by name, as the text format and the store
// expect. Families that share a name keep their order, so that of a series
// sent twice the first sent is the one kept.
func SortFamilies(families []*dto.MetricFamily) {
	slices.SortStableFunc(families, func(a, b *dto.MetricFamily) int {
		return strings.Compare(a.GetName(), b.GetName())
	})
}

// EncodedFamily is a family whose metrics are already encoded as the store
// keeps them: the protobuf of a MetricFamily holding only its metrics, as
// AppendMetrics writes it (each metric checked, its labels sorted), in one
// snappy block.
type EncodedFamily struct {
	Name, Help string
	HasHelp    bool // the family had a HELP text, possibly empty
	Type       dto.MetricType
	Block      []byte // s2.EncodeSnappy of the metrics' protobuf
	Decoded    int    // length of the metrics' protobuf
	Series     int
	// Newest is the newest sample timestamp in milliseconds, when
	// HasTimestamp.
	Newest       int64
	HasTimestamp bool
}
