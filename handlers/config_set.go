package handlers

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/rs/zerolog"

	"github.com/berth-ops/berth"
	"github.com/berth-ops/berth/events"
)

// ConfigSetArgs are the arguments of config.set.
type ConfigSetArgs struct {
	Workspace string `json:"workspace"`
	// Workspaces are other directories a deploy may name as its source
	// (git worktrees of the project); only a global admin sets them.
	Workspaces     []string `json:"workspaces,omitempty"`
	Production     string   `json:"production"`
	ComposeProject string   `json:"compose_project,omitempty"`
	ComposeFiles   []string `json:"compose_files,omitempty"`
	PrimaryService string   `json:"primary_service,omitempty"`
	// Strategy is copy (default), symlink or registry.
	Strategy string `json:"strategy,omitempty"`
	// RequireSecondApprover makes another user confirm mutations.
	RequireSecondApprover bool `json:"require_second_approver,omitempty"`
	// StabilizeS overrides the worker's stabilisation window for this
	// project, in seconds (0 to MaxStabilizeS).
	StabilizeS *int `json:"stabilize_s,omitempty"`
	// DrainS is how long a start-first rollout drains old containers, in
	// seconds (0 to MaxStabilizeS).
	DrainS *int `json:"drain_s,omitempty"`
	// StartFirstWithVolumes lets these services roll out start-first
	// although they mount a writable named volume.
	StartFirstWithVolumes []string `json:"start_first_with_volumes,omitempty"`
	// Roles maps users to viewer, operator or admin.
	Roles map[string]string `json:"roles,omitempty"`
	// AnonymousViewers lets any user read the project.
	AnonymousViewers bool `json:"anonymous_viewers,omitempty"`
	// ComposePolicy is "warn" (default) or "refuse": what a deploy does
	// with compose changes that widen a service's reach over the host.
	ComposePolicy string `json:"compose_policy,omitempty"`
	// Host is the worker host that runs the project, in a fleet: required
	// for a new project when several workers are alive; a project's host
	// changes only by move.
	Host string `json:"host,omitempty"`
}

// MaxStabilizeS bounds a project's stabilize_s (10 minutes).
const MaxStabilizeS = 600

// defaultComposeFiles are looked for, in order, when compose_files is empty.
var defaultComposeFiles = []string{"compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml"}

// ConfigSet validates and stores a project's configuration: both paths
// absolute, clean, existing and inside the configured roots; the compose
// files present in production; the services auto-detected.
func (s *Service) ConfigSet(ctx context.Context, req *Request, _ Reporter) (any, error) {
	var a ConfigSetArgs
	if err := events.DecodeArgs(req.Args, &a); err != nil {
		return nil, err
	}
	if err := validateRoles(a.Roles); err != nil {
		return nil, err
	}
	if a.StabilizeS != nil && (*a.StabilizeS < 0 || *a.StabilizeS > MaxStabilizeS) {
		return nil, events.Errorf(events.CodeBadRequest, "stabilize_s %d is out of range", *a.StabilizeS).
			WithHint(fmt.Sprintf("give a number of seconds from 0 to %d, or leave it out for the worker's default", MaxStabilizeS))
	}
	if a.DrainS != nil && (*a.DrainS < 0 || *a.DrainS > MaxStabilizeS) {
		return nil, events.Errorf(events.CodeBadRequest, "drain_s %d is out of range", *a.DrainS).
			WithHint(fmt.Sprintf("give a number of seconds from 0 to %d, or leave it out for the service's stop_grace_period", MaxStabilizeS))
	}
	switch a.Strategy {
	case "":
		a.Strategy = "copy"
	case "copy", "symlink", "registry":
	default:
		return nil, events.Errorf(events.CodeBadRequest, "strategy %q is not known", a.Strategy).
			WithHint("use copy (the default), symlink or registry")
	}
	switch a.ComposePolicy {
	case "", "warn", "refuse":
	default:
		return nil, events.Errorf(events.CodeBadRequest, "compose_policy %q is not known", a.ComposePolicy).
			WithHint(`use "warn" (the default: the plan shows compose changes that widen a service's reach) or "refuse"`)
	}
	ws, err := s.confinedDir("workspace", a.Workspace)
	if err != nil {
		return nil, err
	}
	prod, err := s.confinedDir("production", a.Production)
	if err != nil {
		return nil, err
	}
	rw, _ := filepath.EvalSymlinks(ws)
	rp, _ := filepath.EvalSymlinks(prod)
	if a.Strategy != "symlink" {
		// The resolved paths are stored, and checked again at every plan
		// and run: a link swapped later cannot redirect a deploy.
		ws, prod = rw, rp
	}
	var extra []string
	for _, w := range a.Workspaces {
		d, err := s.confinedDir("workspaces", w)
		if err != nil {
			return nil, err
		}
		if r, _ := filepath.EvalSymlinks(d); !slices.Contains(extra, r) && r != rw {
			extra = append(extra, r)
		}
	}
	switch {
	case a.Strategy == "symlink" && rw != rp:
		return nil, events.Errorf(events.CodeBadRequest, "strategy symlink needs production to link to the workspace, but %s resolves to %s", prod, rp).
			WithHint(fmt.Sprintf("make production a symlink to the workspace (ln -s %s %s), or use strategy copy", ws, prod))
	case a.Strategy == "copy" && rw == rp:
		return nil, events.Errorf(events.CodeBadRequest, "workspace and production are the same directory").
			WithHint("use distinct directories with strategy copy, or strategy symlink")
	}
	if a.ComposeProject == "" {
		a.ComposeProject = req.Project
	}
	if !events.ValidProject(a.ComposeProject) {
		return nil, events.Errorf(events.CodeBadRequest, "compose_project %q is not a valid compose project name", a.ComposeProject).
			WithHint("use lower-case letters, digits, '_' and '-', starting with a letter or digit, at most 63 characters")
	}
	files, err := composeFiles(prod, a.ComposeFiles)
	if err != nil {
		return nil, err
	}
	if err := s.uniqueTarget(ctx, req.Project, rp, a.ComposeProject); err != nil {
		return nil, err
	}
	old, err := s.Store.GetProject(ctx, req.Project)
	switch {
	case events.ErrorCode(err) == events.CodeNotFound:
		old = nil
	case err != nil:
		return nil, err
	}
	if old != nil && !s.isGlobalAdmin(req.User) {
		// A project admin manages roles and settings; where the project
		// lives is a global admin's decision, or one project's admin could
		// point it at another project's directories or containers.
		changed := placementChanges(old, ws, prod, a.ComposeProject, files, a.Strategy, extra)
		if old.ComposePolicy == "refuse" && a.ComposePolicy != "refuse" {
			changed = append(changed, "compose_policy")
		}
		if len(changed) > 0 {
			return nil, events.Errorf(events.CodeForbidden, "%s may not change %s of project %s: only a global admin may",
				req.User, strings.Join(changed, ", "), req.Project).
				WithHint("ask a global admin (the worker's --admins) to change them, or leave them as they are")
		}
	}
	host, err := s.hostFor(ctx, req.Project, old, a.Host)
	if err != nil {
		return nil, err
	}
	if err := s.refuseWhileLocked(ctx, req.Project); err != nil {
		return nil, err
	}
	model, err := s.Engine.ComposeModel(ctx, berth.ComposeSpec{Dir: prod, Files: files, Project: a.ComposeProject})
	if err != nil {
		return nil, err
	}
	services := model.ServiceNames()
	primary := a.PrimaryService
	if primary == "" {
		primary = services[0]
	} else if !slices.Contains(services, primary) {
		return nil, events.Errorf(events.CodeBadRequest, "primary_service %q is not a service of this project", primary).
			With("services", services).
			WithHint("pick one of: " + strings.Join(services, ", "))
	}
	for _, svc := range a.StartFirstWithVolumes {
		if !slices.Contains(services, svc) {
			return nil, events.Errorf(events.CodeBadRequest, "start_first_with_volumes names %q, which is not a service of this project", svc).
				With("services", services).
				WithHint("name services of: " + strings.Join(services, ", "))
		}
	}
	now := s.Now().UTC()
	p := &berth.Project{
		Name: req.Project, Workspace: ws, Workspaces: extra, Production: prod,
		ComposeProject: a.ComposeProject, ComposeFiles: files,
		Services: services, PrimaryService: primary, Strategy: a.Strategy, RequireSecondApprover: a.RequireSecondApprover,
		ComposePolicy: a.ComposePolicy, StabilizeS: a.StabilizeS, Roles: a.Roles, AnonymousViewers: a.AnonymousViewers,
		DrainS: a.DrainS, StartFirstWithVolumes: a.StartFirstWithVolumes, Host: host,
		CreatedAt: now, UpdatedAt: now, UpdatedBy: req.User,
	}
	if old != nil {
		p.CreatedAt = old.CreatedAt
	}
	if err := s.Store.PutProject(ctx, p); err != nil {
		return nil, err
	}
	s.keepConfigCopy(ctx, p)
	s.known.remember(p, s.Now())
	_ = s.Store.InvalidateStatus(ctx, req.Project)
	return p, nil
}

// uniqueTarget refuses a production directory (resolved) or a compose
// project that another project already manages: two projects on one
// directory would delete each other's files and replace each other's
// containers. The store enforces it atomically as well (PutProject); this
// look also catches configurations stored before it did, and directories
// reached through different symbolic links.
func (s *Service) uniqueTarget(ctx context.Context, project, realProd, composeProject string) error {
	names, err := s.Store.ListProjects(ctx)
	if err != nil {
		return err
	}
	others, err := s.Store.GetProjects(ctx, names)
	if err != nil {
		return err
	}
	for i, name := range names {
		other := others[i]
		if name == project || other == nil {
			continue
		}
		otherProd, _ := filepath.EvalSymlinks(other.Production)
		switch {
		case otherProd == realProd || other.Production == realProd:
			return events.Errorf(events.CodeConflict, "production directory %s is managed by project %s", realProd, name).
				With("project", name).
				WithHint(fmt.Sprintf("a production directory belongs to one project: give %s its own directory, or delete %s first", project, name))
		case other.ComposeProject == composeProject:
			return events.Errorf(events.CodeConflict, "compose project %s is managed by project %s", composeProject, name).
				With("project", name).
				WithHint(fmt.Sprintf("a compose project belongs to one Berth project: set another compose_project for %s, or delete %s first", project, name))
		}
	}
	return nil
}

// placementChanges names what a config.set changes of where a project
// lives: its directories, compose project and files, strategy.
func placementChanges(old *berth.Project, ws, prod, composeProject string, files []string, strategy string, workspaces []string) []string {
	var out []string
	add := func(changed bool, what string) {
		if changed {
			out = append(out, what)
		}
	}
	add(old.Workspace != ws, "workspace")
	add(!slices.Equal(old.Workspaces, workspaces), "workspaces")
	add(old.Production != prod, "production")
	add(old.ComposeProject != composeProject, "compose_project")
	add(!slices.Equal(old.ComposeFiles, files), "compose_files")
	add(cmp.Or(old.Strategy, "copy") != strategy, "strategy")
	return out
}

// checkPlacement checks, at every plan and run, that the project's
// directories still lie inside the roots and are what config.set stored:
// a directory replaced by a symbolic link since (to another project's, or
// outside the roots) is refused.
func (s *Service) checkPlacement(p *berth.Project) error {
	for _, d := range append([]string{p.Workspace, p.Production}, p.Workspaces...) {
		field := "workspace"
		if d == p.Production {
			field = "production"
		}
		if _, err := s.confinedDir(field, d); err != nil {
			return err
		}
		if p.Strategy == "symlink" && d == p.Production {
			if rp, _ := filepath.EvalSymlinks(d); rp != mustReal(p.Workspace) {
				return events.Errorf(events.CodeBadRequest, "production %s no longer links to the workspace %s", d, p.Workspace).
					WithHint("restore the link, or configure the project again with config.set")
			}
			continue
		}
		if real, _ := filepath.EvalSymlinks(d); real != d {
			return events.Errorf(events.CodeBadRequest, "the %s directory %s now resolves to %s: it was replaced by a symbolic link", field, d, real).
				WithHint("restore the directory, or configure the project again with config.set (a global admin)")
		}
	}
	return nil
}

func mustReal(path string) string {
	r, _ := filepath.EvalSymlinks(path)
	return r
}

// keepConfigCopy keeps a copy of the configuration in the state directory,
// as the args of the config.set that recreates it: Redis holds the
// configuration, and a Redis that loses its data loses it.
func (s *Service) keepConfigCopy(ctx context.Context, p *berth.Project) {
	if s.State == nil {
		return
	}
	args := ConfigSetArgs{Workspace: p.Workspace, Workspaces: p.Workspaces, Production: p.Production, ComposeProject: p.ComposeProject,
		ComposeFiles: p.ComposeFiles, PrimaryService: p.PrimaryService, Strategy: p.Strategy, RequireSecondApprover: p.RequireSecondApprover,
		StabilizeS: p.StabilizeS, Roles: p.Roles, AnonymousViewers: p.AnonymousViewers, ComposePolicy: p.ComposePolicy,
		DrainS: p.DrainS, StartFirstWithVolumes: p.StartFirstWithVolumes, Host: p.Host}
	b, err := json.MarshalIndent(args, "", "  ")
	if err == nil {
		err = s.State.SaveProjectConfig(p.Name, b)
	}
	if err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Msg("cannot keep a copy of the project's configuration in the state directory")
	}
}

// refuseWhileLocked refuses to change a project while a mutation holds its
// lock: the mutation runs with the configuration it started with.
func (s *Service) refuseWhileLocked(ctx context.Context, project string) error {
	if s.Locks == nil {
		return nil
	}
	h, err := s.Locks.LockHolder(ctx, project)
	switch {
	case err == nil:
		e := ConflictError(project, h)
		e.Hint = "wait for that operation to finish before changing the configuration, then try again"
		return e
	case events.ErrorCode(err) == events.CodeNotFound:
		return nil
	}
	return err
}

// syncServices records in a project's configuration the services its
// compose files now declare, after a mutation changed them (a release
// that added or removed a service); the configuration is left alone when
// it changed meanwhile.
func (s *Service) syncServices(ctx context.Context, p *berth.Project, model *berth.ComposeModel) {
	if model == nil {
		return
	}
	names := model.ServiceNames()
	if slices.Equal(names, p.Services) {
		return
	}
	cur, err := s.Store.GetProject(ctx, p.Name)
	if err != nil || !cur.UpdatedAt.Equal(p.UpdatedAt) {
		return
	}
	cur.Services = names
	if !slices.Contains(names, cur.PrimaryService) && len(names) > 0 {
		cur.PrimaryService = names[0]
	}
	if err := s.Store.PutProject(ctx, cur); err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Msg("cannot record the project's services")
		return
	}
	p.Services, p.PrimaryService = cur.Services, cur.PrimaryService
	s.keepConfigCopy(ctx, cur)
	s.known.remember(cur, s.Now())
}

// confinedDir checks that path is an absolute, clean, existing directory
// inside one of the configured roots, symlinks resolved.
func (s *Service) confinedDir(field, path string) (string, error) {
	hint := fmt.Sprintf("give %s as an absolute path inside one of the allowed roots: %s", field, strings.Join(s.Config.Roots, ", "))
	if path == "" {
		return "", events.Errorf(events.CodeBadRequest, "%s is missing", field).WithHint(hint)
	}
	if !filepath.IsAbs(path) || filepath.Clean(path) != path || strings.ContainsRune(path, 0) {
		return "", events.Errorf(events.CodeBadRequest, "%s %q is not an absolute, clean path", field, path).WithHint(hint)
	}
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return "", events.Errorf(events.CodeBadRequest, "%s %q does not exist or cannot be read", field, path).WithHint(hint)
	}
	st, err := os.Stat(real)
	if err != nil || !st.IsDir() {
		return "", events.Errorf(events.CodeBadRequest, "%s %q is not a directory", field, path).WithHint(hint)
	}
	for _, root := range s.Config.Roots {
		rr, err := filepath.EvalSymlinks(root)
		if err != nil {
			continue
		}
		if within(rr, real) {
			return path, nil
		}
	}
	if len(s.Config.Roots) == 0 {
		return "", events.Errorf(events.CodeForbidden, "no project roots are configured, so no %s is allowed", field).
			WithHint("start the worker with --roots (BERTH_ROOTS) naming the directories projects may live in")
	}
	return "", events.Errorf(events.CodeBadRequest, "%s %q is outside the allowed roots", field, path).WithHint(hint)
}

// within reports whether path is root or below it.
func within(root, path string) bool {
	rel, err := filepath.Rel(root, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) && !filepath.IsAbs(rel)
}

// composeFiles validates the named compose files, or finds the default one,
// through an os.Root on the production directory.
func composeFiles(prod string, names []string) ([]string, error) {
	root, err := os.OpenRoot(prod)
	if err != nil {
		return nil, events.Errorf(events.CodeBadRequest, "cannot open production directory %q: %v", prod, err).
			WithHint("check the directory's permissions")
	}
	defer root.Close()
	if len(names) == 0 {
		for _, n := range defaultComposeFiles {
			if st, err := root.Stat(n); err == nil && st.Mode().IsRegular() {
				return []string{n}, nil
			}
		}
		return nil, events.Errorf(events.CodeBadRequest, "no compose file in %q", prod).
			WithHint("add compose.yaml to the production directory, or name the files in compose_files")
	}
	if len(names) > 16 {
		return nil, events.Errorf(events.CodeBadRequest, "at most 16 compose files are allowed").WithHint("merge the compose files")
	}
	for _, n := range names {
		if n == "" || filepath.IsAbs(n) || filepath.Clean(n) != n || strings.HasPrefix(n, "-") || n == ".." || strings.HasPrefix(n, "../") {
			return nil, events.Errorf(events.CodeBadRequest, "compose file %q must be a clean path relative to the production directory", n).
				WithHint("name compose files like compose.yaml or deploy/compose.prod.yaml")
		}
		st, err := root.Stat(n)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil, events.Errorf(events.CodeBadRequest, "compose file %q does not exist in %q", n, prod).
					WithHint("check the name, or leave compose_files out to use compose.yaml")
			}
			return nil, events.Errorf(events.CodeBadRequest, "compose file %q cannot be used: %v", n, err).
				WithHint("compose files must stay inside the production directory")
		}
		if !st.Mode().IsRegular() {
			return nil, events.Errorf(events.CodeBadRequest, "compose file %q is not a regular file", n).WithHint("name a file")
		}
	}
	return slices.Clone(names), nil
}
