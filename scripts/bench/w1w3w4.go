package main

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/telemeter/telemeter/internal/app/benchmark"
)

// w1 runs the fleet workload at the fleet's upload rate: N clusters push
// every N × 4m30s / 5,000, so the server sees 5,000 clusters' worth of
// uploads per 4m30s whatever N is.
func (h *harness) w1(ctx context.Context) error {
	n := h.sz.w1Clusters
	interval := time.Duration(float64(w1FleetInterval) * float64(n) / w1FleetClusters).Round(time.Millisecond)
	// Per-cluster rate limit at half the push interval: it lets the ±5 %
	// jitter and scheduling delays through and still refuses duplicates.
	ratelimit := (interval / 2).Round(time.Millisecond)
	srv, err := h.startServer(ctx, serverSpec{name: "w1", extra: []string{"--ratelimit", ratelimit.String()}})
	if err != nil {
		return err
	}
	r, err := h.runTimed(ctx, load{
		name: "w1", target: benchmark.TargetTelemeter, to: srv.api, clusters: n, idPrefix: "fleet-",
		mode: benchmark.ModeInterval, interval: interval, concurrency: 64, duration: h.sz.w1Duration, seed: 7,
	}, srv.p.pid())
	if err != nil {
		return err
	}
	if err := requireAccepted("W1", r.rep); err != nil {
		return err
	}
	share := r.cpu[0] / r.seconds
	bad := float64(r.rep.NonSuccess + r.rep.TransportErrors)
	wl := fmt.Sprintf("%s clusters × T232 every %s (= 5,000 per 4m30s), %s", thousands(n), interval, h.sz.w1Duration)
	h.add(figure{id: "W1", workload: wl, name: "server CPU share of one core", target: "< 5 %",
		measured: fmt.Sprintf("%.2f %%", share*100), value: share, verdict: verdict(share, share < 0.05)})
	h.add(figure{id: "W1", workload: wl, name: "non-2xx and failed uploads", target: "0",
		measured: strconv.Itoa(int(bad)), value: bad, verdict: verdict(bad, bad == 0)})

	var sb strings.Builder
	fmt.Fprintf(&sb, "%s clusters × T232 push every %s (`--mode interval`, ±5 %% jitter, first pushes spread over the first "+
		"interval: a fleet in its steady state) for %s, so the server sees the upload rate of 5,000 clusters every 4m30s "+
		"(%.1f uploads/s). Server flags: single node, `--ratelimit %s` (half the push interval). Tokens are fetched before the "+
		"schedule starts (`--preauthorize`): a real fleet exchanges them once a day. CPU share: the server's utime+stime over the "+
		"schedule divided by its wall time. One run.\n\n", thousands(n), interval, h.sz.w1Duration,
		float64(w1FleetClusters)/w1FleetInterval.Seconds(), ratelimit)
	sb.WriteString("| uploads | uploads/s | CPU share | p50 | p99 | max schedule lag | status |\n|---|---|---|---|---|---|---|\n")
	fmt.Fprintf(&sb, "| %d | %.1f | %.2f %% | %s | %s | %s | %s |\n", r.rep.Uploads, r.rep.UploadsPerSecond, share*100,
		ms(r.rep.Latency.P50), ms(r.rep.Latency.P99), ms(r.rep.ScheduleLagMaxSeconds), statusCell(r.rep.Status))
	h.sections["W1"] = sb.String()
	return nil
}

// w3 measures the server's heap while it takes uploads of 10,000 series.
func (h *harness) w3(ctx context.Context) error {
	srv, err := h.startServer(ctx, serverSpec{name: "w3", extra: []string{
		"--ratelimit", "1ms",
		"--limit-bytes", strconv.Itoa(16 << 20),
		"--limit-decoded-bytes", strconv.Itoa(256 << 20),
		"--limit-series", "200000",
		"--limit-series-per-cluster", "100000",
	}})
	if err != nil {
		return err
	}
	base := load{
		name: "w3", target: benchmark.TargetTelemeter, to: srv.api, clusters: h.sz.w3Clusters, idPrefix: "big-",
		mode: benchmark.ModeSaturate, multiplier: w3Multiplier,
	}
	// Warm up: every cluster stored once, so the measured runs see the
	// server in its steady state (index, rate limiter, connections).
	warm := base
	warm.concurrency, warm.count = w2Concurrency, 1
	rep, err := h.runLoad(ctx, warm)
	if err != nil {
		return err
	}
	if rep.Accepted != rep.Uploads || rep.Accepted == 0 {
		return fmt.Errorf("W3 warm-up: %d of %d uploads accepted (status %v): do the limits admit 10,000 series?", rep.Accepted, rep.Uploads, rep.Status)
	}

	const (
		heap     = "go_memstats_heap_inuse_bytes"
		inflight = `telemeter_server_http_requests_in_flight{handler="upload"}`
	)
	var sb strings.Builder
	fmt.Fprintf(&sb, "%s clusters × T232 × %d (`--series-multiplier %d`: %s series per upload) pushed back to back, each "+
		"cluster %d time(s), one run with 1 and one with %d pushers, after a warm-up round that stored every cluster once. Server limits "+
		"raised to admit the bodies (`--limit-bytes 16MiB --limit-decoded-bytes 256MiB --limit-series 200000 "+
		"--limit-series-per-cluster 100000`).\n\nMethod: the harness reads `%s` and `%s` from the server's /metrics every 10 ms; "+
		"the baseline is the median over %s of the same sampling with no load, right after two garbage collections (`/debug/pprof/heap?gc=1`; a `sync.Pool` keeps its buffers through one), so it is the live heap; the figure is (peak during the run − baseline) "+
		"/ uploads in flight at that sample (at least 1), against the mean compressed body (`bytes_sent / uploads`). The heap "+
		"in use includes garbage not yet collected (GOGC=100), so this is the peak a server must have room for, not the live "+
		"size of one upload. The scrapes themselves allocate a little, in the baseline and in the run alike.\n\n",
		thousands(h.sz.w3Clusters), w3Multiplier, w3Multiplier, thousands(w3Multiplier*t232Series), h.sz.w3Count, w2Concurrency,
		heap, inflight, h.sz.w3Idle)
	sb.WriteString("| pushers | uploads | body | baseline heap | peak heap | in flight at peak | heap per in-flight upload | ÷ body |\n|---|---|---|---|---|---|---|---|\n")
	for _, conc := range []int{1, w2Concurrency} {
		// Collect the garbage of earlier uploads (the heap profile's gc=1
		// runs the collector) so the baseline is the live heap. Twice: the
		// buffers a sync.Pool holds survive one collection.
		for range 2 {
			if _, err := getBody(ctx, srv.internal+"/debug/pprof/heap?gc=1"); err != nil {
				return fmt.Errorf("W3: force a GC: %w", err)
			}
		}
		var idle []float64
		for end := time.Now().Add(h.sz.w3Idle); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
			v, err := srv.metric(ctx, heap)
			if err != nil {
				return err
			}
			idle = append(idle, v[0])
		}
		baseline := median(idle)
		l := base
		l.concurrency, l.count, l.seed = conc, h.sz.w3Count, uint64(conc)
		run, err := h.startLoad(l)
		if err != nil {
			return err
		}
		peak, atPeak := 0.0, 0.0
		for deadline := time.Now().Add(run.limit); !run.p.exited() && time.Now().Before(deadline); {
			v, err := srv.metric(ctx, heap, inflight)
			if err == nil && v[0] > peak {
				peak, atPeak = v[0], v[1]
			}
			time.Sleep(10 * time.Millisecond)
		}
		rep, err := run.wait(ctx)
		if err != nil {
			return err
		}
		if rep.Accepted != rep.Uploads || rep.Accepted == 0 {
			return fmt.Errorf("W3: %d of %d uploads accepted (status %v)", rep.Accepted, rep.Uploads, rep.Status)
		}
		body := float64(rep.BytesSent) / float64(rep.Uploads)
		per := (peak - baseline) / math.Max(1, atPeak)
		ratio := per / body
		fmt.Fprintf(&sb, "| %d | %d | %s | %s | %s | %.0f | %s | %.1f× |\n", conc, rep.Uploads, kib(body), mib(baseline), mib(peak),
			atPeak, mib(per), ratio)
		h.add(figure{id: "W3", workload: fmt.Sprintf("%s clusters × %s series, %d pusher(s)", thousands(h.sz.w3Clusters),
			thousands(w3Multiplier*t232Series), conc), name: "peak heap per in-flight upload", target: "≤ 4× the compressed body",
			measured: fmt.Sprintf("%.1f× (%s for %s)", ratio, mib(per), kib(body)), value: ratio,
			// Below the baseline means the baseline was not the live heap.
			verdict: verdict(ratio, ratio >= 0 && ratio <= 4)})
	}
	h.sections["W3"] = sb.String()
	return nil
}

// w4 stores clusters and measures memory, disk and restart time.
func (h *harness) w4(ctx context.Context) error {
	var sb strings.Builder
	fmt.Fprintf(&sb, "A fresh single-node server stores N clusters × T232 (`--mode saturate --concurrency %d --count 1`). "+
		"RSS per series: `process_resident_memory_bytes` from the server's /metrics a few seconds after the load, minus the "+
		"same before it, divided by `telemeter_server_store_series`. Disk per series: allocated blocks of the storage directory "+
		"(what `du` counts) divided by the series; the apparent size is shown too. Restart-to-ready: SIGKILL, start with the "+
		"same flags and storage, poll `/healthz/ready` every 20 ms; from the start of the process to the first 200, median of "+
		"%d restart(s), scaled to a million series.\n\n", w2Concurrency, h.sz.w4Restarts)
	sb.WriteString("| clusters | series | store uploads/s | RSS before | RSS after | RSS / series | disk / series (apparent) | restart-to-ready | per million series |\n|---|---|---|---|---|---|---|---|---|\n")
	settle := 5 * time.Second
	if h.sz.name == "smoke" {
		settle = time.Second
	}
	for _, n := range h.sz.w4Clusters {
		srv, err := h.startServer(ctx, serverSpec{name: fmt.Sprintf("w4-%d", n), extra: []string{"--ratelimit", "1ms"}})
		if err != nil {
			return err
		}
		time.Sleep(settle / 2)
		v, err := srv.metric(ctx, "process_resident_memory_bytes")
		if err != nil {
			return err
		}
		rss0 := v[0]
		rep, err := h.runLoad(ctx, load{
			name: fmt.Sprintf("w4-%d", n), target: benchmark.TargetTelemeter, to: srv.api, clusters: n, idPrefix: "stored-",
			mode: benchmark.ModeSaturate, concurrency: w2Concurrency, count: 1, seed: 4,
		})
		if err != nil {
			return err
		}
		if err := requireAccepted("W4", rep); err != nil {
			return err
		}
		time.Sleep(settle)
		v, err = srv.metric(ctx, "process_resident_memory_bytes", "telemeter_server_store_series", "telemeter_server_store_snapshots")
		if err != nil {
			return err
		}
		rss1, series, snapshots := v[0], v[1], v[2]
		if series <= 0 {
			return fmt.Errorf("W4: the server stored no series (status %v)", rep.Status)
		}
		allocated, apparent, err := diskUsage(srv.storage)
		if err != nil {
			return err
		}
		var readies []float64
		for range h.sz.w4Restarts {
			d, err := srv.restart(ctx, h)
			if err != nil {
				return err
			}
			readies = append(readies, d.Seconds())
			after, err := srv.metric(ctx, "telemeter_server_store_snapshots")
			if err != nil {
				return err
			}
			if after[0] != snapshots {
				return fmt.Errorf("W4: %v snapshots after a restart, %v before", after[0], snapshots)
			}
		}
		srv.p.stop(10 * time.Second)
		rssPer := (rss1 - rss0) / series
		diskPer := float64(allocated) / series
		ready := median(readies)
		perMillion := ready / (series / 1e6)
		fmt.Fprintf(&sb, "| %s | %s | %.0f | %s | %s | %.0f B | %.0f B (%.0f B) | %.3f s | %.2f s |\n", thousands(n), thousands(int(series)),
			rep.UploadsPerSecond, mib(rss0), mib(rss1), rssPer, diskPer, float64(apparent)/series, ready, perMillion)
		wl := fmt.Sprintf("%s clusters × T232 stored", thousands(n))
		h.add(figure{id: "W4", workload: wl, name: "server RSS per stored series", target: "≤ 500 B",
			measured: fmt.Sprintf("%.0f B", rssPer), value: rssPer, verdict: verdict(rssPer, rssPer <= 500)})
		h.add(figure{id: "W4", workload: wl, name: "disk per series", target: "≤ 100 B",
			measured: fmt.Sprintf("%.0f B", diskPer), value: diskPer, verdict: verdict(diskPer, diskPer <= 100)})
		h.add(figure{id: "W4", workload: wl, name: "restart-to-ready per million series", target: "≤ 5 s",
			measured: fmt.Sprintf("%.2f s (%.3f s for %s)", perMillion, ready, si(series)), value: perMillion, verdict: verdict(perMillion, perMillion <= 5)})
	}
	h.sections["W4"] = sb.String()
	return nil
}

func statusCell(m map[string]int64) string {
	var parts []string
	for _, k := range sortedKeys(m) {
		parts = append(parts, fmt.Sprintf("%s: %d", k, m[k]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}
