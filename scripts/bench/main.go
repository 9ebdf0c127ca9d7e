package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// size is how large every workload runs.
type size struct {
	name string
	runs int // repetitions a figure is the median of, where time allows

	w1Clusters int
	w1Duration time.Duration

	w2Clusters int // also the clusters /federate serves in W5
	w2Duration time.Duration
	w5Scrapes  int

	w3Clusters int
	w3Count    int           // pushes per cluster in each measured run
	w3Idle     time.Duration // idle sampling for the heap baseline

	w4Clusters []int
	w4Restarts int

	w7Clusters int
	w7Interval time.Duration
	w7Duration time.Duration

	goBenchCount int
	goBenchTime  string // -benchtime; "" is go test's default
}

var sizes = map[string]size{
	"smoke": {
		name: "smoke", runs: 1,
		w1Clusters: 20, w1Duration: 3 * time.Second,
		w2Clusters: 20, w2Duration: 2 * time.Second, w5Scrapes: 1,
		w3Clusters: 4, w3Count: 2, w3Idle: 300 * time.Millisecond,
		w4Clusters: []int{200}, w4Restarts: 1,
		w7Clusters: 30, w7Interval: time.Second, w7Duration: 3 * time.Second,
		goBenchCount: 1, goBenchTime: "1x",
	},
	"default": {
		name: "default", runs: 3,
		w1Clusters: 1000, w1Duration: 2 * time.Minute,
		w2Clusters: 1000, w2Duration: 20 * time.Second, w5Scrapes: 5,
		w3Clusters: 100, w3Count: 2, w3Idle: 2 * time.Second,
		w4Clusters: []int{10000}, w4Restarts: 3,
		w7Clusters: 300, w7Interval: 10 * time.Second, w7Duration: 30 * time.Second,
		goBenchCount: 6,
	},
	"full": {
		name: "full", runs: 5,
		w1Clusters: 5000, w1Duration: 15 * time.Minute,
		w2Clusters: 1000, w2Duration: 30 * time.Second, w5Scrapes: 5,
		w3Clusters: 100, w3Count: 3, w3Idle: 2 * time.Second,
		w4Clusters: []int{10000, 50000}, w4Restarts: 5,
		w7Clusters: 1000, w7Interval: 20 * time.Second, w7Duration: 60 * time.Second,
		goBenchCount: 6,
	},
}

// Fixed parts of the workloads (QUALITY.md).
const (
	t232Series      = 232
	w2Concurrency   = 8
	w3Multiplier    = 43 // T232 × 43 ≈ 10,000 series
	w1FleetClusters = 5000
	w1FleetInterval = 4*time.Minute + 30*time.Second
	clusterToken    = "bench-cluster-token"
)

// figure is one row of the summary: a measured figure against its target.
type figure struct {
	id       string
	workload string
	name     string
	target   string
	measured string
	verdict  string // pass, miss, or "" when there is no target
	value    float64
}

type harness struct {
	sz       size
	repo     string
	bin      string
	work     string
	logger   *slog.Logger
	procs    procs
	peers    peerBinaries
	only     map[string]bool
	nextLog  int
	started  time.Time
	figures  []figure
	sections map[string]string // workload id → markdown
	failures []string
}

func main() {
	sizeName := flag.String("size", envOr("BENCH_SIZE", "default"), "smoke, default or full.")
	out := flag.String("out", "", "Markdown file to write; default docs/benchmarks.md, or a temporary file for smoke.")
	bin := flag.String("bin", "", "Directory holding telemeter-server and telemeter-benchmark.")
	repo := flag.String("repo", ".", "Root of the repository (for go test).")
	only := flag.String("only", "", "Comma-separated subset of w1,w2,w3,w4,w5,w6,w7,micro (w5 needs w2); default all.")
	command := flag.String("command", "", "The command shown in the document as the way to reproduce it.")
	keep := flag.Bool("keep", false, "Keep the work directory (logs, stores) after the run.")
	flag.Parse()

	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	sz, ok := sizes[*sizeName]
	if !ok {
		logger.Error("unknown size", "size", *sizeName, "want", "smoke, default or full")
		os.Exit(2)
	}
	if *bin == "" {
		logger.Error("-bin is required")
		os.Exit(2)
	}
	if *out == "" {
		*out = filepath.Join(*repo, "docs", "benchmarks.md")
		if sz.name == "smoke" {
			*out = filepath.Join(os.TempDir(), "telemeter-benchmarks-smoke.md")
		}
	}
	if *command == "" {
		*command = "make bench"
		switch sz.name {
		case "full":
			*command = "BENCH_SIZE=full make bench"
		case "smoke":
			*command = "make bench-smoke"
		}
	}
	work, err := os.MkdirTemp("", "telemeter-bench-")
	if err != nil {
		logger.Error("make work directory", "err", err)
		os.Exit(1)
	}
	h := &harness{
		sz: sz, repo: *repo, bin: *bin, work: work, logger: logger,
		sections: map[string]string{}, started: time.Now(),
	}
	if *only != "" {
		h.only = map[string]bool{}
		for _, w := range strings.Split(*only, ",") {
			h.only[strings.TrimSpace(strings.ToLower(w))] = true
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := h.run(ctx, *out, *command)
	stop()
	h.procs.stopAll(h.grace())
	if *keep || code != 0 {
		logger.Info("work directory kept", "dir", work)
	} else {
		_ = os.RemoveAll(work)
	}
	os.Exit(code)
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// grace is how long a process may take to stop by itself after SIGTERM.
// The smoke run does not wait for graceful leaves: nothing is measured then.
func (h *harness) grace() time.Duration {
	if h.sz.name == "smoke" {
		return time.Second
	}
	return 10 * time.Second
}

func (h *harness) want(id string) bool { return h.only == nil || h.only[id] }

func (h *harness) run(ctx context.Context, out, command string) int {
	m := describeMachine(h.work)
	h.peers = findPeers()
	m.prometheus, m.pushgateway = h.peers.prometheusVersion, h.peers.pushgatewayVersion
	h.logger.Info("benchmark starting", "size", h.sz.name, "load_average", m.loadStart, "work", h.work)
	if err := os.WriteFile(h.tokensFile(), []byte(`[{"token":"`+clusterToken+`"}]`), 0o600); err != nil {
		h.logger.Error("write tokens file", "err", err)
		return 1
	}

	steps := []struct {
		id  string
		run func(context.Context) error
	}{
		{"w2", h.w2w5}, // W2, then W5 over the data W2 stored in all three
		{"w1", h.w1},
		{"w3", h.w3},
		{"w4", h.w4},
		{"w7", h.w7},
		{"w6", h.w6},
		{"micro", h.micro},
	}
	for _, s := range steps {
		if !h.want(s.id) && (s.id != "w2" || !h.want("w5")) { // W5 needs W2's data
			continue
		}
		if ctx.Err() != nil {
			break
		}
		began := time.Now()
		h.logger.Info("workload starting", "workload", s.id)
		if err := s.run(ctx); err != nil {
			h.failures = append(h.failures, fmt.Sprintf("%s: %v", s.id, err))
			h.logger.Error("workload failed", "workload", s.id, "err", err)
		}
		h.procs.stopAll(h.grace())
		h.logger.Info("workload done", "workload", s.id, "took", time.Since(began).Round(time.Second))
	}
	if ctx.Err() != nil {
		h.failures = append(h.failures, "interrupted")
	}
	m.loadEnd = loadAverage()
	m.took = time.Since(h.started)

	// By workload, in the order each measured them.
	slices.SortStableFunc(h.figures, func(a, b figure) int { return strings.Compare(a.id, b.id) })
	for _, f := range h.figures {
		if math.IsNaN(f.value) {
			h.failures = append(h.failures, fmt.Sprintf("%s %s: no number", f.id, f.name))
		}
	}
	doc := h.render(m, command) + keptNotes(out)
	target := out
	if len(h.failures) > 0 && h.sz.name != "smoke" {
		// Keep the committed document; put the broken run beside it.
		target = out + ".failed"
	}
	if err := os.WriteFile(target, []byte(doc), 0o644); err != nil {
		h.logger.Error("write document", "err", err)
		return 1
	}
	h.logger.Info("document written", "file", target, "took", m.took.Round(time.Second))
	for _, f := range h.figures {
		fmt.Printf("%-3s %-44s %-28s target %-22s %s\n", f.id, f.name, f.measured, f.target, f.verdict)
	}
	if len(h.failures) > 0 {
		for _, f := range h.failures {
			fmt.Fprintln(os.Stderr, "FAILED:", f)
		}
		return 1
	}
	fmt.Printf("bench %s: ok in %s, every figure measured (%s)\n", h.sz.name, m.took.Round(time.Second), target)
	return 0
}

func (h *harness) tokensFile() string { return filepath.Join(h.work, "tokens.json") }

// logName returns a unique name for the next process's log.
func (h *harness) logName(name string) string {
	h.nextLog++
	return fmt.Sprintf("%03d-%s", h.nextLog, name)
}

// add records a figure; value NaN means it could not be measured.
func (h *harness) add(f figure) {
	h.figures = append(h.figures, f)
}

// verdict is pass when ok, miss otherwise, and "" without a number.
func verdict(v float64, ok bool) string {
	switch {
	case math.IsNaN(v):
		return "not measured"
	case ok:
		return "pass"
	}
	return "miss"
}

// errMissingPeer marks a peer that is not installed.
var errMissingPeer = errors.New("not installed")

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
