package remotewrite

import (
	"bytes"
	"container/heap"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/telemeter/telemeter/internal/store"
	"github.com/telemeter/telemeter/internal/upload"
)

// DefaultTenantHeader is the tenant header of Thanos Receive. Mimir and
// Cortex use X-Scope-OrgID.
const DefaultTenantHeader = "THANOS-TENANT"

// UserAgent is sent with every remote-write request.
const UserAgent = "telemeter-server"

// ForwarderOptions configure a Forwarder. URL is required.
type ForwarderOptions struct {
	URL string // the remote-write endpoint (--forward-url)
	// TenantHeader carries the cluster ID. Default DefaultTenantHeader.
	TenantHeader string
	// BearerTokenFile, or BasicUser and BasicPasswordFile, authenticate to
	// the target. The files are read at every request, so they can rotate.
	BearerTokenFile              string
	BasicUser, BasicPasswordFile string
	// CAFile is a PEM bundle for the target's certificate. Empty: system roots.
	CAFile string
	// Timeout bounds one request. Default 30s.
	Timeout time.Duration
	// MinBackoff and MaxBackoff shape the exponential wait after a retryable
	// failure. Defaults 500ms and 30s.
	MinBackoff, MaxBackoff time.Duration
	// Workers is how many requests are in flight at most. Default 4.
	Workers int
	// MaxRequestBytes bounds one request's protobuf encoding; a larger
	// snapshot is split. Default DefaultMaxRequestBytes.
	MaxRequestBytes int
	// Now is the clock of the lag gauge and the last-success timestamp; it
	// must be the clock the received times come from. Default time.Now.
	// Waits between retries always use the real clock.
	Now func() time.Time
	// Transport replaces the HTTP transport (tests). CAFile is ignored then.
	Transport http.RoundTripper
}

// Source gives a cluster's latest snapshot: the store. An error wrapping
// store.ErrNotFound means the cluster has none any more; one wrapping
// upload.ErrUnavailable is worth trying again.
type Source interface {
	Families(clusterID string) ([]*dto.MetricFamily, store.Meta, error)
}

// Forwarder sends every cluster's latest snapshot to a remote-write target.
// Notify marks a cluster dirty; Run's workers send dirty clusters, re-reading
// each snapshot from the Source, and retry with backoff until the target
// takes it or refuses it for good.
type Forwarder struct {
	o       ForwarderOptions
	url     string
	src     Source
	client  *http.Client
	logger  *slog.Logger
	metrics *metrics
	running atomic.Bool
	wake    chan struct{} // one token: a worker should look again

	mu    sync.Mutex
	dirty map[string]*pending // bounded by the number of clusters
	ready fifo                // dirty, not in flight, not waiting
	// delayed holds clusters waiting out their backoff, soonest first.
	delayed delayHeap
	// pauseUntil stops every worker after the target itself failed (no
	// answer or 5xx): while it is down, one request per backoff probes it
	// instead of one per dirty cluster.
	pauseUntil  time.Time
	targetFails int

	onRetry func(clusterID string, delay time.Duration) // test hook
}

// pending is the dirty state of one cluster.
type pending struct {
	id     string
	oldest time.Time // the oldest received time not yet sent
	latest time.Time // the newest received time notified
	// renotified says a Notify came while the cluster was in flight, with
	// nextOldest the earliest such received time: the snapshot being sent
	// may not be the newest.
	renotified bool
	nextOldest time.Time
	inFlight   bool
	attempts   int       // consecutive retryable failures
	notBefore  time.Time // end of the backoff, on the real clock
	index      int       // in delayed, -1 when not there
}

// NewForwarder checks o and returns a Forwarder; nothing is sent before Run.
func NewForwarder(o ForwarderOptions, src Source, logger *slog.Logger, reg prometheus.Registerer) (*Forwarder, error) {
	if err := o.setDefaults(); err != nil {
		return nil, err
	}
	u, err := url.Parse(o.URL)
	if err != nil {
		return nil, fmt.Errorf("parse forward URL: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("check forward URL: want http(s)://host/path, got %q", o.URL)
	}
	transport := o.Transport
	if transport == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = o.Workers
		if o.CAFile != "" {
			pem, err := os.ReadFile(o.CAFile)
			if err != nil {
				return nil, fmt.Errorf("read forward CA file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("read forward CA file: no certificate in %s", o.CAFile)
			}
			t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		}
		transport = t
	}
	f := &Forwarder{
		o:      o,
		url:    u.String(),
		src:    src,
		client: &http.Client{Transport: transport},
		logger: logger,
		wake:   make(chan struct{}, 1),
		dirty:  make(map[string]*pending),
	}
	if _, err := f.credentials(); err != nil {
		return nil, err
	}
	f.metrics = newMetrics(reg, func() float64 { return f.Lag().Seconds() }, func() float64 { return float64(f.Pending()) })
	return f, nil
}

func (o *ForwarderOptions) setDefaults() error {
	if o.URL == "" {
		return errors.New("check forward options: URL is required")
	}
	if o.TenantHeader == "" {
		o.TenantHeader = DefaultTenantHeader
	}
	if !validHeaderName(o.TenantHeader) {
		return fmt.Errorf("check forward options: invalid tenant header %q", o.TenantHeader)
	}
	if o.BearerTokenFile != "" && (o.BasicUser != "" || o.BasicPasswordFile != "") {
		return errors.New("check forward options: a bearer token and basic auth exclude each other")
	}
	if (o.BasicUser == "") != (o.BasicPasswordFile == "") {
		return errors.New("check forward options: basic auth needs both a user and a password file")
	}
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 500 * time.Millisecond
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 30 * time.Second
	}
	o.MaxBackoff = max(o.MaxBackoff, o.MinBackoff)
	if o.Workers <= 0 {
		o.Workers = 4
	}
	if o.MaxRequestBytes <= 0 {
		o.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return nil
}

// validHeaderName reports whether s is an HTTP token (RFC 9110 §5.6.2).
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

// validHeaderValue reports whether s can be sent as a header value: no
// control characters but tab.
func validHeaderValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return s != ""
}

// Notify marks clusterID dirty: its snapshot received at received is stored.
// It never blocks on the network; notifies of a cluster that is already
// dirty coalesce, since only its latest snapshot is sent.
func (f *Forwarder) Notify(clusterID string, received time.Time) {
	f.mu.Lock()
	f.notifyLocked(clusterID, received)
	f.mu.Unlock()
	f.signal()
}

// NotifyAll marks every snapshot of metas dirty, as after a restart, when
// the target may have missed them.
func (f *Forwarder) NotifyAll(metas []store.Meta) {
	f.mu.Lock()
	for _, m := range metas {
		f.notifyLocked(m.ClusterID, m.Received)
	}
	f.mu.Unlock()
	f.signal()
}

func (f *Forwarder) notifyLocked(id string, received time.Time) {
	p := f.dirty[id]
	if p == nil {
		p = &pending{id: id, oldest: received, latest: received, index: -1}
		f.dirty[id] = p
		f.ready.push(p)
		return
	}
	if received.After(p.latest) {
		p.latest = received
	}
	if p.inFlight {
		if !p.renotified || received.Before(p.nextOldest) {
			p.nextOldest = received
		}
		p.renotified = true
	}
}

// Pending returns how many clusters wait to be sent.
func (f *Forwarder) Pending() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.dirty)
}

// Lag returns how long ago the oldest snapshot not yet sent was received;
// 0 when every cluster is sent.
func (f *Forwarder) Lag() time.Duration {
	f.mu.Lock()
	var oldest time.Time
	for _, p := range f.dirty {
		if oldest.IsZero() || p.oldest.Before(oldest) {
			oldest = p.oldest
		}
	}
	f.mu.Unlock()
	if oldest.IsZero() {
		return 0
	}
	return max(0, f.o.Now().Sub(oldest))
}

func (f *Forwarder) signal() {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// Run sends dirty clusters with o.Workers workers until ctx ends. Clusters
// still dirty then are not sent; after a restart the caller notifies every
// stored cluster again (NotifyAll).
func (f *Forwarder) Run(ctx context.Context) error {
	if !f.running.CompareAndSwap(false, true) {
		return errors.New("run forwarder: already running")
	}
	var wg sync.WaitGroup
	for range f.o.Workers {
		wg.Go(func() { f.work(ctx) })
	}
	wg.Wait()
	f.client.CloseIdleConnections()
	return nil
}

func (f *Forwarder) work(ctx context.Context) {
	var enc encoder
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		p, ok := f.next(ctx, timer)
		if !ok {
			return
		}
		f.finish(p, f.forward(ctx, p.id, &enc))
	}
}

// next waits for a cluster to send and marks it in flight.
func (f *Forwarder) next(ctx context.Context, timer *time.Timer) (*pending, bool) {
	for {
		if ctx.Err() != nil {
			return nil, false
		}
		f.mu.Lock()
		now := time.Now()
		for len(f.delayed) > 0 && !f.delayed[0].notBefore.After(now) {
			f.ready.push(heap.Pop(&f.delayed).(*pending))
		}
		wait := time.Duration(-1)
		switch {
		case now.Before(f.pauseUntil):
			wait = f.pauseUntil.Sub(now)
		case f.ready.len() > 0:
			p := f.ready.pop()
			p.inFlight, p.renotified, p.nextOldest = true, false, time.Time{}
			more := f.ready.len() > 0
			f.mu.Unlock()
			if more {
				f.signal() // another idle worker can take the next one
			}
			return p, true
		case len(f.delayed) > 0:
			wait = f.delayed[0].notBefore.Sub(now)
		}
		f.mu.Unlock()
		var fire <-chan time.Time
		if wait >= 0 {
			timer.Reset(wait)
			fire = timer.C
		}
		select {
		case <-ctx.Done():
		case <-f.wake:
		case <-fire:
		}
		timer.Stop()
	}
}

type outcomeKind int

const (
	outcomeDone      outcomeKind = iota // sent, or dropped for good
	outcomeRetry                        // try again after a backoff
	outcomeCancelled                    // Run is ending
)

type outcome struct {
	kind     outcomeKind
	received time.Time // of the snapshot sent or dropped
	// targetDown: no answer or a 5xx; every worker pauses. answered: the
	// target answered something other than a 5xx, so it is up.
	targetDown, answered bool
	retryAfter           time.Duration
}

// forward reads the cluster's snapshot and sends it.
func (f *Forwarder) forward(ctx context.Context, id string, enc *encoder) outcome {
	defer enc.release()
	families, meta, err := f.src.Families(id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return outcome{} // deleted (TTL): nothing left to send
	case errors.Is(err, upload.ErrUnavailable):
		f.metrics.failures.WithLabelValues(reasonStore).Inc()
		f.logger.Warn("cannot read snapshot to forward, will retry", "cluster", id, "err", err)
		return outcome{kind: outcomeRetry}
	case err != nil:
		f.metrics.failures.WithLabelValues(reasonStore).Inc()
		f.metrics.snapshots.WithLabelValues(snapshotDropped).Inc()
		f.logger.Error("cannot read snapshot to forward, dropping it", "cluster", id, "err", err)
		return outcome{}
	}
	if !validHeaderValue(id) {
		f.metrics.failures.WithLabelValues(reasonRejected).Inc()
		f.metrics.snapshots.WithLabelValues(snapshotDropped).Inc()
		f.logger.Error("cluster ID cannot be sent as a tenant header, dropping snapshot", "cluster", id)
		return outcome{received: meta.Received}
	}
	series := enc.conv.convert(families, meta.Received.UnixMilli())
	start := 0
	answered := false
	for _, end := range split(series, f.o.MaxRequestBytes) {
		body, err := enc.encode(series[start:end])
		if err != nil {
			f.metrics.snapshots.WithLabelValues(snapshotDropped).Inc()
			f.logger.Error("cannot encode snapshot, dropping it", "cluster", id, "err", err)
			return outcome{received: meta.Received, answered: answered}
		}
		o, ok := f.post(ctx, id, body, end-start)
		o.received = meta.Received
		o.answered = o.answered || answered
		if !ok {
			if o.kind == outcomeDone {
				f.metrics.snapshots.WithLabelValues(snapshotDropped).Inc()
			}
			return o
		}
		answered = true
		start = end
	}
	f.metrics.snapshots.WithLabelValues(snapshotSent).Inc()
	return outcome{received: meta.Received, answered: answered}
}

// post sends one request; ok is true when the target accepted it.
func (f *Forwarder) post(ctx context.Context, id string, body []byte, samples int) (outcome, bool) {
	rctx, cancel := context.WithTimeout(ctx, f.o.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, f.url, bytes.NewReader(body))
	if err != nil {
		f.logger.Error("cannot build remote-write request", "err", err)
		return outcome{kind: outcomeRetry, targetDown: true}, false
	}
	req.Header.Set("Content-Encoding", upload.EncodingSnappy)
	req.Header.Set("Content-Type", ContentType)
	req.Header.Set(VersionHeader, Version)
	req.Header.Set("User-Agent", UserAgent)
	req.Header.Set(f.o.TenantHeader, id)
	cred, err := f.credentials()
	if err != nil {
		f.metrics.requests.WithLabelValues(resultRetry).Inc()
		f.metrics.failures.WithLabelValues(reasonTransport).Inc()
		f.logger.Warn("cannot read remote-write credentials", "err", err)
		return outcome{kind: outcomeRetry, targetDown: true}, false
	}
	cred(req)

	start := time.Now()
	resp, err := f.client.Do(req)
	f.metrics.duration.Observe(time.Since(start).Seconds())
	if err != nil {
		if ctx.Err() != nil {
			return outcome{kind: outcomeCancelled}, false
		}
		f.metrics.requests.WithLabelValues(resultRetry).Inc()
		f.metrics.failures.WithLabelValues(reasonTransport).Inc()
		f.logger.Debug("remote-write request failed", "cluster", id, "err", err)
		return outcome{kind: outcomeRetry, targetDown: true}, false
	}
	defer func() { _ = resp.Body.Close() }()
	reason := readReason(resp.Body)
	code := resp.StatusCode
	switch {
	case code >= 200 && code < 300:
		f.metrics.requests.WithLabelValues(resultSuccess).Inc()
		f.metrics.samples.Add(float64(samples))
		f.metrics.bytes.Add(float64(len(body)))
		f.metrics.lastSuccess.Set(float64(f.o.Now().UnixNano()) / 1e9)
		return outcome{answered: true}, true
	case code == http.StatusTooManyRequests:
		f.metrics.requests.WithLabelValues(resultRetry).Inc()
		f.metrics.failures.WithLabelValues(reasonRateLimited).Inc()
		f.logger.Debug("remote-write target is rate limiting", "cluster", id, "reason", reason)
		return outcome{kind: outcomeRetry, answered: true, retryAfter: upload.ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now())}, false
	case code >= 500:
		f.metrics.requests.WithLabelValues(resultRetry).Inc()
		f.metrics.failures.WithLabelValues(reasonServerError).Inc()
		f.logger.Debug("remote-write target failed", "cluster", id, "status", code, "reason", reason)
		return outcome{kind: outcomeRetry, targetDown: true, retryAfter: upload.ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now())}, false
	default:
		f.metrics.requests.WithLabelValues(resultDropped).Inc()
		f.metrics.failures.WithLabelValues(reasonRejected).Inc()
		f.logger.Warn("remote-write target refused a snapshot, dropping it", "cluster", id, "status", code, "reason", reason)
		return outcome{answered: true}, false
	}
}

// readReason returns the first line of a response body, at most 512 bytes,
// and drains a little more of it so the connection can be reused.
func readReason(body io.Reader) string {
	b, _ := io.ReadAll(io.LimitReader(body, 4<<10))
	_, _ = io.Copy(io.Discard, io.LimitReader(body, 64<<10))
	s := strings.TrimSpace(string(b))
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 512 {
		s = s[:512]
	}
	return s
}

// credentials reads the credential files and returns what sets them on a
// request.
func (f *Forwarder) credentials() (func(*http.Request), error) {
	switch {
	case f.o.BearerTokenFile != "":
		b, err := os.ReadFile(f.o.BearerTokenFile)
		if err != nil {
			return nil, fmt.Errorf("read forward bearer token: %w", err)
		}
		token := strings.TrimSpace(string(b))
		return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+token) }, nil
	case f.o.BasicUser != "":
		b, err := os.ReadFile(f.o.BasicPasswordFile)
		if err != nil {
			return nil, fmt.Errorf("read forward basic auth password: %w", err)
		}
		password := strings.TrimRight(string(b), "\r\n")
		return func(r *http.Request) { r.SetBasicAuth(f.o.BasicUser, password) }, nil
	}
	return func(*http.Request) {}, nil
}

// finish records what happened to an in-flight cluster.
func (f *Forwarder) finish(p *pending, o outcome) {
	f.mu.Lock()
	defer f.signal()
	defer f.mu.Unlock()
	p.inFlight = false
	now := time.Now()
	if o.answered && !o.targetDown {
		if f.targetFails > 0 {
			f.logger.Info("remote-write target answers again", "failures", f.targetFails)
		}
		f.targetFails, f.pauseUntil = 0, time.Time{}
	}
	switch o.kind {
	case outcomeCancelled:
		f.ready.push(p)
	case outcomeRetry:
		p.attempts++
		retryAfter := min(o.retryAfter, f.maxRetryAfter())
		delay := max(f.backoff(p.attempts), retryAfter)
		p.notBefore = now.Add(delay)
		heap.Push(&f.delayed, p)
		if o.targetDown && !now.Before(f.pauseUntil) {
			f.targetFails++
			f.pauseUntil = now.Add(max(f.backoff(f.targetFails), retryAfter))
			if f.targetFails == 1 {
				f.logger.Warn("remote-write target is failing, pausing", "pause", f.pauseUntil.Sub(now))
			}
		}
		if f.onRetry != nil {
			f.onRetry(p.id, delay)
		}
	default:
		p.attempts = 0
		if p.renotified && p.latest.After(o.received) {
			// A newer snapshot was stored while this one was sent.
			p.oldest = p.nextOldest
			if !p.oldest.After(o.received) {
				p.oldest = p.latest
			}
			f.ready.push(p)
			return
		}
		delete(f.dirty, p.id)
	}
}

// backoff is the wait after the n-th consecutive failure (n ≥ 1).
func (f *Forwarder) backoff(n int) time.Duration {
	d := f.o.MinBackoff
	for i := 1; i < n && d < f.o.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, f.o.MaxBackoff)
}

// maxRetryAfter caps the wait a Retry-After header can impose.
func (f *Forwarder) maxRetryAfter() time.Duration {
	return max(5*time.Minute, f.o.MaxBackoff)
}

// fifo is a queue of clusters ready to send.
type fifo struct {
	items []*pending
	head  int
}

func (q *fifo) len() int { return len(q.items) - q.head }

func (q *fifo) push(p *pending) { q.items = append(q.items, p) }

func (q *fifo) pop() *pending {
	p := q.items[q.head]
	q.items[q.head] = nil
	q.head++
	if q.head == len(q.items) {
		q.items, q.head = q.items[:0], 0
	} else if q.head >= 1024 && q.head*2 >= len(q.items) {
		n := copy(q.items, q.items[q.head:])
		clear(q.items[n:])
		q.items, q.head = q.items[:n], 0
	}
	return p
}

// delayHeap orders waiting clusters by the end of their backoff.
type delayHeap []*pending

func (h delayHeap) Len() int           { return len(h) }
func (h delayHeap) Less(i, j int) bool { return h[i].notBefore.Before(h[j].notBefore) }
func (h delayHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *delayHeap) Push(x any) {
	p := x.(*pending)
	p.index = len(*h)
	*h = append(*h, p)
}
func (h *delayHeap) Pop() any {
	old := *h
	p := old[len(old)-1]
	old[len(old)-1] = nil
	p.index = -1
	*h = old[:len(old)-1]
	return p
}
