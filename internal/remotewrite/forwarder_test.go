package remotewrite

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/s2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/prometheus/prompb"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/telemeter/telemeter/internal/store"
	"github.com/telemeter/telemeter/internal/upload"
)

const waitFor = 10 * time.Second // bound of every wait below

// target is a remote-write receiver that records what it is sent and
// answers what respond says.
type target struct {
	t       *testing.T
	srv     *httptest.Server
	mu      sync.Mutex
	reqs    []request
	respond func(n int, tenant string) (status int, header http.Header)
}

type request struct {
	at     time.Time
	header http.Header
	series []prompb.TimeSeries
	bytes  int // decoded protobuf size
	status int
}

func newTarget(t *testing.T, respond func(n int, tenant string) (int, http.Header)) *target {
	tg := &target{t: t, respond: respond}
	tg.srv = httptest.NewServer(http.HandlerFunc(tg.serve))
	t.Cleanup(tg.srv.Close)
	return tg
}

func (tg *target) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	raw, err := s2.Decode(nil, body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	// The reference decoder: the generated gogo code receivers use.
	var wr prompb.WriteRequest
	if err := wr.Unmarshal(raw); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	tg.mu.Lock()
	n := len(tg.reqs)
	status, header := http.StatusNoContent, http.Header(nil)
	if tg.respond != nil {
		status, header = tg.respond(n, r.Header.Get(DefaultTenantHeader))
	}
	tg.reqs = append(tg.reqs, request{at: time.Now(), header: r.Header.Clone(), series: wr.Timeseries, bytes: len(raw), status: status})
	tg.mu.Unlock()
	for k, v := range header {
		w.Header()[k] = v
	}
	w.WriteHeader(status)
	_, _ = fmt.Fprintln(w, "answer", status)
}

func (tg *target) requests() []request {
	tg.mu.Lock()
	defer tg.mu.Unlock()
	return append([]request(nil), tg.reqs...)
}

// accepted returns, per tenant, the requests answered with a 2xx.
func (tg *target) accepted() map[string][]request {
	out := map[string][]request{}
	for _, r := range tg.requests() {
		if r.status < 300 {
			id := r.header.Get(DefaultTenantHeader)
			out[id] = append(out[id], r)
		}
	}
	return out
}

func gaugeFamily(value float64) []*dto.MetricFamily {
	return []*dto.MetricFamily{family("m", dto.MetricType_GAUGE,
		&dto.Metric{Label: []*dto.LabelPair{lp("a", "1")}, Gauge: &dto.Gauge{Value: proto.Float64(value)}})}
}

type fwdHarness struct {
	f      *Forwarder
	reg    *prometheus.Registry
	src    *fakeSource
	cancel context.CancelFunc
	done   chan error
	mu     sync.Mutex
	delays []time.Duration
}

func startForwarder(t *testing.T, o ForwarderOptions, src *fakeSource) *fwdHarness {
	t.Helper()
	if o.MinBackoff == 0 {
		o.MinBackoff = 5 * time.Millisecond
	}
	if o.MaxBackoff == 0 {
		o.MaxBackoff = 40 * time.Millisecond
	}
	h := &fwdHarness{reg: prometheus.NewRegistry(), src: src, done: make(chan error, 1)}
	f, err := NewForwarder(o, src, slog.New(slog.DiscardHandler), h.reg)
	require.NoError(t, err)
	f.onRetry = func(_ string, d time.Duration) {
		h.mu.Lock()
		h.delays = append(h.delays, d)
		h.mu.Unlock()
	}
	h.f = f
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- f.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-h.done:
			require.NoError(t, err)
		case <-time.After(waitFor):
			t.Error("Run did not return after cancel")
		}
	})
	return h
}

func (h *fwdHarness) retryDelays() []time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]time.Duration(nil), h.delays...)
}

func (h *fwdHarness) waitIdle(t *testing.T) {
	t.Helper()
	require.Eventually(t, func() bool { return h.f.Pending() == 0 }, waitFor, time.Millisecond, "dirty clusters left: %d", h.f.Pending())
}

func TestForwarderRequest(t *testing.T) {
	tg := newTarget(t, nil)
	src := newFakeSource()
	received := time.UnixMilli(1700000000123)
	families := loadT232(t)
	src.put("cluster-a", received, families)
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	require.NoError(t, os.WriteFile(tokenFile, []byte("s3cret\n"), 0o600))

	h := startForwarder(t, ForwarderOptions{URL: tg.srv.URL + "/api/v1/receive", BearerTokenFile: tokenFile}, src)
	h.f.Notify("cluster-a", received)
	h.waitIdle(t)

	reqs := tg.requests()
	require.Len(t, reqs, 1)
	hdr := reqs[0].header
	require.Equal(t, "snappy", hdr.Get("Content-Encoding"))
	require.Equal(t, "application/x-protobuf", hdr.Get("Content-Type"))
	require.Equal(t, "0.1.0", hdr.Get("X-Prometheus-Remote-Write-Version"))
	require.Equal(t, "telemeter-server", hdr.Get("User-Agent"))
	require.Equal(t, "cluster-a", hdr.Get("THANOS-TENANT"))
	require.Equal(t, "Bearer s3cret", hdr.Get("Authorization"))
	require.Equal(t, seriesLines(ToTimeSeries(families, received.UnixMilli())), seriesLines(reqs[0].series))
	for _, ts := range reqs[0].series {
		require.Equal(t, []prompb.Sample{{Value: ts.Samples[0].Value, Timestamp: 1700000000123}}, ts.Samples)
	}

	require.Equal(t, 1.0, testutil.ToFloat64(h.f.metrics.requests.WithLabelValues(resultSuccess)))
	require.Equal(t, 232.0, testutil.ToFloat64(h.f.metrics.samples))
	require.Equal(t, 1.0, testutil.ToFloat64(h.f.metrics.snapshots.WithLabelValues(snapshotSent)))
	require.Positive(t, testutil.ToFloat64(h.f.metrics.lastSuccess))
	n, err := testutil.GatherAndCount(h.reg,
		"telemeter_server_remote_write_requests_total",
		"telemeter_server_remote_write_samples_total",
		"telemeter_server_remote_write_failures_total",
		"telemeter_server_remote_write_lag_seconds",
		"telemeter_server_remote_write_pending_clusters",
		"telemeter_server_remote_write_last_success_timestamp_seconds")
	require.NoError(t, err)
	require.Equal(t, 3+1+5+1+1+1, n)
}

func TestForwarderTenantHeaderAndBasicAuth(t *testing.T) {
	var got http.Header
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = r.Header.Clone()
		mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	pw := filepath.Join(t.TempDir(), "pw")
	require.NoError(t, os.WriteFile(pw, []byte("p@ss\n"), 0o600))
	src := newFakeSource()
	src.put("c1", time.Unix(100, 0), gaugeFamily(1))
	h := startForwarder(t, ForwarderOptions{URL: srv.URL, TenantHeader: "X-Scope-OrgID", BasicUser: "u", BasicPasswordFile: pw}, src)
	h.f.Notify("c1", time.Unix(100, 0))
	h.waitIdle(t)
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, "c1", got.Get("X-Scope-OrgID"))
	require.Empty(t, got.Get("THANOS-TENANT"))
	r := &http.Request{Header: got}
	user, pass, ok := r.BasicAuth()
	require.True(t, ok)
	require.Equal(t, "u", user)
	require.Equal(t, "p@ss", pass)
}

func TestForwarderRetries(t *testing.T) {
	h429 := http.Header{"Retry-After": []string{"0"}}
	for _, tc := range []struct {
		name      string
		statuses  []int // answers in order; then 204
		header    http.Header
		requests  int
		retries   int
		delivered bool
		reason    string
	}{
		{name: "500 then success", statuses: []int{500}, requests: 2, retries: 1, delivered: true, reason: reasonServerError},
		{name: "503 twice then success", statuses: []int{503, 503}, requests: 3, retries: 2, delivered: true, reason: reasonServerError},
		{name: "502 then success", statuses: []int{502}, requests: 2, retries: 1, delivered: true, reason: reasonServerError},
		{name: "429 then success", statuses: []int{429}, header: h429, requests: 2, retries: 1, delivered: true, reason: reasonRateLimited},
		{name: "400 is dropped", statuses: []int{400}, requests: 1, reason: reasonRejected},
		{name: "413 is dropped", statuses: []int{413}, requests: 1, reason: reasonRejected},
		{name: "401 is dropped", statuses: []int{401}, requests: 1, reason: reasonRejected},
		{name: "409 is dropped", statuses: []int{409}, requests: 1, reason: reasonRejected},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tg := newTarget(t, func(n int, _ string) (int, http.Header) {
				if n < len(tc.statuses) {
					return tc.statuses[n], tc.header
				}
				return http.StatusNoContent, nil
			})
			src := newFakeSource()
			src.put("c1", time.Unix(100, 0), gaugeFamily(1))
			h := startForwarder(t, ForwarderOptions{URL: tg.srv.URL}, src)
			h.f.Notify("c1", time.Unix(100, 0))
			h.waitIdle(t)

			require.Len(t, tg.requests(), tc.requests)
			require.Len(t, h.retryDelays(), tc.retries)
			require.Equal(t, tc.delivered, len(tg.accepted()["c1"]) == 1)
			require.Equal(t, float64(len(tc.statuses)), testutil.ToFloat64(h.f.metrics.failures.WithLabelValues(tc.reason)))
			if tc.delivered {
				require.Equal(t, float64(tc.retries), testutil.ToFloat64(h.f.metrics.requests.WithLabelValues(resultRetry)))
				require.Equal(t, 1.0, testutil.ToFloat64(h.f.metrics.snapshots.WithLabelValues(snapshotSent)))
			} else {
				require.Equal(t, 1.0, testutil.ToFloat64(h.f.metrics.requests.WithLabelValues(resultDropped)))
				require.Equal(t, 1.0, testutil.ToFloat64(h.f.metrics.snapshots.WithLabelValues(snapshotDropped)))
			}
			// Backoff doubles from MinBackoff.
			for i, d := range h.retryDelays() {
				require.Equal(t, 5*time.Millisecond<<i, d)
			}
		})
	}
}

func TestForwarderHonoursRetryAfter(t *testing.T) {
	tg := newTarget(t, func(n int, _ string) (int, http.Header) {
		if n == 0 {
			return http.StatusTooManyRequests, http.Header{"Retry-After": []string{"1"}}
		}
		return http.StatusOK, nil
	})
	src := newFakeSource()
	src.put("c1", time.Unix(100, 0), gaugeFamily(1))
	h := startForwarder(t, ForwarderOptions{URL: tg.srv.URL}, src)
	h.f.Notify("c1", time.Unix(100, 0))
	h.waitIdle(t)

	reqs := tg.requests()
	require.Len(t, reqs, 2)
	require.Equal(t, []time.Duration{time.Second}, h.retryDelays())
	require.GreaterOrEqual(t, reqs[1].at.Sub(reqs[0].at), time.Second)
}

// TestForwarderCatchUp takes the target down while clusters upload, then
// brings it back: every cluster's latest snapshot arrives, and while it was
// down the forwarder probed it instead of trying every cluster.
func TestForwarderCatchUp(t *testing.T) {
	var (
		mu   sync.Mutex
		down = true
	)
	tg := newTarget(t, func(int, string) (int, http.Header) {
		mu.Lock()
		defer mu.Unlock()
		if down {
			return http.StatusServiceUnavailable, nil
		}
		return http.StatusNoContent, nil
	})
	src := newFakeSource()
	clock := time.Unix(10000, 0)
	var clockMu sync.Mutex
	now := func() time.Time {
		clockMu.Lock()
		defer clockMu.Unlock()
		return clock
	}
	const clusters = 60
	h := startForwarder(t, ForwarderOptions{URL: tg.srv.URL, Now: now, MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond}, src)
	first := time.Unix(9990, 0)
	for i := range clusters {
		id := fmt.Sprintf("cluster-%d", i)
		src.put(id, first, gaugeFamily(1))
		h.f.Notify(id, first)
	}
	require.Eventually(t, func() bool { return len(tg.requests()) >= 3 }, waitFor, time.Millisecond)
	require.Equal(t, clusters, h.f.Pending())
	require.Equal(t, 10*time.Second, h.f.Lag())
	require.Equal(t, 10.0, gauge(t, h.reg, "telemeter_server_remote_write_lag_seconds"))
	require.Equal(t, float64(clusters), gauge(t, h.reg, "telemeter_server_remote_write_pending_clusters"))

	// Half the clusters upload again while the target is down.
	second := time.Unix(9995, 0)
	for i := 0; i < clusters; i += 2 {
		id := fmt.Sprintf("cluster-%d", i)
		src.put(id, second, gaugeFamily(2))
		h.f.Notify(id, second)
	}
	require.Equal(t, clusters, h.f.Pending())
	require.Equal(t, 10*time.Second, h.f.Lag(), "lag counts from the oldest snapshot not sent")

	mu.Lock()
	down = false
	mu.Unlock()
	failed := len(tg.requests())
	require.Less(t, failed, clusters/2, "a down target is probed, not sent every cluster")

	h.waitIdle(t)
	require.Zero(t, h.f.Lag())
	require.Zero(t, gauge(t, h.reg, "telemeter_server_remote_write_lag_seconds"))
	accepted := tg.accepted()
	require.Len(t, accepted, clusters)
	for i := range clusters {
		id := fmt.Sprintf("cluster-%d", i)
		reqs := accepted[id]
		want := `{__name__="m", a="1"} 1 @9990000`
		if i%2 == 0 {
			want = `{__name__="m", a="1"} 2 @9995000`
			// The first snapshot may have been in flight when the
			// target came back: then both arrive, the newer last.
			require.LessOrEqual(t, len(reqs), 2, id)
		} else {
			require.Len(t, reqs, 1, id)
		}
		require.Equal(t, []string{want}, seriesLines(reqs[len(reqs)-1].series), id)
	}
}

// gauge returns the value of the gauge name as reg exposes it.
func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == name {
			require.Len(t, mf.GetMetric(), 1)
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// TestForwarderCoalesces notifies one cluster 100 times while the target is
// down: once it is back, the cluster's latest snapshot is sent once.
func TestForwarderCoalesces(t *testing.T) {
	var (
		mu   sync.Mutex
		down = true
	)
	tg := newTarget(t, func(int, string) (int, http.Header) {
		mu.Lock()
		defer mu.Unlock()
		if down {
			return http.StatusInternalServerError, nil
		}
		return http.StatusNoContent, nil
	})
	src := newFakeSource()
	h := startForwarder(t, ForwarderOptions{URL: tg.srv.URL, MinBackoff: 300 * time.Millisecond, MaxBackoff: time.Second}, src)
	src.put("c1", time.UnixMilli(1000), gaugeFamily(0))
	h.f.Notify("c1", time.UnixMilli(1000))
	require.Eventually(t, func() bool { return len(h.retryDelays()) == 1 }, waitFor, time.Millisecond)
	for i := 1; i <= 100; i++ {
		received := time.UnixMilli(1000 + int64(i))
		src.put("c1", received, gaugeFamily(float64(i)))
		h.f.Notify("c1", received)
	}
	mu.Lock()
	down = false
	mu.Unlock()
	h.waitIdle(t)

	reqs := tg.requests()
	require.Len(t, reqs, 2, "one failure, then one send of the latest")
	require.Equal(t, []string{`{__name__="m", a="1"} 100 @1100`}, seriesLines(reqs[1].series))
	require.Equal(t, 2, src.readsOf("c1"))
}

// TestForwarderNotifyWhileSending stores a newer snapshot while the older
// one is in flight: both are sent, the newer last.
func TestForwarderNotifyWhileSending(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	var once sync.Once
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		once.Do(func() {
			entered <- struct{}{}
			<-release
		})
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	src := newFakeSource()
	src.put("c1", time.UnixMilli(1), gaugeFamily(1))
	h := startForwarder(t, ForwarderOptions{URL: srv.URL}, src)
	h.f.Notify("c1", time.UnixMilli(1))
	select {
	case <-entered:
	case <-time.After(waitFor):
		t.Fatal("no request")
	}
	src.put("c1", time.UnixMilli(2), gaugeFamily(2))
	h.f.Notify("c1", time.UnixMilli(2))
	close(release)
	h.waitIdle(t)
	require.Equal(t, 2, src.readsOf("c1"))
	require.Equal(t, 2.0, testutil.ToFloat64(h.f.metrics.snapshots.WithLabelValues(snapshotSent)))
}

func TestForwarderSplitsLargeSnapshots(t *testing.T) {
	tg := newTarget(t, nil)
	src := newFakeSource()
	families := loadT232(t)
	src.put("c1", time.Unix(100, 0), families)
	const limit = 4 << 10
	h := startForwarder(t, ForwarderOptions{URL: tg.srv.URL, MaxRequestBytes: limit}, src)
	h.f.Notify("c1", time.Unix(100, 0))
	h.waitIdle(t)

	reqs := tg.requests()
	require.Greater(t, len(reqs), 5)
	var got []prompb.TimeSeries
	for _, r := range reqs {
		require.LessOrEqual(t, r.bytes, limit)
		require.Equal(t, "c1", r.header.Get(DefaultTenantHeader))
		got = append(got, r.series...)
	}
	require.Equal(t, seriesLines(ToTimeSeries(families, 100000)), seriesLines(got))
}

func TestSplitNeverSplitsASeries(t *testing.T) {
	series := ToTimeSeries(loadT232(t), 1)
	big := series[0].Size()
	ends := split(series, 1) // below every series: one request each
	require.Len(t, ends, len(series))
	require.Equal(t, len(series), ends[len(ends)-1])
	ends = split(series, 1<<30)
	require.Equal(t, []int{len(series)}, ends)
	require.Nil(t, split(nil, 10))
	require.Positive(t, big)
}

func TestForwarderSourceErrors(t *testing.T) {
	tg := newTarget(t, nil)
	src := newFakeSource()
	h := startForwarder(t, ForwarderOptions{URL: tg.srv.URL}, src)

	// No snapshot any more: nothing to send.
	h.f.Notify("gone", time.Unix(1, 0))
	h.waitIdle(t)
	require.Empty(t, tg.requests())

	// A store that cannot read for a while: retried, then sent.
	src.mu.Lock()
	src.err = fmt.Errorf("read snapshot: disk: %w", upload.ErrUnavailable)
	src.mu.Unlock()
	src.put("c1", time.Unix(2, 0), gaugeFamily(1))
	h.f.Notify("c1", time.Unix(2, 0))
	require.Eventually(t, func() bool { return src.readsOf("c1") >= 2 }, waitFor, time.Millisecond)
	src.mu.Lock()
	src.err = nil
	src.mu.Unlock()
	h.waitIdle(t)
	require.Len(t, tg.accepted()["c1"], 1)
	require.GreaterOrEqual(t, testutil.ToFloat64(h.f.metrics.failures.WithLabelValues(reasonStore)), 2.0)

	// A cluster ID that cannot be a header value is dropped unsent.
	src.put("bad\nid", time.Unix(3, 0), gaugeFamily(1))
	h.f.Notify("bad\nid", time.Unix(3, 0))
	h.waitIdle(t)
	require.Len(t, tg.requests(), 1)
	require.Equal(t, 1.0, testutil.ToFloat64(h.f.metrics.snapshots.WithLabelValues(snapshotDropped)))
}

func TestForwarderTransportFailure(t *testing.T) {
	// A listener that is closed: every dial fails.
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	src := newFakeSource()
	src.put("c1", time.Unix(1, 0), gaugeFamily(1))
	h := startForwarder(t, ForwarderOptions{URL: url, Timeout: time.Second}, src)
	h.f.Notify("c1", time.Unix(1, 0))
	require.Eventually(t, func() bool { return len(h.retryDelays()) >= 3 }, waitFor, time.Millisecond)
	require.Equal(t, 1, h.f.Pending())
	require.GreaterOrEqual(t, testutil.ToFloat64(h.f.metrics.failures.WithLabelValues(reasonTransport)), 3.0)
}

func TestForwarderNotifyAll(t *testing.T) {
	tg := newTarget(t, nil)
	src := newFakeSource()
	var metas []store.Meta
	for i := range 5 {
		id := fmt.Sprintf("c%d", i)
		src.put(id, time.Unix(int64(i), 0), gaugeFamily(1))
		metas = append(metas, store.Meta{ClusterID: id, Received: time.Unix(int64(i), 0)})
	}
	h := startForwarder(t, ForwarderOptions{URL: tg.srv.URL, Workers: 2}, src)
	h.f.NotifyAll(metas)
	h.waitIdle(t)
	require.Len(t, tg.accepted(), 5)
}

func TestForwarderRunOnce(t *testing.T) {
	tg := newTarget(t, nil)
	h := startForwarder(t, ForwarderOptions{URL: tg.srv.URL}, newFakeSource())
	require.Eventually(t, func() bool { return h.f.running.Load() }, waitFor, time.Millisecond)
	require.Error(t, h.f.Run(context.Background()))
}

func TestNewForwarderOptions(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	require.NoError(t, os.WriteFile(file, []byte("x"), 0o600))
	notPEM := filepath.Join(dir, "ca")
	require.NoError(t, os.WriteFile(notPEM, []byte("not a certificate"), 0o600))
	for _, tc := range []struct {
		name string
		o    ForwarderOptions
		ok   bool
	}{
		{name: "minimal", o: ForwarderOptions{URL: "http://127.0.0.1:1/api/v1/write"}, ok: true},
		{name: "no URL", o: ForwarderOptions{}},
		{name: "relative URL", o: ForwarderOptions{URL: "/api/v1/write"}},
		{name: "other scheme", o: ForwarderOptions{URL: "ftp://host/x"}},
		{name: "bad tenant header", o: ForwarderOptions{URL: "http://h/x", TenantHeader: "Bad Header"}},
		{name: "bearer and basic", o: ForwarderOptions{URL: "http://h/x", BearerTokenFile: file, BasicUser: "u", BasicPasswordFile: file}},
		{name: "basic without password", o: ForwarderOptions{URL: "http://h/x", BasicUser: "u"}},
		{name: "missing token file", o: ForwarderOptions{URL: "http://h/x", BearerTokenFile: filepath.Join(dir, "nope")}},
		{name: "CA file without certificates", o: ForwarderOptions{URL: "https://h/x", CAFile: notPEM}},
		{name: "Mimir tenant header", o: ForwarderOptions{URL: "https://h/x", TenantHeader: "X-Scope-OrgID", BearerTokenFile: file}, ok: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := NewForwarder(tc.o, newFakeSource(), slog.New(slog.DiscardHandler), prometheus.NewRegistry())
			if tc.ok {
				require.NoError(t, err)
				require.NotNil(t, f)
				return
			}
			require.Error(t, err)
		})
	}
}

func TestFIFO(t *testing.T) {
	var q fifo
	var all []*pending
	for i := range 5000 {
		p := &pending{id: fmt.Sprint(i)}
		all = append(all, p)
		q.push(p)
	}
	for i := range 2500 {
		require.Same(t, all[i], q.pop())
	}
	q.push(&pending{id: "last"})
	for i := 2500; i < 5000; i++ {
		require.Same(t, all[i], q.pop())
	}
	require.Equal(t, "last", q.pop().id)
	require.Zero(t, q.len())
	require.Less(t, cap(q.items), 10000)
}
