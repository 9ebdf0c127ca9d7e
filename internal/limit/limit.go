package limit

import (
	"fmt"
	"hash/maphash"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/telemeter/telemeter/internal/upload"
)

const shards = 64

// Options configure a Limiter.
type Options struct {
	// Interval is the minimum spacing of accepted uploads of one cluster
	// (the server's --ratelimit). Zero disables the limit.
	Interval time.Duration
	// MaxEntries bounds the clusters tracked at once (default 1,000,000).
	// When full and nothing is idle, new clusters are refused with 503.
	MaxEntries int
	Now        func() time.Time
}

type entry struct {
	last    time.Time // last accepted upload
	pending bool      // an upload of this cluster is in flight
}

type shard struct {
	mu      sync.Mutex
	entries map[string]*entry
}

// Limiter is safe for concurrent use.
type Limiter struct {
	o      Options
	seed   maphash.Seed
	shards [shards]shard

	metrics struct {
		rejected prometheus.Counter
		evicted  prometheus.Counter
		entries  prometheus.GaugeFunc
	}
}

// New returns a Limiter; reg may be nil.
func New(o Options, reg prometheus.Registerer) *Limiter {
	if o.MaxEntries <= 0 {
		o.MaxEntries = 1_000_000
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	l := &Limiter{o: o, seed: maphash.MakeSeed()}
	for i := range l.shards {
		l.shards[i].entries = make(map[string]*entry)
	}
	f := promauto.With(reg)
	l.metrics.rejected = f.NewCounter(prometheus.CounterOpts{
		Name: "telemeter_server_ratelimit_rejected_total",
		Help: "Uploads refused because their cluster uploaded within the rate-limit interval.",
	})
	l.metrics.evicted = f.NewCounter(prometheus.CounterOpts{
		Name: "telemeter_server_ratelimit_evicted_total",
		Help: "Idle rate-limit entries evicted.",
	})
	l.metrics.entries = f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "telemeter_server_ratelimit_entries",
		Help: "Clusters tracked by the rate limiter.",
	}, func() float64 { return float64(l.Len()) })
	return l
}

// Reservation is a slot held by one upload. Exactly one of Commit or Cancel
// must be called.
type Reservation struct {
	l  *Limiter
	id string
}

// Reserve takes the cluster's slot for one upload, or fails with an error
// wrapping upload.ErrRateLimited that says when to come back.
func (l *Limiter) Reserve(clusterID string) (*Reservation, error) {
	if l.o.Interval <= 0 {
		return &Reservation{}, nil
	}
	now := l.o.Now()
	s := l.shard(clusterID)
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[clusterID]
	if !ok {
		if len(s.entries) >= l.o.MaxEntries/shards+1 && l.evictLocked(s, now) == 0 {
			return nil, upload.WithRetryAfter(upload.ErrUnavailable, l.o.Interval/4, "rate limiter full")
		}
		e = &entry{}
		s.entries[clusterID] = e
	}
	if e.pending {
		l.metrics.rejected.Inc()
		return nil, upload.WithRetryAfter(upload.ErrRateLimited, time.Second, "another upload of this cluster is in progress")
	}
	if !e.last.IsZero() {
		// A tenth of the interval of slack: a client pushing on the same
		// interval with a little jitter is not refused for arriving early.
		if wait := e.last.Add(l.o.Interval - l.o.Interval/10).Sub(now); wait > 0 {
			l.metrics.rejected.Inc()
			return nil, upload.WithRetryAfter(upload.ErrRateLimited, wait,
				fmt.Sprintf("one upload per %s per cluster", l.o.Interval))
		}
	}
	e.pending = true
	return &Reservation{l: l, id: clusterID}, nil
}

// Commit spends the slot: the upload was stored.
func (r *Reservation) Commit() { r.finish(true) }

// Cancel gives the slot back: the upload failed and the client may retry.
func (r *Reservation) Cancel() { r.finish(false) }

func (r *Reservation) finish(accepted bool) {
	if r == nil || r.l == nil {
		return
	}
	s := r.l.shard(r.id)
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[r.id]
	if !ok {
		return
	}
	e.pending = false
	if accepted {
		e.last = r.l.o.Now()
	} else if e.last.IsZero() {
		delete(s.entries, r.id)
	}
	r.l = nil
}

// Evict removes every entry idle for longer than the interval. The server
// calls it periodically; Reserve also evicts from a full shard.
func (l *Limiter) Evict() int {
	now := l.o.Now()
	n := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		n += l.evictLocked(s, now)
		s.mu.Unlock()
	}
	return n
}

func (l *Limiter) evictLocked(s *shard, now time.Time) int {
	n := 0
	for id, e := range s.entries {
		if !e.pending && now.Sub(e.last) >= l.o.Interval {
			delete(s.entries, id)
			n++
		}
	}
	l.metrics.evicted.Add(float64(n))
	return n
}

// Len returns the number of clusters tracked.
func (l *Limiter) Len() int {
	n := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		n += len(s.entries)
		s.mu.Unlock()
	}
	return n
}

func (l *Limiter) shard(id string) *shard {
	return &l.shards[maphash.String(l.seed, id)%shards]
}
