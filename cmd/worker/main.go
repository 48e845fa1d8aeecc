// Command worker runs Berth: it takes commands from NATS JetStream, executes
// them against the local Docker Engine, and publishes events.
//
// Without --nats-url and --redis-url it starts in development mode with an
// in-process nats-server and an in-process Redis-compatible store.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Getenv, os.Stderr))
}

// run starts the worker and blocks until ctx ends; it returns the exit code.
func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) int {
	cfg, err := ParseConfig(args, getenv)
	if err != nil {
		fmt.Fprintf(stderr, "worker: %v\n", err)
		return 2
	}
	log := newLogger(cfg, stderr)
	// go-redis logs each failed dial on its own, process-wide: route it
	// through zerolog.
	redis.SetLogger(redisLogger{log})
	w, err := Start(ctx, cfg, log)
	if err != nil {
		log.Error().Err(err).Msg("worker cannot start")
		return 1
	}
	err = w.Wait()
	w.Close()
	if err != nil {
		log.Error().Err(err).Msg("worker stopped with an error")
		return 1
	}
	log.Info().Msg("worker stopped")
	return 0
}

func newLogger(cfg *Config, w io.Writer) zerolog.Logger {
	lvl, err := zerolog.ParseLevel(cfg.LogLevel)
	if err != nil || lvl == zerolog.NoLevel {
		lvl = zerolog.InfoLevel
	}
	if cfg.LogFormat == "console" {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly}
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Str("component", "berth-worker").Logger()
}

// redisLogger adapts zerolog to go-redis's logger.
type redisLogger struct{ log zerolog.Logger }

func (l redisLogger) Printf(_ context.Context, format string, v ...any) {
	l.log.Debug().Str("component", "redis").Msgf(format, v...)
}
