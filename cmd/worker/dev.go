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
// miniredis, an in-memory Redis-compatible server whose data a devStore
// keeps in the state directory across restarts.
type devServers struct {
	nats     *server.Server
	redis    *miniredis.Miniredis
	store    *devStore
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
	// The saved data goes in before anyone can connect.
	ds, ld, err := openDevStore(mr, cfg.StateDir, log)
	if err != nil {
		d.close()
		return nil, fmt.Errorf("embedded redis: %w", err)
	}
	if ld.Corrupt != nil {
		log.Error().Str("path", ld.Path).Str("moved_to", ld.MovedTo).AnErr("cause", ld.Corrupt).
			Msg("DEVELOPMENT MODE: the saved data of the embedded Redis-compatible store cannot be read; it was moved aside and the store starts EMPTY: project configurations, history and request records of dev mode are gone (the moved file is kept for inspection)")
	}
	if err := mr.StartAddr("127.0.0.1:0"); err != nil {
		d.close()
		return nil, fmt.Errorf("embedded redis: %w", err)
	}
	d.redis, d.redisURL = mr, "redis://"+mr.Addr()
	ds.start()
	d.store = ds

	ev := log.Warn().Str("nats", d.natsURL).Str("redis", d.redisURL).Str("nats_data", filepath.Join(cfg.StateDir, "nats")).Str("redis_data", ld.Path).Bool("redis_data_restored", ld.Found)
	switch {
	case ld.Found:
		ev = ev.Int("redis_keys_restored", ld.Restored).Int("redis_keys_expired", ld.Expired).Time("redis_saved_at", ld.SavedAt)
	case ld.Corrupt != nil:
		ev = ev.Str("redis_data_moved_to", ld.MovedTo)
	}
	ev.Msg("DEVELOPMENT MODE: embedded nats-server (data in " + filepath.Join(cfg.StateDir, "nats") + ") and embedded Redis-compatible store (in memory, saved to " +
		ld.Path + " every second while it changes and on a graceful stop; a crash loses at most the last seconds); nothing is authenticated. Do not use in production: pass --nats-url and --redis-url.")
	return d, nil
}

// close saves the store (after the worker's last write: Worker.Close
// closes its store connection first) and stops the servers.
func (d *devServers) close() {
	if d.store != nil {
		d.store.close()
	}
	if d.redis != nil {
		d.redis.Close()
	}
	if d.nats != nil {
		d.nats.Shutdown()
		d.nats.WaitForShutdown()
	}
}
