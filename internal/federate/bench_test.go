package federate

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
)

// discard is a ResponseWriter that counts and drops the body, so a benchmark
// measures the handler, not a buffer of the whole response.
type discard struct {
	h http.Header
	n int64
}

func (d *discard) Header() http.Header         { return d.h }
func (d *discard) WriteHeader(int)             {}
func (d *discard) Write(p []byte) (int, error) { d.n += int64(len(p)); return len(p), nil }

// benchFederate serves /federate over 1,000 clusters × T232 (232,000
// series), QUALITY W5.
func benchFederate(b *testing.B, accept string) {
	s := openStore(b)
	base := t232(b)
	const clusters = 1000
	for i := range clusters {
		id := fmt.Sprintf("cluster-%04d", i)
		_, err := s.Put(id, t0, withID(base, id))
		require.NoError(b, err)
	}
	h, _ := newHandler(s, Options{})
	req := httptest.NewRequest(http.MethodGet, "/federate", nil)
	req.Header.Set("Accept", accept)
	var w *discard
	b.ReportAllocs()
	cpu := cpuTime()
	for b.Loop() {
		w = &discard{h: http.Header{}}
		h.ServeHTTP(w, req)
	}
	b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/op")
	series := clusters * 232
	require.Equal(b, float64(series*b.N), testutil.ToFloat64(h.metrics.series))
	b.ReportMetric(float64(w.n), "bytes/scrape")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(series), "ns/series")
}

func BenchmarkFederateText(b *testing.B)  { benchFederate(b, acceptText) }
func BenchmarkFederateProto(b *testing.B) { benchFederate(b, acceptProto) }
