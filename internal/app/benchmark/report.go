package benchmark

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Outcomes of a request that got no HTTP answer, used where a status code
// would be.
const (
	outcomeTimeout  = "timeout"  // --request-timeout passed
	outcomeError    = "error"    // connection refused, reset, TLS failure...
	outcomeCanceled = "canceled" // cut by the end of the run after the drain time
)

// Report is what a run measured. Its JSON form is one object, documented in
// docs/benchmark-tool.md.
type Report struct {
	Target         string `json:"target"`
	Mode           string `json:"mode"`
	Clusters       int    `json:"clusters"`
	SeriesPerPush  int    `json:"series_per_push"`
	SamplesPerPush int    `json:"samples_per_push"`
	// WallSeconds runs from the start of the first push to the end of the
	// last request.
	WallSeconds float64 `json:"wall_seconds"`

	// Uploads counts upload requests that got an answer or failed on the
	// way; canceled ones are apart. Accepted got a 2xx; NonSuccess is every
	// other answer and TransportErrors the requests without one.
	Uploads          int64   `json:"uploads"`
	Accepted         int64   `json:"accepted"`
	NonSuccess       int64   `json:"non_2xx"`
	TransportErrors  int64   `json:"transport_errors"`
	Canceled         int64   `json:"canceled"`
	UploadsPerSecond float64 `json:"uploads_per_second"`
	// Samples are those of accepted uploads.
	Samples          int64   `json:"samples"`
	SamplesPerSecond float64 `json:"samples_per_second"`
	BytesSent        int64   `json:"bytes_sent"`

	// Latency is over answered uploads, whatever the status.
	Latency Latency `json:"latency_seconds"`
	// Status counts uploads by status code, with timeout and error for
	// requests that got no answer.
	Status map[string]int64 `json:"status"`

	Authorizations   int64            `json:"authorizations"`
	AuthorizeStatus  map[string]int64 `json:"authorize_status"`
	Reauthorizations int64            `json:"reauthorizations"`

	// ScheduleLagMaxSeconds is the latest a push started against its
	// schedule (interval mode). Seconds here mean the generator or the
	// server fell behind, and the latencies understate the wait.
	ScheduleLagMaxSeconds float64 `json:"schedule_lag_max_seconds"`
	// GeneratorCPUSeconds is the CPU time the benchmark process used during
	// the run (all of it, in tests that share the process with a server).
	GeneratorCPUSeconds float64 `json:"generator_cpu_seconds"`
	// PreauthorizeSeconds is how long --preauthorize took, before the
	// schedule started (not in WallSeconds).
	PreauthorizeSeconds float64 `json:"preauthorize_seconds"`
}

// Latency summarises upload latencies in seconds.
type Latency struct {
	Count int64   `json:"count"`
	Mean  float64 `json:"mean"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	Max   float64 `json:"max"`
}

// WriteJSON writes r as one JSON object and a newline.
func (r Report) WriteJSON(w io.Writer) error {
	return json.NewEncoder(w).Encode(r)
}

// WriteText writes r for a human.
func (r Report) WriteText(w io.Writer) error {
	codes := func(m map[string]int64) string {
		if len(m) == 0 {
			return "none"
		}
		s := ""
		for _, k := range slices.Sorted(maps.Keys(m)) {
			if s != "" {
				s += " "
			}
			s += k + "=" + strconv.FormatInt(m[k], 10)
		}
		return s
	}
	ms := func(sec float64) string { return strconv.FormatFloat(sec*1000, 'f', 2, 64) + "ms" }
	_, err := fmt.Fprintf(w, `target             %s
mode               %s
clusters           %d (%d series, %d samples per push)
wall time          %.2fs
uploads            %d (%.1f/s): %d accepted, %d non-2xx, %d transport errors, %d canceled
samples accepted   %d (%.0f/s)
bytes sent         %d
latency            p50 %s  p90 %s  p99 %s  max %s  mean %s  (%d answered)
upload status      %s
authorizations     %d (%d after a 401): %s
schedule lag max   %.3fs
generator cpu      %.2fs
preauthorize       %.2fs
`,
		r.Target,
		r.Mode,
		r.Clusters, r.SeriesPerPush, r.SamplesPerPush,
		r.WallSeconds,
		r.Uploads, r.UploadsPerSecond, r.Accepted, r.NonSuccess, r.TransportErrors, r.Canceled,
		r.Samples, r.SamplesPerSecond,
		r.BytesSent,
		ms(r.Latency.P50), ms(r.Latency.P90), ms(r.Latency.P99), ms(r.Latency.Max), ms(r.Latency.Mean), r.Latency.Count,
		codes(r.Status),
		r.Authorizations, r.Reauthorizations, codes(r.AuthorizeStatus),
		r.ScheduleLagMaxSeconds,
		r.GeneratorCPUSeconds,
		r.PreauthorizeSeconds,
	)
	return err
}

// stats collects what the report needs while pushers run.
type stats struct {
	latency latencyHistogram
	samples atomic.Int64
	bytes   atomic.Int64
	reauth  atomic.Int64
	lagMax  atomic.Int64 // nanoseconds

	mu        sync.Mutex
	uploads   map[string]int64
	authorize map[string]int64
}

func newStats() *stats {
	return &stats{uploads: map[string]int64{}, authorize: map[string]int64{}}
}

func (s *stats) upload(outcome string) {
	s.mu.Lock()
	s.uploads[outcome]++
	s.mu.Unlock()
}

func (s *stats) authorized(outcome string) {
	s.mu.Lock()
	s.authorize[outcome]++
	s.mu.Unlock()
}

func (s *stats) lag(d time.Duration) {
	for {
		m := s.lagMax.Load()
		if int64(d) <= m || s.lagMax.CompareAndSwap(m, int64(d)) {
			return
		}
	}
}

// report builds the Report of a run that took wall.
func (s *stats) report(r Report, wall time.Duration) Report {
	s.mu.Lock()
	defer s.mu.Unlock()
	r.WallSeconds = wall.Seconds()
	r.Status = map[string]int64{}
	for k, n := range s.uploads {
		switch {
		case k == outcomeCanceled:
			r.Canceled += n
			continue
		case k == outcomeTimeout || k == outcomeError:
			r.TransportErrors += n
		case len(k) == 3 && k[0] == '2':
			r.Accepted += n
		default:
			r.NonSuccess += n
		}
		r.Status[k] = n
		r.Uploads += n
	}
	r.AuthorizeStatus = maps.Clone(s.authorize)
	for _, n := range s.authorize {
		r.Authorizations += n
	}
	r.Reauthorizations = s.reauth.Load()
	r.Samples = s.samples.Load()
	r.BytesSent = s.bytes.Load()
	if sec := wall.Seconds(); sec > 0 {
		r.UploadsPerSecond = float64(r.Uploads) / sec
		r.SamplesPerSecond = float64(r.Samples) / sec
	}
	h := &s.latency
	r.Latency = Latency{
		Count: int64(h.total.Load()),
		Mean:  h.mean().Seconds(),
		P50:   h.quantile(0.50).Seconds(),
		P90:   h.quantile(0.90).Seconds(),
		P99:   h.quantile(0.99).Seconds(),
		Max:   time.Duration(h.max.Load()).Seconds(),
	}
	r.ScheduleLagMaxSeconds = time.Duration(s.lagMax.Load()).Seconds()
	return r
}
