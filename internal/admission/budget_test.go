package admission

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/telemeter/telemeter/internal/upload"
)

func TestBudget(t *testing.T) {
	// Each step acquires n bytes, or with release > 0 releases what step
	// release-1 acquired.
	type step struct {
		n       int64
		ok      bool
		reason  string // "full" or "share" when refused
		release int
	}
	for _, tc := range []struct {
		name  string
		total int64
		steps []step
		inUse int64
	}{
		{
			name:  "fills up then refuses",
			total: 100,
			steps: []step{{n: 25, ok: true}, {n: 25, ok: true}, {n: 25, ok: true}, {n: 25, ok: true}, {n: 1, reason: "full"}},
			inUse: 100,
		},
		{
			name:  "release makes room",
			total: 100,
			steps: []step{{n: 25, ok: true}, {n: 25, ok: true}, {n: 25, ok: true}, {n: 25, ok: true}, {release: 1}, {n: 20, ok: true}, {n: 6, reason: "full"}},
			inUse: 95,
		},
		{
			name:  "a large body is refused while others are in flight",
			total: 100,
			steps: []step{{n: 1, ok: true}, {n: 26, reason: "share"}},
			inUse: 1,
		},
		{
			name:  "a large body is admitted when idle, then blocks everything",
			total: 100,
			steps: []step{{n: 90, ok: true}, {n: 10, ok: true}, {n: 1, reason: "full"}},
			inUse: 100,
		},
		{
			name:  "a body larger than the whole budget is admitted only when idle",
			total: 100,
			steps: []step{{n: 500, ok: true}, {n: 1, reason: "full"}, {release: 1}, {n: 1, ok: true}, {n: 500, reason: "share"}},
			inUse: 1,
		},
		{
			name:  "exactly a quarter passes the share rule",
			total: 100,
			steps: []step{{n: 1, ok: true}, {n: 25, ok: true}},
			inUse: 26,
		},
		{
			name:  "disabled budget admits everything",
			total: 0,
			steps: []step{{n: 1 << 40, ok: true}, {n: 1 << 40, ok: true}},
			inUse: 0,
		},
		{
			name:  "empty bodies hold nothing",
			total: 100,
			steps: []step{{n: 100, ok: true}, {n: 0, ok: true}, {n: -5, ok: true}},
			inUse: 100,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			b := NewBudget(tc.total, reg)
			releases := make([]func(), len(tc.steps))
			want := map[string]float64{"full": 0, "share": 0}
			for i, s := range tc.steps {
				if s.release > 0 {
					releases[s.release-1]()
					continue
				}
				release, err := b.Acquire(s.n)
				if s.ok {
					require.NoError(t, err, "step %d", i)
					require.NotNil(t, release)
					releases[i] = release
					continue
				}
				require.Error(t, err, "step %d", i)
				require.Nil(t, release)
				require.ErrorIs(t, err, upload.ErrUnavailable)
				require.Equal(t, http.StatusServiceUnavailable, upload.StatusCode(err))
				require.Equal(t, budgetRetryAfter, upload.RetryAfter(err))
				want[s.reason]++
			}
			require.Equal(t, tc.inUse, b.InUse())
			for reason, n := range want {
				require.Equal(t, n, testutil.ToFloat64(b.metricsRejected(reason)), reason)
			}
			require.Equal(t, float64(tc.inUse), gaugeValue(t, reg, "telemeter_server_admission_budget_in_use_bytes"))
		})
	}
}

func (b *Budget) metricsRejected(reason string) prometheus.Counter {
	if reason == "full" {
		return b.metrics.rejectedFull
	}
	return b.metrics.rejectedShare
}

func TestBudgetReleaseTwiceReleasesOnce(t *testing.T) {
	b := NewBudget(100, nil)
	r1, err := b.Acquire(10)
	require.NoError(t, err)
	r2, err := b.Acquire(20)
	require.NoError(t, err)
	r1()
	r1()
	require.Equal(t, int64(20), b.InUse())
	r2()
	require.Equal(t, int64(0), b.InUse())
}

func TestBudgetConcurrent(t *testing.T) {
	const total = 1000
	b := NewBudget(total, nil)
	var over atomic.Bool
	var granted atomic.Int64
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 2000 {
				n := int64(1 + (g*31+i*7)%250) // up to a quarter
				release, err := b.Acquire(n)
				if err != nil {
					continue
				}
				granted.Add(1)
				if b.InUse() > total {
					over.Store(true)
				}
				release()
			}
		})
	}
	wg.Wait()
	require.False(t, over.Load(), "budget exceeded with bodies within their share")
	require.Positive(t, granted.Load())
	require.Equal(t, int64(0), b.InUse())
}

func TestBudgetRefusalDoesNotAllocate(t *testing.T) {
	b := NewBudget(100, nil)
	release, err := b.Acquire(100)
	require.NoError(t, err)
	defer release()
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := b.Acquire(10); err == nil {
			t.Fatal("admitted over budget")
		}
	})
	require.Zero(t, allocs)
}

func TestRequestBytes(t *testing.T) {
	for _, tc := range []struct {
		name   string
		length int64
		want   int64
	}{
		{"declared length", 300, 300},
		{"empty body", 0, 0},
		{"unknown length (chunked)", -1, 1000},
		{"declared beyond the limit", 5000, 1000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/upload", strings.NewReader(""))
			r.ContentLength = tc.length
			require.Equal(t, tc.want, RequestBytes(r, 1000))
		})
	}
}

// gaugeValue returns the value of the unlabelled gauge name in reg.
func gaugeValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == name {
			require.Len(t, mf.GetMetric(), 1)
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}
