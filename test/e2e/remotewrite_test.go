//go:build e2e

package e2e

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// startTarget runs a Prometheus that accepts remote write, on addr with
// storage dir (so it can be restarted with its data).
func startTarget(t *testing.T, name, addr, dir string) *prometheus {
	t.Helper()
	cfg := writeIn(t, dir, "prometheus.yml", "global:\n  scrape_interval: 1m\n")
	p := &prometheus{URL: "http://" + addr}
	p.proc = start(t, name, prometheusBin(t), "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--web.enable-remote-write-receiver")
	waitHTTP(t, p.URL+"/-/ready", 60*time.Second)
	return p
}

// client → server → remote-write target; the target goes away and comes
// back: uploads are still acknowledged, the latest data arrives, lag is 0.
func TestRemoteWriteForwarding(t *testing.T) {
	targetAddr, targetDir := freeAddr(t), t.TempDir()
	target := startTarget(t, "rw-target", targetAddr, targetDir)
	s := startSingle(t, t.TempDir(), "--ratelimit=0s", "--forward-url="+target.URL+"/api/v1/write")
	p := newPusher("fleet-token")

	code, err := p.push(t.Context(), s.URL, "rw-cluster", 1)
	require.NoError(t, err)
	require.Equal(t, 200, code)
	eventually(t, 30*time.Second, "target has the series with _id", func() error {
		v, err := target.query(`e2e_sequence{_id="rw-cluster"}`)
		if err != nil {
			return err
		}
		if len(v) != 3 {
			return fmt.Errorf("%d series", len(v))
		}
		return nil
	})

	target.stop(15, 15*time.Second) // SIGTERM
	for i := 2; i <= 4; i++ {
		code, err := p.push(t.Context(), s.URL, "rw-cluster", float64(i))
		require.NoError(t, err)
		require.Equal(t, 200, code, "uploads are stored and acknowledged while the target is down")
	}
	eventually(t, 30*time.Second, "lag grows while the target is down", func() error {
		v, err := metricValue(s.InternalURL, "telemeter_server_remote_write_lag_seconds")
		if err != nil {
			return err
		}
		if v <= 0 {
			return fmt.Errorf("lag %v", v)
		}
		return nil
	})

	target = startTarget(t, "rw-target-again", targetAddr, targetDir)
	eventually(t, 90*time.Second, "the latest value arrives after the target returns", func() error {
		v, err := target.query(`e2e_sequence{_id="rw-cluster"}`)
		if err != nil {
			return err
		}
		if len(v) == 0 || v[0].Value[1] != "4" {
			return fmt.Errorf("got %v", v)
		}
		return nil
	})
	eventually(t, 30*time.Second, "lag returns to zero", func() error {
		v, err := metricValue(s.InternalURL, "telemeter_server_remote_write_lag_seconds")
		if err != nil {
			return err
		}
		if v != 0 {
			return fmt.Errorf("lag %v", v)
		}
		return nil
	})
}

func credential(token, clusterID string) string {
	b, _ := json.Marshal(map[string]string{"authorization_token": token, "cluster_id": clusterID})
	return base64.StdEncoding.EncodeToString(b)
}

// A real Prometheus remote-writes to /metrics/v1/receive with the base64
// credential; its data reaches the target. A wrong _id is refused and never
// forwarded.
func TestRemoteWriteReceive(t *testing.T) {
	target := startTarget(t, "rw-target", freeAddr(t), t.TempDir())
	s := startSingle(t, t.TempDir(), "--forward-url="+target.URL+"/api/v1/write", "--receive-ratelimit=0s")

	sender := func(name, clusterID, idLabel string) *prometheus {
		self := freeAddr(t)
		cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  external_labels: {_id: %q}
scrape_configs:
- job_name: sender
  static_configs: [{targets: [%q]}]
remote_write:
- url: %s/metrics/v1/receive
  bearer_token: %q
  queue_config: {batch_send_deadline: 1s, max_shards: 1}
`, idLabel, self, s.URL, credential("fleet-token", clusterID))
		dir := t.TempDir()
		p := &prometheus{URL: "http://" + self}
		p.proc = start(t, name, prometheusBin(t), "--config.file="+writeIn(t, dir, "prometheus.yml", cfg),
			"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+self)
		waitHTTP(t, p.URL+"/-/ready", 60*time.Second)
		return p
	}
	sender("agent-good", "rw-agent", "rw-agent")
	sender("agent-liar", "rw-liar", "someone-else")

	eventually(t, 60*time.Second, "the agent's series reach the target with _id", func() error {
		v, err := target.query(`up{_id="rw-agent", job="sender"}`)
		if err != nil {
			return err
		}
		if len(v) != 1 {
			return fmt.Errorf("%d series", len(v))
		}
		return nil
	})
	eventually(t, 30*time.Second, "the sender with a foreign _id is refused", func() error {
		forbidden, err := metricValue(s.InternalURL, "telemeter_server_http_requests_total", "handler", "receive", "code", "403")
		if err != nil {
			return err
		}
		if forbidden == 0 {
			return fmt.Errorf("no 403 yet")
		}
		return nil
	})
	for _, q := range []string{`{_id="someone-else"}`, `{_id="rw-liar"}`} {
		v, err := target.query(q)
		require.NoError(t, err)
		require.Empty(t, v, "data with a foreign _id was forwarded: %s", q)
	}
}
