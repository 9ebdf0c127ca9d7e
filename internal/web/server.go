package web

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// ServerOptions bound what one connection may cost the server. A zero field
// takes the default given beside it.
type ServerOptions struct {
	ReadHeaderTimeout time.Duration // 10s: the whole header, against slowloris
	ReadTimeout       time.Duration // 60s: header and body together
	WriteTimeout      time.Duration // 2m: long enough for a large /federate
	IdleTimeout       time.Duration // 2m: keep-alive between requests
	MaxHeaderBytes    int           // 64 KiB
	ShutdownTimeout   time.Duration // 15s: in-flight requests finish on shutdown
	TLSConfig         *tls.Config   // nil: plain HTTP
}

func (o ServerOptions) withDefaults() ServerOptions {
	if o.ReadHeaderTimeout <= 0 {
		o.ReadHeaderTimeout = 10 * time.Second
	}
	if o.ReadTimeout <= 0 {
		o.ReadTimeout = time.Minute
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 2 * time.Minute
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 2 * time.Minute
	}
	if o.MaxHeaderBytes <= 0 {
		o.MaxHeaderBytes = 64 << 10
	}
	if o.ShutdownTimeout <= 0 {
		o.ShutdownTimeout = 15 * time.Second
	}
	return o
}

// Server is an http.Server with its shutdown deadline.
type Server struct {
	*http.Server
	shutdownTimeout time.Duration
}

// NewServer returns a server for h with every timeout set.
func NewServer(h http.Handler, o ServerOptions, logger *slog.Logger) *Server {
	o = o.withDefaults()
	return &Server{
		Server: &http.Server{
			Handler:           h,
			ReadHeaderTimeout: o.ReadHeaderTimeout,
			ReadTimeout:       o.ReadTimeout,
			WriteTimeout:      o.WriteTimeout,
			IdleTimeout:       o.IdleTimeout,
			MaxHeaderBytes:    o.MaxHeaderBytes,
			TLSConfig:         o.TLSConfig,
			ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
		},
		shutdownTimeout: o.ShutdownTimeout,
	}
}

// Serve serves on l until ctx is done, then shuts down, letting requests in
// flight finish within the shutdown timeout. It returns nil after a clean
// shutdown.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	errc := make(chan error, 1)
	go func() {
		var err error
		if s.TLSConfig != nil {
			err = s.ServeTLS(l, "", "")
		} else {
			err = s.Server.Serve(l)
		}
		errc <- err
	}()
	select {
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), s.shutdownTimeout)
	defer cancel()
	err := s.Shutdown(sctx)
	if errors.Is(err, context.DeadlineExceeded) {
		err = s.Close()
	}
	if serr := <-errc; serr != nil && !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}

// LoadTLS returns a server TLS configuration for a certificate and key file,
// re-read on every handshake so a renewed certificate needs no restart.
// Empty paths give nil (plain HTTP).
func LoadTLS(certFile, keyFile string) (*tls.Config, error) {
	if certFile == "" && keyFile == "" {
		return nil, nil
	}
	if certFile == "" || keyFile == "" {
		return nil, errors.New("load tls: both a certificate and a key are needed")
	}
	if _, err := tls.LoadX509KeyPair(certFile, keyFile); err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			c, err := tls.LoadX509KeyPair(certFile, keyFile)
			if err != nil {
				return nil, err
			}
			return &c, nil
		},
	}, nil
}
