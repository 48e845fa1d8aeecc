package handlers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/berth-ops/berth"
	"github.com/berth-ops/berth/events"
)

// Fleet is what a worker knows of the other workers sharing its NATS
// system (natsbus.Fleet).
type Fleet interface {
	// Workers lists every worker heard of, alive or not.
	Workers(ctx context.Context) ([]berth.WorkerInfo, error)
	// Worker returns host's entry; ok is false when it was never heard of.
	Worker(ctx context.Context, host string) (w berth.WorkerInfo, ok bool, err error)
}

// routeTTL is how long the host of a project is remembered. A project
// moved meanwhile is safe: mutations check the owner again under the
// project's lock, and a routed command is routed on by the host it
// reached.
const routeTTL = 2 * time.Second

// routeCache remembers the host of each project for routeTTL.
type routeCache struct {
	mu sync.Mutex
	m  map[string]routeEntry
}

type routeEntry struct {
	host string
	at   time.Time
}

func (c *routeCache) get(project string, now time.Time) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[project]
	if !ok || now.Sub(e.at) > routeTTL {
		return "", false
	}
	return e.host, true
}

func (c *routeCache) put(project, host string, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) > 100_000 {
		c.m = map[string]routeEntry{}
	}
	c.m[project] = routeEntry{host: host, at: now}
}

// Route returns the host whose worker runs action on project, or "" when
// this worker may run it: no fleet, a project stored without host, a new
// project's config.set that names no other host, or a move (which changes
// only the store, and must work while the project's host is down).
func (s *Service) Route(ctx context.Context, project, action string, body []byte) (string, error) {
	if s.Host == "" || action == events.ActionMove {
		return "", nil
	}
	now := s.Now()
	host, ok := s.routes.get(project, now)
	if !ok {
		p, err := s.Store.GetProject(ctx, project)
		switch {
		case events.ErrorCode(err) == events.CodeNotFound:
			host = ""
		case err != nil:
			return "", err
		default:
			host = p.Host
			s.routes.put(project, host, now)
		}
	}
	if host == "" && action == events.ActionConfigSet {
		// A new project (or one stored before fleets) lives where its
		// config.set says.
		var c struct {
			Args struct {
				Host string `json:"host"`
			} `json:"args"`
		}
		if json.Unmarshal(body, &c) == nil && events.ValidHost(c.Args.Host) && c.Args.Host != s.Host {
			host = c.Args.Host
			// A host no worker was ever seen on (a typo, most often) would
			// keep the command waiting for a day: it is answered here,
			// with not_found.
			if seen, err := s.seen(ctx, host); err != nil {
				return "", err
			} else if !seen {
				return "", nil
			}
		}
	}
	if host == s.Host {
		return "", nil
	}
	return host, nil
}

// stillOwned refuses a mutation of a project that moved to another host
// after the command was routed here (checked under the project's lock,
// which a move holds while it changes the host).
func (s *Service) stillOwned(ctx context.Context, project string) error {
	if s.Host == "" {
		return nil
	}
	p, err := s.Store.GetProject(ctx, project)
	if err != nil {
		return err
	}
	s.routes.put(project, p.Host, s.Now())
	if p.Host != "" && p.Host != s.Host {
		return events.Errorf(events.CodeConflict, "project %s moved to host %s while this command waited; nothing was done", project, p.Host).
			With("host", p.Host).
			WithHint("send the command again: it goes to the project's new host")
	}
	return nil
}

// hostFor decides the host a config.set stores: the one the project has
// (moving it is the move action), else the one the command names, else
// this worker's when no other worker is alive.
func (s *Service) hostFor(ctx context.Context, project string, old *berth.Project, asked string) (string, error) {
	if asked != "" && !events.ValidHost(asked) {
		return "", events.Errorf(events.CodeBadRequest, "host %q is not a valid host name", asked).
			WithHint("use the --host of a worker: letters, digits, '-' and '_', at most 63 characters")
	}
	if s.Host == "" {
		if asked != "" {
			return "", events.Errorf(events.CodeBadRequest, "this worker is not part of a fleet, so a project cannot name a host").
				WithHint("leave host out, or start the workers with --host")
		}
		return "", nil
	}
	if old != nil && old.Host != "" {
		if asked != "" && asked != old.Host {
			return "", events.Errorf(events.CodeConflict, "project %s lives on host %s; config.set does not move it", project, old.Host).
				With("host", old.Host).
				WithHint(fmt.Sprintf(`move it with the move action ({"to": %q}, a global admin, confirmed), or leave host out`, asked))
		}
		return old.Host, nil
	}
	if asked == "" {
		others, err := s.otherLiveHosts(ctx)
		if err != nil {
			return "", err
		}
		if len(others) > 0 {
			hosts := append([]string{s.Host}, others...)
			slices.Sort(hosts)
			return "", events.Errorf(events.CodeBadRequest, "several workers serve this fleet, so project %s must name its host", project).
				With("hosts", hosts).
				WithHint("add \"host\" to the args: one of " + strings.Join(hosts, ", "))
		}
		return s.Host, nil
	}
	if asked != s.Host {
		if seen, err := s.seen(ctx, asked); err != nil {
			return "", err
		} else if !seen {
			return "", events.Errorf(events.CodeNotFound, "no worker of host %s has ever been seen", asked).
				WithHint(fmt.Sprintf("start a worker with --host %s first, or name a host berth.q.fleet lists", asked))
		}
		// Routing sends a config.set to the host it names; reaching
		// another one means the project was configured meanwhile.
		return "", events.Errorf(events.CodeConflict, "config.set for host %s reached the worker of host %s", asked, s.Host).
			WithHint("send it again")
	}
	return asked, nil
}

// seen reports whether a worker of host was ever heard of (true when
// this worker cannot tell).
func (s *Service) seen(ctx context.Context, host string) (bool, error) {
	if s.Fleet == nil {
		return true, nil
	}
	_, ok, err := s.Fleet.Worker(ctx, host)
	if err != nil {
		return false, events.Errorf(events.CodeStoreUnavailable, "cannot read the fleet's workers: %v", err).WithHint("try again when NATS answers")
	}
	return ok, nil
}

// otherLiveHosts lists the hosts of the other workers alive now.
func (s *Service) otherLiveHosts(ctx context.Context) ([]string, error) {
	if s.Fleet == nil {
		return nil, nil
	}
	ws, err := s.Fleet.Workers(ctx)
	if err != nil {
		return nil, events.Errorf(events.CodeStoreUnavailable, "cannot read the fleet's workers: %v", err).
			WithHint("try again when NATS answers, or name the host in the args")
	}
	now := s.Now()
	var out []string
	for _, w := range ws {
		if w.Host != s.Host && w.Alive(now) {
			out = append(out, w.Host)
		}
	}
	return out, nil
}

// MoveArgs are the arguments of move.
type MoveArgs struct {
	// To is the host whose worker runs the project from now on.
	To string `json:"to"`
}

// MovePlan is the plan of a move.
type MovePlan struct {
	Project string `json:"project"`
	From    string `json:"from"`
	To      string `json:"to"`
	// ToAlive says whether the target's worker is up now; commands for
	// the project wait for it otherwise.
	ToAlive  bool       `json:"to_alive"`
	LastSeen *time.Time `json:"to_last_seen,omitempty"`
	// LeftBehind says what a move does not carry over.
	LeftBehind string `json:"left_behind"`
}

// MoveResult is the result of a move.
type MoveResult struct {
	Project string `json:"project"`
	From    string `json:"from"`
	To      string `json:"to"`
}

// Move hands a project to another host's worker: a global admin's
// decision, confirmed, refused while a mutation holds the project's lock.
// Any worker runs it, so a project can leave a host that is down.
func (s *Service) Move(ctx context.Context, req *Request, rep Reporter) (any, error) {
	if !s.isGlobalAdmin(req.User) {
		return nil, events.Errorf(events.CodeForbidden, "%s may not move project %s: only a global admin may", req.User, req.Project).
			WithHint("ask a global admin (the worker's --admins)")
	}
	return s.mutate(ctx, req, rep, moveMutation)
}

var moveMutation = &mutation{confirm: true, anywhere: true, plan: (*Service).planMove,
	apply: func(s *Service, ctx context.Context, p *berth.Project, pl *plan) (any, error) {
		return s.moveProject(ctx, p.Name, pl.Data.(*MovePlan))
	}}

func (s *Service) planMove(ctx context.Context, p *berth.Project, raw json.RawMessage) (*plan, error) {
	var a MoveArgs
	if err := events.DecodeArgs(raw, &a); err != nil {
		return nil, err
	}
	if !events.ValidHost(a.To) {
		return nil, events.Errorf(events.CodeBadRequest, "to %q is not a valid host name", a.To).
			WithHint(`give the --host of the worker that should run the project: {"to": "<host>"}`)
	}
	if a.To == p.Host {
		return nil, events.Errorf(events.CodeBadRequest, "project %s already lives on host %s", p.Name, a.To).
			WithHint("nothing to do")
	}
	pl := &MovePlan{Project: p.Name, From: p.Host, To: a.To,
		LeftBehind: fmt.Sprintf("the containers, files and releases on %s stay there: stop the project there first; host %s needs the workspace and production directories (%s, %s), and its next deploy starts the project there",
			cmpOr(p.Host, "the old host"), a.To, p.Workspace, p.Production)}
	if s.Fleet != nil {
		w, ok, err := s.Fleet.Worker(ctx, a.To)
		if err != nil {
			return nil, events.Errorf(events.CodeStoreUnavailable, "cannot read the fleet's workers: %v", err).WithHint("try again")
		}
		if !ok {
			return nil, events.Errorf(events.CodeNotFound, "no worker of host %s has ever been seen", a.To).
				WithHint(fmt.Sprintf("start a worker with --host %s first (berth.q.fleet lists the hosts)", a.To))
		}
		pl.ToAlive = w.Alive(s.Now())
		last := w.LastSeen
		pl.LastSeen = &last
	}
	raw2, _ := json.Marshal(p)
	sum := sha256.Sum256(append(raw2, []byte("\x00move\x00"+a.To)...))
	return &plan{Data: pl, Digest: hex.EncodeToString(sum[:])}, nil
}

func (s *Service) moveProject(ctx context.Context, name string, pl *MovePlan) (any, error) {
	p, err := s.project(ctx, name)
	if err != nil {
		return nil, err
	}
	p.Host, p.UpdatedAt = pl.To, s.Now().UTC()
	if err := s.Store.PutProject(ctx, p); err != nil {
		return nil, err
	}
	s.routes.put(name, pl.To, s.Now())
	_ = s.Store.InvalidateStatus(ctx, name)
	return &MoveResult{Project: name, From: pl.From, To: pl.To}, nil
}
