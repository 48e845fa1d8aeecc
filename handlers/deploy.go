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
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/berth-ops/berth"
	"github.com/berth-ops/berth/events"
	"github.com/berth-ops/berth/filesync"
	"github.com/berth-ops/berth/state"
)

// Deploy brings production up to date with the workspace after
// confirmation; a failure after the backup rolls it back.
func (s *Service) Deploy(ctx context.Context, req *Request, rep Reporter) (any, error) {
	return s.mutate(ctx, req, rep, deployMutation)
}

var deployMutation = &mutation{op: deployOp, confirm: true, plan: (*Service).planDeploy, skip: (*Service).upToDate, begin: beginDeploy}

// deployOp is a deploy, step by step. Each step's undo reverses it; a
// failure (or a worker stopped at any point) undoes every step reached,
// newest first, and settles: the previous release's files and images, up
// and verified.
var deployOp = &operation{
	name:      events.ActionDeploy,
	onFailure: undoSteps,
	steps: []step{
		{name: events.StepBackup, title: backupTitle, do: backup, undo: dropIncompleteBackup},
		{name: events.StepSync, title: syncTitle, skip: strategyIsNot("copy"), do: syncFiles, undo: restoreFiles},
		{name: events.StepPull, title: stepTitle("docker compose pull"), skip: strategyIsNot("registry"), do: pullImages, undo: restoreImages},
		{name: events.StepBuild, title: stepTitle("docker compose build"), skip: noBuild, do: buildImages, undo: restoreImages},
		{name: events.StepUp, title: stepTitle("docker compose up"), do: upRelease, undo: settleRollouts},
		{name: events.StepVerify, title: verifyTitle, do: verifyServices},
	},
	settleFrom: events.StepUp,
	settle:     upPreviousRelease,
	finish:     recordRelease,
	failed:     deployFailure,
}

// DeployArgs are the arguments of deploy.
type DeployArgs struct {
	// Workspace deploys from another directory (a git worktree of the
	// project) for this deploy only; it must lie inside the roots.
	Workspace string `json:"workspace,omitempty"`
}

// DeployPlan is the plan of a deploy.
type DeployPlan struct {
	// PrivilegeWidening lists the compose settings of the release that give
	// a service more reach over the host than production's gave it (see
	// docs/security.md): shown first.
	PrivilegeWidening []Widening `json:"privilege_widening,omitempty"`
	// ComposeDiff are the changes to the compose files, line by line.
	ComposeDiff []ComposeDiff        `json:"compose_diff,omitempty"`
	Strategy    string               `json:"strategy"`
	Workspace   string               `json:"workspace"`
	Production  string               `json:"production"`
	Files       filesync.PlanSummary `json:"files"`
	NeedsBuild  bool                 `json:"needs_build"`
	Steps       []string             `json:"steps"`
	// Rollout says which services roll out start-first and which are
	// recreated, when a service asks for start-first.
	Rollout *RolloutPlan `json:"rollout,omitempty"`
}

// DeployResult is the result data of a deploy.
type DeployResult struct {
	Release  string               `json:"release,omitempty"`
	Changed  bool                 `json:"changed"`
	Message  string               `json:"message,omitempty"`
	Files    filesync.PlanSummary `json:"files"`
	Services []ServiceHealth      `json:"services,omitempty"`
	// Rollouts are the services rolled out start-first.
	Rollouts []RolloutResult `json:"rollouts,omitempty"`
	// NotUp lists the services that are not up, when nothing was
	// deployed (start brings them up).
	NotUp   []string         `json:"not_up,omitempty"`
	StepsMS map[string]int64 `json:"steps_ms,omitempty"`
	// RolledBack is set on a failed deploy whose changes were undone;
	// RollbackPending on one whose undo the worker is still retrying.
	RolledBack      bool            `json:"rolled_back,omitempty"`
	RollbackPending bool            `json:"rollback_pending,omitempty"`
	Failure         *FailureDetails `json:"failure,omitempty"`
	Output          []string        `json:"output,omitempty"`
}

// planPathsShown is how many paths of each kind a plan lists.
const planPathsShown = 20

func (s *Service) planDeploy(ctx context.Context, p *berth.Project, raw json.RawMessage) (*plan, error) {
	var a DeployArgs
	if err := events.DecodeArgs(raw, &a); err != nil {
		return nil, err
	}
	ws := p.Workspace
	if a.Workspace != "" {
		var err error
		if ws, err = s.deployWorkspace(p, a.Workspace); err != nil {
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
	man, err := s.State.Manifest(p.Production)
	if err != nil {
		return nil, err
	}
	fp, err := s.diff(ctx, ws, p.Production, man, rules)
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
		NeedsBuild: !fp.Empty()}
	dp.Steps = deployOp.plannedSteps(dp)
	if dp.PrivilegeWidening, err = s.composeWidenings(ctx, p, ws, fp); err != nil {
		return nil, err
	}
	dp.ComposeDiff = composeDiffs(p.ComposeFiles, ws, p.Production, fp)
	if model, err := s.Engine.ComposeModel(ctx, berth.ComposeSpec{Dir: ws, Files: p.ComposeFiles, Project: p.ComposeProject}); err == nil {
		dp.Rollout = rolloutPlan(p, model)
	}
	return &plan{Data: dp, Digest: fp.Digest + ":" + ws, state: fp}, nil
}

// deployWorkspace checks a deploy's workspace argument: the project's
// workspace, or one of the directories a global admin allowed in
// config.set workspaces. Any other directory is refused, whatever the
// roots allow: it could be another project's.
func (s *Service) deployWorkspace(p *berth.Project, dir string) (string, error) {
	if p.Strategy == "symlink" || p.Strategy == "registry" {
		return "", events.Errorf(events.CodeBadRequest, "workspace cannot be chosen per deploy with strategy %s", p.Strategy).
			WithHint("only strategy copy deploys from another directory")
	}
	d, err := s.confinedDir("workspace", dir)
	if err != nil {
		return "", err
	}
	real, _ := filepath.EvalSymlinks(d)
	if real == p.Workspace || slices.Contains(p.Workspaces, real) {
		return real, nil
	}
	allowed := append([]string{p.Workspace}, p.Workspaces...)
	return "", events.Errorf(events.CodeForbidden, "%s is not a workspace of project %s", dir, p.Name).
		With("workspaces", allowed).
		WithHint("deploy from one of: " + strings.Join(allowed, ", ") + "; a global admin adds directories with config.set workspaces")
}

// composeWidenings compares the workspace's compose model with
// production's when the plan changes a compose file, and applies the
// project's compose policy: "refuse" turns a widening into forbidden.
func (s *Service) composeWidenings(ctx context.Context, p *berth.Project, ws string, fp *filesync.Plan) ([]Widening, error) {
	changed := false
	for _, c := range slices.Concat(fp.Added, fp.Modified) {
		changed = changed || slices.Contains(p.ComposeFiles, c.Path)
	}
	if !changed {
		return nil, nil
	}
	before, err := s.Engine.ComposeModel(ctx, composeSpec(p))
	if err != nil {
		before = nil // production's files do not load: every service is new
	}
	after, err := s.Engine.ComposeModel(ctx, berth.ComposeSpec{Dir: ws, Files: p.ComposeFiles, Project: p.ComposeProject})
	if err != nil {
		e := events.AsError(err)
		return nil, events.Errorf(e.Code, "the workspace's compose files do not load: %s", e.Message).
			WithHint("fix the compose files in the workspace; `docker compose config` there shows the same error")
	}
	w := privilegeWidenings(before, after, p.Production, ws)
	if len(w) > 0 && p.ComposePolicy == "refuse" {
		lines := make([]string, len(w))
		for i, x := range w {
			lines[i] = x.String()
		}
		return nil, events.Errorf(events.CodeForbidden, "project %s refuses compose changes that widen a service's reach over the host: %s",
			p.Name, strings.Join(lines, "; ")).
			With("privilege_widening", w).
			WithHint("change the compose files, or have a global admin set compose_policy to warn (config.set)")
	}
	return w, nil
}

// plannedSteps lists the steps a deploy of dp runs, for its plan.
func (op *operation) plannedSteps(dp *DeployPlan) []string {
	r := &opRun{deployPlan: dp}
	out := []string{events.StepLock}
	for _, st := range op.steps {
		if st.skip == nil || !st.skip(r) {
			out = append(out, st.name)
		}
	}
	return out
}

// upToDate answers a copy deploy with nothing to copy: there is nothing
// to do, and it says which services are not up, since start brings them up.
func (s *Service) upToDate(ctx context.Context, p *berth.Project, pl *plan) (any, bool) {
	dp := deployPlanOf(pl)
	if dp.Strategy != "copy" || dp.Files.Added+dp.Files.Modified+dp.Files.Deleted > 0 {
		return nil, false
	}
	res := &DeployResult{Changed: false, Files: dp.Files, Message: "production is up to date with the workspace: nothing to deploy"}
	if down, err := s.servicesNotUp(ctx, p); err == nil && len(down) > 0 {
		res.NotUp = down
		res.Message += fmt.Sprintf("; but %d services are not up (%s): send start to bring them up", len(down), strings.Join(down, ", "))
	}
	return res, true
}

// beginDeploy makes the release a confirmed deploy creates.
func beginDeploy(r *opRun, pl *plan) error {
	dp := deployPlanOf(pl)
	r.deployPlan, r.files = dp, pl.state.(*filesync.Plan)
	now := r.s.Now().UTC()
	r.rel = &state.Release{ID: newReleaseID(now, r.j.RequestID), RequestID: r.j.RequestID, User: r.j.User, Confirmer: r.j.Confirmer,
		Strategy: dp.Strategy, Workspace: dp.Workspace, CreatedAt: now, Status: state.ReleasePending, Files: dp.Files}
	r.j.Release = r.rel.ID
	r.note("release", r.rel.ID)
	r.note("files", map[string]int{"added": dp.Files.Added, "modified": dp.Files.Modified, "deleted": dp.Files.Deleted})
	return nil
}

func strategyIsNot(strategy string) func(*opRun) bool {
	return func(r *opRun) bool { return r.deployPlan.Strategy != strategy }
}

func noBuild(r *opRun) bool { return !r.deployPlan.NeedsBuild }

func stepTitle(title string) func(*opRun) string { return func(*opRun) string { return title } }

func backupTitle(r *opRun) string {
	return "backing up " + countOf(r.deployPlan.Files.Modified+r.deployPlan.Files.Deleted, "file") + " and the services' images"
}

func syncTitle(r *opRun) string {
	f := r.deployPlan.Files
	return fmt.Sprintf("copying %s, deleting %d", countOf(f.Added+f.Modified, "file"), f.Deleted)
}

// countOf is "1 file", "2 files".
func countOf(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

func verifyTitle(r *opRun) string { return "waiting for the services to be up" }

// backup copies what the sync will overwrite or delete, and tags each
// service's current image so that it survives prunes. The release's
// record names the tags before they are made, so an undo of a backup cut
// short knows what to remove.
func backup(ctx context.Context, r *opRun) error {
	s, p, rel := r.s, r.project(), r.rel
	model, err := s.Engine.ComposeModel(ctx, r.spec())
	if err != nil {
		return err
	}
	cs, err := s.Engine.Containers(ctx, p.ComposeProject)
	if err != nil {
		return err
	}
	rel.Images = map[string]state.ReleaseImage{}
	for _, svc := range model.ServiceNames() {
		ref := model.Services[svc].Image
		id := ""
		if c := firstContainer(cs, svc); c != nil {
			id = c.ImageID
		}
		if id == "" {
			if id, err = s.Composer.ImageID(ctx, ref); err != nil {
				continue // never built yet: nothing to go back to
			}
		}
		rel.Images[svc] = state.ReleaseImage{Ref: ref, PreviousID: id, BackupTag: backupTag(p.ComposeProject, svc, rel.ID)}
	}
	if err := s.State.SaveRelease(r.prod(), rel); err != nil {
		return err
	}
	for _, img := range rel.Images {
		if err := s.Composer.TagImage(ctx, img.PreviousID, img.BackupTag); err != nil {
			return err
		}
	}
	files := r.files
	if files == nil {
		files = &filesync.Plan{}
	}
	if err := filesync.Backup(ctx, p.Production, files, s.State.ReleaseDir(r.prod(), rel.ID)); err != nil {
		return err
	}
	man, err := s.State.Manifest(r.prod())
	if err != nil {
		return err
	}
	if err := s.State.SaveReleaseManifest(r.prod(), rel.ID, man); err != nil {
		return err
	}
	rel.BackedUp = true
	return s.State.SaveRelease(r.prod(), rel)
}

// dropIncompleteBackup removes a backup that was cut short, with the
// image tags it made; a complete one stays as the failed release's record.
func dropIncompleteBackup(ctx context.Context, r *opRun) error {
	if r.rel != nil && backedUp(r.rel) {
		return nil
	}
	if r.rel != nil {
		for _, img := range r.rel.Images {
			if err := r.s.Composer.RemoveImage(ctx, img.BackupTag); err != nil && events.ErrorCode(err) != events.CodeConflict {
				return err
			}
		}
	}
	r.rel = nil
	return r.s.State.RemoveRelease(r.prod(), r.j.Release)
}

// backedUp reports whether a release's backup is complete (releases of
// an earlier Berth did not say, and were complete once recorded).
func backedUp(rel *state.Release) bool { return rel.BackedUp || rel.Status != state.ReleasePending }

func syncFiles(ctx context.Context, r *opRun) error {
	total := len(r.files.Added) + len(r.files.Modified) + len(r.files.Deleted)
	every := max(1, total/20)
	return filesync.Apply(ctx, r.deployPlan.Workspace, r.prod(), r.files, func(done, total int) {
		if done == 1 {
			r.s.pause(ctx, events.StepSync) // mid-sync: the crash tests' hardest case
		}
		if done%every == 0 || done == total {
			r.progress(events.StepSync, "copying files", done, total)
		}
	})
}

// restoreFiles puts production's files back from the release's backup,
// and the manifest as it was before the release.
func restoreFiles(ctx context.Context, r *opRun) error {
	if r.rel == nil || !backedUp(r.rel) {
		return nil
	}
	return r.s.restoreRelease(ctx, r.prod(), r.rel)
}

// restoreRelease puts back the files a release changed and the manifest
// before it.
func (s *Service) restoreRelease(ctx context.Context, prod string, rel *state.Release) error {
	if err := filesync.Restore(ctx, prod, s.State.ReleaseDir(prod, rel.ID)); err != nil {
		return fmt.Errorf("restore the files of release %s: %w", rel.ID, err)
	}
	man, err := s.State.ReleaseManifest(prod, rel.ID)
	if err != nil {
		return err
	}
	return s.State.SaveManifest(prod, man)
}

func pullImages(ctx context.Context, r *opRun) error {
	return r.compose(ctx, events.StepPull, events.CodeBuildFailed, "pull")
}

func buildImages(ctx context.Context, r *opRun) error {
	return r.compose(ctx, events.StepBuild, events.CodeBuildFailed, "build")
}

// restoreImages points each service's image reference back at the image
// it had before the release (a build or pull moved it; so may a build a
// stopped worker left running, which undo stopped first).
func restoreImages(ctx context.Context, r *opRun) error {
	if r.rel == nil {
		return nil
	}
	if r.request == nil && (r.j.Current() == events.StepPull || r.j.Current() == events.StepBuild) {
		return r.s.settleImages(ctx, r.rel)
	}
	return r.s.retagImages(ctx, r.rel)
}

// settleImages re-tags rel's images after a worker stopped during a pull
// or build. Killing compose ends the request, but the engine finishes the
// step it is in and may then tag the result, after undo put the
// reference back: so it watches the engine's tag events and re-tags until
// the references stayed put for Config.ImageSettle (at most 20 times as
// long).
func (s *Service) settleImages(ctx context.Context, rel *state.Release) error {
	refs := map[string]bool{}
	for _, img := range rel.Images {
		refs[img.Ref] = true
		refs[dockerRefTag(img.Ref)] = true
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	tagged := make(chan struct{}, 1)
	watchErr := make(chan error, 1)
	since := s.Now().Add(-time.Second)
	go func() {
		watchErr <- s.Composer.WatchImageTags(wctx, since, func(ref string) {
			if refs[ref] {
				select {
				case tagged <- struct{}{}:
				default:
				}
			}
		})
	}()
	quiet := time.NewTimer(s.Config.ImageSettle)
	defer quiet.Stop()
	limit := time.After(20 * s.Config.ImageSettle)
	for {
		if err := s.retagImages(ctx, rel); err != nil {
			return err
		}
		select {
		case <-tagged:
			zerolog.Ctx(ctx).Warn().Msg("the engine tagged a build or pull of the stopped worker after undo; tagging back")
			quiet.Reset(s.Config.ImageSettle)
		case <-quiet.C:
			return s.retagImages(ctx, rel)
		case <-limit:
			return s.retagImages(ctx, rel)
		case err := <-watchErr:
			if err == nil {
				err = ctx.Err()
			}
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// dockerRefTag is ref with the ":latest" the engine adds to a reference
// without a tag.
func dockerRefTag(ref string) string {
	name := ref
	if i := strings.LastIndex(ref, "/"); i >= 0 {
		name = ref[i+1:]
	}
	if strings.Contains(name, ":") || strings.Contains(name, "@") {
		return ref
	}
	return ref + ":latest"
}

func (s *Service) retagImages(ctx context.Context, rel *state.Release) error {
	for _, svc := range sortedKeys(rel.Images) {
		img := rel.Images[svc]
		if id, err := s.Composer.ImageID(ctx, img.Ref); err == nil && id == img.PreviousID {
			continue
		}
		if err := s.Composer.TagImage(ctx, img.PreviousID, img.Ref); err != nil {
			return fmt.Errorf("re-tag %s: %w", img.Ref, err)
		}
	}
	return nil
}

// upRelease recreates what changed, rolls out the start-first services,
// removes the containers of services the compose files no longer have,
// and starts the one-shots. It does not wait: verifyRelease judges what
// is up.
func upRelease(ctx context.Context, r *opRun) error {
	return r.upProject(ctx, events.StepUp, true)
}

// upPreviousRelease brings the project up as the undone steps left its
// files and images, removes what the failed release added, and verifies
// it, reporting as the rollback's.
func upPreviousRelease(ctx context.Context, r *opRun) error {
	s, p := r.s, r.project()
	r.progress(events.StepRollback, "docker compose up with the previous release", -1, -1)
	if err := r.upProject(ctx, events.StepRollback, false); err != nil {
		return err
	}
	model := r.model
	s.syncServices(ctx, p, model)
	_, fail, err := s.verify(ctx, p, model, nil, events.StepRollback, r.rep)
	if err != nil {
		return err
	}
	if fail != nil {
		return &unhealthyAfterUndo{fail}
	}
	return s.checkImages(ctx, p, r.rel)
}

// checkImages makes sure that after an undo each service of rel runs the
// image it ran before the release, and its reference points at it.
func (s *Service) checkImages(ctx context.Context, p *berth.Project, rel *state.Release) error {
	if rel == nil {
		return nil
	}
	if err := s.retagImages(ctx, rel); err != nil {
		return err
	}
	cs, err := s.Engine.Containers(ctx, p.ComposeProject)
	if err != nil {
		return err
	}
	for _, c := range cs {
		if img, ok := rel.Images[c.Service]; ok && c.ImageID != img.PreviousID {
			return events.Errorf(events.CodeInternal, "container %s runs image %s, not %s as before the release", c.Name, shortImageID(c.ImageID), shortImageID(img.PreviousID)).
				WithHint("run rollback, or deploy again")
		}
	}
	return nil
}

// recordRelease records a verified deploy: the manifest of what Berth now
// owns in production, the release, the services.
func recordRelease(ctx context.Context, r *opRun) (any, error) {
	s, p, rel := r.s, r.project(), r.rel
	if rel.Strategy == "copy" {
		man, err := s.State.Manifest(r.prod())
		if err != nil {
			return nil, err
		}
		man.Apply(r.files)
		if err := s.State.SaveManifest(r.prod(), man); err != nil {
			return nil, fmt.Errorf("save the deploy manifest: %w", err)
		}
	}
	fin := s.Now().UTC()
	rel.Status, rel.FinishedAt, rel.Steps = state.ReleaseOK, &fin, r.j.StepsMS
	if err := s.State.SaveRelease(r.prod(), rel); err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Msg("cannot record the release")
	}
	s.syncServices(ctx, p, r.model)
	s.pruneReleases(ctx, p)
	r.note("steps_ms", rel.Steps)
	return &DeployResult{Release: rel.ID, Changed: true, Files: rel.Files, Services: r.health, StepsMS: rel.Steps, Rollouts: r.rolledOut}, nil
}

func deployFailure(r *opRun) any {
	res := &DeployResult{Files: r.deployPlanFiles(), Failure: r.failure, StepsMS: r.j.StepsMS, Output: r.output,
		RolledBack: r.j.Undoing && !r.handedOff, RollbackPending: r.handedOff}
	if r.rel != nil {
		res.Release = r.rel.ID
	}
	return res
}

func (r *opRun) deployPlanFiles() filesync.PlanSummary {
	switch {
	case r.deployPlan != nil:
		return r.deployPlan.Files
	case r.rel != nil:
		return r.rel.Files
	}
	return filesync.PlanSummary{}
}

// pruneReleases keeps the newest KeepReleases releases, removing older
// backups and their image tags.
func (s *Service) pruneReleases(ctx context.Context, p *berth.Project) {
	rels, err := s.State.Releases(p.Production)
	if err != nil || len(rels) <= s.Config.KeepReleases {
		return
	}
	for _, r := range rels[s.Config.KeepReleases:] {
		for _, img := range r.Images {
			if err := s.Composer.RemoveImage(ctx, img.BackupTag); err != nil {
				zerolog.Ctx(ctx).Warn().Err(err).Str("tag", img.BackupTag).Msg("cannot remove an old release's image tag")
			}
		}
		if err := s.State.RemoveRelease(p.Production, r.ID); err != nil {
			zerolog.Ctx(ctx).Warn().Err(err).Str("release", r.ID).Msg("cannot remove an old release")
		}
	}
}

func composeSpec(p *berth.Project) berth.ComposeSpec {
	return berth.ComposeSpec{Dir: p.Production, Files: p.ComposeFiles, Project: p.ComposeProject}
}

// planSymlink plans a deploy of a project whose production directory links
// to the workspace: nothing to copy; rebuild, recreate, verify. The digest
// is the workspace tree's, so a change after the plan is noticed.
func (s *Service) planSymlink(ctx context.Context, p *berth.Project) (*plan, error) {
	digest, err := filesync.TreeHash(p.Workspace)
	if err != nil {
		return nil, events.Errorf(events.CodeBadRequest, "cannot read the workspace %s: %v", p.Workspace, err).
			WithHint("check the workspace's permissions")
	}
	dp := &DeployPlan{Strategy: "symlink", Workspace: p.Workspace, Production: p.Production, NeedsBuild: true}
	dp.Steps = deployOp.plannedSteps(dp)
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
	model, err := s.Engine.ComposeModel(ctx, composeSpec(p))
	if err != nil {
		return nil, err
	}
	images := model.Images()
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
	for _, svc := range sortedKeys(images) {
		fmt.Fprintf(h, "%s=%s\n", svc, images[svc])
	}
	rp := &RegistryPlan{DeployPlan: DeployPlan{Strategy: "registry", Workspace: p.Workspace, Production: p.Production}, Images: images}
	rp.Steps = deployOp.plannedSteps(&rp.DeployPlan)
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

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func firstContainer(cs []berth.Container, svc string) *berth.Container {
	for i := range cs {
		if cs[i].Service == svc {
			return &cs[i]
		}
	}
	return nil
}
