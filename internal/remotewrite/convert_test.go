package remotewrite

import (
	"bytes"
	"errors"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/textparse"
	"github.com/prometheus/prometheus/prompb"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/telemeter/telemeter/internal/upload"
)

// seriesLines renders series one per line, labels in the order they have:
// {__name__="x", a="1"} 5 @1000.
func seriesLines(series []prompb.TimeSeries) []string {
	out := make([]string, 0, len(series))
	for _, ts := range series {
		var b strings.Builder
		b.WriteByte('{')
		for i, l := range ts.Labels {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(l.Name + "=" + strconv.Quote(l.Value))
		}
		b.WriteByte('}')
		for _, s := range ts.Samples {
			b.WriteString(" " + strconv.FormatFloat(s.Value, 'g', -1, 64) + " @" + strconv.FormatInt(s.Timestamp, 10))
		}
		out = append(out, b.String())
	}
	return out
}

func lp(name, value string) *dto.LabelPair {
	return &dto.LabelPair{Name: proto.String(name), Value: proto.String(value)}
}

func family(name string, t dto.MetricType, metrics ...*dto.Metric) *dto.MetricFamily {
	return &dto.MetricFamily{Name: proto.String(name), Type: t.Enum(), Metric: metrics}
}

func TestToTimeSeries(t *testing.T) {
	const ts = 1700000000123
	id := lp("_id", "c1")
	for _, tc := range []struct {
		name     string
		families []*dto.MetricFamily
		want     []string
		// notScrapable: Prometheus would read a mismatched value as 0;
		// the store never holds one, and ToTimeSeries skips it.
		notScrapable bool
	}{
		{
			name: "counter gauge untyped",
			families: []*dto.MetricFamily{
				family("requests_total", dto.MetricType_COUNTER,
					&dto.Metric{Label: []*dto.LabelPair{id, lp("code", "200")}, Counter: &dto.Counter{Value: proto.Float64(1027)}},
					&dto.Metric{Label: []*dto.LabelPair{id, lp("code", "500")}, Counter: &dto.Counter{Value: proto.Float64(3)}}),
				family("temperature", dto.MetricType_GAUGE,
					&dto.Metric{Label: []*dto.LabelPair{id}, Gauge: &dto.Gauge{Value: proto.Float64(-4.5)}}),
				family("up", dto.MetricType_UNTYPED,
					&dto.Metric{Label: []*dto.LabelPair{id}, Untyped: &dto.Untyped{Value: proto.Float64(1)}}),
			},
			want: []string{
				`{__name__="requests_total", _id="c1", code="200"} 1027 @1700000000123`,
				`{__name__="requests_total", _id="c1", code="500"} 3 @1700000000123`,
				`{__name__="temperature", _id="c1"} -4.5 @1700000000123`,
				`{__name__="up", _id="c1"} 1 @1700000000123`,
			},
		},
		{
			name: "summary",
			families: []*dto.MetricFamily{family("rpc_duration_seconds", dto.MetricType_SUMMARY,
				&dto.Metric{Label: []*dto.LabelPair{id, lp("service", "a")}, Summary: &dto.Summary{
					SampleCount: proto.Uint64(2693),
					SampleSum:   proto.Float64(1.7560473e+07),
					Quantile: []*dto.Quantile{
						{Quantile: proto.Float64(0.01), Value: proto.Float64(3102)},
						{Quantile: proto.Float64(0.5), Value: proto.Float64(4773)},
						{Quantile: proto.Float64(1), Value: proto.Float64(76656)},
					},
				}}),
			},
			want: []string{
				`{__name__="rpc_duration_seconds_count", _id="c1", service="a"} 2693 @1700000000123`,
				`{__name__="rpc_duration_seconds_sum", _id="c1", service="a"} 1.7560473e+07 @1700000000123`,
				`{__name__="rpc_duration_seconds", _id="c1", quantile="0.01", service="a"} 3102 @1700000000123`,
				`{__name__="rpc_duration_seconds", _id="c1", quantile="0.5", service="a"} 4773 @1700000000123`,
				`{__name__="rpc_duration_seconds", _id="c1", quantile="1.0", service="a"} 76656 @1700000000123`,
			},
		},
		{
			name: "histogram without +Inf bucket",
			families: []*dto.MetricFamily{family("http_request_duration_seconds", dto.MetricType_HISTOGRAM,
				&dto.Metric{Label: []*dto.LabelPair{id, lp("handler", "/")}, Histogram: &dto.Histogram{
					SampleCount: proto.Uint64(144320),
					SampleSum:   proto.Float64(53423),
					Bucket: []*dto.Bucket{
						{UpperBound: proto.Float64(0.05), CumulativeCount: proto.Uint64(24054)},
						{UpperBound: proto.Float64(0.1), CumulativeCount: proto.Uint64(33444)},
						{UpperBound: proto.Float64(1), CumulativeCount: proto.Uint64(133988)},
					},
				}}),
			},
			want: []string{
				`{__name__="http_request_duration_seconds_count", _id="c1", handler="/"} 144320 @1700000000123`,
				`{__name__="http_request_duration_seconds_sum", _id="c1", handler="/"} 53423 @1700000000123`,
				`{__name__="http_request_duration_seconds_bucket", _id="c1", handler="/", le="0.05"} 24054 @1700000000123`,
				`{__name__="http_request_duration_seconds_bucket", _id="c1", handler="/", le="0.1"} 33444 @1700000000123`,
				`{__name__="http_request_duration_seconds_bucket", _id="c1", handler="/", le="1.0"} 133988 @1700000000123`,
				`{__name__="http_request_duration_seconds_bucket", _id="c1", handler="/", le="+Inf"} 144320 @1700000000123`,
			},
		},
		{
			name: "histogram with +Inf bucket, float counts",
			families: []*dto.MetricFamily{family("size_bytes", dto.MetricType_HISTOGRAM,
				&dto.Metric{Label: []*dto.LabelPair{id}, Histogram: &dto.Histogram{
					SampleCountFloat: proto.Float64(10.5),
					SampleSum:        proto.Float64(1000),
					Bucket: []*dto.Bucket{
						{UpperBound: proto.Float64(100), CumulativeCountFloat: proto.Float64(2.5)},
						{UpperBound: proto.Float64(math.Inf(+1)), CumulativeCountFloat: proto.Float64(10.5)},
					},
				}}),
			},
			want: []string{
				`{__name__="size_bytes_count", _id="c1"} 10.5 @1700000000123`,
				`{__name__="size_bytes_sum", _id="c1"} 1000 @1700000000123`,
				`{__name__="size_bytes_bucket", _id="c1", le="100.0"} 2.5 @1700000000123`,
				`{__name__="size_bytes_bucket", _id="c1", le="+Inf"} 10.5 @1700000000123`,
			},
		},
		{
			name: "gauge histogram without buckets",
			families: []*dto.MetricFamily{family("queue_items", dto.MetricType_GAUGE_HISTOGRAM,
				&dto.Metric{Label: []*dto.LabelPair{id}, Histogram: &dto.Histogram{
					SampleCount: proto.Uint64(7),
					SampleSum:   proto.Float64(42),
				}}),
			},
			want: []string{
				`{__name__="queue_items_count", _id="c1"} 7 @1700000000123`,
				`{__name__="queue_items_sum", _id="c1"} 42 @1700000000123`,
				`{__name__="queue_items_bucket", _id="c1", le="+Inf"} 7 @1700000000123`,
			},
		},
		{
			name: "labels sorted, empty values left out, uppercase before __name__",
			families: []*dto.MetricFamily{family("m", dto.MetricType_GAUGE,
				&dto.Metric{
					Label: []*dto.LabelPair{lp("zone", "b"), lp("Zebra", "z"), lp("instance", ""), lp("_id", "c1"), lp("a", "1")},
					Gauge: &dto.Gauge{Value: proto.Float64(1)},
				}),
			},
			want: []string{`{Zebra="z", __name__="m", _id="c1", a="1", zone="b"} 1 @1700000000123`},
		},
		{
			name: "special values",
			families: []*dto.MetricFamily{family("m", dto.MetricType_GAUGE,
				&dto.Metric{Label: []*dto.LabelPair{lp("v", "nan")}, Gauge: &dto.Gauge{Value: proto.Float64(math.NaN())}},
				&dto.Metric{Label: []*dto.LabelPair{lp("v", "inf")}, Gauge: &dto.Gauge{Value: proto.Float64(math.Inf(-1))}}),
			},
			want: []string{
				`{__name__="m", v="nan"} NaN @1700000000123`,
				`{__name__="m", v="inf"} -Inf @1700000000123`,
			},
		},
		{
			name: "metrics not matching their type are skipped",
			families: []*dto.MetricFamily{
				family("c", dto.MetricType_COUNTER,
					&dto.Metric{Gauge: &dto.Gauge{Value: proto.Float64(1)}},
					&dto.Metric{Counter: &dto.Counter{Value: proto.Float64(2)}}),
				family("s", dto.MetricType_SUMMARY, &dto.Metric{Untyped: &dto.Untyped{Value: proto.Float64(1)}}),
			},
			want:         []string{`{__name__="c"} 2 @1700000000123`},
			notScrapable: true,
		},
		{
			name:     "nothing",
			families: []*dto.MetricFamily{family("empty", dto.MetricType_GAUGE)},
			want:     []string{},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ToTimeSeries(tc.families, ts)
			require.Equal(t, tc.want, seriesLines(got))
			if !tc.notScrapable {
				requireSameAsPrometheus(t, tc.families, got)
			}
		})
	}
}

// TestToTimeSeriesAppendSafe checks that appending to one series' labels
// cannot overwrite its neighbour's.
func TestToTimeSeriesAppendSafe(t *testing.T) {
	got := ToTimeSeries([]*dto.MetricFamily{family("m", dto.MetricType_GAUGE,
		&dto.Metric{Label: []*dto.LabelPair{lp("a", "1")}, Gauge: &dto.Gauge{Value: proto.Float64(1)}},
		&dto.Metric{Label: []*dto.LabelPair{lp("a", "2")}, Gauge: &dto.Gauge{Value: proto.Float64(2)}})}, 1)
	require.Len(t, got, 2)
	got[0].Labels = append(got[0].Labels, prompb.Label{Name: "x", Value: "y"})
	got[0].Samples = append(got[0].Samples, prompb.Sample{Value: 9})
	require.Equal(t, []string{`{__name__="m", a="2"} 2 @1`}, seriesLines(got[1:]))
}

func TestToTimeSeriesT232(t *testing.T) {
	families := loadT232(t)
	got := ToTimeSeries(families, 42)
	require.Len(t, got, 232)
	requireSameAsPrometheus(t, families, got)
	for _, ts := range got {
		require.True(t, slices.IsSortedFunc(ts.Labels, func(a, b prompb.Label) int { return strings.Compare(a.Name, b.Name) }))
		for _, l := range ts.Labels {
			require.NotEmpty(t, l.Value, "label %s", l.Name)
		}
	}
}

// requireSameAsPrometheus parses families with Prometheus's own protobuf
// scrape parser (native histograms off, as a default scrape) and requires
// the same series and values as got, in any order. Prometheus drops labels
// with an empty value after parsing; so does this check.
func requireSameAsPrometheus(t *testing.T, families []*dto.MetricFamily, got []prompb.TimeSeries) {
	t.Helper()
	var buf bytes.Buffer
	require.NoError(t, upload.Encode(&buf, families))
	p := textparse.NewProtobufParser(buf.Bytes(), true, false, false, false, labels.NewSymbolTable())
	var want []string
	for {
		e, err := p.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		if e != textparse.EntrySeries {
			continue
		}
		_, _, v := p.Series()
		var ls labels.Labels
		p.Labels(&ls)
		b := labels.NewBuilder(ls)
		ls.Range(func(l labels.Label) {
			if l.Value == "" {
				b.Del(l.Name)
			}
		})
		var line strings.Builder
		b.Labels().Range(func(l labels.Label) { line.WriteString(l.Name + "=" + strconv.Quote(l.Value) + " ") })
		want = append(want, line.String()+strconv.FormatFloat(v, 'g', -1, 64))
	}
	have := make([]string, 0, len(got))
	for _, ts := range got {
		var line strings.Builder
		for _, l := range ts.Labels {
			line.WriteString(l.Name + "=" + strconv.Quote(l.Value) + " ")
		}
		have = append(have, line.String()+strconv.FormatFloat(ts.Samples[0].Value, 'g', -1, 64))
	}
	require.ElementsMatch(t, want, have)
}
