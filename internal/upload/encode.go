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
// Each message is sized once (the marshaller reuses the cached size) and
// marshalled into one reused buffer.
func Encode(w io.Writer, families []*dto.MetricFamily) error {
	opts := proto.MarshalOptions{UseCachedSize: true}
	var buf []byte
	for _, mf := range families {
		size := proto.Size(mf)
		buf = binary.AppendUvarint(buf[:0], uint64(size))
		var err error
		if buf, err = opts.MarshalAppend(buf, mf); err != nil {
			return err
		}
		if _, err := w.Write(buf); err != nil {
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

// SortFamilies orders families by name, as the text format and the store expect.
func SortFamilies(families []*dto.MetricFamily) {
	slices.SortFunc(families, func(a, b *dto.MetricFamily) int {
		return strings.Compare(a.GetName(), b.GetName())
	})
}
