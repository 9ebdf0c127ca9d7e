package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/telemeter/telemeter/internal/app/benchmark"
)

// w2Target is one of the three servers W2 and W5 compare.
type w2Target struct {
	name, kind, to string
	export         string // the name of its export in W5
	pid            int
	federate       string // the URL W5 scrapes
	check          bool   // the Pushgateway with its consistency check: too slow to hold every cluster for W5
	runs           []timedLoad
}

func (t *w2Target) perCPU(i int) float64 {
	r := t.runs[i]
	if r.cpu[0] <= 0 {
		return math.NaN()
	}
	return float64(r.rep.Samples) / r.cpu[0]
}

// w2w5 runs W2 (saturation against telemeter-server and both peers, then
// the p99 at half of telemeter's saturated rate) and, over the data W2 left
// in all three, W5 (/federate).
func (h *harness) w2w5(ctx context.Context) error {
	tele, err := h.startServer(ctx, serverSpec{name: "w2-telemeter", extra: []string{"--ratelimit", "1ms"}})
	if err != nil {
		return err
	}
	targets := []*w2Target{{
		name: "telemeter-server", export: "telemeter /federate", kind: benchmark.TargetTelemeter, to: tele.api, pid: tele.p.pid(),
		federate: tele.internal + "/federate",
	}}
	var missing []string
	if prom, err := h.startPrometheus(ctx); err == nil {
		targets = append(targets, &w2Target{
			name: "Prometheus remote write", export: "Prometheus /federate", kind: benchmark.TargetRemoteWrite, to: prom.base + "/api/v1/write", pid: prom.p.pid(),
			federate: prom.base + "/federate?match[]=" + url.QueryEscape(`{_id=~".+"}`),
		})
	} else if errors.Is(err, errMissingPeer) {
		missing = append(missing, err.Error())
	} else {
		return err
	}
	// The Pushgateway twice: as packaged, and with its consistency check
	// off. The check gathers every group on every push, so a push costs in
	// proportion to all the data held; without it the Pushgateway also
	// gets all the clusters in time for W5.
	for _, pg := range []struct {
		name, dir string
		extra     []string
	}{
		{name: "Pushgateway", dir: "pushgateway"},
		{name: "Pushgateway, consistency check off", dir: "pushgateway-nocheck", extra: []string{"--push.disable-consistency-check"}},
	} {
		p, err := h.startPushgateway(ctx, pg.dir, pg.extra...)
		if errors.Is(err, errMissingPeer) {
			missing = append(missing, err.Error())
			break
		}
		if err != nil {
			return err
		}
		targets = append(targets, &w2Target{
			name: pg.name, export: pg.name + " /metrics", kind: benchmark.TargetPushgateway, to: p.base, pid: p.p.pid(),
			federate: p.base + "/metrics", check: len(pg.extra) == 0,
		})
	}

	// Rounds: each target once per round, one after the other, so that a
	// change of the machine's load hits all of them alike; ratios are taken
	// within a round.
	for round := range h.sz.runs {
		for _, t := range targets {
			h.logger.Info("W2 saturation", "target", t.kind, "round", round+1)
			r, err := h.runTimed(ctx, load{
				name: "w2-" + t.kind, target: t.kind, to: t.to, clusters: h.sz.w2Clusters, idPrefix: "cluster-",
				mode: benchmark.ModeSaturate, concurrency: w2Concurrency, duration: h.sz.w2Duration,
				seed: uint64(round + 1),
			}, t.pid)
			if err != nil {
				return err
			}
			if err := requireAccepted("W2 "+t.kind, r.rep); err != nil {
				return err
			}
			t.runs = append(t.runs, r)
		}
	}

	var sb strings.Builder
	h.w2Figures(&sb, targets, missing)

	if h.want("w5") {
		if err := h.w5(ctx, targets); err != nil {
			return fmt.Errorf("W5: %w", err)
		}
	}
	if h.want("w2") {
		if err := h.w2Half(ctx, &sb, targets[0]); err != nil {
			return err
		}
		h.sections["W2"] = sb.String()
	}
	return nil
}

func (h *harness) w2Figures(sb *strings.Builder, targets []*w2Target, missing []string) {
	tele := targets[0]
	var perCPU []float64
	for i := range tele.runs {
		perCPU = append(perCPU, tele.perCPU(i))
	}
	m := median(perCPU)
	if !h.want("w2") {
		return
	}
	h.add(figure{id: "W2", workload: fmt.Sprintf("%s clusters × T232, %d pushers, %s", thousands(h.sz.w2Clusters), w2Concurrency, h.sz.w2Duration),
		name: "samples per server CPU-second", target: "≥ 250 k", measured: si(m), value: m, verdict: verdict(m, m >= 250e3)})
	ratioTarget := map[string]float64{benchmark.TargetRemoteWrite: 3, benchmark.TargetPushgateway: 1.6}
	for _, t := range targets[1:] {
		var ratios []float64
		for i := range t.runs {
			ratios = append(ratios, tele.perCPU(i)/t.perCPU(i))
		}
		r := median(ratios)
		want := ratioTarget[t.kind]
		h.add(figure{id: "W2", workload: "same rounds", name: "ratio telemeter / " + t.name, target: fmt.Sprintf("≈ %.1f×", want),
			measured: fmt.Sprintf("%.2f×", r), value: r, verdict: verdict(r, r >= want)})
	}

	fmt.Fprintf(sb, "Saturation: %s clusters × T232, `--mode saturate --concurrency %d` for %s against each server, "+
		"%d round(s), the servers one after the other in each round; figures are medians over the rounds, ratios are "+
		"taken within a round. Server CPU is utime+stime of the server process from `/proc/<pid>/stat` over the benchmark's "+
		"schedule (telemeter's token exchange happens before it, `--preauthorize`). Samples are those of accepted uploads.\n\n",
		thousands(h.sz.w2Clusters), w2Concurrency, h.sz.w2Duration, h.sz.runs)
	sb.WriteString("| server | samples / CPU-s | uploads/s | server CPU (cores) | p50 | p99 | non-2xx | body bytes |\n|---|---|---|---|---|---|---|---|\n")
	for _, t := range targets {
		var spc, ups, cores, p50, p99, body []float64
		var bad int64
		for i, r := range t.runs {
			spc = append(spc, t.perCPU(i))
			ups = append(ups, r.rep.UploadsPerSecond)
			cores = append(cores, r.cpu[0]/r.seconds)
			p50 = append(p50, r.rep.Latency.P50)
			p99 = append(p99, r.rep.Latency.P99)
			body = append(body, float64(r.rep.BytesSent)/math.Max(1, float64(r.rep.Uploads)))
			bad += r.rep.NonSuccess + r.rep.TransportErrors
		}
		fmt.Fprintf(sb, "| %s | %s | %.1f | %.2f | %s | %s | %d | %s |\n", t.name, si(median(spc)), median(ups), median(cores),
			ms(median(p50)), ms(median(p99)), bad, thousands(int(median(body))))
	}
	if len(missing) > 0 {
		fmt.Fprintf(sb, "\nNot measured: %s.\n", strings.Join(missing, "; "))
	}
	sb.WriteString("\nPer round (samples per server CPU-second):\n\n| round |")
	for _, t := range targets {
		fmt.Fprintf(sb, " %s |", t.name)
	}
	sb.WriteString("\n|---|" + strings.Repeat("---|", len(targets)) + "\n")
	for i := range tele.runs {
		fmt.Fprintf(sb, "| %d |", i+1)
		for _, t := range targets {
			fmt.Fprintf(sb, " %s |", si(t.perCPU(i)))
		}
		sb.WriteString("\n")
	}
}

// w2Half reruns telemeter at half its saturated upload rate (interval
// mode) and records the upload latency.
func (h *harness) w2Half(ctx context.Context, sb *strings.Builder, tele *w2Target) error {
	var rates []float64
	for _, r := range tele.runs {
		rates = append(rates, r.rep.UploadsPerSecond)
	}
	half := median(rates) / 2
	interval := time.Duration(float64(h.sz.w2Clusters) / half * float64(time.Second)).Round(time.Millisecond)
	var p50s, p99s, achieved, cores, lags []float64
	var bad int64
	for round := range h.sz.runs {
		h.logger.Info("W2 half of saturation", "uploads_per_second", half, "interval", interval, "round", round+1)
		r, err := h.runTimed(ctx, load{
			name: "w2-half", target: benchmark.TargetTelemeter, to: tele.to, clusters: h.sz.w2Clusters, idPrefix: "cluster-",
			mode: benchmark.ModeInterval, interval: interval, concurrency: 64, duration: h.sz.w2Duration,
			seed: uint64(100 + round),
		}, tele.pid)
		if err != nil {
			return err
		}
		if err := requireAccepted("W2 half", r.rep); err != nil {
			return err
		}
		p50s = append(p50s, r.rep.Latency.P50)
		p99s = append(p99s, r.rep.Latency.P99)
		achieved = append(achieved, r.rep.UploadsPerSecond)
		cores = append(cores, r.cpu[0]/r.seconds)
		lags = append(lags, r.rep.ScheduleLagMaxSeconds)
		bad += r.rep.NonSuccess + r.rep.TransportErrors
	}
	p99 := median(p99s)
	h.add(figure{id: "W2", workload: "same at 50 % of saturation", name: "p99 upload latency", target: "≤ 50 ms",
		measured: ms(p99), value: p99, verdict: verdict(p99, p99 <= 0.050)})
	fmt.Fprintf(sb, "\nHalf of saturation: telemeter-server's median saturated rate was %.1f uploads/s, so %s clusters push every %s "+
		"(`--mode interval`, jittered ±5 %%, first pushes spread over the first interval, tokens fetched before the run) for %s, "+
		"%d run(s). The generator is not pinned to a core: the machine is shared.\n\n", 2*half, thousands(h.sz.w2Clusters), interval, h.sz.w2Duration, h.sz.runs)
	sb.WriteString("| uploads/s achieved | p50 | p99 | server CPU (cores) | max schedule lag | non-2xx |\n|---|---|---|---|---|---|\n")
	fmt.Fprintf(sb, "| %.1f | %s | %s | %.2f | %s | %d |\n", median(achieved), ms(median(p50s)), ms(p99), median(cores), ms(median(lags)), bad)
	return nil
}

// scrapeResult is one measured scrape.
type scrapeResult struct {
	wall, cpu float64
	rssGrowth int64 // peak RSS during the scrape minus RSS before
	bytes     int64
	series    int64 // text only: lines that are not comments
}

const (
	acceptText  = "text/plain;version=0.0.4"
	acceptProto = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited"
)

// scrapeOnce GETs url with accept and measures the server process pid: the
// wall time to the end of the body, the CPU it used, and its peak RSS
// (VmHWM, reset before the scrape) over its RSS before.
func scrapeOnce(ctx context.Context, pid int, url, accept string) (scrapeResult, error) {
	var res scrapeResult
	if err := resetPeakRSS(pid); err != nil {
		return res, fmt.Errorf("reset peak RSS: %w", err)
	}
	rss0, _, err := memStatus(pid)
	if err != nil {
		return res, err
	}
	cpu0, err := cpuSeconds(pid)
	if err != nil {
		return res, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return res, err
	}
	req.Header.Set("Accept", accept)
	began := time.Now()
	resp, err := httpClient.Do(req)
	if err != nil {
		return res, err
	}
	lc := &lineCounter{last: '\n'}
	_, err = io.Copy(lc, resp.Body)
	_ = resp.Body.Close()
	res.wall = time.Since(began).Seconds()
	if err != nil {
		return res, err
	}
	if resp.StatusCode != http.StatusOK {
		return res, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	cpu1, err := cpuSeconds(pid)
	if err != nil {
		return res, err
	}
	_, hwm, err := memStatus(pid)
	if err != nil {
		return res, err
	}
	res.cpu = cpu1 - cpu0
	res.rssGrowth = hwm - rss0
	res.bytes = lc.bytes
	if !strings.Contains(resp.Header.Get("Content-Type"), "protobuf") {
		res.series = lc.lines - lc.comments
	}
	return res, nil
}

// lineCounter counts bytes, lines and lines that start with '#'.
type lineCounter struct {
	bytes, lines, comments int64
	last                   byte
}

func (c *lineCounter) Write(p []byte) (int, error) {
	for _, b := range p {
		if b == '\n' {
			c.lines++
		} else if b == '#' && c.last == '\n' {
			c.comments++
		}
		c.last = b
	}
	c.bytes += int64(len(p))
	return len(p), nil
}

// w5 scrapes every target's export of the W2 data: telemeter's /federate,
// Prometheus's /federate over every _id, the Pushgateway's /metrics; in
// text and in protobuf.
func (h *harness) w5(ctx context.Context, targets []*w2Target) error {
	var sb strings.Builder
	series := h.sz.w2Clusters * t232Series
	fmt.Fprintf(&sb, "Every server holds the %s clusters × T232 (%s series) W2 pushed; each export is fetched %d time(s) in a row "+
		"with nothing else running against it, figures are medians. Wall: from the request to the end of the body. CPU: the "+
		"server process's utime+stime over the scrape. RSS growth: the process's peak RSS during the scrape (VmHWM, reset "+
		"through `/proc/<pid>/clear_refs` before it) minus its RSS before. Prometheus is asked `GET /federate?match[]={_id=~\".+\"}`, "+
		"the Pushgateway `GET /metrics`: the one started with `--push.disable-consistency-check`, since the packaged one "+
		"takes too long per push to hold every cluster in a run of this length (see W2).\n\n", thousands(h.sz.w2Clusters), thousands(series), h.sz.w5Scrapes)
	sb.WriteString("| server | format | wall | CPU | RSS growth | body | series (text) |\n|---|---|---|---|---|---|---|\n")
	for _, t := range targets {
		if t.check {
			continue
		}
		for _, f := range []struct{ name, accept string }{{"text", acceptText}, {"protobuf", acceptProto}} {
			var walls, cpus, rss []float64
			var last scrapeResult
			for range h.sz.w5Scrapes {
				r, err := scrapeOnce(ctx, t.pid, t.federate, f.accept)
				if err != nil {
					return fmt.Errorf("%s %s: %w", t.name, f.name, err)
				}
				walls = append(walls, r.wall)
				cpus = append(cpus, r.cpu)
				rss = append(rss, float64(r.rssGrowth))
				last = r
			}
			wall, cpu, growth := median(walls), median(cpus), median(rss)
			fmt.Fprintf(&sb, "| %s | %s | %.3f s | %.2f s | %s | %s | %s |\n", t.export, f.name, wall, cpu, mib(growth), mib(float64(last.bytes)),
				seriesCell(last))
			if t.kind == benchmark.TargetTelemeter {
				if f.name == "text" && last.series < int64(series) {
					return fmt.Errorf("telemeter /federate served %d series, want %d", last.series, series)
				}
				wl := fmt.Sprintf("/federate over %s series, %s", thousands(series), f.name)
				h.add(figure{id: "W5", workload: wl, name: "wall seconds per scrape", target: "≤ 1 s",
					measured: fmt.Sprintf("%.3f s", wall), value: wall, verdict: verdict(wall, wall <= 1)})
				h.add(figure{id: "W5", workload: wl, name: "CPU seconds per scrape", target: "≤ 1 CPU-s",
					measured: fmt.Sprintf("%.2f s", cpu), value: cpu, verdict: verdict(cpu, cpu <= 1)})
				h.add(figure{id: "W5", workload: wl, name: "peak RSS growth", target: "≤ 64 MiB",
					measured: mib(growth), value: growth, verdict: verdict(growth, growth <= 64<<20)})
			} else {
				h.add(figure{id: "W5", workload: fmt.Sprintf("peer, same data, %s", f.name), name: t.export + ": wall, CPU per scrape", target: "(peers: 1.5–2.6 s)",
					measured: fmt.Sprintf("%.3f s, %.2f CPU-s", wall, cpu), value: wall})
			}
		}
	}
	h.sections["W5"] = sb.String()
	return nil
}

func seriesCell(r scrapeResult) string {
	if r.series == 0 {
		return "–"
	}
	return thousands(int(r.series))
}
