package store

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Results of a write, the values of the result label.
const (
	resultOK      = "ok"
	resultStale   = "stale"
	resultInvalid = "invalid"
	resultError   = "error"
)

type metrics struct {
	snapshots     prometheus.Gauge
	series        prometheus.Gauge
	bytes         prometheus.Gauge
	writes        *prometheus.CounterVec
	writeDuration prometheus.Histogram
	quarantined   prometheus.Counter
	gcRemoved     prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		snapshots: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "telemeter_server_store_snapshots",
			Help: "Cluster snapshots held in the store.",
		}),
		series: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "telemeter_server_store_series",
			Help: "Series across all stored snapshots.",
		}),
		bytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "telemeter_server_store_bytes",
			Help: "Size of all stored snapshot files in bytes.",
		}),
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "telemeter_server_store_writes_total",
			Help: "Snapshot writes by result: ok, stale (older than the stored one), invalid, error (I/O).",
		}, []string{"result"}),
		writeDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "telemeter_server_store_write_duration_seconds",
			Help:    "Time to encode a snapshot and make it durable.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}),
		quarantined: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "telemeter_server_store_quarantined_total",
			Help: "Snapshot files found corrupt and moved to the quarantine directory.",
		}),
		gcRemoved: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "telemeter_server_store_gc_removed_total",
			Help: "Snapshots removed because they were older than the TTL.",
		}),
	}
	for _, r := range []string{resultOK, resultStale, resultInvalid, resultError} {
		m.writes.WithLabelValues(r)
	}
	if reg != nil {
		m.snapshots = register(reg, m.snapshots)
		m.series = register(reg, m.series)
		m.bytes = register(reg, m.bytes)
		m.writes = register(reg, m.writes)
		m.writeDuration = register(reg, m.writeDuration)
		m.quarantined = register(reg, m.quarantined)
		m.gcRemoved = register(reg, m.gcRemoved)
	}
	return m
}

// register registers c, or returns the collector already registered under
// the same description, so that opening a store twice against one registry
// cannot panic.
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
