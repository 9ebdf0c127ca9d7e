package upload

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// protocolCases is every status of DESIGN §3 with the sentinel the server
// answers it for and whether a client may send the same request again.
var protocolCases = []struct {
	name      string
	sentinel  error
	code      int
	retryable bool
}{
	{"invalid payload", ErrInvalid, 400, false},
	{"unauthorized", ErrUnauthorized, 401, false},
	{"forbidden", ErrForbidden, 403, false},
	{"method not allowed", ErrMethodNotAllowed, 405, false},
	{"conflict", ErrConflict, 409, false},
	{"too large", ErrTooLarge, 413, false},
	{"unsupported media", ErrUnsupportedMedia, 415, false},
	{"rate limited", ErrRateLimited, 429, true},
	{"internal", ErrInternal, 500, true},
	{"unavailable", ErrUnavailable, 503, true},
}

func TestStatusCodeAndRetryable(t *testing.T) {
	for _, tc := range protocolCases {
		t.Run(tc.name, func(t *testing.T) {
			forms := map[string]error{
				"bare sentinel":  tc.sentinel,
				"status error":   Errorf(tc.sentinel, "reason %d", 1),
				"wrapped":        fmt.Errorf("handle upload: %w", Errorf(tc.sentinel, "deep")),
				"with wait":      WithRetryAfter(tc.sentinel, time.Second, "later"),
				"wrapped twice":  fmt.Errorf("a: %w", fmt.Errorf("b: %w", tc.sentinel)),
				"joined in tail": errors.Join(errors.New("context"), tc.sentinel),
			}
			for form, err := range forms {
				require.Equal(t, tc.code, StatusCode(err), form)
				require.Equal(t, tc.retryable, Retryable(err), form)
			}
		})
	}

	t.Run("nil", func(t *testing.T) {
		require.Equal(t, http.StatusOK, StatusCode(nil))
		require.False(t, Retryable(nil))
	})
	t.Run("not a protocol condition", func(t *testing.T) {
		// Our own bug on the server; a transport failure on the client.
		for _, err := range []error{errors.New("boom"), io.ErrUnexpectedEOF, context.DeadlineExceeded} {
			require.Equal(t, http.StatusInternalServerError, StatusCode(err), "%v", err)
			require.True(t, Retryable(err), "%v", err)
		}
	})
}

func TestStatusErrorText(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"reason", Errorf(ErrTooLarge, "body of %d bytes", 9), "payload too large: body of 9 bytes"},
		{"no reason", &StatusError{Err: ErrForbidden}, "forbidden"},
		{"retry after", WithRetryAfter(ErrRateLimited, 3*time.Second, "slow down"), "rate limited: slow down"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			require.EqualError(t, tc.err, tc.want)
		})
	}
	require.Equal(t, 3*time.Second, RetryAfter(fmt.Errorf("x: %w", WithRetryAfter(ErrUnavailable, 3*time.Second, ""))))
	require.Zero(t, RetryAfter(ErrUnavailable))
	require.Zero(t, RetryAfter(nil))
}

// response builds the *http.Response a client would see.
func response(code int, retryAfter, body string) (*http.Response, []byte) {
	rec := httptest.NewRecorder()
	if retryAfter != "" {
		rec.Header().Set("Retry-After", retryAfter)
	}
	rec.WriteHeader(code)
	_, _ = rec.WriteString(body)
	return rec.Result(), []byte(body)
}

func TestFromResponse(t *testing.T) {
	tests := []struct {
		name       string
		code       int
		retryAfter string
		body       string
		want       error // nil: FromResponse gives nil
		retryable  bool
		wait       time.Duration
		reason     string
	}{
		{name: "200", code: 200},
		{name: "201", code: 201},
		{name: "204", code: 204},
		{name: "400", code: 400, body: "metric x: duplicate label a\n", want: ErrInvalid, reason: "server answered 400: metric x: duplicate label a"},
		{name: "401", code: 401, body: "token expired", want: ErrUnauthorized},
		{name: "403", code: 403, body: "data for another cluster", want: ErrForbidden},
		{name: "405", code: 405, want: ErrMethodNotAllowed},
		{name: "409", code: 409, want: ErrConflict},
		{name: "413", code: 413, want: ErrTooLarge},
		{name: "415", code: 415, want: ErrUnsupportedMedia},
		{name: "422", code: 422, want: ErrInvalid},
		{name: "418 other 4xx", code: 418, want: ErrInvalid},
		{name: "429 with wait", code: 429, retryAfter: "7", want: ErrRateLimited, retryable: true, wait: 7 * time.Second},
		{name: "429 without wait", code: 429, want: ErrRateLimited, retryable: true},
		{name: "500", code: 500, want: ErrInternal, retryable: true},
		{name: "502", code: 502, want: ErrUnavailable, retryable: true},
		{name: "503 with wait", code: 503, retryAfter: "120", want: ErrUnavailable, retryable: true, wait: 2 * time.Minute},
		{name: "503 garbage wait", code: 503, retryAfter: "soon", want: ErrUnavailable, retryable: true},
		{name: "504", code: 504, want: ErrUnavailable, retryable: true},
		{name: "only first line of body", code: 400, body: "first\nsecond\nthird", want: ErrInvalid, reason: "server answered 400: first"},
		{name: "long body cut", code: 400, body: strings.Repeat("x", 5000), want: ErrInvalid, reason: "server answered 400: " + strings.Repeat("x", 512)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := response(tc.code, tc.retryAfter, tc.body)
			defer resp.Body.Close()
			err := FromResponse(resp, body)
			if tc.want == nil {
				require.NoError(t, err)
				return
			}
			requireStatus(t, err, tc.want)
			require.Equal(t, tc.retryable, Retryable(err))
			require.Equal(t, tc.wait, RetryAfter(err))
			if tc.reason != "" {
				var se *StatusError
				require.ErrorAs(t, err, &se)
				require.Equal(t, tc.reason, se.Reason)
			}
		})
	}
}

// TestStatusRoundTrip answers each condition the way a server does
// (StatusCode, FormatRetryAfter, the error text as body) and reads the answer
// back the way a client does: the client must reach the same decision.
func TestStatusRoundTrip(t *testing.T) {
	for _, tc := range protocolCases {
		for _, wait := range []time.Duration{0, 1500 * time.Millisecond, 30 * time.Second} {
			t.Run(fmt.Sprintf("%s/wait %v", tc.name, wait), func(t *testing.T) {
				sent := Errorf(tc.sentinel, "because")
				retryAfter := ""
				if wait > 0 {
					sent = WithRetryAfter(tc.sentinel, wait, "because")
					retryAfter = FormatRetryAfter(RetryAfter(sent))
				}
				resp, body := response(StatusCode(sent), retryAfter, sent.Error()+"\n")
				defer resp.Body.Close()
				got := FromResponse(resp, body)
				requireStatus(t, got, tc.sentinel)
				require.Equal(t, tc.code, StatusCode(got))
				require.Equal(t, tc.retryable, Retryable(got))
				// Delay-seconds round up: never wait less than asked.
				require.Equal(t, ceilSeconds(wait), RetryAfter(got))
				require.Contains(t, got.Error(), "because")
			})
		}
	}
}

func ceilSeconds(d time.Duration) time.Duration {
	return (d + time.Second - 1).Truncate(time.Second)
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)
	tests := []struct {
		name string
		in   string
		want time.Duration
	}{
		{"empty", "", 0},
		{"spaces", "   ", 0},
		{"zero", "0", 0},
		{"negative", "-5", 0},
		{"seconds", "5", 5 * time.Second},
		{"padded", " 5\t", 5 * time.Second},
		{"one day", "86400", 24 * time.Hour},
		{"over a day is capped", "86401", 24 * time.Hour},
		{"past int64 is capped", "99999999999999999999", 24 * time.Hour},
		{"fraction", "1.5", 0},
		{"garbage", "soon", 0},
		{"imf date", now.Add(30 * time.Second).Format(http.TimeFormat), 30 * time.Second},
		{"rfc 850 date", now.Add(90 * time.Second).Format(time.RFC850), 90 * time.Second},
		{"asctime date", now.Add(time.Hour).Format(time.ANSIC), time.Hour},
		{"date now", now.Format(http.TimeFormat), 0},
		{"date in the past", now.Add(-time.Hour).Format(http.TimeFormat), 0},
		{"date far ahead is capped", now.AddDate(3, 0, 0).Format(http.TimeFormat), 24 * time.Hour},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, ParseRetryAfter(tc.in, now))
		})
	}
}

func TestFormatRetryAfter(t *testing.T) {
	tests := []struct {
		name string
		in   time.Duration
		want string
	}{
		{"negative", -time.Second, "1"},
		{"zero", 0, "1"},
		{"one nanosecond", 1, "1"},
		{"one second", time.Second, "1"},
		{"rounds up", 1500 * time.Millisecond, "2"},
		{"just over", 2*time.Second + 1, "3"},
		{"an hour", time.Hour, "3600"},
		{"largest duration", math.MaxInt64, "9223372037"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, FormatRetryAfter(tc.in))
		})
	}
}

func TestRetryAfterRoundTrip(t *testing.T) {
	now := time.Unix(1700000000, 0)
	for _, d := range []time.Duration{
		time.Second, 2 * time.Second, time.Minute, 90 * time.Minute, 24 * time.Hour,
	} {
		require.Equal(t, d, ParseRetryAfter(FormatRetryAfter(d), now), "%v", d)
	}
	for _, d := range []time.Duration{time.Millisecond, 1234 * time.Millisecond, 59*time.Second + 1} {
		got := ParseRetryAfter(FormatRetryAfter(d), now)
		require.GreaterOrEqual(t, got, d, "%v", d)
		require.Less(t, got, d+time.Second, "%v", d)
	}
	require.Equal(t, 24*time.Hour, ParseRetryAfter(FormatRetryAfter(100*time.Hour), now))
}
