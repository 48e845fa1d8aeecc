package main

import (
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/rs/zerolog"
)

// devServers are the embedded services of development mode: a real
// nats-server with JetStream (data on disk, reachable by the nats CLI) and
// miniredis, an in-memory Redis-compatible server.
type devServers struct {
	nats     *server.Server
	redis    *miniredis.Miniredis
	natsURL  string
	redisURL string
}

func startDev(cfg *Config, log zerolog.Logger) (*devServers, error) {
	host, portS, err := net.SplitHostPort(cfg.DevNATS)
	if err != nil {
		return nil, fmt.Errorf("--dev-nats-listen %q: %w", cfg.DevNATS, err)
	}
	port, err := strconv.Atoi(portS)
	if err != nil {
		return nil, fmt.Errorf("--dev-nats-listen %q: bad port", cfg.DevNATS)
	}
	d := &devServers{}
	ns, err := server.NewServer(&server.Options{
		ServerName: "berth-dev",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   filepath.Join(cfg.StateDir, "nats"),
		NoSigs:     true,
		NoLog:      true,
	})
	if err != nil {
		return nil, fmt.Errorf("embedded nats-server: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("embedded nats-server did not start on %s (is the port taken? use --dev-nats-listen)", cfg.DevNATS)
	}
	d.nats, d.natsURL = ns, ns.ClientURL()

	mr := miniredis.NewMiniRedis()
	// Without this, miniredis expires keys only when told to: locks of a
	// stopped worker and confirmation tokens would never expire.
	mr.ClockTTL(true)
	if err := mr.StartAddr("127.0.0.1:0"); err != nil {
		d.close()
		return nil, fmt.Errorf("embedded redis: %w", err)
	}
	d.redis, d.redisURL = mr, "redis://"+mr.Addr()

	log.Warn().Str("nats", d.natsURL).Str("redis", d.redisURL).Str("nats_data", filepath.Join(cfg.StateDir, "nats")).
		Msg("DEVELOPMENT MODE: embedded nats-server and in-memory Redis-compatible store; state is lost on exit, and nothing is authenticated. Do not use in production: pass --nats-url and --redis-url.")
	return d, nil
}

func (d *devServers) close() {
	if d.redis != nil {
		d.redis.Close()
	}
	if d.nats != nil {
		d.nats.Shutdown()
		d.nats.WaitForShutdown()
	}
}
