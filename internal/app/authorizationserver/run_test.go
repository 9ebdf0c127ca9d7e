package authorizationserver

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/telemeter/telemeter/internal/auth"
	"github.com/telemeter/telemeter/internal/upload"
)

const testTokens = `[
	{"token": "token-a"},
	{"token": "token-b", "account_id": "acct-b"},
	{"token": "token-bound", "account_id": "acct-bound", "cluster_ids": ["bound-1"]}
]`

var accountA = auth.DefaultAccountID("token-a")

type testServer struct {
	url    string
	dir    string
	tokens string
	stop   func() error
}

// startServer runs the authorization server on 127.0.0.1:0 with the tokens
// file in dir, and stops it at the end of the test.
func startServer(t *testing.T, dir string, mutate ...func(*Options)) *testServer {
	t.Helper()
	tokens := filepath.Join(dir, "tokens.json")
	if _, err := os.Stat(tokens); os.IsNotExist(err) {
		require.NoError(t, os.WriteFile(tokens, []byte(testTokens), 0o600))
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	o := Options{Listener: l, TokensFile: tokens, Logger: slog.New(slog.DiscardHandler), Registry: prometheus.NewRegistry()}
	for _, m := range mutate {
		m(&o)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, o) }()
	s := &testServer{url: "http://" + l.Addr().String(), dir: dir, tokens: tokens}
	var once sync.Once
	var runErr error
	s.stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(20 * time.Second):
				runErr = fmt.Errorf("Run did not return within 20s of cancellation")
			}
		})
		return runErr
	}
	t.Cleanup(func() { _ = s.stop() })
	// Wait until it serves; surface a failed start instead of a dial error.
	deadline := time.Now().Add(20 * time.Second)
	client := &http.Client{Timeout: time.Second}
	for {
		select {
		case err := <-done:
			t.Fatalf("Run returned before serving: %v", err)
		default:
		}
		resp, err := client.Get(s.url + "/healthz")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s
			}
		}
		require.True(t, time.Now().Before(deadline), "server not ready within 20s: %v", err)
		time.Sleep(10 * time.Millisecond)
	}
}

type reviewAnswer struct {
	code   int
	header http.Header
	body   []byte
}

func (a reviewAnswer) errorMessage(t *testing.T) string {
	t.Helper()
	var e struct {
		Error string `json:"error"`
	}
	require.NoError(t, json.Unmarshal(a.body, &e), "error body must be JSON: %q", a.body)
	require.NotEmpty(t, e.Error)
	return e.Error
}

func (a reviewAnswer) review(t *testing.T) upload.TokenReview {
	t.Helper()
	var r upload.TokenReview
	require.NoError(t, json.Unmarshal(a.body, &r))
	return r
}

func post(t *testing.T, url, contentType string, body io.Reader) reviewAnswer {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, body)
	require.NoError(t, err)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	return do(t, req)
}

func do(t *testing.T, req *http.Request) reviewAnswer {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	require.NoError(t, err)
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return reviewAnswer{code: resp.StatusCode, header: resp.Header, body: body}
}

func claimReq(t *testing.T, url, token, cluster string) reviewAnswer {
	t.Helper()
	body, err := json.Marshal(upload.TokenReview{ClusterID: cluster, AuthorizationToken: token})
	require.NoError(t, err)
	return post(t, url, "application/json", bytes.NewReader(body))
}

func TestReviewProtocol(t *testing.T) {
	s := startServer(t, t.TempDir())

	// The first claim creates, repeats confirm, on both paths.
	a := claimReq(t, s.url+"/", "token-a", "c1")
	require.Equal(t, http.StatusCreated, a.code, string(a.body))
	require.Equal(t, "application/json", a.header.Get("Content-Type"))
	require.Equal(t, upload.TokenReview{ClusterID: "c1", AccountID: accountA}, a.review(t))
	a = claimReq(t, s.url+"/", "token-a", "c1")
	require.Equal(t, http.StatusOK, a.code)
	require.Equal(t, accountA, a.review(t).AccountID)
	a = claimReq(t, s.url+"/authorize", "token-a", "c1")
	require.Equal(t, http.StatusOK, a.code)

	big := `{"cluster_id":"c9","authorization_token":"token-a","pad":"` + strings.Repeat("x", DefaultMaxBodyBytes) + `"}`
	for _, tc := range []struct {
		name        string
		method      string
		path        string
		contentType string
		body        string
		chunked     bool
		code        int
		message     string
	}{
		{name: "second account", body: `{"cluster_id":"c1","authorization_token":"token-b"}`, code: 409, message: "another account"},
		{name: "unknown token", body: `{"cluster_id":"c2","authorization_token":"token-x"}`, code: 401, message: "unknown cluster token"},
		{name: "missing token", body: `{"cluster_id":"c2"}`, code: 401, message: "missing authorization_token"},
		{name: "bound token, other id", body: `{"cluster_id":"c2","authorization_token":"token-bound"}`, code: 403},
		{name: "malformed json", body: `{"cluster_id":`, code: 400, message: "malformed JSON"},
		{name: "wrong json type", body: `{"cluster_id":7,"authorization_token":"token-a"}`, code: 400},
		{name: "trailing data", body: `{"cluster_id":"c2","authorization_token":"token-a"} {}`, code: 400, message: "data after"},
		{name: "missing cluster id", body: `{"authorization_token":"token-a"}`, code: 400, message: "missing cluster id"},
		{name: "control character in id", body: `{"cluster_id":"a\nb","authorization_token":"token-a"}`, code: 400},
		{name: "form content type", contentType: "application/x-www-form-urlencoded", body: `{}`, code: 415},
		{name: "body over the cap", body: big, code: 413},
		{name: "chunked body over the cap", body: big, chunked: true, code: 413},
		{name: "get", method: http.MethodGet, code: 405},
		{name: "unknown path", path: "/other", body: `{}`, code: 404},
	} {
		t.Run(tc.name, func(t *testing.T) {
			method, path, ct := tc.method, tc.path, tc.contentType
			if method == "" {
				method = http.MethodPost
			}
			if path == "" {
				path = "/"
			}
			if ct == "" {
				ct = "application/json; charset=utf-8"
			}
			var body io.Reader = strings.NewReader(tc.body)
			if tc.chunked {
				body = io.MultiReader(body) // unknown length: sent chunked
			}
			req, err := http.NewRequest(method, s.url+path, body)
			require.NoError(t, err)
			req.Header.Set("Content-Type", ct)
			a := do(t, req)
			require.Equal(t, tc.code, a.code, string(a.body))
			require.Equal(t, "application/json", a.header.Get("Content-Type"))
			msg := a.errorMessage(t)
			require.Contains(t, msg, tc.message)
			require.NotContains(t, string(a.body), "token-", "errors never echo a token")
			if tc.code == 405 {
				require.Equal(t, "POST", a.header.Get("Allow"))
			}
		})
	}

	// Refused claims left nothing behind.
	a = claimReq(t, s.url, "token-b", "c2")
	require.Equal(t, http.StatusCreated, a.code, "c2 was never claimed by a refused request")
	a = claimReq(t, s.url, "token-bound", "bound-1")
	require.Equal(t, http.StatusCreated, a.code)
	require.Equal(t, "acct-bound", a.review(t).AccountID)
}

func TestHealthAndMetrics(t *testing.T) {
	s := startServer(t, t.TempDir())
	req, err := http.NewRequest(http.MethodGet, s.url+"/healthz", nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, do(t, req).code)

	require.Equal(t, http.StatusCreated, claimReq(t, s.url, "token-a", "c1").code)
	req, err = http.NewRequest(http.MethodGet, s.url+"/metrics", nil)
	require.NoError(t, err)
	a := do(t, req)
	require.Equal(t, http.StatusOK, a.code)
	require.Contains(t, string(a.body), `telemeter_authorization_server_reviews_total{result="claimed"} 1`)
	require.Contains(t, string(a.body), `telemeter_authorization_server_claims 1`)
	require.Contains(t, string(a.body), `telemeter_authorization_server_http_requests_total{code="201",handler="review"} 1`)
}

func TestClaimsSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, dir)
	require.Equal(t, http.StatusCreated, claimReq(t, s.url, "token-a", "c1").code)
	require.Equal(t, http.StatusCreated, claimReq(t, s.url, "token-b", "c2").code)
	require.NoError(t, s.stop(), "graceful shutdown returns nil")

	data, err := os.ReadFile(filepath.Join(dir, "tokens.claims.json"))
	require.NoError(t, err)
	var file claimsFile
	require.NoError(t, json.Unmarshal(data, &file))
	require.Equal(t, 1, file.Version)
	require.Len(t, file.Claims, 2)
	require.Equal(t, "c1", file.Claims[0].ClusterID)
	require.Equal(t, accountA, file.Claims[0].AccountID)
	require.Equal(t, "acct-b", file.Claims[1].AccountID)
	require.NotContains(t, string(data), "token-", "the claims file holds no token")

	s = startServer(t, dir)
	require.Equal(t, http.StatusConflict, claimReq(t, s.url, "token-b", "c1").code, "the first account keeps its claim across restarts")
	require.Equal(t, http.StatusOK, claimReq(t, s.url, "token-a", "c1").code)
	require.Equal(t, http.StatusConflict, claimReq(t, s.url, "token-a", "c2").code)
	require.Equal(t, http.StatusCreated, claimReq(t, s.url, "token-a", "c3").code)
}

func TestConcurrentClaimsHaveOneWinner(t *testing.T) {
	s := startServer(t, t.TempDir())
	const perAccount = 8
	var wg sync.WaitGroup
	type outcome struct {
		token string
		code  int
	}
	outcomes := make(chan outcome, 2*perAccount)
	for i := range 2 * perAccount {
		token := []string{"token-a", "token-b"}[i%2]
		wg.Go(func() { outcomes <- outcome{token, claimReq(t, s.url, token, "contested").code} })
	}
	// Distinct IDs claimed at the same time are all granted.
	for i := range 20 {
		wg.Go(func() {
			a := claimReq(t, s.url, "token-a", fmt.Sprintf("free-%d", i))
			if a.code != http.StatusCreated {
				outcomes <- outcome{"free", a.code}
			}
		})
	}
	wg.Wait()
	close(outcomes)

	created := 0
	codes := map[string]map[int]int{"token-a": {}, "token-b": {}}
	for o := range outcomes {
		require.NotEqual(t, "free", o.token, "a free id was refused with %d", o.code)
		codes[o.token][o.code]++
		if o.code == http.StatusCreated {
			created++
		}
	}
	require.Equal(t, 1, created, "exactly one claim creates: %v", codes)
	winner, loser := "token-a", "token-b"
	if codes["token-b"][http.StatusCreated] == 1 {
		winner, loser = loser, winner
	}
	require.Equal(t, perAccount, codes[winner][http.StatusCreated]+codes[winner][http.StatusOK], "%v", codes)
	require.Equal(t, perAccount, codes[loser][http.StatusConflict], "%v", codes)

	require.NoError(t, s.stop())
	data, err := os.ReadFile(filepath.Join(s.dir, "tokens.claims.json"))
	require.NoError(t, err)
	var file claimsFile
	require.NoError(t, json.Unmarshal(data, &file))
	require.Len(t, file.Claims, 21)
}

func TestRunRefusesToStart(t *testing.T) {
	for _, tc := range []struct {
		name   string
		tokens string
		claims string // "" leaves no claims file
		err    string
	}{
		{name: "bad tokens file", tokens: `[{"token":"a"},{"token":"a"}]`, err: "duplicate token"},
		{name: "claims file not json", tokens: testTokens, claims: `{"version":1,"claims":[{"cluster_id":"c1"`, err: "parse claims file"},
		{name: "claims file of another version", tokens: testTokens, claims: `{"version":2,"claims":[]}`, err: "version 2"},
		{name: "id claimed twice", tokens: testTokens, claims: `{"version":1,"claims":[{"cluster_id":"c","account_id":"a"},{"cluster_id":"c","account_id":"b"}]}`, err: "claimed twice"},
		{name: "claim without account", tokens: testTokens, claims: `{"version":1,"claims":[{"cluster_id":"c","account_id":""}]}`, err: "empty account"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tokens := filepath.Join(dir, "tokens.json")
			require.NoError(t, os.WriteFile(tokens, []byte(tc.tokens), 0o600))
			if tc.claims != "" {
				require.NoError(t, os.WriteFile(filepath.Join(dir, "tokens.claims.json"), []byte(tc.claims), 0o600))
			}
			l, err := net.Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			defer func() { _ = l.Close() }()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			err = Run(ctx, Options{Listener: l, TokensFile: tokens})
			require.ErrorContains(t, err, tc.err)
			if tc.claims != "" {
				data, err := os.ReadFile(filepath.Join(dir, "tokens.claims.json"))
				require.NoError(t, err)
				require.Equal(t, tc.claims, string(data), "a damaged claims file is left for the operator, never overwritten")
			}
		})
	}
}

func TestOneServerPerClaimsFile(t *testing.T) {
	s := startServer(t, t.TempDir())
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer func() { _ = l.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err = Run(ctx, Options{Listener: l, TokensFile: s.tokens})
	require.ErrorContains(t, err, "another authorization-server")
}

func TestStaleTemporaryFilesRemoved(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, ".tokens.claims.json.tmp-12345")
	require.NoError(t, os.WriteFile(stale, []byte("half a file"), 0o600))
	startServer(t, dir)
	_, err := os.Stat(stale)
	require.ErrorIs(t, err, os.ErrNotExist)
}

func TestClaimsFileFlag(t *testing.T) {
	dir := t.TempDir()
	claims := filepath.Join(dir, "state", "claims.json")
	s := startServer(t, dir, func(o *Options) { o.ClaimsFile = claims })
	require.Equal(t, http.StatusCreated, claimReq(t, s.url, "token-a", "c1").code)
	data, err := os.ReadFile(claims)
	require.NoError(t, err)
	require.Contains(t, string(data), `"cluster_id":"c1"`)
	_, err = os.Stat(filepath.Join(dir, "tokens.claims.json"))
	require.ErrorIs(t, err, os.ErrNotExist)
}

func TestDefaultClaimsFile(t *testing.T) {
	for in, want := range map[string]string{
		"/etc/telemeter/tokens.json": "/etc/telemeter/tokens.claims.json",
		"tokens":                     "tokens.claims.json",
		"/a.b/tokens.v2.json":        "/a.b/tokens.v2.claims.json",
	} {
		require.Equal(t, want, DefaultClaimsFile(in), in)
	}
}

// TestUpstreamClient is the two halves of the protocol together: the
// server's Upstream authorizer against this authorization server.
func TestUpstreamClient(t *testing.T) {
	s := startServer(t, t.TempDir())
	u := auth.NewUpstream(s.url, &http.Client{Timeout: 10 * time.Second}, auth.UpstreamOptions{}, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	ctx := context.Background()

	account, err := u.Authorize(ctx, "token-a", "c1")
	require.NoError(t, err)
	require.Equal(t, accountA, account)
	account, err = u.Authorize(ctx, "token-bound", "bound-1")
	require.NoError(t, err)
	require.Equal(t, "acct-bound", account)

	_, err = u.Authorize(ctx, "token-b", "c1")
	require.ErrorIs(t, err, upload.ErrConflict)
	_, err = u.Authorize(ctx, "token-x", "c2")
	require.ErrorIs(t, err, upload.ErrUnauthorized)
	_, err = u.Authorize(ctx, "token-bound", "c2")
	require.ErrorIs(t, err, upload.ErrForbidden)
}
