package client

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/telemeter/telemeter/internal/upload"
)

// generate10k builds 10,000 source series with the label sets of a real
// cluster's federation: 40 node-level gauge families of 200 series, 10
// container counter families of 100 series, and 1,000 ALERTS (half firing).
// Keep its shape stable: docs/benchmarks.md compares figures over time.
func generate10k(now time.Time) []*dto.MetricFamily {
	ts := now.UnixMilli()
	pair := func(n, v string) *dto.LabelPair { return &dto.LabelPair{Name: proto.String(n), Value: proto.String(v)} }
	var out []*dto.MetricFamily
	for f := range 40 {
		mf := &dto.MetricFamily{Name: proto.String(fmt.Sprintf("node_metric_%02d", f)), Help: proto.String("A node gauge."), Type: dto.MetricType_GAUGE.Enum()}
		for i := range 200 {
			mf.Metric = append(mf.Metric, &dto.Metric{
				Label: []*dto.LabelPair{
					pair("instance", fmt.Sprintf("10.0.%d.%d:9100", i/250, i%250)),
					pair("job", "node-exporter"),
					pair("namespace", "openshift-monitoring"),
					pair("pod", fmt.Sprintf("node-exporter-%05x", i*7919)),
					pair("prometheus", "openshift-monitoring/k8s"),
					pair("prometheus_replica", "prometheus-k8s-0"),
				},
				Gauge:       &dto.Gauge{Value: proto.Float64(float64(i) * 1.5)},
				TimestampMs: proto.Int64(ts),
			})
		}
		out = append(out, mf)
	}
	for f := range 10 {
		mf := &dto.MetricFamily{Name: proto.String(fmt.Sprintf("container_metric_%02d_total", f)), Help: proto.String("A container counter."), Type: dto.MetricType_COUNTER.Enum()}
		for i := range 100 {
			mf.Metric = append(mf.Metric, &dto.Metric{
				Label: []*dto.LabelPair{
					pair("container", fmt.Sprintf("c%d", i%7)),
					pair("instance", fmt.Sprintf("10.1.0.%d:10250", i)),
					pair("namespace", fmt.Sprintf("ns-%d", i%13)),
					pair("pod", fmt.Sprintf("app-%05x", i*104729)),
				},
				Counter:     &dto.Counter{Value: proto.Float64(float64(i * 1000))},
				TimestampMs: proto.Int64(ts),
			})
		}
		out = append(out, mf)
	}
	alerts := &dto.MetricFamily{Name: proto.String("ALERTS"), Type: dto.MetricType_UNTYPED.Enum()}
	for i := range 1000 {
		state := "pending"
		if i%2 == 0 {
			state = "firing"
		}
		alerts.Metric = append(alerts.Metric, &dto.Metric{
			Label: []*dto.LabelPair{
				pair("alertname", fmt.Sprintf("Alert%03d", i%150)),
				pair("alertstate", state),
				pair("instance", fmt.Sprintf("10.2.%d.%d:8080", i/250, i%250)),
				pair("severity", "warning"),
			},
			Untyped:     &dto.Untyped{Value: proto.Float64(1)},
			TimestampMs: proto.Int64(ts),
		})
	}
	out = append(out, alerts)
	upload.SortFamilies(out)
	return out
}

// BenchmarkCycle10k is workload W6: one full client cycle over 10,000
// source series: scrape /federate (delimited protobuf), decode, drop invalid,
// allowlist (keeps 8,500), rename ALERTS, anonymize instance and pod, elide,
// add labels, add the authorized _id, sort, encode, snappy and push to an
// httptest sink. The sink and the source run in the same process.
func BenchmarkCycle10k(b *testing.B) {
	var body bytes.Buffer
	require.NoError(b, upload.Encode(&body, generate10k(time.Now())))
	p := newSourcePrometheus(b, nil)
	p.encoded = body.Bytes()
	rc := newReceiver(b, "cluster-token")
	rc.discard = true

	c := newCycleClient(b, p.srv.URL, rc.srv.URL)
	require.NoError(b, c.cycle(b.Context())) // authorize, warm connections

	b.ReportAllocs()
	b.ResetTimer()
	cpu0, n := processCPU(), 0
	for b.Loop() {
		if err := c.cycle(b.Context()); err != nil {
			b.Fatal(err)
		}
		n++
	}
	b.StopTimer()
	// CPU of the whole process per cycle: the client, the garbage collector,
	// and the in-process source and sink. Wall time (ns/op) on a shared
	// machine waits for other tenants; this does not.
	b.ReportMetric(float64(processCPU()-cpu0)/float64(n)/1e6, "cpu-ms/op")
	b.ReportMetric(float64(peakRSS())/(1<<20), "process-peak-rss-MiB")
	// The client's own peak RSS: the same cycles in a process of its own,
	// without the source's fixtures and the sink.
	child := exec.CommandContext(b.Context(), os.Args[0], "-test.run=^TestCycleChild$", "-test.count=1")
	child.Env = append(os.Environ(), envCycleChild+"="+p.srv.URL+" "+rc.srv.URL)
	out, err := child.CombinedOutput()
	require.NoError(b, err, "child cycle: %s", out)
	_, hwm, ok := strings.Cut(string(out), "cycles: 3, VmHWM: ")
	require.True(b, ok, "the child ran its cycles: %s", out)
	kib, err := strconv.ParseInt(strings.Fields(hwm)[0], 10, 64)
	require.NoError(b, err, "child output: %s", out)
	b.ReportMetric(float64(kib)/(1<<10), "client-peak-rss-MiB")
	if series := testutil.ToFloat64(c.metrics.samples); series != 8500 {
		b.Fatalf("pushed %v series, want 8500", series)
	}
	rc.mu.Lock()
	b.ReportMetric(float64(rc.bytes), "body-bytes")
	rc.mu.Unlock()
	b.ReportMetric(float64(body.Len()), "source-bytes")
}

// envCycleChild, set to "<source URL> <receiver URL>", makes TestCycleChild
// run three client cycles against them: BenchmarkCycle10k's child process.
const envCycleChild = "TELEMETER_CYCLE_CHILD"

func TestCycleChild(t *testing.T) {
	spec := os.Getenv(envCycleChild)
	if spec == "" {
		t.Skip("runs only as BenchmarkCycle10k's child process")
	}
	from, to, ok := strings.Cut(spec, " ")
	require.True(t, ok, "%s=%q", envCycleChild, spec)
	c := newCycleClient(t, from, to)
	for range 3 {
		require.NoError(t, c.cycle(t.Context()))
	}
	// VmHWM, not getrusage: Linux carries the parent's maximum RSS over
	// fork and exec into the child's ru_maxrss.
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	for line := range strings.Lines(string(status)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			fmt.Printf("cycles: 3, VmHWM: %s\n", strings.TrimSuffix(strings.TrimSpace(v), " kB"))
		}
	}
}

// newCycleClient is W6's client: the allowlist keeps 8,500 of the 10,000
// series, ALERTS renamed, instance and pod anonymized, one label elided and
// one added.
func newCycleClient(tb testing.TB, from, to string) *client {
	o := DefaultOptions()
	o.From, o.To, o.ID, o.ToToken = from, to, "c1", "cluster-token"
	o.Matchers = []string{`{__name__=~"node_.*"}`, `{__name__="ALERTS",alertstate="firing"}`}
	o.AnonymizeLabels = []string{"instance", "pod"}
	o.AnonymizeSalt = "benchmark-salt"
	o.ElideLabels = []string{"prometheus_replica"}
	o.Labels = []string{"region=eu"}
	o.LimitBytes = 64 << 20 // the batch is ~8,500 series; measure, do not drop
	o.Logger = slog.New(slog.DiscardHandler)
	c, err := newClient(&o, o.Logger, prometheus.NewRegistry())
	require.NoError(tb, err)
	return c
}
