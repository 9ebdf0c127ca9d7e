package web

import (
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/telemeter/telemeter/internal/upload"
)

// WriteError answers a request with the status the error maps to, a one-line
// plain-text reason, and Retry-After on 429 and 503. Errors that map to 500
// are our own bugs: the body says so without detail, the caller logs them.
func WriteError(w http.ResponseWriter, err error) {
	code := upload.StatusCode(err)
	if code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", upload.FormatRetryAfter(Jitter(upload.RetryAfter(err))))
	}
	if code == http.StatusMethodNotAllowed {
		w.Header().Set("Allow", http.MethodPost)
	}
	msg := err.Error()
	if code == http.StatusInternalServerError {
		msg = "internal error"
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(msg + "\n"))
}

// Jitter spreads a Retry-After so that clients refused together do not all
// come back in the same second: d (at least 1s) plus up to 50 % more.
func Jitter(d time.Duration) time.Duration {
	if d < time.Second {
		d = time.Second
	}
	return d + rand.N(d/2+1)
}
