package admission

import (
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
)

// acceptAll accepts on l until it fails and hands over every connection.
func acceptAll(t *testing.T, l net.Listener) <-chan net.Conn {
	t.Helper()
	ch := make(chan net.Conn, 16)
	go func() {
		defer close(ch)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			ch <- c
		}
	}()
	return ch
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func nextConn(t *testing.T, ch <-chan net.Conn) net.Conn {
	t.Helper()
	select {
	case c := <-ch:
		require.NotNil(t, c)
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("no connection accepted")
		return nil
	}
}

// requireRefused dials addr and asserts that the server ends the
// connection without a word: a reset, during the dial or after it.
func requireRefused(t *testing.T, addr string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		require.ErrorIs(t, err, syscall.ECONNRESET)
		return
	}
	defer func() { _ = c.Close() }()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
	n, err := c.Read(make([]byte, 1))
	require.Zero(t, n)
	require.Error(t, err)
	var ne net.Error
	if errors.As(err, &ne) {
		require.False(t, ne.Timeout(), "connection left open: %v", err)
	}
}

func TestLimitListener(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	reg := prometheus.NewRegistry()
	l := LimitListener(inner, 2, reg, "public")
	defer func() { _ = l.Close() }()
	accepted := acceptAll(t, l)
	addr := inner.Addr().String()

	dial(t, addr)
	dial(t, addr)
	s1 := nextConn(t, accepted)
	s2 := nextConn(t, accepted)

	requireRefused(t, addr)
	require.Equal(t, 1.0, testutil.ToFloat64(l.(*limitListener).rejected))
	require.Equal(t, 2.0, connGauge(t, reg, "telemeter_server_admission_connections"))
	require.Equal(t, 2.0, connGauge(t, reg, "telemeter_server_admission_connections_limit"))

	// Closing twice frees one slot, once.
	require.NoError(t, s1.Close())
	_ = s1.Close()
	require.Equal(t, 1.0, connGauge(t, reg, "telemeter_server_admission_connections"))

	c3 := dial(t, addr)
	s3 := nextConn(t, accepted)
	_, err = c3.Write([]byte("hi"))
	require.NoError(t, err)
	buf := make([]byte, 2)
	require.NoError(t, s3.SetReadDeadline(time.Now().Add(5*time.Second)))
	_, err = io.ReadFull(s3, buf)
	require.NoError(t, err)
	require.Equal(t, "hi", string(buf))

	requireRefused(t, addr)
	require.Equal(t, 2.0, testutil.ToFloat64(l.(*limitListener).rejected))
	_ = s2.Close()
	_ = s3.Close()
	require.Equal(t, 0.0, connGauge(t, reg, "telemeter_server_admission_connections"))
}

func TestLimitListenerHalfClose(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	l := LimitListener(inner, 0, nil, "internal")
	defer func() { _ = l.Close() }()
	accepted := acceptAll(t, l)
	c := dial(t, inner.Addr().String())
	s := nextConn(t, accepted)
	defer func() { _ = s.Close() }()

	cw, ok := s.(interface{ CloseWrite() error })
	require.True(t, ok, "net/http needs CloseWrite to half-close after an error answer")
	_, err = s.Write([]byte("413"))
	require.NoError(t, err)
	require.NoError(t, cw.CloseWrite())
	require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
	got, err := io.ReadAll(c)
	require.NoError(t, err, "the client reads the answer then a clean end")
	require.Equal(t, "413", string(got))
	// The read side is still open.
	_, err = c.Write([]byte("x"))
	require.NoError(t, err)
	require.NoError(t, s.SetReadDeadline(time.Now().Add(5*time.Second)))
	_, err = io.ReadFull(s, make([]byte, 1))
	require.NoError(t, err)
}

func TestLimitListenerTwoListenersOneRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	for _, name := range []string{"public", "internal"} {
		inner, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer func() { _ = inner.Close() }()
		LimitListener(inner, 10, reg, name)
	}
	mfs, err := reg.Gather()
	require.NoError(t, err)
	series := 0
	for _, mf := range mfs {
		if mf.GetName() == "telemeter_server_admission_connections" {
			series = len(mf.GetMetric())
		}
	}
	require.Equal(t, 2, series)
}

// connGauge sums a gauge over its series.
func connGauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == name {
			v := 0.0
			for _, m := range mf.GetMetric() {
				v += m.GetGauge().GetValue()
			}
			return v
		}
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}

func TestOpenFilesCountsDescriptors(t *testing.T) {
	if _, err := os.Stat("/proc/self/fd"); err != nil {
		t.Skip("no /proc/self/fd here")
	}
	c := newFakeClock()
	reg := prometheus.NewRegistry()
	o := NewOpenFiles(reg)
	o.now = c.now
	before := o.Count()
	require.Positive(t, before)

	dir := t.TempDir()
	for i := range 10 {
		f, err := os.Create(filepath.Join(dir, string(rune('a'+i))))
		require.NoError(t, err)
		defer func() { _ = f.Close() }()
	}
	require.Equal(t, before, o.Count(), "counted again within a second")
	c.advance(openFilesSampleEvery)
	// Other tests may open descriptors meanwhile; ours are at least there.
	require.GreaterOrEqual(t, o.Count(), before+10)
	require.Positive(t, o.Limit())
	require.Equal(t, float64(o.Limit()), gaugeValue(t, reg, "telemeter_server_admission_max_fds"))
	require.Positive(t, gaugeValue(t, reg, "telemeter_server_admission_open_fds"))
}

func TestOpenFilesFakeDirectory(t *testing.T) {
	root := writeTree(t, map[string]string{"fd/0": "", "fd/1": "", "fd/2": ""})
	c := newFakeClock()
	o := &OpenFiles{dir: filepath.Join(root, "fd"), now: c.now}
	require.Equal(t, 3, o.Count())

	o.dir = filepath.Join(root, "missing")
	c.advance(openFilesSampleEvery)
	require.Equal(t, 3, o.Count(), "keeps the last count when counting fails")
}
