package benchmark

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/telemeter/telemeter/internal/upload"
)

// kindsText has one family of every type the template handles.
const kindsText = `# HELP http_requests_total Requests served.
# TYPE http_requests_total counter
http_requests_total{code="200",handler="/upload"} 1027
http_requests_total{code="500",handler="/upload"} 3
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 12.47
# TYPE memory_bytes gauge
memory_bytes{pod="a"} 1.5e+09
memory_bytes{pod="b"} 7.25e+08
# TYPE temperature_celsius gauge
temperature_celsius -3.5
# TYPE up untyped
up{job="x",_id="someone-else"} 1
# TYPE scrapes_total untyped
scrapes_total 4100
# TYPE broken untyped
broken NaN
# TYPE request_duration_seconds histogram
request_duration_seconds_bucket{le="0.1"} 40
request_duration_seconds_bucket{le="0.5"} 90
request_duration_seconds_bucket{le="1"} 99
request_duration_seconds_bucket{le="+Inf"} 100
request_duration_seconds_sum 23.5
request_duration_seconds_count 100
# TYPE empty_seconds histogram
empty_seconds_bucket{le="1"} 0
empty_seconds_bucket{le="+Inf"} 0
empty_seconds_sum 0
empty_seconds_count 0
# TYPE rpc_seconds summary
rpc_seconds{quantile="0.5"} 0.02
rpc_seconds{quantile="0.99"} 0.3
rpc_seconds{quantile="0.9"} 0.1
rpc_seconds_sum 40
rpc_seconds_count 1000
`

// kindsSamples is the number of samples in kindsText as Prometheus counts
// them: 2+1+2+1+1+1+1 scalar, 4+2 and 2+2 histogram (buckets, sum, count),
// 3+2 summary.
const kindsSamples = 9 + 6 + 4 + 5

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
	return p
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.DiscardHandler)
}

// received is one upload as the fake server decoded it.
type received struct {
	families []*dto.MetricFamily
	at       time.Time
	status   int
}

// fakeServer implements /authorize and /upload of the v1 protocol on
// 127.0.0.1, decodes every body with upload.Decode and keeps them per
// cluster, and answers what answer says.
type fakeServer struct {
	t     *testing.T
	token string
	srv   *httptest.Server

	// answer picks the status of the nth upload (from 1) of cluster id;
	// nil answers 200.
	answer func(n int, id string) int
	// authAnswer picks the status of the nth authorize of id; nil: 200.
	authAnswer func(n int, id string) int

	mu        sync.Mutex
	n         int
	issued    map[string]string // id → the JWT issued last
	auths     map[string]int
	uploads   map[string][]received
	answered  map[string]int64 // status code → uploads answered with it
	malformed []string
}

func newFakeServer(t *testing.T) *fakeServer {
	f := &fakeServer{
		t:        t,
		token:    "cluster-token",
		issued:   map[string]string{},
		auths:    map[string]int{},
		uploads:  map[string][]received{},
		answered: map[string]int64{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/authorize", f.authorize)
	mux.HandleFunc("/upload", f.upload)
	f.srv = httptest.NewServer(mux) // binds 127.0.0.1
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeServer) bad(format string, args ...any) {
	f.mu.Lock()
	f.malformed = append(f.malformed, fmt.Sprintf(format, args...))
	f.mu.Unlock()
}

func (f *fakeServer) authorize(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		f.bad("authorize with method %s", r.Method)
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	if r.Header.Get("Authorization") != "Bearer "+f.token {
		f.bad("authorize with %q", r.Header.Get("Authorization"))
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	id := r.URL.Query().Get("id")
	if id == "" {
		f.bad("authorize without id")
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	f.auths[id]++
	n := f.auths[id]
	code := http.StatusOK
	if f.authAnswer != nil {
		code = f.authAnswer(n, id)
	}
	jwt := fmt.Sprintf("jwt.%s.%d", id, n)
	if code == http.StatusOK {
		f.issued[id] = jwt
	}
	f.mu.Unlock()
	if code != http.StatusOK {
		w.Header().Set("Retry-After", "1")
		http.Error(w, "not now", code)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(upload.AuthorizeResponse{
		Version: 1, Token: jwt, ExpiresInSeconds: 3600, Labels: map[string]string{upload.IDLabel: id},
	})
}

func (f *fakeServer) upload(w http.ResponseWriter, r *http.Request) {
	jwt, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	parts := strings.Split(jwt, ".")
	if !ok || len(parts) != 3 {
		f.bad("upload with %q", r.Header.Get("Authorization"))
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	id := parts[1]
	f.mu.Lock()
	current := f.issued[id]
	f.mu.Unlock()
	if jwt != current {
		f.answerUpload(w, id, http.StatusUnauthorized, nil)
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != upload.MediaTypeProtoDelim {
		f.bad("content type %q", ct)
	}
	if ce := r.Header.Get("Content-Encoding"); ce != upload.EncodingSnappy {
		f.bad("content encoding %q", ce)
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		f.bad("read body: %v", err)
		return
	}
	if !bytes.HasPrefix(body, []byte("\xff\x06\x00\x00sNaPpY")) {
		f.bad("body is not a snappy framed stream")
	}
	families, err := upload.Decode(bytes.NewReader(body), r.Header.Get("Content-Type"), r.Header.Get("Content-Encoding"), upload.Limits{})
	if err != nil {
		f.bad("decode body of %s: %v", id, err)
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	f.answerUpload(w, id, 0, families)
}

func (f *fakeServer) answerUpload(w http.ResponseWriter, id string, code int, families []*dto.MetricFamily) {
	f.mu.Lock()
	f.n++
	if code == 0 {
		code = http.StatusOK
		if f.answer != nil {
			code = f.answer(len(f.uploads[id])+1, id)
		}
	}
	f.uploads[id] = append(f.uploads[id], received{families: families, at: time.Now(), status: code})
	f.answered[fmt.Sprint(code)]++
	f.mu.Unlock()
	if code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "30")
	}
	if code != http.StatusOK {
		http.Error(w, http.StatusText(code), code)
	}
}

// snapshot returns copies of what the server saw.
func (f *fakeServer) snapshot() (auths map[string]int, uploads map[string][]received, answered map[string]int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	require.Empty(f.t, f.malformed, "malformed requests")
	auths = map[string]int{}
	for k, v := range f.auths {
		auths[k] = v
	}
	uploads = map[string][]received{}
	for k, v := range f.uploads {
		uploads[k] = append([]received(nil), v...)
	}
	answered = map[string]int64{}
	for k, v := range f.answered {
		answered[k] = v
	}
	return auths, uploads, answered
}

// options returns Options for a run against f that serves nothing.
func (f *fakeServer) options(t *testing.T) Options {
	o := DefaultOptions()
	o.To = f.srv.URL
	o.ToToken = f.token
	o.Listen = ""
	o.Logger = testLogger(t)
	o.Seed = 42
	o.RequestTimeout = 20 * time.Second // a loaded machine is slow, not broken
	return o
}

// runBounded runs o and fails the test if it does not stop by itself
// within limit.
func runBounded(t *testing.T, o Options, limit time.Duration) (Report, time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	began := time.Now()
	rep, err := Run(ctx, o)
	took := time.Since(began)
	require.NoError(t, err)
	require.NoError(t, ctx.Err(), "the run did not stop by itself within %s", limit)
	return rep, took
}

// sampleValues flattens a series' values: a scalar, or count, sum and then
// buckets or quantile values.
func sampleValues(mf *dto.MetricFamily, m *dto.Metric) []float64 {
	switch mf.GetType() {
	case dto.MetricType_COUNTER:
		return []float64{m.GetCounter().GetValue()}
	case dto.MetricType_GAUGE:
		return []float64{m.GetGauge().GetValue()}
	case dto.MetricType_UNTYPED:
		return []float64{m.GetUntyped().GetValue()}
	case dto.MetricType_HISTOGRAM:
		h := m.GetHistogram()
		v := []float64{float64(h.GetSampleCount()), h.GetSampleSum()}
		for _, b := range h.GetBucket() {
			v = append(v, float64(b.GetCumulativeCount()))
		}
		return v
	case dto.MetricType_SUMMARY:
		s := m.GetSummary()
		v := []float64{float64(s.GetSampleCount()), s.GetSampleSum()}
		for _, q := range s.GetQuantile() {
			v = append(v, q.GetValue())
		}
		return v
	}
	return nil
}

// seriesKey names a series by family and labels other than _id.
func seriesKey(mf *dto.MetricFamily, m *dto.Metric) string {
	var sb strings.Builder
	sb.WriteString(mf.GetName())
	for _, lp := range m.GetLabel() {
		if lp.GetName() != upload.IDLabel {
			fmt.Fprintf(&sb, ",%s=%q", lp.GetName(), lp.GetValue())
		}
	}
	return sb.String()
}

func labelValue(m *dto.Metric, name string) (string, bool) {
	for _, lp := range m.GetLabel() {
		if lp.GetName() == name {
			return lp.GetValue(), true
		}
	}
	return "", false
}
