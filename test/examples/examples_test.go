package examples

import (
	"context"
	"encoding/json"
	"go/ast"
	goparser "go/parser"
	"go/token"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	promparser "github.com/prometheus/prometheus/promql/parser"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

const (
	repoRoot        = "../.."
	examplesDir     = "../../examples"
	configFile      = "prometheus-central.yml"
	rulesFile       = "telemeter-rules.yml"
	rulesTestFile   = "telemeter-rules.test.yml"
	dashboardFile   = "grafana-dashboard.json"
	promtoolTimeout = 2 * time.Minute
)

// metricRef finds the telemeter metric names a PromQL expression or an
// annotation mentions.
var metricRef = regexp.MustCompile(`\btelemeter_[a-zA-Z0-9_:]*`)

// ---------------------------------------------------------------- promtool

// promtool returns the promtool of ./bin, else the one on PATH. Without
// one the tests fail when CI is set and are skipped on a developer's
// machine.
func promtool(t *testing.T) string {
	t.Helper()
	local, err := filepath.Abs(filepath.Join(repoRoot, "bin", "promtool"))
	require.NoError(t, err)
	if info, err := os.Stat(local); err == nil && info.Mode().IsRegular() && info.Mode()&0o111 != 0 {
		return local
	}
	if p, err := exec.LookPath("promtool"); err == nil {
		return p
	}
	const msg = "promtool is neither in bin/ nor on PATH: run `make deps`"
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg + " (with CI set, this is a failure)")
	return ""
}

func TestPromtool(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
	}{
		{name: "check config", args: []string{"check", "config", configFile}},
		{name: "check rules", args: []string{"check", "rules", rulesFile}},
		{name: "test rules", args: []string{"test", "rules", rulesTestFile}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bin := promtool(t)
			ctx, cancel := context.WithTimeout(t.Context(), promtoolTimeout)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, tc.args...)
			cmd.Dir = examplesDir
			out, err := cmd.CombinedOutput()
			require.NoError(t, err, "%s %s:\n%s", bin, strings.Join(tc.args, " "), out)
		})
	}
}

// ------------------------------------------------------------------- rules

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Record      string            `yaml:"record"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

type ruleTestFile struct {
	RuleFiles []string `yaml:"rule_files"`
	Tests     []struct {
		Name        string `yaml:"name"`
		InputSeries []struct {
			Series string `yaml:"series"`
		} `yaml:"input_series"`
		AlertRuleTests []struct {
			Alertname string `yaml:"alertname"`
			ExpAlerts []struct {
				ExpLabels map[string]string `yaml:"exp_labels"`
			} `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
	} `yaml:"tests"`
}

func readYAML(t *testing.T, name string, v any) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(examplesDir, name))
	require.NoError(t, err)
	require.NoError(t, yaml.Unmarshal(b, v), "parse %s", name)
}

func loadRules(t *testing.T) ruleFile {
	t.Helper()
	var rf ruleFile
	readYAML(t, rulesFile, &rf)
	require.NotEmpty(t, rf.Groups, "%s has no rule groups", rulesFile)
	return rf
}

// TestRuleConventions checks what promtool does not: every alert carries a
// severity, a summary, a description and a for, and its expression parses
// with the PromQL parser this module builds against. It runs without
// promtool.
func TestRuleConventions(t *testing.T) {
	p := promparser.NewParser(promparser.Options{})
	seen := map[string]bool{}
	for _, g := range loadRules(t).Groups {
		for _, r := range g.Rules {
			require.NotEmpty(t, r.Alert, "group %s: only alerting rules belong in %s", g.Name, rulesFile)
			t.Run(r.Alert, func(t *testing.T) {
				require.False(t, seen[r.Alert], "alert defined twice")
				seen[r.Alert] = true
				require.Contains(t, []string{"critical", "warning", "info"}, r.Labels["severity"], "severity label")
				require.NotEmpty(t, strings.TrimSpace(r.Annotations["summary"]), "summary annotation")
				require.NotEmpty(t, strings.TrimSpace(r.Annotations["description"]), "description annotation")
				require.NotEmpty(t, r.For, "for")
				_, err := p.ParseExpr(r.Expr)
				require.NoError(t, err, "expr: %s", r.Expr)
			})
		}
	}
}

// TestEveryAlertIsTested checks that the promtool unit tests make every
// alert fire at least once and also show it silent: either an evaluation
// that expects no alert, or an instance in the input series that the
// alert's expected firings leave out.
func TestEveryAlertIsTested(t *testing.T) {
	var tf ruleTestFile
	readYAML(t, rulesTestFile, &tf)
	require.Equal(t, []string{rulesFile}, tf.RuleFiles)

	instanceOf := regexp.MustCompile(`\binstance="([^"]*)"`)
	fires := map[string]int{}
	silent := map[string]int{}
	for _, tc := range tf.Tests {
		inputs := map[string]bool{}
		for _, s := range tc.InputSeries {
			if m := instanceOf.FindStringSubmatch(s.Series); m != nil {
				inputs[m[1]] = true
			}
		}
		firing := map[string]map[string]bool{} // alert -> instances it fired for
		for _, a := range tc.AlertRuleTests {
			if len(a.ExpAlerts) == 0 {
				silent[a.Alertname]++
				continue
			}
			fires[a.Alertname]++
			if firing[a.Alertname] == nil {
				firing[a.Alertname] = map[string]bool{}
			}
			for _, e := range a.ExpAlerts {
				firing[a.Alertname][e.ExpLabels["instance"]] = true
			}
		}
		for alert, got := range firing {
			for in := range inputs {
				if !got[in] {
					silent[alert]++ // a healthy instance beside the failing one
				}
			}
		}
	}
	for _, g := range loadRules(t).Groups {
		for _, r := range g.Rules {
			require.Positive(t, fires[r.Alert], "%s: no test in %s makes it fire", r.Alert, rulesTestFile)
			require.Positive(t, silent[r.Alert], "%s: no test in %s shows it silent on healthy data", r.Alert, rulesTestFile)
		}
	}
	for name := range fires {
		require.Contains(t, alertNames(loadRules(t)), name, "%s tests an alert that does not exist", rulesTestFile)
	}
}

func alertNames(rf ruleFile) []string {
	var names []string
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			names = append(names, r.Alert)
		}
	}
	return names
}

// --------------------------------------------------------------- dashboard

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type dashboardPanel struct {
	ID         int            `json:"id"`
	Type       string         `json:"type"`
	Title      string         `json:"title"`
	Datasource *datasourceRef `json:"datasource"`
	Targets    []struct {
		RefID      string         `json:"refId"`
		Expr       string         `json:"expr"`
		Datasource *datasourceRef `json:"datasource"`
	} `json:"targets"`
	Panels []dashboardPanel `json:"panels"` // the panels of a collapsed row
}

type dashboard struct {
	Title         string `json:"title"`
	UID           string `json:"uid"`
	SchemaVersion int    `json:"schemaVersion"`
	Templating    struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
	Panels []dashboardPanel `json:"panels"`
}

func readDashboard(t *testing.T) (dashboard, []byte) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(examplesDir, dashboardFile))
	require.NoError(t, err)
	var d dashboard
	require.NoError(t, json.Unmarshal(b, &d), "parse %s", dashboardFile)
	return d, b
}

func flattenPanels(ps []dashboardPanel) []dashboardPanel {
	var out []dashboardPanel
	for _, p := range ps {
		out = append(out, p)
		out = append(out, flattenPanels(p.Panels)...)
	}
	return out
}

// identifier matches PromQL identifiers: metric, label and function names.
var identifier = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)

// grafanaVar matches the dashboard variables, which PromQL cannot parse.
var grafanaVar = regexp.MustCompile(`\$\{?(\w+)\}?`)

// promqlOf replaces Grafana's variables so that expr parses as PromQL:
// interval variables become a duration, the others a label value (they
// only appear inside quotes).
func promqlOf(expr string) string {
	return grafanaVar.ReplaceAllStringFunc(expr, func(v string) string {
		name := grafanaVar.FindStringSubmatch(v)[1]
		if strings.HasPrefix(name, "__") && strings.HasSuffix(name, "interval") || name == "__range" {
			return "5m"
		}
		return "x"
	})
}

func TestDashboard(t *testing.T) {
	d, _ := readDashboard(t)
	require.NotEmpty(t, d.Title)
	require.NotEmpty(t, d.UID)
	require.GreaterOrEqual(t, d.SchemaVersion, 39, "schemaVersion")

	var hasDatasourceVar bool
	for _, v := range d.Templating.List {
		if v.Name == "datasource" {
			require.Equal(t, "datasource", v.Type)
			require.Equal(t, "prometheus", v.Query)
			hasDatasourceVar = true
		}
	}
	require.True(t, hasDatasourceVar, "no datasource variable")

	p := promparser.NewParser(promparser.Options{})
	ids := map[int]string{}
	var exprs []string
	for _, panel := range flattenPanels(d.Panels) {
		require.NotZero(t, panel.ID, "panel %q has no id", panel.Title)
		require.NotContains(t, ids, panel.ID, "panel id %d used by %q and %q", panel.ID, ids[panel.ID], panel.Title)
		ids[panel.ID] = panel.Title
		if panel.Type == "row" {
			continue
		}
		require.NotEmpty(t, panel.Title, "panel %d has no title", panel.ID)
		require.NotNil(t, panel.Datasource, "panel %q has no datasource", panel.Title)
		require.Equal(t, "${datasource}", panel.Datasource.UID, "panel %q datasource", panel.Title)
		require.NotEmpty(t, panel.Targets, "panel %q has no query", panel.Title)
		for _, tg := range panel.Targets {
			require.NotEmpty(t, tg.RefID, "panel %q", panel.Title)
			require.NotEmpty(t, tg.Expr, "panel %q, query %s", panel.Title, tg.RefID)
			if tg.Datasource != nil {
				require.Equal(t, "${datasource}", tg.Datasource.UID, "panel %q, query %s", panel.Title, tg.RefID)
			}
			_, err := p.ParseExpr(promqlOf(tg.Expr))
			require.NoError(t, err, "panel %q, query %s: %s", panel.Title, tg.RefID, tg.Expr)
			exprs = append(exprs, tg.Expr)
		}
	}

	// What the dashboard must show.
	queried := map[string]bool{}
	for _, e := range exprs {
		for _, id := range identifier.FindAllString(e, -1) {
			queried[id] = true
		}
	}
	for _, m := range []string{
		"telemeter_server_uploads_total",
		"telemeter_server_upload_duration_seconds_bucket",
		"telemeter_server_store_snapshots",
		"telemeter_server_store_series",
		"telemeter_server_samples_dropped_total",
		"telemeter_server_ratelimit_rejected_total",
		"telemeter_server_inflight_rejected_total",
		"telemeter_server_cluster_members",
		"telemeter_server_forwards_total",
		"telemeter_server_handoffs_total",
		"telemeter_server_replication_pending",
		"telemeter_server_store_write_duration_seconds_bucket",
		"process_resident_memory_bytes",
		"process_cpu_seconds_total",
		"telemeter_client_pushes_total",
	} {
		require.True(t, queried[m], "no panel queries %s", m)
	}
}

// ------------------------------------------------------ metric names exist

// metricSet holds the metric names the Go source defines.
type metricSet struct {
	names      map[string]bool
	histograms map[string]bool // also expose _bucket, _sum and _count
	summaries  map[string]bool // also expose _sum and _count
}

// defines reports whether name is a defined metric or one of the series
// of a defined histogram or summary.
func (s metricSet) defines(name string) bool {
	if s.names[name] {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suffix)
		if !ok {
			continue
		}
		if s.histograms[base] || (suffix != "_bucket" && s.summaries[base]) {
			return true
		}
	}
	return false
}

var (
	wholeMetricName = regexp.MustCompile(`^telemeter_[a-z0-9_]+$`)
	metricOpts      = map[string]string{"CounterOpts": "counter", "GaugeOpts": "gauge", "HistogramOpts": "histogram", "SummaryOpts": "summary"}
)

// definedMetrics scans the non-test Go files under dirs. A metric is
// defined by a string literal that is a whole telemeter_* name. The one
// family built from parts is internal/web's: its Opts name the metric
// prefix + "_suffix", and each caller of web.NewMetrics passes the prefix
// as a literal; every prefix is combined with every suffix.
func definedMetrics(t *testing.T, dirs ...string) metricSet {
	t.Helper()
	s := metricSet{names: map[string]bool{}, histograms: map[string]bool{}, summaries: map[string]bool{}}
	kinds := map[string]string{} // suffix -> kind, from internal/web
	var prefixes []string
	add := func(name, kind string) {
		s.names[name] = true
		switch kind {
		case "histogram":
			s.histograms[name] = true
		case "summary":
			s.summaries[name] = true
		}
	}
	fset := token.NewFileSet()
	for _, dir := range dirs {
		err := filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if e.IsDir() {
				if e.Name() == "testdata" {
					return filepath.SkipDir
				}
				return nil
			}
			if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return nil
			}
			f, err := goparser.ParseFile(fset, path, nil, goparser.SkipObjectResolution)
			if err != nil {
				return err
			}
			inWeb := filepath.Base(filepath.Dir(path)) == "web" && f.Name.Name == "web"
			ast.Inspect(f, func(n ast.Node) bool {
				switch n := n.(type) {
				case *ast.BasicLit:
					if v, ok := stringLit(n); ok && wholeMetricName.MatchString(v) {
						s.names[v] = true
					}
				case *ast.CompositeLit:
					kind := optsKind(n.Type)
					if kind == "" {
						return true
					}
					for _, el := range n.Elts {
						kv, ok := el.(*ast.KeyValueExpr)
						if !ok || !isIdent(kv.Key, "Name") {
							continue
						}
						switch v := kv.Value.(type) {
						case *ast.BasicLit:
							if name, ok := stringLit(v); ok {
								add(name, kind)
							}
						case *ast.BinaryExpr: // prefix + "_suffix"
							if suffix, ok := stringLit(v.Y); ok && inWeb && v.Op == token.ADD && strings.HasPrefix(suffix, "_") {
								kinds[suffix] = kind
							}
						}
					}
				case *ast.CallExpr:
					if sel, ok := n.Fun.(*ast.SelectorExpr); ok && isIdent(sel.X, "web") && sel.Sel.Name == "NewMetrics" && len(n.Args) == 2 {
						if prefix, ok := stringLit(n.Args[1]); ok {
							prefixes = append(prefixes, prefix)
						}
					}
				}
				return true
			})
			return nil
		})
		require.NoError(t, err, "scan %s", dir)
	}
	require.NotEmpty(t, kinds, "found no metric suffixes in internal/web: update definedMetrics to how web names its metrics now")
	require.NotEmpty(t, prefixes, "found no calls of web.NewMetrics with a literal prefix: update definedMetrics")
	for _, p := range prefixes {
		for suffix, kind := range kinds {
			add(p+suffix, kind)
		}
	}
	return s
}

func stringLit(e ast.Expr) (string, bool) {
	lit, ok := e.(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING {
		return "", false
	}
	v, err := strconv.Unquote(lit.Value)
	return v, err == nil
}

func isIdent(e ast.Expr, name string) bool {
	id, ok := e.(*ast.Ident)
	return ok && id.Name == name
}

// optsKind returns the kind of metric a composite literal of type
// prometheus.XxxOpts declares, or "" for any other literal.
func optsKind(e ast.Expr) string {
	sel, ok := e.(*ast.SelectorExpr)
	if !ok || !isIdent(sel.X, "prometheus") {
		return ""
	}
	return metricOpts[sel.Sel.Name]
}

func sourceMetrics(t *testing.T) metricSet {
	t.Helper()
	return definedMetrics(t, filepath.Join(repoRoot, "internal"), filepath.Join(repoRoot, "cmd"))
}

// TestDefinedMetrics checks the scanner itself, so that the checks below
// cannot pass by accident.
func TestDefinedMetrics(t *testing.T) {
	s := sourceMetrics(t)
	for _, tc := range []struct {
		name    string
		metric  string
		defined bool
	}{
		{name: "counter literal", metric: "telemeter_server_uploads_total", defined: true},
		{name: "gauge literal", metric: "telemeter_server_store_snapshots", defined: true},
		{name: "histogram bucket", metric: "telemeter_server_upload_duration_seconds_bucket", defined: true},
		{name: "histogram count", metric: "telemeter_server_upload_duration_seconds_count", defined: true},
		{name: "web prefix, server", metric: "telemeter_server_http_requests_total", defined: true},
		{name: "web prefix, client", metric: "telemeter_client_http_requests_in_flight", defined: true},
		{name: "web prefix histogram", metric: "telemeter_server_http_request_duration_seconds_bucket", defined: true},
		{name: "counter has no _count", metric: "telemeter_server_uploads_total_count", defined: false},
		{name: "gauge has no _bucket", metric: "telemeter_server_store_series_bucket", defined: false},
		{name: "unknown", metric: "telemeter_server_no_such_metric_total", defined: false},
		{name: "web suffix without prefix", metric: "_http_requests_total", defined: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.defined, s.defines(tc.metric), tc.metric)
		})
	}
}

// TestExampleMetricsExist fails when an example names a telemeter metric
// that no binary exports, for instance after a rename.
func TestExampleMetricsExist(t *testing.T) {
	s := sourceMetrics(t)

	texts := map[string][]string{} // file -> texts that name metrics
	for _, g := range loadRules(t).Groups {
		for _, r := range g.Rules {
			texts[rulesFile] = append(texts[rulesFile], r.Expr)
			for _, a := range r.Annotations {
				texts[rulesFile] = append(texts[rulesFile], a)
			}
		}
	}
	var tf ruleTestFile
	readYAML(t, rulesTestFile, &tf)
	for _, tc := range tf.Tests {
		for _, in := range tc.InputSeries {
			texts[rulesTestFile] = append(texts[rulesTestFile], in.Series)
		}
	}
	_, raw := readDashboard(t)
	var doc any
	require.NoError(t, json.Unmarshal(raw, &doc))
	texts[dashboardFile] = queryStrings(doc)

	for _, file := range []string{rulesFile, rulesTestFile, dashboardFile} {
		t.Run(file, func(t *testing.T) {
			var names []string
			for _, text := range texts[file] {
				names = append(names, metricRef.FindAllString(text, -1)...)
			}
			require.NotEmpty(t, names, "found no telemeter metrics in %s", file)
			slices.Sort(names)
			var missing []string
			for _, n := range slices.Compact(names) {
				if !s.defines(n) {
					missing = append(missing, n)
				}
			}
			require.Empty(t, missing, "%s names metrics that no Go source under internal/ or cmd/ defines", file)
		})
	}
}

// queryStrings returns every string of a Grafana dashboard that holds a
// query: panel targets' expr, and the variables' query and definition.
func queryStrings(v any) []string {
	var out []string
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if s, ok := x.(string); ok && (k == "expr" || k == "query" || k == "definition") {
				out = append(out, s)
				continue
			}
			out = append(out, queryStrings(x)...)
		}
	case []any:
		for _, x := range v {
			out = append(out, queryStrings(x)...)
		}
	}
	return out
}
