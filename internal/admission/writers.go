package admission

import (
	"context"
	"hash/maphash"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

const writerShards = 64

// Writers notices two writers pushing for one cluster: two installations
// sharing a cluster ID, or a stolen credential used beside the real one. It
// is safe for concurrent use.
//
// A writer is whatever identifies the credential of an upload: the token's
// jti, or the client certificate's fingerprint. A writer ID changes
// legitimately once in a while (a token refresh, a certificate renewal),
// so one change is not a conflict. A conflict is a change that comes less
// than window after the previous change: writers alternating (A, B, A) or
// churning. Choose window longer than a few upload intervals, so that two
// writers each pushing once per interval are caught, and shorter than a
// token's lifetime, so that refreshes are never counted.
//
// Conflicts are counted, reported to the caller, and logged at most once
// per cluster per window. What to do about them is the caller's decision.
type Writers struct {
	window     time.Duration
	maxEntries int // per shard
	logger     *slog.Logger
	now        func() time.Time
	seed       maphash.Seed
	shards     [writerShards]writerShard

	metrics struct {
		conflicts prometheus.Counter
		evicted   prometheus.Counter
	}
}

type writerShard struct {
	mu      sync.Mutex
	entries map[string]*writerEntry
}

type writerEntry struct {
	writer  string
	seen    time.Time // last upload of any writer
	changed time.Time // last change of writer; zero: never
	logged  time.Time // last conflict logged; zero: never
}

// NewWriters tracks up to maxEntries clusters (default 1,000,000), each
// forgotten once idle for window. window <= 0 disables detection. reg may
// be nil.
func NewWriters(window time.Duration, maxEntries int, reg prometheus.Registerer, logger *slog.Logger) *Writers {
	if maxEntries <= 0 {
		maxEntries = 1_000_000
	}
	w := &Writers{
		window:     window,
		maxEntries: maxEntries/writerShards + 1,
		logger:     logger,
		now:        time.Now,
		seed:       maphash.MakeSeed(),
	}
	for i := range w.shards {
		w.shards[i].entries = make(map[string]*writerEntry)
	}
	f := promauto.With(reg)
	w.metrics.conflicts = f.NewCounter(prometheus.CounterOpts{
		Name: "telemeter_server_admission_writer_conflicts_total",
		Help: "Uploads whose writer (token or certificate) differed from the cluster's previous one within the window of an earlier change.",
	})
	w.metrics.evicted = f.NewCounter(prometheus.CounterOpts{
		Name: "telemeter_server_admission_writers_evicted_total",
		Help: "Clusters forgotten by writer tracking, idle or to make room.",
	})
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "telemeter_server_admission_writers_tracked",
		Help: "Clusters whose writer is tracked.",
	}, func() float64 { return float64(w.Len()) })
	return w
}

// Observe records an upload of clusterID by writerID and reports whether it
// is a conflict. Empty IDs are ignored. It does not allocate unless the
// cluster is new or its writer changed.
func (w *Writers) Observe(clusterID, writerID string) (conflict bool) {
	if w.window <= 0 || clusterID == "" || writerID == "" {
		return false
	}
	now := w.now()
	s := &w.shards[maphash.String(w.seed, clusterID)%writerShards]
	s.mu.Lock()
	e, ok := s.entries[clusterID]
	if !ok {
		if len(s.entries) >= w.maxEntries {
			w.makeRoomLocked(s, now)
		}
		// Clone: the IDs may be slices of a larger string (a whole token).
		s.entries[strings.Clone(clusterID)] = &writerEntry{writer: strings.Clone(writerID), seen: now}
		s.mu.Unlock()
		return false
	}
	if e.writer == writerID {
		e.seen = now
		s.mu.Unlock()
		return false
	}
	conflict = !e.changed.IsZero() && now.Sub(e.changed) < w.window
	previous := e.writer
	e.writer, e.seen, e.changed = strings.Clone(writerID), now, now
	log := conflict && (e.logged.IsZero() || now.Sub(e.logged) >= w.window)
	if log {
		e.logged = now
	}
	s.mu.Unlock()

	if conflict {
		w.metrics.conflicts.Inc()
	}
	if log && w.logger != nil {
		w.logger.Warn("two writers for one cluster", "cluster", clusterID, "writer", writerID,
			"previous_writer", previous, "window", w.window)
	}
	return conflict
}

// makeRoomLocked evicts idle entries from a full shard, or one arbitrary
// entry when none is idle: tracking is best effort and must stay bounded.
func (w *Writers) makeRoomLocked(s *writerShard, now time.Time) {
	if w.evictLocked(s, now) > 0 {
		return
	}
	for id := range s.entries {
		delete(s.entries, id)
		w.metrics.evicted.Inc()
		return
	}
}

func (w *Writers) evictLocked(s *writerShard, now time.Time) int {
	n := 0
	for id, e := range s.entries {
		if now.Sub(e.seen) >= w.window {
			delete(s.entries, id)
			n++
		}
	}
	w.metrics.evicted.Add(float64(n))
	return n
}

// Evict forgets every cluster idle for window or longer and returns how
// many it forgot.
func (w *Writers) Evict() int {
	now := w.now()
	n := 0
	for i := range w.shards {
		s := &w.shards[i]
		s.mu.Lock()
		n += w.evictLocked(s, now)
		s.mu.Unlock()
	}
	return n
}

// Run evicts idle clusters every window until ctx is done. It returns nil.
func (w *Writers) Run(ctx context.Context) error {
	if w.window <= 0 {
		<-ctx.Done()
		return nil
	}
	t := time.NewTicker(max(w.window, time.Second))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			w.Evict()
		}
	}
}

// Len returns the clusters tracked.
func (w *Writers) Len() int {
	n := 0
	for i := range w.shards {
		s := &w.shards[i]
		s.mu.Lock()
		n += len(s.entries)
		s.mu.Unlock()
	}
	return n
}
