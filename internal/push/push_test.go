package push

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/telemeter/telemeter/internal/upload"
)

// answer is one scripted reply of the fake server.
type answer struct {
	code       int
	retryAfter string
	hang       bool // block until the client gives up
}

// server is a scripted telemeter server on 127.0.0.1: /upload replies
// follow the script and then 200; /authorize issues jwt-1, jwt-2, ...
type server struct {
	t   *testing.T
	srv *httptest.Server

	mu          sync.Mutex
	uploads     []answer
	authAnswers []answer
	expires     int64
	labels      []map[string]string // per authorization; the last one repeats
	authCount   int
	uploadCount int
	uploadJWTs  []string
	authTokens  []string
	received    [][]*dto.MetricFamily
}

func newServer(t *testing.T, uploads ...answer) *server {
	s := &server{t: t, uploads: uploads, expires: 3600, labels: []map[string]string{{"_id": "c1"}}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /authorize", s.authorize)
	mux.HandleFunc("POST /upload", s.upload)
	s.srv = httptest.NewServer(mux)
	t.Cleanup(s.srv.Close)
	return s
}

func (s *server) authorize(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.authCount++
	n := s.authCount
	s.authTokens = append(s.authTokens, r.Header.Get("Authorization"))
	var a answer
	if len(s.authAnswers) > 0 {
		a, s.authAnswers = s.authAnswers[0], s.authAnswers[1:]
	}
	labels := s.labels[min(n, len(s.labels))-1]
	expires := s.expires
	s.mu.Unlock()
	if r.URL.Query().Get("id") != "c1" {
		http.Error(w, "wrong id "+r.URL.Query().Get("id"), http.StatusBadRequest)
		return
	}
	if a.code != 0 && a.code != http.StatusOK {
		w.Header().Set("Retry-After", a.retryAfter)
		http.Error(w, "scripted", a.code)
		return
	}
	_ = json.NewEncoder(w).Encode(upload.AuthorizeResponse{
		Version: 1, Token: fmt.Sprintf("jwt-%d", n), ExpiresInSeconds: expires, Labels: labels,
	})
}

func (s *server) upload(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.uploadCount++
	s.uploadJWTs = append(s.uploadJWTs, r.Header.Get("Authorization"))
	var a answer
	if len(s.uploads) > 0 {
		a, s.uploads = s.uploads[0], s.uploads[1:]
	}
	s.mu.Unlock()
	if a.hang {
		// Reading the body lets the server notice the client hanging up.
		_, _ = io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
		return
	}
	if a.code != 0 && a.code != http.StatusOK {
		if a.retryAfter != "" {
			w.Header().Set("Retry-After", a.retryAfter)
		}
		http.Error(w, "scripted answer", a.code)
		return
	}
	fams, err := upload.Decode(r.Body, r.Header.Get("Content-Type"), r.Header.Get("Content-Encoding"), upload.Limits{})
	if err != nil {
		http.Error(w, err.Error(), upload.StatusCode(err))
		return
	}
	s.mu.Lock()
	s.received = append(s.received, fams)
	s.mu.Unlock()
}

func (s *server) counts() (auth, uploads int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.authCount, s.uploadCount
}

// fakeClock advances only when the client sleeps.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	sleeps []time.Duration
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Now()} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sleeps = append(c.sleeps, d)
	c.now = c.now.Add(d)
	return nil
}

func (c *fakeClock) Sleeps() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.sleeps...)
}

// draws returns the values in order, then repeats the last one.
func draws(v ...float64) func() float64 {
	var mu sync.Mutex
	i := 0
	return func() float64 {
		mu.Lock()
		defer mu.Unlock()
		r := v[min(i, len(v)-1)]
		i++
		return r
	}
}

type fixture struct {
	client *Client
	clock  *fakeClock
	reg    *prometheus.Registry
	srv    *server
}

func newFixture(t *testing.T, srv *server, mod func(*Options)) *fixture {
	t.Helper()
	clock := newFakeClock()
	o := Options{
		AuthorizeURL:   srv.srv.URL + "/authorize",
		UploadURL:      srv.srv.URL + "/upload",
		ID:             "c1",
		Token:          "cluster-secret",
		RequestTimeout: 5 * time.Second,
		Backoff:        Backoff{Base: time.Second, Cap: time.Minute},
		Now:            clock.Now,
		Sleep:          clock.Sleep,
		Rand:           draws(0.5),
	}
	if mod != nil {
		mod(&o)
	}
	reg := prometheus.NewRegistry()
	c, err := New(o, slog.New(slog.DiscardHandler), reg)
	require.NoError(t, err)
	return &fixture{client: c, clock: clock, reg: reg, srv: srv}
}

func sampleBatch() []*dto.MetricFamily {
	return []*dto.MetricFamily{{
		Name: proto.String("up"),
		Type: dto.MetricType_GAUGE.Enum(),
		Metric: []*dto.Metric{{
			Label: []*dto.LabelPair{{Name: proto.String("job"), Value: proto.String("a")}},
			Gauge: &dto.Gauge{Value: proto.Float64(1)},
		}},
	}}
}

// builder encodes sampleBatch with the authorized labels and counts calls.
func builder(calls *[]map[string]string) BuildFunc {
	return func(labels map[string]string) ([]byte, error) {
		*calls = append(*calls, labels)
		fams := sampleBatch()
		for name, value := range labels {
			for _, m := range fams[0].Metric {
				m.Label = append(m.Label, &dto.LabelPair{Name: proto.String(name), Value: proto.String(value)})
			}
		}
		return upload.Body(fams)
	}
}

func (f *fixture) push(t *testing.T, ctx context.Context) error {
	t.Helper()
	var calls []map[string]string
	return f.client.Push(ctx, builder(&calls))
}

func pushes(t *testing.T, reg *prometheus.Registry, result string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != "telemeter_client_pushes_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == result {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no pushes_total{result=%q}", result)
	return 0
}

func TestPushSendsProtocol(t *testing.T) {
	srv := newServer(t)
	f := newFixture(t, srv, nil)
	var calls []map[string]string
	require.NoError(t, f.client.Push(t.Context(), builder(&calls)))

	require.Equal(t, []map[string]string{{"_id": "c1"}}, calls)
	require.Equal(t, []string{"Bearer cluster-secret"}, srv.authTokens)
	require.Equal(t, []string{"Bearer jwt-1"}, srv.uploadJWTs)
	require.Len(t, srv.received, 1)
	got := srv.received[0]
	require.Len(t, got, 1)
	require.Equal(t, "up", got[0].GetName())
	require.Len(t, got[0].Metric[0].Label, 2)
	require.Equal(t, "_id", got[0].Metric[0].Label[1].GetName())
	require.Equal(t, "c1", got[0].Metric[0].Label[1].GetValue())
	require.Equal(t, 1.0, pushes(t, f.reg, ResultSuccess))
	require.Empty(t, f.clock.Sleeps())

	// The second push reuses the cached token.
	require.NoError(t, f.push(t, t.Context()))
	auth, uploads := srv.counts()
	require.Equal(t, 1, auth)
	require.Equal(t, 2, uploads)
}

func TestPushRetriesWithCappedJitteredBackoff(t *testing.T) {
	srv := newServer(t,
		answer{code: 500}, answer{code: 503}, answer{code: 500}, answer{code: 503},
		answer{code: 502}, answer{code: 500}, answer{code: 504})
	f := newFixture(t, srv, func(o *Options) {
		o.Backoff = Backoff{Base: time.Second, Cap: 8 * time.Second}
		o.Rand = draws(0.5, 0.25, 0.999, 0.5, 0.1, 0.75, 0)
	})
	require.NoError(t, f.push(t, t.Context()))

	_, uploads := srv.counts()
	require.Equal(t, 8, uploads)
	// wait n = draw n × min(cap, base·2ⁿ): windows 1, 2, 4, 8, 8, 8, 8.
	want := []time.Duration{
		500 * time.Millisecond,
		500 * time.Millisecond,
		3996 * time.Millisecond,
		4 * time.Second,
		800 * time.Millisecond,
		6 * time.Second,
		0,
	}
	require.Equal(t, want, f.clock.Sleeps())
	require.Equal(t, 7.0, testutil.ToFloat64(f.client.metrics.retries))
	require.Equal(t, 1.0, pushes(t, f.reg, ResultSuccess))
}

func TestPushBackoffWithSeededRandomStaysInWindows(t *testing.T) {
	script := make([]answer, 9)
	for i := range script {
		script[i] = answer{code: 503}
	}
	srv := newServer(t, script...)
	f := newFixture(t, srv, func(o *Options) {
		o.Backoff = Backoff{Base: time.Second, Cap: 16 * time.Second}
		o.Rand = nil // the production source
	})
	require.NoError(t, f.push(t, t.Context()))
	sleeps := f.clock.Sleeps()
	require.Len(t, sleeps, 9)
	distinct := map[time.Duration]bool{}
	for n, d := range sleeps {
		require.GreaterOrEqual(t, d, time.Duration(0))
		require.Less(t, d, f.client.backoff.Window(n), "retry %d", n)
		require.LessOrEqual(t, d, 16*time.Second)
		distinct[d] = true
	}
	require.Greater(t, len(distinct), 5, "waits are jittered, not fixed: %v", sleeps)
}

func TestBackoffWindow(t *testing.T) {
	b := Backoff{Base: time.Second, Cap: time.Minute}
	var got []time.Duration
	for n := range 10 {
		got = append(got, b.Window(n))
	}
	s := time.Second
	require.Equal(t, []time.Duration{s, 2 * s, 4 * s, 8 * s, 16 * s, 32 * s, 60 * s, 60 * s, 60 * s, 60 * s}, got)
	require.Equal(t, time.Minute, b.Window(1000), "no overflow for large n")
	require.Equal(t, 30*time.Second, b.Delay(6, 0.5))
}

func TestPushHonoursRetryAfter(t *testing.T) {
	for _, tc := range []struct {
		name string
		code int
	}{
		{"429", http.StatusTooManyRequests},
		{"503", http.StatusServiceUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newServer(t, answer{code: tc.code, retryAfter: "7"}, answer{code: tc.code, retryAfter: "2"})
			f := newFixture(t, srv, nil)
			require.NoError(t, f.push(t, t.Context()))
			require.Equal(t, []time.Duration{7 * time.Second, 2 * time.Second}, f.clock.Sleeps())
			_, uploads := srv.counts()
			require.Equal(t, 3, uploads)
		})
	}
}

func TestPushNeverRetriesFinalAnswers(t *testing.T) {
	for _, tc := range []struct {
		name string
		code int
		is   error
	}{
		{"400 invalid", http.StatusBadRequest, upload.ErrInvalid},
		{"403 forbidden", http.StatusForbidden, upload.ErrForbidden},
		{"413 too large", http.StatusRequestEntityTooLarge, upload.ErrTooLarge},
		{"409 conflict", http.StatusConflict, upload.ErrConflict},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newServer(t, answer{code: tc.code, retryAfter: "1"}, answer{code: tc.code})
			f := newFixture(t, srv, nil)
			err := f.push(t, t.Context())
			require.ErrorIs(t, err, tc.is)
			require.Contains(t, err.Error(), fmt.Sprint(tc.code))
			auth, uploads := srv.counts()
			require.Equal(t, 1, uploads, "exactly one request")
			require.Equal(t, 1, auth)
			require.Empty(t, f.clock.Sleeps())
			require.Equal(t, 1.0, pushes(t, f.reg, ResultRejected))
			require.Equal(t, 0.0, testutil.ToFloat64(f.client.metrics.retries))
		})
	}
}

func TestPushRetriesTimeouts(t *testing.T) {
	srv := newServer(t, answer{hang: true}, answer{hang: true})
	f := newFixture(t, srv, func(o *Options) { o.RequestTimeout = 150 * time.Millisecond })
	require.NoError(t, f.push(t, t.Context()))
	_, uploads := srv.counts()
	require.Equal(t, 3, uploads)
	require.Len(t, f.clock.Sleeps(), 2)
	require.Len(t, srv.received, 1)
}

func TestPushRetriesConnectionErrors(t *testing.T) {
	srv := newServer(t)
	f := newFixture(t, srv, func(o *Options) {
		o.UploadURL = "http://127.0.0.1:1/upload" // nothing listens on port 1
		o.MaxAttempts = 4
	})
	err := f.push(t, t.Context())
	require.ErrorContains(t, err, "giving up after 4 attempts")
	require.Len(t, f.clock.Sleeps(), 3)
	require.Equal(t, 1.0, pushes(t, f.reg, ResultFailed))
}

func TestPushReauthorizesOnceOn401(t *testing.T) {
	t.Run("then succeeds", func(t *testing.T) {
		srv := newServer(t, answer{code: http.StatusUnauthorized})
		f := newFixture(t, srv, nil)
		require.NoError(t, f.push(t, t.Context()))
		auth, uploads := srv.counts()
		require.Equal(t, 2, auth)
		require.Equal(t, 2, uploads)
		require.Equal(t, []string{"Bearer jwt-1", "Bearer jwt-2"}, srv.uploadJWTs)
		require.Empty(t, f.clock.Sleeps(), "re-authorization is immediate")
		require.Equal(t, 2.0, testutil.ToFloat64(f.client.metrics.tokenRefreshes))
	})
	t.Run("a second 401 is final", func(t *testing.T) {
		srv := newServer(t, answer{code: http.StatusUnauthorized}, answer{code: http.StatusUnauthorized}, answer{code: http.StatusUnauthorized})
		f := newFixture(t, srv, nil)
		err := f.push(t, t.Context())
		require.ErrorIs(t, err, upload.ErrUnauthorized)
		auth, uploads := srv.counts()
		require.Equal(t, 2, auth)
		require.Equal(t, 2, uploads)
		require.Equal(t, 1.0, pushes(t, f.reg, ResultRejected))
	})
	t.Run("changed labels rebuild the batch", func(t *testing.T) {
		srv := newServer(t, answer{code: http.StatusUnauthorized})
		srv.labels = []map[string]string{{"_id": "c1"}, {"_id": "c1", "region": "eu"}}
		f := newFixture(t, srv, nil)
		var calls []map[string]string
		require.NoError(t, f.client.Push(t.Context(), builder(&calls)))
		require.Equal(t, []map[string]string{{"_id": "c1"}, {"_id": "c1", "region": "eu"}}, calls)
		require.Len(t, srv.received[0][0].Metric[0].Label, 3)
	})
}

func TestAuthorizeFailures(t *testing.T) {
	t.Run("401 from authorize is final", func(t *testing.T) {
		srv := newServer(t)
		srv.authAnswers = []answer{{code: http.StatusUnauthorized}}
		f := newFixture(t, srv, nil)
		err := f.push(t, t.Context())
		require.ErrorIs(t, err, upload.ErrUnauthorized)
		require.ErrorContains(t, err, "authorize")
		auth, uploads := srv.counts()
		require.Equal(t, 1, auth)
		require.Equal(t, 0, uploads)
	})
	t.Run("503 from authorize is retried", func(t *testing.T) {
		srv := newServer(t)
		srv.authAnswers = []answer{{code: http.StatusServiceUnavailable, retryAfter: "3"}}
		f := newFixture(t, srv, nil)
		require.NoError(t, f.push(t, t.Context()))
		require.Equal(t, []time.Duration{3 * time.Second}, f.clock.Sleeps())
		require.Equal(t, 1.0, testutil.ToFloat64(f.client.metrics.tokenFailures))
	})
}

func TestTokenRefreshedBeforeExpiry(t *testing.T) {
	srv := newServer(t)
	srv.expires = 100
	f := newFixture(t, srv, nil)

	require.NoError(t, f.push(t, t.Context()))
	f.clock.Advance(79 * time.Second)
	require.NoError(t, f.push(t, t.Context()))
	auth, _ := srv.counts()
	require.Equal(t, 1, auth, "token still fresh at 79 % of its lifetime")

	f.clock.Advance(2 * time.Second) // 81 s: past 80 %, not yet expired
	require.NoError(t, f.push(t, t.Context()))
	auth, _ = srv.counts()
	require.Equal(t, 2, auth)
	require.Equal(t, []string{"Bearer jwt-1", "Bearer jwt-1", "Bearer jwt-2"}, srv.uploadJWTs)

	// A failed refresh keeps using the token while it is valid...
	srv.mu.Lock()
	srv.authAnswers = []answer{{code: http.StatusServiceUnavailable}, {code: http.StatusServiceUnavailable}}
	srv.mu.Unlock()
	f.clock.Advance(85 * time.Second) // 85 s into jwt-2's 100 s
	require.NoError(t, f.push(t, t.Context()))
	require.Equal(t, "Bearer jwt-2", srv.uploadJWTs[3])
	// ...but not after it expired.
	f.clock.Advance(20 * time.Second)
	require.NoError(t, f.push(t, t.Context()))
	auth, _ = srv.counts()
	require.Equal(t, 5, auth, "refresh failed twice, then jwt-5 was issued")
	require.Equal(t, "Bearer jwt-5", srv.uploadJWTs[4])
}

func TestTokenFileReadAtEachAuthorization(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(path, []byte("first\n"), 0o600))
	srv := newServer(t)
	f := newFixture(t, srv, func(o *Options) { o.Token, o.TokenFile = "", path })
	require.NoError(t, f.push(t, t.Context()))
	require.NoError(t, os.WriteFile(path, []byte("second"), 0o600))
	f.client.Invalidate()
	require.NoError(t, f.push(t, t.Context()))
	require.Equal(t, []string{"Bearer first", "Bearer second"}, srv.authTokens)

	require.NoError(t, os.WriteFile(path, nil, 0o600))
	f.client.Invalidate()
	err := f.push(t, t.Context())
	require.ErrorContains(t, err, "file is empty")
	require.Empty(t, f.clock.Sleeps(), "a missing credential is not retried")
}

func TestPushDropsBatchOverLimit(t *testing.T) {
	srv := newServer(t)
	f := newFixture(t, srv, func(o *Options) { o.LimitBytes = 100 })
	err := f.client.Push(t.Context(), func(map[string]string) ([]byte, error) {
		return make([]byte, 101), nil
	})
	require.ErrorIs(t, err, ErrBatchTooLarge)
	require.ErrorIs(t, err, upload.ErrTooLarge)
	require.ErrorContains(t, err, "--limit-bytes")
	_, uploads := srv.counts()
	require.Equal(t, 0, uploads, "nothing the server would refuse is sent")
	require.Equal(t, 1.0, pushes(t, f.reg, ResultTooLarge))

	require.NoError(t, f.client.Push(t.Context(), func(map[string]string) ([]byte, error) {
		return upload.Body(nil)
	}))
}

func TestPushBuildErrorIsFinal(t *testing.T) {
	srv := newServer(t)
	f := newFixture(t, srv, nil)
	err := f.client.Push(t.Context(), func(map[string]string) ([]byte, error) {
		return nil, errors.New("boom")
	})
	require.ErrorContains(t, err, "build batch: boom")
	require.Empty(t, f.clock.Sleeps())
}

func TestPushStopsAtDeadline(t *testing.T) {
	script := make([]answer, 20)
	for i := range script {
		script[i] = answer{code: 503}
	}
	srv := newServer(t, script...)
	f := newFixture(t, srv, func(o *Options) {
		o.MaxAttempts = 100
		o.Rand = draws(0.99)
	})
	ctx, cancel := context.WithDeadline(t.Context(), f.clock.Now().Add(20*time.Second))
	defer cancel()
	err := f.push(t, ctx)
	require.ErrorContains(t, err, "would end after the deadline")
	require.ErrorIs(t, err, upload.ErrUnavailable)
	var total time.Duration
	for _, d := range f.clock.Sleeps() {
		total += d
	}
	require.LessOrEqual(t, total, 20*time.Second)
	require.Len(t, f.clock.Sleeps(), 4, "0.99 s + 1.98 s + 3.96 s + 7.92 s, then 15.84 s would overshoot")
}

func TestPushStopsWhenCancelled(t *testing.T) {
	srv := newServer(t, answer{code: 503}, answer{code: 503})
	ctx, cancel := context.WithCancel(t.Context())
	f := newFixture(t, srv, func(o *Options) {
		o.Sleep = func(context.Context, time.Duration) error {
			cancel()
			return context.Canceled
		}
	})
	err := f.push(t, ctx)
	require.ErrorIs(t, err, context.Canceled)
	_, uploads := srv.counts()
	require.Equal(t, 1, uploads)
}

func TestAuthorizeRejectsBadAnswers(t *testing.T) {
	for _, tc := range []struct {
		name string
		body string
		want string
	}{
		{"no token", `{"version":1,"expiresInSeconds":10}`, "no token"},
		{"not json", `<html>`, "decode answer"},
		{"bad label", `{"token":"x","labels":{"__name__":"evil"}}`, "invalid label name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mux := http.NewServeMux()
			mux.HandleFunc("/authorize", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, tc.body) })
			hs := httptest.NewServer(mux)
			defer hs.Close()
			c, err := New(Options{
				AuthorizeURL: hs.URL + "/authorize", UploadURL: hs.URL + "/upload", ID: "c1", Token: "t",
				MaxAttempts: 1,
			}, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
			require.NoError(t, err)
			err = c.Push(t.Context(), func(map[string]string) ([]byte, error) { return nil, nil })
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func TestNewValidates(t *testing.T) {
	ok := Options{AuthorizeURL: "http://a/authorize", UploadURL: "http://a/upload", ID: "c", Token: "t"}
	for _, tc := range []struct {
		name string
		mod  func(*Options)
		want string
	}{
		{"no id", func(o *Options) { o.ID = "" }, "cluster id"},
		{"no token", func(o *Options) { o.Token = "" }, "no cluster token"},
		{"bad authorize url", func(o *Options) { o.AuthorizeURL = "ftp://x" }, "parse authorize url"},
		{"bad upload url", func(o *Options) { o.UploadURL = "/upload" }, "parse upload url"},
		{"missing ca", func(o *Options) { o.CAFile = "/nonexistent/ca.pem" }, "read ca file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := ok
			tc.mod(&o)
			_, err := New(o, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func TestPushTrustsCAFile(t *testing.T) {
	srv := &server{t: t, expires: 3600, labels: []map[string]string{{"_id": "c1"}}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /authorize", srv.authorize)
	mux.HandleFunc("POST /upload", srv.upload)
	srv.srv = httptest.NewTLSServer(mux)
	t.Cleanup(srv.srv.Close)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	require.NoError(t, os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.srv.Certificate().Raw}), 0o600))

	f := newFixture(t, srv, func(o *Options) { o.CAFile = caFile })
	require.NoError(t, f.push(t, t.Context()))
	require.Len(t, srv.received, 1)

	f = newFixture(t, srv, func(o *Options) { o.MaxAttempts = 1 })
	require.ErrorContains(t, f.push(t, t.Context()), "certificate")
}
