package limit

import (
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/telemeter/telemeter/internal/upload"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newLimiter(c *clock) *Limiter {
	return New(Options{Interval: time.Minute, Now: c.now}, prometheus.NewRegistry())
}

func TestOneAcceptedUploadPerInterval(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	l := newLimiter(c)

	r, err := l.Reserve("a")
	require.NoError(t, err)
	r.Commit()

	c.advance(30 * time.Second)
	_, err = l.Reserve("a")
	require.ErrorIs(t, err, upload.ErrRateLimited)
	require.Equal(t, http.StatusTooManyRequests, upload.StatusCode(err))
	require.Equal(t, 24*time.Second, upload.RetryAfter(err), "the interval less a tenth of slack")

	// Other clusters are not affected.
	r, err = l.Reserve("b")
	require.NoError(t, err)
	r.Commit()

	c.advance(23 * time.Second) // 53s: still inside interval less slack
	_, err = l.Reserve("a")
	require.ErrorIs(t, err, upload.ErrRateLimited)
	c.advance(time.Second) // 54s: a client a little early is accepted
	r, err = l.Reserve("a")
	require.NoError(t, err)
	r.Commit()
}

func TestCancelledUploadGivesSlotBack(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	l := newLimiter(c)

	r, err := l.Reserve("a")
	require.NoError(t, err)
	r.Commit()
	c.advance(time.Minute)

	// The next upload fails later in the pipeline (say a 400): the client
	// must be able to retry at once.
	r, err = l.Reserve("a")
	require.NoError(t, err)
	r.Cancel()
	r, err = l.Reserve("a")
	require.NoError(t, err)
	r.Commit()
}

func TestConcurrentUploadOfOneClusterRefused(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	l := newLimiter(c)
	r, err := l.Reserve("a")
	require.NoError(t, err)
	_, err = l.Reserve("a")
	require.ErrorIs(t, err, upload.ErrRateLimited)
	r.Cancel()
	_, err = l.Reserve("a")
	require.NoError(t, err)
}

func TestIdleEntriesEvicted(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	l := newLimiter(c)
	for _, id := range []string{"a", "b", "c"} {
		r, err := l.Reserve(id)
		require.NoError(t, err)
		r.Commit()
	}
	pending, err := l.Reserve("d")
	require.NoError(t, err)
	require.Equal(t, 4, l.Len())
	c.advance(2 * time.Minute)
	require.Equal(t, 3, l.Evict())
	require.Equal(t, 1, l.Len(), "a pending entry is never evicted")
	pending.Commit()
}

func TestFullLimiterEvictsOrRefuses(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	l := New(Options{Interval: time.Minute, MaxEntries: 1, Now: c.now}, nil)
	// MaxEntries is split over the shards; fill one shard's share with
	// pending reservations, which cannot be evicted.
	var held []*Reservation
	var err error
	for i := 0; err == nil && i < 10000; i++ {
		var r *Reservation
		r, err = l.Reserve(string(rune('a'+i%26)) + string(rune(i)))
		if err == nil {
			held = append(held, r)
		}
	}
	require.ErrorIs(t, err, upload.ErrUnavailable)
	for _, r := range held {
		r.Cancel()
	}
	require.Equal(t, 0, l.Len())
}

func TestDisabled(t *testing.T) {
	l := New(Options{}, nil)
	for range 3 {
		r, err := l.Reserve("a")
		require.NoError(t, err)
		r.Commit()
	}
	require.Equal(t, 0, l.Len())
}

func BenchmarkReserveCommit(b *testing.B) {
	l := New(Options{Interval: time.Nanosecond}, nil)
	ids := make([]string, 1024)
	for i := range ids {
		ids[i] = "cluster-" + string(rune('a'+i%26)) + string(rune(i))
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			r, err := l.Reserve(ids[i%len(ids)])
			if err == nil {
				r.Commit()
			}
			i++
		}
	})
}
