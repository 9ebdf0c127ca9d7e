package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/telemeter/telemeter/internal/app/benchmark"
)

// readyTimeout bounds every wait for a process to be ready.
const readyTimeout = 2 * time.Minute

// server is a telemeter-server the harness runs.
type server struct {
	name     string
	args     []string
	p        *proc
	api      string // base URL of /authorize and /upload
	internal string // base URL of /federate, /metrics, /healthz
	storage  string
}

// serverSpec says how to start a telemeter-server: its name, its two ports
// (0: pick free ones) and flags besides the listeners, storage and tokens.
type serverSpec struct {
	name          string
	api, internal int
	extra         []string
}

func (h *harness) startServer(ctx context.Context, spec serverSpec) (*server, error) {
	if spec.api == 0 || spec.internal == 0 {
		ports, err := freePorts(2)
		if err != nil {
			return nil, err
		}
		spec.api, spec.internal = ports[0], ports[1]
	}
	storage := filepath.Join(h.work, spec.name, "store")
	if err := os.MkdirAll(storage, 0o755); err != nil {
		return nil, err
	}
	s := &server{
		name:     spec.name,
		api:      fmt.Sprintf("http://127.0.0.1:%d", spec.api),
		internal: fmt.Sprintf("http://127.0.0.1:%d", spec.internal),
		storage:  storage,
	}
	s.args = append([]string{
		"--listen", fmt.Sprintf("127.0.0.1:%d", spec.api),
		"--listen-internal", fmt.Sprintf("127.0.0.1:%d", spec.internal),
		"--storage-dir", storage,
		"--tokens-file", h.tokensFile(),
		// Long enough that no snapshot expires during a run.
		"--ttl", "2h",
		"--log-level", "warn",
	}, spec.extra...)
	if _, err := s.launch(ctx, h); err != nil {
		return nil, err
	}
	return s, nil
}

// launch starts the server process and waits until it is ready; it returns
// the time from the start of the process to its first ready answer.
func (s *server) launch(ctx context.Context, h *harness) (time.Duration, error) {
	began := time.Now()
	p, err := h.procs.start(h.work, h.logName(s.name), filepath.Join(h.bin, "telemeter-server"), s.args...)
	if err != nil {
		return 0, err
	}
	s.p = p
	return waitReady(ctx, p, s.internal+"/healthz/ready", began, readyTimeout)
}

// restart kills the server with SIGKILL and starts it again with the same
// flags and storage. It returns the time from the start to ready.
func (s *server) restart(ctx context.Context, h *harness) (time.Duration, error) {
	s.p.kill()
	return s.launch(ctx, h)
}

func (s *server) metric(ctx context.Context, series ...string) ([]float64, error) {
	return scrape(ctx, s.internal+"/metrics", series...)
}

// peer is Prometheus or the Pushgateway.
type peer struct {
	name string
	p    *proc
	base string
}

func (h *harness) startPrometheus(ctx context.Context) (*peer, error) {
	if h.peers.prometheus == "" {
		return nil, fmt.Errorf("prometheus: %w", errMissingPeer)
	}
	ports, err := freePorts(1)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(h.work, "prometheus")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	config := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(config, []byte("global:\n  scrape_interval: 1m\nscrape_configs: []\n"), 0o644); err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", ports[0])
	began := time.Now()
	p, err := h.procs.start(h.work, h.logName("prometheus"), h.peers.prometheus,
		"--config.file="+config,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
		"--web.enable-remote-write-receiver",
		"--log.level=warn")
	if err != nil {
		return nil, err
	}
	pr := &peer{name: "Prometheus", p: p, base: "http://" + addr}
	if _, err := waitReady(ctx, p, pr.base+"/-/ready", began, readyTimeout); err != nil {
		return nil, err
	}
	return pr, nil
}

// startPushgateway starts a Pushgateway named name (its directory and log)
// with a scratch persistence file and the extra flags.
func (h *harness) startPushgateway(ctx context.Context, name string, extra ...string) (*peer, error) {
	if h.peers.pushgateway == "" {
		return nil, fmt.Errorf("pushgateway: %w", errMissingPeer)
	}
	ports, err := freePorts(1)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(h.work, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", ports[0])
	began := time.Now()
	p, err := h.procs.start(h.work, h.logName(name), h.peers.pushgateway, append([]string{
		"--web.listen-address=" + addr,
		"--persistence.file=" + filepath.Join(dir, "pushgateway.data"),
		"--log.level=warn",
	}, extra...)...)
	if err != nil {
		return nil, err
	}
	pg := &peer{name: "Pushgateway", p: p, base: "http://" + addr}
	if _, err := waitReady(ctx, p, pg.base+"/-/ready", began, readyTimeout); err != nil {
		return nil, err
	}
	return pg, nil
}

// load is one run of telemeter-benchmark.
type load struct {
	name        string
	target      string // benchmark.Target*
	to          string
	clusters    int
	idsFile     string
	idPrefix    string
	mode        string
	concurrency int
	duration    time.Duration
	count       int
	interval    time.Duration
	multiplier  int
	seed        uint64
	listen      string // the benchmark's own /metrics; "" serves nothing
	cpus        string // taskset CPU list; "" runs anywhere
}

// loadRun is a telemeter-benchmark process running a load.
type loadRun struct {
	l       load
	p       *proc
	outPath string
	limit   time.Duration
}

func (h *harness) startLoad(l load) (*loadRun, error) {
	args := []string{
		"--report", "json", "--log-level", "warn", "--listen", l.listen,
		"--to", l.to, "--mode", l.mode,
		"--concurrency", strconv.Itoa(l.concurrency),
		"--seed", strconv.FormatUint(max(l.seed, 1), 10),
		"--request-timeout", "30s",
	}
	if l.target != "" {
		args = append(args, "--target", l.target)
	}
	if l.target == "" || l.target == benchmark.TargetTelemeter {
		// Tokens are fetched before the schedule: the timed part of a run
		// is uploads only, as for the peers, which have no token exchange.
		args = append(args, "--to-token", clusterToken, "--preauthorize")
	}
	if l.idsFile != "" {
		args = append(args, "--ids-file", l.idsFile)
	} else {
		args = append(args, "--workers", strconv.Itoa(l.clusters))
	}
	if l.idPrefix != "" {
		args = append(args, "--id-prefix", l.idPrefix)
	}
	if l.duration > 0 {
		args = append(args, "--duration", l.duration.String())
	}
	if l.count > 0 {
		args = append(args, "--count", strconv.Itoa(l.count))
	}
	if l.interval > 0 {
		args = append(args, "--interval", l.interval.String())
	}
	if l.multiplier > 1 {
		args = append(args, "--series-multiplier", strconv.Itoa(l.multiplier))
	}
	path := filepath.Join(h.bin, "telemeter-benchmark")
	if l.cpus != "" {
		args = append([]string{"-c", l.cpus, path}, args...)
		path = "taskset"
	}
	// A bound on the whole run besides the benchmark's own: the duration,
	// or for a count of pushes a generous time, plus the drain.
	limit := l.duration + 2*time.Minute
	if l.duration == 0 {
		limit = 30 * time.Minute
	}
	name := h.logName("benchmark-" + l.name)
	outPath := filepath.Join(h.work, name+".json")
	p, err := h.procs.startOut(h.work, name, outPath, path, args...)
	if err != nil {
		return nil, err
	}
	return &loadRun{l: l, p: p, outPath: outPath, limit: limit}, nil
}

// wait waits for the benchmark to finish and returns its report.
func (r *loadRun) wait(ctx context.Context) (benchmark.Report, error) {
	var rep benchmark.Report
	select {
	case <-r.p.done:
	case <-time.After(r.limit):
		r.p.kill()
		return rep, fmt.Errorf("benchmark %s still running after %s: killed", r.l.name, r.limit)
	case <-ctx.Done():
		r.p.stop(10 * time.Second)
		return rep, ctx.Err()
	}
	if r.p.err != nil {
		return rep, fmt.Errorf("benchmark %s: %w\n%s", r.l.name, r.p.err, r.p.tail())
	}
	b, err := os.ReadFile(r.outPath)
	if err != nil {
		return rep, err
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		return rep, fmt.Errorf("benchmark %s report: %w", r.l.name, err)
	}
	return rep, nil
}

func (h *harness) runLoad(ctx context.Context, l load) (benchmark.Report, error) {
	r, err := h.startLoad(l)
	if err != nil {
		return benchmark.Report{}, err
	}
	return r.wait(ctx)
}

// writeClusterKeys writes a shared signing key (EC P-256, PEM) and a gossip
// key file (base64 of 32 random bytes) for a cluster of servers.
func writeClusterKeys(dir string) (sharedKey, gossipKey string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", "", err
	}
	sharedKey = filepath.Join(dir, "shared-key.pem")
	if err := os.WriteFile(sharedKey, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return "", "", err
	}
	g := make([]byte, 32)
	if _, err := rand.Read(g); err != nil {
		return "", "", err
	}
	gossipKey = filepath.Join(dir, "gossip.key")
	if err := os.WriteFile(gossipKey, []byte(base64.StdEncoding.EncodeToString(g)+"\n"), 0o600); err != nil {
		return "", "", err
	}
	return sharedKey, gossipKey, nil
}
