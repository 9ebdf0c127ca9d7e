package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/telemeter/telemeter/internal/app/benchmark"
	"github.com/telemeter/telemeter/internal/upload"
)

func TestParseFlags(t *testing.T) {
	for _, tc := range []struct {
		name  string
		args  []string
		check func(t *testing.T, o benchmark.Options)
		err   string
	}{
		{
			name: "the original's flags and defaults",
			args: []string{"--to", "https://telemeter.example", "--to-token", "t", "--to-ca-file", "/ca.pem", "--metrics-file", "/m.txt"},
			check: func(t *testing.T, o benchmark.Options) {
				require.Equal(t, "https://telemeter.example", o.To)
				require.Equal(t, "/ca.pem", o.ToCAFile)
				require.Equal(t, "/m.txt", o.MetricsFile)
				require.Equal(t, 4*time.Minute+30*time.Second, o.Interval)
				require.Equal(t, 1000, o.Workers)
				require.Equal(t, "localhost:8080", o.Listen)
				require.Equal(t, benchmark.ModeInterval, o.Mode)
				require.Equal(t, benchmark.ReportText, o.Report)
				require.Equal(t, 1, o.SeriesMultiplier)
				require.Zero(t, o.Count)
				require.Zero(t, o.Duration)
			},
		},
		{
			name: "every added flag",
			args: []string{"--to-auth", "http://a/authorize", "--to-upload", "http://a/upload", "--to-token-file", "/tok",
				"--interval", "1m", "--workers", "5000", "--id-prefix", "w1-", "--duration", "15m", "--count", "3",
				"--concurrency", "8", "--mode", "saturate", "--series-multiplier", "43", "--report", "json",
				"--request-timeout", "5s", "--seed", "7", "--listen", "", "--log-level", "debug"},
			check: func(t *testing.T, o benchmark.Options) {
				require.Equal(t, "http://a/authorize", o.ToAuthorize)
				require.Equal(t, "http://a/upload", o.ToUpload)
				require.Equal(t, "/tok", o.ToTokenFile)
				require.Equal(t, time.Minute, o.Interval)
				require.Equal(t, 5000, o.Workers)
				require.Equal(t, "w1-", o.IDPrefix)
				require.Equal(t, 15*time.Minute, o.Duration)
				require.Equal(t, 3, o.Count)
				require.Equal(t, 8, o.Concurrency)
				require.Equal(t, benchmark.ModeSaturate, o.Mode)
				require.Equal(t, 43, o.SeriesMultiplier)
				require.Equal(t, benchmark.ReportJSON, o.Report)
				require.Equal(t, 5*time.Second, o.RequestTimeout)
				require.Equal(t, uint64(7), o.Seed)
				require.Empty(t, o.Listen)
				require.Equal(t, "debug", o.LogLevel)
			},
		},
		{
			name: "remote-write peer needs no token",
			args: []string{"--target", "remote-write", "--to", "http://127.0.0.1:9090/api/v1/write", "--ids-file", "/ids"},
			check: func(t *testing.T, o benchmark.Options) {
				require.Equal(t, benchmark.TargetRemoteWrite, o.Target)
				require.Equal(t, "http://127.0.0.1:9090/api/v1/write", o.To)
				require.Equal(t, "/ids", o.IDsFile)
			},
		},
		{
			name: "pushgateway peer",
			args: []string{"--target", "pushgateway", "--to", "http://127.0.0.1:9091"},
			check: func(t *testing.T, o benchmark.Options) {
				require.Equal(t, benchmark.TargetPushgateway, o.Target)
			},
		},
		{name: "telemeter is the default target", args: []string{"--to", "http://a"}, err: "--to-token"},
		{name: "unknown target", args: []string{"--target", "graphite", "--to", "http://a"}, err: "--target"},
		{name: "peer without a URL", args: []string{"--target", "pushgateway"}, err: "--to is required"},
		{name: "no server", args: []string{"--to-token", "t"}, err: "--to is required"},
		{name: "bad mode", args: []string{"--to", "http://a", "--to-token", "t", "--mode", "fast"}, err: "--mode"},
		{name: "stray argument", args: []string{"--to", "http://a", "--to-token", "t", "extra"}, err: "unexpected argument"},
		{name: "unknown flag", args: []string{"--to", "http://a", "--from", "x"}, err: "flag provided but not defined"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := parseFlags(tc.args, io.Discard)
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			tc.check(t, o)
		})
	}
}

// TestRunPrintsJSONReport runs the command against a minimal server and
// parses the one JSON object it prints.
func TestRunPrintsJSONReport(t *testing.T) {
	var uploads atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("/authorize", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer secret" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		id := r.URL.Query().Get("id")
		_ = json.NewEncoder(w).Encode(upload.AuthorizeResponse{Version: 1, Token: "jwt-" + id, Labels: map[string]string{upload.IDLabel: id}})
	})
	mux.HandleFunc("/upload", func(w http.ResponseWriter, r *http.Request) {
		if _, err := upload.Decode(r.Body, r.Header.Get("Content-Type"), r.Header.Get("Content-Encoding"), upload.Limits{}); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if uploads.Add(1)%4 == 0 {
			http.Error(w, "slow down", http.StatusTooManyRequests)
		}
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	var stdout, stderr bytes.Buffer
	code := run([]string{"--to", srv.URL, "--to-token", "secret", "--workers", "3", "--count", "4",
		"--mode", "saturate", "--listen", "", "--report", "json"}, &stdout, &stderr)
	require.Equal(t, 0, code, stderr.String())
	require.Equal(t, 1, strings.Count(stdout.String(), "\n"), "one JSON object on one line: %s", stdout.String())
	var rep benchmark.Report
	require.NoError(t, json.Unmarshal(stdout.Bytes(), &rep))
	require.Equal(t, int64(12), rep.Uploads)
	require.Equal(t, map[string]int64{"200": 9, "429": 3}, rep.Status)
	require.Equal(t, int64(3), rep.NonSuccess)
	require.Equal(t, int64(9*232), rep.Samples)
	require.Equal(t, int64(3), rep.Authorizations)

	stdout.Reset()
	require.Equal(t, 2, run([]string{"--to", srv.URL}, &stdout, io.Discard), "a missing token is a usage error")
	require.Empty(t, stdout.String())
}
