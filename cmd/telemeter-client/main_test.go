package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/telemeter/telemeter/internal/app/client"
	"github.com/telemeter/telemeter/internal/upload"
)

// TestMain lets the signal test run this binary as telemeter-client.
func TestMain(m *testing.M) {
	if os.Getenv("TELEMETER_CLIENT_MAIN") == "1" {
		os.Exit(run(os.Args[1:], os.Stderr))
	}
	os.Exit(m.Run())
}

func TestRefusesToStart(t *testing.T) {
	dir := t.TempDir()
	badRules := filepath.Join(dir, "rules")
	require.NoError(t, os.WriteFile(badRules, []byte("{job=~\"(\"}\n"), 0o600))
	ok := []string{"--from", "http://127.0.0.1:9090", "--to", "http://127.0.0.1:8080", "--id", "c1", "--to-token", "t"}
	with := func(extra ...string) []string { return append(append([]string{}, ok...), extra...) }
	without := func(flag string) []string {
		var out []string
		for i := 0; i < len(ok); i += 2 {
			if ok[i] != flag {
				out = append(out, ok[i], ok[i+1])
			}
		}
		return out
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no --from", without("--from"), "--from is required"},
		{"bad --from", with("--from", "localhost:9090"), "--from: parse prometheus url"},
		{"no --to", without("--to"), "--to is required"},
		{"only --to-auth", append(without("--to"), "--to-auth", "http://a/authorize"), "--to is required"},
		{"bad --to", with("--to", "ftp://x"), "--to-auth: \"ftp://x/authorize\" is not an http(s) URL"},
		{"no --id", without("--id"), "--id is required"},
		{"no token", without("--to-token"), "--to-token or --to-token-file is required"},
		{"two tokens", with("--to-token-file", "/x"), "set only one"},
		{"anonymize without salt", with("--anonymize-labels", "instance"), "--anonymize-labels needs a salt"},
		{"bad anonymize label", with("--anonymize-labels", "in-stance", "--anonymize-salt", "s"), `invalid label name "in-stance"`},
		{"missing salt file", with("--anonymize-labels", "instance", "--anonymize-salt-file", filepath.Join(dir, "none")), "--anonymize-salt-file"},
		{"bad anonymize mode", with("--anonymize-mode", "md5"), "--anonymize-mode"},
		{"label without =", with("--label", "region"), `--label: parse label "region"`},
		{"label bad name", with("--label", "1x=y"), "--label: parse label"},
		{"label reserved", with("--label", "__x=y"), "reserved"},
		{"rename without =", with("--rename", "ALERTS"), "--rename"},
		{"rename bad name", with("--rename", "a=b-c"), "--rename"},
		{"match does not parse", with("--match", `{__name__=~"("}`), "--match: parse selector 1"},
		{"match matches everything", with("--match", `{job=~".*"}`), "--match"},
		{"match file does not parse", with("--match-file", badRules), "--match: parse selector 1"},
		{"match file missing", with("--match-file", filepath.Join(dir, "none")), "--match-file"},
		{"zero interval", with("--interval", "0s"), "--interval must be positive"},
		{"bad interval", with("--interval", "often"), "invalid value \"often\" for flag -interval"},
		{"zero limit", with("--limit-bytes", "0"), "--limit-bytes must be positive"},
		{"bad log level", with("--log-level", "verbose"), `--log-level "verbose"`},
		{"missing from token file", with("--from-token-file", filepath.Join(dir, "none")), "--from-token-file"},
		{"unknown flag", with("--frobnicate"), "flag provided but not defined: -frobnicate"},
		{"positional argument", with("extra"), `unexpected argument "extra"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			code := run(tc.args, &stderr)
			require.Equal(t, 2, code, stderr.String())
			require.Contains(t, stderr.String(), tc.want)
		})
	}
}

func TestParseFlags(t *testing.T) {
	o, err := parseFlags([]string{
		"--from", "http://127.0.0.1:9090", "--to", "https://telemeter.example.com/", "--id", "c1", "--to-token", "t",
		"--match", "up", "--match", `{__name__="ALERTS"}`,
		"--label", "a=b", "--label", "c=d",
		"--anonymize-labels", "instance, pod", "--anonymize-labels", "node", "--anonymize-salt", "s",
		"--elide-label", "replica", "--rename", "x=y", "--once",
	}, io.Discard)
	require.NoError(t, err)
	require.Equal(t, []string{"up", `{__name__="ALERTS"}`}, o.Matchers)
	require.Equal(t, []string{"a=b", "c=d"}, o.Labels)
	require.Equal(t, []string{"instance", "pod", "node"}, o.AnonymizeLabels)
	require.Equal(t, []string{"replica"}, o.ElideLabels)
	require.Equal(t, []string{"x=y"}, o.Renames)
	require.True(t, o.Once)

	o, err = parseFlags([]string{"--from", "http://p", "--to", "http://t", "--id", "c1", "--to-token", "t"}, io.Discard)
	require.NoError(t, err)
	d := client.DefaultOptions()
	require.Equal(t, 4*time.Minute+30*time.Second, o.Interval)
	require.Equal(t, int64(204800), o.LimitBytes)
	require.Equal(t, "localhost:9002", o.Listen)
	require.Equal(t, "info", o.LogLevel)
	require.Equal(t, "legacy", o.AnonymizeMode)
	require.Equal(t, d.MaxSampleAge, o.MaxSampleAge)
	require.Empty(t, o.Matchers, "the default rule is applied when the configuration loads")

	_, err = parseFlags([]string{"--from", "http://p", "--to-auth", "http://a/auth", "--to-upload", "http://a/up", "--id", "c1", "--to-token", "t"}, io.Discard)
	require.NoError(t, err, "--to-auth and --to-upload together replace --to")
}

// fakes is a Prometheus serving one series and a telemeter server.
type fakes struct {
	prom, server *httptest.Server
	mu           sync.Mutex
	uploads      [][]byte
}

func newFakes(t *testing.T) *fakes {
	f := &fakes{}
	f.prom = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", upload.MediaTypeText)
		_, _ = io.WriteString(w, "# TYPE up untyped\nup{instance=\"10.0.0.1:9100\",job=\"node\"} 1\n")
	}))
	t.Cleanup(f.prom.Close)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /authorize", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer t" {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		_ = json.NewEncoder(w).Encode(upload.AuthorizeResponse{Version: 1, Token: "jwt", ExpiresInSeconds: 60,
			Labels: map[string]string{"_id": r.URL.Query().Get("id")}})
	})
	mux.HandleFunc("POST /upload", func(w http.ResponseWriter, r *http.Request) {
		fams, err := upload.Decode(r.Body, r.Header.Get("Content-Type"), r.Header.Get("Content-Encoding"), upload.Limits{})
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var buf bytes.Buffer
		for _, mf := range fams {
			buf.WriteString(mf.String())
		}
		f.mu.Lock()
		f.uploads = append(f.uploads, buf.Bytes())
		f.mu.Unlock()
	})
	f.server = httptest.NewServer(mux)
	t.Cleanup(f.server.Close)
	return f
}

func TestOnce(t *testing.T) {
	f := newFakes(t)
	var stderr bytes.Buffer
	code := run([]string{"--once", "--from", f.prom.URL, "--to", f.server.URL, "--id", "c1", "--to-token", "t",
		"--anonymize-labels", "instance", "--anonymize-salt", "s"}, &stderr)
	require.Equal(t, 0, code, stderr.String())
	require.Len(t, f.uploads, 1)
	require.Contains(t, string(f.uploads[0]), `value:"c1"`)
	require.NotContains(t, string(f.uploads[0]), "10.0.0.1")

	stderr.Reset()
	code = run([]string{"--once", "--from", f.prom.URL, "--to", f.server.URL, "--id", "c1", "--to-token", "wrong"}, &stderr)
	require.Equal(t, 1, code)
	require.Contains(t, stderr.String(), "unauthorized")
}

// TestSignals runs this test binary as telemeter-client: SIGHUP reloads,
// SIGTERM stops it with exit status 0.
func TestSignals(t *testing.T) {
	f := newFakes(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())

	cmd := exec.Command(os.Args[0], "--from", f.prom.URL, "--to", f.server.URL, "--id", "c1", "--to-token", "t",
		"--listen", addr, "--interval", "1h", "--log-level", "debug")
	cmd.Env = append(os.Environ(), "TELEMETER_CLIENT_MAIN=1")
	var stderr syncBuffer
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })

	metrics := func() string {
		resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + addr + "/metrics")
		if err != nil {
			return ""
		}
		defer func() { _ = resp.Body.Close() }()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	// The machine may be loaded: starting a -race binary can take seconds.
	waitFor(t, func() bool { return strings.Contains(metrics(), "telemeter_client_reloads_total") }, stderr.String)
	require.NoError(t, cmd.Process.Signal(syscall.SIGHUP))
	waitFor(t, func() bool {
		return strings.Contains(metrics(), `telemeter_client_reloads_total{result="success"} 1`)
	}, stderr.String)
	require.Contains(t, metrics(), "go_goroutines", "main registers the runtime collectors")

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-done:
		require.NoError(t, err, stderr.String())
	case <-time.After(15 * time.Second):
		t.Fatalf("no exit within 15s of SIGTERM; stderr:\n%s", stderr.String())
	}
	require.Contains(t, stderr.String(), "level=DEBUG", "--log-level debug shows debug logs")
	require.Contains(t, stderr.String(), "configuration reloaded")
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func waitFor(t *testing.T, cond func() bool, logs func() string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within 30s; client log:\n%s", logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
