package admission

import (
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/telemeter/telemeter/internal/upload"
)

// budgetRetryAfter is how long a client refused by a full budget is asked to
// wait: about the time a few bodies in flight take to arrive and decode.
const budgetRetryAfter = 2 * time.Second

// Budget bounds the request body bytes the server holds in flight at once.
// It is safe for concurrent use.
type Budget struct {
	total    int64
	maxShare int64 // largest acquisition admitted while others hold bytes
	inUse    atomic.Int64

	errFull   error
	errTooBig error
	noRelease func()
	metrics   budgetMetrics
}

type budgetMetrics struct {
	acquired      prometheus.Counter
	rejectedFull  prometheus.Counter
	rejectedShare prometheus.Counter
	acquiredBytes prometheus.Counter
}

// NewBudget returns a budget of totalBytes; totalBytes <= 0 admits
// everything. reg may be nil.
func NewBudget(totalBytes int64, reg prometheus.Registerer) *Budget {
	b := &Budget{
		total:     totalBytes,
		maxShare:  totalBytes / 4,
		errFull:   upload.WithRetryAfter(upload.ErrUnavailable, budgetRetryAfter, "too many body bytes in flight"),
		errTooBig: upload.WithRetryAfter(upload.ErrUnavailable, budgetRetryAfter, "body larger than its share of the in-flight budget while others are in flight"),
		noRelease: func() {},
	}
	f := promauto.With(reg)
	rejected := f.NewCounterVec(prometheus.CounterOpts{
		Name: "telemeter_server_admission_budget_rejected_total",
		Help: "Requests refused before their body was read because the in-flight bytes budget was full (reason=full) or the body was larger than a quarter of it while the budget was busy (reason=share).",
	}, []string{"reason"})
	b.metrics = budgetMetrics{
		acquired: f.NewCounter(prometheus.CounterOpts{
			Name: "telemeter_server_admission_budget_acquired_total",
			Help: "Acquisitions of the in-flight bytes budget granted.",
		}),
		acquiredBytes: f.NewCounter(prometheus.CounterOpts{
			Name: "telemeter_server_admission_budget_acquired_bytes_total",
			Help: "Bytes of the in-flight bytes budget granted, summed over acquisitions.",
		}),
		rejectedFull:  rejected.WithLabelValues("full"),
		rejectedShare: rejected.WithLabelValues("share"),
	}
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "telemeter_server_admission_budget_bytes",
		Help: "Size of the in-flight bytes budget; 0 when disabled.",
	}, func() float64 { return float64(max(b.total, 0)) })
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "telemeter_server_admission_budget_in_use_bytes",
		Help: "Bytes of the in-flight bytes budget held by requests now.",
	}, func() float64 { return float64(b.inUse.Load()) })
	return b
}

// Acquire takes n bytes of the budget for one request body, or refuses at
// once with an error wrapping upload.ErrUnavailable and a Retry-After; it
// never waits. The caller calls release once it is done with the body
// (calling it more than once is harmless).
//
// A request larger than a quarter of the budget is admitted only when the
// budget is idle, and then even if it is larger than the whole budget, so
// that a --limit-bytes above the budget does not lock large uploads out.
// Under steady load the budget is seldom idle, so such bodies are mostly
// refused: size the budget at four times --limit-bytes or more and the rule
// only ever refuses bodies the server would refuse anyway.
// n <= 0 holds nothing; use RequestBytes to turn a request into n.
func (b *Budget) Acquire(n int64) (release func(), err error) {
	if b.total <= 0 || n <= 0 {
		return b.noRelease, nil
	}
	for {
		cur := b.inUse.Load()
		switch {
		case cur == 0:
			// Idle: anything fits, however large.
		case n > b.maxShare:
			b.metrics.rejectedShare.Inc()
			return nil, b.errTooBig
		case cur+n > b.total:
			b.metrics.rejectedFull.Inc()
			return nil, b.errFull
		}
		if b.inUse.CompareAndSwap(cur, cur+n) {
			break
		}
	}
	b.metrics.acquired.Inc()
	b.metrics.acquiredBytes.Add(float64(n))
	var done atomic.Bool
	return func() {
		if done.CompareAndSwap(false, true) {
			b.inUse.Add(-n)
		}
	}, nil
}

// InUse returns the bytes held now.
func (b *Budget) InUse() int64 { return b.inUse.Load() }

// RequestBytes is what a request should acquire: its declared Content-Length,
// or limit (the server's --limit-bytes) when the length is unknown (a chunked
// body) or larger than limit, since no more than limit is ever read.
func RequestBytes(r *http.Request, limit int64) int64 {
	if r.ContentLength < 0 || r.ContentLength > limit {
		return limit
	}
	return r.ContentLength
}
