package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/telemeter/telemeter/internal/push"
	"github.com/telemeter/telemeter/internal/scrape"
	"github.com/telemeter/telemeter/internal/transform"
	"github.com/telemeter/telemeter/internal/upload"
)

// intervalJitter is the relative spread of the waits after the first push:
// each wait is the interval ±5 %, so clients keep the spread the first push
// gave them instead of drifting into step.
const intervalJitter = 0.05

type metrics struct {
	samples     prometheus.Gauge
	lastSuccess prometheus.Gauge
	reloads     *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	m := &metrics{
		samples: f.NewGauge(prometheus.GaugeOpts{
			Name: "telemeter_client_samples_pushed",
			Help: "Series in the last batch pushed successfully.",
		}),
		lastSuccess: f.NewGauge(prometheus.GaugeOpts{
			Name: "telemeter_client_last_push_success_timestamp_seconds",
			Help: "Unix time of the last successful push.",
		}),
		reloads: f.NewCounterVec(prometheus.CounterOpts{
			Name: "telemeter_client_reloads_total",
			Help: "Configuration reloads by result (success, failure).",
		}, []string{"result"}),
	}
	m.reloads.WithLabelValues("success")
	m.reloads.WithLabelValues("failure")
	return m
}

// client is one running telemeter-client.
type client struct {
	opts    *Options
	scraper *scrape.Scraper
	pusher  *push.Client
	metrics *metrics
	logger  *slog.Logger
	now     func() time.Time
	sleep   func(context.Context, time.Duration) error
	rand    func() float64

	cfg       atomic.Pointer[config]
	reloadMu  sync.Mutex             // one reload at a time
	lastBatch atomic.Pointer[[]byte] // body of the last successful push

	mu        sync.Mutex
	succeeded bool
	lastErr   error
}

func newClient(o *Options, logger *slog.Logger, reg prometheus.Registerer) (*client, error) {
	cfg, err := loadConfig(o)
	if err != nil {
		return nil, err
	}
	now := o.Now
	if now == nil {
		now = time.Now
	}
	sleep := o.Sleep
	if sleep == nil {
		sleep = sleepContext
	}
	r := o.Rand
	if r == nil {
		r = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	var rmu sync.Mutex
	randFloat := func() float64 {
		rmu.Lock()
		defer rmu.Unlock()
		return r.Float64()
	}
	sc, err := scrape.New(scrape.Options{
		From:      o.From,
		Token:     o.FromToken,
		TokenFile: o.FromTokenFile,
		CAFile:    o.FromCAFile,
		Transport: o.Transport,
	}, logger.With("component", "scrape"), reg)
	if err != nil {
		return nil, err
	}
	pc, err := push.New(push.Options{
		AuthorizeURL:   o.authorizeURL(),
		UploadURL:      o.uploadURL(),
		ID:             o.ID,
		Token:          o.ToToken,
		TokenFile:      o.ToTokenFile,
		CAFile:         o.ToCAFile,
		CertFile:       o.ToCertFile,
		KeyFile:        o.ToKeyFile,
		Transport:      o.Transport,
		RequestTimeout: o.RequestTimeout,
		LimitBytes:     o.LimitBytes,
		Backoff:        o.Backoff,
		Now:            now,
		Sleep:          sleep,
		Rand:           randFloat,
	}, logger.With("component", "push"), reg)
	if err != nil {
		return nil, err
	}
	c := &client{
		opts:    o,
		scraper: sc,
		pusher:  pc,
		metrics: newMetrics(reg),
		logger:  logger,
		now:     now,
		sleep:   sleep,
		rand:    randFloat,
	}
	c.cfg.Store(cfg)
	return c, nil
}

func sleepContext(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// firstDelay is the wait before the first push: uniform in [0, interval), so
// that a fleet started at once (after an outage, a rollout) spreads its
// pushes over a whole interval instead of hitting the server together.
func firstDelay(r func() float64, interval time.Duration) time.Duration {
	return time.Duration(r() * float64(interval))
}

// nextDelay is the wait between pushes: interval ± intervalJitter.
func nextDelay(r func() float64, interval time.Duration) time.Duration {
	f := 1 + intervalJitter*(2*r()-1)
	return time.Duration(f * float64(interval))
}

// loop pushes every interval until ctx is done. A failed cycle is logged and
// counted; the next one starts on schedule.
func (c *client) loop(ctx context.Context) error {
	interval := c.opts.Interval
	delay := firstDelay(c.rand, interval)
	c.logger.Info("first push scheduled", "in", delay.Round(time.Millisecond).String(), "interval", interval.String())
	if err := c.sleep(ctx, delay); err != nil {
		return nil
	}
	for {
		next := c.now().Add(nextDelay(c.rand, interval))
		// Retries of one cycle stop before the next cycle is due.
		cctx, cancel := context.WithDeadline(ctx, next)
		err := c.cycle(cctx)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			c.logger.Error("cycle failed", "err", err, "result", push.Result(err))
		}
		if err := c.sleep(ctx, max(0, next.Sub(c.now()))); err != nil {
			return nil
		}
	}
}

// cycle scrapes, transforms and pushes once.
func (c *client) cycle(ctx context.Context) error {
	err := c.runCycle(ctx)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err == nil {
		c.succeeded, c.lastErr = true, nil
	} else {
		c.lastErr = err
	}
	return err
}

func (c *client) runCycle(ctx context.Context) error {
	cfg := c.cfg.Load()
	families, err := c.scraper.Scrape(ctx, cfg.rules)
	if err != nil {
		return err
	}
	families, err = cfg.chain.Apply(families)
	if err != nil {
		return fmt.Errorf("transform: %w", err)
	}
	var (
		body         []byte
		fams, series int
	)
	err = c.pusher.Push(ctx, func(labels map[string]string) ([]byte, error) {
		// The labels of /authorize come last, so that no local flag or
		// source label can replace the cluster's identity.
		out, err := transform.Chain{transform.AddLabels(labels), transform.Sort()}.Apply(families)
		if err != nil {
			return nil, fmt.Errorf("add authorized labels: %w", err)
		}
		upload.SortFamilies(out)
		families = out
		fams, series = len(out), 0
		for _, mf := range out {
			series += len(mf.GetMetric())
		}
		body, err = upload.Body(out)
		return body, err
	})
	if err != nil {
		return err
	}
	// The batch is kept as the body that left, not as decoded families:
	// a tenth of the memory, held from one cycle to the next.
	c.lastBatch.Store(&body)
	c.metrics.samples.Set(float64(series))
	c.metrics.lastSuccess.Set(float64(c.now().UnixNano()) / 1e9)
	c.logger.Debug("pushed", "families", fams, "series", series)
	if series == 0 {
		c.logger.Warn("pushed an empty batch: no series matched the rules", "rules", len(cfg.rules))
	}
	return nil
}

// ready reports whether a push has succeeded since start. It stays ready
// after later failures: telemeter_client_last_push_success_timestamp_seconds
// is the signal to alert on.
func (c *client) ready() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.succeeded {
		return nil
	}
	if c.lastErr != nil {
		return fmt.Errorf("no successful push yet: %w", c.lastErr)
	}
	return errors.New("no successful push yet")
}

// reload re-reads the file-backed configuration. On failure the running
// configuration stays.
func (c *client) reload() error {
	c.reloadMu.Lock()
	defer c.reloadMu.Unlock()
	c.logger.Debug("reloading configuration", "match_file", c.opts.MatchFile, "salt_file", c.opts.AnonymizeSaltFile)
	cfg, err := loadConfig(c.opts)
	if err != nil {
		c.metrics.reloads.WithLabelValues("failure").Inc()
		c.logger.Error("reload failed, keeping the running configuration", "err", err)
		return err
	}
	old := c.cfg.Swap(cfg)
	if old.toToken != cfg.toToken {
		c.pusher.Invalidate()
	}
	c.metrics.reloads.WithLabelValues("success").Inc()
	c.logger.Info("configuration reloaded", "rules", len(cfg.rules))
	return nil
}
