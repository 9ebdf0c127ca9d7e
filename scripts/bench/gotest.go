package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// microPackages are the packages whose `go test -bench` results the
// document lists.
var microPackages = []string{
	"./internal/upload", "./internal/store", "./internal/federate",
	"./internal/ring", "./internal/limit", "./internal/validate",
}

// Packages whose benchmarks rebuild their input outside the timer on every
// iteration: with go test's default of one timed second they run for tens
// of minutes, so they get a fixed count of iterations.
var fixedIterations = map[string]string{"./internal/transform": "20x"}

// goBench runs `go test -run '^$' -benchmem` with args in the repository
// and returns its results; the raw output is kept in the work directory.
// benchtime overrides the size's -benchtime when not empty.
func (h *harness) goBench(ctx context.Context, name, benchtime string, args ...string) ([]benchResult, string, error) {
	full := []string{"test", "-run", "^$", "-benchmem", "-count", strconv.Itoa(h.sz.goBenchCount)}
	if h.sz.goBenchTime != "" {
		benchtime = h.sz.goBenchTime
	}
	if benchtime != "" {
		full = append(full, "-benchtime", benchtime)
	}
	full = append(full, args...)
	ctx, cancel := context.WithTimeout(ctx, 45*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", full...)
	cmd.Dir = h.repo
	out, err := cmd.CombinedOutput()
	path := filepath.Join(h.work, name+".txt")
	_ = os.WriteFile(path, out, 0o644)
	if err != nil {
		tail := string(out)
		if len(tail) > 3000 {
			tail = tail[len(tail)-3000:]
		}
		return nil, "", fmt.Errorf("go %s: %w\n%s", strings.Join(full, " "), err, tail)
	}
	return parseBenchOutput(strings.NewReader(string(out))), "go " + quoteArgs(full), nil
}

func quoteArgs(args []string) string {
	var out []string
	for _, a := range args {
		if strings.ContainsAny(a, "^$ *") {
			a = "'" + a + "'"
		}
		out = append(out, a)
	}
	return strings.Join(out, " ")
}

// w6 takes the client's cycle benchmark.
func (h *harness) w6(ctx context.Context) error {
	results, cmd, err := h.goBench(ctx, "w6", "", "-bench", "BenchmarkCycle10k", "./internal/app/client/")
	if err != nil {
		return err
	}
	sums := summarize(results)
	if len(sums) == 0 {
		return fmt.Errorf("W6: no BenchmarkCycle10k result")
	}
	s := sums[0]
	cpu, okCPU := s.medians["cpu-ms/op"]
	rss, okRSS := s.medians["client-peak-rss-MiB"]
	if !okCPU || !okRSS {
		return fmt.Errorf("W6: BenchmarkCycle10k reports no cpu-ms/op or client-peak-rss-MiB (units %v)", s.units)
	}
	rssMB := rss * (1 << 20) / 1e6
	wl := "client cycle over 10,000 series (rename, anonymize, allowlist, push)"
	h.add(figure{id: "W6", workload: wl, name: "client CPU per cycle", target: "≤ 50 ms",
		measured: fmt.Sprintf("%.1f ms", cpu), value: cpu, verdict: verdict(cpu, cpu <= 50)})
	h.add(figure{id: "W6", workload: wl, name: "client peak RSS", target: "≤ 50 MB",
		measured: fmt.Sprintf("%.1f MB (%.1f MiB)", rssMB, rss), value: rssMB, verdict: verdict(rssMB, rssMB <= 50)})
	var sb strings.Builder
	fmt.Fprintf(&sb, "`%s`, medians of %d run(s). `cpu-ms/op` is the process's CPU time per cycle (getrusage), "+
		"`client-peak-rss-MiB` the peak RSS (VmHWM) of a child process that runs three such cycles with nothing else in it, "+
		"`process-peak-rss-MiB` that of the benchmark process, which also holds the source's fixtures and the sink.\n\n", cmd, s.runs)
	sb.WriteString(benchTable(sums))
	h.sections["W6"] = sb.String()
	return nil
}

// micro runs the hot-path micro-benchmarks.
func (h *harness) micro(ctx context.Context) error {
	results, cmd, err := h.goBench(ctx, "micro", "", append([]string{"-bench", "."}, microPackages...)...)
	if err != nil {
		return err
	}
	cmds := []string{cmd}
	for _, pkg := range sortedKeys(fixedIterations) {
		more, cmd, err := h.goBench(ctx, "micro-"+filepath.Base(pkg), fixedIterations[pkg], "-bench", ".", pkg)
		if err != nil {
			return err
		}
		results = append(results, more...)
		cmds = append(cmds, cmd)
	}
	sums := summarize(results)
	if len(sums) == 0 {
		return fmt.Errorf("micro-benchmarks: no result")
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "`%s`; every figure is the median of the %d run(s) of that benchmark.", strings.Join(cmds, "` and `"), h.sz.goBenchCount)
	for _, pkg := range sortedKeys(fixedIterations) {
		fmt.Fprintf(&sb, " %s runs a fixed `-benchtime %s`: its benchmarks rebuild 10,000 series outside the timer on "+
			"every iteration, so go test's default of one timed second takes tens of minutes there.", strings.TrimPrefix(pkg, "./"), fixedIterations[pkg])
	}
	sb.WriteString("\n\n")
	sb.WriteString(benchTable(sums))
	h.sections["micro"] = sb.String()
	return nil
}

// benchTable renders benchmark medians: the standard units as columns, the
// custom ones in a last column.
func benchTable(sums []benchSummary) string {
	var sb strings.Builder
	sb.WriteString("| package | benchmark | runs | time/op | B/op | allocs/op | other (medians) |\n|---|---|---|---|---|---|---|\n")
	for _, s := range sums {
		var other []string
		for _, u := range s.units {
			if unitRank(u) == 3 {
				other = append(other, fmt.Sprintf("%s %s", num(s.medians[u]), u))
			}
		}
		cell := func(u string) string {
			v, ok := s.medians[u]
			if !ok {
				return "–"
			}
			if u == "ns/op" {
				return duration(v)
			}
			return num(v)
		}
		fmt.Fprintf(&sb, "| %s | %s | %d | %s | %s | %s | %s |\n", strings.TrimPrefix(s.pkg, "github.com/telemeter/telemeter/"),
			strings.TrimPrefix(s.name, "Benchmark"), s.runs, cell("ns/op"), cell("B/op"), cell("allocs/op"), strings.Join(other, ", "))
	}
	return sb.String()
}
