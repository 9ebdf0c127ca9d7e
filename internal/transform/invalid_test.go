package transform

import (
	"fmt"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
)

func TestDropInvalid(t *testing.T) {
	now := time.UnixMilli(1_700_000_000_000)
	clock := func() time.Time { return now }
	cutoff := now.Add(-time.Hour).UnixMilli()
	v := 1.0

	for _, tc := range []struct {
		name     string
		maxAge   time.Duration
		mf       *dto.MetricFamily
		wantDrop bool  // the whole family
		wantKept []int // indexes of mf.Metric left in place
	}{
		{
			name:     "values of the family type are kept",
			mf:       family("c", dto.MetricType_COUNTER, counterMetric(1), counterMetric(2, "a", "b")),
			wantKept: []int{0, 1},
		},
		{
			name:     "gauge value in a counter family",
			mf:       family("c", dto.MetricType_COUNTER, gaugeMetric(1), counterMetric(2)),
			wantKept: []int{1},
		},
		{
			name:     "two values in one metric",
			mf:       family("c", dto.MetricType_COUNTER, &dto.Metric{Counter: &dto.Counter{Value: &v}, Gauge: &dto.Gauge{Value: &v}}),
			wantKept: []int{},
		},
		{
			name:     "no value at all",
			mf:       family("g", dto.MetricType_GAUGE, &dto.Metric{}, gaugeMetric(1)),
			wantKept: []int{1},
		},
		{
			name: "histogram family: histogram kept, summary dropped",
			mf: family("h", dto.MetricType_HISTOGRAM,
				&dto.Metric{Histogram: &dto.Histogram{}}, &dto.Metric{Summary: &dto.Summary{}}),
			wantKept: []int{0},
		},
		{
			name:     "gauge histogram carries a histogram",
			mf:       family("h", dto.MetricType_GAUGE_HISTOGRAM, &dto.Metric{Histogram: &dto.Histogram{}}, gaugeMetric(1)),
			wantKept: []int{0},
		},
		{
			name:     "summary and untyped",
			mf:       family("s", dto.MetricType_SUMMARY, &dto.Metric{Summary: &dto.Summary{}}, &dto.Metric{Untyped: &dto.Untyped{Value: &v}}),
			wantKept: []int{0},
		},
		{
			name:     "untyped family",
			mf:       family("u", dto.MetricType_UNTYPED, &dto.Metric{Untyped: &dto.Untyped{Value: &v}}, gaugeMetric(1)),
			wantKept: []int{0},
		},
		{
			name:     "unknown type matches nothing",
			mf:       family("x", dto.MetricType(42), gaugeMetric(1), counterMetric(1)),
			wantKept: []int{},
		},
		{
			name:   "age check: the cutoff itself is kept, a millisecond before is not",
			maxAge: time.Hour,
			mf: family("g", dto.MetricType_GAUGE,
				withTimestamp(gaugeMetric(1), cutoff),
				withTimestamp(gaugeMetric(2), cutoff-1),
				withTimestamp(gaugeMetric(3), now.UnixMilli()+time.Hour.Milliseconds()),
				gaugeMetric(4)),
			wantKept: []int{0, 2, 3},
		},
		{
			name:     "without an age check old samples stay",
			mf:       family("g", dto.MetricType_GAUGE, withTimestamp(gaugeMetric(1), 1)),
			wantKept: []int{0},
		},
		{
			name:     "explicit zero and negative timestamps go, even without an age check",
			mf:       family("g", dto.MetricType_GAUGE, withTimestamp(gaugeMetric(1), 0), withTimestamp(gaugeMetric(2), -1), gaugeMetric(3)),
			wantKept: []int{2},
		},
		{
			name: "labels the server would refuse",
			mf: family("g", dto.MetricType_GAUGE,
				gaugeMetric(1, "ok", "x"),
				gaugeMetric(2, "bad-name", "x"),
				gaugeMetric(3, "__reserved", "x"),
				gaugeMetric(4, "a", "x", "a", "y"),
				gaugeMetric(5, "a", "\xff\xfe"),
				gaugeMetric(6, "", "x"),
				&dto.Metric{Label: []*dto.LabelPair{nil}, Gauge: &dto.Gauge{Value: &v}},
				gaugeMetric(8, "_id", "", "a1", "ünïcödé values are fine"),
			),
			wantKept: []int{0, 7},
		},
		{
			name: "repeated names among many labels",
			mf: family("g", dto.MetricType_GAUGE,
				gaugeMetric(1, manyLabels(20)...),
				gaugeMetric(2, append(manyLabels(20), "l02", "again")...),
				gaugeMetric(3, append(manyLabels(5), "l02", "again")...),
			),
			wantKept: []int{0},
		},
		{
			name:     "nil metrics are skipped",
			mf:       family("g", dto.MetricType_GAUGE, nil, gaugeMetric(1)),
			wantKept: []int{1},
		},
		{name: "invalid family name", mf: family("1up", dto.MetricType_GAUGE, gaugeMetric(1)), wantDrop: true},
		{name: "empty family name", mf: family("", dto.MetricType_GAUGE, gaugeMetric(1)), wantDrop: true},
		{name: "dotted family name", mf: family("http.requests", dto.MetricType_GAUGE, gaugeMetric(1)), wantDrop: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			keep, err := DropInvalid(clock, tc.maxAge).Transform(tc.mf)
			require.NoError(t, err)
			require.Equal(t, !tc.wantDrop, keep)
			if tc.wantDrop {
				return
			}
			var kept []int
			for i, m := range tc.mf.Metric {
				if m != nil {
					kept = append(kept, i)
				}
			}
			require.ElementsMatch(t, tc.wantKept, kept)
		})
	}
}

func TestDropInvalidNilClock(t *testing.T) {
	mf := family("g", dto.MetricType_GAUGE,
		withTimestamp(gaugeMetric(1), time.Now().UnixMilli()),
		withTimestamp(gaugeMetric(2), time.Now().Add(-2*time.Hour).UnixMilli()))
	keep, err := DropInvalid(nil, time.Hour).Transform(mf)
	require.NoError(t, err)
	require.True(t, keep)
	require.NotNil(t, mf.Metric[0])
	require.Nil(t, mf.Metric[1])
}

// manyLabels returns n distinct label name/value pairs l00="v", l01="v", ...
func manyLabels(n int) []string {
	kv := make([]string, 0, 2*n)
	for i := range n {
		kv = append(kv, fmt.Sprintf("l%02d", i), "v")
	}
	return kv
}
