package handlers

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/berth-ops/berth"
	"github.com/berth-ops/berth/events"
	"github.com/berth-ops/berth/filesync"
	"github.com/berth-ops/berth/state"
)

// StatusArgs are the arguments of status.
type StatusArgs struct {
	// Refresh bypasses the status cache.
	Refresh bool `json:"refresh,omitempty"`
}

// StatusReport is the result data of status.
type StatusReport struct {
	Project        string          `json:"project"`
	ComposeProject string          `json:"compose_project"`
	Services       []ServiceStatus `json:"services"`
	Summary        StatusSummary   `json:"summary"`
	TakenAt        time.Time       `json:"taken_at"`
	Cached         bool            `json:"cached"`
	CachedAt       *time.Time      `json:"cached_at,omitempty"`
	// CacheError says why the cache could not be used, when it could not.
	CacheError string `json:"cache_error,omitempty"`
	// ConfigReadAt is set when the store was unavailable: the project's
	// configuration (services, roles) is the one this worker last read from
	// it, at that time, and the containers come straight from Docker.
	ConfigReadAt *time.Time `json:"config_read_at,omitempty"`
	// Behind says how far production is behind the workspace (strategy
	// copy): the files a deploy would add, modify or delete.
	Behind *Behind `json:"behind,omitempty"`
	// Release is the release production runs, when Berth deployed it.
	Release *LiveRelease `json:"release,omitempty"`
}

// LiveRelease is the release production runs.
type LiveRelease struct {
	ID         string     `json:"id"`
	User       string     `json:"user"`
	DeployedAt *time.Time `json:"deployed_at,omitempty"`
}

// Behind counts the files in which production differs from the workspace.
type Behind struct {
	Files    int `json:"files"`
	Added    int `json:"added"`
	Modified int `json:"modified"`
	Deleted  int `json:"deleted"`
}

// ServiceStatus is the state of one container of a service, or of a
// service without a container (state "missing").
type ServiceStatus struct {
	Service      string     `json:"service"`
	Container    string     `json:"container,omitempty"`
	State        string     `json:"state"`
	Health       string     `json:"health,omitempty"`
	HealthLog    []string   `json:"health_log,omitempty"`
	StartedAt    *time.Time `json:"started_at,omitempty"`
	UptimeS      int64      `json:"uptime_s"`
	RestartCount int        `json:"restart_count"`
	ExitCode     int        `json:"exit_code"`
	Image        string     `json:"image,omitempty"`
	Ports        []string   `json:"ports,omitempty"`
	// CPUPercent (100 = one CPU), MemBytes and MemLimitBytes are the
	// container's resource use at StatsAt: sampled in the background, so a
	// status shows the last sample (none yet right after a start).
	CPUPercent    *float64   `json:"cpu_percent,omitempty"`
	MemBytes      uint64     `json:"mem_bytes,omitempty"`
	MemLimitBytes uint64     `json:"mem_limit_bytes,omitempty"`
	StatsAt       *time.Time `json:"stats_at,omitempty"`
}

// StatusSummary counts services by state.
type StatusSummary struct {
	Containers int `json:"containers"`
	Running    int `json:"running"`
	Healthy    int `json:"healthy"`
	Unhealthy  int `json:"unhealthy"`
	Starting   int `json:"starting"`
	Stopped    int `json:"stopped"`
	Missing    int `json:"missing"`
}

// Status reports every service of a project, from the cache when it is
// fresh and refresh is not asked for.
func (s *Service) Status(ctx context.Context, req *Request, _ Reporter) (any, error) {
	var a StatusArgs
	if err := events.DecodeArgs(req.Args, &a); err != nil {
		return nil, err
	}
	// A refresh asks Docker whatever the cache holds: the containers of
	// the compose project last read for the project are listed while its
	// configuration is read, and again if that names another one.
	var early <-chan containersRead
	var earlyGen uint64
	if compose, ok := s.known.composeProject(req.Project); ok && a.Refresh {
		earlyGen = s.gens.get(req.Project)
		early = s.readContainers(ctx, compose)
	}
	p, cs, configAt, err := s.load(ctx, req.Project, true, !a.Refresh)
	if err != nil {
		return nil, err
	}
	var cacheErr string
	if configAt != nil {
		// The store is down: neither read nor write the status cache.
		cacheErr = "the store is unavailable: the status comes from Docker and the project configuration from the worker's memory"
	} else if cs != nil {
		if rep, ok := s.reports.decode(p.Name, cs.Report); ok {
			rep.Cached = true
			at := cs.TakenAt
			rep.CachedAt = &at
			rep.refreshUptime(s.Now())
			return rep, nil
		}
	}
	gen := s.gens.get(p.Name)
	// The workspace comparison walks two trees while Docker answers.
	bctx, cancel := context.WithCancel(ctx)
	defer cancel()
	behind := make(chan *Behind, 1)
	go func() { behind <- s.behind(bctx, p) }()
	var cr containersRead
	if early != nil {
		cr = <-early
		gen = earlyGen // the read began then
	}
	if early == nil || cr.compose != p.ComposeProject {
		cr.containers, cr.err = s.Engine.Containers(ctx, p.ComposeProject)
	}
	containers, err := cr.containers, cr.err
	if err != nil {
		return nil, err
	}
	rep := BuildStatus(p, containers, s.Now())
	s.stats.refresh(ctx, s.Engine, containers)
	byName := map[string]string{}
	for _, c := range containers {
		byName[c.Name] = c.ID
	}
	for i := range rep.Services {
		st := &rep.Services[i]
		st.HealthLog = s.redactAll(p, st.HealthLog)
		if u, ok := s.stats.current(byName[st.Container]); ok && st.State == "running" {
			at := u.At.UTC()
			st.CPUPercent, st.MemBytes, st.MemLimitBytes, st.StatsAt = u.CPUPercent, u.MemBytes, u.MemLimit, &at
		}
	}
	rep.Release = s.liveRelease(p)
	rep.CacheError = cacheErr
	rep.ConfigReadAt = configAt
	rep.Behind = <-behind
	if cacheErr == "" {
		s.cacheStatus(ctx, p.Name, rep, gen)
	}
	return rep, nil
}

// containersRead is the outcome of listing a compose project's
// containers.
type containersRead struct {
	compose    string
	containers []berth.Container
	err        error
}

// readContainers lists the containers of a compose project on a goroutine
// of its own.
func (s *Service) readContainers(ctx context.Context, compose string) <-chan containersRead {
	ch := make(chan containersRead, 1)
	go func() {
		c, err := s.Engine.Containers(ctx, compose)
		ch <- containersRead{compose: compose, containers: c, err: err}
	}()
	return ch
}

// liveRelease is the release production runs: the newest one deployed and
// not undone.
func (s *Service) liveRelease(p *berth.Project) *LiveRelease {
	if s.State == nil {
		return nil
	}
	rels, err := s.State.Releases(p.Production)
	if err != nil {
		return nil
	}
	for _, r := range rels {
		if r.Status == state.ReleaseOK {
			return &LiveRelease{ID: r.ID, User: r.User, DeployedAt: r.FinishedAt}
		}
	}
	return nil
}

// cacheStatus stores a report read from Docker at generation gen of the
// project, unless a container event came since: the report may predate
// it. An event that comes while the report is being stored makes it be
// dropped again, whichever of the two writes reaches the store first.
func (s *Service) cacheStatus(ctx context.Context, project string, rep *StatusReport, gen uint64) {
	if s.gens.get(project) != gen {
		return
	}
	raw, err := json.Marshal(rep)
	if err != nil {
		return
	}
	if err := s.Store.PutStatus(ctx, project, &berth.CachedStatus{TakenAt: rep.TakenAt, Report: raw}, s.Config.StatusTTL); err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Msg("cannot cache status")
		return
	}
	if s.gens.get(project) != gen {
		if err := s.Store.InvalidateStatus(ctx, project); err != nil {
			zerolog.Ctx(ctx).Warn().Err(err).Msg("cannot drop a status cached as a container event came")
		}
	}
}

// BuildStatus turns the containers of a project into a status report:
// one entry per container, plus a "missing" entry for each configured
// service without one.
func BuildStatus(p *berth.Project, containers []berth.Container, now time.Time) *StatusReport {
	rep := &StatusReport{Project: p.Name, ComposeProject: p.ComposeProject, TakenAt: now.UTC(), Services: []ServiceStatus{}}
	seen := map[string]bool{}
	for _, c := range containers {
		seen[c.Service] = true
		st := ServiceStatus{
			Service: c.Service, Container: c.Name, State: c.State, Health: c.Health,
			HealthLog: c.HealthLog, RestartCount: c.RestartCount, ExitCode: c.ExitCode, Image: c.Image,
		}
		if !c.StartedAt.IsZero() && c.State == "running" {
			t := c.StartedAt.UTC()
			st.StartedAt = &t
		}
		for _, pt := range c.Ports {
			st.Ports = append(st.Ports, FormatPort(pt))
		}
		rep.Services = append(rep.Services, st)
	}
	for _, svc := range p.Services {
		if !seen[svc] {
			rep.Services = append(rep.Services, ServiceStatus{Service: svc, State: "missing"})
		}
	}
	slices.SortStableFunc(rep.Services, func(a, b ServiceStatus) int {
		return cmp.Or(strings.Compare(a.Service, b.Service), strings.Compare(a.Container, b.Container))
	})
	rep.refreshUptime(now)
	for _, st := range rep.Services {
		switch st.State {
		case "missing":
			rep.Summary.Missing++
			continue
		case "running":
			rep.Summary.Running++
		case "exited", "dead", "created":
			rep.Summary.Stopped++
		}
		rep.Summary.Containers++
		switch st.Health {
		case "healthy":
			rep.Summary.Healthy++
		case "unhealthy":
			rep.Summary.Unhealthy++
		case "starting":
			rep.Summary.Starting++
		}
	}
	return rep
}

// refreshUptime recomputes uptimes at now, so a cached report stays true.
func (r *StatusReport) refreshUptime(now time.Time) {
	for i := range r.Services {
		if st := r.Services[i].StartedAt; st != nil && r.Services[i].State == "running" {
			r.Services[i].UptimeS = int64(now.Sub(*st) / time.Second)
		}
	}
}

// decodedReports keeps, per project, the cached status report last
// decoded: every cached status of a project answers from the same cache
// entry until it expires, so one decoding serves them all.
type decodedReports struct {
	mu  sync.Mutex
	per map[string]*decodedReport
}

type decodedReport struct {
	raw []byte
	rep StatusReport
}

// decode returns the report encoded in raw, a copy whose services the
// caller may change; false when raw does not decode.
func (d *decodedReports) decode(project string, raw []byte) (*StatusReport, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	e := d.per[project]
	if e == nil || !bytes.Equal(e.raw, raw) {
		e = &decodedReport{raw: bytes.Clone(raw)}
		if err := json.Unmarshal(raw, &e.rep); err != nil {
			return nil, false
		}
		if d.per == nil {
			d.per = map[string]*decodedReport{}
		}
		d.per[project] = e
	}
	rep := e.rep
	rep.Services = slices.Clone(e.rep.Services)
	return &rep, true
}

// FormatPort renders a port as docker ps does: 127.0.0.1:49153->8080/tcp.
func FormatPort(p berth.Port) string {
	if p.HostPort == 0 {
		return fmt.Sprintf("%d/%s", p.ContainerPort, p.Proto)
	}
	host := p.HostIP
	if host == "" {
		host = "0.0.0.0"
	}
	return fmt.Sprintf("%s:%d->%d/%s", host, p.HostPort, p.ContainerPort, p.Proto)
}

// behind diffs the workspace against production with the deploy's engine.
func (s *Service) behind(ctx context.Context, p *berth.Project) *Behind {
	if (p.Strategy != "" && p.Strategy != "copy") || s.State == nil || p.Workspace == p.Production {
		return nil
	}
	rules, err := filesync.LoadRules(p.Workspace)
	if err != nil {
		return nil
	}
	man, err := s.State.Manifest(p.Production)
	if err != nil {
		return nil
	}
	fp, err := s.diff(ctx, p.Workspace, p.Production, man, rules)
	if err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Msg("cannot compare the workspace with production")
		return nil
	}
	b := &Behind{Added: len(fp.Added), Modified: len(fp.Modified), Deleted: len(fp.Deleted)}
	b.Files = b.Added + b.Modified + b.Deleted
	return b
}
