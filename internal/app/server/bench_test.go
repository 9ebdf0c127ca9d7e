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

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/telemeter/telemeter/internal/store"
	"github.com/telemeter/telemeter/internal/upload"
	"github.com/telemeter/telemeter/internal/validate"
)

// BenchmarkUploadT232 runs the whole /upload pipeline in process: token
// check, rate limit, budget, decode, validation and a durable store write,
// for 1,000 clusters sending the T232 payload as delimited protobuf, snappy
// framed. "client" bodies are what the client sends (the partition label
// set, labels and series sorted), which the verbatim path takes; "decoded"
// bodies lack the partition label, so every family is decoded and rewritten.
// cpu-ns/op counts user and system time of the process, so fsync's kernel
// work is in it; samples/cpu-s is W2's figure without the HTTP transport.
func BenchmarkUploadT232(b *testing.B) {
	for _, body := range []string{"client", "decoded"} {
		for _, sync := range []bool{false, true} {
			name := body + "/nosync"
			if sync {
				name = body + "/fsync"
			}
			b.Run(name, func(b *testing.B) { benchUpload(b, body == "client", !sync) })
		}
	}
}

func benchUpload(b *testing.B, canonical, noSync bool) {
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
	const clusters = 1000
	tokens := make([]string, clusters)
	bodies := make([][]byte, clusters)
	samples := 0
	for i := range clusters {
		id := "cluster-" + strconv.Itoa(i)
		tokens[i], _, err = s.issuer.Issue(id, "", nil)
		require.NoError(b, err)
		fams, err := upload.Decode(bytes.NewReader(text), upload.MediaTypeText, "", upload.Limits{})
		require.NoError(b, err)
		// The file's samples are from 2019: restamp them, or the server
		// drops them as too old and stores nearly nothing.
		now := time.Now().UnixMilli()
		for _, f := range fams {
			for _, m := range f.GetMetric() {
				if m.TimestampMs != nil {
					m.TimestampMs = &now
				}
			}
		}
		if canonical {
			res, err := validate.New(validate.Options{}, nil).Validate(id, nil, fams)
			require.NoError(b, err)
			fams = res.Families
		}
		bodies[i], err = upload.Body(fams)
		require.NoError(b, err)
		if i == 0 {
			for _, f := range fams {
				samples += len(f.GetMetric())
			}
		}
	}
	if samples < 200 {
		b.Fatalf("%d samples per upload: the payload was not restamped", samples)
	}
	post := func(i int) {
		r := httptest.NewRequest(http.MethodPost, "/upload", bytes.NewReader(bodies[i%clusters]))
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
