package main

import (
	"bufio"
	"bytes"
	"flag"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestParseInterleaved(t *testing.T) {
	for _, tc := range []struct {
		name       string
		args       []string
		positional []string
		claims     string
		level      string
	}{
		{name: "as the original", args: []string{":9001", "tokens.json"}, positional: []string{":9001", "tokens.json"}, level: "info"},
		{name: "flags first", args: []string{"--log-level=debug", "--claims-file", "c.json", ":9001", "tokens.json"}, positional: []string{":9001", "tokens.json"}, claims: "c.json", level: "debug"},
		{name: "flags last", args: []string{":9001", "tokens.json", "--log-level", "warn"}, positional: []string{":9001", "tokens.json"}, level: "warn"},
		{name: "flags between", args: []string{":9001", "-claims-file=c.json", "tokens.json"}, positional: []string{":9001", "tokens.json"}, claims: "c.json", level: "info"},
		{name: "double dash", args: []string{"--", "-weird-address", "tokens.json"}, positional: []string{"-weird-address", "tokens.json"}, level: "info"},
		{name: "too many", args: []string{"a", "b", "c"}, positional: []string{"a", "b", "c"}, level: "info"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			claims := fs.String("claims-file", "", "")
			level := fs.String("log-level", "info", "")
			positional, err := parseInterleaved(fs, tc.args)
			require.NoError(t, err)
			require.Equal(t, tc.positional, positional)
			require.Equal(t, tc.claims, *claims)
			require.Equal(t, tc.level, *level)
		})
	}
}

func TestRunUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{name: "no arguments", args: nil, want: "expected two arguments"},
		{name: "one argument", args: []string{":9001"}, want: "expected two arguments"},
		{name: "unknown flag", args: []string{"--nope", ":9001", "t.json"}, want: "flag provided but not defined"},
		{name: "bad log level", args: []string{"--log-level=loud", ":9001", "t.json"}, want: "invalid --log-level"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			require.Equal(t, 2, run(tc.args, &stderr))
			require.Contains(t, stderr.String(), tc.want)
		})
	}
	var stderr bytes.Buffer
	require.Equal(t, 1, run([]string{"127.0.0.1:0", filepath.Join(t.TempDir(), "missing.json")}, &stderr))
	require.Contains(t, stderr.String(), "open tokens file")
}

// TestBinarySIGTERM builds the binary, serves a claim, and stops it with
// SIGTERM: it must exit 0 and keep the claim on disk.
func TestBinarySIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "authorization-server")
	build := exec.Command("go", "build", "-o", bin, ".")
	out, err := build.CombinedOutput()
	require.NoError(t, err, string(out))
	tokens := filepath.Join(dir, "tokens.json")
	require.NoError(t, os.WriteFile(tokens, []byte(`[{"token":"sekrit-t1"}]`), 0o600))

	cmd := exec.Command(bin, "127.0.0.1:0", tokens, "--log-level=debug")
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill() })

	// The log line says where it listens.
	addrRE := regexp.MustCompile(`address=(127\.0\.0\.1:\d+)`)
	lines := make(chan string, 64)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var addr string
	var logs strings.Builder
	timeout := time.After(30 * time.Second)
	for addr == "" {
		select {
		case l, ok := <-lines:
			require.True(t, ok, "exited early:\n%s", logs.String())
			logs.WriteString(l + "\n")
			if m := addrRE.FindStringSubmatch(l); m != nil {
				addr = m[1]
			}
		case <-timeout:
			t.Fatalf("no listen address logged:\n%s", logs.String())
		}
	}

	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Post("http://"+addr+"/", "application/json", strings.NewReader(`{"cluster_id":"c1","authorization_token":"sekrit-t1"}`))
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusCreated, resp.StatusCode)

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	exited := make(chan error, 1)
	go func() {
		for l := range lines {
			logs.WriteString(l + "\n")
		}
		exited <- cmd.Wait()
	}()
	select {
	case err := <-exited:
		require.NoError(t, err, "exit status after SIGTERM:\n%s", logs.String())
	case <-time.After(30 * time.Second):
		t.Fatal("did not exit within 30s of SIGTERM")
	}
	require.Contains(t, logs.String(), "authorization server stopped")
	require.NotContains(t, logs.String(), "sekrit", "the token is never logged")
	data, err := os.ReadFile(filepath.Join(dir, "tokens.claims.json"))
	require.NoError(t, err)
	require.Contains(t, string(data), `"cluster_id":"c1"`)
}
