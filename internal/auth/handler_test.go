package auth

import (
	"context"
	"crypto"
	"crypto/elliptic"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/telemeter/telemeter/internal/upload"
)

// authorizerFunc adapts a function to Authorizer, for failures no real
// authorizer produces on demand.
type authorizerFunc func(ctx context.Context, token, clusterID string) (string, error)

func (f authorizerFunc) Authorize(ctx context.Context, token, clusterID string) (string, error) {
	return f(ctx, token, clusterID)
}

type handlerFixture struct {
	handler  http.Handler
	verifier *Verifier
	reg      *prometheus.Registry
}

func newHandlerFixture(t *testing.T, a Authorizer) handlerFixture {
	t.Helper()
	key := testECKey(t, elliptic.P256())
	iss := newTestIssuer(t, key, testNow)
	labels := func(id string) map[string]string {
		return map[string]string{"region": "eu", upload.IDLabel: "spoofed-" + id}
	}
	reg := prometheus.NewRegistry()
	return handlerFixture{
		handler:  NewAuthorizeHandler(a, iss, labels, slog.New(slog.DiscardHandler), reg),
		verifier: NewVerifier([]crypto.PublicKey{key.Public()}, testIssuer, testAudience, time.Minute, fixedClock(testNow)),
		reg:      reg,
	}
}

func testTokens(t *testing.T) *TokensFile {
	t.Helper()
	tokens, err := ParseTokens([]byte(`[{"token":"good","account_id":"acct"},{"token":"bound","cluster_ids":["mine"]}]`))
	require.NoError(t, err)
	return tokens
}

type authorizeRequest struct {
	method      string
	target      string
	auth        string
	contentType string
	body        io.Reader
	length      int64 // 0: from body; -1: chunked
}

func (r authorizeRequest) do(h http.Handler) *httptest.ResponseRecorder {
	method := r.method
	if method == "" {
		method = http.MethodPost
	}
	req := httptest.NewRequest(method, r.target, r.body)
	if r.auth != "" {
		req.Header.Set("Authorization", r.auth)
	}
	if r.contentType != "" {
		req.Header.Set("Content-Type", r.contentType)
	}
	if r.length != 0 {
		req.ContentLength = r.length
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

const formType = "application/x-www-form-urlencoded"

func TestAuthorizeHandlerIssues(t *testing.T) {
	f := newHandlerFixture(t, testTokens(t))
	for _, tc := range []struct {
		name    string
		req     authorizeRequest
		cluster string
		account string
	}{
		{name: "id in query", req: authorizeRequest{target: "/authorize?id=c1", auth: "Bearer good"}, cluster: "c1", account: "acct"},
		{name: "id in form body", req: authorizeRequest{target: "/authorize", auth: "Bearer good", contentType: formType, body: strings.NewReader("id=c%202")}, cluster: "c 2", account: "acct"},
		{name: "same id in both", req: authorizeRequest{target: "/authorize?id=c3", auth: "Bearer good", contentType: formType, body: strings.NewReader("id=c3")}, cluster: "c3", account: "acct"},
		{name: "lower-case scheme", req: authorizeRequest{target: "/authorize?id=c4", auth: "bearer good"}, cluster: "c4", account: "acct"},
		{name: "bound token, its id", req: authorizeRequest{target: "/authorize?id=mine", auth: "Bearer bound"}, cluster: "mine", account: DefaultAccountID("bound")},
		{name: "unicode id", req: authorizeRequest{target: "/authorize?id=" + url.QueryEscape("東京-1"), auth: "Bearer good"}, cluster: "東京-1", account: "acct"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := tc.req.do(f.handler)
			require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
			require.Equal(t, "application/json", rec.Header().Get("Content-Type"))
			require.Equal(t, "no-store", rec.Header().Get("Cache-Control"))

			var resp upload.AuthorizeResponse
			require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &resp))
			require.Equal(t, 1, resp.Version)
			require.EqualValues(t, 3600, resp.ExpiresInSeconds)
			require.Equal(t, map[string]string{upload.IDLabel: tc.cluster, "region": "eu"}, resp.Labels,
				"_id is the authorized id whatever the configured labels say")

			claims, err := f.verifier.Verify(resp.Token)
			require.NoError(t, err)
			require.Equal(t, tc.cluster, claims.ClusterID)
			require.Equal(t, tc.account, claims.AccountID)
			require.Equal(t, resp.Labels, claims.Labels)
		})
	}
	require.Equal(t, 6.0, testutil.ToFloat64(f.handler.(*authorizeHandler).results.WithLabelValues("issued")))
}

func TestAuthorizeHandlerRefuses(t *testing.T) {
	tokens := testTokens(t)
	conflict := newUpstreamServer(t, answer(http.StatusConflict, `{"error":"taken"}`))
	throttled := newUpstreamServer(t, answer(http.StatusTooManyRequests, ``, "Retry-After", "40"))
	broken := newUpstreamServer(t, answer(http.StatusBadGateway, ``))

	for _, tc := range []struct {
		name       string
		authorizer Authorizer
		req        authorizeRequest
		code       int
		body       string
		header     map[string]string
		minRetry   int
	}{
		{name: "get", req: authorizeRequest{method: http.MethodGet, target: "/authorize?id=c1", auth: "Bearer good"}, code: 405, header: map[string]string{"Allow": "POST"}},
		{name: "no authorization", req: authorizeRequest{target: "/authorize?id=c1"}, code: 401, header: map[string]string{"WWW-Authenticate": `Bearer realm="telemeter"`}},
		{name: "basic auth", req: authorizeRequest{target: "/authorize?id=c1", auth: "Basic Z29vZA=="}, code: 401},
		{name: "empty bearer", req: authorizeRequest{target: "/authorize?id=c1", auth: "Bearer  "}, code: 401},
		{name: "unknown token", req: authorizeRequest{target: "/authorize?id=c1", auth: "Bearer nope"}, code: 401, body: "unknown cluster token"},
		{name: "bound token, other id", req: authorizeRequest{target: "/authorize?id=theirs", auth: "Bearer bound"}, code: 403},
		{name: "missing id", req: authorizeRequest{target: "/authorize", auth: "Bearer good"}, code: 400, body: "missing cluster id"},
		{name: "empty id", req: authorizeRequest{target: "/authorize?id=", auth: "Bearer good"}, code: 400},
		{name: "two ids", req: authorizeRequest{target: "/authorize?id=a&id=b", auth: "Bearer good"}, code: 400, body: "more than one"},
		{name: "query and form disagree", req: authorizeRequest{target: "/authorize?id=a", auth: "Bearer good", contentType: formType, body: strings.NewReader("id=b")}, code: 400, body: "more than one"},
		{name: "id too long", req: authorizeRequest{target: "/authorize?id=" + strings.Repeat("x", MaxClusterIDBytes+1), auth: "Bearer good"}, code: 400},
		{name: "control character", req: authorizeRequest{target: "/authorize?id=a%0Ab", auth: "Bearer good"}, code: 400},
		{name: "invalid utf-8", req: authorizeRequest{target: "/authorize?id=%FF", auth: "Bearer good"}, code: 400},
		{name: "bad query escape", req: authorizeRequest{target: "/authorize?id=%zz", auth: "Bearer good"}, code: 400},
		{name: "form too large by length", req: authorizeRequest{target: "/authorize", auth: "Bearer good", contentType: formType, body: strings.NewReader("id=" + strings.Repeat("x", maxAuthorizeFormBytes))}, code: 413},
		{name: "form too large, chunked", req: authorizeRequest{target: "/authorize", auth: "Bearer good", contentType: formType, body: strings.NewReader("id=" + strings.Repeat("x", maxAuthorizeFormBytes)), length: -1}, code: 413},
		{name: "id owned by another account", authorizer: NewUpstream(conflict.URL, nil, UpstreamOptions{}, slog.New(slog.DiscardHandler), prometheus.NewRegistry()), req: authorizeRequest{target: "/authorize?id=c1", auth: "Bearer good"}, code: 409},
		{name: "upstream throttles", authorizer: NewUpstream(throttled.URL, nil, UpstreamOptions{}, slog.New(slog.DiscardHandler), prometheus.NewRegistry()), req: authorizeRequest{target: "/authorize?id=c1", auth: "Bearer good"}, code: 429, minRetry: 40},
		{name: "upstream down", authorizer: NewUpstream(broken.URL, nil, UpstreamOptions{}, slog.New(slog.DiscardHandler), prometheus.NewRegistry()), req: authorizeRequest{target: "/authorize?id=c1", auth: "Bearer good"}, code: 503, minRetry: 5},
		{name: "our bug", authorizer: authorizerFunc(func(context.Context, string, string) (string, error) {
			return "", errors.New("nil map in /var/secret/place")
		}), req: authorizeRequest{target: "/authorize?id=c1", auth: "Bearer good"}, code: 500, body: "internal error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := tc.authorizer
			if a == nil {
				a = tokens
			}
			f := newHandlerFixture(t, a)
			rec := tc.req.do(f.handler)
			require.Equal(t, tc.code, rec.Code, rec.Body.String())
			body := rec.Body.String()
			require.Equal(t, "text/plain; charset=utf-8", rec.Header().Get("Content-Type"))
			require.Equal(t, 1, strings.Count(body, "\n"), "one line: %q", body)
			require.True(t, strings.HasSuffix(body, "\n"))
			require.Contains(t, body, tc.body)
			require.NotContains(t, body, "/var/secret")
			for k, v := range tc.header {
				require.Equal(t, v, rec.Header().Get(k), k)
			}
			if tc.minRetry > 0 {
				secs, err := strconv.Atoi(rec.Header().Get("Retry-After"))
				require.NoError(t, err)
				require.GreaterOrEqual(t, secs, tc.minRetry)
			}
			require.Equal(t, 1.0, testutil.ToFloat64(f.handler.(*authorizeHandler).results.WithLabelValues(strconv.Itoa(tc.code))))
		})
	}
}

// TestAuthorizeHandlerChecksTokenFirst shows the cheap header check runs
// before the body is read: a request without credentials never has its
// body consumed.
func TestAuthorizeHandlerChecksTokenFirst(t *testing.T) {
	f := newHandlerFixture(t, testTokens(t))
	body := &countingReader{r: strings.NewReader("id=c1")}
	rec := authorizeRequest{target: "/authorize", contentType: formType, body: body}.do(f.handler)
	require.Equal(t, http.StatusUnauthorized, rec.Code)
	require.Zero(t, body.n)
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}
