package auth

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/telemeter/telemeter/internal/upload"
)

// Authorizer decides whether a cluster token may claim a cluster ID, and
// names the account the cluster then belongs to. Refusals wrap
// upload.ErrUnauthorized (unknown token), upload.ErrForbidden (the token may
// not claim that ID), upload.ErrConflict (another account owns the ID),
// upload.ErrRateLimited or upload.ErrUnavailable.
type Authorizer interface {
	Authorize(ctx context.Context, token, clusterID string) (accountID string, err error)
}

// MaxClusterIDBytes bounds the length of a cluster ID.
const MaxClusterIDBytes = 256

// ValidateClusterID refuses, with upload.ErrInvalid, cluster IDs that are
// empty, longer than MaxClusterIDBytes, not valid UTF-8 or that contain
// control characters. Cluster IDs are untrusted strings: this keeps them
// safe to log, to put in a label value and to hash into a file name.
func ValidateClusterID(id string) error {
	if id == "" {
		return upload.Errorf(upload.ErrInvalid, "missing cluster id")
	}
	if len(id) > MaxClusterIDBytes {
		return upload.Errorf(upload.ErrInvalid, "cluster id longer than %d bytes", MaxClusterIDBytes)
	}
	if !utf8.ValidString(id) {
		return upload.Errorf(upload.ErrInvalid, "cluster id is not valid UTF-8")
	}
	for _, r := range id {
		if unicode.IsControl(r) {
			return upload.Errorf(upload.ErrInvalid, "cluster id contains a control character")
		}
	}
	return nil
}

// maxTokensFileBytes bounds the tokens file read into memory.
const maxTokensFileBytes = 64 << 20

// maxClusterTokenBytes bounds one cluster token in the tokens file.
const maxClusterTokenBytes = 4 << 10

// TokenEntry is one object of the tokens file, a JSON array:
//
//	[{"token": "s3cret"},
//	 {"token": "other", "account_id": "acme", "cluster_ids": ["prod-1", "prod-2"], "comment": "ACME, ticket 42"}]
//
// Token is required and unique. AccountID defaults to DefaultAccountID of
// the token. A non-empty ClusterIDs binds the token to exactly those IDs; an
// empty one lets it claim any ID. Comment is free text for operators.
// Unknown fields are an error, so that a misspelt "cluster_ids" cannot
// silently let a token claim every ID.
type TokenEntry struct {
	Token      string   `json:"token"`
	AccountID  string   `json:"account_id,omitempty"`
	ClusterIDs []string `json:"cluster_ids,omitempty"`
	Comment    string   `json:"comment,omitempty"`
}

// DefaultAccountID is the account of a token that names none: the first 32
// hex digits of a domain-separated SHA-256 of the token. It is stable across
// restarts and reveals nothing of a token with enough entropy to be a token.
func DefaultAccountID(token string) string {
	h := sha256.New()
	h.Write([]byte("telemeter account id\x00"))
	h.Write([]byte(token))
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// TokensFile is an Authorizer backed by a fixed list of cluster tokens.
// Tokens are looked up by their SHA-256 and then compared in constant time,
// so answers take the same time whatever prefix of a token a guess shares.
type TokensFile struct {
	byHash map[[sha256.Size]byte]*tokenRecord
}

type tokenRecord struct {
	token    []byte
	account  string
	clusters map[string]struct{} // nil: any cluster ID
}

// LoadTokensFile reads and parses a tokens file (see TokenEntry).
func LoadTokensFile(path string) (*TokensFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open tokens file: %w", err)
	}
	defer func() { _ = f.Close() }()
	data, err := io.ReadAll(io.LimitReader(f, maxTokensFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read tokens file: %w", err)
	}
	if len(data) > maxTokensFileBytes {
		return nil, fmt.Errorf("read tokens file: larger than %d bytes", maxTokensFileBytes)
	}
	t, err := ParseTokens(data)
	if err != nil {
		return nil, fmt.Errorf("load tokens file %s: %w", path, err)
	}
	return t, nil
}

// ParseTokens parses the contents of a tokens file. Errors name entries by
// their index, never by their token.
func ParseTokens(data []byte) (*TokensFile, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var entries []TokenEntry
	if err := dec.Decode(&entries); err != nil {
		return nil, fmt.Errorf("parse tokens: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("parse tokens: data after the JSON array")
	}
	t := &TokensFile{byHash: make(map[[sha256.Size]byte]*tokenRecord, len(entries))}
	for i, e := range entries {
		if err := checkClusterToken(e.Token); err != nil {
			return nil, fmt.Errorf("parse tokens: entry %d: %w", i, err)
		}
		h := sha256.Sum256([]byte(e.Token))
		if _, dup := t.byHash[h]; dup {
			return nil, fmt.Errorf("parse tokens: entry %d: duplicate token", i)
		}
		rec := &tokenRecord{token: []byte(e.Token), account: e.AccountID}
		if rec.account == "" {
			rec.account = DefaultAccountID(e.Token)
		}
		if len(e.ClusterIDs) > 0 {
			rec.clusters = make(map[string]struct{}, len(e.ClusterIDs))
			for _, id := range e.ClusterIDs {
				if err := ValidateClusterID(id); err != nil {
					return nil, fmt.Errorf("parse tokens: entry %d: %w", i, err)
				}
				rec.clusters[id] = struct{}{}
			}
		}
		t.byHash[h] = rec
	}
	return t, nil
}

// checkClusterToken refuses tokens no client could send in an
// Authorization header, and likely copy-and-paste accidents.
func checkClusterToken(tok string) error {
	switch {
	case tok == "":
		return errors.New("empty token")
	case len(tok) > maxClusterTokenBytes:
		return fmt.Errorf("token longer than %d bytes", maxClusterTokenBytes)
	case strings.TrimSpace(tok) != tok:
		return errors.New("token has leading or trailing white space")
	}
	for i := 0; i < len(tok); i++ {
		if c := tok[i]; c < 0x20 || c == 0x7f {
			return errors.New("token contains a control character")
		}
	}
	return nil
}

// Len is the number of tokens.
func (t *TokensFile) Len() int { return len(t.byHash) }

// Authorize implements Authorizer. An unknown token is upload.ErrUnauthorized;
// a known token bound to other cluster IDs is upload.ErrForbidden.
func (t *TokensFile) Authorize(_ context.Context, token, clusterID string) (string, error) {
	rec, ok := t.byHash[sha256.Sum256([]byte(token))]
	if !ok || subtle.ConstantTimeCompare(rec.token, []byte(token)) != 1 {
		return "", upload.Errorf(upload.ErrUnauthorized, "unknown cluster token")
	}
	if rec.clusters != nil {
		if _, ok := rec.clusters[clusterID]; !ok {
			return "", upload.Errorf(upload.ErrForbidden, "token may not claim this cluster id")
		}
	}
	return rec.account, nil
}
