package handlers

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/berth-ops/berth"
	"github.com/berth-ops/berth/events"
	"github.com/berth-ops/berth/redact"
	"github.com/berth-ops/berth/state"
)

// Config holds the settings the handlers apply.
type Config struct {
	// Admins are the global admins: users who may do anything on every
	// project. "*" makes everyone an admin (development only).
	Admins []string
	// Roots are the directories inside which workspace and production
	// directories must lie.
	Roots []string
	// StatusTTL is how long a status report is served from the cache.
	StatusTTL time.Duration
	// MaxTail caps the lines logs returns; MaxFollow caps follow_s.
	MaxTail   int
	MaxFollow time.Duration
	// HistoryLimit caps the entries history returns.
	HistoryLimit int
	// ConfirmTTL is how long a confirmation token is valid.
	ConfirmTTL time.Duration
	// MaxPendingConfirmations caps a user's pending confirmations.
	MaxPendingConfirmations int
	// LockLease is the lease of a project lock, extended while work runs.
	LockLease time.Duration
	// VerifyTimeout bounds waiting for services to become healthy (a
	// healthcheck that needs longer, start_period + interval × retries,
	// gets that).
	VerifyTimeout time.Duration
	// UndoWait is how long a failed operation retries its undo while the
	// engine or the store does not answer, before it answers its request
	// and leaves the undo to the worker's recovery loop.
	UndoWait time.Duration
	// Stabilize is how long a service without a healthcheck must keep
	// running, with an unchanged restart count, to count as up.
	Stabilize time.Duration
	// KeepReleases is how many releases (file backups and image tags) are
	// kept per project.
	KeepReleases int
	// ImageSettle is how long, after a worker stopped during a pull or
	// build, image references must stay as undo left them before the
	// recovery trusts them: the engine may still finish the stopped
	// build and tag its result.
	ImageSettle time.Duration
	// PauseAt makes a mutation stop for PauseFor at the start of a step
	// (plan, backup, sync, build, up, verify, rollback): a test hook that
	// lets crash tests kill the worker inside a given step. Off when empty.
	PauseAt  string
	PauseFor time.Duration
}

func (c *Config) setDefaults() {
	c.StatusTTL = cmp.Or(c.StatusTTL, 10*time.Second)
	c.MaxTail = cmp.Or(c.MaxTail, 10000)
	c.MaxFollow = cmp.Or(c.MaxFollow, 300*time.Second)
	c.HistoryLimit = cmp.Or(c.HistoryLimit, 500)
	c.ConfirmTTL = cmp.Or(c.ConfirmTTL, 5*time.Minute)
	c.MaxPendingConfirmations = cmp.Or(c.MaxPendingConfirmations, 10)
	c.LockLease = cmp.Or(c.LockLease, 30*time.Second)
	c.VerifyTimeout = cmp.Or(c.VerifyTimeout, 90*time.Second)
	c.UndoWait = cmp.Or(c.UndoWait, 60*time.Second)
	c.Stabilize = cmp.Or(c.Stabilize, 3*time.Second)
	c.KeepReleases = cmp.Or(c.KeepReleases, 5)
	c.ImageSettle = cmp.Or(c.ImageSettle, 5*time.Second)
}

// Validate reports a configuration that cannot work.
func (c *Config) Validate() error {
	for _, r := range c.Roots {
		if !filepath.IsAbs(r) || filepath.Clean(r) != r {
			return fmt.Errorf("root %q must be an absolute, clean path", r)
		}
	}
	if c.StatusTTL < 0 || c.MaxTail < 0 || c.MaxFollow < 0 || c.HistoryLimit < 0 || c.ConfirmTTL < 0 ||
		c.LockLease < 0 || c.VerifyTimeout < 0 || c.UndoWait < 0 || c.Stabilize < 0 || c.KeepReleases < 0 || c.ImageSettle < 0 {
		return fmt.Errorf("limits must not be negative")
	}
	return nil
}

// Service holds what every handler needs: the store, the engine, the
// configuration and a clock.
type Service struct {
	Store  berth.Store
	Engine berth.Engine
	Config Config
	Now    func() time.Time
	// Confirms, Locks, Composer and State serve the mutations (restart,
	// deploy, rollback, start, stop); without them those actions are not
	// registered.
	Confirms berth.Confirmations
	Locks    berth.Locks
	Composer berth.Composer
	State    state.Store
	// Redactor masks secrets in log lines and command output; nil passes
	// text through.
	Redactor *redact.Filter
	// Host is the host this worker runs on, in a fleet (fleet.go); Fleet
	// lists the fleet's workers. Without Host, the worker runs whatever
	// it takes.
	Host  string
	Fleet Fleet
	// routes caches which host runs each project.
	routes routeCache

	env envSecrets
	// known holds the project configurations last read from the store,
	// for read-only commands while the store is unavailable.
	known lastKnown
	// gens counts the container events seen per project, so that a status
	// read from Docker before an event is not cached after it.
	gens statusGens
	// ops are the production directories an operation runs on here.
	ops activeOps
	// stats are the containers' last resource samples.
	stats statsSampler
	// reports are the cached status reports last decoded.
	reports decodedReports
}

// statusGens is a generation counter per project, and one for all of them,
// bumped by the engine watch before it drops cached statuses.
type statusGens struct {
	mu  sync.Mutex
	all uint64
	per map[string]uint64
}

// get returns the project's generation.
func (g *statusGens) get(project string) uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.all + g.per[project]
}

// bump moves the project's generation on ("" moves every project's).
func (g *statusGens) bump(project string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if project == "" {
		g.all++
		return
	}
	if g.per == nil {
		g.per = map[string]uint64{}
	}
	g.per[project]++
}

// NewService returns a Service with defaults applied.
func NewService(store berth.Store, engine berth.Engine, cfg Config) (*Service, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Service{Store: store, Engine: engine, Config: cfg, Now: time.Now}, nil
}

// Register adds every handler of s to m.
func (s *Service) Register(m *Mux) {
	m.Handle(events.ActionConfigSet, HandlerFunc(s.ConfigSet))
	m.Handle(events.ActionConfigGet, HandlerFunc(s.ConfigGet))
	m.Handle(events.ActionConfigDelete, HandlerFunc(s.ConfigDelete))
	m.Handle(events.ActionStatus, HandlerFunc(s.Status))
	m.Handle(events.ActionLogs, HandlerFunc(s.Logs))
	m.Handle(events.ActionHistory, HandlerFunc(s.History))
	if s.Confirms != nil && s.Locks != nil {
		m.Handle(events.ActionMove, HandlerFunc(s.Move))
	}
	if s.State != nil {
		m.Handle(events.ActionReleases, HandlerFunc(s.Releases))
	}
	if s.Confirms != nil && s.Locks != nil && s.Composer != nil && s.State != nil {
		m.Handle(events.ActionRestart, HandlerFunc(s.Restart))
		m.Handle(events.ActionDeploy, HandlerFunc(s.Deploy))
		m.Handle(events.ActionRollback, HandlerFunc(s.Rollback))
		m.Handle(events.ActionStart, HandlerFunc(s.Start))
		m.Handle(events.ActionStop, HandlerFunc(s.Stop))
	}
}

// project loads a project's config, turning a missing one into an error
// that says how to create it.
func (s *Service) project(ctx context.Context, name string) (*berth.Project, error) {
	p, _, err := s.loadProject(ctx, name, false)
	return p, err
}

// projectForRead is project for the read-only commands that work from
// Docker (status, logs): when the store is unavailable it falls back to
// the configuration this worker last read from it, and returns when that
// was (nil when the configuration comes from the store). Mutations never
// use it: they must see the store's current configuration.
func (s *Service) projectForRead(ctx context.Context, name string) (*berth.Project, *time.Time, error) {
	return s.loadProject(ctx, name, true)
}

func (s *Service) loadProject(ctx context.Context, name string, fallback bool) (*berth.Project, *time.Time, error) {
	p, _, at, err := s.load(ctx, name, fallback, false)
	return p, at, err
}

// load reads a project's config, and its cached status too when
// withStatus is set (in the same round trip), falling back as
// projectForRead says when fallback is set.
func (s *Service) load(ctx context.Context, name string, fallback, withStatus bool) (*berth.Project, *berth.CachedStatus, *time.Time, error) {
	var p *berth.Project
	var cs *berth.CachedStatus
	var err error
	if withStatus {
		p, cs, err = s.Store.GetProjectStatus(ctx, name)
	} else {
		p, err = s.Store.GetProject(ctx, name)
	}
	switch {
	case err == nil:
		s.known.remember(p, s.Now())
		return p, cs, nil, nil
	case events.ErrorCode(err) == events.CodeNotFound:
		s.known.forget(name)
		return nil, nil, nil, events.Errorf(events.CodeNotFound, "project %q is not configured", name).
			WithHint(fmt.Sprintf("configure it first: config.set on %s with workspace and production paths", name))
	case fallback && events.ErrorCode(err) == events.CodeStoreUnavailable:
		if kp, at, ok := s.known.get(name); ok {
			zerolog.Ctx(ctx).Warn().Err(err).Time("config_read_at", at).
				Msg("store unavailable: using the project configuration last read from it")
			return kp, nil, &at, nil
		}
	}
	return nil, nil, nil, err
}

// lastKnown remembers, per project, the configuration last read from the
// store and when. It holds only projects the store had, and drops one the
// store says is gone, so it never outlives a config.delete it sees.
type lastKnown struct {
	mu sync.Mutex
	m  map[string]knownProject
}

type knownProject struct {
	raw     []byte // the configuration, JSON: every get returns a fresh copy
	at      time.Time
	compose string // its compose project
}

func (k *lastKnown) remember(p *berth.Project, at time.Time) {
	raw, err := json.Marshal(p)
	if err != nil || p.Name == "" {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.m == nil {
		k.m = map[string]knownProject{}
	}
	k.m[p.Name] = knownProject{raw: raw, at: at, compose: p.ComposeProject}
}

// composeProject is the compose project of the configuration last read.
func (k *lastKnown) composeProject(name string) (string, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	kp, ok := k.m[name]
	return kp.compose, ok && kp.compose != ""
}

func (k *lastKnown) forget(name string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.m, name)
}

func (k *lastKnown) get(name string) (*berth.Project, time.Time, bool) {
	k.mu.Lock()
	kp, ok := k.m[name]
	k.mu.Unlock()
	if !ok {
		return nil, time.Time{}, false
	}
	var p berth.Project
	if err := json.Unmarshal(kp.raw, &p); err != nil {
		return nil, time.Time{}, false
	}
	return &p, kp.at, true
}
