package transform

import (
	"errors"
	"fmt"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/telemeter/telemeter/internal/upload"
)

func TestChainApply(t *testing.T) {
	const in = `# TYPE a gauge
a{x="1"} 1
# TYPE b gauge
b{x="1"} 1
# TYPE c gauge
c{x="1"} 1
`
	var seen []string
	record := func(tag string) Transformer {
		return Func(func(mf *dto.MetricFamily) (bool, error) {
			seen = append(seen, tag+":"+mf.GetName())
			return true, nil
		})
	}
	dropB := Func(func(mf *dto.MetricFamily) (bool, error) { return mf.GetName() != "b", nil })
	failB := Func(func(mf *dto.MetricFamily) (bool, error) {
		if mf.GetName() == "b" {
			return false, fmt.Errorf("check b: %w", upload.ErrForbidden)
		}
		return true, nil
	})

	for _, tc := range []struct {
		name     string
		chain    Chain
		want     string
		wantSeen []string
		wantErr  error
	}{
		{
			name:     "every transformer sees every family in order",
			chain:    Chain{record("1"), record("2")},
			want:     in,
			wantSeen: []string{"1:a", "2:a", "1:b", "2:b", "1:c", "2:c"},
		},
		{
			name:     "a dropped family is not shown to later transformers",
			chain:    Chain{record("1"), dropB, record("2")},
			want:     "# TYPE a gauge\na{x=\"1\"} 1\n# TYPE c gauge\nc{x=\"1\"} 1\n",
			wantSeen: []string{"1:a", "2:a", "1:b", "1:c", "2:c"},
		},
		{
			name:     "an error stops the chain",
			chain:    Chain{record("1"), failB, record("2")},
			wantSeen: []string{"1:a", "2:a", "1:b"},
			wantErr:  upload.ErrForbidden,
		},
		{
			name:     "a nested chain runs like a flat one",
			chain:    Chain{Chain{record("1"), dropB}, record("2")},
			want:     "# TYPE a gauge\na{x=\"1\"} 1\n# TYPE c gauge\nc{x=\"1\"} 1\n",
			wantSeen: []string{"1:a", "2:a", "1:b", "1:c", "2:c"},
		},
		{
			name:  "an empty chain only packs",
			chain: Chain{},
			want:  in,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seen = nil
			out, err := tc.chain.Apply(parseText(t, in))
			require.Equal(t, tc.wantSeen, seen)
			if tc.wantErr != nil {
				require.ErrorIs(t, err, tc.wantErr)
				require.ErrorContains(t, err, "transform b: check b")
				require.Nil(t, out)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, render(t, out))
		})
	}
}

func TestChainApplySkipsNilFamilies(t *testing.T) {
	families := []*dto.MetricFamily{nil, family("a", dto.MetricType_GAUGE, gaugeMetric(1)), nil}
	calls := 0
	out, err := Chain{Func(func(*dto.MetricFamily) (bool, error) { calls++; return true, nil })}.Apply(families)
	require.NoError(t, err)
	require.Equal(t, 1, calls)
	require.Len(t, out, 1)
	require.Equal(t, "a", out[0].GetName())
}

func TestChainTransformNil(t *testing.T) {
	keep, err := Chain{Func(func(*dto.MetricFamily) (bool, error) { return true, errors.New("must not run") })}.Transform(nil)
	require.NoError(t, err)
	require.False(t, keep)
}

func TestPack(t *testing.T) {
	m1, m2, m3 := gaugeMetric(1), gaugeMetric(2), gaugeMetric(3)
	for _, tc := range []struct {
		name string
		in   []*dto.MetricFamily
		want []*dto.MetricFamily
	}{
		{name: "nil input", in: nil, want: []*dto.MetricFamily{}},
		{
			name: "nil metrics removed, order kept",
			in:   []*dto.MetricFamily{family("a", dto.MetricType_GAUGE, nil, m1, nil, m2, m3, nil)},
			want: []*dto.MetricFamily{family("a", dto.MetricType_GAUGE, m1, m2, m3)},
		},
		{
			name: "nil and empty families removed",
			in: []*dto.MetricFamily{
				nil,
				family("empty", dto.MetricType_GAUGE),
				family("a", dto.MetricType_GAUGE, m1),
				family("holes", dto.MetricType_GAUGE, nil, nil),
				family("b", dto.MetricType_GAUGE, m2),
				nil,
			},
			want: []*dto.MetricFamily{family("a", dto.MetricType_GAUGE, m1), family("b", dto.MetricType_GAUGE, m2)},
		},
		{
			name: "all dropped",
			in:   []*dto.MetricFamily{nil, family("holes", dto.MetricType_GAUGE, nil)},
			want: []*dto.MetricFamily{},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.in
			got := Pack(in)
			require.Len(t, got, len(tc.want))
			for i := range tc.want {
				require.Equal(t, tc.want[i].GetName(), got[i].GetName())
				require.Equal(t, tc.want[i].Metric, got[i].Metric)
			}
			// Entries past the result are cleared for the garbage collector.
			for _, mf := range in[len(got):] {
				require.Nil(t, mf)
			}
		})
	}
}
