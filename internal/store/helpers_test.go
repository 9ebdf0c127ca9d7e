package store

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
)

// t232 parses the reference payload, sorted by family name.
func t232(tb testing.TB) []*dto.MetricFamily {
	tb.Helper()
	f, err := os.Open("testdata/timeseries.txt")
	require.NoError(tb, err)
	defer func() { _ = f.Close() }()
	p := expfmt.NewTextParser(model.LegacyValidation)
	byName, err := p.TextToMetricFamilies(f)
	require.NoError(tb, err)
	out := make([]*dto.MetricFamily, 0, len(byName))
	for _, mf := range byName {
		out = append(out, mf)
	}
	slices.SortFunc(out, func(a, b *dto.MetricFamily) int { return strings.Compare(a.GetName(), b.GetName()) })
	return out
}

// withID returns a deep copy of families with an _id label on every series.
func withID(families []*dto.MetricFamily, id string) []*dto.MetricFamily {
	out := make([]*dto.MetricFamily, len(families))
	for i, mf := range families {
		c := proto.Clone(mf).(*dto.MetricFamily)
		for _, m := range c.Metric {
			m.Label = append(m.Label, &dto.LabelPair{Name: proto.String("_id"), Value: proto.String(id)})
		}
		out[i] = c
	}
	return out
}

// mixed is a small payload with every metric type, HELP present, absent and
// empty, and sample timestamps.
func mixed(ts int64) []*dto.MetricFamily {
	lp := func(kv ...string) []*dto.LabelPair {
		var out []*dto.LabelPair
		for i := 0; i < len(kv); i += 2 {
			out = append(out, &dto.LabelPair{Name: proto.String(kv[i]), Value: proto.String(kv[i+1])})
		}
		return out
	}
	return []*dto.MetricFamily{
		{
			Name: proto.String("requests_total"), Help: proto.String("Requests.\nWith a newline and a \\ backslash."),
			Type: dto.MetricType_COUNTER.Enum(),
			Metric: []*dto.Metric{
				{Label: lp("code", "200"), Counter: &dto.Counter{Value: proto.Float64(42)}, TimestampMs: proto.Int64(ts)},
				{Label: lp("code", "500"), Counter: &dto.Counter{Value: proto.Float64(1)}, TimestampMs: proto.Int64(ts - 1000)},
			},
		},
		{
			Name: proto.String("temperature"), Help: proto.String(""), Type: dto.MetricType_GAUGE.Enum(),
			Metric: []*dto.Metric{{Label: lp("room", `a "quoted" value`), Gauge: &dto.Gauge{Value: proto.Float64(-3.5)}}},
		},
		{
			Name: proto.String("latency_seconds"), Type: dto.MetricType_HISTOGRAM.Enum(),
			Metric: []*dto.Metric{{
				Label: lp("path", "/"),
				Histogram: &dto.Histogram{
					SampleCount: proto.Uint64(10), SampleSum: proto.Float64(2.5),
					Bucket: []*dto.Bucket{
						{UpperBound: proto.Float64(0.1), CumulativeCount: proto.Uint64(3)},
						{UpperBound: proto.Float64(1), CumulativeCount: proto.Uint64(9)},
					},
				},
				TimestampMs: proto.Int64(ts),
			}},
		},
		{
			Name: proto.String("rpc_duration_seconds"), Help: proto.String("RPC latency."), Type: dto.MetricType_SUMMARY.Enum(),
			Metric: []*dto.Metric{{
				Summary: &dto.Summary{
					SampleCount: proto.Uint64(7), SampleSum: proto.Float64(1.25),
					Quantile: []*dto.Quantile{{Quantile: proto.Float64(0.5), Value: proto.Float64(0.1)}, {Quantile: proto.Float64(0.99), Value: proto.Float64(0.9)}},
				},
			}},
		},
		{
			Name: proto.String("build_info"), Type: dto.MetricType_UNTYPED.Enum(),
			Metric: []*dto.Metric{{Label: lp("version", "1.0"), Untyped: &dto.Untyped{Value: proto.Float64(1)}}},
		},
	}
}

func sorted(families []*dto.MetricFamily) []*dto.MetricFamily {
	out := slices.Clone(families)
	slices.SortFunc(out, func(a, b *dto.MetricFamily) int { return strings.Compare(a.GetName(), b.GetName()) })
	return out
}

func requireFamiliesEqual(tb testing.TB, want, got []*dto.MetricFamily) {
	tb.Helper()
	require.Len(tb, got, len(want))
	for i := range want {
		require.Truef(tb, proto.Equal(want[i], got[i]), "family %d differs:\nwant %v\ngot  %v", i, want[i], got[i])
	}
}

func openStore(tb testing.TB, dir string, o Options) (*Store, *prometheus.Registry) {
	tb.Helper()
	reg := prometheus.NewRegistry()
	o.NoSync = o.NoSync || testing.Short()
	s, err := Open(dir, o, nil, reg)
	require.NoError(tb, err)
	return s, reg
}

// fixedClock is an injected clock a test moves by hand.
type fixedClock struct{ t time.Time }

func (c *fixedClock) now() time.Time { return c.t }

func clusterName(i int) string { return fmt.Sprintf("cluster-%04d", i) }
