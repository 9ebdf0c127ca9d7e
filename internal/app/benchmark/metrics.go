package benchmark

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// metrics are the benchmark's own, served on --listen while it runs. Codes
// are HTTP status codes, or timeout, error and canceled for requests that
// got no answer.
type metrics struct {
	uploads        *prometheus.CounterVec
	authorizations *prometheus.CounterVec
	duration       prometheus.Histogram
	lag            prometheus.Histogram
	samples        prometheus.Counter
	bytes          prometheus.Counter
	inflight       prometheus.Gauge
	clusters       prometheus.Gauge
	scheduleStart  prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	return &metrics{
		uploads: f.NewCounterVec(prometheus.CounterOpts{
			Name: "telemeter_benchmark_uploads_total",
			Help: "Upload requests by status code (timeout, error or canceled when no answer came).",
		}, []string{"code"}),
		authorizations: f.NewCounterVec(prometheus.CounterOpts{
			Name: "telemeter_benchmark_authorizations_total",
			Help: "Authorize requests by status code (timeout, error or canceled when no answer came).",
		}, []string{"code"}),
		duration: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "telemeter_benchmark_upload_duration_seconds",
			Help:    "Latency of answered upload requests, from sending to the end of the answer.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}),
		lag: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "telemeter_benchmark_schedule_lag_seconds",
			Help:    "How late pushes started against their schedule (interval mode): a busy generator or a slow server.",
			Buckets: []float64{.001, .01, .1, 1, 10, 60},
		}),
		samples: f.NewCounter(prometheus.CounterOpts{
			Name: "telemeter_benchmark_samples_accepted_total",
			Help: "Samples in uploads answered with a 2xx.",
		}),
		bytes: f.NewCounter(prometheus.CounterOpts{
			Name: "telemeter_benchmark_upload_bytes_total",
			Help: "Compressed body bytes of upload requests sent.",
		}),
		inflight: f.NewGauge(prometheus.GaugeOpts{
			Name: "telemeter_benchmark_requests_in_flight",
			Help: "Authorize and upload requests waiting for an answer.",
		}),
		clusters: f.NewGauge(prometheus.GaugeOpts{
			Name: "telemeter_benchmark_clusters",
			Help: "Simulated clusters of this run.",
		}),
		scheduleStart: f.NewGauge(prometheus.GaugeOpts{
			Name: "telemeter_benchmark_schedule_start_timestamp_seconds",
			Help: "Unix time the push schedule started (after --preauthorize); 0 before.",
		}),
	}
}
