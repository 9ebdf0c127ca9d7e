package client

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"

	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/telemeter/telemeter/internal/web"
)

// NewLogger returns a logfmt logger writing to w at level (debug, info,
// warn, error).
func NewLogger(w io.Writer, level string) (*slog.Logger, error) {
	l, err := parseLevel(level)
	if err != nil {
		return nil, err
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}

// Run runs the client until ctx is done, or, with Once, for one cycle. It
// returns nil after a clean stop, and with Once the cycle's error.
func Run(ctx context.Context, o Options) error {
	if err := o.Validate(); err != nil {
		return err
	}
	logger := o.Logger
	if logger == nil {
		var err error
		if logger, err = NewLogger(os.Stderr, o.LogLevel); err != nil {
			return err
		}
	}
	reg := o.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	c, err := newClient(&o, logger, reg)
	if err != nil {
		return err
	}

	if o.Once {
		cctx, cancel := context.WithTimeout(ctx, o.Interval)
		defer cancel()
		if err := c.cycle(cctx); err != nil {
			return fmt.Errorf("run once: %w", err)
		}
		logger.Info("pushed once")
		return nil
	}

	var g run.Group
	{
		lctx, cancel := context.WithCancel(ctx)
		g.Add(func() error { return c.loop(lctx) }, func(error) { cancel() })
	}
	if l := o.Listener; l != nil || o.Listen != "" {
		if l == nil {
			if l, err = net.Listen("tcp", o.Listen); err != nil {
				return fmt.Errorf("listen on %s: %w", o.Listen, err)
			}
		}
		srv := web.NewServer(c.handler(reg), web.ServerOptions{}, logger.With("component", "web"))
		sctx, cancel := context.WithCancel(ctx)
		g.Add(func() error { return srv.Serve(sctx, l) }, func(error) { cancel() })
		logger.Info("serving", "address", l.Addr().String())
	}
	if o.Reload != nil {
		rctx, cancel := context.WithCancel(ctx)
		g.Add(func() error {
			for {
				select {
				case <-rctx.Done():
					return nil
				case <-o.Reload:
					_ = c.reload() // logged and counted; the old configuration stays
				}
			}
		}, func(error) { cancel() })
	}
	logger.Info("telemeter-client started", "upload", o.uploadURL(), "cluster", o.ID, "interval", o.Interval.String())
	err = g.Run()
	logger.Info("telemeter-client stopped")
	return err
}
