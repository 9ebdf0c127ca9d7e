package client

import (
	"context"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/telemeter/telemeter/internal/transform"
	"github.com/telemeter/telemeter/internal/upload"
)

var testRules = []string{
	`{__name__="ALERTS",alertstate="firing"}`,
	`{__name__="up"}`,
	`{__name__=~"cluster_version|cluster_operator_up"}`,
}

func testOptions(p *sourcePrometheus, rc *receiver) Options {
	o := DefaultOptions()
	o.From = p.srv.URL
	o.To = rc.srv.URL
	o.ID = "c1"
	o.ToToken = rc.token
	o.Matchers = testRules
	o.AnonymizeLabels = []string{"instance"}
	o.AnonymizeSalt = "s"
	o.Labels = []string{"region=eu"}
	o.ElideLabels = []string{"prometheus_replica"}
	o.Interval = 200 * time.Millisecond
	o.Listen = ""
	o.Logger = slog.New(slog.DiscardHandler)
	o.Registry = prometheus.NewRegistry()
	return o
}

// running starts Run in the background and returns a stop function that
// cancels it and checks it returned nil in bounded time.
func running(t *testing.T, o Options) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, o) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				require.NoError(t, err, "a cancelled context is a clean stop")
			case <-time.After(10 * time.Second):
				t.Fatal("Run did not return within 10s of cancellation")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	return l
}

func get(t *testing.T, url, accept string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	require.NoError(t, err)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b), resp.Header
}

// expectedSeries counts the T232 series the test rules select.
func expectedSeries(src []*dto.MetricFamily) int {
	n := 0
	for _, mf := range src {
		for _, m := range mf.Metric {
			state, _ := labelValue(m, "alertstate")
			switch mf.GetName() {
			case "ALERTS":
				if state == "firing" {
					n++
				}
			case "up", "cluster_version", "cluster_operator_up":
				n++
			}
		}
	}
	return n
}

func TestRunPushesTransformedBatch(t *testing.T) {
	src := loadT232(t)
	p := newSourcePrometheus(t, src)
	rc := newReceiver(t, "cluster-token")
	o := testOptions(p, rc)
	l := listen(t)
	o.Listener = l
	base := "http://" + l.Addr().String()
	stop := running(t, o)

	got := rc.waitUpload(t)

	// Only matched series, ALERTS renamed to alerts.
	names := familyNames(got)
	require.Contains(t, names, "alerts")
	require.NotContains(t, names, "ALERTS")
	for _, n := range names {
		require.Contains(t, []string{"alerts", "up", "cluster_version", "cluster_operator_up"}, n)
	}
	require.True(t, slices.IsSorted(names), "families sorted by name: %v", names)

	// Every instance value is the legacy 12-character token of a source value.
	tokens := map[string]bool{}
	for _, mf := range src {
		for _, m := range mf.Metric {
			if v, ok := labelValue(m, "instance"); ok && v != "" {
				tokens[transform.AnonymizeValue("s", v, transform.AnonymizeLegacy)] = true
			}
		}
	}
	series, anonymized := 0, 0
	for _, mf := range got {
		for _, m := range mf.Metric {
			series++
			id, ok := labelValue(m, upload.IDLabel)
			require.True(t, ok, "%s has no _id", mf.GetName())
			require.Equal(t, "c1", id)
			region, _ := labelValue(m, "region")
			require.Equal(t, "eu", region)
			_, elided := labelValue(m, "prometheus_replica")
			require.False(t, elided, "prometheus_replica is elided")
			if v, _ := labelValue(m, "instance"); v != "" {
				require.Len(t, v, 12)
				require.True(t, tokens[v], "instance %q is not an anonymized source value", v)
				anonymized++
			}
			if mf.GetName() == "alerts" {
				state, _ := labelValue(m, "alertstate")
				require.Equal(t, "firing", state)
			}
		}
	}
	require.Equal(t, expectedSeries(src), series)
	require.Positive(t, anonymized)

	// The rules went to Prometheus as match[], one each.
	p.mu.Lock()
	require.Equal(t, testRules, p.matches[0])
	p.mu.Unlock()

	// /federate shows what left, in text and in protobuf.
	code, body, hdr := get(t, base+"/federate", "text/plain")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, hdr.Get("Content-Type"), "text/plain")
	parsed, err := textParse(strings.NewReader(body))
	require.NoError(t, err)
	require.Contains(t, parsed, "alerts")
	require.NotContains(t, parsed, "ALERTS")
	require.Contains(t, body, `_id="c1"`)

	code, body, hdr = get(t, base+"/federate", upload.MediaTypeProtoDelim)
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, hdr.Get("Content-Type"), "application/vnd.google.protobuf")
	fed, err := upload.Decode(strings.NewReader(body), hdr.Get("Content-Type"), "", upload.Limits{})
	require.NoError(t, err)
	fedSeries := 0
	for _, mf := range fed {
		fedSeries += len(mf.Metric)
	}
	require.Equal(t, series, fedSeries)

	code, _, _ = get(t, base+"/healthz", "")
	require.Equal(t, http.StatusOK, code)
	code, _, _ = get(t, base+"/healthz/ready", "")
	require.Equal(t, http.StatusOK, code)

	code, body, _ = get(t, base+"/metrics", "")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, `telemeter_client_pushes_total{result="success"}`)
	require.Contains(t, body, "telemeter_client_samples_pushed ")
	require.Contains(t, body, "telemeter_client_last_push_success_timestamp_seconds ")
	require.Contains(t, body, "telemeter_client_scrape_duration_seconds_bucket")
	require.NotContains(t, body, `_id=`, "no per-cluster labels on the client's metrics")

	// It keeps pushing every interval.
	rc.waitUpload(t)
	stop()
	// The listener is closed after a clean stop.
	_, err = net.DialTimeout("tcp", l.Addr().String(), time.Second)
	require.Error(t, err)
}

func TestReadyOnlyAfterFirstSuccessfulPush(t *testing.T) {
	p := newSourcePrometheus(t, loadT232(t))
	rc := newReceiver(t, "cluster-token")
	o := testOptions(p, rc)
	o.Interval = time.Hour
	o.Rand = rand.New(constSource(1 << 63)) // first push in 30 min
	l := listen(t)
	o.Listener = l
	running(t, o)
	base := "http://" + l.Addr().String()
	code, body, _ := get(t, base+"/healthz/ready", "")
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Contains(t, body, "no successful push yet")
	code, body, _ = get(t, base+"/federate", "")
	require.Equal(t, http.StatusOK, code)
	require.Empty(t, body, "nothing has left yet")
	code, _, _ = get(t, base+"/healthz", "")
	require.Equal(t, http.StatusOK, code)
}

// constSource always yields v.
type constSource uint64

func (c constSource) Uint64() uint64 { return uint64(c) }

func TestRunReload(t *testing.T) {
	p := newSourcePrometheus(t, loadT232(t))
	rc := newReceiver(t, "cluster-token")
	dir := t.TempDir()
	matchFile := filepath.Join(dir, "rules")
	require.NoError(t, os.WriteFile(matchFile, []byte("# only up\n{__name__=\"up\"}\n"), 0o600))
	o := testOptions(p, rc)
	o.Matchers = nil
	o.MatchFile = matchFile
	l := listen(t)
	o.Listener = l
	hup := make(chan os.Signal, 1)
	o.Reload = hup
	reg := o.Registry
	running(t, o)

	require.Equal(t, []string{"up"}, familyNames(rc.waitUpload(t)))

	// SIGHUP picks up new rules.
	require.NoError(t, os.WriteFile(matchFile, []byte("{__name__=\"cluster_version\"}\n"), 0o600))
	hup <- syscall.SIGHUP
	waitFor(t, func() bool {
		return slices.Equal(familyNames(rc.waitUpload(t)), []string{"cluster_version"})
	})
	require.Equal(t, 1.0, counterValue(t, reg, "telemeter_client_reloads_total", "success"))

	// A rule that does not parse: the reload fails, the old rules stay.
	require.NoError(t, os.WriteFile(matchFile, []byte("{__name__=~\"(\"}\n"), 0o600))
	resp, err := http.Post("http://"+l.Addr().String()+"/-/reload", "", nil)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusInternalServerError, resp.StatusCode)
	require.Contains(t, string(body), "running configuration kept")
	require.Equal(t, 1.0, counterValue(t, reg, "telemeter_client_reloads_total", "failure"))
	rc.waitUpload(t) // may have been built before the reload
	require.Equal(t, []string{"cluster_version"}, familyNames(rc.waitUpload(t)))

	// Fixed again, a reload succeeds.
	require.NoError(t, os.WriteFile(matchFile, []byte("{__name__=\"up\"}\n"), 0o600))
	resp, err = http.Post("http://"+l.Addr().String()+"/-/reload", "", nil)
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, 2.0, counterValue(t, reg, "telemeter_client_reloads_total", "success"))

	resp, err = http.Get("http://" + l.Addr().String() + "/-/reload")
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
}

func TestReloadRereadsSaltAndToken(t *testing.T) {
	p := newSourcePrometheus(t, loadT232(t))
	rc := newReceiver(t, "cluster-token")
	dir := t.TempDir()
	saltFile := filepath.Join(dir, "salt")
	tokenFile := filepath.Join(dir, "token")
	require.NoError(t, os.WriteFile(saltFile, []byte("salt-1\n"), 0o600))
	require.NoError(t, os.WriteFile(tokenFile, []byte("cluster-token\n"), 0o600))
	o := testOptions(p, rc)
	o.Matchers = []string{`{__name__="cluster_installer"}`}
	o.AnonymizeSalt, o.AnonymizeSaltFile = "", saltFile
	o.ToToken, o.ToTokenFile = "", tokenFile
	o.Once = true
	o.Interval = DefaultInterval // the bound of the one cycle
	o.Registry = prometheus.NewRegistry()
	c, err := newClient(&o, o.Logger, o.Registry)
	require.NoError(t, err)

	instance := func() string {
		require.NoError(t, c.cycle(t.Context()))
		v, _ := labelValue(rc.last()[0].Metric[0], "instance")
		return v
	}
	require.Equal(t, transform.AnonymizeValue("salt-1", "10.0.150.196:9099", transform.AnonymizeLegacy), instance())

	require.NoError(t, os.WriteFile(saltFile, []byte("salt-2\n"), 0o600))
	require.NoError(t, c.reload())
	require.Equal(t, transform.AnonymizeValue("salt-2", "10.0.150.196:9099", transform.AnonymizeLegacy), instance())

	// An emptied salt file is refused; the old salt stays.
	require.NoError(t, os.WriteFile(saltFile, nil, 0o600))
	require.ErrorContains(t, c.reload(), "--anonymize-salt-file")
	require.Equal(t, transform.AnonymizeValue("salt-2", "10.0.150.196:9099", transform.AnonymizeLegacy), instance())

	// A new cluster token makes the client authorize again.
	rc.mu.Lock()
	before := rc.authCount
	rc.mu.Unlock()
	require.NoError(t, os.WriteFile(saltFile, []byte("salt-2"), 0o600))
	require.NoError(t, os.WriteFile(tokenFile, []byte("rotated"), 0o600))
	rc.setToken("rotated")
	require.NoError(t, c.reload())
	instance()
	rc.mu.Lock()
	require.Equal(t, before+1, rc.authCount)
	rc.mu.Unlock()
}

func TestRunOnce(t *testing.T) {
	p := newSourcePrometheus(t, loadT232(t))
	t.Run("success", func(t *testing.T) {
		rc := newReceiver(t, "cluster-token")
		o := testOptions(p, rc)
		o.Once = true
		o.Interval = DefaultInterval // the bound of the one cycle
		require.NoError(t, Run(t.Context(), o))
		rc.mu.Lock()
		defer rc.mu.Unlock()
		require.Len(t, rc.uploads, 1)
	})
	t.Run("rejected push fails", func(t *testing.T) {
		rc := newReceiver(t, "cluster-token")
		rc.status = http.StatusBadRequest
		o := testOptions(p, rc)
		o.Once = true
		o.Interval = DefaultInterval // the bound of the one cycle
		err := Run(t.Context(), o)
		require.ErrorIs(t, err, upload.ErrInvalid)
		require.ErrorContains(t, err, "run once")
	})
	t.Run("wrong cluster token fails", func(t *testing.T) {
		rc := newReceiver(t, "cluster-token")
		o := testOptions(p, rc)
		o.ToToken = "wrong"
		o.Once = true
		o.Interval = DefaultInterval // the bound of the one cycle
		require.ErrorIs(t, Run(t.Context(), o), upload.ErrUnauthorized)
	})
	t.Run("unreachable prometheus fails", func(t *testing.T) {
		rc := newReceiver(t, "cluster-token")
		o := testOptions(p, rc)
		o.From = "http://127.0.0.1:1"
		o.Once = true
		o.Interval = DefaultInterval // the bound of the one cycle
		require.ErrorContains(t, Run(t.Context(), o), "scrape federate")
	})
	t.Run("batch over --limit-bytes is not sent", func(t *testing.T) {
		rc := newReceiver(t, "cluster-token")
		o := testOptions(p, rc)
		o.LimitBytes = 100
		o.Once = true
		o.Interval = DefaultInterval // the bound of the one cycle
		err := Run(t.Context(), o)
		require.ErrorContains(t, err, "--limit-bytes")
		rc.mu.Lock()
		defer rc.mu.Unlock()
		require.Empty(t, rc.uploads)
	})
}

// TestFirstPushSpread is QUALITY R21's start-up case: 1,000 clients started
// together, each with its own random source, must spread their first pushes
// over the interval so that no bucket gets more than twice the mean.
func TestFirstPushSpread(t *testing.T) {
	p := newSourcePrometheus(t, nil)
	rc := newReceiver(t, "cluster-token")
	o := testOptions(p, rc)
	o.Interval = DefaultInterval
	c, err := newClient(&o, o.Logger, o.Registry)
	require.NoError(t, err)

	const clients, buckets = 1000, 30
	counts := make([]int, buckets)
	for i := range clients {
		r := rand.New(rand.NewPCG(uint64(i), 0x7e1e))
		c.rand = r.Float64
		var first time.Duration
		ctx, cancel := context.WithCancel(t.Context())
		c.sleep = func(ctx context.Context, d time.Duration) error {
			first = d
			cancel()
			return ctx.Err()
		}
		require.NoError(t, c.loop(ctx))
		require.GreaterOrEqual(t, first, time.Duration(0))
		require.Less(t, first, o.Interval)
		counts[int(first*buckets/o.Interval)]++
	}
	mean := float64(clients) / buckets
	peak := slices.Max(counts)
	t.Logf("first pushes per %s bucket: %v (peak %d, mean %.1f)", o.Interval/buckets, counts, peak, mean)
	require.LessOrEqual(t, float64(peak), 2*mean)
	require.Positive(t, slices.Min(counts), "every part of the interval gets pushes")
}

func TestNextDelayJitter(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	seen := map[time.Duration]bool{}
	for range 1000 {
		d := nextDelay(r.Float64, 100*time.Second)
		require.GreaterOrEqual(t, d, 95*time.Second)
		require.LessOrEqual(t, d, 105*time.Second)
		seen[d] = true
	}
	require.Greater(t, len(seen), 900)
}

func TestLoopStopsRetriesBeforeNextCycle(t *testing.T) {
	p := newSourcePrometheus(t, loadT232(t))
	rc := newReceiver(t, "cluster-token")
	rc.status = http.StatusServiceUnavailable
	o := testOptions(p, rc)
	o.Interval = 300 * time.Millisecond
	reg := o.Registry
	running(t, o)
	// Retries fail and back off; each cycle gives up by its deadline and
	// the loop goes on to the next one.
	waitFor(t, func() bool {
		return counterValue(t, reg, "telemeter_client_pushes_total", "failed") >= 2
	})
}

func TestNewLoggerLevels(t *testing.T) {
	for _, tc := range []struct {
		level      string
		debug, inf bool
		warn, errs bool
	}{
		{"debug", true, true, true, true},
		{"info", false, true, true, true},
		{"warn", false, false, true, true},
		{"error", false, false, false, true},
	} {
		t.Run(tc.level, func(t *testing.T) {
			var buf strings.Builder
			l, err := NewLogger(&buf, tc.level)
			require.NoError(t, err)
			l.Debug("d-msg")
			l.Info("i-msg")
			l.Warn("w-msg")
			l.Error("e-msg")
			out := buf.String()
			require.Equal(t, tc.debug, strings.Contains(out, "d-msg"))
			require.Equal(t, tc.inf, strings.Contains(out, "i-msg"))
			require.Equal(t, tc.warn, strings.Contains(out, "w-msg"))
			require.Equal(t, tc.errs, strings.Contains(out, "e-msg"))
		})
	}
	_, err := NewLogger(io.Discard, "verbose")
	require.ErrorContains(t, err, "--log-level")
}

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	rules := filepath.Join(dir, "rules")
	require.NoError(t, os.WriteFile(rules, []byte("\n# comment\n  up  \n{job=\"x\"}\n"), 0o600))
	o := Options{Matchers: []string{"a"}, MatchFile: rules, AnonymizeMode: "legacy"}
	cfg, err := loadConfig(&o)
	require.NoError(t, err)
	require.Equal(t, []string{"a", "up", `{job="x"}`}, cfg.rules)

	o = Options{AnonymizeMode: "legacy"}
	cfg, err = loadConfig(&o)
	require.NoError(t, err)
	require.Equal(t, []string{DefaultMatch}, cfg.rules, "default rule when none is given")

	require.NoError(t, os.WriteFile(rules, []byte("# nothing\n"), 0o600))
	o = Options{MatchFile: rules, AnonymizeMode: "legacy"}
	_, err = loadConfig(&o)
	require.ErrorContains(t, err, "holds no rule")

	for _, tc := range []struct {
		name  string
		flags []string
		want  map[string]string
	}{
		{"default", nil, map[string]string{"ALERTS": "alerts"}},
		{"added", []string{"a=b"}, map[string]string{"ALERTS": "alerts", "a": "b"}},
		{"overridden", []string{"ALERTS=firing_alerts"}, map[string]string{"ALERTS": "firing_alerts"}},
		{"target taken", []string{"x=alerts"}, map[string]string{"x": "alerts"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseRenames(tc.flags)
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

func counterValue(t *testing.T, reg *prometheus.Registry, name, result string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.Metric {
			if v, _ := labelValue(m, "result"); v == result {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// waitFor polls cond for up to 30 seconds (the machine may be loaded).
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 30s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
