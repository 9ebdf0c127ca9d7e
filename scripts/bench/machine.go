package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// machine is what the document says about where the figures come from.
type machine struct {
	nproc       int
	model       string
	memory      string
	kernel      string
	goVersion   string
	prometheus  string
	pushgateway string
	filesystem  string // of the work directory, where the stores live
	date        time.Time
	loadStart   string
	loadEnd     string
	took        time.Duration
}

func describeMachine(work string) machine {
	m := machine{
		nproc:     runtime.NumCPU(),
		model:     "unknown",
		memory:    "unknown",
		kernel:    "unknown",
		goVersion: runtime.Version(),
		date:      time.Now().UTC(),
		loadStart: loadAverage(),
	}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if name, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(name) == "model name" {
				m.model = strings.TrimSpace(v)
				break
			}
		}
		_ = f.Close()
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				f := strings.Fields(rest)
				if kb, err := strconv.ParseFloat(f[0], 64); err == nil {
					m.memory = fmt.Sprintf("%.1f GiB", kb/(1<<20))
				}
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.kernel = strings.TrimSpace(string(b))
	}
	if out, err := exec.Command("go", "env", "GOVERSION").Output(); err == nil {
		m.goVersion = strings.TrimSpace(string(out))
	}
	if out, err := exec.Command("df", "--output=fstype", work).Output(); err == nil {
		if f := strings.Fields(string(out)); len(f) == 2 {
			m.filesystem = f[1]
		}
	}
	return m
}

// loadAverage is the 1, 5 and 15 minute load averages.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// peerBinaries are the peers found on this machine.
type peerBinaries struct {
	prometheus, pushgateway               string
	prometheusVersion, pushgatewayVersion string
}

func findPeers() peerBinaries {
	var p peerBinaries
	p.prometheus, _ = exec.LookPath("prometheus")
	for _, name := range []string{"prometheus-pushgateway", "pushgateway"} {
		if path, err := exec.LookPath(name); err == nil {
			p.pushgateway = path
			break
		}
	}
	p.prometheusVersion = binaryVersion(p.prometheus)
	p.pushgatewayVersion = binaryVersion(p.pushgateway)
	return p
}

// binaryVersion runs `path --version` and keeps the version word of its
// first line ("prometheus, version 2.42.0+ds (branch: ...)").
func binaryVersion(path string) string {
	if path == "" {
		return "not installed"
	}
	out, err := exec.Command(path, "--version").CombinedOutput()
	if err != nil {
		return "unknown"
	}
	line, _, _ := strings.Cut(string(out), "\n")
	if _, rest, ok := strings.Cut(line, "version "); ok {
		v, _, _ := strings.Cut(rest, " ")
		return v
	}
	return strings.TrimSpace(line)
}
