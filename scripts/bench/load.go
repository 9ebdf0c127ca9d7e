package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/telemeter/telemeter/internal/app/benchmark"
)

// timedLoad is a load whose servers' CPU is measured over its schedule:
// from the moment telemeter-benchmark publishes the start of its schedule
// (after --preauthorize) to the moment it exits.
type timedLoad struct {
	rep benchmark.Report
	// cpu is the CPU seconds each pid used over the schedule.
	cpu []float64
	// seconds is the length of that window.
	seconds float64
}

// runTimed runs l and measures the CPU of pids over its schedule.
func (h *harness) runTimed(ctx context.Context, l load, pids ...int) (timedLoad, error) {
	reps, t, err := h.runTimedParallel(ctx, []load{l}, pids...)
	if err != nil {
		return t, err
	}
	t.rep = reps[0]
	return t, nil
}

// runTimedParallel runs loads side by side and measures the CPU of pids
// from the moment every one of them started its schedule to the moment the
// last one exited. Each load serves its /metrics on a free port.
func (h *harness) runTimedParallel(ctx context.Context, loads []load, pids ...int) ([]benchmark.Report, timedLoad, error) {
	var t timedLoad
	ports, err := freePorts(len(loads))
	if err != nil {
		return nil, t, err
	}
	var runs []*loadRun
	stopAll := func() {
		for _, r := range runs {
			r.p.stop(10 * time.Second)
		}
	}
	for i, l := range loads {
		l.listen = fmt.Sprintf("127.0.0.1:%d", ports[i])
		r, err := h.startLoad(l)
		if err != nil {
			stopAll()
			return nil, t, err
		}
		runs = append(runs, r)
	}
	for _, r := range runs {
		if err := waitSchedule(ctx, r); err != nil {
			stopAll()
			return nil, t, err
		}
	}
	began := time.Now()
	before, err := cpuOf(pids)
	if err != nil {
		stopAll()
		return nil, t, err
	}
	var reps []benchmark.Report
	for _, r := range runs {
		rep, err := r.wait(ctx)
		if err != nil {
			stopAll()
			return nil, t, err
		}
		reps = append(reps, rep)
	}
	after, err := cpuOf(pids)
	if err != nil {
		return nil, t, err
	}
	t.seconds = time.Since(began).Seconds()
	for i := range pids {
		t.cpu = append(t.cpu, after[i]-before[i])
	}
	return reps, t, nil
}

func (t timedLoad) totalCPU() float64 {
	sum := 0.0
	for _, c := range t.cpu {
		sum += c
	}
	return sum
}

func cpuOf(pids []int) ([]float64, error) {
	out := make([]float64, len(pids))
	for i, pid := range pids {
		c, err := cpuSeconds(pid)
		if err != nil {
			return nil, fmt.Errorf("cpu of pid %d: %w", pid, err)
		}
		out[i] = c
	}
	return out, nil
}

// waitSchedule polls the benchmark's /metrics until its schedule started.
func waitSchedule(ctx context.Context, r *loadRun) error {
	url := "http://" + r.l.listen + "/metrics"
	deadline := time.Now().Add(readyTimeout)
	for {
		vals, err := scrape(ctx, url, "telemeter_benchmark_schedule_start_timestamp_seconds")
		if err == nil && vals[0] > 0 {
			return nil
		}
		switch {
		case r.p.exited():
			return fmt.Errorf("benchmark %s exited before its schedule started: %w\n%s", r.l.name, r.p.exitErr(), r.p.tail())
		case time.Now().After(deadline):
			return errors.New("benchmark " + r.l.name + ": schedule not started in time")
		case ctx.Err() != nil:
			return ctx.Err()
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// requireAccepted refuses a run in which the server accepted nothing or
// refused much: its figures would describe an error path.
func requireAccepted(name string, rep benchmark.Report) error {
	if rep.Accepted == 0 {
		return fmt.Errorf("%s: no upload accepted (status %v)", name, rep.Status)
	}
	return nil
}
