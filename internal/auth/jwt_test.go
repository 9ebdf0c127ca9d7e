package auth

import (
	"crypto"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"

	"github.com/telemeter/telemeter/internal/upload"
)

const (
	testIssuer   = "telemeter-server"
	testAudience = "telemeter-upload"
)

var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func fixedClock(t time.Time) func() time.Time { return func() time.Time { return t } }

func newTestIssuer(t testing.TB, key crypto.Signer, at time.Time) *Issuer {
	t.Helper()
	iss, err := NewIssuer(key, testIssuer, testAudience, time.Hour, fixedClock(at))
	require.NoError(t, err)
	return iss
}

func issue(t testing.TB, iss *Issuer, cluster string) string {
	t.Helper()
	tok, _, err := iss.Issue(cluster, "acct", map[string]string{upload.IDLabel: cluster})
	require.NoError(t, err)
	return tok
}

// signRaw signs arbitrary claims and header fields with key, bypassing the
// Issuer, to build tokens the Issuer would never make.
func signRaw(t testing.TB, method jwt.SigningMethod, key any, claims jwt.Claims, header map[string]any) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	for k, v := range header {
		tok.Header[k] = v
	}
	s, err := tok.SignedString(key)
	require.NoError(t, err)
	return s
}

func validClaims(at time.Time) Claims {
	return Claims{
		ClusterID: "c1",
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    testIssuer,
			Audience:  jwt.ClaimStrings{testAudience},
			Subject:   "c1",
			IssuedAt:  jwt.NewNumericDate(at),
			NotBefore: jwt.NewNumericDate(at),
			ExpiresAt: jwt.NewNumericDate(at.Add(time.Hour)),
		},
	}
}

func segments(tok string) []string { return strings.Split(tok, ".") }

func b64json(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func TestIssueVerifyRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		key  crypto.Signer
		alg  string
	}{
		{name: "p256", key: testECKey(t, elliptic.P256()), alg: "ES256"},
		{name: "p384", key: testECKey(t, elliptic.P384()), alg: "ES384"},
		{name: "rsa", key: testRSAKey(t), alg: "RS256"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			iss := newTestIssuer(t, tc.key, testNow)
			labels := map[string]string{upload.IDLabel: "cluster-a", "env": "prod"}
			tok, ttl, err := iss.Issue("cluster-a", "acct-1", labels)
			require.NoError(t, err)
			require.Equal(t, time.Hour, ttl)
			labels["env"] = "changed after issuing"

			hdr, err := jwt.NewParser().DecodeSegment(segments(tok)[0])
			require.NoError(t, err)
			require.JSONEq(t, `{"alg":"`+tc.alg+`","kid":"`+KeyID(tc.key.Public())+`","typ":"JWT"}`, string(hdr))

			v := NewVerifier([]crypto.PublicKey{tc.key.Public()}, testIssuer, testAudience, time.Minute, fixedClock(testNow.Add(30*time.Minute)))
			c, err := v.Verify(tok)
			require.NoError(t, err)
			require.Equal(t, "cluster-a", c.ClusterID)
			require.Equal(t, "acct-1", c.AccountID)
			require.Equal(t, map[string]string{upload.IDLabel: "cluster-a", "env": "prod"}, c.Labels)
			require.Equal(t, testNow.Add(time.Hour), c.ExpiresAt.UTC())
			require.NotEmpty(t, c.ID)
		})
	}
}

func TestNewIssuerRefuses(t *testing.T) {
	k := testECKey(t, elliptic.P256())
	_, err := NewIssuer(nil, testIssuer, testAudience, time.Hour, nil)
	require.Error(t, err)
	_, err = NewIssuer(k, "", testAudience, time.Hour, nil)
	require.Error(t, err)
	_, err = NewIssuer(k, testIssuer, "", time.Hour, nil)
	require.Error(t, err)
	_, err = NewIssuer(k, testIssuer, testAudience, 0, nil)
	require.Error(t, err)
	_, err = NewIssuer(testECKey(t, elliptic.P521()), testIssuer, testAudience, time.Hour, nil)
	require.ErrorContains(t, err, "P-521")
}

// TestVerifyRefuses is QUALITY R8 and R9: forged, tampered, misdirected and
// out-of-time tokens are all 401.
func TestVerifyRefuses(t *testing.T) {
	key := testECKey(t, elliptic.P256())
	foreign := testECKey(t, elliptic.P256())
	p384 := testECKey(t, elliptic.P384())
	rsaKey := testRSAKey(t)
	kid := KeyID(key)
	skew := time.Minute
	good := issue(t, newTestIssuer(t, key, testNow), "c1")
	other := issue(t, newTestIssuer(t, key, testNow), "c2")
	pubDER, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	require.NoError(t, err)
	pubPEMBytes := pemBlock("PUBLIC KEY", pubDER)

	hs := func(secret []byte) string {
		return signRaw(t, jwt.SigningMethodHS256, secret, validClaims(testNow), map[string]any{"kid": kid})
	}
	withClaims := func(mut func(*Claims)) string {
		c := validClaims(testNow)
		mut(&c)
		return signRaw(t, jwt.SigningMethodES256, key, c, map[string]any{"kid": kid})
	}
	otherIssuer := func(iss, aud string) string {
		i, err := NewIssuer(key, iss, aud, time.Hour, fixedClock(testNow))
		require.NoError(t, err)
		return issue(t, i, "c1")
	}
	g, o := segments(good), segments(other)

	for _, tc := range []struct {
		name   string
		token  string
		at     time.Time // verification time; zero: testNow
		reason string
	}{
		{name: "foreign key", token: issue(t, newTestIssuer(t, foreign, testNow), "c1"), reason: "invalid token signature"},
		{name: "foreign key claiming our kid", token: signRaw(t, jwt.SigningMethodES256, foreign, validClaims(testNow), map[string]any{"kid": kid}), reason: "invalid token signature"},
		{name: "alg none without signature", token: b64json(`{"alg":"none","typ":"JWT"}`) + "." + g[1] + ".", reason: "three segments"},
		{name: "alg none with signature", token: b64json(`{"alg":"none","typ":"JWT"}`) + "." + g[1] + "." + g[2], reason: "algorithm not allowed"},
		{name: "alg None", token: b64json(`{"alg":"None"}`) + "." + g[1] + "." + g[2], reason: "algorithm not allowed"},
		{name: "hs256 keyed with public key pem", token: hs(pubPEMBytes), reason: "algorithm not allowed"},
		{name: "hs256 keyed with public key der", token: hs(pubDER), reason: "algorithm not allowed"},
		{name: "payload swapped under a valid signature", token: g[0] + "." + o[1] + "." + g[2], reason: "invalid token signature"},
		{name: "header swapped to another alg", token: b64json(`{"alg":"ES384","kid":"`+kid+`"}`) + "." + g[1] + "." + g[2], reason: "algorithm not allowed"},
		{name: "wrong audience", token: otherIssuer(testIssuer, "someone-else"), reason: "wrong token audience"},
		{name: "wrong issuer", token: otherIssuer("evil", testAudience), reason: "wrong token issuer"},
		{name: "expired", token: good, at: testNow.Add(time.Hour + skew + time.Second), reason: "token expired"},
		{name: "not yet valid", token: good, at: testNow.Add(-skew - time.Second), reason: "not valid yet"},
		{name: "issued in the future without nbf", token: withClaims(func(c *Claims) { c.NotBefore = nil; c.IssuedAt = jwt.NewNumericDate(testNow.Add(2 * skew)) }), reason: "issued in the future"},
		{name: "no expiry", token: withClaims(func(c *Claims) { c.ExpiresAt = nil }), reason: "lacks a required claim"},
		{name: "no cluster", token: withClaims(func(c *Claims) { c.ClusterID = ""; c.Subject = "" }), reason: "names no cluster"},
		{name: "subject of another cluster", token: withClaims(func(c *Claims) { c.Subject = "c2" }), reason: "subject does not match"},
		{name: "no audience", token: withClaims(func(c *Claims) { c.Audience = nil }), reason: "lacks a required claim"},
		{name: "p384 key, not configured", token: issue(t, newTestIssuer(t, p384, testNow), "c1"), reason: "algorithm not allowed"},
		{name: "rsa key, not configured", token: issue(t, newTestIssuer(t, rsaKey, testNow), "c1"), reason: "algorithm not allowed"},
		{name: "empty", token: "", reason: "missing token"},
		{name: "garbage", token: "not a token", reason: "three segments"},
		{name: "space inside", token: g[0] + "." + g[1] + " ." + g[2], reason: "invalid character"},
		{name: "two segments", token: g[0] + "." + g[1], reason: "three segments"},
		{name: "four segments", token: good + "." + g[2], reason: "three segments"},
		{name: "empty header", token: "." + g[1] + "." + g[2], reason: "three segments"},
		{name: "empty payload", token: g[0] + ".." + g[2], reason: "empty payload"},
		{name: "padding", token: good + "==", reason: "invalid character"},
		{name: "standard base64 alphabet", token: g[0] + "." + g[1] + "+/" + "." + g[2], reason: "invalid character"},
		{name: "header not json", token: b64json(`alg=ES256`) + "." + g[1] + "." + g[2], reason: "header is not JSON"},
		{name: "header not base64", token: "A." + g[1] + "." + g[2], reason: "header is not base64url"},
		{name: "alg in upper case", token: b64json(`{"ALG":"ES256","kid":"`+kid+`"}`) + "." + g[1] + "." + g[2], reason: "algorithm not allowed"},
		{name: "alg not a string", token: b64json(`{"alg":["ES256"]}`) + "." + g[1] + "." + g[2], reason: "algorithm not allowed"},
		{name: "kid not a string", token: b64json(`{"alg":"ES256","kid":7}`) + "." + g[1] + "." + g[2], reason: "kid is not a string"},
		{name: "header null", token: b64json(`null`) + "." + g[1] + "." + g[2], reason: "algorithm not allowed"},
		{name: "critical extension", token: b64json(`{"alg":"ES256","kid":"`+kid+`","crit":["exp"],"exp":1}`) + "." + g[1] + "." + g[2], reason: "critical header"},
		{name: "truncated signature", token: good[:len(good)-4], reason: "wrong length"},
		{name: "too long", token: g[0] + "." + strings.Repeat("A", MaxTokenBytes) + "." + g[2], reason: "too long"},
		{name: "payload not json", token: g[0] + "." + b64json("[") + "." + g[2], reason: "malformed token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			at := tc.at
			if at.IsZero() {
				at = testNow
			}
			v := NewVerifier([]crypto.PublicKey{&key.PublicKey}, testIssuer, testAudience, skew, fixedClock(at))
			c, err := v.Verify(tc.token)
			require.Nil(t, c)
			require.ErrorIs(t, err, upload.ErrUnauthorized)
			require.ErrorContains(t, err, tc.reason)
		})
	}

	t.Run("the untampered tokens verify", func(t *testing.T) {
		v := NewVerifier([]crypto.PublicKey{&key.PublicKey}, testIssuer, testAudience, skew, fixedClock(testNow))
		for _, tok := range []string{good, other} {
			_, err := v.Verify(tok)
			require.NoError(t, err)
		}
	})
}

func TestVerifySkew(t *testing.T) {
	key := testECKey(t, elliptic.P256())
	tok := issue(t, newTestIssuer(t, key, testNow), "c1") // valid [testNow, testNow+1h)
	skew := time.Minute
	for _, tc := range []struct {
		name string
		at   time.Time
		ok   bool
	}{
		{name: "just issued", at: testNow, ok: true},
		{name: "clock behind within skew", at: testNow.Add(-skew + time.Second), ok: true},
		{name: "clock behind beyond skew", at: testNow.Add(-skew - time.Second), ok: false},
		{name: "expired within skew", at: testNow.Add(time.Hour + skew - time.Second), ok: true},
		{name: "expired beyond skew", at: testNow.Add(time.Hour + skew + time.Second), ok: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := NewVerifier([]crypto.PublicKey{&key.PublicKey}, testIssuer, testAudience, skew, fixedClock(tc.at))
			_, err := v.Verify(tok)
			if tc.ok {
				require.NoError(t, err)
			} else {
				require.ErrorIs(t, err, upload.ErrUnauthorized)
			}
		})
	}
}

// TestVerifyRotation is QUALITY R9: after the signing key rotates, tokens
// signed by the old key stay valid while the old key is kept for
// verification, and only until they expire.
func TestVerifyRotation(t *testing.T) {
	oldKey := testECKey(t, elliptic.P256())
	newKey := testECKey(t, elliptic.P256())
	rsaKey := testRSAKey(t)
	oldTok := issue(t, newTestIssuer(t, oldKey, testNow), "c1")
	newTok := issue(t, newTestIssuer(t, newKey, testNow.Add(10*time.Minute)), "c1")
	// An old token with no kid, or a kid nobody knows, is found by trying keys.
	noKid := signRaw(t, jwt.SigningMethodES256, oldKey, validClaims(testNow), nil)
	strangeKid := signRaw(t, jwt.SigningMethodES256, oldKey, validClaims(testNow), map[string]any{"kid": "retired-2025"})

	afterRotation := []crypto.PublicKey{&newKey.PublicKey, &rsaKey.PublicKey, &oldKey.PublicKey}
	at := testNow.Add(20 * time.Minute)

	for _, tc := range []struct {
		name  string
		keys  []crypto.PublicKey
		at    time.Time
		token string
		ok    bool
	}{
		{name: "new token, new key", keys: afterRotation, at: at, token: newTok, ok: true},
		{name: "old token, old key kept", keys: afterRotation, at: at, token: oldTok, ok: true},
		{name: "old token without kid", keys: afterRotation, at: at, token: noKid, ok: true},
		{name: "old token with unknown kid", keys: afterRotation, at: at, token: strangeKid, ok: true},
		{name: "old token after it expired", keys: afterRotation, at: testNow.Add(time.Hour + 2*time.Minute), token: oldTok},
		{name: "new token still valid then", keys: afterRotation, at: testNow.Add(time.Hour + 2*time.Minute), token: newTok, ok: true},
		{name: "old token, old key removed", keys: []crypto.PublicKey{&newKey.PublicKey}, at: at, token: oldTok},
		{name: "old token without kid, old key removed", keys: []crypto.PublicKey{&newKey.PublicKey}, at: at, token: noKid},
		{name: "token naming the rsa kid with ES256", keys: afterRotation, at: at, token: signRaw(t, jwt.SigningMethodES256, oldKey, validClaims(testNow), map[string]any{"kid": KeyID(&rsaKey.PublicKey)})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := NewVerifier(tc.keys, testIssuer, testAudience, time.Minute, fixedClock(tc.at))
			c, err := v.Verify(tc.token)
			if tc.ok {
				require.NoError(t, err)
				require.Equal(t, "c1", c.ClusterID)
				return
			}
			require.ErrorIs(t, err, upload.ErrUnauthorized)
		})
	}
}

func TestVerifierFailsClosed(t *testing.T) {
	key := testECKey(t, elliptic.P256())
	tok := issue(t, newTestIssuer(t, key, testNow), "c1")
	for _, tc := range []struct {
		name     string
		keys     []crypto.PublicKey
		iss, aud string
	}{
		{name: "no keys", keys: nil, iss: testIssuer, aud: testAudience},
		{name: "only unusable keys", keys: []crypto.PublicKey{&testECKey(t, elliptic.P521()).PublicKey}, iss: testIssuer, aud: testAudience},
		{name: "no issuer", keys: []crypto.PublicKey{&key.PublicKey}, aud: testAudience},
		{name: "no audience", keys: []crypto.PublicKey{&key.PublicKey}, iss: testIssuer},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := NewVerifier(tc.keys, tc.iss, tc.aud, time.Minute, fixedClock(testNow))
			_, err := v.Verify(tok)
			require.ErrorIs(t, err, upload.ErrUnauthorized)
		})
	}
	// A private key passed as a verification key is reduced to its public half.
	v := NewVerifier([]crypto.PublicKey{key}, testIssuer, testAudience, time.Minute, fixedClock(testNow))
	_, err := v.Verify(tok)
	require.NoError(t, err)
}

// TestPrecheckBeforeCrypto shows that malformed tokens are refused by the
// structural check, which does no cryptography, while a well-formed forgery
// passes it and is left to the signature check.
func TestPrecheckBeforeCrypto(t *testing.T) {
	key := testECKey(t, elliptic.P256())
	v := NewVerifier([]crypto.PublicKey{&key.PublicKey}, testIssuer, testAudience, time.Minute, fixedClock(testNow))
	good := issue(t, newTestIssuer(t, key, testNow), "c1")
	g := segments(good)

	forged := issue(t, newTestIssuer(t, testECKey(t, elliptic.P256()), testNow), "c1")
	_, err := v.precheck(forged)
	require.NoError(t, err, "a well-formed forgery is the signature check's job")
	hdr, err := v.precheck(good)
	require.NoError(t, err)
	require.Equal(t, "ES256", hdr.Alg)
	require.Equal(t, KeyID(key), hdr.Kid)

	for name, tok := range map[string]string{
		"alg none":       b64json(`{"alg":"none"}`) + "." + g[1] + "." + g[2],
		"hs256":          b64json(`{"alg":"HS256"}`) + "." + g[1] + "." + g[2],
		"rs256":          b64json(`{"alg":"RS256"}`) + "." + g[1] + "." + g[2],
		"no alg":         b64json(`{"kid":"x"}`) + "." + g[1] + "." + g[2],
		"long signature": good + "AAAA",
		"oversized":      strings.Repeat("A", MaxTokenBytes+1),
		"one segment":    g[1],
	} {
		_, err := v.precheck(tok)
		require.ErrorIs(t, err, upload.ErrUnauthorized, name)
	}
}

func BenchmarkVerify(b *testing.B) {
	key := testECKey(b, elliptic.P256())
	v := NewVerifier([]crypto.PublicKey{&key.PublicKey}, testIssuer, testAudience, time.Minute, fixedClock(testNow))
	tok := issue(b, newTestIssuer(b, key, testNow), "c1")
	b.Run("valid", func(b *testing.B) {
		for b.Loop() {
			if _, err := v.Verify(tok); err != nil {
				b.Fatal(err)
			}
		}
	})
	malformed := b64json(`{"alg":"none"}`) + "." + segments(tok)[1] + "." + segments(tok)[2]
	b.Run("malformed", func(b *testing.B) {
		for b.Loop() {
			if _, err := v.Verify(malformed); err == nil {
				b.Fatal("accepted")
			}
		}
	})
}
