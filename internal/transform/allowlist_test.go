package transform

import (
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/require"
)

func TestParseSelectors(t *testing.T) {
	ok, err := ParseSelectors([]string{`{__name__="up"}`, `up{job="x"}`, `{__name__=~"cluster:.+",job!="a"}`})
	require.NoError(t, err)
	require.Len(t, ok, 3)
	require.Equal(t, `__name__="up"`, ok[0][0].String())
	require.Len(t, ok[1], 2)
	require.Equal(t, labels.MatchRegexp, ok[2][0].Type)

	none, err := ParseSelectors(nil)
	require.NoError(t, err)
	require.Empty(t, none)

	for _, tc := range []struct {
		name  string
		rules []string
		want  string // the error names the rule
	}{
		{name: "empty rule", rules: []string{`up`, ``}, want: `parse selector 2 "":`},
		{name: "unclosed brace", rules: []string{`up{job="x"`}, want: `parse selector 1 "up{job=\"x\"":`},
		{name: "no matchers", rules: []string{`{}`}, want: `parse selector 1 "{}":`},
		{name: "only empty-matching matchers", rules: []string{`{job=~".*"}`}, want: `parse selector 1 "{job=~\".*\"}":`},
		{name: "function call", rules: []string{`rate(up[5m])`}, want: `parse selector 1 "rate(up[5m])":`},
		{name: "bad regexp", rules: []string{`{job=~"("}`}, want: `parse selector 1 "{job=~\"(\"}":`},
		{name: "range selector", rules: []string{`up`, `up[5m]`}, want: `parse selector 2 "up[5m]":`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseSelectors(tc.rules)
			require.ErrorContains(t, err, tc.want)
			require.Nil(t, got)
		})
	}
}

func TestAllowlist(t *testing.T) {
	const in = `# TYPE up gauge
up{job="api",instance="a"} 1
up{job="db",instance="b"} 1
up{instance="c"} 0
# TYPE http_requests_total counter
http_requests_total{code="200",job="api"} 5
http_requests_total{code="500",job="api"} 1
# TYPE other gauge
other{job="api"} 1
`
	for _, tc := range []struct {
		name  string
		rules []string
		want  string
	}{
		{
			name:  "name alone keeps the whole family",
			rules: []string{`up`},
			want:  "# TYPE up gauge\nup{job=\"api\",instance=\"a\"} 1\nup{job=\"db\",instance=\"b\"} 1\nup{instance=\"c\"} 0\n",
		},
		{
			name:  "label matchers per metric",
			rules: []string{`up{job="db"}`, `{__name__="http_requests_total",code!="500"}`},
			want:  "# TYPE up gauge\nup{job=\"db\",instance=\"b\"} 1\n# TYPE http_requests_total counter\nhttp_requests_total{code=\"200\",job=\"api\"} 5\n",
		},
		{
			name:  "a missing label is the empty value",
			rules: []string{`up{job=""}`},
			want:  "# TYPE up gauge\nup{instance=\"c\"} 0\n",
		},
		{
			name:  "negative regexp on a missing label matches",
			rules: []string{`up{job!~"api|db"}`},
			want:  "# TYPE up gauge\nup{instance=\"c\"} 0\n",
		},
		{
			name:  "selector without a name applies to every family",
			rules: []string{`{job="api"}`},
			want:  "# TYPE up gauge\nup{job=\"api\",instance=\"a\"} 1\n# TYPE http_requests_total counter\nhttp_requests_total{code=\"200\",job=\"api\"} 5\nhttp_requests_total{code=\"500\",job=\"api\"} 1\n# TYPE other gauge\nother{job=\"api\"} 1\n",
		},
		{
			name:  "name regexp is anchored",
			rules: []string{`{__name__=~"http_.+"}`, `{__name__=~"othe"}`},
			want:  "# TYPE http_requests_total counter\nhttp_requests_total{code=\"200\",job=\"api\"} 5\nhttp_requests_total{code=\"500\",job=\"api\"} 1\n",
		},
		{
			name:  "every matcher of a selector must match",
			rules: []string{`up{job="api",instance="b"}`},
			want:  "",
		},
		{
			name:  "overlapping selectors keep a metric once",
			rules: []string{`up{job="api"}`, `up{instance="a"}`},
			want:  "# TYPE up gauge\nup{job=\"api\",instance=\"a\"} 1\n",
		},
		{
			name:  "no selectors keep nothing",
			rules: nil,
			want:  "",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Families in input order, so the expected text reads like the input.
			families := parseText(t, in)
			byName := map[string]int{"up": 0, "http_requests_total": 1, "other": 2}
			ordered := make([]*dto.MetricFamily, 3)
			for _, mf := range families {
				ordered[byName[mf.GetName()]] = mf
			}
			out, err := Chain{Allowlist(mustSelectors(t, tc.rules...))}.Apply(ordered)
			require.NoError(t, err)
			require.Equal(t, tc.want, render(t, out))
		})
	}
}
