package server

import (
	"bytes"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/s2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/telemeter/telemeter/internal/store"
	"github.com/telemeter/telemeter/internal/upload"
)

// BenchmarkUploadT232 runs the whole /upload pipeline in process: token
// check, rate limit, budget, decode, validation and a durable store write,
// for 1,000 clusters sending the T232 payload as the client does (delimited
// protobuf, snappy framed). cpu-ns/op counts user and system time of the
// process, so fsync's kernel work is in it; samples/cpu-s is W2's figure
// without the HTTP transport.
func BenchmarkUploadT232(b *testing.B) {
	for _, sync := range []bool{false, true} {
		name := "nosync"
		if sync {
			name = "fsync"
		}
		b.Run(name, func(b *testing.B) { benchUpload(b, !sync) })
	}
}

func benchUpload(b *testing.B, noSync bool) {
	o := DefaultOptions()
	o.StorageDir = b.TempDir()
	o.InsecureNoAuth = true
	o.RateLimit = time.Nanosecond
	s, err := newServer(o, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	require.NoError(b, err)
	if noSync {
		require.NoError(b, s.store.Close())
		s.store, err = store.Open(b.TempDir(), store.Options{NoSync: true, MaxOpenFiles: -1}, nil, nil)
		require.NoError(b, err)
	}
	b.Cleanup(func() { _ = s.store.Close() })

	text, err := os.ReadFile(filepath.Join("..", "..", "..", "testdata", "timeseries.txt"))
	require.NoError(b, err)
	fams, err := upload.Decode(bytes.NewReader(text), upload.MediaTypeText, "", upload.Limits{})
	require.NoError(b, err)
	var pb, body bytes.Buffer
	require.NoError(b, upload.Encode(&pb, fams))
	zw := s2.NewWriter(&body, s2.WriterSnappyCompat(), s2.WriterConcurrency(1))
	_, err = zw.Write(pb.Bytes())
	require.NoError(b, err)
	require.NoError(b, zw.Close())
	samples := 0
	for _, f := range fams {
		samples += len(f.GetMetric())
	}

	const clusters = 1000
	tokens := make([]string, clusters)
	for i := range tokens {
		tokens[i], _, err = s.issuer.Issue("cluster-"+strconv.Itoa(i), "", nil)
		require.NoError(b, err)
	}
	post := func(i int) {
		r := httptest.NewRequest(http.MethodPost, "/upload", bytes.NewReader(body.Bytes()))
		r.Header.Set("Content-Type", upload.MediaTypeProtoDelim)
		r.Header.Set("Content-Encoding", upload.EncodingSnappy)
		r.Header.Set("Authorization", "Bearer "+tokens[i%clusters])
		w := httptest.NewRecorder()
		s.handleUpload(w, r)
		if w.Code != http.StatusOK {
			b.Fatalf("upload %d: %d %s", i, w.Code, w.Body.String())
		}
	}
	for i := range 2 * clusters {
		post(i) // every cluster stored twice: the steady state overwrites
	}
	b.ReportAllocs()
	start := cpuTime(b)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		post(i)
	}
	b.StopTimer()
	cpu := cpuTime(b) - start
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
	b.ReportMetric(float64(samples)*float64(b.N)/cpu.Seconds(), "samples/cpu-s")
}

// cpuTime is the user and system time the process has used so far.
func cpuTime(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	require.NoError(tb, syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
