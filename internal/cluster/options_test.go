package cluster

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/stretchr/testify/require"
)

func TestOptionsConfig(t *testing.T) {
	lan := memberlist.DefaultLANConfig()
	for _, tc := range []struct {
		name    string
		o       Options
		wantErr string
		check   func(t *testing.T, c *memberlist.Config)
	}{
		{
			name: "defaults are LAN",
			o:    Options{Name: "n", BindAddr: "127.0.0.1:7946"},
			check: func(t *testing.T, c *memberlist.Config) {
				require.Equal(t, "n", c.Name)
				require.Equal(t, "127.0.0.1", c.BindAddr)
				require.Equal(t, 7946, c.BindPort)
				require.Equal(t, lan.ProbeInterval, c.ProbeInterval)
				require.Equal(t, lan.ProbeTimeout, c.ProbeTimeout)
				require.Equal(t, lan.GossipInterval, c.GossipInterval)
				require.Equal(t, lan.SuspicionMult, c.SuspicionMult)
				require.Equal(t, lan.PushPullInterval, c.PushPullInterval)
				require.Equal(t, DefaultDeadNodeReclaimTime, c.DeadNodeReclaimTime)
				require.Empty(t, c.AdvertiseAddr)
			},
		},
		{
			name: "all interfaces",
			o:    Options{Name: "n", BindAddr: ":7946"},
			check: func(t *testing.T, c *memberlist.Config) {
				require.Equal(t, "0.0.0.0", c.BindAddr)
			},
		},
		{
			name: "overrides",
			o: Options{Name: "n", BindAddr: "[::1]:0", AdvertiseAddr: "10.0.0.1:9000",
				ProbeInterval: time.Second * 2, ProbeTimeout: time.Second, GossipInterval: time.Millisecond,
				SuspicionMult: 7, RetransmitMult: 5, PushPullInterval: time.Minute, TCPTimeout: 3 * time.Second,
				GossipToTheDeadTime: 4 * time.Second, DeadNodeReclaimTime: time.Hour},
			check: func(t *testing.T, c *memberlist.Config) {
				require.Equal(t, "::1", c.BindAddr)
				require.Equal(t, 0, c.BindPort)
				require.Equal(t, "10.0.0.1", c.AdvertiseAddr)
				require.Equal(t, 9000, c.AdvertisePort)
				require.Equal(t, 2*time.Second, c.ProbeInterval)
				require.Equal(t, time.Second, c.ProbeTimeout)
				require.Equal(t, time.Millisecond, c.GossipInterval)
				require.Equal(t, 7, c.SuspicionMult)
				require.Equal(t, 5, c.RetransmitMult)
				require.Equal(t, time.Minute, c.PushPullInterval)
				require.Equal(t, 3*time.Second, c.TCPTimeout)
				require.Equal(t, 4*time.Second, c.GossipToTheDeadTime)
				require.Equal(t, time.Hour, c.DeadNodeReclaimTime)
			},
		},
		{name: "missing port", o: Options{BindAddr: "127.0.0.1"}, wantErr: "parse bind address"},
		{name: "host name", o: Options{BindAddr: "localhost:7946"}, wantErr: "host must be an IP address"},
		{name: "bad port", o: Options{BindAddr: "127.0.0.1:70000"}, wantErr: "port"},
		{name: "advertise without host", o: Options{BindAddr: ":1", AdvertiseAddr: ":2"}, wantErr: "host is required"},
		{name: "advertise host name", o: Options{BindAddr: ":1", AdvertiseAddr: "example:2"}, wantErr: "parse advertise address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := tc.o.config()
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			tc.check(t, c)
		})
	}
}

func TestJoinDefaults(t *testing.T) {
	o := fastOptions("")
	o.RejoinInterval = 0
	p := testPeer(t, o)
	require.NotEmpty(t, p.Name())
	require.Contains(t, p.Name(), "-")
	require.Equal(t, DefaultRejoinInterval, p.interval)
	require.NotEqual(t, "127.0.0.1:0", p.Addr(), "port 0 resolved to the bound port")
	require.True(t, strings.HasPrefix(addr(p), "127.0.0.1:"))

	other := testPeer(t, fastOptions(""))
	require.NotEqual(t, p.Name(), other.Name(), "default names are unique")
}

func TestJoinRejectsLargeMeta(t *testing.T) {
	o := fastOptions("big")
	o.Meta.APIURL = "http://" + strings.Repeat("x", memberlist.MetaMaxSize)
	_, err := Join(o, nil, nil)
	require.ErrorContains(t, err, "limit 512")
}

func TestMeta(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      []byte
		want    NodeMeta
		wantErr bool
	}{
		{name: "empty", in: nil},
		{name: "both", in: []byte(`{"api_url":"https://a:8443","internal_url":"https://a:8081"}`), want: NodeMeta{APIURL: "https://a:8443", InternalURL: "https://a:8081"}},
		{name: "unknown fields ignored", in: []byte(`{"api_url":"u","future":1}`), want: NodeMeta{APIURL: "u"}},
		{name: "not json", in: []byte("\x00\x01"), wantErr: true},
		{name: "wrong type", in: []byte(`{"api_url":5}`), wantErr: true},
		{name: "too large", in: bytes.Repeat([]byte(" "), memberlist.MetaMaxSize+1), wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeMeta(tc.in)
			if tc.wantErr {
				require.Error(t, err)
				require.Zero(t, got)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
	b, err := encodeMeta(NodeMeta{APIURL: "a", InternalURL: "b"})
	require.NoError(t, err)
	got, err := decodeMeta(b)
	require.NoError(t, err)
	require.Equal(t, NodeMeta{APIURL: "a", InternalURL: "b"}, got)
}

// FuzzDecodeMeta: node metadata arrives from the network.
func FuzzDecodeMeta(f *testing.F) {
	f.Add([]byte(`{"api_url":"https://a:8443","internal_url":"https://a:8081"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMeta(b)
		if err != nil {
			return
		}
		// What decodes re-encodes within the limit (escaping may grow it
		// only if the input was already near the limit).
		if _, err := encodeMeta(m); err != nil && len(b) < memberlist.MetaMaxSize/6 {
			t.Fatalf("decoded meta does not re-encode: %v", err)
		}
	})
}

func TestLogBridge(t *testing.T) {
	// The lines are memberlist's own wording (state.go); the rejoin test
	// checks the suspect and failed ones against real output too.
	for _, tc := range []struct {
		name      string
		line      string
		wantLevel string
		wantText  string
		wantEvent string
	}{
		{name: "suspect", line: "[INFO] memberlist: Suspect b has failed, no acks received\n", wantLevel: "info", wantText: "Suspect b has failed, no acks received", wantEvent: eventSuspect},
		{name: "failed", line: "[INFO] memberlist: Marking b as failed, suspect timeout reached (0 peer confirmations)\n", wantLevel: "info", wantText: "Marking b as failed, suspect timeout reached (0 peer confirmations)", wantEvent: eventFailed},
		{name: "refute suspect", line: "[WARN] memberlist: Refuting a suspect message (from: a)\n", wantLevel: "warn", wantText: "Refuting a suspect message (from: a)", wantEvent: eventRefute},
		{name: "refute dead", line: "[WARN] memberlist: Refuting a dead message (from: a)\n", wantLevel: "warn", wantText: "Refuting a dead message (from: a)", wantEvent: eventRefute},
		{name: "ordinary", line: "[DEBUG] memberlist: Stream connection from=127.0.0.1:1\n", wantLevel: "debug", wantText: "Stream connection from=127.0.0.1:1"},
		{name: "no level", line: "Err: Could not set the deadline: x\n", wantText: "Err: Could not set the deadline: x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			var got []string
			b := &logBridge{
				logger: slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug})),
				event:  func(e string) { got = append(got, e) },
			}
			n, err := b.Write([]byte(tc.line))
			require.NoError(t, err)
			require.Equal(t, len(tc.line), n)
			level, text := splitMemberlistLine(tc.line)
			require.Equal(t, tc.wantLevel, level)
			require.Equal(t, tc.wantText, text)
			if tc.wantEvent == "" {
				require.Empty(t, got)
			} else {
				require.Equal(t, []string{tc.wantEvent}, got)
			}
			require.Contains(t, out.String(), "level=DEBUG")
			require.Equal(t, 1, strings.Count(out.String(), "\n"))
		})
	}
}
