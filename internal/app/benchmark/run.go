package benchmark

import (
	"bytes"
	"container/heap"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/telemeter/telemeter/internal/upload"
	"github.com/telemeter/telemeter/internal/web"
)

// Bounds on what the benchmark reads of an answer.
const (
	maxAuthorizeAnswer = 64 << 10
	maxReasonBytes     = 512     // logged at debug level
	maxDrainBytes      = 1 << 20 // read and dropped so the connection is reused
)

// Run simulates Options.Workers clusters pushing to the server until every
// cluster made Options.Count pushes, Options.Duration passed, or ctx is
// done, whichever comes first, and reports what it measured. Requests in
// flight at the end get a few seconds to finish. An error means the run
// could not start (or its listener failed); answers of the server, good or
// bad, are in the report.
func Run(ctx context.Context, o Options) (Report, error) {
	if err := o.Validate(); err != nil {
		return Report{}, err
	}
	logger := o.Logger
	if logger == nil {
		var err error
		if logger, err = NewLogger(os.Stderr, o.LogLevel); err != nil {
			return Report{}, err
		}
	}
	reg := o.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	b, err := newBench(&o, logger, reg)
	if err != nil {
		return Report{}, err
	}

	var g run.Group
	var rep Report
	{
		base, cancel := context.WithCancel(ctx)
		g.Add(func() error {
			var authorized time.Duration
			if o.Preauthorize {
				authorized = b.preauthorize(base)
			}
			// --duration counts from the start of the schedule.
			rctx, rcancel := context.WithCancel(base)
			if o.Duration > 0 {
				rctx, rcancel = context.WithTimeout(base, o.Duration)
			}
			defer rcancel()
			rep = b.run(rctx)
			rep.PreauthorizeSeconds = authorized.Seconds()
			return nil
		}, func(error) { cancel() })
	}
	if l := o.Listener; l != nil || o.Listen != "" {
		if l == nil {
			if l, err = net.Listen("tcp", o.Listen); err != nil {
				return Report{}, fmt.Errorf("listen on %s: %w", o.Listen, err)
			}
		}
		mux := http.NewServeMux()
		web.Health(mux, nil)
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
		srv := web.NewServer(mux, web.ServerOptions{ShutdownTimeout: time.Second}, logger.With("component", "web"))
		sctx, cancel := context.WithCancel(ctx)
		g.Add(func() error { return srv.Serve(sctx, l) }, func(error) { cancel() })
		logger.Info("serving metrics", "address", l.Addr().String())
	}
	if err := g.Run(); err != nil {
		return rep, fmt.Errorf("serve metrics: %w", err)
	}
	return rep, nil
}

// bench is one run: the template, the clusters and the HTTP client they
// share, and what they measured.
type bench struct {
	o         *Options
	target    string
	tmpl      *template
	flat      *flatTemplate // the peers' view of tmpl; nil for telemeter
	clusters  []*cluster
	token     string
	client    *http.Client
	authURL   *url.URL
	uploadURL string
	logger    *slog.Logger
	metrics   *metrics
	stats     *stats
	now       func() time.Time
	clashLog  sync.Once
}

func newBench(o *Options, logger *slog.Logger, reg prometheus.Registerer) (*bench, error) {
	text := t232
	if o.MetricsFile != "" {
		var err error
		if text, err = os.ReadFile(o.MetricsFile); err != nil {
			return nil, fmt.Errorf("--metrics-file: %w", err)
		}
	}
	tmpl, err := parseTemplate(text, o.SeriesMultiplier)
	if err != nil {
		return nil, fmt.Errorf("--metrics-file: %w", err)
	}
	token := o.ToToken
	if o.ToTokenFile != "" {
		if token, err = readSecret(o.ToTokenFile); err != nil {
			return nil, fmt.Errorf("--to-token-file: %w", err)
		}
	}
	authURL, err := url.Parse(o.authorizeURL())
	if err != nil {
		return nil, fmt.Errorf("--to-auth: %w", err)
	}
	client, err := newHTTPClient(o)
	if err != nil {
		return nil, err
	}
	ids, err := clusterIDs(o)
	if err != nil {
		return nil, err
	}
	b := &bench{
		o:         o,
		target:    o.target(),
		tmpl:      tmpl,
		token:     token,
		client:    client,
		authURL:   authURL,
		uploadURL: o.uploadURL(),
		logger:    logger,
		metrics:   newMetrics(reg),
		stats:     newStats(),
		now:       time.Now,
	}
	seed := o.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	if b.target != TargetTelemeter {
		b.flat = tmpl.flatten()
	}
	for i, id := range ids {
		c := newCluster(id, tmpl, rand.New(rand.NewPCG(seed, uint64(i))))
		if b.target == TargetPushgateway {
			c.pushURL = pushgatewayURL(b.uploadURL, id)
		}
		b.clusters = append(b.clusters, c)
	}
	b.metrics.clusters.Set(float64(len(ids)))

	body, err := b.encode(newEncoder(), b.clusters[0])
	if err != nil {
		return nil, err
	}
	logger.Info("template ready", "target", b.target,
		"series", tmpl.series, "samples", tmpl.samples, "families", len(tmpl.families),
		"body_bytes", len(body), "clusters", len(ids), "mode", o.Mode, "seed", seed)
	return b, nil
}

// maxIDsFile bounds what --ids-file may hold.
const maxIDsFile = 64 << 20

// clusterIDs are the IDs of the simulated clusters: those of --ids-file,
// or --workers of them named after --id-prefix.
func clusterIDs(o *Options) ([]string, error) {
	if o.IDsFile == "" {
		width := len(strconv.Itoa(o.Workers - 1))
		ids := make([]string, o.Workers)
		for i := range ids {
			ids[i] = fmt.Sprintf("%s%0*d", o.IDPrefix, width, i)
		}
		return ids, nil
	}
	f, err := os.Open(o.IDsFile)
	if err != nil {
		return nil, fmt.Errorf("--ids-file: %w", err)
	}
	defer func() { _ = f.Close() }()
	text, err := io.ReadAll(io.LimitReader(f, maxIDsFile+1))
	if err != nil {
		return nil, fmt.Errorf("--ids-file: %w", err)
	}
	if len(text) > maxIDsFile {
		return nil, fmt.Errorf("--ids-file: %s is larger than %d bytes", o.IDsFile, maxIDsFile)
	}
	var ids []string
	seen := map[string]bool{}
	for line := range strings.Lines(string(text)) {
		id := strings.TrimSpace(line)
		if id == "" || strings.HasPrefix(id, "#") {
			continue
		}
		if seen[id] {
			return nil, fmt.Errorf("--ids-file: cluster ID %q appears twice", id)
		}
		seen[id] = true
		ids = append(ids, id)
	}
	if len(ids) == 0 {
		return nil, fmt.Errorf("--ids-file: no cluster ID in %s", o.IDsFile)
	}
	o.Workers = len(ids)
	return ids, nil
}

// encode returns c's current values as the target's body, stamped now
// where the target takes timestamps. The bytes are valid until enc's next
// use.
func (b *bench) encode(enc *encoder, c *cluster) ([]byte, error) {
	// A cluster's pushes carry increasing timestamps even when two of them
	// fall in one millisecond: a receiver would refuse a second, different
	// sample at the same instant.
	ts := max(b.now().UnixMilli(), c.lastTS+1)
	c.lastTS = ts
	switch b.target {
	case TargetRemoteWrite:
		return enc.encodeRemoteWrite(b.flat, c, ts), nil
	case TargetPushgateway:
		return enc.encodeText(b.flat, c), nil
	}
	return enc.encode(b.tmpl, c, ts)
}

// newHTTPClient returns a client that keeps up to --concurrency HTTP/1.1
// connections alive, so that, like a fleet of clients, the benchmark uses
// many connections rather than one multiplexed HTTP/2 connection.
func newHTTPClient(o *Options) (*http.Client, error) {
	if o.Transport != nil {
		return &http.Client{Transport: o.Transport}, nil
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 2 * o.Concurrency
	t.MaxIdleConnsPerHost = o.Concurrency
	t.ForceAttemptHTTP2 = false
	t.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	if o.ToCAFile != "" {
		pem, err := os.ReadFile(o.ToCAFile)
		if err != nil {
			return nil, fmt.Errorf("--to-ca-file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--to-ca-file: no PEM certificate in %s", o.ToCAFile)
		}
		t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: t}, nil
}

// run pushes until the clusters are done or ctx is. Requests still in
// flight when ctx is done may finish within drainTimeout.
func (b *bench) run(ctx context.Context) Report {
	hard, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	go func() {
		select {
		case <-ctx.Done():
		case <-hard.Done():
			return
		}
		t := time.NewTimer(drainTimeout)
		defer t.Stop()
		select {
		case <-t.C:
			cancel()
		case <-hard.Done():
		}
	}()

	start, cpuStart := b.now(), cpuTime()
	b.metrics.scheduleStart.Set(float64(start.UnixNano()) / 1e9)
	ready := make(chan *cluster)
	returned := make(chan *cluster, len(b.clusters))
	var wg sync.WaitGroup
	for range min(b.o.Concurrency, len(b.clusters)) {
		wg.Go(func() {
			enc := newEncoder()
			for c := range ready {
				b.push(hard, c, enc)
				returned <- c
			}
		})
	}
	b.schedule(ctx, start, ready, returned)
	wg.Wait()
	wall := b.now().Sub(start)

	rep := b.stats.report(Report{
		Target:              b.target,
		Mode:                b.o.Mode,
		Clusters:            len(b.clusters),
		SeriesPerPush:       b.tmpl.series,
		SamplesPerPush:      b.tmpl.samples,
		GeneratorCPUSeconds: (cpuTime() - cpuStart).Seconds(),
	}, wall)
	b.logger.Info("benchmark done", "wall_seconds", rep.WallSeconds, "uploads", rep.Uploads,
		"accepted", rep.Accepted, "non_2xx", rep.NonSuccess, "transport_errors", rep.TransportErrors)
	return rep
}

// preauthorize gets every cluster its upload token before the schedule
// starts (telemeter target only), with at most --concurrency requests in
// flight, so that the timed run holds no token exchange. A cluster whose
// authorization failed tries again at its first push. It returns how long
// it took.
func (b *bench) preauthorize(ctx context.Context) time.Duration {
	if b.target != TargetTelemeter {
		return 0
	}
	began := time.Now()
	work := make(chan *cluster)
	var wg sync.WaitGroup
	for range min(b.o.Concurrency, len(b.clusters)) {
		wg.Go(func() {
			for c := range work {
				b.authorize(ctx, c)
			}
		})
	}
feed:
	for _, c := range b.clusters {
		select {
		case work <- c:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	took := time.Since(began)
	b.logger.Info("clusters authorized before the schedule", "clusters", len(b.clusters), "seconds", took.Seconds())
	return took
}

// schedule hands clusters to the pushers when they are due, and takes them
// back, until every cluster made its count of pushes or ctx is done. It
// closes ready when it returns. Clusters come back on returned, which has
// room for all of them, so a pusher never waits for the scheduler.
func (b *bench) schedule(ctx context.Context, start time.Time, ready chan<- *cluster, returned <-chan *cluster) {
	defer close(ready)
	saturate := b.o.Mode == ModeSaturate
	h := make(clusterHeap, 0, len(b.clusters))
	for i, c := range b.clusters {
		c.seq = uint64(i)
		c.next = start
		if !saturate {
			c.next = firstPush(start, b.o.Interval, c.rng)
		}
		h = append(h, c)
	}
	heap.Init(&h)
	seq := uint64(len(b.clusters))
	remaining := len(b.clusters)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()

	for remaining > 0 {
		now := b.now()
		for h.Len() > 0 && !h[0].next.After(now) {
			c := heap.Pop(&h).(*cluster)
			select {
			case ready <- c:
			case <-ctx.Done():
				return
			}
			now = b.now()
			if !saturate {
				lag := now.Sub(c.next)
				b.stats.lag(lag)
				b.metrics.lag.Observe(lag.Seconds())
			}
		}
		var due <-chan time.Time
		if h.Len() > 0 {
			timer.Reset(h[0].next.Sub(now))
			due = timer.C
		}
		select {
		case <-ctx.Done():
			return
		case <-due:
		case c := <-returned:
			if b.o.Count > 0 && c.pushes >= b.o.Count {
				remaining--
				continue
			}
			if saturate {
				c.next = b.now()
			} else {
				c.next = nextPush(c.next, b.o.Interval, c.rng)
			}
			c.seq = seq
			seq++
			heap.Push(&h, c)
		}
	}
}

// firstPush spreads the first pushes of the clusters uniformly over the
// first interval, as a fleet that has been running for a while.
func firstPush(start time.Time, interval time.Duration, r *rand.Rand) time.Time {
	return start.Add(time.Duration(r.Float64() * float64(interval)))
}

// nextPush is one interval after prev, give or take the jitter.
func nextPush(prev time.Time, interval time.Duration, r *rand.Rand) time.Time {
	return prev.Add(time.Duration(float64(interval) * (1 + jitter*(2*r.Float64()-1))))
}

// push makes one push of c: authorize if it has no token, evolve its
// values, upload; after a 401, authorize again and upload the same body
// once more. The peers have no tokens: one upload, whatever the answer.
func (b *bench) push(ctx context.Context, c *cluster, enc *encoder) {
	c.pushes++
	telemeter := b.target == TargetTelemeter
	if telemeter && c.jwt == "" && !b.authorize(ctx, c) {
		return
	}
	b.tmpl.evolve(c)
	body, err := b.encode(enc, c)
	if err != nil {
		b.logger.Error("encode body", "cluster", c.id, "err", err)
		return
	}
	if b.upload(ctx, c, body) != http.StatusUnauthorized || !telemeter {
		return
	}
	c.jwt = ""
	b.stats.reauth.Add(1)
	if b.authorize(ctx, c) {
		b.upload(ctx, c, body)
	}
}

// upload sends body as c and returns the status code, or 0 without an answer.
func (b *bench) upload(ctx context.Context, c *cluster, body []byte) int {
	rctx, cancel := context.WithTimeout(ctx, b.o.RequestTimeout)
	defer cancel()
	req, err := b.uploadRequest(rctx, c, body)
	if err != nil {
		b.logger.Error("build upload request", "err", err)
		return 0
	}

	b.metrics.inflight.Inc()
	defer b.metrics.inflight.Dec()
	b.metrics.bytes.Add(float64(len(body)))
	b.stats.bytes.Add(int64(len(body)))
	began := time.Now()
	resp, err := b.client.Do(req)
	if err != nil {
		outcome := classify(ctx, rctx, err)
		b.stats.upload(outcome)
		b.metrics.uploads.WithLabelValues(outcome).Inc()
		b.logger.Debug("upload failed", "cluster", c.id, "outcome", outcome, "err", err)
		return 0
	}
	defer func() { _ = resp.Body.Close() }()
	reason := drain(resp)
	took := time.Since(began)

	code := strconv.Itoa(resp.StatusCode)
	b.stats.latency.record(took)
	b.stats.upload(code)
	b.metrics.duration.Observe(took.Seconds())
	b.metrics.uploads.WithLabelValues(code).Inc()
	if resp.StatusCode/100 == 2 {
		b.stats.samples.Add(int64(b.tmpl.samples))
		b.metrics.samples.Add(float64(b.tmpl.samples))
	} else {
		b.logger.Debug("upload refused", "cluster", c.id, "code", resp.StatusCode, "reason", reason)
	}
	return resp.StatusCode
}

// uploadRequest builds the upload of body as c to the target.
func (b *bench) uploadRequest(ctx context.Context, c *cluster, body []byte) (*http.Request, error) {
	method, u := http.MethodPost, b.uploadURL
	if b.target == TargetPushgateway {
		method, u = http.MethodPut, c.pushURL
	}
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	switch b.target {
	case TargetRemoteWrite:
		req.Header.Set("Content-Type", remoteWriteContentType)
		req.Header.Set("Content-Encoding", upload.EncodingSnappy)
		req.Header.Set("X-Prometheus-Remote-Write-Version", remoteWriteVersion)
	case TargetPushgateway:
		req.Header.Set("Content-Type", textContentType)
	default:
		req.Header.Set("Authorization", "Bearer "+c.jwt)
		req.Header.Set("Content-Type", upload.MediaTypeProtoDelim)
		req.Header.Set("Content-Encoding", upload.EncodingSnappy)
	}
	req.Header.Set("User-Agent", "telemeter-benchmark")
	return req, nil
}

// authorize exchanges the cluster token for c's upload token.
func (b *bench) authorize(ctx context.Context, c *cluster) bool {
	rctx, cancel := context.WithTimeout(ctx, b.o.RequestTimeout)
	defer cancel()
	u := *b.authURL
	q := u.Query()
	q.Set("id", c.id)
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, u.String(), http.NoBody)
	if err != nil {
		b.logger.Error("build authorize request", "err", err)
		return false
	}
	req.Header.Set("Authorization", "Bearer "+b.token)
	req.Header.Set("User-Agent", "telemeter-benchmark")

	b.metrics.inflight.Inc()
	defer b.metrics.inflight.Dec()
	resp, err := b.client.Do(req)
	if err != nil {
		outcome := classify(ctx, rctx, err)
		b.stats.authorized(outcome)
		b.metrics.authorizations.WithLabelValues(outcome).Inc()
		b.logger.Debug("authorize failed", "cluster", c.id, "outcome", outcome, "err", err)
		return false
	}
	defer func() { _ = resp.Body.Close() }()
	code := strconv.Itoa(resp.StatusCode)
	b.stats.authorized(code)
	b.metrics.authorizations.WithLabelValues(code).Inc()
	if resp.StatusCode/100 != 2 {
		b.logger.Debug("authorize refused", "cluster", c.id, "code", resp.StatusCode, "reason", drain(resp))
		return false
	}
	var ar upload.AuthorizeResponse
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxAuthorizeAnswer)).Decode(&ar); err != nil || ar.Token == "" {
		b.logger.Warn("authorize answer without a token", "cluster", c.id, "err", err)
		return false
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxDrainBytes))
	c.jwt = ar.Token
	if clashes := c.setIdentity(b.tmpl, ar.Labels); len(clashes) > 0 {
		b.clashLog.Do(func() {
			b.logger.Warn("authorize labels clash with template labels; the server will see them twice",
				"labels", strings.Join(clashes, ","))
		})
	}
	return true
}

// drain reads the start of an answer as its reason and drops the rest, so
// the connection can be reused. The caller closes the body.
func drain(resp *http.Response) string {
	reason, _ := io.ReadAll(io.LimitReader(resp.Body, maxReasonBytes))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxDrainBytes))
	line, _, _ := strings.Cut(string(reason), "\n")
	return line
}

// classify names a request that got no answer: canceled by the end of the
// run, timed out, or failed otherwise.
func classify(run, request context.Context, err error) string {
	var ne net.Error
	switch {
	case run.Err() != nil:
		return outcomeCanceled
	case request.Err() != nil, errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return outcomeTimeout
	}
	return outcomeError
}

// clusterHeap orders clusters by when their next push is due.
type clusterHeap []*cluster

func (h clusterHeap) Len() int { return len(h) }
func (h clusterHeap) Less(i, j int) bool {
	if !h[i].next.Equal(h[j].next) {
		return h[i].next.Before(h[j].next)
	}
	return h[i].seq < h[j].seq
}
func (h clusterHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *clusterHeap) Push(x any)   { *h = append(*h, x.(*cluster)) }
func (h *clusterHeap) Pop() any {
	old := *h
	c := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return c
}
