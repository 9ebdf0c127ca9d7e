package auth

import (
	"crypto"
	"crypto/elliptic"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/telemeter/telemeter/internal/upload"
)

// movingClock is a clock a test can set while a Verifier reads it.
type movingClock struct{ ns atomic.Int64 }

func (c *movingClock) now() time.Time  { return time.Unix(0, c.ns.Load()).UTC() }
func (c *movingClock) set(t time.Time) { c.ns.Store(t.UnixNano()) }
func newMovingClock(t time.Time) *movingClock {
	c := &movingClock{}
	c.set(t)
	return c
}

func TestCachedVerifyHitsOnlyTheSameValidToken(t *testing.T) {
	key := testECKey(t, elliptic.P256())
	clock := newMovingClock(testNow)
	v := NewVerifier([]crypto.PublicKey{&key.PublicKey}, testIssuer, testAudience, time.Minute, clock.now).CacheVerified(100)
	tok := issue(t, newTestIssuer(t, key, testNow), "c1")

	first, err := v.Verify(tok)
	require.NoError(t, err)
	second, err := v.Verify(tok)
	require.NoError(t, err)
	require.Equal(t, first, second)
	hits, misses, entries := v.CacheStats()
	require.Equal(t, uint64(1), hits)
	require.Equal(t, uint64(1), misses)
	require.Equal(t, 1, entries)

	// A cached token does not vouch for one that differs in any byte.
	seg := segments(tok)
	for name, forged := range map[string]string{
		"payload swapped": seg[0] + "." + segments(issue(t, newTestIssuer(t, testECKey(t, elliptic.P256()), testNow), "c2"))[1] + "." + seg[2],
		"signature bit":   seg[0] + "." + seg[1] + "." + flipLast(seg[2]),
		"trailing space":  tok + " ",
	} {
		_, err := v.Verify(forged)
		require.ErrorIs(t, err, upload.ErrUnauthorized, name)
	}
	_, _, entries = v.CacheStats()
	require.Equal(t, 1, entries, "refused tokens never enter the cache")

	// Within the skew after expiry the token is still good, past it the
	// cached entry is dropped and the full check names the reason.
	clock.set(testNow.Add(time.Hour + 30*time.Second))
	_, err = v.Verify(tok)
	require.NoError(t, err)
	clock.set(testNow.Add(time.Hour + time.Minute))
	_, err = v.Verify(tok)
	require.ErrorIs(t, err, upload.ErrUnauthorized)
	require.ErrorContains(t, err, "expired")
	_, _, entries = v.CacheStats()
	require.Zero(t, entries)
}

func TestCachedVerifyNotBefore(t *testing.T) {
	key := testECKey(t, elliptic.P256())
	clock := newMovingClock(testNow)
	v := NewVerifier([]crypto.PublicKey{&key.PublicKey}, testIssuer, testAudience, time.Minute, clock.now).CacheVerified(100)
	// Issued 50 s ahead of the server's clock: inside the skew.
	tok := issue(t, newTestIssuer(t, key, testNow.Add(50*time.Second)), "c1")
	_, err := v.Verify(tok)
	require.NoError(t, err)
	// The server's clock steps back: the cached entry must not outlive
	// the window the full check allows.
	clock.set(testNow.Add(-30 * time.Second))
	_, err = v.Verify(tok)
	require.ErrorIs(t, err, upload.ErrUnauthorized)
}

func TestCachedVerifyIsBounded(t *testing.T) {
	key := testECKey(t, elliptic.P256())
	v := NewVerifier([]crypto.PublicKey{&key.PublicKey}, testIssuer, testAudience, time.Minute, fixedClock(testNow)).CacheVerified(64)
	iss := newTestIssuer(t, key, testNow)
	for i := range 1000 {
		_, err := v.Verify(issue(t, iss, "c"+strconv.Itoa(i)))
		require.NoError(t, err)
	}
	_, misses, entries := v.CacheStats()
	require.Equal(t, uint64(1000), misses)
	require.LessOrEqual(t, entries, 64)
	require.Positive(t, entries)
}

func flipLast(s string) string {
	b := []byte(s)
	if b[len(b)-2] == 'A' {
		b[len(b)-2] = 'B'
	} else {
		b[len(b)-2] = 'A'
	}
	return string(b)
}
