package remotewrite

import (
	"fmt"
	"math/bits"

	"github.com/klauspost/compress/s2"
	"github.com/prometheus/prometheus/prompb"
)

// DefaultMaxRequestBytes bounds the protobuf encoding of one request, before
// compression. Receivers limit what they decode; a snapshot above this is
// sent as several requests.
const DefaultMaxRequestBytes = 2 << 20

// split cuts series into consecutive runs whose WriteRequest encoding stays
// within maxBytes. A series is never split: one larger than maxBytes goes
// alone. It returns the end index of each run.
func split(series []prompb.TimeSeries, maxBytes int) []int {
	var ends []int
	size := 0
	for i := range series {
		n := series[i].Size()
		entry := 1 + varintLen(uint64(n)) + n // field 1 tag, length, message
		if size > 0 && size+entry > maxBytes {
			ends = append(ends, i)
			size = 0
		}
		size += entry
	}
	if len(series) > 0 {
		ends = append(ends, len(series))
	}
	return ends
}

func varintLen(x uint64) int {
	return (bits.Len64(x|1) + 6) / 7
}

// encoder converts snapshots, marshals write requests and compresses them as
// one snappy block, one worker's. Its conversion arrays and marshal buffer
// are reused; each body it returns is a fresh slice, since an HTTP transport
// may read a request body after the request returned.
type encoder struct {
	conv converter
	buf  []byte
}

// release drops the arrays of a snapshot far larger than usual, so that one
// huge snapshot does not pin its memory in every worker.
func (e *encoder) release() {
	const keep = 1 << 16 // labels: a few thousand series
	if cap(e.conv.labels) > keep {
		e.conv = converter{}
	}
	if cap(e.buf) > DefaultMaxRequestBytes {
		e.buf = nil
	}
}

// encode returns the snappy-compressed WriteRequest holding series.
func (e *encoder) encode(series []prompb.TimeSeries) ([]byte, error) {
	wr := prompb.WriteRequest{Timeseries: series}
	n := wr.Size()
	if cap(e.buf) < n {
		e.buf = make([]byte, n)
	}
	e.buf = e.buf[:n]
	if _, err := wr.MarshalToSizedBuffer(e.buf); err != nil {
		return nil, fmt.Errorf("marshal write request: %w", err)
	}
	return s2.EncodeSnappy(nil, e.buf), nil
}
