package remotewrite

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
)

// These tests run a real Prometheus (Debian's package, or ./bin/prometheus
// from `make deps`): as the target of the forwarder, and as a sender to the
// receive side.

func prometheusBin(t *testing.T) string {
	t.Helper()
	if p, err := filepath.Abs("../../bin/prometheus"); err == nil {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	p, err := exec.LookPath("prometheus")
	if err != nil {
		t.Skip("prometheus is not installed: run `make deps`")
	}
	return p
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer func() { _ = l.Close() }()
	return l.Addr().String()
}

// startPrometheus runs Prometheus with config and returns its address once
// it is ready.
func startPrometheus(t *testing.T, config string, args ...string) string {
	t.Helper()
	addr := freeAddr(t)
	startPrometheusAt(t, addr, config, args...)
	require.Eventually(t, func() bool {
		resp, err := http.Get("http://" + addr + "/-/ready")
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 60*time.Second, 100*time.Millisecond, "prometheus did not become ready")
	return addr
}

// queryScalar runs an instant query that returns one sample.
func queryScalar(t *testing.T, addr, query string, at time.Time) (float64, bool) {
	t.Helper()
	u := "http://" + addr + "/api/v1/query?" + url.Values{
		"query": {query},
		"time":  {strconv.FormatFloat(float64(at.UnixMilli())/1000, 'f', 3, 64)},
	}.Encode()
	resp, err := http.Get(u)
	require.NoError(t, err)
	defer func() { _ = resp.Body.Close() }()
	var r struct {
		Status string
		Data   struct {
			Result []struct {
				Value [2]any
			}
		}
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&r))
	require.Equal(t, "success", r.Status)
	if len(r.Data.Result) != 1 {
		return 0, false
	}
	v, err := strconv.ParseFloat(r.Data.Result[0].Value[1].(string), 64)
	require.NoError(t, err)
	return v, true
}

// TestForwarderToPrometheus forwards snapshots to Prometheus's remote-write
// receiver: every series of a snapshot is ingested, le and quantile labels
// included, and the 400 Prometheus answers for samples too old is not retried.
func TestForwarderToPrometheus(t *testing.T) {
	addr := startPrometheus(t, "global: {scrape_interval: 1m}\n", "--web.enable-remote-write-receiver")
	families := append(loadT232(t),
		family("rpc_seconds", dto.MetricType_SUMMARY, &dto.Metric{Summary: &dto.Summary{
			SampleCount: proto.Uint64(10), SampleSum: proto.Float64(2),
			Quantile: []*dto.Quantile{{Quantile: proto.Float64(0.5), Value: proto.Float64(0.1)}, {Quantile: proto.Float64(0.99), Value: proto.Float64(0.9)}},
		}}),
		family("req_seconds", dto.MetricType_HISTOGRAM, &dto.Metric{Histogram: &dto.Histogram{
			SampleCount: proto.Uint64(10), SampleSum: proto.Float64(2),
			Bucket: []*dto.Bucket{{UpperBound: proto.Float64(0.1), CumulativeCount: proto.Uint64(4)}, {UpperBound: proto.Float64(1), CumulativeCount: proto.Uint64(9)}},
		}}),
	)
	want := len(ToTimeSeries(families, 0))
	src := newFakeSource()
	received := time.Now().Truncate(time.Millisecond)
	src.put("cluster-a", received, families)
	h := startForwarder(t, ForwarderOptions{URL: "http://" + addr + "/api/v1/write"}, src)
	h.f.Notify("cluster-a", received)
	h.waitIdle(t)
	require.Equal(t, 1.0, testutil.ToFloat64(h.f.metrics.snapshots.WithLabelValues(snapshotSent)))

	n, ok := queryScalar(t, addr, `count({__name__=~".+"})`, received)
	require.True(t, ok)
	require.Equal(t, float64(want), n)
	v, ok := queryScalar(t, addr, `req_seconds_bucket{le="+Inf"}`, received)
	require.True(t, ok)
	require.Equal(t, 10.0, v)
	v, ok = queryScalar(t, addr, `histogram_quantile(0.5, req_seconds_bucket)`, received)
	require.True(t, ok)
	require.Greater(t, v, 0.1)
	v, ok = queryScalar(t, addr, `rpc_seconds{quantile="0.99"}`, received)
	require.True(t, ok)
	require.Equal(t, 0.9, v)

	// Three hours old: out of bounds for Prometheus, a 400, dropped.
	old := received.Add(-3 * time.Hour)
	src.put("cluster-old", old, families)
	h.f.Notify("cluster-old", old)
	h.waitIdle(t)
	require.Equal(t, 1.0, testutil.ToFloat64(h.f.metrics.requests.WithLabelValues(resultDropped)))
	require.Equal(t, 0.0, testutil.ToFloat64(h.f.metrics.requests.WithLabelValues(resultRetry)))
}

// TestReceiveFromPrometheus has a Prometheus scrape itself and remote-write
// to a receiver built from this package, with the original telemeter's
// credential.
func TestReceiveFromPrometheus(t *testing.T) {
	var (
		mu       sync.Mutex
		failures []string
		clusters = map[string]bool{}
		got      = map[string]*dto.MetricFamily{}
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fail := func(code int, err error) {
			mu.Lock()
			failures = append(failures, err.Error())
			mu.Unlock()
			http.Error(w, err.Error(), code)
		}
		token, id, err := ParseCredential(r.Header.Get("Authorization"))
		if err != nil || token != "tok" {
			fail(http.StatusUnauthorized, fmt.Errorf("parse credential (token %q): %w", token, err))
			return
		}
		if err := CheckContentType(r.Header.Get("Content-Type")); err != nil {
			fail(http.StatusUnsupportedMediaType, err)
			return
		}
		if v := r.Header.Get(VersionHeader); v != Version {
			fail(http.StatusBadRequest, fmt.Errorf("version header %q", v))
			return
		}
		wr, err := DecodeWriteRequest(r.Body, r.Header.Get("Content-Encoding"), ReceiveLimits{})
		if err != nil {
			fail(http.StatusBadRequest, err)
			return
		}
		families, err := ToFamilies(wr)
		if err != nil {
			fail(http.StatusBadRequest, err)
			return
		}
		mu.Lock()
		clusters[id] = true
		for _, mf := range families {
			got[mf.GetName()] = mf
		}
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)

	dir := t.TempDir()
	credFile := filepath.Join(dir, "credential")
	cred := base64.StdEncoding.EncodeToString([]byte(`{"authorization_token":"tok","cluster_id":"site-7"}`))
	require.NoError(t, os.WriteFile(credFile, []byte(cred), 0o600))
	self := freeAddr(t)
	config := fmt.Sprintf(`global: {scrape_interval: 1s}
scrape_configs:
  - job_name: self
    static_configs: [{targets: ['%s']}]
remote_write:
  - url: %s/metrics/v1/receive
    authorization:
      credentials_file: %s
    queue_config: {batch_send_deadline: 1s}
`, self, srv.URL, credFile)
	// Prometheus must listen where its own scrape config points.
	startPrometheusAt(t, self, config)

	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return got["up"] != nil && got["prometheus_build_info"] != nil
	}, 60*time.Second, 100*time.Millisecond, "no up and prometheus_build_info received")
	mu.Lock()
	defer mu.Unlock()
	require.Empty(t, failures)
	require.Equal(t, map[string]bool{"site-7": true}, clusters)
	up := got["up"].GetMetric()[0]
	require.Equal(t, 1.0, up.GetUntyped().GetValue())
	require.InDelta(t, time.Now().UnixMilli(), up.GetTimestampMs(), float64(time.Minute.Milliseconds()))
	labels := map[string]string{}
	for _, lp := range up.GetLabel() {
		labels[lp.GetName()] = lp.GetValue()
	}
	require.Equal(t, map[string]string{"instance": self, "job": "self"}, labels)
}

// startPrometheusAt runs Prometheus listening on addr, stopped at cleanup.
func startPrometheusAt(t *testing.T, addr, config string, args ...string) {
	t.Helper()
	bin := prometheusBin(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	require.NoError(t, os.WriteFile(cfg, []byte(config), 0o600))
	logPath := filepath.Join(dir, "prometheus.log")
	logFile, err := os.Create(logPath)
	require.NoError(t, err)
	cmd := exec.Command(bin, append([]string{
		"--config.file=" + cfg,
		"--storage.tsdb.path=" + filepath.Join(dir, "data"),
		"--web.listen-address=" + addr,
	}, args...)...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	require.NoError(t, cmd.Start())
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		_ = logFile.Close()
		close(done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("prometheus log:\n%s", b)
		}
	})
}
