package forward

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/telemeter/telemeter/internal/upload"
)

func newClient(t *testing.T, inflight int) *Client {
	t.Helper()
	return New(Options{
		Node:        "node-a",
		PeerToken:   func() (string, error) { return "peer-token", nil },
		MaxInflight: inflight,
		Timeout:     2 * time.Second,
	}, nil, prometheus.NewRegistry())
}

func clientRequest(t *testing.T, body string) *http.Request {
	t.Helper()
	r := httptest.NewRequest(http.MethodPost, "/upload", bytes.NewBufferString(body))
	r.Header.Set("Authorization", "Bearer client-jwt")
	r.Header.Set("Content-Encoding", "snappy")
	r.Header.Set("Cookie", "must-not-travel")
	return r
}

func TestUploadRelaysOwnerAnswer(t *testing.T) {
	owner := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		require.Equal(t, "/upload", r.URL.Path)
		require.Equal(t, "Bearer client-jwt", r.Header.Get("Authorization"), "the owner verifies the client's own token")
		require.Equal(t, "peer-token", r.Header.Get(HeaderPeerToken))
		require.Equal(t, "node-a", r.Header.Get(HeaderForwardedBy))
		require.Empty(t, r.Header.Get("Cookie"))
		b, _ := io.ReadAll(r.Body)
		require.Equal(t, "payload", string(b))
		w.Header().Set("Retry-After", "7")
		w.WriteHeader(http.StatusTooManyRequests)
		_, _ = w.Write([]byte("slow down"))
	}))
	defer owner.Close()
	r := clientRequest(t, "payload")
	ans, err := newClient(t, 4).Upload(context.Background(), owner.URL, r, r.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusTooManyRequests, ans.Status)
	require.Equal(t, "7", ans.RetryAfter)
	require.Equal(t, "slow down", string(ans.Body))
}

func TestUnreachableOwnerIsRetryable503(t *testing.T) {
	dead := httptest.NewServer(http.NotFoundHandler())
	url := dead.URL
	dead.Close()
	r := clientRequest(t, "payload")
	_, err := newClient(t, 4).Upload(context.Background(), url, r, r.Body)
	require.Error(t, err)
	require.Equal(t, http.StatusServiceUnavailable, upload.StatusCode(err), "never a false 200")
	require.True(t, upload.Retryable(err))
	require.Positive(t, upload.RetryAfter(err))
}

func TestConcurrencyIsBounded(t *testing.T) {
	release := make(chan struct{})
	owner := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
	}))
	defer owner.Close()
	defer close(release)
	c := newClient(t, 1)
	started := make(chan struct{})
	go func() {
		r := clientRequest(t, "a")
		close(started)
		_, _ = c.Upload(context.Background(), owner.URL, r, r.Body)
	}()
	<-started
	require.Eventually(t, func() bool { return len(c.slots) == 1 }, 2*time.Second, 5*time.Millisecond)
	r := clientRequest(t, "b")
	_, err := c.Upload(context.Background(), owner.URL, r, r.Body)
	require.ErrorIs(t, err, upload.ErrUnavailable)
}

func TestPushSnapshot(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
		ok     bool
	}{
		{"stored", http.StatusNoContent, true},
		{"peer has newer data", http.StatusConflict, true},
		{"peer refuses", http.StatusUnauthorized, false},
		{"peer unavailable", http.StatusServiceUnavailable, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			peer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				require.Equal(t, http.MethodPut, r.Method)
				require.Equal(t, PathSnapshot, r.URL.Path)
				require.Equal(t, "peer-token", r.Header.Get(HeaderPeerToken))
				w.WriteHeader(tc.status)
			}))
			defer peer.Close()
			err := newClient(t, 1).PushSnapshot(context.Background(), peer.URL, KindReplica, []byte("raw"))
			if tc.ok {
				require.NoError(t, err)
			} else {
				require.Error(t, err)
			}
		})
	}
}
