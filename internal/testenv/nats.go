package testenv

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// NATS starts a real nats-server with JetStream in-process on a random
// loopback port, with its store in a temporary directory, and returns it.
// It is shut down when the test ends.
func NATS(t testing.TB) *server.Server {
	t.Helper()
	return StartNATS(t, &server.Options{JetStream: true})
}

// StartNATS starts a nats-server in-process with opts (users, permissions,
// a loaded configuration file) on a random loopback port, quiet, with its
// JetStream store in a temporary directory unless opts names one, and
// shuts it down when the test ends.
func StartNATS(t testing.TB, opts *server.Options) *server.Server {
	t.Helper()
	Integration(t)
	opts.Host, opts.Port, opts.NoLog, opts.NoSigs = "127.0.0.1", server.RANDOM_PORT, true, true
	if opts.JetStream && opts.StoreDir == "" {
		opts.StoreDir = t.TempDir()
	}
	s, err := server.NewServer(opts)
	if err != nil {
		Unavailable(t, "nats-server: %v", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		Unavailable(t, "nats-server did not become ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s
}

// Connect connects to s and closes the connection when the test ends.
func Connect(t testing.TB, s *server.Server) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatalf("connect to nats: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}
