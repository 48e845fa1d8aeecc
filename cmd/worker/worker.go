package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/berth-ops/berth"
	"github.com/berth-ops/berth/auth"
	"github.com/berth-ops/berth/docker"
	"github.com/berth-ops/berth/events"
	"github.com/berth-ops/berth/handlers"
	"github.com/berth-ops/berth/metrics"
	"github.com/berth-ops/berth/micro"
	"github.com/berth-ops/berth/natsbus"
	"github.com/berth-ops/berth/redact"
	"github.com/berth-ops/berth/state"
	"github.com/berth-ops/berth/store"
)

// migrateStore moves the Redis keys of the former layout to the current one
// (store.Migrate), and says what it did.
func migrateStore(ctx context.Context, st *store.Store, log zerolog.Logger) error {
	mctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	m, err := st.Migrate(mctx)
	if err != nil {
		return fmt.Errorf("move the keys of the former layout: %w", err)
	}
	if m.Moved > 0 {
		log.Info().Int("moved", m.Moved).Str("redis", st.Addr()).Msg("moved Redis keys of the former layout to their hash-slot names")
	}
	if len(m.Kept) > 0 {
		log.Warn().Strs("keys", m.Kept).Msg("kept Redis keys of the former layout whose new names hold other values; nothing reads them, delete them when checked")
	}
	return nil
}

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
	// metrics are the worker's Prometheus collectors; http serves them
	// with /healthz and /readyz (nil when --http-addr is empty).
	metrics *metrics.Metrics
	http    *metrics.Server
	// queries is the read-only query service (berth.q.>); qmu guards it
	// and qstopped, which keeps a shutdown that came first from being
	// followed by a start.
	qmu      sync.Mutex
	queries  *micro.Server
	qstopped bool
	// serving is set while the intake pulls commands (for /readyz).
	serving atomic.Bool
	// stopWatch ends the engine watch, which drops cached statuses on
	// container events; watchDone is closed when it has returned.
	stopWatch context.CancelFunc
	watchDone chan struct{}
	// stopRecovery ends the loop that finishes interrupted operations;
	// recoveryDone is closed when it has returned.
	stopRecovery context.CancelFunc
	recoveryDone chan struct{}
	// stopFleet ends the fleet heartbeat (recording that the worker
	// stopped); fleetDone is closed when it has.
	stopFleet context.CancelFunc
	fleetDone chan struct{}
	// HTTPAddr is the address the HTTP server listens on, or "".
	HTTPAddr string
	// NATSURL is the NATS URL the worker is connected to.
	NATSURL string
	// RedisURL is the store's address (without credentials).
	RedisAddr string
}

// Start connects to NATS, Redis and Docker (starting the embedded servers
// in dev mode), declares the streams and starts pulling commands.
func Start(ctx context.Context, cfg *Config, log zerolog.Logger) (w *Worker, err error) {
	self := &Worker{log: log, done: make(chan error, 1), metrics: metrics.New()}
	w = self
	defer func() {
		if err != nil {
			self.Close()
		}
	}()
	natsURL, redisURL := cfg.NATSURL, cfg.RedisURL
	if cfg.Host == "" {
		c := *cfg
		c.Host = DefaultHost()
		cfg = &c
	}
	if cfg.Dev {
		if w.dev, err = startDev(cfg, log); err != nil {
			return nil, err
		}
		natsURL, redisURL = w.dev.natsURL, w.dev.redisURL
	}
	w.NATSURL = natsURL

	w.store, err = store.New(store.Config{URL: redisURL, Prefix: cfg.Prefix + ":",
		WaitReplicas: cfg.RedisWaitReplicas, WaitTimeout: cfg.RedisWaitTimeout})
	if err != nil {
		return nil, fmt.Errorf("redis: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	err = w.store.Ping(pctx)
	cancel()
	if err != nil {
		// The worker still starts: read-only commands answer from Docker,
		// mutations get store_unavailable until Redis is back.
		log.Warn().Err(err).Msg("redis is not reachable yet; keys of the former layout are moved at the next start that reaches it")
	} else if err := migrateStore(ctx, w.store, log); err != nil {
		return nil, fmt.Errorf("redis: %w", err)
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
	if cluster := w.nc.ConnectedClusterName(); cluster != "" && cfg.Replicas == 1 {
		log.Warn().Str("cluster", cluster).Msg("the NATS server is part of a cluster, but the streams keep one replica: a lost server loses commands and results; start the workers with --replicas 3")
	}
	js, err := jetstream.New(w.nc)
	if err != nil {
		return nil, err
	}
	// Health and metrics are served from here on, through recovery.
	w.startHTTP(cfg.HTTPAddr)

	svc, err := handlers.NewService(w.store, w.engine, handlers.Config{
		Admins: cfg.Admins, Roots: cfg.Roots, StatusTTL: cfg.StatusTTL, ConfirmTTL: cfg.ConfirmTTL,
		VerifyTimeout: cfg.VerifyTimeout, UndoWait: cfg.UndoWait, Stabilize: cfg.Stabilize, KeepReleases: cfg.KeepReleases,
		LockLease: cfg.AckWait, PauseAt: cfg.TestPauseAt, PauseFor: cfg.TestPauseFor,
	})
	if err != nil {
		return nil, err
	}
	st, err := state.New(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	svc.Confirms, svc.Locks, svc.Composer, svc.State = w.store, w.store, w.engine, st
	svc.Host = cfg.Host
	if svc.Redactor, err = redact.New(cfg.RedactPatterns, cfg.NoDefaultRedact); err != nil {
		return nil, err
	}
	// Finish what a stopped worker left half done before taking commands.
	if err := svc.Recover(log.WithContext(ctx)); err != nil {
		log.Error().Err(err).Msg("some interrupted operations could not be finished yet; the worker keeps trying while it runs")
	}
	mux := handlers.NewMux()
	svc.Register(mux)
	subjects := events.NewSubjects(cfg.Prefix)
	host, _ := os.Hostname()
	topo := natsbus.DefaultTopology(subjects)
	topo.AckWait, topo.Replicas = cfg.AckWait, cfg.Replicas
	workerID := fmt.Sprintf("%s/%d", host, os.Getpid())
	fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	fleet, err := natsbus.OpenFleet(fctx, js, topo, berth.WorkerInfo{Host: cfg.Host, Worker: workerID, Version: Version(),
		StartedAt: time.Now().UTC()}, cfg.Heartbeat, log.With().Str("component", "fleet").Logger())
	if err == nil {
		err = fleet.Announce(fctx)
	}
	cancel()
	if err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	svc.Fleet = fleet
	verifier := &auth.Verifier{Secrets: cfg.SignSecrets, Keys: cfg.SignKeys, Window: cfg.SignWindow}
	admission := &handlers.Admission{Mux: mux, Subjects: subjects, Verifier: verifier, Authorize: svc.Authorize,
		ClaimSignature: w.store.ClaimSignature, SignatureWindow: cfg.SignWindow}
	disp := &handlers.Dispatcher{
		Mux: mux, Store: w.store, Emitter: natsbus.NewEmitter(w.nc, js, cfg.EventSecret), Subjects: subjects,
		Log: log, WorkerID: workerID, Heartbeat: cfg.AckWait / 3,
		Admission: admission, Observer: w.metrics,
	}
	qcfg := micro.Config{Subjects: subjects, Service: svc, Admission: admission, Observer: w.metrics, Log: log.With().Str("component", "queries").Logger(),
		Metadata: map[string]string{"worker": disp.WorkerID, "host": cfg.Host}, Host: cfg.Host, Fleet: fleet}
	switch {
	case verifier.Enabled():
		log.Info().Int("secrets", len(cfg.SignSecrets)).Int("keys", len(cfg.SignKeys)).Dur("window", cfg.SignWindow).Msg("signed commands required")
	case !cfg.Dev:
		log.Warn().Msg("INSECURE: unsigned commands accepted (--insecure-unsigned): anyone who may publish a command may claim to be any user")
	}
	if len(cfg.EventSecret) > 0 {
		log.Info().Msg("events are signed")
	}
	if len(cfg.Admins) == 0 {
		log.Warn().Msg("no global admins (--admins): no project can be configured until one is named")
	} else if slices.Contains(cfg.Admins, handlers.AnyoneIsAdmin) {
		log.Warn().Msg("every user is a global admin (--admins '*'): for development only")
	}
	w.intake = natsbus.NewIntake(natsbus.IntakeConfig{Topology: topo, FastSlots: cfg.FastSlots, SlowSlots: cfg.SlowSlots, Grace: cfg.Grace,
		Host: cfg.Host, Router: svc, Alone: fleet.Alone}, w.nc, js, disp, log)

	// Shutdown, by Stop or by ctx ending (a signal), stops the query
	// service before the intake stops pulling commands.
	runCtx, cancelRun := context.WithCancel(context.WithoutCancel(ctx))
	// The goroutines use self: a failed Start returns a nil w.
	self.cancel = func() {
		self.stopQueries()
		self.serving.Store(false)
		cancelRun()
	}
	go func() {
		select {
		case <-ctx.Done():
			self.cancel()
		case <-runCtx.Done():
		}
	}()
	go func() { self.done <- self.intake.Run(runCtx) }()
	select {
	case <-w.intake.Ready():
	case err := <-w.done:
		w.done <- err
		return nil, err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	w.serving.Store(true)
	wctx, stopWatch := context.WithCancel(log.With().Str("component", "engine-watch").Logger().WithContext(context.WithoutCancel(ctx)))
	watchDone := make(chan struct{})
	w.stopWatch, w.watchDone = stopWatch, watchDone
	go func() { defer close(watchDone); svc.WatchEngine(wctx, self.engine) }()
	hctx, stopFleet := context.WithCancel(context.WithoutCancel(ctx))
	fleetDone := make(chan struct{})
	w.stopFleet, w.fleetDone = stopFleet, fleetDone
	go func() { defer close(fleetDone); fleet.Run(hctx) }()
	rctx, stopRecovery := context.WithCancel(log.With().Str("component", "recovery").Logger().WithContext(context.WithoutCancel(ctx)))
	recoveryDone := make(chan struct{})
	w.stopRecovery, w.recoveryDone = stopRecovery, recoveryDone
	go func() { defer close(recoveryDone); svc.RecoverLoop(rctx) }()
	if err := w.startQueries(qcfg); err != nil {
		return nil, err
	}
	log.Info().Str("nats", natsURL).Str("server", w.nc.ConnectedUrlRedacted()).Str("prefix", cfg.Prefix).Strs("roots", cfg.Roots).Str("state_dir", cfg.StateDir).
		Strs("actions", mux.Actions()).Msg("worker ready")
	return w, nil
}

// Ready is closed when the worker serves commands.
func (w *Worker) Ready() <-chan struct{} { return w.intake.Ready() }

// Stop begins a graceful shutdown; Wait returns when it is over. The
// query service stops first (its queries in progress are answered), then
// the intake stops pulling commands.
func (w *Worker) Stop() { w.cancel() }

func (w *Worker) startQueries(cfg micro.Config) error {
	w.qmu.Lock()
	defer w.qmu.Unlock()
	if w.qstopped {
		return nil
	}
	q, err := micro.Start(w.nc, cfg)
	if err != nil {
		return err
	}
	w.queries = q
	w.log.Info().Str("subjects", cfg.Subjects.Prefix+".q.>").Str("service", cfg.Subjects.Prefix).Msg("query service started")
	return nil
}

// stopQueries drains the query service: queries received are answered,
// new ones go to other workers. It is idempotent.
func (w *Worker) stopQueries() {
	w.qmu.Lock()
	defer w.qmu.Unlock()
	if w.qstopped {
		return
	}
	w.qstopped = true
	if w.queries == nil {
		return
	}
	if err := w.queries.Stop(); err != nil {
		w.log.Warn().Err(err).Msg("cannot stop the query service cleanly")
		return
	}
	w.log.Info().Msg("query service stopped")
}

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
	w.stopQueries()
	w.serving.Store(false)
	if w.cancel != nil {
		w.cancel()
	}
	if w.http != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = w.http.Shutdown(ctx)
		cancel()
	}
	if w.stopWatch != nil {
		w.stopWatch()
		<-w.watchDone
	}
	if w.stopRecovery != nil {
		w.stopRecovery()
		<-w.recoveryDone
	}
	if w.stopFleet != nil {
		w.stopFleet()
		<-w.fleetDone
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

// startHTTP serves /metrics, /healthz and /readyz on addr. A failure to
// listen is logged, not fatal: the worker's commands matter more than its
// metrics, and /healthz failing to answer shows the problem to a prober.
func (w *Worker) startHTTP(addr string) {
	if addr == "" {
		return
	}
	ready := &metrics.Ready{Timeout: 2 * time.Second, Checks: w.readinessChecks()}
	srv, err := metrics.Listen(addr, metrics.Mux(w.metrics, ready), func(err error) {
		w.log.Error().Err(err).Msg("http server stopped")
	})
	if err != nil {
		w.log.Error().Err(err).Str("addr", addr).Msg("cannot serve /metrics, /healthz and /readyz: choose another --http-addr, or set it empty to disable the HTTP server")
		return
	}
	w.http, w.HTTPAddr = srv, srv.Addr()
	w.log.Info().Str("addr", w.HTTPAddr).Msg("serving /metrics, /healthz and /readyz")
}

// readinessChecks are the checks of /readyz: NATS connected (and
// answering a ping), Redis and Docker answering, the intake pulling.
func (w *Worker) readinessChecks() []metrics.Check {
	return []metrics.Check{
		{Name: "nats", Probe: func(ctx context.Context) error {
			if st := w.nc.Status(); st != nats.CONNECTED {
				return fmt.Errorf("connection is %s", st)
			}
			return w.nc.FlushWithContext(ctx)
		}},
		{Name: "redis", Probe: w.store.Ping},
		{Name: "docker", Probe: w.engine.Ping},
		{Name: "commands", Probe: func(context.Context) error {
			if !w.serving.Load() {
				return errors.New("the intake is not pulling commands (starting or stopping)")
			}
			return nil
		}},
	}
}

func connectNATS(cfg *Config, url string, log zerolog.Logger) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.Name("berth-worker"),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
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
