package server

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/telemeter/telemeter/internal/auth"
	"github.com/telemeter/telemeter/internal/upload"
)

type metrics struct {
	uploads        *prometheus.CounterVec
	uploadDuration prometheus.Histogram
	gateRejected   prometheus.Counter
	// families stored from accepted uploads, by path: taken as sent
	// (validate.Verbatim) or decoded and rewritten.
	familiesVerbatim, familiesDecoded prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	m := &metrics{
		uploads: f.NewCounterVec(prometheus.CounterOpts{
			Name: "telemeter_server_uploads_total",
			Help: "Uploads by HTTP status code answered.",
		}, []string{"code"}),
		uploadDuration: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "telemeter_server_upload_duration_seconds",
			Help:    "Time to handle an upload, from headers to answer.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}),
		gateRejected: f.NewCounter(prometheus.CounterOpts{
			Name: "telemeter_server_inflight_rejected_total",
			Help: "Requests refused with 503 because too many were in flight.",
		}),
	}
	families := f.NewCounterVec(prometheus.CounterOpts{
		Name: "telemeter_server_upload_families_total",
		Help: "Metric families of stored uploads, by path: verbatim (stored as the client encoded them) or decoded (decoded, validated and encoded again).",
	}, []string{"path"})
	m.familiesVerbatim = families.WithLabelValues("verbatim")
	m.familiesDecoded = families.WithLabelValues("decoded")
	for _, code := range []int{200, 400, 401, 403, 409, 413, 415, 429, 500, 503} {
		m.uploads.WithLabelValues(strconv.Itoa(code))
	}
	return m
}

func (m *metrics) observeUpload(err error, d time.Duration) {
	code := http.StatusOK
	if err != nil {
		code = upload.StatusCode(err)
	}
	m.observeStatus(code, d)
}

func (m *metrics) observeStatus(code int, d time.Duration) {
	m.uploads.WithLabelValues(strconv.Itoa(code)).Inc()
	m.uploadDuration.Observe(d.Seconds())
}

// watchTokenCache exports the verified-token cache's counters (see
// --token-cache-size) as read at scrape time.
func (m *metrics) watchTokenCache(reg prometheus.Registerer, v *auth.Verifier) {
	f := promauto.With(reg)
	f.NewCounterFunc(prometheus.CounterOpts{
		Name: "telemeter_server_token_cache_hits_total",
		Help: "Upload tokens accepted from the verified-token cache, without a signature check.",
	}, func() float64 { h, _, _ := v.CacheStats(); return float64(h) })
	f.NewCounterFunc(prometheus.CounterOpts{
		Name: "telemeter_server_token_cache_misses_total",
		Help: "Upload tokens not in the verified-token cache, checked in full.",
	}, func() float64 { _, mi, _ := v.CacheStats(); return float64(mi) })
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "telemeter_server_token_cache_entries",
		Help: "Verified upload tokens remembered.",
	}, func() float64 { _, _, n := v.CacheStats(); return float64(n) })
}
