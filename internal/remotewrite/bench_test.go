package remotewrite

import (
	"bytes"
	"testing"
	"time"

	"github.com/klauspost/compress/s2"
	"github.com/prometheus/prometheus/prompb"
)

// BenchmarkConvertT232 measures what the forwarder does per snapshot of the
// T232 reference payload: convert to series, split, marshal and compress.
func BenchmarkConvertT232(b *testing.B) {
	families := loadT232(b)
	var enc encoder
	b.ReportAllocs()
	var size int
	cpu := processCPU()
	for b.Loop() {
		series := enc.conv.convert(families, 1700000000000)
		start := 0
		for _, end := range split(series, DefaultMaxRequestBytes) {
			body, err := enc.encode(series[start:end])
			if err != nil {
				b.Fatal(err)
			}
			size = len(body)
			start = end
		}
	}
	reportCPU(b, cpu)
	b.ReportMetric(float64(size), "body-bytes")
}

// BenchmarkReceiveT232 measures the receive side for the same payload sent
// as one remote-write request: decode under limits, then ToFamilies.
func BenchmarkReceiveT232(b *testing.B) {
	raw, err := (&prompb.WriteRequest{Timeseries: ToTimeSeries(loadT232(b), 1700000000000)}).Marshal()
	if err != nil {
		b.Fatal(err)
	}
	body := s2.EncodeSnappy(nil, raw)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	cpu := processCPU()
	for b.Loop() {
		wr, err := DecodeWriteRequest(bytes.NewReader(body), "snappy", ReceiveLimits{})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := ToFamilies(wr); err != nil {
			b.Fatal(err)
		}
	}
	reportCPU(b, cpu)
}

// reportCPU reports the process CPU time per operation and per series since
// start; the GC's background work is included.
func reportCPU(b *testing.B, start time.Duration) {
	cpu := processCPU() - start
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N)/232, "cpu-ns/series")
}
