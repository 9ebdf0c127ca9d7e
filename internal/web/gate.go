package web

import (
	"net/http"
	"time"

	"github.com/telemeter/telemeter/internal/upload"
)

// Gate bounds the requests served at once. A request over the bound is
// answered 503 with Retry-After at once, before its body is read, so a flood
// costs the server a header parse and nothing more.
type Gate struct {
	slots      chan struct{}
	retryAfter time.Duration
	rejected   func()
}

// NewGate admits at most n requests at once; n <= 0 admits all.
// rejected, if not nil, is called for every refused request.
func NewGate(n int, retryAfter time.Duration, rejected func()) *Gate {
	g := &Gate{retryAfter: retryAfter, rejected: rejected}
	if n > 0 {
		g.slots = make(chan struct{}, n)
	}
	return g
}

// Wrap gates h.
func (g *Gate) Wrap(h http.Handler) http.Handler {
	if g.slots == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case g.slots <- struct{}{}:
		default:
			if g.rejected != nil {
				g.rejected()
			}
			w.Header().Set("Connection", "close")
			WriteError(w, upload.WithRetryAfter(upload.ErrUnavailable, g.retryAfter, "too many requests in flight"))
			return
		}
		defer func() { <-g.slots }()
		h.ServeHTTP(w, r)
	})
}
