package admission

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/telemeter/telemeter/internal/upload"
)

// scriptedReader returns one chunk per Read, advancing the clock by the
// chunk's delay first: a client sending at a chosen pace.
type scriptedReader struct {
	c      *fakeClock
	chunks []chunk
}

type chunk struct {
	after time.Duration
	n     int
}

// Read returns what is left of the current chunk, or waits for the next.
func (s *scriptedReader) Read(p []byte) (int, error) {
	if len(s.chunks) == 0 {
		return 0, io.EOF
	}
	ch := &s.chunks[0]
	s.c.advance(ch.after)
	ch.after = 0
	n := min(len(p), ch.n)
	copy(p, bytes.Repeat([]byte("x"), n))
	if ch.n -= n; ch.n == 0 {
		s.chunks = s.chunks[1:]
	}
	return n, nil
}

func TestMinRateReaderSchedule(t *testing.T) {
	const rate = 100 // bytes per second
	const grace = 2 * time.Second
	for _, tc := range []struct {
		name     string
		chunks   []chunk
		wantRead int // bytes read before the failure, or all when !tooSlow
		tooSlow  bool
	}{
		{
			name:     "fast body",
			chunks:   []chunk{{0, 1000}, {10 * time.Millisecond, 1000}},
			wantRead: 2000,
		},
		{
			name:     "slow start within grace",
			chunks:   []chunk{{1900 * time.Millisecond, 1}, {0, 500}},
			wantRead: 501,
		},
		{
			name:     "nothing within grace",
			chunks:   []chunk{{2100 * time.Millisecond, 1}, {0, 1}},
			wantRead: 1, // this read returned; the next is refused
			tooSlow:  true,
		},
		{
			name: "steady at the minimum rate",
			chunks: []chunk{
				{grace, 100}, {time.Second, 100}, {time.Second, 100}, {time.Second, 100},
			},
			wantRead: 400,
		},
		{
			name: "trickle below the minimum rate",
			chunks: []chunk{
				{time.Second, 10}, {time.Second, 10}, {time.Second, 10}, {time.Second, 10}, {time.Second, 10},
			},
			wantRead: 30, // at 3s, 30 bytes are behind the 100 due
			tooSlow:  true,
		},
		{
			name: "banked bytes do not buy a long stall",
			chunks: []chunk{
				{0, 10_000}, {3 * time.Second, 1}, {0, 1},
			},
			wantRead: 10_001,
			tooSlow:  true,
		},
		{
			name: "a stall shorter than grace after a fast start",
			chunks: []chunk{
				{0, 10_000}, {1500 * time.Millisecond, 1}, {1500 * time.Millisecond, 1},
			},
			wantRead: 10_002,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newFakeClock()
			src := &scriptedReader{c: c, chunks: tc.chunks}
			r := MinRateReader(src, nil, rate, grace, c.now)
			got, err := io.ReadAll(r)
			require.Equal(t, tc.wantRead, len(got))
			if !tc.tooSlow {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, ErrTooSlow)
			require.ErrorIs(t, err, upload.ErrInvalid)
			require.Equal(t, http.StatusBadRequest, upload.StatusCode(err))
			require.Contains(t, err.Error(), "body too slow")
			// The failure sticks.
			n, err2 := r.Read(make([]byte, 10))
			require.Zero(t, n)
			require.ErrorIs(t, err2, ErrTooSlow)
		})
	}
}

func TestMinRateReaderDisabled(t *testing.T) {
	src := strings.NewReader("x")
	require.Same(t, io.Reader(src), MinRateReader(src, nil, 0, time.Second, nil))
}

func TestMinRateReaderErrorSurvivesDecode(t *testing.T) {
	c := newFakeClock()
	src := &scriptedReader{c: c, chunks: []chunk{{5 * time.Second, 1}, {0, 1}}}
	_, err := upload.Decode(MinRateReader(src, nil, 100, time.Second, c.now), "text/plain; version=0.0.4", "",
		upload.Limits{CompressedBytes: 1 << 20, DecodedBytes: 1 << 20})
	require.ErrorIs(t, err, ErrTooSlow)
}

func TestBytesDuration(t *testing.T) {
	for _, tc := range []struct {
		name    string
		n, rate int64
		want    time.Duration
	}{
		{"whole seconds", 300, 100, 3 * time.Second},
		{"fraction", 150, 100, 1500 * time.Millisecond},
		{"huge rate", 1, 1 << 50, 0},
		{"huge count is capped", 1 << 62, 1, 1 << 62},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, bytesDuration(tc.n, tc.rate))
		})
	}
}

// slowBodyServer runs a server whose handler reads the body through
// MinRateReader and reports the outcome on the returned channel.
func slowBodyServer(t *testing.T, rate int64, grace, afterBody time.Duration) (addr string, results <-chan error) {
	t.Helper()
	ch := make(chan error, 1)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		_, err := io.Copy(io.Discard, MinRateReader(r.Body, rc, rate, grace, time.Now))
		if err == nil && afterBody > 0 {
			// Work on after the body, beyond when a stale deadline would
			// have fired: the request must still be alive.
			select {
			case <-time.After(afterBody):
			case <-r.Context().Done():
				err = fmt.Errorf("request context cancelled after the body: %w", r.Context().Err())
			}
		}
		ch <- err
		if err != nil {
			w.WriteHeader(upload.StatusCode(err))
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	srv.Config.ReadTimeout = time.Minute
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String(), ch
}

func dialPost(t *testing.T, addr string, length int) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	_, err = fmt.Fprintf(conn, "POST /upload HTTP/1.1\r\nHost: test\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n", length)
	require.NoError(t, err)
	return conn
}

func waitResult(t *testing.T, results <-chan error, within time.Duration) error {
	t.Helper()
	select {
	case err := <-results:
		return err
	case <-time.After(within):
		t.Fatalf("handler gave no result within %s", within)
		return nil
	}
}

func TestMinRateReaderOverHTTP(t *testing.T) {
	t.Parallel()

	t.Run("trickling client is cut", func(t *testing.T) {
		t.Parallel()
		addr, results := slowBodyServer(t, 1000, time.Second, 0)
		conn := dialPost(t, addr, 10_000)
		start := time.Now()
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			// 20 bytes/s against a minimum of 1000.
			for range 200 {
				select {
				case <-stop:
					return
				case <-time.After(50 * time.Millisecond):
				}
				if _, err := conn.Write([]byte("x")); err != nil {
					return
				}
			}
		}()
		err := waitResult(t, results, 5*time.Second)
		require.ErrorIs(t, err, ErrTooSlow)
		require.ErrorIs(t, err, upload.ErrInvalid)
		require.Less(t, time.Since(start), 3*time.Second)
	})

	t.Run("stalled client is cut by the deadline", func(t *testing.T) {
		t.Parallel()
		addr, results := slowBodyServer(t, 1000, time.Second, 0)
		conn := dialPost(t, addr, 10_000)
		start := time.Now()
		_, err := conn.Write(bytes.Repeat([]byte("x"), 100))
		require.NoError(t, err)
		// Send nothing more: only the connection's deadline can end the read.
		err = waitResult(t, results, 5*time.Second)
		require.ErrorIs(t, err, ErrTooSlow)
		require.Less(t, time.Since(start), 3*time.Second)
	})

	t.Run("fast client passes and keeps its request alive", func(t *testing.T) {
		t.Parallel()
		addr, results := slowBodyServer(t, 1000, time.Second, 1500*time.Millisecond)
		conn := dialPost(t, addr, 50_000)
		_, err := conn.Write(bytes.Repeat([]byte("x"), 50_000))
		require.NoError(t, err)
		require.NoError(t, waitResult(t, results, 10*time.Second))
		require.NoError(t, conn.SetReadDeadline(time.Now().Add(5*time.Second)))
		status, err := io.ReadAll(io.LimitReader(conn, 12))
		require.NoError(t, err)
		require.Equal(t, "HTTP/1.1 200", string(status))
	})
}

func TestIsTimeout(t *testing.T) {
	require.True(t, isTimeout(fmt.Errorf("read: %w", &net.OpError{Op: "read", Err: timeoutErr{}})))
	require.True(t, isTimeout(fmt.Errorf("read: %w", errors.Join(errors.New("x"), errDeadline()))))
	require.False(t, isTimeout(io.ErrUnexpectedEOF))
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func errDeadline() error {
	c1, c2 := net.Pipe()
	defer func() { _ = c1.Close() }()
	defer func() { _ = c2.Close() }()
	_ = c1.SetReadDeadline(time.Now().Add(-time.Second))
	_, err := c1.Read(make([]byte, 1))
	return err
}
