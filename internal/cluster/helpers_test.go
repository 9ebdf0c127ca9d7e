package cluster

import (
	"bytes"
	"encoding/base64"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
)

// syncBuffer collects log output from memberlist goroutines; it is printed
// when a test fails.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// fastOptions are short timers for loopback tests, loose enough that a
// loaded 2-core machine running -race does not produce false suspicions.
func fastOptions(name string) Options {
	return Options{
		Name:                name,
		BindAddr:            "127.0.0.1:0",
		Meta:                NodeMeta{APIURL: "http://" + name + ":8080", InternalURL: "http://" + name + ":8081"},
		RejoinInterval:      200 * time.Millisecond,
		ProbeInterval:       300 * time.Millisecond,
		ProbeTimeout:        200 * time.Millisecond,
		GossipInterval:      50 * time.Millisecond,
		GossipToTheDeadTime: 300 * time.Millisecond,
		PushPullInterval:    2 * time.Second,
		TCPTimeout:          time.Second,
		SuspicionMult:       2,
	}
}

// testPeer starts a peer and shuts it down at the end of the test.
func testPeer(t *testing.T, o Options) *Peer {
	t.Helper()
	logs := &syncBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	p, err := Join(o, logger, prometheus.NewRegistry())
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = p.Leave(100 * time.Millisecond)
		if t.Failed() {
			t.Logf("logs of %s:\n%s", p.Name(), logs.String())
		}
	})
	return p
}

func addr(p *Peer) string { return p.Addr() }

// eventually polls cond every 20ms until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	require.Eventually(t, cond, timeout, 20*time.Millisecond, append([]any{format}, args...)...)
}

func names(ms []Member) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.Name
	}
	return out
}

func seesExactly(p *Peer, want ...string) bool {
	got := names(p.Members())
	return strings.Join(got, ",") == strings.Join(want, ",")
}

// key returns a deterministic 32-byte key, base64 encoded.
func key(b byte) string {
	return base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{b}, 32))
}

func writeKeys(t *testing.T, path string, keys ...string) {
	t.Helper()
	content := "# gossip keyring, primary first\n" + strings.Join(keys, "\n") + "\n"
	tmp := path + ".tmp"
	require.NoError(t, os.WriteFile(tmp, []byte(content), 0o600))
	require.NoError(t, os.Rename(tmp, path))
}

func keyFile(t *testing.T, keys ...string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "gossip.keys")
	writeKeys(t, path, keys...)
	return path
}

// blockable drops every packet and connection in both directions while
// blocked, which to the other nodes looks like a network partition.
type blockable struct {
	memberlist.NodeAwareTransport
	blocked atomic.Bool
	packets chan *memberlist.Packet
	streams chan net.Conn
	done    chan struct{}
	once    sync.Once
}

var errBlocked = errors.New("blocked by test")

func newBlockable(inner memberlist.NodeAwareTransport) *blockable {
	b := &blockable{
		NodeAwareTransport: inner,
		packets:            make(chan *memberlist.Packet),
		streams:            make(chan net.Conn),
		done:               make(chan struct{}),
	}
	go func() {
		for {
			select {
			case <-b.done:
				return
			case pk := <-inner.PacketCh():
				if b.blocked.Load() {
					continue
				}
				select {
				case b.packets <- pk:
				case <-b.done:
					return
				}
			}
		}
	}()
	go func() {
		for {
			select {
			case <-b.done:
				return
			case c := <-inner.StreamCh():
				if b.blocked.Load() {
					_ = c.Close()
					continue
				}
				select {
				case b.streams <- c:
				case <-b.done:
					_ = c.Close()
					return
				}
			}
		}
	}()
	return b
}

func (b *blockable) PacketCh() <-chan *memberlist.Packet { return b.packets }
func (b *blockable) StreamCh() <-chan net.Conn           { return b.streams }

func (b *blockable) WriteTo(p []byte, a string) (time.Time, error) {
	if b.blocked.Load() {
		return time.Now(), nil
	}
	return b.NodeAwareTransport.WriteTo(p, a)
}

func (b *blockable) WriteToAddress(p []byte, a memberlist.Address) (time.Time, error) {
	if b.blocked.Load() {
		return time.Now(), nil
	}
	return b.NodeAwareTransport.WriteToAddress(p, a)
}

func (b *blockable) DialTimeout(a string, timeout time.Duration) (net.Conn, error) {
	if b.blocked.Load() {
		return nil, errBlocked
	}
	return b.NodeAwareTransport.DialTimeout(a, timeout)
}

func (b *blockable) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	if b.blocked.Load() {
		return nil, errBlocked
	}
	return b.NodeAwareTransport.DialAddressTimeout(a, timeout)
}

func (b *blockable) Shutdown() error {
	b.once.Do(func() { close(b.done) })
	return b.NodeAwareTransport.Shutdown()
}
