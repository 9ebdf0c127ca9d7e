package auth

import (
	"bytes"
	"container/list"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/telemeter/telemeter/internal/upload"
)

// Defaults of UpstreamOptions.
const (
	DefaultUpstreamCacheTTL    = time.Minute
	DefaultUpstreamNegativeTTL = 10 * time.Second
	DefaultUpstreamMaxEntries  = 10000
	DefaultUpstreamTimeout     = 10 * time.Second
	// DefaultUpstreamRetryAfter is the wait passed on when the upstream
	// throttles without a Retry-After of its own.
	DefaultUpstreamRetryAfter = 30 * time.Second
	// maxUpstreamAnswerBytes bounds an upstream answer read into memory.
	maxUpstreamAnswerBytes = 64 << 10
)

// UpstreamOptions tune the cache in front of an upstream authorizer. A zero
// field takes its default.
type UpstreamOptions struct {
	// CacheTTL is how long an allowed answer is reused; negative disables
	// caching of allowed answers.
	CacheTTL time.Duration
	// NegativeTTL is how long a refusal (401, 403, 409) is reused; negative
	// disables caching of refusals. Throttling and failures are not cached.
	NegativeTTL time.Duration
	// MaxEntries bounds the cache; the least recently used entry goes first.
	MaxEntries int
	// Timeout bounds one upstream call, whatever the callers' contexts say.
	Timeout time.Duration
	Now     func() time.Time
}

func (o UpstreamOptions) withDefaults() UpstreamOptions {
	if o.CacheTTL == 0 {
		o.CacheTTL = DefaultUpstreamCacheTTL
	}
	if o.NegativeTTL == 0 {
		o.NegativeTTL = DefaultUpstreamNegativeTTL
	}
	if o.MaxEntries <= 0 {
		o.MaxEntries = DefaultUpstreamMaxEntries
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultUpstreamTimeout
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Upstream is an Authorizer that asks an authorization service over HTTP,
// with the protocol of DESIGN §3 (see the authorization-server binary). It
// caches answers briefly, keyed by a salted SHA-256 of token and cluster ID,
// and collapses identical concurrent requests into one upstream call.
type Upstream struct {
	url    string
	client *http.Client
	o      UpstreamOptions
	logger *slog.Logger
	m      *upstreamMetrics
	salt   [32]byte

	mu       sync.Mutex
	entries  map[cacheKey]*list.Element // of *cacheEntry
	lru      *list.List                 // front: most recently used
	inflight map[cacheKey]*upstreamCall
}

type cacheKey [sha256.Size]byte

type cacheEntry struct {
	key     cacheKey
	account string
	err     error
	expires time.Time
}

type upstreamCall struct {
	done    chan struct{}
	account string
	err     error
}

type upstreamMetrics struct {
	requests *prometheus.CounterVec
	duration prometheus.Histogram
	hits     prometheus.Counter
	misses   prometheus.Counter
	shared   prometheus.Counter
	entries  prometheus.Gauge
}

// Results of upstream calls, the values of the result label.
const (
	resultAllowed       = "allowed"
	resultUnauthorized  = "unauthorized"
	resultForbidden     = "forbidden"
	resultConflict      = "conflict"
	resultRateLimited   = "rate_limited"
	resultInvalidAnswer = "invalid_answer"
	resultError         = "error"
)

func newUpstreamMetrics(reg prometheus.Registerer) *upstreamMetrics {
	f := promauto.With(reg)
	m := &upstreamMetrics{
		requests: f.NewCounterVec(prometheus.CounterOpts{
			Name: "telemeter_server_authorize_upstream_requests_total",
			Help: "Calls to the upstream authorizer by result.",
		}, []string{"result"}),
		duration: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "telemeter_server_authorize_upstream_request_duration_seconds",
			Help:    "Latency of calls to the upstream authorizer.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		hits: f.NewCounter(prometheus.CounterOpts{
			Name: "telemeter_server_authorize_cache_hits_total",
			Help: "Authorizations answered from the cache of upstream answers.",
		}),
		misses: f.NewCounter(prometheus.CounterOpts{
			Name: "telemeter_server_authorize_cache_misses_total",
			Help: "Authorizations not found in the cache of upstream answers.",
		}),
		shared: f.NewCounter(prometheus.CounterOpts{
			Name: "telemeter_server_authorize_upstream_shared_total",
			Help: "Authorizations that waited for an identical upstream call already in flight.",
		}),
		entries: f.NewGauge(prometheus.GaugeOpts{
			Name: "telemeter_server_authorize_cache_entries",
			Help: "Answers held in the cache of upstream answers.",
		}),
	}
	for _, r := range []string{resultAllowed, resultUnauthorized, resultForbidden, resultConflict, resultRateLimited, resultInvalidAnswer, resultError} {
		m.requests.WithLabelValues(r)
	}
	return m
}

// NewUpstream returns an Authorizer asking url. client should have TLS set
// up as needed; Options.Timeout bounds every call regardless of the client.
func NewUpstream(url string, client *http.Client, o UpstreamOptions, logger *slog.Logger, reg prometheus.Registerer) *Upstream {
	if client == nil {
		client = http.DefaultClient
	}
	u := &Upstream{
		url:      url,
		client:   client,
		o:        o.withDefaults(),
		logger:   logger,
		m:        newUpstreamMetrics(reg),
		entries:  make(map[cacheKey]*list.Element),
		lru:      list.New(),
		inflight: make(map[cacheKey]*upstreamCall),
	}
	_, _ = rand.Read(u.salt[:]) // never fails: crypto/rand crashes the program instead
	return u
}

func (u *Upstream) key(token, clusterID string) cacheKey {
	h := sha256.New()
	h.Write(u.salt[:])
	_, _ = fmt.Fprintf(h, "%d:%s", len(token), token) // length prefix: no ambiguity between the parts
	h.Write([]byte(clusterID))
	var k cacheKey
	h.Sum(k[:0])
	return k
}

// Authorize implements Authorizer.
func (u *Upstream) Authorize(ctx context.Context, token, clusterID string) (string, error) {
	key := u.key(token, clusterID)

	u.mu.Lock()
	if e, ok := u.lookup(key); ok {
		u.mu.Unlock()
		u.m.hits.Inc()
		return e.account, e.err
	}
	u.m.misses.Inc()
	call, ok := u.inflight[key]
	if ok {
		u.m.shared.Inc()
	} else {
		call = &upstreamCall{done: make(chan struct{})}
		u.inflight[key] = call
		// The call outlives a caller that gives up: others may wait on it,
		// and its answer fills the cache. Options.Timeout bounds it.
		go u.fetch(context.WithoutCancel(ctx), key, call, token, clusterID)
	}
	u.mu.Unlock()

	select {
	case <-call.done:
		return call.account, call.err
	case <-ctx.Done():
		return "", fmt.Errorf("authorize upstream: %w: %w", upload.ErrUnavailable, ctx.Err())
	}
}

// lookup returns a live cache entry and marks it used. u.mu is held.
func (u *Upstream) lookup(key cacheKey) (*cacheEntry, bool) {
	el, ok := u.entries[key]
	if !ok {
		return nil, false
	}
	e := el.Value.(*cacheEntry)
	if !u.o.Now().Before(e.expires) {
		u.lru.Remove(el)
		delete(u.entries, key)
		u.m.entries.Set(float64(u.lru.Len()))
		return nil, false
	}
	u.lru.MoveToFront(el)
	return e, true
}

// store caches an answer for ttl, evicting the least recently used entries
// beyond MaxEntries. u.mu is held.
func (u *Upstream) store(key cacheKey, account string, err error, ttl time.Duration) {
	e := &cacheEntry{key: key, account: account, err: err, expires: u.o.Now().Add(ttl)}
	if el, ok := u.entries[key]; ok {
		el.Value = e
		u.lru.MoveToFront(el)
	} else {
		u.entries[key] = u.lru.PushFront(e)
	}
	for u.lru.Len() > u.o.MaxEntries {
		old := u.lru.Back()
		u.lru.Remove(old)
		delete(u.entries, old.Value.(*cacheEntry).key)
	}
	u.m.entries.Set(float64(u.lru.Len()))
}

func (u *Upstream) fetch(ctx context.Context, key cacheKey, call *upstreamCall, token, clusterID string) {
	ctx, cancel := context.WithTimeout(ctx, u.o.Timeout)
	defer cancel()
	start := time.Now()
	account, result, err := u.ask(ctx, token, clusterID)
	u.m.duration.Observe(time.Since(start).Seconds())
	u.m.requests.WithLabelValues(result).Inc()

	u.mu.Lock()
	delete(u.inflight, key)
	switch result {
	case resultAllowed:
		if u.o.CacheTTL > 0 {
			u.store(key, account, nil, u.o.CacheTTL)
		}
	case resultUnauthorized, resultForbidden, resultConflict:
		if u.o.NegativeTTL > 0 {
			u.store(key, "", err, u.o.NegativeTTL)
		}
	}
	u.mu.Unlock()

	call.account, call.err = account, err
	close(call.done)
}

// ask makes one upstream call and classifies the answer.
func (u *Upstream) ask(ctx context.Context, token, clusterID string) (string, string, error) {
	body, err := json.Marshal(upload.TokenReview{ClusterID: clusterID, AuthorizationToken: token})
	if err != nil {
		return "", resultError, fmt.Errorf("encode token review: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.url, bytes.NewReader(body))
	if err != nil {
		return "", resultError, fmt.Errorf("build upstream request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := u.client.Do(req)
	if err != nil {
		u.logger.Warn("upstream authorizer unreachable", "err", err)
		return "", resultError, upload.WithRetryAfter(upload.ErrUnavailable, 0, "upstream authorizer unreachable")
	}
	defer func() { _ = resp.Body.Close() }()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxUpstreamAnswerBytes+1))
	if err != nil {
		u.logger.Warn("read upstream answer", "err", err, "code", resp.StatusCode)
		return "", resultError, upload.Errorf(upload.ErrUnavailable, "upstream authorizer answer unreadable")
	}
	if len(answer) > maxUpstreamAnswerBytes {
		u.logger.Warn("upstream answer too large", "code", resp.StatusCode)
		return "", resultInvalidAnswer, upload.Errorf(upload.ErrUnavailable, "upstream authorizer answer too large")
	}

	switch resp.StatusCode {
	case http.StatusOK, http.StatusCreated:
		var review upload.TokenReview
		if err := json.Unmarshal(answer, &review); err != nil || review.AccountID == "" {
			u.logger.Warn("upstream allowed without an account id", "code", resp.StatusCode)
			return "", resultInvalidAnswer, upload.Errorf(upload.ErrUnavailable, "upstream authorizer answer has no account id")
		}
		return review.AccountID, resultAllowed, nil
	case http.StatusUnauthorized:
		return "", resultUnauthorized, upload.Errorf(upload.ErrUnauthorized, "cluster token not recognized")
	case http.StatusForbidden:
		return "", resultForbidden, upload.Errorf(upload.ErrForbidden, "cluster token may not claim this cluster id")
	case http.StatusConflict:
		return "", resultConflict, upload.Errorf(upload.ErrConflict, "cluster id belongs to another account")
	case http.StatusTooManyRequests:
		wait := upload.ParseRetryAfter(resp.Header.Get("Retry-After"), u.o.Now())
		if wait <= 0 {
			wait = DefaultUpstreamRetryAfter
		}
		return "", resultRateLimited, upload.WithRetryAfter(upload.ErrRateLimited, wait, "upstream authorizer is throttling")
	}
	u.logger.Warn("upstream authorizer failed", "code", resp.StatusCode)
	wait := upload.ParseRetryAfter(resp.Header.Get("Retry-After"), u.o.Now())
	return "", resultError, upload.WithRetryAfter(upload.ErrUnavailable, wait, fmt.Sprintf("upstream authorizer answered %d", resp.StatusCode))
}
