package remotewrite

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Request results, the values of the result label of
// telemeter_server_remote_write_requests_total.
const (
	resultSuccess = "success"
	resultRetry   = "retry"   // a retryable failure: transport, 5xx, 429
	resultDropped = "dropped" // a final answer: 4xx other than 429
)

// Failure reasons, the values of the reason label of
// telemeter_server_remote_write_failures_total.
const (
	reasonTransport   = "transport"    // no answer: dial, TLS, timeout
	reasonServerError = "server_error" // 5xx, retried
	reasonRateLimited = "rate_limited" // 429, retried
	reasonRejected    = "rejected"     // other 4xx, the snapshot is dropped
	reasonStore       = "store"        // the snapshot could not be read
)

// Snapshot outcomes, the values of the result label of
// telemeter_server_remote_write_snapshots_total.
const (
	snapshotSent    = "sent"
	snapshotDropped = "dropped"
)

type metrics struct {
	requests    *prometheus.CounterVec
	failures    *prometheus.CounterVec
	snapshots   *prometheus.CounterVec
	samples     prometheus.Counter
	bytes       prometheus.Counter
	duration    prometheus.Histogram
	lastSuccess prometheus.Gauge
}

// newMetrics registers the forwarder's metrics; lag and pending are read
// from the dirty set at scrape time.
func newMetrics(reg prometheus.Registerer, lag, pending func() float64) *metrics {
	f := promauto.With(reg)
	m := &metrics{
		requests: f.NewCounterVec(prometheus.CounterOpts{
			Name: "telemeter_server_remote_write_requests_total",
			Help: "Remote-write requests sent, by result: success, retry (transport error, 5xx or 429), dropped (other 4xx).",
		}, []string{"result"}),
		failures: f.NewCounterVec(prometheus.CounterOpts{
			Name: "telemeter_server_remote_write_failures_total",
			Help: "Failures to forward a snapshot, by reason: transport, server_error, rate_limited, rejected, store.",
		}, []string{"reason"}),
		snapshots: f.NewCounterVec(prometheus.CounterOpts{
			Name: "telemeter_server_remote_write_snapshots_total",
			Help: "Cluster snapshots forwarded, by result: sent, dropped (refused by the target or unreadable).",
		}, []string{"result"}),
		samples: f.NewCounter(prometheus.CounterOpts{
			Name: "telemeter_server_remote_write_samples_total",
			Help: "Samples the remote-write target accepted.",
		}),
		bytes: f.NewCounter(prometheus.CounterOpts{
			Name: "telemeter_server_remote_write_sent_bytes_total",
			Help: "Compressed request bytes the remote-write target accepted.",
		}),
		duration: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "telemeter_server_remote_write_request_duration_seconds",
			Help:    "Time of one remote-write request.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}),
		lastSuccess: f.NewGauge(prometheus.GaugeOpts{
			Name: "telemeter_server_remote_write_last_success_timestamp_seconds",
			Help: "Unix time of the last request the remote-write target accepted.",
		}),
	}
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "telemeter_server_remote_write_lag_seconds",
		Help: "Age of the oldest received snapshot not yet forwarded; 0 when every cluster is sent.",
	}, lag)
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "telemeter_server_remote_write_pending_clusters",
		Help: "Clusters whose latest snapshot is not yet forwarded.",
	}, pending)
	for _, r := range []string{resultSuccess, resultRetry, resultDropped} {
		m.requests.WithLabelValues(r)
	}
	for _, r := range []string{reasonTransport, reasonServerError, reasonRateLimited, reasonRejected, reasonStore} {
		m.failures.WithLabelValues(r)
	}
	for _, r := range []string{snapshotSent, snapshotDropped} {
		m.snapshots.WithLabelValues(r)
	}
	return m
}
