package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

var (
	rsaOnce sync.Once
	rsaKey  *rsa.PrivateKey
)

// testRSAKey is generated once per test binary: 2048-bit generation is slow
// under the race detector.
func testRSAKey(t testing.TB) *rsa.PrivateKey {
	t.Helper()
	rsaOnce.Do(func() {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		rsaKey = k
	})
	return rsaKey
}

func testECKey(t testing.TB, c elliptic.Curve) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	require.NoError(t, err)
	return k
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func pkcs8(t testing.TB, k any) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k)
	require.NoError(t, err)
	return pemBlock("PRIVATE KEY", der)
}

func sec1(t testing.TB, k *ecdsa.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalECPrivateKey(k)
	require.NoError(t, err)
	return pemBlock("EC PRIVATE KEY", der)
}

func pubPEM(t testing.TB, pub any) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	require.NoError(t, err)
	return pemBlock("PUBLIC KEY", der)
}

func TestLoadKey(t *testing.T) {
	p256 := testECKey(t, elliptic.P256())
	p384 := testECKey(t, elliptic.P384())
	p521 := testECKey(t, elliptic.P521())
	rsa2048 := testRSAKey(t)
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	require.NoError(t, err)
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	ecParams := pemBlock("EC PARAMETERS", []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07})

	for _, tc := range []struct {
		name    string
		pem     []byte
		want    crypto.PublicKey
		wantErr string
	}{
		{name: "sec1 p256", pem: sec1(t, p256), want: &p256.PublicKey},
		{name: "pkcs8 p256", pem: pkcs8(t, p256), want: &p256.PublicKey},
		{name: "openssl ecparam output", pem: append(ecParams, sec1(t, p256)...), want: &p256.PublicKey},
		{name: "sec1 p384", pem: sec1(t, p384), want: &p384.PublicKey},
		{name: "pkcs1 rsa", pem: pemBlock("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsa2048)), want: &rsa2048.PublicKey},
		{name: "pkcs8 rsa", pem: pkcs8(t, rsa2048), want: &rsa2048.PublicKey},
		{name: "public key first is skipped", pem: append(pubPEM(t, &p384.PublicKey), sec1(t, p256)...), want: &p256.PublicKey},
		{name: "p521 refused", pem: sec1(t, p521), wantErr: "unsupported elliptic curve P-521"},
		{name: "small rsa refused", pem: pemBlock("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsa1024)), wantErr: "too small"},
		{name: "ed25519 refused", pem: pkcs8(t, ed), wantErr: "unsupported key type"},
		{name: "encrypted pkcs8 refused", pem: pemBlock("ENCRYPTED PRIVATE KEY", []byte{1, 2, 3}), wantErr: "encrypted"},
		{name: "only a public key", pem: pubPEM(t, &p256.PublicKey), wantErr: "no private key"},
		{name: "not pem", pem: []byte("hello"), wantErr: "no private key"},
		{name: "damaged der", pem: pemBlock("EC PRIVATE KEY", []byte{0x30, 0x03, 0x02, 0x01}), wantErr: "parse key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, err := LoadKey(tc.pem)
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			require.True(t, tc.want.(interface{ Equal(crypto.PublicKey) bool }).Equal(k.Public()))
		})
	}
}

func TestLoadOrCreateKey(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "signing-key.pem")

	k1, created, err := LoadOrCreateKey(path)
	require.NoError(t, err)
	require.True(t, created)
	ec, ok := k1.(*ecdsa.PrivateKey)
	require.True(t, ok)
	require.Equal(t, elliptic.P256(), ec.Curve)

	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())

	k2, created, err := LoadOrCreateKey(path)
	require.NoError(t, err)
	require.False(t, created, "a restart must load the key, not make a new one")
	require.True(t, ec.Equal(k2))

	entries, err := os.ReadDir(filepath.Dir(path))
	require.NoError(t, err)
	require.Len(t, entries, 1, "no temporary files left behind")

	// A damaged key file is an error, never silently replaced: replacing it
	// would invalidate every token in the field.
	require.NoError(t, os.WriteFile(path, []byte("garbage"), 0o600))
	_, _, err = LoadOrCreateKey(path)
	require.ErrorContains(t, err, "no private key")
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, "garbage", string(data))
}

func TestLoadOrCreateKeyConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "key.pem")
	const n = 8
	keys := make([]crypto.Signer, n)
	created := make([]bool, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			k, c, err := LoadOrCreateKey(path)
			if err == nil {
				keys[i], created[i] = k, c
			}
		})
	}
	wg.Wait()
	first := keys[0].(*ecdsa.PrivateKey)
	for i, k := range keys {
		require.NotNil(t, k, "call %d failed", i)
		require.True(t, first.Equal(k), "every caller must end up with the one stored key")
	}
	stored, err := readKeyFile(path)
	require.NoError(t, err)
	require.True(t, first.Equal(stored))
}

func TestLoadPublicKeys(t *testing.T) {
	a := testECKey(t, elliptic.P256())
	b := testECKey(t, elliptic.P384())
	r := testRSAKey(t)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "t"}, NotBefore: time.Unix(0, 0), NotAfter: time.Unix(1<<32, 0)}
	certDER, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &b.PublicKey, b)
	require.NoError(t, err)

	for _, tc := range []struct {
		name    string
		pem     []byte
		want    []crypto.PublicKey
		wantErr string
	}{
		{
			name: "several blocks of every kind",
			pem: concat(
				pubPEM(t, &a.PublicKey),
				pemBlock("RSA PUBLIC KEY", x509.MarshalPKCS1PublicKey(&r.PublicKey)),
				pemBlock("CERTIFICATE", certDER),
				sec1(t, a),
			),
			want: []crypto.PublicKey{&a.PublicKey, &r.PublicKey, &b.PublicKey, &a.PublicKey},
		},
		{name: "text around blocks", pem: concat([]byte("old key, remove after May\n"), pubPEM(t, &b.PublicKey)), want: []crypto.PublicKey{&b.PublicKey}},
		{name: "empty", pem: nil, wantErr: "no key"},
		{name: "unknown block", pem: pemBlock("SSH KEY", []byte{1}), wantErr: `unsupported PEM block "SSH KEY"`},
		{name: "unsupported curve", pem: pubPEM(t, &testECKey(t, elliptic.P521()).PublicKey), wantErr: "P-521"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			keys, err := LoadPublicKeys(tc.pem)
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			require.Len(t, keys, len(tc.want))
			for i := range keys {
				require.True(t, tc.want[i].(interface{ Equal(crypto.PublicKey) bool }).Equal(keys[i]), "key %d", i)
			}
		})
	}
}

func concat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func TestKeyID(t *testing.T) {
	// RFC 7638 §3.1: the thumbprint of this RSA key is
	// NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs.
	n, err := base64.RawURLEncoding.DecodeString("0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw")
	require.NoError(t, err)
	rfc := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: 65537}
	require.Equal(t, "NzbLsXh8uDCcd-6M", KeyID(rfc))

	a := testECKey(t, elliptic.P256())
	b := testECKey(t, elliptic.P256())
	require.Len(t, KeyID(&a.PublicKey), 16)
	require.Equal(t, KeyID(&a.PublicKey), KeyID(a), "a private key has the id of its public half")
	require.NotEqual(t, KeyID(&a.PublicKey), KeyID(&b.PublicKey))

	// The id survives a PEM round trip, so every node derives the same one.
	keys, err := LoadPublicKeys(pubPEM(t, &a.PublicKey))
	require.NoError(t, err)
	require.Equal(t, KeyID(&a.PublicKey), KeyID(keys[0]))

	pub, _, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	require.Len(t, KeyID(pub), 16, "other key types fall back to the PKIX digest")
	require.True(t, strings.IndexFunc(KeyID(pub), func(r rune) bool {
		return !strings.ContainsRune("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", r)
	}) < 0)
}
