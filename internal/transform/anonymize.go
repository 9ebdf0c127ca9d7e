package transform

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"hash"
	"slices"
	"strings"
	"sync"

	dto "github.com/prometheus/client_model/go"
)

// AnonymizeMode selects how Anonymize turns a label value into a token.
type AnonymizeMode int

const (
	// AnonymizeLegacy gives exactly the values openshift/telemeter's client
	// gives, so series keep their identity when a site switches clients.
	//
	// The construction, as that client computes it: SHA-256 over the bytes of
	// the salt immediately followed by the bytes of the value, with no
	// separator; the first 9 bytes (72 bits) of the 32-byte digest; encoded as
	// unpadded base64url (RFC 4648 §5), which gives 12 characters from
	// [A-Za-z0-9_-].
	//
	// Its weaknesses: 72 bits, and salt and value are simply concatenated, so
	// salt "ab" with value "c" and salt "a" with value "bc" give one token.
	AnonymizeLegacy AnonymizeMode = iota

	// AnonymizeHMAC is the stronger form: HMAC-SHA256 keyed with the bytes of
	// the salt over the bytes of the value; the first 18 bytes (144 bits) of
	// the 32-byte MAC; encoded as unpadded base64url (RFC 4648 §5), which gives
	// exactly 24 characters from [A-Za-z0-9_-]. Any mode other than
	// AnonymizeLegacy uses this form.
	AnonymizeHMAC
)

const (
	legacyDigestBytes = 9  // 12 base64 characters
	hmacDigestBytes   = 18 // 24 base64 characters
)

// String names the mode as ParseAnonymizeMode reads it.
func (m AnonymizeMode) String() string {
	switch m {
	case AnonymizeLegacy:
		return "legacy"
	case AnonymizeHMAC:
		return "hmac"
	}
	return fmt.Sprintf("AnonymizeMode(%d)", int(m))
}

// ParseAnonymizeMode reads "legacy" or "hmac", for a command-line flag.
func ParseAnonymizeMode(s string) (AnonymizeMode, error) {
	switch s {
	case "legacy":
		return AnonymizeLegacy, nil
	case "hmac":
		return AnonymizeHMAC, nil
	}
	return 0, fmt.Errorf("parse anonymize mode %q: want legacy or hmac", s)
}

// encodedLen is the length of every token mode produces.
func (m AnonymizeMode) encodedLen() int {
	if m == AnonymizeLegacy {
		return base64.RawURLEncoding.EncodedLen(legacyDigestBytes)
	}
	return base64.RawURLEncoding.EncodedLen(hmacDigestBytes)
}

// AnonymizeValue returns the token that Anonymize puts in place of value. An
// empty value stays empty.
func AnonymizeValue(salt, value string, mode AnonymizeMode) string {
	if value == "" {
		return ""
	}
	return string(newHasher(salt, mode).appendToken(nil, value))
}

// Anonymize replaces the values of the named labels with salted hashes (see
// AnonymizeMode); empty values stay empty. Label values are usually of low
// cardinality, so the salt is what keeps a dictionary of likely values (IP
// addresses, host names) from reversing the tokens: it must stay secret from
// the receiving side, and stable for as long as tokens should stay comparable.
func Anonymize(salt string, labelNames []string, mode AnonymizeMode) Transformer {
	if mode != AnonymizeLegacy {
		mode = AnonymizeHMAC
	}
	a := &anonymizer{names: slices.Clone(labelNames), width: mode.encodedLen()}
	a.hashers.New = func() any { return newHasher(salt, mode) }
	return a
}

type anonymizer struct {
	names   []string
	width   int       // length of one token
	hashers sync.Pool // *hasher, so concurrent families don't share scratch space
}

func (a *anonymizer) Transform(mf *dto.MetricFamily) (bool, error) {
	n := 0
	for _, m := range mf.Metric {
		if m == nil {
			continue
		}
		for _, lp := range m.Label {
			if a.selects(lp) {
				n++
			}
		}
	}
	if n == 0 {
		return true, nil
	}

	h := a.hashers.Get().(*hasher)
	defer a.hashers.Put(h)
	// All tokens of the family go into one string and every label value is a
	// slice of it, so a family costs two allocations whatever its size. The
	// builder is grown once: earlier results of String stay valid as it fills.
	var tokens strings.Builder
	tokens.Grow(n * a.width)
	values := make([]string, n)
	i := 0
	for _, m := range mf.Metric {
		if m == nil {
			continue
		}
		for _, lp := range m.Label {
			if !a.selects(lp) {
				continue
			}
			h.token = h.appendToken(h.token[:0], lp.GetValue())
			tokens.Write(h.token)
			all := tokens.String()
			values[i] = all[len(all)-len(h.token):]
			lp.Value = &values[i]
			i++
		}
	}
	return true, nil
}

func (a *anonymizer) selects(lp *dto.LabelPair) bool {
	return lp != nil && lp.GetValue() != "" && slices.Contains(a.names, lp.GetName())
}

// hasher computes tokens. It is not safe for concurrent use.
type hasher struct {
	mode  AnonymizeMode
	salt  string
	mac   hash.Hash // HMAC mode only
	buf   []byte    // the hash input (legacy) or the MAC
	token []byte    // the encoded token
}

func newHasher(salt string, mode AnonymizeMode) *hasher {
	h := &hasher{mode: mode, salt: salt}
	if mode != AnonymizeLegacy {
		h.mode = AnonymizeHMAC
		h.mac = hmac.New(sha256.New, []byte(salt))
	}
	return h
}

// appendToken appends the token for a non-empty value to dst.
func (h *hasher) appendToken(dst []byte, value string) []byte {
	if h.mode == AnonymizeLegacy {
		h.buf = append(append(h.buf[:0], h.salt...), value...)
		sum := sha256.Sum256(h.buf)
		return base64.RawURLEncoding.AppendEncode(dst, sum[:legacyDigestBytes])
	}
	h.mac.Reset()
	h.buf = append(h.buf[:0], value...)
	h.mac.Write(h.buf)
	h.buf = h.mac.Sum(h.buf[:0])
	return base64.RawURLEncoding.AppendEncode(dst, h.buf[:hmacDigestBytes])
}
