// Command authorization-server is the upstream authorizer of
// telemeter-server, backed by a tokens file:
//
//	authorization-server [flags] <listen-address> <tokens.json>
//
// See internal/app/authorizationserver.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/telemeter/telemeter/internal/app/authorizationserver"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("authorization-server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	claimsFile := fs.String("claims-file", "", "where claimed cluster IDs are persisted (default: beside the tokens file, tokens.json → tokens.claims.json)")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
	fs.Usage = func() {
		_, _ = fmt.Fprintln(stderr, "usage: authorization-server [flags] <listen-address> <tokens.json>")
		fs.PrintDefaults()
	}
	positional, err := parseInterleaved(fs, args)
	if err != nil {
		return 2
	}
	if len(positional) != 2 {
		_, _ = fmt.Fprintln(stderr, "expected two arguments, the listen address and the path to the tokens file")
		fs.Usage()
		return 2
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		_, _ = fmt.Fprintf(stderr, "invalid --log-level %q: %v\n", *logLevel, err)
		return 2
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	err = authorizationserver.Run(ctx, authorizationserver.Options{
		ListenAddress: positional[0],
		TokensFile:    positional[1],
		ClaimsFile:    *claimsFile,
		Logger:        logger,
		Registry:      reg,
	})
	if err != nil {
		logger.Error("authorization server failed", "err", err)
		return 1
	}
	return 0
}

// parseInterleaved parses flags that may come before, between or after the
// positional arguments, as in "authorization-server :9001 tokens.json
// --log-level=debug". A "--" ends the flags.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return positional, nil
		}
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			return append(positional, rest...), nil
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
}
