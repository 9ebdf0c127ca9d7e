package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/telemeter/telemeter/internal/upload"
)

// MaxTokenBytes bounds the length of a token Verify will look at. Tokens
// this package issues are well under 1 KiB even with a dozen labels.
const MaxTokenBytes = 8 << 10

// Claims are the contents of a telemeter upload token. ClusterID is also the
// subject; Labels are the labels /authorize returned, which every series of
// an upload must carry.
type Claims struct {
	ClusterID string            `json:"cluster_id"`
	Labels    map[string]string `json:"labels,omitempty"`
	AccountID string            `json:"account_id,omitempty"`
	jwt.RegisteredClaims
}

// Issuer signs upload tokens.
type Issuer struct {
	key      crypto.Signer
	method   jwt.SigningMethod
	kid      string
	issuer   string
	audience string
	ttl      time.Duration
	now      func() time.Time
}

// NewIssuer returns an Issuer signing with key: ES256 for a P-256 key, ES384
// for P-384, RS256 for RSA. Tokens carry the key's KeyID as "kid", the
// issuer and audience given here, and live for ttl. now may be nil.
func NewIssuer(key crypto.Signer, issuer, audience string, ttl time.Duration, now func() time.Time) (*Issuer, error) {
	if key == nil {
		return nil, errors.New("create issuer: no signing key")
	}
	switch key.(type) {
	case *ecdsa.PrivateKey, *rsa.PrivateKey:
	default:
		return nil, fmt.Errorf("create issuer: unsupported signing key type %T", key)
	}
	method, err := methodFor(key.Public())
	if err != nil {
		return nil, fmt.Errorf("create issuer: %w", err)
	}
	if issuer == "" || audience == "" {
		return nil, errors.New("create issuer: issuer and audience must not be empty")
	}
	if ttl < time.Second {
		return nil, fmt.Errorf("create issuer: token lifetime %s is shorter than a second", ttl)
	}
	if now == nil {
		now = time.Now
	}
	return &Issuer{
		key:      key,
		method:   method,
		kid:      KeyID(key.Public()),
		issuer:   issuer,
		audience: audience,
		ttl:      ttl,
		now:      now,
	}, nil
}

// Issue signs a token for clusterID owned by accountID and carrying labels
// (copied). It returns the token and how long it is valid.
func (i *Issuer) Issue(clusterID, accountID string, labels map[string]string) (string, time.Duration, error) {
	if clusterID == "" {
		return "", 0, errors.New("issue token: empty cluster id")
	}
	var jti [12]byte
	if _, err := rand.Read(jti[:]); err != nil {
		return "", 0, fmt.Errorf("issue token: %w", err)
	}
	now := i.now()
	claims := Claims{
		ClusterID: clusterID,
		Labels:    maps.Clone(labels),
		AccountID: accountID,
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    i.issuer,
			Subject:   clusterID,
			Audience:  jwt.ClaimStrings{i.audience},
			ExpiresAt: jwt.NewNumericDate(now.Add(i.ttl)),
			NotBefore: jwt.NewNumericDate(now),
			IssuedAt:  jwt.NewNumericDate(now),
			ID:        b64(jti[:]),
		},
	}
	tok := jwt.NewWithClaims(i.method, claims)
	tok.Header["kid"] = i.kid
	s, err := tok.SignedString(i.key)
	if err != nil {
		return "", 0, fmt.Errorf("issue token: %w", err)
	}
	return s, i.ttl, nil
}

// verificationKey is one key a Verifier accepts, with the single algorithm
// allowed for it.
type verificationKey struct {
	alg    string
	key    crypto.PublicKey
	sigLen int // encoded length of a signature segment
}

// Verifier checks upload tokens against one or more public keys, so that a
// signing key can rotate: keep the old key for verification until the last
// token it signed has expired.
type Verifier struct {
	byKID    map[string]verificationKey
	byAlg    map[string][]crypto.PublicKey
	sigLens  map[string]map[int]bool // alg → allowed encoded signature lengths
	parser   *jwt.Parser
	issuer   string
	audience string
	skew     time.Duration
	now      func() time.Time
	cache    *verifiedCache // nil: every token is checked in full
}

// NewVerifier returns a Verifier for keys, indexed by KeyID. A token whose
// kid names no key is tried against every key of its algorithm. Tokens must
// carry issuer and audience; exp is required, and exp, nbf and iat are
// checked with skew of tolerance. Keys of an unsupported type or size are
// ignored (LoadPublicKeys refuses them up front); with no usable key, or an
// empty issuer or audience, every token is refused. now may be nil.
func NewVerifier(keys []crypto.PublicKey, issuer, audience string, skew time.Duration, now func() time.Time) *Verifier {
	if now == nil {
		now = time.Now
	}
	v := &Verifier{
		byKID:    make(map[string]verificationKey),
		byAlg:    make(map[string][]crypto.PublicKey),
		sigLens:  make(map[string]map[int]bool),
		issuer:   issuer,
		audience: audience,
		skew:     skew,
		now:      now,
	}
	for _, k := range keys {
		if s, ok := k.(crypto.Signer); ok {
			k = s.Public()
		}
		m, err := methodFor(k)
		if err != nil {
			continue
		}
		vk := verificationKey{alg: m.Alg(), key: k, sigLen: base64.RawURLEncoding.EncodedLen(signatureSize(k))}
		kid := KeyID(k)
		if _, dup := v.byKID[kid]; dup {
			continue
		}
		v.byKID[kid] = vk
		v.byAlg[vk.alg] = append(v.byAlg[vk.alg], k)
		if v.sigLens[vk.alg] == nil {
			v.sigLens[vk.alg] = make(map[int]bool)
		}
		v.sigLens[vk.alg][vk.sigLen] = true
	}
	algs := make([]string, 0, len(v.byAlg))
	for alg := range v.byAlg {
		algs = append(algs, alg)
	}
	v.parser = jwt.NewParser(
		jwt.WithValidMethods(algs),
		jwt.WithIssuer(issuer),
		jwt.WithAudience(audience),
		jwt.WithLeeway(skew),
		jwt.WithTimeFunc(now),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithStrictDecoding(),
	)
	return v
}

// signatureSize is the byte length of a signature by k's method.
func signatureSize(k crypto.PublicKey) int {
	switch k := k.(type) {
	case *ecdsa.PublicKey:
		return 2 * ((k.Curve.Params().BitSize + 7) / 8)
	case *rsa.PublicKey:
		return k.Size()
	}
	return 0
}

// tokenHeader is the part of a JOSE header Verify looks at before any
// cryptography.
type tokenHeader struct {
	Alg string
	Kid string
}

// CacheVerified makes v remember up to size tokens that passed the full
// check, so that a client's next upload with the same token skips the
// signature (see verifiedCache). Call it before v is in use.
func (v *Verifier) CacheVerified(size int) *Verifier {
	if size > 0 {
		v.cache = newVerifiedCache(size)
	}
	return v
}

// CacheStats reports the verified-token cache's hits, misses and entries;
// all zero without a cache.
func (v *Verifier) CacheStats() (hits, misses uint64, entries int) {
	if v.cache == nil {
		return 0, 0, 0
	}
	return v.cache.hits.Load(), v.cache.misses.Load(), v.cache.len()
}

// Verify checks a token and returns its claims, which the caller must not
// modify (with a cache they are shared between uploads). Every failure
// wraps upload.ErrUnauthorized with a short reason. Structurally malformed
// tokens are refused before any cryptography.
func (v *Verifier) Verify(token string) (*Claims, error) {
	if v.issuer == "" || v.audience == "" || len(v.byKID) == 0 {
		return nil, unauthorized("no verification keys configured")
	}
	if v.cache == nil {
		return v.verify(token)
	}
	now := v.now()
	if c, ok := v.cache.get(token, now); ok {
		return c, nil
	}
	c, err := v.verify(token)
	if err != nil {
		return nil, err
	}
	e := verifiedToken{claims: c, notBefore: now.Add(-v.skew), notAfter: c.ExpiresAt.Add(v.skew)}
	if c.NotBefore != nil {
		e.notBefore = c.NotBefore.Add(-v.skew)
	}
	v.cache.put(token, e, now)
	return c, nil
}

func (v *Verifier) verify(token string) (*Claims, error) {
	hdr, err := v.precheck(token)
	if err != nil {
		return nil, err
	}
	var keys any
	if vk, ok := v.byKID[hdr.Kid]; ok {
		if vk.alg != hdr.Alg {
			return nil, unauthorized("algorithm does not match the key")
		}
		keys = vk.key
	} else {
		set := jwt.VerificationKeySet{}
		for _, k := range v.byAlg[hdr.Alg] {
			set.Keys = append(set.Keys, k)
		}
		keys = set
	}

	claims := new(Claims)
	_, err = v.parser.ParseWithClaims(token, claims, func(*jwt.Token) (any, error) { return keys, nil })
	if err != nil {
		return nil, unauthorized(reasonFor(err))
	}
	if claims.ClusterID == "" {
		return nil, unauthorized("token names no cluster")
	}
	if claims.Subject != "" && claims.Subject != claims.ClusterID {
		return nil, unauthorized("token subject does not match its cluster")
	}
	return claims, nil
}

// precheck refuses what is not a well-formed token for one of our keys: the
// length, three non-empty base64url segments, a header that is JSON with an
// algorithm allowed for some key and no critical extensions, and a
// signature of the length that algorithm produces. It costs microseconds.
func (v *Verifier) precheck(token string) (tokenHeader, error) {
	var hdr tokenHeader
	if token == "" {
		return hdr, unauthorized("missing token")
	}
	if len(token) > MaxTokenBytes {
		return hdr, unauthorized("token too long")
	}
	first := strings.IndexByte(token, '.')
	last := strings.LastIndexByte(token, '.')
	if first <= 0 || last == first || last == len(token)-1 || strings.Count(token, ".") != 2 {
		return hdr, unauthorized("malformed token: want three segments")
	}
	for i := 0; i < len(token); i++ {
		if c := token[i]; c != '.' && !isBase64URL(c) {
			return hdr, unauthorized("malformed token: invalid character")
		}
	}
	if first+1 == last {
		return hdr, unauthorized("malformed token: empty payload")
	}
	raw, err := base64.RawURLEncoding.Strict().DecodeString(token[:first])
	if err != nil {
		return hdr, unauthorized("malformed token: header is not base64url")
	}
	// A map, not a struct: member names are matched exactly, as the jwt
	// parser matches them, where struct decoding would ignore case.
	var members map[string]json.RawMessage
	if err := json.Unmarshal(raw, &members); err != nil {
		return hdr, unauthorized("malformed token: header is not JSON")
	}
	if json.Unmarshal(members["alg"], &hdr.Alg) != nil {
		return hdr, unauthorized("malformed token: algorithm not allowed")
	}
	lens, ok := v.sigLens[hdr.Alg]
	if !ok {
		return hdr, unauthorized("malformed token: algorithm not allowed")
	}
	if _, ok := members["crit"]; ok {
		return hdr, unauthorized("malformed token: critical header extensions not supported")
	}
	if kid, ok := members["kid"]; ok && json.Unmarshal(kid, &hdr.Kid) != nil {
		return hdr, unauthorized("malformed token: kid is not a string")
	}
	if !lens[len(token)-last-1] {
		return hdr, unauthorized("malformed token: signature has the wrong length")
	}
	return hdr, nil
}

func isBase64URL(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_'
}

// reasonFor names a jwt error in words a client can act on, without echoing
// anything from the token.
func reasonFor(err error) string {
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return "token expired"
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return "token not valid yet"
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return "token issued in the future"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return "token lacks a required claim"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return "wrong token issuer"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return "wrong token audience"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrTokenUnverifiable):
		return "invalid token signature"
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "malformed token"
	}
	return "invalid token"
}

func unauthorized(reason string) error {
	return upload.Errorf(upload.ErrUnauthorized, "%s", reason)
}
