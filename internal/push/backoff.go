package push

import "time"

// Backoff is capped exponential backoff with full jitter: before retry n
// (n = 0 for the first retry) the client waits a uniformly random duration in
// [0, min(Cap, Base·2ⁿ)). Full jitter spreads clients that failed together
// over the whole window instead of moving the herd as one.
type Backoff struct {
	Base time.Duration // default 1s
	Cap  time.Duration // default 1m
}

func (b Backoff) withDefaults() Backoff {
	if b.Base <= 0 {
		b.Base = time.Second
	}
	if b.Cap <= 0 {
		b.Cap = time.Minute
	}
	if b.Cap < b.Base {
		b.Cap = b.Base
	}
	return b
}

// Window is the upper bound of the wait before retry n.
func (b Backoff) Window(n int) time.Duration {
	b = b.withDefaults()
	w := b.Base
	for i := 0; i < n && w < b.Cap; i++ {
		w *= 2
	}
	return min(w, b.Cap)
}

// Delay is the wait before retry n for a random draw r in [0, 1).
func (b Backoff) Delay(n int, r float64) time.Duration {
	if r < 0 || r >= 1 {
		r = 0
	}
	return time.Duration(r * float64(b.Window(n)))
}
