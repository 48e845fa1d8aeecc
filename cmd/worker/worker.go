package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/berth-ops/berth/auth"
	"github.com/berth-ops/berth/docker"
	"github.com/berth-ops/berth/events"
	"github.com/berth-ops/berth/handlers"
	"github.com/berth-ops/berth/natsbus"
	"github.com/berth-ops/berth/redact"
	"github.com/berth-ops/berth/store"
)

// Worker is a running worker: its connections and its intake.
type Worker struct {
	log    zerolog.Logger
	dev    *devServers
	nc     *nats.Conn
	store  *store.Store
	engine *docker.Engine
	intake *natsbus.Intake
	cancel context.CancelFunc
	done   chan error
	// NATSURL is the NATS URL the worker is connected to.
	NATSURL string
	// RedisURL is the store's address (without credentials).
	RedisAddr string
}

// Start connects to NATS, Redis and Docker (starting the embedded servers
// in dev mode), declares the streams and starts pulling commands.
func Start(ctx context.Context, cfg *Config, log zerolog.Logger) (w *Worker, err error) {
	w = &Worker{log: log, done: make(chan error, 1)}
	defer func() {
		if err != nil {
			w.Close()
		}
	}()
	natsURL, redisURL := cfg.NATSURL, cfg.RedisURL
	if cfg.Dev {
		if w.dev, err = startDev(cfg, log); err != nil {
			return nil, err
		}
		natsURL, redisURL = w.dev.natsURL, w.dev.redisURL
	}
	w.NATSURL = natsURL

	if w.store, err = store.New(store.Config{URL: redisURL, Prefix: cfg.Prefix + ":"}); err != nil {
		return nil, fmt.Errorf("redis: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	err = w.store.Ping(pctx)
	cancel()
	if err != nil {
		// The worker still starts: read-only commands answer from Docker,
		// mutations get store_unavailable until Redis is back.
		log.Warn().Err(err).Msg("redis is not reachable yet")
	}

	if w.engine, err = docker.New(); err != nil {
		return nil, fmt.Errorf("docker: %w", err)
	}
	pctx, cancel = context.WithTimeout(ctx, 5*time.Second)
	if err := w.engine.Ping(pctx); err != nil {
		log.Warn().Err(err).Msg("docker engine is not reachable yet; commands will get docker_unavailable until it is")
	}
	cancel()

	if w.nc, err = connectNATS(cfg, natsURL, log); err != nil {
		return nil, fmt.Errorf("nats %s: %w", natsURL, err)
	}
	js, err := jetstream.New(w.nc)
	if err != nil {
		return nil, err
	}

	svc, err := handlers.NewService(w.store, w.engine, handlers.Config{
		Admins: cfg.Admins, Roots: cfg.Roots, StatusTTL: cfg.StatusTTL, StateDir: cfg.StateDir, ConfirmTTL: cfg.ConfirmTTL,
		VerifyTimeout: cfg.VerifyTimeout, Stabilize: cfg.Stabilize, KeepReleases: cfg.KeepReleases,
		LockLease: cfg.AckWait, PauseAt: cfg.TestPauseAt, PauseFor: cfg.TestPauseFor,
	})
	if err != nil {
		return nil, err
	}
	svc.Confirms, svc.Locks, svc.Composer = w.store, w.store, w.engine
	if svc.Redactor, err = redact.New(cfg.RedactPatterns, cfg.NoDefaultRedact); err != nil {
		return nil, err
	}
	// Finish what a stopped worker left half done before taking commands.
	if err := svc.Recover(log.WithContext(ctx), nil); err != nil {
		log.Error().Err(err).Msg("recovery of interrupted operations failed; their projects may need attention")
	}
	mux := handlers.NewMux()
	svc.Register(mux)
	subjects := events.NewSubjects(cfg.Prefix)
	host, _ := os.Hostname()
	topo := natsbus.DefaultTopology(subjects)
	topo.AckWait = cfg.AckWait
	disp := &handlers.Dispatcher{
		Mux: mux, Store: w.store, Emitter: natsbus.NewEmitter(w.nc, js), Subjects: subjects,
		Log: log, WorkerID: fmt.Sprintf("%s/%d", host, os.Getpid()), Heartbeat: cfg.AckWait / 3,
		Authorize: svc.Authorize,
	}
	if v := (&auth.Verifier{Secrets: cfg.SignSecrets, Window: cfg.SignWindow}); v.Enabled() {
		disp.Verify, disp.ClaimSignature, disp.SignatureWindow = v.Verify, w.store.ClaimSignature, cfg.SignWindow
		log.Info().Int("secrets", len(cfg.SignSecrets)).Dur("window", cfg.SignWindow).Msg("signed commands required")
	}
	if len(cfg.Admins) == 0 {
		log.Warn().Msg("no global admins (--admins): no project can be configured until one is named")
	} else if slices.Contains(cfg.Admins, handlers.AnyoneIsAdmin) {
		log.Warn().Msg("every user is a global admin (--admins '*'): for development only")
	}
	w.intake = natsbus.NewIntake(natsbus.IntakeConfig{Topology: topo, FastSlots: cfg.FastSlots, SlowSlots: cfg.SlowSlots, Grace: cfg.Grace}, w.nc, js, disp, log)

	runCtx, cancelRun := context.WithCancel(ctx)
	w.cancel = cancelRun
	go func() { w.done <- w.intake.Run(runCtx) }()
	select {
	case <-w.intake.Ready():
	case err := <-w.done:
		w.done <- err
		return nil, err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	log.Info().Str("nats", natsURL).Str("prefix", cfg.Prefix).Strs("roots", cfg.Roots).Str("state_dir", cfg.StateDir).
		Strs("actions", mux.Actions()).Msg("worker ready")
	return w, nil
}

// Ready is closed when the worker serves commands.
func (w *Worker) Ready() <-chan struct{} { return w.intake.Ready() }

// Stop begins a graceful shutdown; Wait returns when it is over.
func (w *Worker) Stop() { w.cancel() }

// Wait blocks until the intake has stopped and in-flight work is over.
func (w *Worker) Wait() error {
	err := <-w.done
	w.done <- err
	return err
}

// Close releases the connections in order: the NATS connection is drained
// (flushing pending events) first, then Redis, then Docker, then the
// embedded servers of dev mode. Call it after Wait.
func (w *Worker) Close() {
	if w.cancel != nil {
		w.cancel()
	}
	if w.nc != nil {
		if err := w.nc.Drain(); err != nil {
			w.nc.Close()
		}
		for i := 0; i < 100 && !w.nc.IsClosed(); i++ {
			time.Sleep(50 * time.Millisecond)
		}
	}
	if w.store != nil {
		_ = w.store.Close()
	}
	if w.engine != nil {
		_ = w.engine.Close()
	}
	if w.dev != nil {
		w.dev.close()
	}
}

func connectNATS(cfg *Config, url string, log zerolog.Logger) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.Name("berth-worker"),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.RetryOnFailedConnect(false),
		// Permission violations and slow consumers surface only here.
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			ev := log.Error().Err(err)
			if sub != nil {
				ev = ev.Str("subscription", sub.Subject)
			}
			ev.Msg("nats asynchronous error")
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Warn().Err(err).Msg("nats disconnected; reconnecting")
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info().Str("server", nc.ConnectedUrlRedacted()).Msg("nats reconnected")
		}),
	}
	switch {
	case cfg.NATSCreds != "":
		opts = append(opts, nats.UserCredentials(cfg.NATSCreds))
	case cfg.NATSNKey != "":
		o, err := nats.NkeyOptionFromSeed(cfg.NATSNKey)
		if err != nil {
			return nil, fmt.Errorf("nkey seed %s: %w", cfg.NATSNKey, err)
		}
		opts = append(opts, o)
	}
	if cfg.NATSUser != "" {
		opts = append(opts, nats.UserInfo(cfg.NATSUser, cfg.NATSPass))
	}
	if cfg.TLSCA != "" {
		opts = append(opts, nats.RootCAs(cfg.TLSCA))
	}
	if cfg.TLSCert != "" {
		opts = append(opts, nats.ClientCert(cfg.TLSCert, cfg.TLSKey))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		if errors.Is(err, nats.ErrNoServers) {
			return nil, fmt.Errorf("no NATS server answers at %s: start one, or run without --nats-url for dev mode: %w", strings.Split(url, ",")[0], err)
		}
		return nil, err
	}
	return nc, nil
}
