package remotewrite

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"strings"
	"unicode/utf8"

	"github.com/telemeter/telemeter/internal/upload"
)

// Bounds of a receive credential. The encoded form of a token and a
// cluster ID within them is far below maxCredential.
const (
	maxCredential = 8 << 10
	maxClusterID  = 2048 // a label value (upload.DefaultLimits().ValueLength)
	maxToken      = 4096
)

// ParseCredential reads the credential a Prometheus sends to the original
// telemeter's /metrics/v1/receive: the bearer token is the base64 encoding
// of a JSON object {"authorization_token": "...", "cluster_id": "..."}.
// bearer is what follows "Bearer " in the Authorization header; the whole
// header value is accepted too. Padded and unpadded, standard and URL-safe
// base64 are accepted; other JSON fields are ignored. Both fields must be
// non-empty valid UTF-8 without control characters. Errors wrap
// upload.ErrUnauthorized and never quote the token.
func ParseCredential(bearer string) (token, clusterID string, err error) {
	bearer = strings.TrimSpace(bearer)
	if scheme, rest, ok := strings.Cut(bearer, " "); ok {
		if !strings.EqualFold(scheme, "bearer") {
			return "", "", upload.Errorf(upload.ErrUnauthorized, "authorization scheme %q, want Bearer", truncate(scheme))
		}
		bearer = strings.TrimSpace(rest)
	} else if strings.EqualFold(bearer, "bearer") {
		bearer = ""
	}
	if bearer == "" {
		return "", "", upload.Errorf(upload.ErrUnauthorized, "empty credential")
	}
	if len(bearer) > maxCredential {
		return "", "", upload.Errorf(upload.ErrUnauthorized, "credential of %d bytes exceeds %d", len(bearer), maxCredential)
	}
	raw, err := decodeBase64(bearer)
	if err != nil {
		return "", "", upload.Errorf(upload.ErrUnauthorized, "credential is not base64")
	}
	if !utf8.Valid(raw) {
		return "", "", upload.Errorf(upload.ErrUnauthorized, "credential is not valid UTF-8")
	}
	var c struct {
		Token     *string `json:"authorization_token"`
		ClusterID *string `json:"cluster_id"`
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&c); err != nil {
		return "", "", upload.Errorf(upload.ErrUnauthorized, "credential is not a JSON object with string fields")
	}
	if dec.More() {
		return "", "", upload.Errorf(upload.ErrUnauthorized, "credential has data after its JSON object")
	}
	if c.Token == nil || *c.Token == "" {
		return "", "", upload.Errorf(upload.ErrUnauthorized, "credential lacks authorization_token")
	}
	if c.ClusterID == nil || *c.ClusterID == "" {
		return "", "", upload.Errorf(upload.ErrUnauthorized, "credential lacks cluster_id")
	}
	if len(*c.Token) > maxToken || !printable(*c.Token) {
		return "", "", upload.Errorf(upload.ErrUnauthorized, "malformed authorization_token")
	}
	if len(*c.ClusterID) > maxClusterID || !printable(*c.ClusterID) {
		return "", "", upload.Errorf(upload.ErrUnauthorized, "malformed cluster_id")
	}
	return *c.Token, *c.ClusterID, nil
}

func decodeBase64(s string) ([]byte, error) {
	enc := base64.StdEncoding
	if strings.ContainsAny(s, "-_") {
		enc = base64.URLEncoding
	}
	if !strings.HasSuffix(s, "=") && len(s)%4 != 0 {
		enc = enc.WithPadding(base64.NoPadding)
	}
	return enc.Strict().DecodeString(s)
}

// printable reports whether s is valid UTF-8 without control characters.
func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return false
		}
	}
	return true
}
