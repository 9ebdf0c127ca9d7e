package validate

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	"github.com/telemeter/telemeter/internal/transform"
	"github.com/telemeter/telemeter/internal/upload"
)

var now = time.Unix(1_700_000_000, 0)

func parse(t *testing.T, text string) []*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.LegacyValidation)
	byName, err := p.TextToMetricFamilies(strings.NewReader(text))
	require.NoError(t, err)
	var out []*dto.MetricFamily
	for _, mf := range byName {
		out = append(out, mf)
	}
	return out
}

func render(t *testing.T, families []*dto.MetricFamily) string {
	t.Helper()
	var b strings.Builder
	for _, mf := range families {
		_, err := expfmt.MetricFamilyToText(&b, mf)
		require.NoError(t, err)
	}
	return b.String()
}

func TestValidate(t *testing.T) {
	ms := func(d time.Duration) string { return " " + itoa(now.Add(d).UnixMilli()) }
	allow, err := transform.ParseSelectors([]string{`{__name__="up"}`, `alerts{alertstate="firing"}`})
	require.NoError(t, err)

	for _, tc := range []struct {
		name     string
		o        Options
		identity map[string]string
		in       string
		want     string
		err      error
		dropped  map[string]float64
	}{
		{
			name: "stamps the cluster id",
			in:   "up{job=\"a\"} 1\n",
			want: "# TYPE up untyped\nup{_id=\"c1\",job=\"a\"} 1\n",
		},
		{
			name: "equal id accepted",
			in:   "up{_id=\"c1\",job=\"a\"} 1\n",
			want: "# TYPE up untyped\nup{_id=\"c1\",job=\"a\"} 1\n",
		},
		{
			name: "foreign id refused",
			in:   "up{_id=\"c1\"} 1\nup{_id=\"c2\",job=\"x\"} 1\n",
			err:  upload.ErrForbidden,
		},
		{
			name:     "token labels enforced",
			identity: map[string]string{"_id": "c1", "tenant": "t1"},
			in:       "up{tenant=\"t2\"} 1\n",
			err:      upload.ErrForbidden,
		},
		{
			name:     "token labels stamped",
			identity: map[string]string{"_id": "c1", "tenant": "t1"},
			in:       "up 1\n",
			want:     "# TYPE up untyped\nup{_id=\"c1\",tenant=\"t1\"} 1\n",
		},
		{
			name:     "token for another id",
			identity: map[string]string{"_id": "c2"},
			in:       "up 1\n",
			err:      upload.ErrForbidden,
		},
		{
			name: "look-alike label names are ordinary labels",
			in:   "up{_ID=\"c2\",id=\"c2\",__id=\"x\"} 1\n",
			want: "# TYPE up untyped\nup{_ID=\"c2\",__id=\"x\",_id=\"c1\",id=\"c2\"} 1\n",
		},
		{
			name: "server labels win over the client's",
			o:    Options{Labels: map[string]string{"region": "eu"}},
			in:   "up{region=\"us\"} 1\n",
			want: "# TYPE up untyped\nup{_id=\"c1\",region=\"eu\"} 1\n",
		},
		{
			name: "elide never removes identity",
			o:    Options{Elide: []string{"replica", "_id"}},
			in:   "up{replica=\"0\"} 1\n",
			want: "# TYPE up untyped\nup{_id=\"c1\"} 1\n",
		},
		{
			name:    "elided labels that collide are deduplicated",
			o:       Options{Elide: []string{"replica"}},
			in:      "up{replica=\"0\"} 1\nup{replica=\"1\"} 2\n",
			want:    "# TYPE up untyped\nup{_id=\"c1\"} 1\n",
			dropped: map[string]float64{reasonDuplicate: 1},
		},
		{
			name:    "allowlist drops the rest",
			o:       Options{Allow: allow},
			in:      "up 1\nalerts{alertstate=\"firing\"} 1\nalerts{alertstate=\"pending\"} 1\nsecret 1\n",
			want:    "# TYPE alerts untyped\nalerts{_id=\"c1\",alertstate=\"firing\"} 1\n# TYPE up untyped\nup{_id=\"c1\"} 1\n",
			dropped: map[string]float64{reasonNotAllowed: 2},
		},
		{
			name: "required label missing",
			o:    Options{RequiredLabels: []string{"version"}},
			in:   "up 1\n",
			err:  upload.ErrInvalid,
		},
		{
			name: "series budget",
			o:    Options{MaxSeries: 2},
			in:   "up{a=\"1\"} 1\nup{a=\"2\"} 1\nup{a=\"3\"} 1\n",
			err:  upload.ErrTooLarge,
		},
		{
			// QUALITY R18: never stored as given.
			name:    "timestamps outside the window are dropped",
			in:      "up{a=\"ahead\"} 1" + ms(time.Hour) + "\nup{a=\"behind\"} 1" + ms(-25*time.Hour) + "\nup{a=\"ok\"} 1" + ms(-time.Minute) + "\n",
			want:    "# TYPE up untyped\nup{_id=\"c1\",a=\"ok\"} 1" + ms(-time.Minute) + "\n",
			dropped: map[string]float64{reasonTooNew: 1, reasonTooOld: 1},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			tc.o.Now = func() time.Time { return now }
			v := New(tc.o, reg)
			identity := tc.identity
			if identity == nil {
				identity = map[string]string{"_id": "c1"}
			}
			res, err := v.Validate("c1", identity, parse(t, tc.in))
			if tc.err != nil {
				require.ErrorIs(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, render(t, res.Families))
			for reason, n := range tc.dropped {
				require.Equal(t, n, testutil.ToFloat64(v.dropped.WithLabelValues(reason)), reason)
			}
		})
	}
}

func TestForbiddenIs403(t *testing.T) {
	v := New(Options{}, nil)
	_, err := v.Validate("c1", nil, parse(t, "up{_id=\"c2\"} 1\n"))
	require.Equal(t, http.StatusForbidden, upload.StatusCode(err))
}

func TestSeriesCount(t *testing.T) {
	v := New(Options{Now: func() time.Time { return now }}, nil)
	ts := now.Add(-time.Minute).UnixMilli()
	res, err := v.Validate("c1", nil, parse(t, "up{a=\"1\"} 1 "+itoa(ts-1000)+"\nup{a=\"2\"} 1 "+itoa(ts)+"\n"))
	require.NoError(t, err)
	require.Equal(t, 2, res.Series)
}

func TestMergesRepeatedFamilies(t *testing.T) {
	v := New(Options{}, nil)
	a, b := parse(t, "up{a=\"1\"} 1\n"), parse(t, "up{a=\"2\"} 1\n")
	res, err := v.Validate("c1", nil, append(a, b...))
	require.NoError(t, err)
	require.Len(t, res.Families, 1)
	require.Equal(t, 2, res.Series)
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// Duplicates anywhere in an upload: the first sent stays, the rest are
// dropped and counted; within one family by sorting, across two families
// of one name (different types) by their keys.
func TestDuplicatesFirstWins(t *testing.T) {
	reg := prometheus.NewRegistry()
	v := New(Options{}, reg)
	in := parse(t, "up{a=\"2\"} 20\nup{a=\"1\"} 10\nup{a=\"2\"} 21\nup{a=\"3\"} 30\nup{a=\"1\"} 11\nup{a=\"2\"} 22\n")
	res, err := v.Validate("c1", nil, in)
	require.NoError(t, err)
	require.Equal(t, "# TYPE up untyped\nup{_id=\"c1\",a=\"1\"} 10\nup{_id=\"c1\",a=\"2\"} 20\nup{_id=\"c1\",a=\"3\"} 30\n", render(t, res.Families))
	require.Equal(t, 3.0, testutil.ToFloat64(v.dropped.WithLabelValues(reasonDuplicate)))

	gauge := parse(t, "# TYPE up gauge\nup{a=\"1\"} 1\n")
	counter := parse(t, "# TYPE up counter\nup{a=\"1\"} 2\nup{a=\"2\"} 3\n")
	res, err = v.Validate("c1", nil, append(gauge, counter...))
	require.NoError(t, err)
	require.Equal(t, 2, res.Series)
	require.Equal(t, 4.0, testutil.ToFloat64(v.dropped.WithLabelValues(reasonDuplicate)))
}
