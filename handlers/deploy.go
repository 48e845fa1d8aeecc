package handlers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/rs/zerolog"

	"github.com/berth-ops/berth"
	"github.com/berth-ops/berth/events"
	"github.com/berth-ops/berth/filesync"
)

// DeployArgs are the arguments of deploy.
type DeployArgs struct {
	// Workspace deploys from another directory (a git worktree of the
	// project) for this deploy only; it must lie inside the roots.
	Workspace string `json:"workspace,omitempty"`
}

// DeployPlan is the plan of a deploy.
type DeployPlan struct {
	Strategy   string               `json:"strategy"`
	Workspace  string               `json:"workspace"`
	Production string               `json:"production"`
	Files      filesync.PlanSummary `json:"files"`
	NeedsBuild bool                 `json:"needs_build"`
	Steps      []string             `json:"steps"`
}

// DeployResult is the result data of a deploy.
type DeployResult struct {
	Release  string               `json:"release,omitempty"`
	Changed  bool                 `json:"changed"`
	Message  string               `json:"message,omitempty"`
	Files    filesync.PlanSummary `json:"files"`
	Services []ServiceHealth      `json:"services,omitempty"`
	StepsMS  map[string]int64     `json:"steps_ms,omitempty"`
	// RolledBack is set on a failed deploy whose changes were undone.
	RolledBack bool            `json:"rolled_back,omitempty"`
	Failure    *FailureDetails `json:"failure,omitempty"`
	Output     []string        `json:"output,omitempty"`
}

// planPathsShown is how many paths of each kind a plan lists.
const planPathsShown = 20

// Deploy brings production up to date with the workspace after
// confirmation: backup, sync, build, up, verify, and an automatic rollback
// when any step after the backup fails.
func (s *Service) Deploy(ctx context.Context, req *Request, rep Reporter) (any, error) {
	if req.Resumed && req.Confirm != "" {
		if data, err, ok := s.resumedOutcome(ctx, req); ok {
			return data, err
		}
	}
	return s.twoPhase(ctx, req, rep, mutation{
		plan: s.planDeploy,
		skip: func(pl *plan) (any, bool) {
			dp := deployPlanOf(pl)
			if dp.Strategy != "copy" || dp.Files.Added+dp.Files.Modified+dp.Files.Deleted > 0 {
				return nil, false
			}
			return &DeployResult{Changed: false, Files: dp.Files, Message: "production is up to date with the workspace: nothing to deploy"}, true
		},
		run: func(ctx context.Context, p *berth.Project, args json.RawMessage, pl *plan, rep Reporter) (any, error) {
			return s.runDeploy(ctx, req, p, pl, rep)
		},
	})
}

func (s *Service) planDeploy(ctx context.Context, p *berth.Project, raw json.RawMessage) (*plan, error) {
	var a DeployArgs
	if err := events.DecodeArgs(raw, &a); err != nil {
		return nil, err
	}
	ws := p.Workspace
	if a.Workspace != "" {
		if p.Strategy == "symlink" || p.Strategy == "registry" {
			return nil, events.Errorf(events.CodeBadRequest, "workspace cannot be chosen per deploy with strategy %s", p.Strategy).
				WithHint("only strategy copy deploys from another directory")
		}
		var err error
		if ws, err = s.confinedDir("workspace", a.Workspace); err != nil {
			return nil, err
		}
	}
	switch p.Strategy {
	case "symlink":
		return s.planSymlink(ctx, p)
	case "registry":
		return s.planRegistry(ctx, p)
	}
	if ws == p.Production {
		return nil, events.Errorf(events.CodeBadRequest, "workspace and production are the same directory").
			WithHint("configure distinct directories, or use strategy symlink")
	}
	rules, err := filesync.LoadRules(ws)
	if err != nil {
		return nil, events.Errorf(events.CodeBadRequest, "cannot read the ignore rules of %s: %v", ws, err).
			WithHint("fix .berthignore (gitignore syntax)")
	}
	man, err := s.state(p.Name).manifest()
	if err != nil {
		return nil, err
	}
	fp, err := s.diff(ctx, p.Name, ws, p.Production, man, rules)
	if err != nil {
		return nil, err
	}
	if len(fp.Refused) > 0 {
		return nil, events.Errorf(events.CodeBadRequest, "the workspace has %d entries that cannot be deployed, first: %s (%s)",
			len(fp.Refused), fp.Refused[0].Path, fp.Refused[0].Reason).
			With("refused", fp.Refused).
			WithHint("remove symlinks that point outside the workspace (and special files), or exclude them in .berthignore")
	}
	dp := &DeployPlan{Strategy: "copy", Workspace: ws, Production: p.Production, Files: fp.Summary(planPathsShown),
		NeedsBuild: !fp.Empty(), Steps: []string{events.StepLock, events.StepBackup, events.StepSync, events.StepBuild, events.StepUp, events.StepVerify}}
	return &plan{Data: dp, Digest: fp.Digest + ":" + ws, state: fp}, nil
}

// runDeploy executes a confirmed deploy plan under the project lock.
func (s *Service) runDeploy(ctx context.Context, req *Request, p *berth.Project, pl *plan, rep Reporter) (any, error) {
	dp, fp := deployPlanOf(pl), pl.state.(*filesync.Plan)
	ps := s.state(p.Name)
	now := s.Now().UTC()
	rel := &Release{ID: newReleaseID(now, req.ID), RequestID: req.ID, User: fmt.Sprint(req.Details["requested_by"]), Confirmer: req.Confirmer,
		Strategy: dp.Strategy, Workspace: dp.Workspace, CreatedAt: now, Status: ReleasePending, Files: dp.Files, Steps: map[string]int64{}}
	req.Note("release", rel.ID)
	req.Note("files", map[string]int{"added": dp.Files.Added, "modified": dp.Files.Modified, "deleted": dp.Files.Deleted})
	j := &Journal{Op: "deploy", RequestID: req.ID, Project: *p, Releases: []string{rel.ID}, Phase: events.StepBackup, StartedAt: now}
	if err := ps.writeJournal(j); err != nil {
		return nil, fmt.Errorf("write the deploy journal: %w", err)
	}
	spec := composeSpec(p)
	timer := stepTimer{s: s, rel: rel}

	// Backup: production is untouched until it is complete.
	timer.start(events.StepBackup)
	rep.Progress(events.StepBackup, fmt.Sprintf("backing up %d files and the services' images", dp.Files.Modified+dp.Files.Deleted), -1, -1)
	s.pause(ctx, events.StepBackup)
	if err := s.backup(ctx, ps, p, spec, fp, rel); err != nil {
		_ = os.RemoveAll(ps.releaseDir(rel.ID))
		_ = ps.clearJournal()
		return nil, err
	}
	timer.stop()

	steps := []struct {
		name string
		run  func() error
	}{
		{events.StepSync, func() error {
			total := len(fp.Added) + len(fp.Modified) + len(fp.Deleted)
			every := max(1, total/20)
			return filesync.Apply(ctx, dp.Workspace, p.Production, fp, func(done, total int) {
				if done == 1 {
					s.pause(ctx, events.StepSync) // mid-sync: the crash tests' hardest case
				}
				if done%every == 0 || done == total {
					rep.Progress(events.StepSync, "copying files", done, total)
				}
			})
		}},
		{events.StepPull, func() error {
			if dp.Strategy != "registry" {
				return nil
			}
			rep.Progress(events.StepPull, "docker compose pull", -1, -1)
			s.pause(ctx, events.StepPull)
			return s.Composer.Compose(ctx, spec, events.CodeBuildFailed, s.output(p, rep, events.StepPull), "pull")
		}},
		{events.StepBuild, func() error {
			if !dp.NeedsBuild {
				return nil
			}
			rep.Progress(events.StepBuild, "docker compose build", -1, -1)
			s.pause(ctx, events.StepBuild)
			return s.Composer.Compose(ctx, spec, events.CodeBuildFailed, s.output(p, rep, events.StepBuild), "build")
		}},
		{events.StepUp, func() error {
			rep.Progress(events.StepUp, "docker compose up", -1, -1)
			s.pause(ctx, events.StepUp)
			return s.Composer.Compose(ctx, spec, events.CodeHealthFailed, s.output(p, rep, events.StepUp), s.upArgs(false)...)
		}},
	}
	for _, st := range steps {
		if (st.name == events.StepPull && dp.Strategy != "registry") || (st.name == events.StepBuild && !dp.NeedsBuild) {
			continue
		}
		j.Phase = st.name
		if err := ps.writeJournal(j); err != nil {
			return s.failDeploy(ctx, req, ps, j, rel, rep, fmt.Errorf("write the deploy journal: %w", err), nil)
		}
		timer.start(st.name)
		err := st.run()
		timer.stop()
		if err != nil {
			return s.failDeploy(ctx, req, ps, j, rel, rep, err, nil)
		}
	}
	j.Phase = events.StepVerify
	if err := ps.writeJournal(j); err != nil {
		return s.failDeploy(ctx, req, ps, j, rel, rep, err, nil)
	}
	timer.start(events.StepVerify)
	rep.Progress(events.StepVerify, "waiting for the services to be up", 0, len(p.Services))
	s.pause(ctx, events.StepVerify)
	health, fail, err := s.verify(ctx, p, nil, rep)
	timer.stop()
	if err == nil && fail != nil {
		err = fail.Error()
	}
	if err != nil {
		return s.failDeploy(ctx, req, ps, j, rel, rep, err, fail)
	}

	// Success: the manifest records what Berth now owns in production.
	man, err := ps.manifest()
	if err == nil && dp.Strategy == "copy" {
		if err = writeJSON(filepath.Join(ps.releaseDir(rel.ID), "manifest.before.json"), man); err == nil {
			man.Apply(fp)
			err = man.Save(ps.manifestPath())
		}
	}
	if err != nil {
		return s.failDeploy(ctx, req, ps, j, rel, rep, fmt.Errorf("save the deploy manifest: %w", err), nil)
	}
	fin := s.Now().UTC()
	rel.Status, rel.FinishedAt = ReleaseOK, &fin
	if err := ps.saveRelease(rel); err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Msg("cannot record the release")
	}
	_ = ps.clearJournal()
	_ = s.Store.InvalidateStatus(context.WithoutCancel(ctx), p.Name)
	s.pruneReleases(ctx, ps, p)
	req.Note("steps_ms", rel.Steps)
	return &DeployResult{Release: rel.ID, Changed: true, Files: dp.Files, Services: health, StepsMS: rel.Steps}, nil
}

// backup copies what the sync will overwrite or delete, saves the manifest
// as it was, and tags each service's current image so it survives prunes.
func (s *Service) backup(ctx context.Context, ps projectState, p *berth.Project, spec berth.ComposeSpec, fp *filesync.Plan, rel *Release) error {
	dir := ps.releaseDir(rel.ID)
	if err := filesync.Backup(ctx, p.Production, fp, dir); err != nil {
		return err
	}
	man, err := ps.manifest()
	if err != nil {
		return err
	}
	if err := writeJSON(filepath.Join(dir, "manifest.before.json"), man); err != nil {
		return err
	}
	refs, err := s.Composer.ComposeImages(ctx, spec)
	if err != nil {
		return err
	}
	cs, err := s.Engine.Containers(ctx, p.ComposeProject)
	if err != nil {
		return err
	}
	rel.Images = map[string]ReleaseImage{}
	for svc, ref := range refs {
		var id string
		for _, c := range cs {
			if c.Service == svc && c.ImageID != "" {
				id = c.ImageID
				break
			}
		}
		if id == "" {
			if id, err = s.Composer.ImageID(ctx, ref); err != nil {
				continue // never built yet: nothing to go back to
			}
		}
		tag := backupTag(p.ComposeProject, svc, rel.ID)
		if err := s.Composer.TagImage(ctx, id, tag); err != nil {
			return err
		}
		rel.Images[svc] = ReleaseImage{Ref: ref, PreviousID: id, BackupTag: tag}
	}
	return ps.saveRelease(rel)
}

// failDeploy rolls a failed deploy back and reports the failure.
func (s *Service) failDeploy(ctx context.Context, req *Request, ps projectState, j *Journal, rel *Release, rep Reporter, cause error, fail *FailureDetails) (any, error) {
	e := events.AsError(cause)
	if ctx.Err() != nil && e.Code == events.CodeInternal {
		e = events.Errorf(events.CodeTimeout, "the deploy was interrupted: %v", context.Cause(ctx)).
			WithHint("production was rolled back; deploy again")
	}
	zerolog.Ctx(ctx).Warn().Str("code", string(e.Code)).Str("error", e.Message).Msg("deploy failed; rolling back")
	// The rollback must finish even when the deploy's context ended.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.Config.VerifyTimeout+5*time.Minute)
	defer cancel()
	if fail == nil && e.Code == events.CodeHealthFailed {
		// compose up --wait saw it first: find out which service and why,
		// before the rollback replaces its container.
		fail = s.diagnose(rctx, &j.Project)
		if fail != nil {
			e.With("service", fail.Service)
		}
	}
	e.Message = s.redact(&j.Project, e.Message)
	rel.Error = e.Message
	res := &DeployResult{Release: rel.ID, Changed: false, Files: rel.Files, RolledBack: true, Failure: fail, StepsMS: rel.Steps}
	if out, ok := e.Data["output"].([]string); ok {
		res.Output = s.redactAll(&j.Project, append([]string(nil), out...))
		delete(e.Data, "output") // in data.output, redacted
	}
	rep.Progress(events.StepRollback, "rolling back: "+e.Message, -1, -1)
	if err := s.undo(rctx, ps, j, []*Release{rel}, rep); err != nil {
		res.RolledBack = false
		return res, events.Errorf(e.Code, "%s; the automatic rollback failed too: %v", e.Message, err).
			WithHint("production may be inconsistent: check status and logs, then roll back or deploy again")
	}
	rel.Status = ReleaseRolledBack
	_ = ps.saveRelease(rel)
	req.Note("rolled_back", true)
	e.With("rolled_back", true)
	if e.Hint == "" {
		e.Hint = "production was rolled back to the previous release; fix the cause and deploy again"
	} else {
		e.Hint += "; production was rolled back to the previous release"
	}
	return res, e
}

// undo rolls production back over releases (newest first): files from
// their backups, the manifest from before the oldest, the services' images
// re-tagged to what they were, then up and verify. It is idempotent, so a
// worker that stops during it runs it again on start.
func (s *Service) undo(ctx context.Context, ps projectState, j *Journal, rels []*Release, rep Reporter) error {
	j.Phase = events.StepRollback
	if err := ps.writeJournal(j); err != nil {
		return err
	}
	s.pause(ctx, events.StepRollback)
	p := &j.Project
	for i, rel := range rels {
		rep.Progress(events.StepRollback, "restoring the files of release "+rel.ID, i+1, len(rels))
		if err := filesync.Restore(ctx, p.Production, ps.releaseDir(rel.ID)); err != nil {
			return fmt.Errorf("restore files of %s: %w", rel.ID, err)
		}
	}
	oldest := rels[len(rels)-1]
	var man filesync.Manifest
	if err := readJSON(filepath.Join(ps.releaseDir(oldest.ID), "manifest.before.json"), &man); err == nil {
		if err := man.Save(ps.manifestPath()); err != nil {
			return err
		}
	}
	for _, img := range oldest.Images {
		if err := s.Composer.TagImage(ctx, img.BackupTag, img.Ref); err != nil {
			return fmt.Errorf("re-tag %s: %w", img.Ref, err)
		}
	}
	rep.Progress(events.StepRollback, "docker compose up with the previous images", -1, -1)
	if err := s.Composer.Compose(ctx, composeSpec(p), events.CodeHealthFailed, s.output(p, rep, events.StepRollback), s.upArgs(true)...); err != nil {
		return err
	}
	_, fail, err := s.verify(ctx, p, nil, rep)
	if err != nil {
		return err
	}
	if fail != nil {
		return fail.Error()
	}
	_ = s.Store.InvalidateStatus(ctx, p.Name)
	return ps.clearJournal()
}

// upArgs are the arguments of `docker compose up`: wait for health
// within the verify timeout; after a rollback, never build.
func (s *Service) upArgs(noBuild bool) []string {
	args := []string{"up", "-d", "--wait", "--wait-timeout", strconv.Itoa(int(s.Config.VerifyTimeout / time.Second))}
	if noBuild {
		args = append(args, "--no-build")
	}
	return args
}

// pruneReleases keeps the newest KeepReleases releases, removing older
// backups and their image tags.
func (s *Service) pruneReleases(ctx context.Context, ps projectState, p *berth.Project) {
	rels, err := ps.releases()
	if err != nil || len(rels) <= s.Config.KeepReleases {
		return
	}
	for _, r := range rels[s.Config.KeepReleases:] {
		for _, img := range r.Images {
			if err := s.Composer.RemoveImage(ctx, img.BackupTag); err != nil {
				zerolog.Ctx(ctx).Warn().Err(err).Str("tag", img.BackupTag).Msg("cannot remove an old release's image tag")
			}
		}
		if err := os.RemoveAll(ps.releaseDir(r.ID)); err != nil {
			zerolog.Ctx(ctx).Warn().Err(err).Str("release", r.ID).Msg("cannot remove an old release")
		}
	}
}

func composeSpec(p *berth.Project) berth.ComposeSpec {
	return berth.ComposeSpec{Dir: p.Production, Files: p.ComposeFiles, Project: p.ComposeProject}
}

// stepTimer measures the steps of a release.
type stepTimer struct {
	s     *Service
	rel   *Release
	name  string
	begin time.Time
}

func (t *stepTimer) start(name string) { t.name, t.begin = name, t.s.Now() }
func (t *stepTimer) stop()             { t.rel.Steps[t.name] = t.s.Now().Sub(t.begin).Milliseconds() }

// planSymlink plans a deploy of a project whose production directory links
// to the workspace: nothing to copy; rebuild, recreate, verify. The digest
// is the workspace tree's, so a change after the plan is noticed.
func (s *Service) planSymlink(ctx context.Context, p *berth.Project) (*plan, error) {
	digest, err := filesync.TreeHash(p.Workspace)
	if err != nil {
		return nil, events.Errorf(events.CodeBadRequest, "cannot read the workspace %s: %v", p.Workspace, err).
			WithHint("check the workspace's permissions")
	}
	dp := &DeployPlan{Strategy: "symlink", Workspace: p.Workspace, Production: p.Production, NeedsBuild: true,
		Steps: []string{events.StepLock, events.StepBackup, events.StepBuild, events.StepUp, events.StepVerify}}
	return &plan{Data: dp, Digest: "symlink:" + digest, state: &filesync.Plan{}}, nil
}

// RegistryPlan lists the images a registry deploy pulls.
type RegistryPlan struct {
	DeployPlan
	Images map[string]string `json:"images"`
}

// planRegistry plans a deploy of services that use image references:
// pull, recreate, verify. The digest covers the compose files' contents
// and the image references.
func (s *Service) planRegistry(ctx context.Context, p *berth.Project) (*plan, error) {
	spec := composeSpec(p)
	images, err := s.Composer.ComposeImages(ctx, spec)
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	root, err := os.OpenRoot(p.Production)
	if err != nil {
		return nil, events.Errorf(events.CodeBadRequest, "cannot open production %s: %v", p.Production, err).WithHint("check its permissions")
	}
	defer root.Close()
	for _, f := range p.ComposeFiles {
		b, err := root.ReadFile(f)
		if err != nil {
			return nil, events.Errorf(events.CodeBadRequest, "cannot read compose file %s: %v", f, err).WithHint("check the compose files")
		}
		fmt.Fprintf(h, "%s\x00%x\n", f, sha256.Sum256(b))
	}
	svcs := make([]string, 0, len(images))
	for svc := range images {
		svcs = append(svcs, svc)
	}
	slices.Sort(svcs)
	for _, svc := range svcs {
		fmt.Fprintf(h, "%s=%s\n", svc, images[svc])
	}
	rp := &RegistryPlan{DeployPlan: DeployPlan{Strategy: "registry", Workspace: p.Workspace, Production: p.Production,
		Steps: []string{events.StepLock, events.StepBackup, events.StepPull, events.StepUp, events.StepVerify}}, Images: images}
	return &plan{Data: rp, Digest: "registry:" + hex.EncodeToString(h.Sum(nil)), state: &filesync.Plan{}}, nil
}

// deployPlanOf returns the common part of every strategy's plan.
func deployPlanOf(pl *plan) *DeployPlan {
	switch d := pl.Data.(type) {
	case *RegistryPlan:
		return &d.DeployPlan
	case *DeployPlan:
		return d
	}
	panic(fmt.Sprintf("handlers: not a deploy plan: %T", pl.Data))
}
