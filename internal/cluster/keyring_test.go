package cluster

import (
	"context"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
)

func TestParseKeyring(t *testing.T) {
	k16 := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef"))
	k24 := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef01234567"))
	k32 := key(7)
	for _, tc := range []struct {
		name    string
		in      string
		want    []string // base64 of the keys, primary first
		wantErr string
	}{
		{name: "one key", in: k32 + "\n", want: []string{k32}},
		{name: "all sizes, comments and blanks", in: "# rotate me\n\n  " + k24 + "  \n#" + k32 + "\n" + k16 + "\n" + k32, want: []string{k24, k16, k32}},
		{name: "duplicate counts once at first position", in: k16 + "\n" + k32 + "\n" + k16 + "\n", want: []string{k16, k32}},
		{name: "no trailing newline", in: k16, want: []string{k16}},
		{name: "windows line endings", in: k16 + "\r\n" + k32 + "\r\n", want: []string{k16, k32}},
		{name: "empty", in: "", wantErr: "no keys found"},
		{name: "only comments", in: "# nothing\n#\n", wantErr: "no keys found"},
		{name: "not base64", in: k16 + "\nnot-a-key!\n", wantErr: "line 2: key is not valid base64"},
		{name: "wrong size", in: base64.StdEncoding.EncodeToString([]byte("short")), wantErr: "line 1: key decodes to 5 bytes"},
		{name: "inline comment is not allowed", in: k16 + " # primary\n", wantErr: "line 1: key is not valid base64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			keys, err := parseKeyring(strings.NewReader(tc.in))
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			got := make([]string, len(keys))
			for i, k := range keys {
				got[i] = base64.StdEncoding.EncodeToString(k)
			}
			require.Equal(t, tc.want, got)
		})
	}
}

func TestParseKeyringErrorHidesKey(t *testing.T) {
	secret := base64.StdEncoding.EncodeToString([]byte("twelve bytes"))
	_, err := parseKeyring(strings.NewReader(secret))
	require.Error(t, err)
	require.NotContains(t, err.Error(), secret)
}

func TestApplyKeys(t *testing.T) {
	k := func(b byte) []byte { d, _ := base64.StdEncoding.DecodeString(key(b)); return d }
	for _, tc := range []struct {
		name        string
		installed   [][]byte // primary first
		file        [][]byte
		wantChange  keyringChange
		wantPrimary []byte
	}{
		{name: "unchanged", installed: [][]byte{k(1)}, file: [][]byte{k(1)}, wantPrimary: k(1)},
		{name: "add secondary", installed: [][]byte{k(1)}, file: [][]byte{k(1), k(2)}, wantChange: keyringChange{added: 1}, wantPrimary: k(1)},
		{name: "use new primary", installed: [][]byte{k(1), k(2)}, file: [][]byte{k(2), k(1)}, wantChange: keyringChange{primaryChanged: true}, wantPrimary: k(2)},
		{name: "remove old", installed: [][]byte{k(2), k(1)}, file: [][]byte{k(2)}, wantChange: keyringChange{removed: 1}, wantPrimary: k(2)},
		{name: "replace in one step", installed: [][]byte{k(1)}, file: [][]byte{k(3)}, wantChange: keyringChange{added: 1, removed: 1, primaryChanged: true}, wantPrimary: k(3)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kr, err := memberlist.NewKeyring(tc.installed[1:], tc.installed[0])
			require.NoError(t, err)
			c, err := applyKeys(kr, tc.file)
			require.NoError(t, err)
			require.Equal(t, tc.wantChange, c)
			require.Equal(t, tc.wantPrimary, kr.GetPrimaryKey())
			require.ElementsMatch(t, tc.file, kr.GetKeys())
		})
	}
}

func TestReloadKeyringErrors(t *testing.T) {
	t.Run("not encrypted", func(t *testing.T) {
		p := testPeer(t, fastOptions("plain"))
		require.ErrorIs(t, p.ReloadKeyring(), ErrNoKeyring)
		require.Equal(t, 1.0, testutil.ToFloat64(p.metrics.keyringReloads.WithLabelValues("failure")))
	})
	t.Run("bad file keeps the keys", func(t *testing.T) {
		o := fastOptions("enc")
		o.KeyringFile = keyFile(t, key(1))
		p := testPeer(t, o)
		require.NoError(t, os.WriteFile(o.KeyringFile, []byte("garbage\n"), 0o600))
		require.Error(t, p.ReloadKeyring())
		require.Len(t, p.keyring.GetKeys(), 1)
		require.Equal(t, key(1), base64.StdEncoding.EncodeToString(p.keyring.GetPrimaryKey()))
		require.NoError(t, os.Remove(o.KeyringFile))
		require.Error(t, p.ReloadKeyring())
		require.Equal(t, 2.0, testutil.ToFloat64(p.metrics.keyringReloads.WithLabelValues("failure")))
	})
	t.Run("missing file at start", func(t *testing.T) {
		o := fastOptions("nofile")
		o.KeyringFile = filepath.Join(t.TempDir(), "absent")
		_, err := Join(o, nil, nil)
		require.Error(t, err)
		require.True(t, errors.Is(err, os.ErrNotExist), "%v", err)
	})
}

// TestForeignNodesNeverJoin is QUALITY R14: with gossip encrypted, a node
// with another key and a node with no key cannot join, neither at start nor
// through their re-join loops, and the cluster cannot join them either.
func TestForeignNodesNeverJoin(t *testing.T) {
	ao, bo := fastOptions("a"), fastOptions("b")
	ao.KeyringFile = keyFile(t, key(1))
	bo.KeyringFile = keyFile(t, key(1))
	peers := startCluster(t, ao, bo)
	a, b := peers[0], peers[1]

	wrong := fastOptions("wrong-key")
	wrong.KeyringFile = keyFile(t, key(2))
	none := fastOptions("no-key")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var foreign []*Peer
	for _, o := range []Options{wrong, none} {
		o.Join = []string{addr(a), addr(b)}
		p := testPeer(t, o)
		foreign = append(foreign, p)
		go func() { _ = p.Run(ctx) }()
	}
	// Foreign nodes also try the other way round.
	for _, f := range foreign {
		_, err := a.ml.Join([]string{addr(f)})
		require.Error(t, err, "a joined %s", f.Name())
	}
	for _, f := range foreign {
		eventually(t, 10*time.Second, func() bool {
			return testutil.ToFloat64(f.metrics.failedRejoins) >= 3
		}, "%s did not keep trying", f.Name())
	}
	for _, f := range foreign {
		require.True(t, seesExactly(f, f.Name()), "%s sees %v", f.Name(), names(f.Members()))
		require.False(t, f.joined.Load(), f.Name())
	}
	for _, p := range peers {
		require.True(t, seesExactly(p, "a", "b"), "%s sees %v", p.Name(), names(p.Members()))
		require.Equal(t, 2.0, eventCount(p, eventJoin), "joins seen by %s", p.Name())
	}
}

// soak lets gossip run long enough for a key mismatch to fail probes.
const soak = 1200 * time.Millisecond

// TestLiveKeyRotation rotates the key of a 3-node cluster with the
// documented procedure (add, use, remove) and expects no suspicion, leave or
// failure at any step; afterwards the old key no longer opens the cluster.
func TestLiveKeyRotation(t *testing.T) {
	old, next := key(1), key(2)
	opts := []Options{fastOptions("a"), fastOptions("b"), fastOptions("c")}
	for i := range opts {
		opts[i].KeyringFile = keyFile(t, old)
	}
	peers := startCluster(t, opts...)
	quiet := func(step string) {
		t.Helper()
		for _, p := range peers {
			for _, e := range []string{eventSuspect, eventFailed, eventLeave, eventRefute} {
				require.Zero(t, eventCount(p, e), "%s: %s saw %s", step, p.Name(), e)
			}
			require.True(t, seesExactly(p, "a", "b", "c"), "%s: %s sees %v", step, p.Name(), names(p.Members()))
		}
	}
	time.Sleep(soak)
	quiet("before")

	for _, step := range []struct {
		name string
		keys []string
	}{
		{name: "add", keys: []string{old, next}},
		{name: "use", keys: []string{next, old}},
		{name: "remove", keys: []string{next}},
	} {
		for i, p := range peers {
			writeKeys(t, opts[i].KeyringFile, step.keys...)
			require.NoError(t, p.ReloadKeyring(), "%s on %s", step.name, p.Name())
			time.Sleep(soak / 3) // nodes reload one after another, as an operator would
		}
		time.Sleep(soak)
		quiet(step.name)
		for _, p := range peers {
			require.Len(t, p.keyring.GetKeys(), len(step.keys), "%s on %s", step.name, p.Name())
			require.Equal(t, step.keys[0], base64.StdEncoding.EncodeToString(p.keyring.GetPrimaryKey()))
		}
	}

	stale := fastOptions("stale")
	stale.KeyringFile = keyFile(t, old)
	stale.Join = []string{addr(peers[0])}
	s := testPeer(t, stale)
	require.True(t, seesExactly(s, "stale"), "a node with the removed key joined")

	fresh := fastOptions("fresh")
	fresh.KeyringFile = keyFile(t, next)
	fresh.Join = []string{addr(peers[0])}
	f := testPeer(t, fresh)
	eventually(t, 10*time.Second, func() bool { return seesExactly(f, "a", "b", "c", "fresh") }, "fresh sees %v", names(f.Members()))
}

// TestRotationOutOfOrderIsDetected makes a new key primary on one node
// before the others know it. That breaks gossip with that node, and the
// counters the rotation test relies on must show it.
func TestRotationOutOfOrderIsDetected(t *testing.T) {
	old, next := key(1), key(2)
	opts := []Options{fastOptions("a"), fastOptions("b"), fastOptions("c")}
	for i := range opts {
		opts[i].KeyringFile = keyFile(t, old)
	}
	peers := startCluster(t, opts...)
	writeKeys(t, opts[0].KeyringFile, next, old)
	require.NoError(t, peers[0].ReloadKeyring())
	eventually(t, 10*time.Second, func() bool {
		var n float64
		for _, p := range peers {
			n += eventCount(p, eventSuspect) + eventCount(p, eventRefute)
		}
		return n > 0
	}, "no suspicion after a broken rotation")
}
