package handlers

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/berth-ops/berth"
	"github.com/berth-ops/berth/events"
	"github.com/berth-ops/berth/redact"
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
	// StateDir holds releases, manifests and journals of deploys.
	StateDir string
	// ConfirmTTL is how long a confirmation token is valid.
	ConfirmTTL time.Duration
	// MaxPendingConfirmations caps a user's pending confirmations.
	MaxPendingConfirmations int
	// LockLease is the lease of a project lock, extended while work runs.
	LockLease time.Duration
	// VerifyTimeout bounds waiting for services to become healthy.
	VerifyTimeout time.Duration
	// Stabilize is how long a service without a healthcheck must keep
	// running, with an unchanged restart count, to count as up.
	Stabilize time.Duration
	// KeepReleases is how many releases (file backups and image tags) are
	// kept per project.
	KeepReleases int
	// PauseAt makes a mutation stop for PauseFor at the start of a step
	// (plan, backup, sync, build, up, verify, rollback): a test hook that
	// lets crash tests kill the worker inside a given step. Off when empty.
	PauseAt  string
	PauseFor time.Duration
}

func (c *Config) setDefaults() {
	if c.StatusTTL == 0 {
		c.StatusTTL = 10 * time.Second
	}
	if c.MaxTail == 0 {
		c.MaxTail = 10000
	}
	if c.MaxFollow == 0 {
		c.MaxFollow = 300 * time.Second
	}
	if c.HistoryLimit == 0 {
		c.HistoryLimit = 500
	}
	if c.ConfirmTTL == 0 {
		c.ConfirmTTL = 5 * time.Minute
	}
	if c.MaxPendingConfirmations == 0 {
		c.MaxPendingConfirmations = 10
	}
	if c.LockLease == 0 {
		c.LockLease = 30 * time.Second
	}
	if c.VerifyTimeout == 0 {
		c.VerifyTimeout = 90 * time.Second
	}
	if c.Stabilize == 0 {
		c.Stabilize = 3 * time.Second
	}
	if c.KeepReleases == 0 {
		c.KeepReleases = 5
	}
}

// Validate reports a configuration that cannot work.
func (c *Config) Validate() error {
	for _, r := range c.Roots {
		if !filepath.IsAbs(r) || filepath.Clean(r) != r {
			return fmt.Errorf("root %q must be an absolute, clean path", r)
		}
	}
	if c.StateDir != "" && !filepath.IsAbs(c.StateDir) {
		return fmt.Errorf("state dir %q must be absolute", c.StateDir)
	}
	if c.StatusTTL < 0 || c.MaxTail < 0 || c.MaxFollow < 0 || c.HistoryLimit < 0 || c.ConfirmTTL < 0 ||
		c.LockLease < 0 || c.VerifyTimeout < 0 || c.Stabilize < 0 || c.KeepReleases < 0 {
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
	// Confirms, Locks and Composer serve the mutations (restart, deploy,
	// rollback); without them those actions are not registered.
	Confirms berth.Confirmations
	Locks    berth.Locks
	Composer berth.Composer
	// Redactor masks secrets in log lines and command output; nil passes
	// text through.
	Redactor *redact.Filter

	env envSecrets
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
	if s.Confirms != nil && s.Locks != nil && s.Composer != nil {
		m.Handle(events.ActionRestart, HandlerFunc(s.Restart))
		m.Handle(events.ActionDeploy, HandlerFunc(s.Deploy))
		m.Handle(events.ActionRollback, HandlerFunc(s.Rollback))
	}
}

// project loads a project's config, turning a missing one into an error
// that says how to create it.
func (s *Service) project(ctx context.Context, name string) (*berth.Project, error) {
	p, err := s.Store.GetProject(ctx, name)
	if err != nil {
		if events.ErrorCode(err) == events.CodeNotFound {
			return nil, events.Errorf(events.CodeNotFound, "project %q is not configured", name).
				WithHint(fmt.Sprintf("configure it first: config.set on %s with workspace and production paths", name))
		}
		return nil, err
	}
	return p, nil
}
