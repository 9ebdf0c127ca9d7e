package admission

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/telemeter/telemeter/internal/upload"
)

// ErrTooSlow is the condition of a request body that arrives below the
// minimum transfer rate. It wraps upload.ErrInvalid, so it is answered 400;
// test for it with errors.Is to answer 408 instead.
var ErrTooSlow error = &upload.StatusError{Err: upload.ErrInvalid, Reason: "body too slow"}

// minGrace is the least grace a body gets: one network round trip on a bad
// link should not fail an upload.
const minGrace = time.Second

// MinRateReader reads a request body that must arrive at minBytesPerSec or
// faster once grace has passed: by grace + t after the reader is made, at
// least t × minBytesPerSec bytes must have been read. No single wait for
// more bytes may last longer than grace either, so bytes sent early do not
// buy an unbounded stall later.
//
// Before each Read it moves the connection's read deadline (through rc) to
// the moment the next byte is due, so a client that stops sending is cut by
// the deadline rather than holding a goroutine and a connection until the
// server's ReadTimeout. That deadline replaces the server's ReadTimeout for
// the body: the body may take up to grace + size/minBytesPerSec in all.
// Without rc, or where the connection does not support deadlines, the rate
// is still checked between reads, but a client that stops altogether is
// only cut by the server's own timeouts.
//
// The deadline does not outlive the body: net/http clears the connection's
// read deadline when the body ends, before it watches the idle connection
// for the client going away, so a handler still at work after the body is
// not cancelled by it. A handler that stops reading early leaves the
// deadline to cut the unread rest, which net/http would otherwise try to
// drain.
//
// A body that is too slow fails with an error wrapping ErrTooSlow (and so
// upload.ErrInvalid). minBytesPerSec <= 0 returns r unchanged; grace below a
// second counts as a second; now nil is time.Now.
func MinRateReader(r io.Reader, rc *http.ResponseController, minBytesPerSec int64, grace time.Duration, now func() time.Time) io.Reader {
	if minBytesPerSec <= 0 {
		return r
	}
	if now == nil {
		now = time.Now
	}
	return &minRateReader{
		r:     r,
		rc:    rc,
		rate:  minBytesPerSec,
		grace: max(grace, minGrace),
		now:   now,
		start: now(),
	}
}

type minRateReader struct {
	r     io.Reader
	rc    *http.ResponseController // nil: no deadlines
	rate  int64
	grace time.Duration
	now   func() time.Time
	start time.Time

	n   int64 // bytes read so far
	err error // sticky
}

func (m *minRateReader) Read(p []byte) (int, error) {
	if m.err != nil {
		return 0, m.err
	}
	now := m.now()
	due := m.due(now)
	if now.After(due) {
		m.err = m.tooSlow(now)
		return 0, m.err
	}
	if m.rc != nil {
		if err := m.rc.SetReadDeadline(due); err != nil {
			m.rc = nil // not supported here: check between reads only
		}
	}
	n, err := m.r.Read(p)
	m.n += int64(n)
	switch {
	case err != nil && isTimeout(err):
		err = m.tooSlow(m.now())
	case err == nil && m.now().After(due):
		// The bytes came, but late: without a deadline on the connection
		// this is how a stall is caught.
		err = m.tooSlow(m.now())
	}
	if err != nil {
		m.err = err
	}
	return n, err
}

// due is when the next byte must have arrived: the byte count's place on
// the minimum-rate schedule, but no later than grace from now.
func (m *minRateReader) due(now time.Time) time.Time {
	return minTime(m.start.Add(m.grace+bytesDuration(m.n+1, m.rate)), now.Add(m.grace))
}

func (m *minRateReader) tooSlow(now time.Time) error {
	return fmt.Errorf("%w: %d bytes in %s, below %d bytes/s", ErrTooSlow, m.n, now.Sub(m.start).Round(time.Millisecond), m.rate)
}

// bytesDuration is how long n bytes take at rate bytes per second, capped
// far beyond any real body so that adding it to a time cannot overflow.
func bytesDuration(n, rate int64) time.Duration {
	const ceiling = 1 << 62
	secs := n / rate
	if secs >= int64(ceiling/time.Second) {
		return ceiling
	}
	frac := float64(n%rate) / float64(rate) // in [0, 1)
	return time.Duration(secs)*time.Second + time.Duration(frac*float64(time.Second))
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func isTimeout(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
