package auth

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/telemeter/telemeter/internal/upload"
)

// clock is a settable time source for caches.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock(t time.Time) *clock { return &clock{t: t} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// upstreamServer is an httptest server (on 127.0.0.1) answering the token
// review protocol with whatever respond says, counting calls and keeping
// the last request.
type upstreamServer struct {
	*httptest.Server
	calls   atomic.Int64
	mu      sync.Mutex
	last    upload.TokenReview
	lastCT  string
	respond func(w http.ResponseWriter, review upload.TokenReview)
}

func newUpstreamServer(t *testing.T, respond func(w http.ResponseWriter, review upload.TokenReview)) *upstreamServer {
	t.Helper()
	s := &upstreamServer{respond: respond}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.calls.Add(1)
		var review upload.TokenReview
		if err := json.NewDecoder(r.Body).Decode(&review); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		s.last, s.lastCT = review, r.Header.Get("Content-Type")
		s.mu.Unlock()
		s.respond(w, review)
	}))
	t.Cleanup(s.Close)
	return s
}

func answer(code int, body string, header ...string) func(http.ResponseWriter, upload.TokenReview) {
	return func(w http.ResponseWriter, _ upload.TokenReview) {
		for i := 0; i+1 < len(header); i += 2 {
			w.Header().Set(header[i], header[i+1])
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_, _ = io.WriteString(w, body)
	}
}

func newTestUpstream(t *testing.T, url string, o UpstreamOptions) (*Upstream, *prometheus.Registry, *bytes.Buffer) {
	t.Helper()
	reg := prometheus.NewRegistry()
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return NewUpstream(url, &http.Client{Timeout: 5 * time.Second}, o, logger, reg), reg, &logs
}

func TestUpstreamAnswers(t *testing.T) {
	for _, tc := range []struct {
		name       string
		respond    func(http.ResponseWriter, upload.TokenReview)
		account    string
		err        error
		retryAfter time.Duration
		result     string
	}{
		{name: "200 allowed", respond: answer(200, `{"account_id":"acct-1","cluster_id":"c1"}`), account: "acct-1", result: resultAllowed},
		{name: "201 allowed", respond: answer(201, `{"account_id":"acct-2"}`), account: "acct-2", result: resultAllowed},
		{name: "200 without account", respond: answer(200, `{"account_id":""}`), err: upload.ErrUnavailable, result: resultInvalidAnswer},
		{name: "200 not json", respond: answer(200, `<html>`), err: upload.ErrUnavailable, result: resultInvalidAnswer},
		{name: "200 too large", respond: answer(200, `{"account_id":"a","pad":"`+strings.Repeat("x", maxUpstreamAnswerBytes)+`"}`), err: upload.ErrUnavailable, result: resultInvalidAnswer},
		{name: "401", respond: answer(401, `{"error":"unknown token"}`), err: upload.ErrUnauthorized, result: resultUnauthorized},
		{name: "403", respond: answer(403, `{}`), err: upload.ErrForbidden, result: resultForbidden},
		{name: "409", respond: answer(409, `{}`), err: upload.ErrConflict, result: resultConflict},
		{name: "429 with Retry-After", respond: answer(429, ``, "Retry-After", "7"), err: upload.ErrRateLimited, retryAfter: 7 * time.Second, result: resultRateLimited},
		{name: "429 without Retry-After", respond: answer(429, ``), err: upload.ErrRateLimited, retryAfter: DefaultUpstreamRetryAfter, result: resultRateLimited},
		{name: "400", respond: answer(400, `{}`), err: upload.ErrUnavailable, result: resultError},
		{name: "500", respond: answer(500, `oops`), err: upload.ErrUnavailable, result: resultError},
		{name: "503 with Retry-After", respond: answer(503, ``, "Retry-After", "3"), err: upload.ErrUnavailable, retryAfter: 3 * time.Second, result: resultError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newUpstreamServer(t, tc.respond)
			u, reg, _ := newTestUpstream(t, srv.URL, UpstreamOptions{})
			require.NotNil(t, reg)
			account, err := u.Authorize(context.Background(), "tok", "c1")
			require.Equal(t, tc.account, account)
			if tc.err == nil {
				require.NoError(t, err)
			} else {
				require.ErrorIs(t, err, tc.err)
				require.Equal(t, tc.retryAfter, upload.RetryAfter(err))
			}
			srv.mu.Lock()
			require.Equal(t, upload.TokenReview{ClusterID: "c1", AuthorizationToken: "tok"}, srv.last)
			require.Equal(t, "application/json", srv.lastCT)
			srv.mu.Unlock()
			require.Equal(t, 1.0, testutil.ToFloat64(u.m.requests.WithLabelValues(tc.result)))
		})
	}
}

func TestUpstreamUnreachable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close() // nothing listens there any more
	u, _, _ := newTestUpstream(t, url, UpstreamOptions{})
	_, err := u.Authorize(context.Background(), "tok", "c1")
	require.ErrorIs(t, err, upload.ErrUnavailable)
}

func TestUpstreamTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := newUpstreamServer(t, func(w http.ResponseWriter, _ upload.TokenReview) {
		<-release
	})
	defer close(release)
	u, _, _ := newTestUpstream(t, srv.URL, UpstreamOptions{Timeout: 50 * time.Millisecond})
	_, err := u.Authorize(context.Background(), "tok", "c1")
	require.ErrorIs(t, err, upload.ErrUnavailable)
}

func TestUpstreamCache(t *testing.T) {
	var code atomic.Int64
	code.Store(200)
	srv := newUpstreamServer(t, func(w http.ResponseWriter, r upload.TokenReview) {
		c := int(code.Load())
		if c == 200 {
			answer(200, `{"account_id":"acct-`+r.AuthorizationToken+`"}`)(w, r)
			return
		}
		answer(c, `{}`)(w, r)
	})
	clk := newClock(testNow)
	u, reg, _ := newTestUpstream(t, srv.URL, UpstreamOptions{CacheTTL: time.Minute, NegativeTTL: 10 * time.Second, Now: clk.Now})
	ctx := context.Background()
	authorize := func(token, cluster string) (string, error) { return u.Authorize(ctx, token, cluster) }

	// Allowed answers are reused for CacheTTL.
	a, err := authorize("t1", "c1")
	require.NoError(t, err)
	require.Equal(t, "acct-t1", a)
	a, err = authorize("t1", "c1")
	require.NoError(t, err)
	require.Equal(t, "acct-t1", a)
	require.EqualValues(t, 1, srv.calls.Load())
	require.Equal(t, 1.0, testutil.ToFloat64(u.m.hits))

	// Another cluster or another token is another question.
	_, err = authorize("t1", "c2")
	require.NoError(t, err)
	_, err = authorize("t2", "c1")
	require.NoError(t, err)
	require.EqualValues(t, 3, srv.calls.Load())

	clk.Advance(time.Minute)
	_, err = authorize("t1", "c1")
	require.NoError(t, err)
	require.EqualValues(t, 4, srv.calls.Load(), "expired entries are asked again")

	// Refusals are reused for NegativeTTL only.
	code.Store(409)
	_, err = authorize("t3", "c1")
	require.ErrorIs(t, err, upload.ErrConflict)
	clk.Advance(9 * time.Second)
	_, err = authorize("t3", "c1")
	require.ErrorIs(t, err, upload.ErrConflict)
	require.EqualValues(t, 5, srv.calls.Load())
	clk.Advance(time.Second)
	_, err = authorize("t3", "c1")
	require.ErrorIs(t, err, upload.ErrConflict)
	require.EqualValues(t, 6, srv.calls.Load())

	// Throttling and failures are not cached.
	for _, c := range []int64{429, 503} {
		code.Store(c)
		before := srv.calls.Load()
		_, err = authorize("t4", "c1")
		require.Error(t, err)
		_, err = authorize("t4", "c1")
		require.Error(t, err)
		require.EqualValues(t, before+2, srv.calls.Load(), "code %d", c)
	}
	code.Store(200)
	_, err = authorize("t4", "c1")
	require.NoError(t, err, "a failure must not stick")

	require.Equal(t, 5.0, testutil.ToFloat64(u.m.requests.WithLabelValues(resultAllowed)))
	n, err := testutil.GatherAndCount(reg, "telemeter_server_authorize_upstream_requests_total", "telemeter_server_authorize_cache_hits_total", "telemeter_server_authorize_cache_misses_total")
	require.NoError(t, err)
	require.Equal(t, 7+1+1, n, "every result is exported, also at zero")
}

func TestUpstreamCacheDisabled(t *testing.T) {
	srv := newUpstreamServer(t, answer(200, `{"account_id":"a"}`))
	u, _, _ := newTestUpstream(t, srv.URL, UpstreamOptions{CacheTTL: -1, NegativeTTL: -1})
	for range 3 {
		_, err := u.Authorize(context.Background(), "t", "c")
		require.NoError(t, err)
	}
	require.EqualValues(t, 3, srv.calls.Load())
}

func TestUpstreamCacheEviction(t *testing.T) {
	srv := newUpstreamServer(t, answer(200, `{"account_id":"a"}`))
	u, _, _ := newTestUpstream(t, srv.URL, UpstreamOptions{MaxEntries: 2, Now: newClock(testNow).Now})
	ctx := context.Background()
	ask := func(cluster string) {
		t.Helper()
		_, err := u.Authorize(ctx, "t", cluster)
		require.NoError(t, err)
	}
	ask("c1")
	ask("c2")
	ask("c1") // hit; c2 is now the least recently used
	require.EqualValues(t, 2, srv.calls.Load())
	ask("c3") // evicts c2
	require.Equal(t, 2.0, testutil.ToFloat64(u.m.entries))
	ask("c1")
	require.EqualValues(t, 3, srv.calls.Load(), "c1 was kept")
	ask("c2")
	require.EqualValues(t, 4, srv.calls.Load(), "c2 was evicted")
}

func TestUpstreamCollapsesConcurrentRequests(t *testing.T) {
	release := make(chan struct{})
	srv := newUpstreamServer(t, func(w http.ResponseWriter, r upload.TokenReview) {
		<-release
		answer(200, `{"account_id":"acct"}`)(w, r)
	})
	u, _, _ := newTestUpstream(t, srv.URL, UpstreamOptions{})

	const n = 10
	var wg sync.WaitGroup
	accounts := make([]string, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { accounts[i], errs[i] = u.Authorize(context.Background(), "tok", "c1") })
	}
	require.Eventually(t, func() bool { return testutil.ToFloat64(u.m.shared) == n-1 }, 10*time.Second, time.Millisecond,
		"all but one caller wait for the call in flight")
	close(release)
	wg.Wait()
	for i := range n {
		require.NoError(t, errs[i])
		require.Equal(t, "acct", accounts[i])
	}
	require.EqualValues(t, 1, srv.calls.Load())
}

func TestUpstreamCallerGivesUp(t *testing.T) {
	release := make(chan struct{})
	srv := newUpstreamServer(t, func(w http.ResponseWriter, r upload.TokenReview) {
		<-release
		answer(200, `{"account_id":"acct"}`)(w, r)
	})
	u, _, _ := newTestUpstream(t, srv.URL, UpstreamOptions{})

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := u.Authorize(ctx, "tok", "c1")
		done <- err
	}()
	require.Eventually(t, func() bool { return srv.calls.Load() == 1 }, 10*time.Second, time.Millisecond)
	cancel()
	select {
	case err := <-done:
		require.ErrorIs(t, err, upload.ErrUnavailable)
		require.ErrorIs(t, err, context.Canceled)
	case <-time.After(10 * time.Second):
		t.Fatal("a cancelled caller must return at once")
	}

	// The call went on and its answer fills the cache.
	close(release)
	require.Eventually(t, func() bool { return testutil.ToFloat64(u.m.entries) == 1 }, 10*time.Second, time.Millisecond)
	account, err := u.Authorize(context.Background(), "tok", "c1")
	require.NoError(t, err)
	require.Equal(t, "acct", account)
	require.EqualValues(t, 1, srv.calls.Load())
}

func TestUpstreamNeverLogsToken(t *testing.T) {
	const secret = "s3cret-cluster-token"
	for _, code := range []int{200, 401, 409, 429, 500} {
		srv := newUpstreamServer(t, answer(code, `{"account_id":""}`))
		u, _, logs := newTestUpstream(t, srv.URL, UpstreamOptions{})
		_, _ = u.Authorize(context.Background(), secret, "c1")
		require.NotContains(t, logs.String(), secret)
	}
}
