package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/telemeter/telemeter/internal/app/benchmark"
	"github.com/telemeter/telemeter/internal/ring"
)

// debugCluster is the part of a server's /debug/cluster the harness reads.
type debugCluster struct {
	Ring   []string       `json:"ring"`
	VNodes int            `json:"vnodes_per_member"`
	Owned  map[string]int `json:"clusters_owned_by_node"`
}

func (s *server) debugCluster(ctx context.Context) (debugCluster, error) {
	var d debugCluster
	b, err := getBody(ctx, s.internal+"/debug/cluster")
	if err != nil {
		return d, err
	}
	return d, json.Unmarshal(b, &d)
}

// w7 compares uploads sent to their owner with uploads sent to another
// node, which forwards them, on a 3-node cluster.
func (h *harness) w7(ctx context.Context) error {
	const nodes = 3
	dir := filepath.Join(h.work, "w7")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	sharedKey, gossipKey, err := writeClusterKeys(dir)
	if err != nil {
		return err
	}
	ports, err := freePorts(3 * nodes)
	if err != nil {
		return err
	}
	var srvs []*server
	for i := range nodes {
		extra := []string{
			"--name", fmt.Sprintf("node-%d", i),
			"--listen-cluster", fmt.Sprintf("127.0.0.1:%d", ports[3*i+2]),
			"--shared-key", sharedKey,
			"--gossip-key-file", gossipKey,
			"--ratelimit", "1ms",
		}
		if i > 0 {
			extra = append(extra, "--join", fmt.Sprintf("127.0.0.1:%d", ports[2]))
		}
		s, err := h.startServer(ctx, serverSpec{name: fmt.Sprintf("w7-node-%d", i), api: ports[3*i], internal: ports[3*i+1], extra: extra})
		if err != nil {
			return err
		}
		srvs = append(srvs, s)
	}
	// Wait for every node to see the same ring of three.
	var view debugCluster
	deadline := time.Now().Add(readyTimeout)
	for {
		settled := true
		for _, s := range srvs {
			d, err := s.debugCluster(ctx)
			if err != nil || len(d.Ring) != nodes {
				settled = false
				break
			}
			view = d
		}
		if settled {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the 3 nodes did not form one ring in %s", readyTimeout)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Owners by the servers' own hashing, checked against what they store
	// after the first run.
	r := ring.New(view.Ring, view.VNodes)
	owned := make([][]string, nodes)
	for i := range h.sz.w7Clusters {
		id := fmt.Sprintf("spray-%05d", i)
		var node int
		if _, err := fmt.Sscanf(r.Owner(id), "node-%d", &node); err != nil || node < 0 || node >= nodes {
			return fmt.Errorf("owner %q of %s is not a node of the benchmark", r.Owner(id), id)
		}
		owned[node] = append(owned[node], id)
	}
	files := make([]string, nodes)
	for i := range nodes {
		files[i] = filepath.Join(dir, fmt.Sprintf("ids-node-%d.txt", i))
		if err := os.WriteFile(files[i], []byte(strings.Join(owned[i], "\n")+"\n"), 0o644); err != nil {
			return err
		}
	}
	pids := make([]int, nodes)
	for i, s := range srvs {
		pids[i] = s.p.pid()
	}

	type result struct{ p50, p99, cpuPerUpload, uploads float64 }
	runMode := func(round int, forwarded bool) (result, error) {
		var loads []load
		for i := range nodes {
			to := srvs[i]
			if forwarded {
				to = srvs[(i+1)%nodes]
			}
			loads = append(loads, load{
				name:   fmt.Sprintf("w7-%v-%d", map[bool]string{true: "forwarded", false: "local"}[forwarded], i),
				target: benchmark.TargetTelemeter, to: to.api, idsFile: files[i],
				mode: benchmark.ModeInterval, interval: h.sz.w7Interval, concurrency: 16, duration: h.sz.w7Duration,
				seed: uint64(10*round + i + 1),
			})
		}
		reps, t, err := h.runTimedParallel(ctx, loads, pids...)
		if err != nil {
			return result{}, err
		}
		var res result
		var accepted float64
		for _, rep := range reps {
			if err := requireAccepted("W7", rep); err != nil {
				return result{}, err
			}
			n := float64(rep.Latency.Count)
			res.p50 += rep.Latency.P50 * n
			res.p99 += rep.Latency.P99 * n
			res.uploads += n
			accepted += float64(rep.Accepted)
		}
		res.p50 /= res.uploads
		res.p99 /= res.uploads
		res.cpuPerUpload = t.totalCPU() / accepted
		return res, nil
	}

	var extraP50, extraCPU []float64
	var rows []string
	for round := range h.sz.runs {
		h.logger.Info("W7 round", "round", round+1)
		local, err := runMode(round, false)
		if err != nil {
			return err
		}
		if round == 0 {
			for i, s := range srvs {
				d, err := s.debugCluster(ctx)
				if err != nil {
					return err
				}
				if got := d.Owned[fmt.Sprintf("node-%d", i)]; got != len(owned[i]) {
					return fmt.Errorf("node-%d owns %d stored clusters, the harness's hashing says %d", i, got, len(owned[i]))
				}
			}
		}
		fwd, err := runMode(round, true)
		if err != nil {
			return err
		}
		extraP50 = append(extraP50, fwd.p50-local.p50)
		extraCPU = append(extraCPU, fwd.cpuPerUpload/local.cpuPerUpload-1)
		rows = append(rows, fmt.Sprintf("| %d | %s | %s | %s | %s | %.0f µs | %.0f µs | %+.1f %% |", round+1,
			ms(local.p50), ms(fwd.p50), ms(local.p99), ms(fwd.p99), local.cpuPerUpload*1e6, fwd.cpuPerUpload*1e6,
			(fwd.cpuPerUpload/local.cpuPerUpload-1)*100))
	}
	p50, cpu := median(extraP50), median(extraCPU)
	wl := fmt.Sprintf("3 nodes, %s clusters, each pushing every %s", thousands(h.sz.w7Clusters), h.sz.w7Interval)
	h.add(figure{id: "W7", workload: wl, name: "extra p50 latency of a forwarded upload", target: "≤ 2 ms",
		measured: fmt.Sprintf("%+.2f ms", p50*1000), value: p50, verdict: verdict(p50, p50 <= 0.002)})
	h.add(figure{id: "W7", workload: wl, name: "extra server CPU of a forwarded upload", target: "≤ 30 %",
		measured: fmt.Sprintf("%+.1f %%", cpu*100), value: cpu, verdict: verdict(cpu, cpu <= 0.30)})

	var sb strings.Builder
	fmt.Fprintf(&sb, "Three nodes on 127.0.0.1 (shared signing key, gossip key, `--listen-cluster`, nodes 1 and 2 `--join` node 0, "+
		"replication factor 1). %s cluster IDs are split by their owner, computed with the servers' ring (`internal/ring`, "+
		"members and virtual nodes read from `/debug/cluster`, and checked against the clusters each node stores after the first "+
		"run: %d / %d / %d). Each round runs the same load twice, three benchmark processes side by side, one per owner's "+
		"clusters (`--ids-file`, `--mode interval --interval %s`, %s):\n\n"+
		"- **local**: each process pushes to the owner of its clusters;\n"+
		"- **forwarded**: each process pushes to the next node, which forwards every upload to the owner.\n\n"+
		"A sprayed round-robin fleet forwards two uploads in three; these runs isolate the cost of one forwarded upload. Latency: "+
		"the benchmark's p50 and p99, averaged over the three processes weighted by their uploads. CPU: utime+stime of all three "+
		"server processes over the schedule, divided by the accepted uploads. %d round(s); the figures are the medians of the "+
		"per-round differences.\n\n", thousands(h.sz.w7Clusters), len(owned[0]), len(owned[1]), len(owned[2]),
		h.sz.w7Interval, h.sz.w7Duration, h.sz.runs)
	sb.WriteString("| round | p50 local | p50 forwarded | p99 local | p99 forwarded | CPU / upload local | CPU / upload forwarded | extra CPU |\n|---|---|---|---|---|---|---|---|\n")
	sb.WriteString(strings.Join(rows, "\n") + "\n")
	h.sections["W7"] = sb.String()
	return nil
}
