package remotewrite

import (
	"bytes"
	"math"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/prometheus/model/value"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/telemeter/telemeter/internal/upload"
)

// text renders families in the text format, timestamps included.
func text(t *testing.T, families []*dto.MetricFamily) string {
	t.Helper()
	var buf bytes.Buffer
	for _, mf := range families {
		_, err := expfmt.MetricFamilyToText(&buf, mf)
		require.NoError(t, err)
	}
	return buf.String()
}

func ls(kv ...string) []Label {
	out := make([]Label, 0, len(kv)/2)
	for i := 0; i < len(kv); i += 2 {
		out = append(out, Label{Name: kv[i], Value: kv[i+1]})
	}
	return out
}

func rs(labels []Label, samples ...Sample) Series {
	return Series{Labels: labels, Samples: samples}
}

func TestToFamilies(t *testing.T) {
	stale := math.Float64frombits(value.StaleNaN)
	for _, tc := range []struct {
		name   string
		series []Series
		want   string
		err    string
	}{
		{
			name: "families by name, newest sample, labels sorted",
			series: []Series{
				rs(ls("__name__", "up", "job", "b"), Sample{1000, 1}),
				rs(ls("job", "a", "__name__", "up"), Sample{1000, 0}, Sample{3000, 1}, Sample{2000, 5}),
				rs(ls("__name__", "cpu_seconds_total", "mode", "idle"), Sample{1000, 12.5}),
			},
			want: `# TYPE cpu_seconds_total untyped
cpu_seconds_total{mode="idle"} 12.5 1000
# TYPE up untyped
up{job="a"} 1 3000
up{job="b"} 1 1000
`,
		},
		{
			name: "a series sent twice keeps its newest sample; later wins a tie",
			series: []Series{
				rs(ls("__name__", "m", "a", "1"), Sample{2000, 2}),
				rs(ls("__name__", "m", "a", "1"), Sample{1000, 1}),
				rs(ls("a", "1", "__name__", "m"), Sample{3000, 3}),
				rs(ls("__name__", "m", "a", "2"), Sample{3000, 3}),
				rs(ls("__name__", "m", "a", "2"), Sample{3000, 4}),
			},
			want: `# TYPE m untyped
m{a="1"} 3 3000
m{a="2"} 4 3000
`,
		},
		{
			name: "empty values dropped, so the series is the same",
			series: []Series{
				rs(ls("__name__", "m", "a", "", "b", "x"), Sample{1000, 1}),
				rs(ls("__name__", "m", "b", "x"), Sample{2000, 2}),
			},
			want: `# TYPE m untyped
m{b="x"} 2 2000
`,
		},
		{
			name:   "series without samples skipped",
			series: []Series{rs(ls("__name__", "m"))},
			want:   ``,
		},
		{
			name:   "staleness marker kept",
			series: []Series{rs(ls("__name__", "m"), Sample{1000, 1}, Sample{2000, stale})},
			want: `# TYPE m untyped
m NaN 2000
`,
		},
		{name: "no metric name", series: []Series{rs(ls("a", "1"), Sample{1, 1})}, err: "without a metric name"},
		{name: "empty metric name", series: []Series{rs(ls("__name__", ""), Sample{1, 1})}, err: "without a metric name"},
		{name: "invalid metric name", series: []Series{rs(ls("__name__", "1m"), Sample{1, 1})}, err: "invalid metric name"},
		{name: "metric name with a dot", series: []Series{rs(ls("__name__", "a.b"), Sample{1, 1})}, err: "invalid metric name"},
		{name: "invalid label name", series: []Series{rs(ls("__name__", "m", "a-b", "1"), Sample{1, 1})}, err: "invalid label name"},
		{name: "reserved label name", series: []Series{rs(ls("__name__", "m", "__tenant", "x"), Sample{1, 1})}, err: "invalid label name"},
		{name: "duplicate label", series: []Series{rs(ls("__name__", "m", "a", "1", "a", "2"), Sample{1, 1})}, err: "duplicate label a"},
		{name: "duplicate name", series: []Series{rs(ls("__name__", "m", "__name__", "n"), Sample{1, 1})}, err: "duplicate label __name__"},
		{name: "invalid UTF-8", series: []Series{rs(ls("__name__", "m", "a", "\xff"), Sample{1, 1})}, err: "UTF-8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ToFamilies(&WriteRequest{Series: tc.series})
			if tc.err != "" {
				require.ErrorIs(t, err, upload.ErrInvalid)
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, text(t, got))
			for _, mf := range got {
				require.NoError(t, upload.CheckFamily(mf, upload.Limits{}), "the store's checks pass")
			}
		})
	}
}

// TestToFamiliesAppendSafe: validation appends labels to a metric; that must
// not overwrite the next metric's labels.
func TestToFamiliesAppendSafe(t *testing.T) {
	got, err := ToFamilies(&WriteRequest{Series: []Series{
		rs(ls("__name__", "m", "a", "1"), Sample{1, 1}),
		rs(ls("__name__", "m", "a", "2"), Sample{1, 1}),
	}})
	require.NoError(t, err)
	first := got[0].Metric[0]
	first.Label = append(first.Label, &dto.LabelPair{Name: proto.String("_id"), Value: proto.String("x")})
	require.Equal(t, "2", got[0].Metric[1].Label[0].GetValue())
	require.Len(t, got[0].Metric[1].Label, 1)
}

func untyped(name string, ts int64, v float64, kv ...string) *dto.MetricFamily {
	m := &dto.Metric{Untyped: &dto.Untyped{Value: proto.Float64(v)}}
	if ts != 0 {
		m.TimestampMs = proto.Int64(ts)
	}
	for i := 0; i < len(kv); i += 2 {
		m.Label = append(m.Label, lp(kv[i], kv[i+1]))
	}
	return family(name, dto.MetricType_UNTYPED, m)
}

func TestMerge(t *testing.T) {
	stale := math.Float64frombits(value.StaleNaN)
	for _, tc := range []struct {
		name             string
		stored, incoming []*dto.MetricFamily
		cutoff           int64
		want             string
	}{
		{
			name:     "new series replace, others stay",
			stored:   []*dto.MetricFamily{untyped("a", 1000, 1, "x", "1"), untyped("b", 1000, 1)},
			incoming: []*dto.MetricFamily{untyped("a", 2000, 2, "x", "1"), untyped("c", 2000, 3)},
			want: `# TYPE a untyped
a{x="1"} 2 2000
# TYPE b untyped
b 1 1000
# TYPE c untyped
c 3 2000
`,
		},
		{
			name: "series of one family merged and sorted",
			stored: []*dto.MetricFamily{family("a", dto.MetricType_UNTYPED,
				&dto.Metric{Label: []*dto.LabelPair{lp("x", "1")}, Untyped: &dto.Untyped{Value: proto.Float64(1)}, TimestampMs: proto.Int64(1000)},
				&dto.Metric{Label: []*dto.LabelPair{lp("x", "3")}, Untyped: &dto.Untyped{Value: proto.Float64(3)}, TimestampMs: proto.Int64(1000)})},
			incoming: []*dto.MetricFamily{untyped("a", 2000, 2, "x", "2")},
			want: `# TYPE a untyped
a{x="1"} 1 1000
a{x="2"} 2 2000
a{x="3"} 3 1000
`,
		},
		{
			name:     "staleness marker removes a series",
			stored:   []*dto.MetricFamily{untyped("a", 1000, 1, "x", "1"), untyped("b", 1000, 1)},
			incoming: []*dto.MetricFamily{untyped("a", 2000, stale, "x", "1"), untyped("c", 2000, stale)},
			want: `# TYPE b untyped
b 1 1000
`,
		},
		{
			name:     "series older than the cutoff dropped, those without timestamp kept",
			stored:   []*dto.MetricFamily{untyped("a", 1000, 1), untyped("b", 5000, 1), untyped("c", 0, 1)},
			incoming: []*dto.MetricFamily{untyped("d", 6000, 1)},
			cutoff:   2000,
			want: `# TYPE b untyped
b 1 5000
# TYPE c untyped
c 1
# TYPE d untyped
d 1 6000
`,
		},
		{
			name: "a family of another type is replaced whole",
			stored: []*dto.MetricFamily{family("a", dto.MetricType_COUNTER,
				&dto.Metric{Label: []*dto.LabelPair{lp("x", "1")}, Counter: &dto.Counter{Value: proto.Float64(1)}})},
			incoming: []*dto.MetricFamily{untyped("a", 2000, 2, "x", "2")},
			want: `# TYPE a untyped
a{x="2"} 2 2000
`,
		},
		{
			name:     "nothing stored",
			incoming: []*dto.MetricFamily{untyped("a", 2000, 2)},
			want: `# TYPE a untyped
a 2 2000
`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := text(t, tc.stored)
			got := Merge(tc.stored, tc.incoming, tc.cutoff)
			require.Equal(t, tc.want, text(t, got))
			require.Equal(t, before, text(t, tc.stored), "stored is not modified")
		})
	}
}

func TestToFamiliesT232(t *testing.T) {
	series := ToTimeSeries(loadT232(t), 1700000000000)
	wr := &WriteRequest{}
	for _, ts := range series {
		s := Series{Samples: []Sample{{ts.Samples[0].Timestamp, ts.Samples[0].Value}}}
		for _, l := range ts.Labels {
			s.Labels = append(s.Labels, Label{l.Name, l.Value})
		}
		wr.Series = append(wr.Series, s)
	}
	got, err := ToFamilies(wr)
	require.NoError(t, err)
	n := 0
	for _, mf := range got {
		n += len(mf.Metric)
		require.Equal(t, dto.MetricType_UNTYPED, mf.GetType())
		require.False(t, strings.HasPrefix(mf.GetName(), "__"))
	}
	require.Equal(t, 232, n)
	// Back to series: the same as what was sent.
	require.ElementsMatch(t, seriesLines(series), seriesLines(ToTimeSeries(got, 1700000000000)))
}
