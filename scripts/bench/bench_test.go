package main

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []float64
		want float64
	}{
		{name: "odd", in: []float64{3, 1, 2}, want: 2},
		{name: "even", in: []float64{4, 1, 3, 2}, want: 2.5},
		{name: "one", in: []float64{7}, want: 7},
		{name: "NaN left out", in: []float64{math.NaN(), 5, 1}, want: 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, median(tc.in))
		})
	}
	require.True(t, math.IsNaN(median(nil)))
	require.True(t, math.IsNaN(median([]float64{math.NaN()})))
}

const benchOutput = `goos: linux
goarch: amd64
pkg: github.com/telemeter/telemeter/internal/ring
cpu: AMD EPYC
BenchmarkOwner/members=3-2         	 1000000	      1100 ns/op	       0 B/op	       0 allocs/op
BenchmarkOwner/members=3-2         	 1000000	      1300 ns/op	       0 B/op	       0 allocs/op
BenchmarkOwner/members=3-2         	 1000000	      1200 ns/op	       0 B/op	       0 allocs/op
PASS
ok  	github.com/telemeter/telemeter/internal/ring	3.1s
pkg: github.com/telemeter/telemeter/internal/app/client
BenchmarkCycle10k-2   	      10	 107710000 ns/op	  127.0 cpu-ms/op	  40.26 peak-rss-MiB	14403872 B/op	  367848 allocs/op
BenchmarkCycle10k-2   	      10	 100000000 ns/op	  120.0 cpu-ms/op	  42.00 peak-rss-MiB	14403872 B/op	  367848 allocs/op
BenchmarkBroken-2   	 notanumber
--- FAIL: something
`

func TestParseAndSummarizeBench(t *testing.T) {
	res := parseBenchOutput(strings.NewReader(benchOutput))
	require.Len(t, res, 5)
	require.Equal(t, "github.com/telemeter/telemeter/internal/ring", res[0].pkg)
	require.Equal(t, "BenchmarkOwner/members=3", res[0].name, "the GOMAXPROCS suffix goes")
	require.Equal(t, 1100.0, res[0].metrics["ns/op"])

	sums := summarize(res)
	require.Len(t, sums, 2)
	require.Equal(t, 3, sums[0].runs)
	require.Equal(t, 1200.0, sums[0].medians["ns/op"])
	require.Equal(t, []string{"ns/op", "B/op", "allocs/op"}, sums[0].units)
	c := sums[1]
	require.Equal(t, "github.com/telemeter/telemeter/internal/app/client", c.pkg)
	require.Equal(t, 2, c.runs)
	require.Equal(t, 123.5, c.medians["cpu-ms/op"])
	require.InDelta(t, 41.13, c.medians["peak-rss-MiB"], 1e-9)
	require.Equal(t, []string{"ns/op", "B/op", "allocs/op", "cpu-ms/op", "peak-rss-MiB"}, c.units)

	table := benchTable(sums)
	require.Contains(t, table, "| internal/ring | Owner/members=3 | 3 | 1.20 µs | 0 | 0 |  |")
	require.Contains(t, table, "124 cpu-ms/op, 41.13 peak-rss-MiB")
	require.Equal(t, "14,416,540", num(14416539.5))
	require.Equal(t, "0.25", num(0.25))
}

func TestParseStatCPU(t *testing.T) {
	// A command name with spaces and parentheses, utime 250 and stime 50
	// ticks (fields 14 and 15).
	line := "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 12 0 500 1000000 300 18446744073709551615\n"
	got, err := parseStatCPU(line)
	require.NoError(t, err)
	require.InDelta(t, 300/clockTicks, got, 1e-9)

	for _, bad := range []string{"", "1234 no parenthesis", "1 (x) S 1 2"} {
		_, err := parseStatCPU(bad)
		require.Error(t, err, "%q", bad)
	}
}

func TestParseMemStatus(t *testing.T) {
	status := "Name:\tserver\nVmPeak:\t 999 kB\nVmHWM:\t    2048 kB\nVmRSS:\t    1024 kB\nThreads:\t9\n"
	rss, hwm, err := parseMemStatus([]byte(status))
	require.NoError(t, err)
	require.Equal(t, int64(1024<<10), rss)
	require.Equal(t, int64(2048<<10), hwm)

	_, _, err = parseMemStatus([]byte("Name:\tx\nVmRSS:\t 1 kB\n"))
	require.Error(t, err, "no VmHWM")
	_, _, err = parseMemStatus([]byte("VmRSS:\t 1 MB\nVmHWM:\t 1 kB\n"))
	require.Error(t, err, "unexpected unit")
}

func TestMetricValue(t *testing.T) {
	body := []byte(`# HELP go_memstats_heap_inuse_bytes Heap in use.
# TYPE go_memstats_heap_inuse_bytes gauge
go_memstats_heap_inuse_bytes 1.2345e+07
go_memstats_heap_inuse_bytes_extra 1
telemeter_server_http_requests_in_flight{handler="federate"} 0
telemeter_server_http_requests_in_flight{handler="upload"} 3
`)
	for _, tc := range []struct {
		series string
		want   float64
		ok     bool
	}{
		{"go_memstats_heap_inuse_bytes", 1.2345e7, true},
		{`telemeter_server_http_requests_in_flight{handler="upload"}`, 3, true},
		{`telemeter_server_http_requests_in_flight{handler="authorize"}`, 0, false},
		{"go_memstats_heap", 0, false},
	} {
		t.Run(tc.series, func(t *testing.T) {
			v, ok := metricValue(body, tc.series)
			require.Equal(t, tc.ok, ok)
			require.Equal(t, tc.want, v)
		})
	}
}

func TestLineCounter(t *testing.T) {
	lc := &lineCounter{last: '\n'}
	// Written in pieces that split lines and a comment's '#'.
	for _, part := range []string{"# TYPE a gauge\na{x=\"", "#\"} 1\n", "a 2\n#", " HELP b\nb 3\n"} {
		_, err := lc.Write([]byte(part))
		require.NoError(t, err)
	}
	require.Equal(t, int64(5), lc.lines)
	require.Equal(t, int64(2), lc.comments)
	require.Equal(t, int64(len("# TYPE a gauge\na{x=\"#\"} 1\na 2\n# HELP b\nb 3\n")), lc.bytes)
}

func TestFormats(t *testing.T) {
	require.Equal(t, "232,000", thousands(232000))
	require.Equal(t, "1,000", thousands(1000))
	require.Equal(t, "999", thousands(999))
	require.Equal(t, "-1,234,567", thousands(-1234567))
	require.Equal(t, "312 k", si(312_400))
	require.Equal(t, "1.25 M", si(1_250_000))
	require.Equal(t, "2.5 k", si(2_500))
	require.Equal(t, "–", si(math.NaN()))
	require.Equal(t, "4.20 ms", ms(0.0042))
	require.Equal(t, "42.0 ms", ms(0.042))
	require.Equal(t, "1.20 µs", duration(1200))
	require.True(t, loaded("14.37 19.17 21.16", 2))
	require.False(t, loaded("1.50 3.00 4.00", 2))
	require.Equal(t, "pass", verdict(1, true))
	require.Equal(t, "miss", verdict(1, false))
	require.Equal(t, "not measured", verdict(math.NaN(), true))
}

func TestRenderListsEveryFigure(t *testing.T) {
	h := &harness{sz: sizes["smoke"], sections: map[string]string{"W4": "the W4 table\n"}}
	h.add(figure{id: "W4", workload: "200 clusters", name: "disk per series", target: "≤ 100 B", measured: "83 B", value: 83, verdict: "pass"})
	h.add(figure{id: "W2", workload: "same rounds", name: "ratio", target: "≈ 3×", measured: "0.59×", value: 0.59, verdict: "miss"})
	h.add(figure{id: "W5", workload: "peer", name: "Pushgateway /metrics", target: "(peers)", measured: "1 s", value: 1})
	h.failures = []string{"w7: the 3 nodes did not form one ring\nlog tail"}
	doc := h.render(machine{nproc: 2, loadStart: "9.0 8.0 7.0", loadEnd: "1.0 1.0 1.0"}, "make bench-smoke")
	for _, want := range []string{
		"| W4 | 200 clusters | disk per series | ≤ 100 B | 83 B | **pass** |",
		"| W2 | same rounds | ratio | ≈ 3× | 0.59× | **miss** |",
		"| W5 | peer | Pushgateway /metrics | (peers) | 1 s | peer |",
		"## W4 — stored clusters: memory, disk, restart\n\nthe W4 table",
		"**The machine was loaded**",
		"- w7: the 3 nodes did not form one ring\n",
		"```sh\nmake bench-smoke\n```",
	} {
		require.Contains(t, doc, want)
	}
	require.NotContains(t, doc, "log tail")
}

// TestKeptNotes: a new run keeps the hand-written notes at the end of the
// document it replaces, and only them.
func TestKeptNotes(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.md")
	require.Empty(t, keptNotes(missing))

	plain := filepath.Join(dir, "plain.md")
	require.NoError(t, os.WriteFile(plain, []byte("# Benchmarks\n\nold figures\n"), 0o600))
	require.Empty(t, keptNotes(plain))

	noted := filepath.Join(dir, "noted.md")
	require.NoError(t, os.WriteFile(noted, []byte("# Benchmarks\n\nold figures\n\n"+notesMarker+"\n\n## Notes\n\nwhy W2 misses\n"), 0o600))
	got := keptNotes(noted)
	require.Equal(t, "\n"+notesMarker+"\n\n## Notes\n\nwhy W2 misses\n", got)
	require.NotContains(t, got, "old figures")
}
