package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is a process the harness started. Its output goes to a log file in
// the work directory.
type proc struct {
	name    string
	path    string
	args    []string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{}
	err     error
}

// procs remembers every process started, so that the harness stops all of
// them when it ends, whatever happened.
type procs struct {
	mu   sync.Mutex
	list []*proc
}

func (ps *procs) start(logDir, name, path string, args ...string) (*proc, error) {
	return ps.startOut(logDir, name, "", path, args...)
}

// startOut starts a process whose standard output goes to outPath (when
// not empty) and its standard error to its log.
func (ps *procs) startOut(logDir, name, outPath, path string, args ...string) (*proc, error) {
	logPath := filepath.Join(logDir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open log of %s: %w", name, err)
	}
	files := []*os.File{f}
	closeAll := func() {
		for _, f := range files {
			_ = f.Close()
		}
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout = f
	cmd.Stderr = f
	if outPath != "" {
		out, err := os.Create(outPath)
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("open output of %s: %w", name, err)
		}
		files = append(files, out)
		cmd.Stdout = out
	}
	// A process group of its own: a ^C on the harness reaches the harness,
	// which stops its children in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		closeAll()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, path: path, args: args, logPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		closeAll()
		close(p.done)
	}()
	ps.mu.Lock()
	ps.list = append(ps.list, p)
	ps.mu.Unlock()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// exitErr is why an exited process ended: its error, or a success that
// came too early for the caller.
func (p *proc) exitErr() error {
	if p.err != nil {
		return p.err
	}
	return errors.New("exit status 0")
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// stop asks the process to end (SIGTERM) and kills it after grace.
func (p *proc) stop(grace time.Duration) {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		p.kill()
	}
}

// tail returns the end of the process's log, for error messages.
func (p *proc) tail() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return ""
	}
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// stopAll stops every process, each given grace to end by itself.
func (ps *procs) stopAll(grace time.Duration) {
	ps.mu.Lock()
	list := ps.list
	ps.list = nil
	ps.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range list {
		wg.Go(func() { p.stop(grace) })
	}
	wg.Wait()
}

// clockTicks is the kernel's USER_HZ, the unit of utime and stime.
var clockTicks = func() float64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(out))); err == nil && n > 0 {
			return float64(n)
		}
	}
	return 100
}()

// cpuSeconds is the CPU time (user and system, every thread) process pid
// has used, from /proc/<pid>/stat.
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseStatCPU(string(b))
}

// parseStatCPU reads utime and stime (fields 14 and 15) of a
// /proc/<pid>/stat line. The command name, field 2, is in parentheses and
// may hold spaces, so fields are counted after its closing parenthesis.
func parseStatCPU(line string) (float64, error) {
	i := strings.LastIndexByte(line, ')')
	if i < 0 {
		return 0, errors.New("parse /proc stat: no command name")
	}
	f := strings.Fields(line[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("parse /proc stat: %d fields after the name", len(f))
	}
	utime, err1 := strconv.ParseUint(f[11], 10, 64)
	stime, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("parse /proc stat: %w", err)
	}
	return float64(utime+stime) / clockTicks, nil
}

// memStatus returns VmRSS and VmHWM (the peak RSS since start or the last
// reset) of pid in bytes.
func memStatus(pid int) (rss, hwm int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	return parseMemStatus(b)
}

func parseMemStatus(b []byte) (rss, hwm int64, err error) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	found := 0
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || (name != "VmRSS" && name != "VmHWM") {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, 0, fmt.Errorf("parse /proc status: %q", sc.Text())
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("parse /proc status: %w", err)
		}
		if name == "VmRSS" {
			rss = kb << 10
		} else {
			hwm = kb << 10
		}
		found++
	}
	if found != 2 {
		return 0, 0, errors.New("parse /proc status: no VmRSS or VmHWM")
	}
	return rss, hwm, nil
}

// resetPeakRSS sets VmHWM of pid back to its current RSS (Linux ≥ 4.0).
func resetPeakRSS(pid int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

// freePorts returns n distinct TCP ports of 127.0.0.1 that were free a
// moment ago.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

var httpClient = &http.Client{Timeout: 2 * time.Minute}

// waitReady polls url until it answers 200, the process exits, or timeout
// passes. It returns how long it took from since.
func waitReady(ctx context.Context, p *proc, url string, since time.Time, timeout time.Duration) (time.Duration, error) {
	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: time.Second}
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return 0, err
		}
		resp, err := client.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Since(since), nil
			}
		}
		switch {
		case p.exited():
			return 0, fmt.Errorf("%s exited before it was ready: %w\n%s", p.name, p.exitErr(), p.tail())
		case time.Now().After(deadline):
			return 0, fmt.Errorf("%s not ready at %s after %s\n%s", p.name, url, timeout, p.tail())
		case ctx.Err() != nil:
			return 0, ctx.Err()
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// getBody fetches url and returns its body.
func getBody(ctx context.Context, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return b, nil
}

// metricValue finds series (the exact text exposition of its name and
// labels, e.g. `go_memstats_heap_inuse_bytes` or
// `telemeter_server_http_requests_in_flight{handler="upload"}`) in a
// /metrics body.
func metricValue(body []byte, series string) (float64, bool) {
	for line := range bytes.Lines(body) {
		rest, ok := bytes.CutPrefix(line, []byte(series))
		if !ok || len(rest) == 0 || rest[0] != ' ' {
			continue
		}
		f := strings.Fields(string(rest))
		if len(f) == 0 {
			return 0, false
		}
		v, err := strconv.ParseFloat(f[0], 64)
		return v, err == nil
	}
	return 0, false
}

// scrape fetches the /metrics at url and returns the value of each series.
func scrape(ctx context.Context, url string, series ...string) ([]float64, error) {
	body, err := getBody(ctx, url)
	if err != nil {
		return nil, err
	}
	out := make([]float64, len(series))
	for i, s := range series {
		v, ok := metricValue(body, s)
		if !ok {
			return nil, fmt.Errorf("%s has no %s", url, s)
		}
		out[i] = v
	}
	return out, nil
}

// diskUsage is what du reports for dir (allocated blocks) and the sum of
// the file sizes, in bytes.
func diskUsage(dir string) (allocated, apparent int64, err error) {
	err = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			allocated += st.Blocks * 512
		}
		if !d.IsDir() {
			apparent += info.Size()
		}
		return nil
	})
	return allocated, apparent, err
}
