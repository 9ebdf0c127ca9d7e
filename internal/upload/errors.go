package upload

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Sentinel errors for the protocol conditions of DESIGN §3. Wrap them with
// context; StatusCode and Retryable look through the wrapping.
var (
	ErrInvalid          = errors.New("invalid payload")
	ErrUnauthorized     = errors.New("unauthorized")
	ErrForbidden        = errors.New("forbidden")
	ErrMethodNotAllowed = errors.New("method not allowed")
	ErrTooLarge         = errors.New("payload too large")
	ErrUnsupportedMedia = errors.New("unsupported media type")
	ErrConflict         = errors.New("conflict")
	ErrRateLimited      = errors.New("rate limited")
	ErrUnavailable      = errors.New("service unavailable")
	ErrInternal         = errors.New("internal error")
)

var statusBySentinel = []struct {
	err  error
	code int
}{
	{ErrInvalid, http.StatusBadRequest},
	{ErrUnauthorized, http.StatusUnauthorized},
	{ErrForbidden, http.StatusForbidden},
	{ErrMethodNotAllowed, http.StatusMethodNotAllowed},
	{ErrConflict, http.StatusConflict},
	{ErrTooLarge, http.StatusRequestEntityTooLarge},
	{ErrUnsupportedMedia, http.StatusUnsupportedMediaType},
	{ErrRateLimited, http.StatusTooManyRequests},
	{ErrUnavailable, http.StatusServiceUnavailable},
	{ErrInternal, http.StatusInternalServerError},
}

// StatusError is a protocol condition with the detail a peer needs: the
// status code, a reason for the body and, for 429 and 503, how long to wait.
type StatusError struct {
	Err        error // one of the sentinels
	Reason     string
	RetryAfter time.Duration
}

func (e *StatusError) Error() string {
	if e.Reason == "" {
		return e.Err.Error()
	}
	return e.Err.Error() + ": " + e.Reason
}

func (e *StatusError) Unwrap() error { return e.Err }

// Errorf returns a StatusError for sentinel with a formatted reason.
func Errorf(sentinel error, format string, args ...any) error {
	return &StatusError{Err: sentinel, Reason: fmt.Sprintf(format, args...)}
}

// WithRetryAfter returns a StatusError for sentinel that asks the peer to wait d.
func WithRetryAfter(sentinel error, d time.Duration, reason string) error {
	return &StatusError{Err: sentinel, Reason: reason, RetryAfter: d}
}

// StatusCode maps an error to the HTTP status the server answers with.
// Errors that match no sentinel are our own bugs: 500.
func StatusCode(err error) int {
	if err == nil {
		return http.StatusOK
	}
	for _, s := range statusBySentinel {
		if errors.Is(err, s.err) {
			return s.code
		}
	}
	return http.StatusInternalServerError
}

// RetryAfter returns the wait an error asks for, or 0.
func RetryAfter(err error) time.Duration {
	var se *StatusError
	if errors.As(err, &se) {
		return se.RetryAfter
	}
	return 0
}

// Retryable reports whether a request that failed with err may be sent again
// unchanged: 5xx, 429 and transport errors are; 4xx answers are not. A 401 is
// not retryable as is, the client must authorize first (see ErrUnauthorized).
func Retryable(err error) bool {
	if err == nil {
		return false
	}
	for _, s := range statusBySentinel {
		if errors.Is(err, s.err) {
			return s.code >= 500 || s.code == http.StatusTooManyRequests
		}
	}
	// A certificate the client does not trust will not become trusted by
	// asking again.
	var certErr *tls.CertificateVerificationError
	var unknownCA x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	if errors.As(err, &certErr) || errors.As(err, &unknownCA) || errors.As(err, &hostErr) {
		return false
	}
	// Not a protocol answer: a dial, handshake or timeout error.
	return true
}

// FromResponse turns a non-2xx response into a StatusError, keeping the first
// line of body (what the caller read of the response body; 4 KiB is plenty)
// as the reason and parsing Retry-After. A 2xx response gives nil.
func FromResponse(resp *http.Response, body []byte) error {
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	sentinel := ErrInternal
	switch {
	case resp.StatusCode == http.StatusBadRequest || resp.StatusCode == http.StatusUnprocessableEntity:
		sentinel = ErrInvalid
	case resp.StatusCode == http.StatusUnauthorized:
		sentinel = ErrUnauthorized
	case resp.StatusCode == http.StatusForbidden:
		sentinel = ErrForbidden
	case resp.StatusCode == http.StatusMethodNotAllowed:
		sentinel = ErrMethodNotAllowed
	case resp.StatusCode == http.StatusConflict:
		sentinel = ErrConflict
	case resp.StatusCode == http.StatusRequestEntityTooLarge:
		sentinel = ErrTooLarge
	case resp.StatusCode == http.StatusUnsupportedMediaType:
		sentinel = ErrUnsupportedMedia
	case resp.StatusCode == http.StatusTooManyRequests:
		sentinel = ErrRateLimited
	case resp.StatusCode == http.StatusInternalServerError:
		sentinel = ErrInternal
	case resp.StatusCode >= 500:
		sentinel = ErrUnavailable
	case resp.StatusCode >= 400:
		sentinel = ErrInvalid
	}
	reason := strings.TrimSpace(string(body))
	if i := strings.IndexByte(reason, '\n'); i >= 0 {
		reason = reason[:i]
	}
	if len(reason) > 512 {
		reason = reason[:512]
	}
	return &StatusError{
		Err:        sentinel,
		Reason:     fmt.Sprintf("server answered %d: %s", resp.StatusCode, reason),
		RetryAfter: ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now()),
	}
}

// maxRetryAfter caps the wait a Retry-After header can ask for, so that a
// broken or hostile server cannot park a client for days.
const maxRetryAfter = 24 * time.Hour

const maxRetryAfterSeconds = int64(maxRetryAfter / time.Second)

// ParseRetryAfter reads a Retry-After header: delay-seconds or an HTTP date,
// capped at maxRetryAfter. Garbage, zero, negative and past values give 0.
func ParseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	secs, err := strconv.ParseInt(v, 10, 64)
	if err == nil || errors.Is(err, strconv.ErrRange) {
		// Out of range still parses to the nearest int64: huge is huge.
		if secs <= 0 {
			return 0
		}
		return time.Duration(min(secs, maxRetryAfterSeconds)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return min(d, maxRetryAfter)
		}
	}
	return 0
}

// FormatRetryAfter renders d as whole delay-seconds, rounding up, at least 1.
func FormatRetryAfter(d time.Duration) string {
	secs := int64(d / time.Second)
	if d%time.Second > 0 {
		secs++ // cannot overflow: d/time.Second is far below MaxInt64
	}
	if secs < 1 {
		secs = 1
	}
	return strconv.FormatInt(secs, 10)
}
