package admission

import (
	"errors"
	"io"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// openFilesSampleEvery bounds how often the descriptor table is counted.
const openFilesSampleEvery = time.Second

// OpenFiles reports the process's open file descriptors against its limit,
// the resource every connection, store file and peer stream draws on. It is
// safe for concurrent use.
type OpenFiles struct {
	dir   string // /proc/self/fd
	now   func() time.Time
	limit uint64

	mu      sync.Mutex
	sampled time.Time
	count   int
}

// NewOpenFiles registers telemeter_server_admission_open_fds (counted from
// /proc/self/fd at most once a second) and telemeter_server_admission_max_fds
// (the soft RLIMIT_NOFILE). reg may be nil.
func NewOpenFiles(reg prometheus.Registerer) *OpenFiles {
	o := &OpenFiles{dir: "/proc/self/fd", now: time.Now, limit: fileLimit()}
	f := promauto.With(reg)
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "telemeter_server_admission_open_fds",
		Help: "Open file descriptors of the process, sampled at most once a second.",
	}, func() float64 { return float64(o.Count()) })
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "telemeter_server_admission_max_fds",
		Help: "Soft limit on open file descriptors (RLIMIT_NOFILE); 0 when unknown.",
	}, func() float64 { return float64(o.Limit()) })
	return o
}

// Count returns the open descriptors, counted afresh when the last count is
// older than a second. Where /proc is missing it stays at the last count
// (0 when there never was one).
func (o *OpenFiles) Count() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	now := o.now()
	if !o.sampled.IsZero() && now.Sub(o.sampled) < openFilesSampleEvery {
		return o.count
	}
	o.sampled = now
	if n, err := countDir(o.dir); err == nil {
		o.count = n
	}
	return o.count
}

// Limit returns the soft limit on open descriptors, 0 when unknown. A
// connection cap well under it (say three quarters) leaves room for store
// files and peers.
func (o *OpenFiles) Limit() uint64 { return o.limit }

// countDir counts the entries of dir without sorting or stat-ing them. For
// /proc/self/fd the count includes the descriptor used to read it.
func countDir(dir string) (int, error) {
	d, err := os.Open(dir)
	if err != nil {
		return 0, err
	}
	defer func() { _ = d.Close() }()
	n := 0
	for {
		names, err := d.Readdirnames(256)
		n += len(names)
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}
