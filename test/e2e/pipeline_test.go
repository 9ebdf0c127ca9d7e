//go:build e2e

package e2e

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const alwaysFiring = `groups:
- name: e2e
  interval: 1s
  rules:
  - alert: AlwaysFiring
    expr: vector(1)
    labels:
      severity: none
`

// startSource runs the source Prometheus: it scrapes itself and fires an alert.
func startSource(t *testing.T) *prometheus {
	t.Helper()
	self := freeAddr(t)
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [rules.yml]
scrape_configs:
- job_name: prometheus
  static_configs:
  - targets: [%q]
`, self)
	dir := t.TempDir()
	p := &prometheus{URL: "http://" + self}
	p.proc = start(t, "source-prometheus", prometheusBin(t),
		"--config.file="+writeIn(t, dir, "prometheus.yml", cfg),
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+self,
	)
	writeIn(t, dir, "rules.yml", alwaysFiring)
	waitHTTP(t, p.URL+"/-/ready", 60*time.Second)
	eventually(t, 30*time.Second, "source has ALERTS and up", func() error {
		for _, q := range []string{`ALERTS{alertname="AlwaysFiring"}`, `up{job="prometheus"} == 1`} {
			v, err := p.query(q)
			if err != nil {
				return err
			}
			if len(v) == 0 {
				return fmt.Errorf("no result for %s", q)
			}
		}
		return nil
	})
	return p
}

func writeIn(t *testing.T, dir, name, text string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	require.NoError(t, writeFileAt(p, text))
	return p
}

// telemeterServer is a running telemeter-server.
type telemeterServer struct {
	*proc
	URL, InternalURL string
}

func startServer(t *testing.T, name string, args ...string) *telemeterServer {
	t.Helper()
	ext, internal := freeAddr(t), freeAddr(t)
	s := &telemeterServer{URL: "http://" + ext, InternalURL: "http://" + internal}
	all := append([]string{"--listen=" + ext, "--listen-internal=" + internal, "--log-level=debug"}, args...)
	s.proc = start(t, name, bin("telemeter-server"), all...)
	waitHTTP(t, s.InternalURL+"/healthz/ready", 30*time.Second)
	return s
}

// startCentral runs the central Prometheus scraping the servers' /federate.
func startCentral(t *testing.T, servers ...*telemeterServer) *prometheus {
	t.Helper()
	var targets []string
	for _, s := range servers {
		targets = append(targets, fmt.Sprintf("%q", hostPort(s.InternalURL)))
	}
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
scrape_configs:
- job_name: telemeter
  honor_labels: true
  metrics_path: /federate
  static_configs:
  - targets: [%s]
`, strings.Join(targets, ", "))
	return startPrometheus(t, "central-prometheus", cfg, nil)
}

// runClientOnce runs one telemeter-client cycle and requires it to succeed.
func runClientOnce(t *testing.T, args ...string) string {
	t.Helper()
	p := start(t, "telemeter-client", bin("telemeter-client"), append([]string{"--once", "--log-level=debug"}, args...)...)
	select {
	case <-p.done:
	case <-time.After(60 * time.Second):
		t.Fatal("telemeter-client --once did not finish within 60s")
	}
	require.NoError(t, p.err, "telemeter-client --once failed:\n%s", p.logText())
	return p.logText()
}

func checkFederated(t *testing.T, central *prometheus, clusterID string) {
	t.Helper()
	eventually(t, 30*time.Second, "central Prometheus has the cluster's series", func() error {
		alerts, err := central.query(fmt.Sprintf(`alerts{_id=%q}`, clusterID))
		if err != nil {
			return err
		}
		if len(alerts) == 0 {
			return fmt.Errorf("no alerts{_id=%q} yet", clusterID)
		}
		raw, err := central.query(fmt.Sprintf(`ALERTS{_id=%q}`, clusterID))
		if err != nil {
			return err
		}
		if len(raw) != 0 {
			return fmt.Errorf("ALERTS was not renamed: %v", raw)
		}
		up, err := central.query(fmt.Sprintf(`up{_id=%q}`, clusterID))
		if err != nil {
			return err
		}
		if len(up) != 1 {
			return fmt.Errorf("want exactly one up series, got %v", up)
		}
		inst := up[0].Metric["instance"]
		if len(inst) != 12 || strings.Contains(inst, "127.0.0.1") {
			return fmt.Errorf("instance %q is not anonymized to 12 characters", inst)
		}
		// Only matched series were sent.
		other, err := central.query(fmt.Sprintf(`{_id=%q, __name__!~"up|alerts"}`, clusterID))
		if err != nil {
			return err
		}
		if len(other) != 0 {
			return fmt.Errorf("unmatched series were pushed: %v", other[0].Metric)
		}
		return nil
	})
}

func clientArgs(source *prometheus, server *telemeterServer, id, token string) []string {
	return []string{
		"--from=" + source.URL,
		"--to=" + server.URL,
		"--id=" + id,
		"--to-token=" + token,
		`--match={__name__="up"}`,
		`--match={__name__="ALERTS",alertstate="firing"}`,
		"--anonymize-labels=instance",
		"--anonymize-salt=e2e-salt",
	}
}

// The whole pipeline with the built-in authorizer: source Prometheus →
// telemeter-client → telemeter-server (--tokens-file) → central Prometheus.
func TestPipelineTokensFile(t *testing.T) {
	source := startSource(t)
	tokens := writeFile(t, "tokens.json", `[{"token":"secret-a"}]`)
	server := startServer(t, "telemeter-server", "--tokens-file="+tokens, "--storage-dir="+t.TempDir())
	central := startCentral(t, server)

	runClientOnce(t, clientArgs(source, server, "cluster-a", "secret-a")...)
	checkFederated(t, central, "cluster-a")

	// The client sends families as the server would store them (partition
	// label set, labels and series sorted): the server stores them as they
	// came, without decoding them.
	verbatim, err := metricValue(server.InternalURL, "telemeter_server_upload_families_total", "path", "verbatim")
	require.NoError(t, err)
	decoded, err := metricValue(server.InternalURL, "telemeter_server_upload_families_total", "path", "decoded")
	require.NoError(t, err)
	t.Logf("families stored verbatim: %v, decoded: %v", verbatim, decoded)
	require.Greater(t, verbatim, decoded, "most of a real client's families take the verbatim path")

	// A wrong cluster token is refused and nothing is stored for it.
	p := start(t, "client-bad-token", bin("telemeter-client"), append([]string{"--once"}, clientArgs(source, server, "cluster-b", "wrong")...)...)
	<-p.done
	require.Error(t, p.err, "a wrong token must fail --once")
	code, body, err := httpGet(server.InternalURL+"/federate", nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, code)
	require.NotContains(t, string(body), "cluster-b")
	require.Contains(t, string(body), `_id="cluster-a"`)
}

// The same with authorization-server as the upstream authorizer.
func TestPipelineAuthorizationServer(t *testing.T) {
	source := startSource(t)
	tokens := writeFile(t, "tokens.json", `[{"token":"secret-a"}]`)
	authAddr := freeAddr(t)
	start(t, "authorization-server", bin("authorization-server"), authAddr, tokens)
	waitHTTP(t, "http://"+authAddr+"/healthz", 30*time.Second)

	server := startServer(t, "telemeter-server", "--authorize=http://"+authAddr, "--storage-dir="+t.TempDir())
	central := startCentral(t, server)

	runClientOnce(t, clientArgs(source, server, "cluster-a", "secret-a")...)
	checkFederated(t, central, "cluster-a")
}
