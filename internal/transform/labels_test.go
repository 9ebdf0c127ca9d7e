package transform

import (
	"net/http"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/telemeter/telemeter/internal/upload"
)

// applyText runs tr over a text payload and renders the result.
func applyText(t *testing.T, tr Transformer, in string) (string, error) {
	t.Helper()
	out, err := Chain{tr}.Apply(parseText(t, in))
	if err != nil {
		return "", err
	}
	return render(t, out), nil
}

func TestAddLabels(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  map[string]string
		in   string
		want string
	}{
		{
			name: "missing labels are appended in name order",
			set:  map[string]string{"zone": "b", "region": "eu"},
			in:   "# TYPE m gauge\nm{a=\"1\"} 1\nm 2\n",
			want: "# TYPE m gauge\nm{a=\"1\",region=\"eu\",zone=\"b\"} 1\nm{region=\"eu\",zone=\"b\"} 2\n",
		},
		{
			name: "present labels are overwritten, equal ones left alone",
			set:  map[string]string{"job": "federate", "a": "1"},
			in:   "# TYPE m gauge\nm{a=\"1\",job=\"node\"} 1\nm{job=\"\"} 2\n",
			want: "# TYPE m gauge\nm{a=\"1\",job=\"federate\"} 1\nm{job=\"federate\",a=\"1\"} 2\n",
		},
		{
			name: "empty set changes nothing",
			set:  nil,
			in:   "# TYPE m gauge\nm{a=\"1\"} 1\n",
			want: "# TYPE m gauge\nm{a=\"1\"} 1\n",
		},
		{
			name: "histograms get the label on every series",
			set:  map[string]string{"region": "eu"},
			in:   "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n",
			want: "# TYPE h histogram\nh_bucket{region=\"eu\",le=\"1\"} 1\nh_bucket{region=\"eu\",le=\"+Inf\"} 2\nh_sum{region=\"eu\"} 3\nh_count{region=\"eu\"} 2\n",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := applyText(t, AddLabels(tc.set), tc.in)
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

func TestAddLabelsOwnPointers(t *testing.T) {
	mf := family("m", dto.MetricType_GAUGE, gaugeMetric(1, "job", "a"), gaugeMetric(2), gaugeMetric(3))
	_, err := AddLabels(map[string]string{"job": "x"}).Transform(mf)
	require.NoError(t, err)
	seen := map[*string]bool{}
	for _, m := range mf.Metric {
		require.Len(t, m.Label, 1)
		lp := m.Label[0]
		require.Equal(t, "job", lp.GetName())
		require.Equal(t, "x", lp.GetValue())
		require.False(t, seen[lp.Name], "name pointer shared between metrics")
		require.False(t, seen[lp.Value], "value pointer shared between metrics")
		seen[lp.Name], seen[lp.Value] = true, true
	}
	// Writing through one metric's pointer must not change another metric.
	*mf.Metric[1].Label[0].Value = "changed"
	require.Equal(t, "x", mf.Metric[2].Label[0].GetValue())
}

func TestAddLabelsSkipsNil(t *testing.T) {
	mf := family("m", dto.MetricType_GAUGE, nil, &dto.Metric{Label: []*dto.LabelPair{nil, pair("a", "1")}})
	_, err := AddLabels(map[string]string{"b": "2"}).Transform(mf)
	require.NoError(t, err)
	require.Nil(t, mf.Metric[0])
	require.Len(t, mf.Metric[1].Label, 3)
	require.Equal(t, "b", mf.Metric[1].Label[2].GetName())
}

func TestRequireLabels(t *testing.T) {
	const id = "f0c5e2b7"
	for _, tc := range []struct {
		name    string
		in      string
		want    string
		wantErr string
	}{
		{
			name: "missing label added",
			in:   "# TYPE m gauge\nm{a=\"1\"} 1\n",
			want: "# TYPE m gauge\nm{a=\"1\",_id=\"f0c5e2b7\"} 1\n",
		},
		{
			name: "equal label kept",
			in:   "# TYPE m gauge\nm{_id=\"f0c5e2b7\",a=\"1\"} 1\n",
			want: "# TYPE m gauge\nm{_id=\"f0c5e2b7\",a=\"1\"} 1\n",
		},
		{
			name: "empty label counts as missing",
			in:   "# TYPE m gauge\nm{_id=\"\",a=\"1\"} 1\n",
			want: "# TYPE m gauge\nm{_id=\"f0c5e2b7\",a=\"1\"} 1\n",
		},
		{
			name:    "another value is forbidden",
			in:      "# TYPE m gauge\nm{a=\"1\"} 1\nm{_id=\"other-cluster\",a=\"2\"} 1\n",
			wantErr: `transform m: forbidden: label _id is "other-cluster", want "f0c5e2b7"`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := applyText(t, RequireLabels(map[string]string{upload.IDLabel: id}), tc.in)
			if tc.wantErr != "" {
				require.ErrorIs(t, err, upload.ErrForbidden)
				require.Equal(t, http.StatusForbidden, upload.StatusCode(err))
				require.EqualError(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

func TestRequireLabelsConflictLeavesFamilyUnchanged(t *testing.T) {
	in := "# TYPE m gauge\nm{a=\"1\"} 1\nm{_id=\"other\"} 2\n"
	families := parseText(t, in)
	keep, err := RequireLabels(map[string]string{upload.IDLabel: "mine", "zone": "z"}).Transform(families[0])
	require.ErrorIs(t, err, upload.ErrForbidden)
	require.False(t, keep)
	require.Equal(t, in, render(t, families), "a refused family must not be half rewritten")
}

func TestElide(t *testing.T) {
	for _, tc := range []struct {
		name  string
		names []string
		in    string
		want  string
	}{
		{
			name:  "named labels removed, others kept in order",
			names: []string{"replica", "pod"},
			in:    "# TYPE m gauge\nm{a=\"1\",pod=\"p\",b=\"2\",replica=\"0\"} 1\nm{c=\"3\"} 2\n",
			want:  "# TYPE m gauge\nm{a=\"1\",b=\"2\"} 1\nm{c=\"3\"} 2\n",
		},
		{
			name:  "every label removed",
			names: []string{"a"},
			in:    "# TYPE m gauge\nm{a=\"1\"} 1\n",
			want:  "# TYPE m gauge\nm 1\n",
		},
		{
			name:  "no names",
			names: nil,
			in:    "# TYPE m gauge\nm{a=\"1\"} 1\n",
			want:  "# TYPE m gauge\nm{a=\"1\"} 1\n",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := applyText(t, Elide(tc.names...), tc.in)
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}
