package transform

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/require"
)

// genFamilies builds n series shaped like a Kubernetes cluster's federated
// metrics: 40 families of n/40 series (counters and gauges, and an ALERTS
// family), each series with nine labels in the order /federate writes them
// for an operator's recording rules (not sorted), timestamps 15 s before
// now. Keep the shape stable so benchmark figures stay comparable.
func genFamilies(n int, now time.Time) []*dto.MetricFamily {
	const nFamilies = 40
	perFamily := n / nFamilies
	ts := now.Add(-15 * time.Second).UnixMilli()
	jobs := [...]string{"kubelet", "node-exporter", "kube-state-metrics", "apiserver", "etcd"}
	families := make([]*dto.MetricFamily, 0, nFamilies)
	for f := range nFamilies {
		name := fmt.Sprintf("kube_workload_metric_%02d_total", f)
		typ := dto.MetricType_COUNTER
		switch {
		case f == 0:
			name, typ = "ALERTS", dto.MetricType_UNTYPED
		case f%2 == 0:
			name, typ = fmt.Sprintf("container_resource_%02d_bytes", f), dto.MetricType_GAUGE
		}
		mf := &dto.MetricFamily{Name: &name, Type: &typ, Metric: make([]*dto.Metric, 0, perFamily)}
		for s := range perFamily {
			i := f*perFamily + s
			v := float64(i)
			m := &dto.Metric{
				Label: pairs(
					"namespace", fmt.Sprintf("ns-%02d", i%20),
					"pod", fmt.Sprintf("workload-%d-%05x", i%97, i),
					"container", fmt.Sprintf("c%d", i%3),
					"instance", fmt.Sprintf("10.0.%d.%d:9100", i%5, i%50),
					"job", jobs[i%len(jobs)],
					"endpoint", "https-metrics",
					"service", "kubelet",
					"prometheus", "openshift-monitoring/k8s",
					"prometheus_replica", "prometheus-k8s-0",
				),
				TimestampMs: &ts,
			}
			switch typ {
			case dto.MetricType_COUNTER:
				m.Counter = &dto.Counter{Value: &v}
			case dto.MetricType_GAUGE:
				m.Gauge = &dto.Gauge{Value: &v}
			default:
				m.Untyped = &dto.Untyped{Value: &v}
			}
			mf.Metric = append(mf.Metric, m)
		}
		families = append(families, mf)
	}
	return families
}

// benchSelectors keep about three quarters of genFamilies' series.
func benchSelectors(t testing.TB) [][]*labels.Matcher {
	return mustSelectors(t,
		`{__name__="alerts"}`,
		`{__name__=~"kube_workload_metric_.+"}`,
		`{__name__=~"container_resource_.+",namespace=~"ns-0.*|ns-1[0-4]"}`,
	)
}

// BenchmarkChain10k measures one client cycle's transforms over 10,000
// series. Every iteration needs fresh input, since the chain rewrites it; the
// input is built, and its garbage collected, with the timer stopped.
func BenchmarkChain10k(b *testing.B) {
	now := time.UnixMilli(1_700_000_000_000)
	benchmarkTransformer(b, clientChain(func() time.Time { return now }, benchSelectors(b)), now)
}

// BenchmarkStep10k measures each step of the chain alone, to see where a
// cycle's time goes.
func BenchmarkStep10k(b *testing.B) {
	now := time.UnixMilli(1_700_000_000_000)
	for _, step := range []struct {
		name string
		t    Transformer
	}{
		{"drop_invalid", DropInvalid(func() time.Time { return now }, time.Hour)},
		{"rename", Rename(map[string]string{"ALERTS": "alerts"})},
		{"add_labels", AddLabels(map[string]string{"region": "eu-west-1"})},
		{"anonymize_legacy", Anonymize("salt", []string{"instance"}, AnonymizeLegacy)},
		{"anonymize_hmac", Anonymize("salt", []string{"instance"}, AnonymizeHMAC)},
		{"elide", Elide("prometheus_replica")},
		{"allowlist", Allowlist(benchSelectors(b))},
		{"require_labels", RequireLabels(map[string]string{"_id": "f0c5e2b7-9a1d-4c3e-8b6f-2d4a5c6e7f80"})},
		{"sort", Sort()},
	} {
		b.Run(step.name, func(b *testing.B) { benchmarkTransformer(b, Chain{step.t}, now) })
	}
}

func benchmarkTransformer(b *testing.B, chain Chain, now time.Time) {
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		families := genFamilies(10_000, now)
		runtime.GC()
		b.StartTimer()
		if _, err := chain.Apply(families); err != nil {
			b.Fatal(err)
		}
	}
}

// TestChainAllocations keeps the per-cycle allocations of the client chain
// bounded by the number of families, not of series: at 10,000 series a few
// allocations per series would show up at once.
func TestChainAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector changes allocation counts")
	}
	now := time.UnixMilli(1_700_000_000_000)
	clock := func() time.Time { return now }
	chain := clientChain(clock, benchSelectors(t))
	_, _ = chain.Apply(genFamilies(10_000, now)) // warm the hasher pool

	families := genFamilies(10_000, now)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	out, err := chain.Apply(families)
	runtime.ReadMemStats(&after)
	require.NoError(t, err)

	series := 0
	for _, mf := range out {
		series += len(mf.Metric)
	}
	require.Greater(t, series, 5000, "the benchmark shape must keep most series")
	allocs := after.Mallocs - before.Mallocs
	t.Logf("%d allocations for %d families, %d series kept", allocs, len(out), series)
	require.LessOrEqual(t, allocs, uint64(10*40), "allocations per cycle should grow with families, not series")
}
