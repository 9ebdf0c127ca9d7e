package transform

import (
	"bytes"
	"flag"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/require"

	"github.com/telemeter/telemeter/internal/upload"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/golden")

// goldenNow is the clock of the golden tests: 2019-07-03T15:43:50Z, just
// after the newest regular sample of the T232 payload.
func goldenNow() time.Time { return time.UnixMilli(1562168630000).UTC() }

// parseText reads the text exposition format into families sorted by name.
func parseText(t testing.TB, text string) []*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.LegacyValidation)
	byName, err := p.TextToMetricFamilies(strings.NewReader(text))
	require.NoError(t, err)
	return slices.SortedFunc(maps.Values(byName), func(a, b *dto.MetricFamily) int {
		return strings.Compare(a.GetName(), b.GetName())
	})
}

func readText(t testing.TB, path string) []*dto.MetricFamily {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return parseText(t, string(b))
}

// render writes families in the text format, in the order given.
func render(t testing.TB, families []*dto.MetricFamily) string {
	t.Helper()
	var buf bytes.Buffer
	for _, mf := range families {
		_, err := expfmt.MetricFamilyToText(&buf, mf)
		require.NoError(t, err)
	}
	return buf.String()
}

// checkGolden compares got with testdata/golden/name.txt, or rewrites the
// file under -update.
func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", "golden", name+".txt")
	if *update {
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
		require.NoError(t, os.WriteFile(path, []byte(got), 0o644))
		return
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "run go test ./internal/transform -update to create it")
	require.Equal(t, string(want), got, "golden file %s differs; review, then rerun with -update", path)
}

func mustSelectors(t testing.TB, rules ...string) [][]*labels.Matcher {
	t.Helper()
	sel, err := ParseSelectors(rules)
	require.NoError(t, err)
	return sel
}

// clientChain is the chain telemeter-client runs, in its order; Apply packs.
func clientChain(now func() time.Time, selectors [][]*labels.Matcher) Chain {
	return Chain{
		DropInvalid(now, time.Hour),
		Rename(map[string]string{"ALERTS": "alerts"}),
		AddLabels(map[string]string{"region": "eu-west-1"}),
		Anonymize("golden-salt", []string{"instance"}, AnonymizeLegacy),
		Elide("prometheus_replica"),
		Allowlist(selectors),
		RequireLabels(map[string]string{upload.IDLabel: "f0c5e2b7-9a1d-4c3e-8b6f-2d4a5c6e7f80"}),
		Sort(),
	}
}

func TestGoldenSteps(t *testing.T) {
	for _, tc := range []struct {
		name string
		t    Transformer
	}{
		{"drop_invalid", DropInvalid(goldenNow, time.Hour)},
		{"drop_invalid_no_max_age", DropInvalid(goldenNow, 0)},
		{"rename", Rename(map[string]string{"ALERTS": "alerts", "up": "target_up", "absent": "never_seen"})},
		{"add_labels", AddLabels(map[string]string{"region": "eu-west-1", "job": "federated"})},
		{"anonymize_legacy", Anonymize("golden-salt", []string{"instance", "pod"}, AnonymizeLegacy)},
		{"anonymize_hmac", Anonymize("golden-salt", []string{"instance", "pod"}, AnonymizeHMAC)},
		// "le" is bucket structure in the dto model, not a label: it stays.
		{"elide", Elide("prometheus_replica", "pod", "le")},
		{"allowlist", Allowlist(mustSelectors(t,
			`{__name__="ALERTS",alertstate="firing"}`,
			`up{job=~"kubelet|etcd"}`,
			`{__name__=~"http_.+",code!="500"}`,
			`request_duration_seconds`,
			`{service="auth"}`,
		))},
		{"require_labels", RequireLabels(map[string]string{upload.IDLabel: "cluster-a", "prometheus": "openshift-monitoring/k8s"})},
		{"sort", Sort()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := readText(t, filepath.Join("testdata", "input.txt"))
			out, err := Chain{tc.t}.Apply(in)
			require.NoError(t, err)
			checkGolden(t, tc.name, render(t, out))
		})
	}
}

func TestGoldenChain(t *testing.T) {
	sel := mustSelectors(t,
		`{__name__="alerts",alertstate="firing"}`,
		`{__name__=~"cluster:.+"}`,
		`{__name__="cluster_operator_conditions",condition=~"Available|Degraded"}`,
		`cluster_operator_up`,
		`cluster_version`,
		`up{job=~"apiserver|etcd|kubelet|node-exporter"}`,
		`node_uname_info`,
		`{__name__=~"http_requests_total|request_duration_seconds"}`,
	)
	for _, input := range []string{"input", "timeseries"} {
		t.Run(input, func(t *testing.T) {
			in := readText(t, filepath.Join("testdata", input+".txt"))
			out, err := clientChain(goldenNow, sel).Apply(in)
			require.NoError(t, err)
			text := render(t, out)
			checkGolden(t, "chain_"+input, text)

			// What the client pushes must read back with the strict parser,
			// and every series must carry the cluster's _id.
			again := parseText(t, text)
			require.Len(t, again, len(out))
			for _, mf := range out {
				for _, m := range mf.Metric {
					lp := findLabel(m.Label, upload.IDLabel)
					require.NotNil(t, lp, "series of %s without _id", mf.GetName())
					require.Equal(t, "f0c5e2b7-9a1d-4c3e-8b6f-2d4a5c6e7f80", lp.GetValue())
				}
			}
		})
	}
}

func TestClientChainRefusesForeignID(t *testing.T) {
	in := parseText(t, `# TYPE up gauge
up{job="kubelet",instance="10.0.1.5:10250"} 1 1562168620000
up{job="kubelet",instance="10.0.1.6:10250",_id="someone-else"} 1 1562168620000
`)
	_, err := clientChain(goldenNow, mustSelectors(t, `up`)).Apply(in)
	require.ErrorIs(t, err, upload.ErrForbidden)
	require.ErrorContains(t, err, `label _id is "someone-else"`)
}
