package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/base64"
	"flag"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"

	"github.com/telemeter/telemeter/internal/upload"
)

var update = flag.Bool("update", false, "rewrite the FuzzVerify seed corpus in testdata")

// fuzzKeyPEM is a key for tests only, so that the seed corpus holds tokens
// that verify: a fuzzer mutating a valid token explores far more of Verify
// than one starting from noise.
const fuzzKeyFile = "testdata/fuzz-verify-key.pem"

// fuzzNow is the verification time of FuzzVerify; the valid seeds were
// issued at it.
var fuzzNow = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func loadFuzzKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	data, err := os.ReadFile(fuzzKeyFile)
	require.NoError(t, err)
	k, err := LoadKey(data)
	require.NoError(t, err)
	return k.(*ecdsa.PrivateKey)
}

// fuzzSeeds are tokens of every shape Verify distinguishes.
func fuzzSeeds(t testing.TB, key *ecdsa.PrivateKey) map[string]string {
	t.Helper()
	iss, err := NewIssuer(key, testIssuer, testAudience, time.Hour, fixedClock(fuzzNow))
	require.NoError(t, err)
	valid, _, err := iss.Issue("cluster-1", "acct", map[string]string{upload.IDLabel: "cluster-1", "env": "prod"})
	require.NoError(t, err)
	expiredIss, err := NewIssuer(key, testIssuer, testAudience, time.Hour, fixedClock(fuzzNow.Add(-3*time.Hour)))
	require.NoError(t, err)
	expired, _, err := expiredIss.Issue("cluster-1", "acct", nil)
	require.NoError(t, err)
	v := segments(valid)
	return map[string]string{
		"valid":        valid,
		"expired":      expired,
		"alg-none":     b64json(`{"alg":"none","typ":"JWT"}`) + "." + v[1] + ".",
		"hs256":        signRaw(t, jwt.SigningMethodHS256, []byte("public key bytes"), validClaims(fuzzNow), nil),
		"crit":         b64json(`{"alg":"ES256","crit":["x"],"x":1}`) + "." + v[1] + "." + v[2],
		"unknown-kid":  signRaw(t, jwt.SigningMethodES256, key, validClaims(fuzzNow), map[string]any{"kid": "nope"}),
		"two-segments": v[0] + "." + v[1],
		"garbage":      "eyJ.eyJ.AAAA",
	}
}

// TestFuzzVerifySeeds writes the seed corpus with -update and otherwise
// checks it is still current: the valid seed must verify, or the fuzzer
// would start from nothing but refusals.
func TestFuzzVerifySeeds(t *testing.T) {
	key := loadFuzzKey(t)
	dir := filepath.Join("testdata", "fuzz", "FuzzVerify")
	if *update {
		require.NoError(t, os.MkdirAll(dir, 0o755))
		for name, tok := range fuzzSeeds(t, key) {
			body := fmt.Sprintf("go test fuzz v1\nstring(%q)\n", tok)
			require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644))
		}
	}
	data, err := os.ReadFile(filepath.Join(dir, "valid"))
	require.NoError(t, err, "run go test -run TestFuzzVerifySeeds -update ./internal/auth/")
	var tok string
	_, err = fmt.Sscanf(strings.TrimPrefix(string(data), "go test fuzz v1\n"), "string(%q)", &tok)
	require.NoError(t, err)
	v := NewVerifier([]crypto.PublicKey{&key.PublicKey}, testIssuer, testAudience, time.Minute, fixedClock(fuzzNow))
	_, err = v.Verify(tok)
	require.NoError(t, err, "the valid seed no longer verifies: run with -update")
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(entries), len(fuzzSeeds(t, key)))
}

// FuzzVerify feeds arbitrary strings to Verify: it must never panic, must
// refuse with upload.ErrUnauthorized only, and may accept only a token whose
// signature really is the test key's over its first two segments and whose
// claims hold at the verification time.
func FuzzVerify(f *testing.F) {
	key := loadFuzzKey(f)
	for _, tok := range fuzzSeeds(f, key) {
		f.Add(tok)
	}
	v := NewVerifier([]crypto.PublicKey{&key.PublicKey}, testIssuer, testAudience, time.Minute, fixedClock(fuzzNow))

	f.Fuzz(func(t *testing.T, token string) {
		c, err := v.Verify(token)
		if err != nil {
			require.ErrorIs(t, err, upload.ErrUnauthorized)
			require.Nil(t, c)
			require.NotContains(t, err.Error(), "\n")
			return
		}
		// Accepted: check it independently of jwt.
		require.NotEmpty(t, c.ClusterID)
		require.True(t, c.ExpiresAt.Add(time.Minute).After(fuzzNow))
		parts := strings.Split(token, ".")
		require.Len(t, parts, 3)
		sig, err := base64.RawURLEncoding.DecodeString(parts[2])
		require.NoError(t, err)
		require.Len(t, sig, 64)
		digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
		r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
		require.True(t, ecdsa.Verify(&key.PublicKey, digest[:], r, s), "accepted a token the key did not sign")
	})
}
