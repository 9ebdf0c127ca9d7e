package web

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/telemeter/telemeter/internal/upload"
)

func TestWriteError(t *testing.T) {
	for _, tc := range []struct {
		name       string
		err        error
		code       int
		retryAfter bool
		body       string
	}{
		{"invalid", upload.Errorf(upload.ErrInvalid, "bad label"), 400, false, "invalid payload: bad label\n"},
		{"rate limited", upload.WithRetryAfter(upload.ErrRateLimited, 30*time.Second, "slow down"), 429, true, "rate limited: slow down\n"},
		{"unavailable", upload.ErrUnavailable, 503, true, "service unavailable\n"},
		{"our bug hides detail", errors.New("nil map in handler"), 500, false, "internal error\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			WriteError(w, tc.err)
			require.Equal(t, tc.code, w.Code)
			require.Equal(t, tc.body, w.Body.String())
			ra := w.Header().Get("Retry-After")
			if tc.retryAfter {
				secs, err := strconv.Atoi(ra)
				require.NoError(t, err)
				require.GreaterOrEqual(t, secs, 1)
			} else {
				require.Empty(t, ra)
			}
		})
	}
}

func TestJitterSpreadsRetryAfter(t *testing.T) {
	seen := map[time.Duration]bool{}
	for range 200 {
		d := Jitter(10 * time.Second)
		require.GreaterOrEqual(t, d, 10*time.Second)
		require.LessOrEqual(t, d, 15*time.Second)
		seen[d.Round(time.Second)] = true
	}
	require.Greater(t, len(seen), 2, "jitter must spread the answers")
	require.GreaterOrEqual(t, Jitter(0), time.Second)
}

func TestGateRefusesOverTheBoundBeforeTheHandler(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	rejected := 0
	g := NewGate(1, 5*time.Second, func() { rejected++ })
	h := g.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-release
	}))
	done := make(chan struct{})
	go func() {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, "/upload", nil))
		close(done)
	}()
	<-entered
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/upload", nil))
	require.Equal(t, http.StatusServiceUnavailable, w.Code)
	require.NotEmpty(t, w.Header().Get("Retry-After"))
	require.Equal(t, 1, rejected)
	close(release)
	<-done
}

func TestHealth(t *testing.T) {
	mux := http.NewServeMux()
	notReady := errors.New("store not recovered")
	Health(mux, func() error { return notReady })
	for path, want := range map[string]int{"/healthz": 200, "/healthz/ready": 503} {
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, httptest.NewRequest(http.MethodGet, path, nil))
		require.Equal(t, want, w.Code, path)
	}
	notReady = nil
	w := httptest.NewRecorder()
	mux.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/healthz/ready", nil))
	require.Equal(t, 200, w.Code)
}
