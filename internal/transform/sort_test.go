package transform

import (
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
)

func TestSort(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want string
	}{
		{
			name: "labels by name, then metrics by label set",
			in:   "# TYPE m gauge\nm{b=\"1\",a=\"2\"} 1\nm{a=\"1\",b=\"9\"} 2\nm{a=\"1\"} 3\nm 4\n",
			want: "# TYPE m gauge\nm 4\nm{a=\"1\"} 3\nm{a=\"1\",b=\"9\"} 2\nm{a=\"2\",b=\"1\"} 1\n",
		},
		{
			name: "names before values",
			in:   "# TYPE m gauge\nm{b=\"0\"} 1\nm{a=\"z\"} 2\n",
			want: "# TYPE m gauge\nm{a=\"z\"} 2\nm{b=\"0\"} 1\n",
		},
		{
			name: "byte order, upper case first",
			in:   "# TYPE m gauge\nm{a=\"b\"} 1\nm{a=\"B\"} 2\nm{Z=\"x\"} 3\n",
			want: "# TYPE m gauge\nm{Z=\"x\"} 3\nm{a=\"B\"} 2\nm{a=\"b\"} 1\n",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := applyText(t, Sort(), tc.in)
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

func TestSortNilAndDuplicates(t *testing.T) {
	first, second := gaugeMetric(1, "a", "1"), gaugeMetric(2, "a", "1")
	mf := family("m", dto.MetricType_GAUGE, nil, second, gaugeMetric(3, "a", "0"), nil, first)
	// Stable: equal label sets keep their order (second before first here).
	_, err := Sort().Transform(mf)
	require.NoError(t, err)
	require.Len(t, mf.Metric, 5)
	require.Equal(t, "0", mf.Metric[0].Label[0].GetValue())
	require.Same(t, second, mf.Metric[1])
	require.Same(t, first, mf.Metric[2])
	require.Nil(t, mf.Metric[3])
	require.Nil(t, mf.Metric[4])
}
