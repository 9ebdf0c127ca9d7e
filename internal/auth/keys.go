package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"strings"

	"github.com/golang-jwt/jwt/v5"
)

// minRSABits is the smallest RSA modulus accepted for signing or verifying.
const minRSABits = 2048

// LoadKey parses the first private key in PEM data: an EC key on P-256 or
// P-384 (SEC 1 "EC PRIVATE KEY" or PKCS #8 "PRIVATE KEY") or an RSA key of at
// least 2048 bits (PKCS #1 "RSA PRIVATE KEY" or PKCS #8). Blocks of other
// types, such as the "EC PARAMETERS" block openssl writes first, are skipped.
// Encrypted keys are refused.
func LoadKey(pemBytes []byte) (crypto.Signer, error) {
	rest := pemBytes
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, errors.New("parse key: no private key block in PEM data")
		}
		if strings.Contains(block.Headers["Proc-Type"], "ENCRYPTED") || block.Type == "ENCRYPTED PRIVATE KEY" {
			return nil, errors.New("parse key: encrypted private keys are not supported")
		}
		var (
			key any
			err error
		)
		switch block.Type {
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("parse key: %w", err)
		}
		signer, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("parse key: unsupported private key type %T", key)
		}
		if _, err := methodFor(signer.Public()); err != nil {
			return nil, fmt.Errorf("parse key: %w", err)
		}
		return signer, nil
	}
}

// LoadOrCreateKey reads the signing key at path, or, when there is none,
// generates an ECDSA P-256 key and stores it there as PKCS #8 PEM with mode
// 0600, so that tokens issued before a restart stay valid after it. The file
// appears atomically and complete (temporary file, fsync, link, fsync of the
// directory); if another process creates it first, that key is loaded
// instead. The boolean reports whether this call created the key.
func LoadOrCreateKey(path string) (crypto.Signer, bool, error) {
	key, err := readKeyFile(path)
	if err == nil {
		return key, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, err
	}

	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, false, fmt.Errorf("create key directory: %w", err)
	}
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, false, fmt.Errorf("generate key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(ec)
	if err != nil {
		return nil, false, fmt.Errorf("marshal key: %w", err)
	}
	data := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})

	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*") // mode 0600
	if err != nil {
		return nil, false, fmt.Errorf("create key file: %w", err)
	}
	tmpName := tmp.Name()
	defer func() { _ = os.Remove(tmpName) }()
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		return nil, false, fmt.Errorf("write key file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return nil, false, fmt.Errorf("sync key file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, false, fmt.Errorf("close key file: %w", err)
	}
	// A hard link never replaces an existing file: when two processes race,
	// the first key wins and both use it.
	if err := os.Link(tmpName, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			key, err := readKeyFile(path)
			return key, false, err
		}
		// Some file systems have no hard links; rename is atomic too.
		if err := os.Rename(tmpName, path); err != nil {
			return nil, false, fmt.Errorf("install key file: %w", err)
		}
	}
	if err := syncDir(dir); err != nil {
		return nil, false, err
	}
	return ec, true, nil
}

func readKeyFile(path string) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read key file: %w", err)
	}
	key, err := LoadKey(data)
	if err != nil {
		return nil, fmt.Errorf("load key file %s: %w", path, err)
	}
	return key, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open directory: %w", err)
	}
	defer func() { _ = d.Close() }()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	return nil
}

// LoadPublicKeys parses every key in PEM data for verification: "PUBLIC KEY"
// (PKIX), "RSA PUBLIC KEY" (PKCS #1), "CERTIFICATE", and private key blocks,
// of which only the public half is kept. It fails on a block of any other
// type, on an unsupported key, and when the data holds no key at all.
func LoadPublicKeys(pemBytes []byte) ([]crypto.PublicKey, error) {
	var keys []crypto.PublicKey
	rest := pemBytes
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		var (
			pub any
			err error
		)
		switch block.Type {
		case "PUBLIC KEY":
			pub, err = x509.ParsePKIXPublicKey(block.Bytes)
		case "RSA PUBLIC KEY":
			pub, err = x509.ParsePKCS1PublicKey(block.Bytes)
		case "CERTIFICATE":
			var cert *x509.Certificate
			if cert, err = x509.ParseCertificate(block.Bytes); err == nil {
				pub = cert.PublicKey
			}
		case "EC PRIVATE KEY", "RSA PRIVATE KEY", "PRIVATE KEY", "ENCRYPTED PRIVATE KEY":
			var signer crypto.Signer
			if signer, err = LoadKey(pem.EncodeToMemory(block)); err == nil {
				pub = signer.Public()
			}
		case "EC PARAMETERS":
			continue
		default:
			return nil, fmt.Errorf("parse public keys: unsupported PEM block %q", block.Type)
		}
		if err != nil {
			return nil, fmt.Errorf("parse public keys: %w", err)
		}
		if _, err := methodFor(pub); err != nil {
			return nil, fmt.Errorf("parse public keys: %w", err)
		}
		keys = append(keys, pub)
	}
	if len(keys) == 0 {
		return nil, errors.New("parse public keys: no key in PEM data")
	}
	return keys, nil
}

// methodFor returns the one signing method used with a public key, and
// refuses keys telemeter does not sign with.
func methodFor(pub crypto.PublicKey) (jwt.SigningMethod, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return jwt.SigningMethodES256, nil
		case elliptic.P384():
			return jwt.SigningMethodES384, nil
		}
		return nil, fmt.Errorf("unsupported elliptic curve %s: want P-256 or P-384", k.Curve.Params().Name)
	case *rsa.PublicKey:
		if k.N.BitLen() < minRSABits {
			return nil, fmt.Errorf("rsa key of %d bits is too small: want at least %d", k.N.BitLen(), minRSABits)
		}
		return jwt.SigningMethodRS256, nil
	}
	return nil, fmt.Errorf("unsupported key type %T: want ECDSA or RSA", pub)
}

// KeyID returns a stable, short identifier for a public key (a private key
// is reduced to its public half): the first 16 characters of the RFC 7638
// JWK thumbprint for EC and RSA keys, or of the base64url SHA-256 of the
// PKIX encoding for other types. It returns "" for a key it cannot encode.
func KeyID(pub crypto.PublicKey) string {
	if s, ok := pub.(crypto.Signer); ok {
		pub = s.Public()
	}
	var canonical []byte
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		point, err := k.Bytes() // 0x04 || X || Y, fixed width
		if err != nil || len(point) < 3 || (len(point)-1)%2 != 0 {
			return ""
		}
		n := (len(point) - 1) / 2
		// RFC 7638 §3.2: the required members in lexicographic order, no spaces.
		canonical = fmt.Appendf(nil, `{"crv":%q,"kty":"EC","x":%q,"y":%q}`,
			k.Curve.Params().Name, b64(point[1:1+n]), b64(point[1+n:]))
	case *rsa.PublicKey:
		canonical = fmt.Appendf(nil, `{"e":%q,"kty":"RSA","n":%q}`,
			b64(big.NewInt(int64(k.E)).Bytes()), b64(k.N.Bytes()))
	default:
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			return ""
		}
		canonical = der
	}
	sum := sha256.Sum256(canonical)
	return b64(sum[:])[:16]
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
