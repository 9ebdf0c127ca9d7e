package benchmark

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/telemeter/telemeter/internal/upload"
)

// TestRunCount runs every cluster for --count pushes and checks what the
// server received: one authorization per cluster, the count of uploads,
// the cluster's _id on every series, values that evolve like real series
// between consecutive pushes, and a report that matches.
func TestRunCount(t *testing.T) {
	for _, mode := range []string{ModeSaturate, ModeInterval} {
		t.Run(mode, func(t *testing.T) {
			f := newFakeServer(t)
			o := f.options(t)
			o.MetricsFile = writeFile(t, "kinds.txt", kindsText)
			o.Mode = mode
			o.Interval = 100 * time.Millisecond
			o.Workers = 8
			o.Count = 4
			o.Concurrency = 3
			o.IDPrefix = "bench-"
			reg := prometheus.NewRegistry()
			o.Registry = reg

			rep, _ := runBounded(t, o, 2*time.Minute)
			auths, uploads, answered := f.snapshot()

			var ids []string
			for i := range o.Workers {
				ids = append(ids, fmt.Sprintf("bench-%d", i))
			}
			require.ElementsMatch(t, ids, mapKeys(auths))
			for id, n := range auths {
				require.Equal(t, 1, n, "cluster %s authorized once", id)
			}
			require.ElementsMatch(t, ids, mapKeys(uploads))
			for id, got := range uploads {
				require.Len(t, got, o.Count, "uploads of %s", id)
				for _, u := range got {
					for _, mf := range u.families {
						for _, m := range mf.Metric {
							v, ok := labelValue(m, upload.IDLabel)
							require.True(t, ok, "%s of %s has no _id", mf.GetName(), id)
							require.Equal(t, id, v)
							require.InDelta(t, u.at.UnixMilli(), m.GetTimestampMs(), 5000, "timestamps are the push's time")
						}
					}
				}
				for i := 1; i < len(got); i++ {
					requireEvolved(t, got[i-1].families, got[i].families)
				}
			}

			total := int64(o.Workers * o.Count)
			require.Equal(t, map[string]int64{"200": total}, answered)
			require.Equal(t, mode, rep.Mode)
			require.Equal(t, o.Workers, rep.Clusters)
			require.Equal(t, 12, rep.SeriesPerPush)
			require.Equal(t, kindsSamples, rep.SamplesPerPush)
			require.Equal(t, total, rep.Uploads)
			require.Equal(t, total, rep.Accepted)
			require.Zero(t, rep.NonSuccess)
			require.Zero(t, rep.TransportErrors)
			require.Equal(t, map[string]int64{"200": total}, rep.Status)
			require.Equal(t, total*kindsSamples, rep.Samples)
			require.Equal(t, int64(o.Workers), rep.Authorizations)
			require.Equal(t, map[string]int64{"200": int64(o.Workers)}, rep.AuthorizeStatus)
			require.Equal(t, total, rep.Latency.Count)
			require.Positive(t, rep.Latency.P50)
			require.LessOrEqual(t, rep.Latency.P50, rep.Latency.P99)
			require.LessOrEqual(t, rep.Latency.P99, rep.Latency.Max)
			require.Positive(t, rep.BytesSent)
			require.Positive(t, rep.UploadsPerSecond)

			require.Equal(t, float64(total), counterValue(t, reg, "telemeter_benchmark_uploads_total", "200"))
			require.Equal(t, float64(total*kindsSamples), counterValue(t, reg, "telemeter_benchmark_samples_accepted_total", ""))
		})
	}
}

// requireEvolved compares two consecutive uploads of one cluster: the same
// series, counters and histogram buckets never lower, counters higher
// somewhere, and newer timestamps.
func requireEvolved(t *testing.T, before, after []*dto.MetricFamily) {
	t.Helper()
	type sample struct {
		mf *dto.MetricFamily
		m  *dto.Metric
	}
	index := func(families []*dto.MetricFamily) map[string]sample {
		out := map[string]sample{}
		for _, mf := range families {
			for _, m := range mf.Metric {
				out[seriesKey(mf, m)] = sample{mf, m}
			}
		}
		return out
	}
	prev, next := index(before), index(after)
	require.ElementsMatch(t, mapKeys(prev), mapKeys(next), "the same series in every push")
	increased := 0
	for key, p := range prev {
		n := next[key]
		require.GreaterOrEqual(t, n.m.GetTimestampMs(), p.m.GetTimestampMs(), key)
		pv, nv := sampleValues(p.mf, p.m), sampleValues(n.mf, n.m)
		switch p.mf.GetType() {
		case dto.MetricType_COUNTER:
			require.GreaterOrEqual(t, nv[0], pv[0], "counter %s went down", key)
			if nv[0] > pv[0] {
				increased++
			}
		case dto.MetricType_HISTOGRAM:
			for i := range pv {
				require.GreaterOrEqual(t, nv[i], pv[i], "histogram %s went down", key)
			}
		case dto.MetricType_SUMMARY:
			require.GreaterOrEqual(t, nv[0], pv[0], "summary count %s went down", key)
		}
	}
	require.Positive(t, increased, "no counter increased between two pushes")
}

func mapKeys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// counterValue returns the counter name (with label code, if not empty)
// gathered from reg.
func counterValue(t *testing.T, reg *prometheus.Registry, name, code string) float64 {
	t.Helper()
	families, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range families {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.Metric {
			if v, _ := labelValue(m, "code"); v == code {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no counter %s{code=%q}", name, code)
	return 0
}

// TestRunStopsAtDuration: without --count, --duration ends the run.
func TestRunStopsAtDuration(t *testing.T) {
	for _, mode := range []string{ModeInterval, ModeSaturate} {
		t.Run(mode, func(t *testing.T) {
			f := newFakeServer(t)
			o := f.options(t) // the T232 template
			o.Mode = mode
			o.Interval = 100 * time.Millisecond
			o.Workers = 5
			o.Concurrency = 2
			o.Duration = 600 * time.Millisecond

			rep, took := runBounded(t, o, 2*time.Minute)
			require.GreaterOrEqual(t, took, o.Duration)
			require.GreaterOrEqual(t, rep.WallSeconds, o.Duration.Seconds())
			require.Positive(t, rep.Accepted)
			require.Equal(t, 232, rep.SeriesPerPush)
			require.Equal(t, rep.Accepted*232, rep.Samples)

			_, uploads, _ := f.snapshot()
			for id, got := range uploads {
				for _, u := range got {
					series := 0
					for _, mf := range u.families {
						series += len(mf.Metric)
					}
					require.Equal(t, 232, series, "upload of %s", id)
				}
			}
			if mode == ModeInterval {
				for id, got := range uploads {
					// 600 ms at one push per 100 ms (±5 %), the first within
					// the first 100 ms: at most 7 are due, however late.
					require.LessOrEqual(t, len(got), 7, "pushes of %s", id)
				}
			}
		})
	}
}

// TestRunCountsStatuses: the report counts every answer by status code,
// exactly as the server gave them, and counts authorizations apart.
func TestRunCountsStatuses(t *testing.T) {
	f := newFakeServer(t)
	f.answer = func(n int, _ string) int {
		switch {
		case n%3 == 0:
			return http.StatusTooManyRequests
		case n%5 == 0:
			return http.StatusServiceUnavailable
		case n == 7:
			return http.StatusBadRequest
		}
		return http.StatusOK
	}
	f.authAnswer = func(n int, id string) int {
		if id == "c-1" && n == 1 {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	}
	o := f.options(t)
	o.MetricsFile = writeFile(t, "kinds.txt", kindsText)
	o.Mode = ModeSaturate
	o.Workers = 4
	o.Count = 10
	o.Concurrency = 4
	o.IDPrefix = "c-"

	rep, _ := runBounded(t, o, 2*time.Minute)
	_, uploads, answered := f.snapshot()

	require.Equal(t, answered, rep.Status)
	// c-1 lost its first push to the refused authorization.
	require.Len(t, uploads["c-1"], 9)
	require.Len(t, uploads["c-0"], 10)
	// Per cluster, uploads 3, 6, 9 get a 429, 5 and 10 a 503, 7 a 400.
	want := map[string]int64{"200": 4 * 4, "429": 3 * 4, "503": 2*3 + 1, "400": 4}
	require.Equal(t, want, rep.Status)
	require.Equal(t, int64(39), rep.Uploads)
	require.Equal(t, want["200"], rep.Accepted)
	require.Equal(t, want["429"]+want["503"]+want["400"], rep.NonSuccess)
	require.Equal(t, want["200"]*kindsSamples, rep.Samples)
	require.Equal(t, map[string]int64{"200": 4, "503": 1}, rep.AuthorizeStatus)
	require.Equal(t, int64(5), rep.Authorizations)
	require.Equal(t, int64(39), rep.Latency.Count)
}

// TestRunReauthorizesOn401: a 401 drops the cached token; the cluster
// authorizes again and sends the same body once more.
func TestRunReauthorizesOn401(t *testing.T) {
	f := newFakeServer(t)
	o := f.options(t)
	o.MetricsFile = writeFile(t, "kinds.txt", kindsText)
	o.Mode = ModeSaturate
	o.Workers = 3
	o.Count = 3
	f.mu.Lock()
	// Revoke every token after the second upload of its cluster.
	f.answer = func(n int, id string) int {
		if n == 2 {
			f.issued[id] = "revoked"
		}
		return http.StatusOK
	}
	f.mu.Unlock()

	rep, _ := runBounded(t, o, 2*time.Minute)
	auths, uploads, answered := f.snapshot()
	for id, n := range auths {
		require.Equal(t, 2, n, "cluster %s authorized again after its 401", id)
		got := uploads[id]
		require.Len(t, got, 4)
		require.Equal(t, []int{200, 200, 401, 200}, []int{got[0].status, got[1].status, got[2].status, got[3].status})
	}
	require.Equal(t, map[string]int64{"200": 9, "401": 3}, answered)
	require.Equal(t, answered, rep.Status)
	require.Equal(t, int64(3), rep.Reauthorizations)
	require.Equal(t, int64(6), rep.Authorizations)
}

// TestRunTransportErrors: an upload endpoint that refuses connections is
// counted as errors, and the run still stops at its count.
func TestRunTransportErrors(t *testing.T) {
	f := newFakeServer(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closed := l.Addr().String()
	require.NoError(t, l.Close())

	o := f.options(t)
	o.ToUpload = "http://" + closed + "/upload"
	o.Mode = ModeSaturate
	o.Workers = 2
	o.Count = 3

	rep, _ := runBounded(t, o, 2*time.Minute)
	require.Equal(t, map[string]int64{outcomeError: 6}, rep.Status)
	require.Equal(t, int64(6), rep.TransportErrors)
	require.Equal(t, int64(6), rep.Uploads)
	require.Zero(t, rep.Accepted)
	require.Zero(t, rep.Latency.Count, "no answer, no latency")
	require.Equal(t, int64(2), rep.Authorizations)
}

// TestRunSpreadsFirstPushes: in interval mode no cluster's first push
// reaches the server before its place in the first interval, and those
// places spread over the interval (TestFirstPushesSpread). Arrival times
// themselves are not binned: on a loaded machine, with -race, they bunch up
// behind pauses of the whole process.
func TestRunSpreadsFirstPushes(t *testing.T) {
	f := newFakeServer(t)
	o := f.options(t)
	o.MetricsFile = writeFile(t, "kinds.txt", kindsText)
	o.Workers = 40
	o.Count = 1
	o.Interval = 2 * time.Second

	began := time.Now()
	rep, _ := runBounded(t, o, 2*time.Minute)
	require.Equal(t, int64(40), rep.Accepted, "%+v", rep)

	_, uploads, _ := f.snapshot()
	late := 0
	for i := range o.Workers {
		got := uploads[fmt.Sprintf("benchmark-%02d", i)]
		require.Len(t, got, 1)
		// The cluster's random source is seeded with (seed, index).
		due := firstPush(began, o.Interval, rand.New(rand.NewPCG(o.Seed, uint64(i))))
		require.False(t, got[0].at.Before(due), "cluster %d pushed %s before its time", i, due.Sub(got[0].at))
		if due.Sub(began) > o.Interval/2 {
			late++
		}
	}
	require.Greater(t, late, 10, "the places of the first pushes spread over the interval")
}

// TestScheduleSpreads runs the scheduler alone, with a pusher that only
// notes when it got each cluster: no first push goes out before its time,
// and the times cover the interval, each tenth holding at most twice its
// share.
func TestScheduleSpreads(t *testing.T) {
	o := DefaultOptions()
	o.Interval = time.Second
	o.Count = 1
	tmpl, err := parseTemplate([]byte("a 1\n"), 1)
	require.NoError(t, err)
	b := &bench{o: &o, tmpl: tmpl, now: time.Now, metrics: newMetrics(prometheus.NewRegistry()), stats: newStats()}
	for i := range 60 {
		b.clusters = append(b.clusters, newCluster(fmt.Sprint(i), tmpl, rand.New(rand.NewPCG(11, uint64(i)))))
	}
	ready := make(chan *cluster)
	returned := make(chan *cluster, len(b.clusters))
	var got []time.Duration
	start := time.Now()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for c := range ready {
			got = append(got, time.Since(start))
			c.pushes++
			returned <- c
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b.schedule(ctx, start, ready, returned)
	<-done
	require.NoError(t, ctx.Err(), "the scheduler did not finish by itself")
	require.Len(t, got, 60)
	var want []time.Duration
	for _, c := range b.clusters {
		// The seed is the cluster's: the same draw gives the same time.
		want = append(want, firstPush(start, o.Interval, rand.New(rand.NewPCG(11, uint64(slices.Index(b.clusters, c))))).Sub(start))
	}
	slices.Sort(want)
	for i := range got {
		require.GreaterOrEqual(t, got[i], want[i], "push %d went out before its time", i)
	}
	require.Greater(t, got[59]-got[0], o.Interval/2, "first pushes spread over the interval")
	bins := make([]int, 10)
	for _, d := range want {
		bins[int(d*10/o.Interval)]++
	}
	for i, n := range bins {
		require.LessOrEqual(t, n, 12, "tenth %d holds %d of 60: %v", i, n, bins)
	}
}

// TestFirstPushesSpread checks the schedule itself: 1,000 clusters'
// first pushes fill the first interval evenly (peak at most twice the mean
// per tenth), and later pushes keep within the jitter.
func TestFirstPushesSpread(t *testing.T) {
	start := time.Unix(1_750_000_000, 0)
	interval := 270 * time.Second
	bins := make([]int, 10)
	for i := range 1000 {
		r := rand.New(rand.NewPCG(99, uint64(i)))
		first := firstPush(start, interval, r)
		d := first.Sub(start)
		require.GreaterOrEqual(t, d, time.Duration(0))
		require.Less(t, d, interval)
		bins[int(d*10/interval)]++
		next := nextPush(first, interval, r)
		require.InDelta(t, float64(interval), float64(next.Sub(first)), float64(interval)*jitter)
	}
	for i, n := range bins {
		require.LessOrEqual(t, n, 2*100, "tenth %d holds %d first pushes: %v", i, n, bins)
		require.GreaterOrEqual(t, n, 50, "tenth %d holds %d first pushes: %v", i, n, bins)
	}
}

// TestRunStopsOnCancel: without count or duration the run goes on until
// its context ends, then reports.
func TestRunStopsOnCancel(t *testing.T) {
	f := newFakeServer(t)
	enough := make(chan struct{})
	f.answer = func(n int, id string) int {
		if id == "benchmark-0" && n == 5 {
			close(enough)
		}
		return http.StatusOK
	}
	o := f.options(t)
	o.MetricsFile = writeFile(t, "kinds.txt", kindsText)
	o.Mode = ModeSaturate
	o.Workers = 2
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type result struct {
		rep Report
		err error
	}
	done := make(chan result, 1)
	go func() {
		rep, err := Run(ctx, o)
		done <- result{rep, err}
	}()
	select {
	case <-enough:
	case <-time.After(30 * time.Second):
		t.Fatal("five uploads did not arrive")
	}
	cancel()
	select {
	case r := <-done:
		require.NoError(t, r.err)
		require.GreaterOrEqual(t, r.rep.Accepted, int64(5))
		_, uploads, _ := f.snapshot()
		require.Equal(t, int64(len(uploads["benchmark-0"])+len(uploads["benchmark-1"])), r.rep.Uploads+r.rep.Canceled)
	case <-time.After(drainTimeout + 10*time.Second):
		t.Fatal("Run did not stop after its context ended")
	}
}

// TestRunServesMetrics: --listen serves the benchmark's metrics while it runs.
func TestRunServesMetrics(t *testing.T) {
	f := newFakeServer(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	o := f.options(t)
	o.MetricsFile = writeFile(t, "kinds.txt", kindsText)
	o.Listener = l
	o.Workers = 2
	o.Interval = 50 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := Run(ctx, o)
		done <- err
	}()

	var body string
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + l.Addr().String() + "/metrics")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			body = string(b)
			if strings.Contains(body, `telemeter_benchmark_uploads_total{code="200"}`) {
				break
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	require.Contains(t, body, "telemeter_benchmark_clusters 2")
	require.Contains(t, body, `telemeter_benchmark_uploads_total{code="200"}`)
	require.Contains(t, body, "telemeter_benchmark_upload_duration_seconds_bucket")
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not stop after its context ended")
	}
}

func TestOptionsValidate(t *testing.T) {
	valid := func() Options {
		o := DefaultOptions()
		o.To = "http://127.0.0.1:9003"
		o.ToToken = "t"
		return o
	}
	for _, tc := range []struct {
		name   string
		change func(o *Options)
		err    string
	}{
		{name: "defaults with a server and a token", change: func(*Options) {}},
		{name: "auth and upload instead of to", change: func(o *Options) {
			o.To, o.ToAuthorize, o.ToUpload = "", "https://a.example/authorize", "https://a.example/upload"
		}},
		{name: "no server", change: func(o *Options) { o.To = "" }, err: "--to is required"},
		{name: "not a URL", change: func(o *Options) { o.To = "127.0.0.1:9003" }, err: "--to-auth"},
		{name: "no token", change: func(o *Options) { o.ToToken = "" }, err: "--to-token or --to-token-file"},
		{name: "two tokens", change: func(o *Options) { o.ToTokenFile = "/x" }, err: "set only one"},
		{name: "no workers", change: func(o *Options) { o.Workers = 0 }, err: "--workers"},
		{name: "no concurrency", change: func(o *Options) { o.Concurrency = 0 }, err: "--concurrency"},
		{name: "multiplier zero", change: func(o *Options) { o.SeriesMultiplier = 0 }, err: "--series-multiplier"},
		{name: "negative count", change: func(o *Options) { o.Count = -1 }, err: "--count"},
		{name: "negative duration", change: func(o *Options) { o.Duration = -time.Second }, err: "--duration"},
		{name: "no interval", change: func(o *Options) { o.Interval = 0 }, err: "--interval"},
		{name: "saturate ignores the interval", change: func(o *Options) { o.Interval, o.Mode = 0, ModeSaturate }},
		{name: "unknown mode", change: func(o *Options) { o.Mode = "burst" }, err: "--mode"},
		{name: "unknown report", change: func(o *Options) { o.Report = "yaml" }, err: "--report"},
		{name: "unknown log level", change: func(o *Options) { o.LogLevel = "loud" }, err: "--log-level"},
		{name: "no request timeout", change: func(o *Options) { o.RequestTimeout = 0 }, err: "--request-timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := valid()
			tc.change(&o)
			err := o.Validate()
			if tc.err == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tc.err)
		})
	}
}

func TestRunRefusesBadInputs(t *testing.T) {
	f := newFakeServer(t)
	for _, tc := range []struct {
		name   string
		change func(t *testing.T, o *Options)
		err    string
	}{
		{name: "missing metrics file", change: func(t *testing.T, o *Options) { o.MetricsFile = "/nonexistent/metrics.txt" }, err: "--metrics-file"},
		{name: "metrics file not in the text format", change: func(t *testing.T, o *Options) {
			o.MetricsFile = writeFile(t, "bad.txt", "a{ 1\n")
		}, err: "--metrics-file"},
		{name: "empty token file", change: func(t *testing.T, o *Options) {
			o.ToToken, o.ToTokenFile = "", writeFile(t, "token", "\n")
		}, err: "--to-token-file"},
		{name: "CA file without a certificate", change: func(t *testing.T, o *Options) {
			o.ToCAFile = writeFile(t, "ca.pem", "not a certificate")
		}, err: "--to-ca-file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := f.options(t)
			o.Count = 1
			tc.change(t, &o)
			_, err := Run(context.Background(), o)
			require.ErrorContains(t, err, tc.err)
		})
	}
}

func TestReportFormats(t *testing.T) {
	rep := Report{
		Mode: ModeInterval, Clusters: 5000, SeriesPerPush: 232, SamplesPerPush: 232, WallSeconds: 900,
		Uploads: 16000, Accepted: 15990, NonSuccess: 7, TransportErrors: 3,
		Status:          map[string]int64{"200": 15990, "429": 4, "503": 3, "error": 3},
		AuthorizeStatus: map[string]int64{"200": 5000},
		Latency:         Latency{Count: 15997, P50: 0.0021, P90: 0.004, P99: 0.0123, Max: 0.2},
	}
	var buf bytes.Buffer
	require.NoError(t, rep.WriteJSON(&buf))
	require.Equal(t, 1, strings.Count(buf.String(), "\n"), "one line")
	var back map[string]any
	require.NoError(t, json.Unmarshal(buf.Bytes(), &back))
	for _, key := range []string{"uploads_per_second", "samples_per_second", "latency_seconds", "status", "non_2xx", "wall_seconds", "authorize_status"} {
		require.Contains(t, back, key)
	}
	require.InDelta(t, 0.0123, back["latency_seconds"].(map[string]any)["p99"], 1e-9)
	require.InDelta(t, 7, back["non_2xx"], 0)

	buf.Reset()
	require.NoError(t, rep.WriteText(&buf))
	require.Contains(t, buf.String(), "200=15990 429=4 503=3 error=3")
	require.Contains(t, buf.String(), "p99 12.30ms")
	require.False(t, math.IsNaN(rep.UploadsPerSecond))
}
