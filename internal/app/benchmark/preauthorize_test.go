package benchmark

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
)

// TestRunPreauthorize: with --preauthorize every cluster has its token
// before the first upload, the schedule start is published, and --duration
// counts from it.
func TestRunPreauthorize(t *testing.T) {
	f := newFakeServer(t)
	var firstAuth, lastAuth time.Time
	f.authAnswer = func(n int, _ string) int {
		now := time.Now()
		if firstAuth.IsZero() {
			firstAuth = now
		}
		lastAuth = now
		time.Sleep(20 * time.Millisecond) // authorizations take time
		return 200
	}
	o := f.options(t)
	o.MetricsFile = writeFile(t, "kinds.txt", kindsText)
	o.Workers = 12
	o.Concurrency = 3
	o.Mode = ModeSaturate
	o.Count = 2
	o.Preauthorize = true
	reg := prometheus.NewRegistry()
	o.Registry = reg

	began := time.Now()
	rep, _ := runBounded(t, o, time.Minute)
	auths, uploads, _ := f.snapshot()
	require.Len(t, auths, o.Workers)
	var firstUpload time.Time
	for _, got := range uploads {
		require.Len(t, got, o.Count)
		for _, u := range got {
			if firstUpload.IsZero() || u.at.Before(firstUpload) {
				firstUpload = u.at
			}
		}
	}
	require.True(t, lastAuth.Before(firstUpload), "every authorization (last %s) comes before the first upload (%s)", lastAuth, firstUpload)
	require.Equal(t, int64(o.Workers), rep.Authorizations)
	// 12 authorizations of 20 ms, 3 at a time: at least 80 ms.
	require.GreaterOrEqual(t, rep.PreauthorizeSeconds, 0.07)

	mfs, err := reg.Gather()
	require.NoError(t, err)
	var start float64
	for _, mf := range mfs {
		if mf.GetName() == "telemeter_benchmark_schedule_start_timestamp_seconds" {
			start = mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	require.InDelta(t, float64(firstUpload.UnixNano())/1e9, start, 5, "schedule start near the first upload")
	require.GreaterOrEqual(t, start, float64(began.UnixNano())/1e9)
	require.GreaterOrEqual(t, start, float64(firstAuth.UnixNano())/1e9)
}

// TestRunPreauthorizeDuration: the duration does not include the token
// exchange.
func TestRunPreauthorizeDuration(t *testing.T) {
	f := newFakeServer(t)
	f.authAnswer = func(int, string) int {
		time.Sleep(50 * time.Millisecond)
		return 200
	}
	o := f.options(t)
	o.MetricsFile = writeFile(t, "kinds.txt", kindsText)
	o.Workers = 8
	o.Concurrency = 1 // 8 × 50 ms = 400 ms of authorizations
	o.Mode = ModeInterval
	o.Interval = 10 * time.Millisecond
	o.Duration = 300 * time.Millisecond
	o.Preauthorize = true

	rep, took := runBounded(t, o, time.Minute)
	require.GreaterOrEqual(t, rep.PreauthorizeSeconds, 0.35)
	require.GreaterOrEqual(t, took, 650*time.Millisecond, "the schedule ran its duration after the authorizations")
	require.Positive(t, rep.Accepted)
	require.Equal(t, int64(o.Workers), rep.Authorizations)
}
