package handlers

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/berth-ops/berth"
	"github.com/berth-ops/berth/events"
)

// ConfigSetArgs are the arguments of config.set.
type ConfigSetArgs struct {
	Workspace      string   `json:"workspace"`
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
	// Roles maps users to viewer, operator or admin.
	Roles map[string]string `json:"roles,omitempty"`
	// AnonymousViewers lets any user read the project.
	AnonymousViewers bool `json:"anonymous_viewers,omitempty"`
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
	switch a.Strategy {
	case "":
		a.Strategy = "copy"
	case "copy", "symlink", "registry":
	default:
		return nil, events.Errorf(events.CodeBadRequest, "strategy %q is not known", a.Strategy).
			WithHint("use copy (the default), symlink or registry")
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
	declared, err := s.Engine.ComposeServices(ctx, prod, files, a.ComposeProject)
	if err != nil {
		return nil, err
	}
	services := slices.Clone(declared)
	if running, err := s.Engine.Containers(ctx, a.ComposeProject); err == nil {
		for _, c := range running {
			if c.Service != "" && !slices.Contains(services, c.Service) {
				services = append(services, c.Service)
			}
		}
	}
	slices.Sort(services)
	if len(services) == 0 {
		return nil, events.Errorf(events.CodeBadRequest, "the compose files %v declare no services", files).
			WithHint("check the compose files in the production directory")
	}
	primary := a.PrimaryService
	if primary == "" {
		primary = services[0]
	} else if !slices.Contains(services, primary) {
		return nil, events.Errorf(events.CodeBadRequest, "primary_service %q is not a service of this project", primary).
			With("services", services).
			WithHint("pick one of: " + strings.Join(services, ", "))
	}
	now := s.Now().UTC()
	p := &berth.Project{
		Name: req.Project, Workspace: ws, Production: prod,
		ComposeProject: a.ComposeProject, ComposeFiles: files,
		Services: services, PrimaryService: primary, Strategy: a.Strategy, RequireSecondApprover: a.RequireSecondApprover,
		StabilizeS: a.StabilizeS, Roles: a.Roles, AnonymousViewers: a.AnonymousViewers,
		CreatedAt: now, UpdatedAt: now, UpdatedBy: req.User,
	}
	if old, err := s.Store.GetProject(ctx, req.Project); err == nil {
		p.CreatedAt = old.CreatedAt
	} else if events.ErrorCode(err) != events.CodeNotFound {
		return nil, err
	}
	if err := s.Store.PutProject(ctx, p); err != nil {
		return nil, err
	}
	s.known.remember(p, s.Now())
	_ = s.Store.InvalidateStatus(ctx, req.Project)
	return p, nil
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
