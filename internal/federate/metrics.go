package federate

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Reasons for skipping part of a snapshot, the values of the reason label.
const (
	reasonTypeConflict = "type_conflict" // another cluster's family of the same name came first with another type
	reasonReadError    = "read_error"    // a block could not be read or decoded
	reasonInvalid      = "invalid"       // a name, label or value the text format cannot carry
)

type metrics struct {
	requests *prometheus.CounterVec
	duration prometheus.Histogram
	series   prometheus.Counter
	skipped  *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "telemeter_server_federate_requests_total",
			Help: "Requests to /federate by negotiated format.",
		}, []string{"format"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "telemeter_server_federate_duration_seconds",
			Help:    "Time to write a /federate response.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}),
		series: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "telemeter_server_federate_series_written_total",
			Help: "Series written to /federate responses.",
		}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "telemeter_server_federate_skipped_total",
			Help: "Parts of snapshots left out of /federate responses, by reason: type_conflict (blocks), read_error (blocks), invalid (series or families).",
		}, []string{"reason"}),
	}
	for _, f := range []string{formatText, formatProto} {
		m.requests.WithLabelValues(f)
	}
	for _, r := range []string{reasonTypeConflict, reasonReadError, reasonInvalid} {
		m.skipped.WithLabelValues(r)
	}
	if reg != nil {
		m.requests = register(reg, m.requests)
		m.duration = register(reg, m.duration)
		m.series = register(reg, m.series)
		m.skipped = register(reg, m.skipped)
	}
	return m
}

// register registers c, or returns the collector already registered under
// the same description, so that building a second handler cannot panic.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
	}
	return c
}
