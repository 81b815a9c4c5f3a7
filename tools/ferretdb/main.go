// Command ferretdb runs FerretDB v1 (MongoDB wire protocol on PostgreSQL) for
// local development and tests on machines without MongoDB.
//
// Why a main of our own instead of `go install .../cmd/ferretdb`: the upstream
// command panics at start when built from the module archive, because the
// archive lacks build/version/version.txt and the check runs whenever the main
// module is FerretDB itself. Embedding the public `ferretdb` package makes this
// module the main module, so the check is skipped.
package main

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/FerretDB/FerretDB/ferretdb"
)

func main() {
	pgURL := flag.String("postgresql-url", "postgres://postgres@127.0.0.1:5432/ferretdb", "PostgreSQL URL")
	listen := flag.String("listen-addr", "127.0.0.1:27017", "listen address")
	logLevel := flag.String("log-level", "warn", "debug, info, warn, error or none")
	flag.Parse()

	// "none": FerretDB logs every failed statement (expected duplicate-key
	// errors included) at ERROR, which drowns test output.
	level := slog.Level(100)
	if *logLevel != "none" {
		if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
			level = slog.LevelWarn
		}
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	url, err := customPlans(*pgURL)
	if err != nil {
		logger.Error("bad --postgresql-url", "error", err)
		os.Exit(1)
	}
	// Creating an event trigger takes a PostgreSQL superuser. Without one FerretDB still
	// works, only every lookup reads its whole table (see indexes.go).
	if err = installIndexMirror(ctx, url); err != nil {
		logger.Warn("FerretDB runs without GIN twins of its indexes: lookups will scan whole tables", "error", err)
	}

	f, err := ferretdb.New(&ferretdb.Config{
		Listener:      ferretdb.ListenerConfig{TCP: *listen},
		Logger:        logger,
		Handler:       "postgresql",
		PostgreSQLURL: url,
	})
	if err != nil {
		logger.Error("cannot start FerretDB", "error", err)
		os.Exit(1)
	}

	logger.Info("FerretDB listening", "uri", *listen)
	if err := f.Run(ctx); err != nil {
		logger.Error("FerretDB stopped", "error", err)
		os.Exit(1)
	}
}
