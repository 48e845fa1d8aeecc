package handlers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/rs/zerolog"

	"github.com/berth-ops/berth"
	"github.com/berth-ops/berth/events"
	"github.com/berth-ops/berth/state"
)

// RollbackArgs are the arguments of rollback.
type RollbackArgs struct {
	// To names the release to return to; default: the one before the
	// latest successful release.
	To string `json:"to,omitempty"`
}

// RollbackPlan is the plan of a rollback.
type RollbackPlan struct {
	// Undo are the releases to undo, newest first.
	Undo []ReleaseInfo `json:"undo"`
	// Target is the release production returns to ("" for the state
	// before Berth's first kept release); TargetRelease describes it, and
	// TargetNote says what "" means.
	Target        string          `json:"target"`
	TargetRelease *ReleaseSummary `json:"target_release,omitempty"`
	TargetNote    string          `json:"target_note,omitempty"`
	// Files counts the files restored and removed.
	FilesRestored int `json:"files_restored"`
	FilesRemoved  int `json:"files_removed"`
	// Images are the service images re-tagged to what they were.
	Images map[string]string `json:"images"`
	Steps  []string          `json:"steps"`
}

// ReleaseInfo summarises a release in plans and results.
type ReleaseInfo struct {
	ID        string `json:"id"`
	User      string `json:"user"`
	CreatedAt string `json:"created_at"`
	Added     int    `json:"added"`
	Modified  int    `json:"modified"`
	Deleted   int    `json:"deleted"`
}

// RollbackResult is the result data of a rollback.
type RollbackResult struct {
	Reverted []string        `json:"reverted"`
	Target   string          `json:"target"`
	Services []ServiceHealth `json:"services,omitempty"`
	// Rollouts are the services rolled out start-first.
	Rollouts []RolloutResult `json:"rollouts,omitempty"`
}

// Rollback returns production to an earlier release after confirmation:
// the files and the images the services ran, then verifies.
func (s *Service) Rollback(ctx context.Context, req *Request, rep Reporter) (any, error) {
	return s.mutate(ctx, req, rep, rollbackMutation)
}

var rollbackMutation = &mutation{op: rollbackOp, confirm: true, plan: (*Service).planRollback, begin: beginRollback}

// rollbackOp returns production to the release before the ones it undoes.
// Each step can run twice, so a worker that stops during it leaves the
// next one to finish it.
var rollbackOp = &operation{
	name:      events.ActionRollback,
	onFailure: finishSteps,
	steps: []step{
		{name: events.StepRollback, title: rollbackTitle, do: restoreReleases},
		{name: events.StepUp, title: stepTitle("docker compose up with the restored files and images"), do: upRestored, resume: resumeUpRestored},
		{name: events.StepVerify, title: verifyTitle, do: verifyServices},
	},
	finish: recordRollback,
	failed: opFailure,
}

func beginRollback(r *opRun, pl *plan) error {
	r.rels = pl.state.([]*state.Release)
	for _, rel := range r.rels {
		r.j.Releases = append(r.j.Releases, rel.ID)
	}
	r.note("reverted", r.j.Releases)
	return nil
}

func rollbackTitle(r *opRun) string {
	return fmt.Sprintf("restoring the files and images from before %s", strings.Join(r.j.Releases, ", "))
}

// restoreReleases puts back, newest first, the files each release
// changed, then the manifest and the images from before the oldest.
func restoreReleases(ctx context.Context, r *opRun) error {
	for i, rel := range r.rels {
		r.progress(events.StepRollback, "restoring the files of release "+rel.ID, i+1, len(r.rels))
		if err := r.s.restoreRelease(ctx, r.prod(), rel); err != nil {
			return err
		}
	}
	if len(r.rels) == 0 {
		return nil
	}
	return r.s.retagImages(ctx, r.rels[len(r.rels)-1])
}

// upRestored recreates the services from the restored files and images,
// without building, and removes those the undone releases added.
func upRestored(ctx context.Context, r *opRun) error {
	return r.upProject(ctx, events.StepUp, false)
}

// resumeUpRestored ends the rollouts a stopped worker left, then brings
// the project up.
func resumeUpRestored(ctx context.Context, r *opRun) error {
	if err := settleRollouts(ctx, r); err != nil {
		return err
	}
	return upRestored(ctx, r)
}

func recordRollback(ctx context.Context, r *opRun) (any, error) {
	s := r.s
	now := s.Now().UTC()
	for _, rel := range r.rels {
		rel.Status, rel.RevertedBy, rel.FinishedAt = state.ReleaseReverted, r.j.RequestID, &now
		if err := s.State.SaveRelease(r.prod(), rel); err != nil {
			zerolog.Ctx(ctx).Warn().Err(err).Str("release", rel.ID).Msg("cannot record the reverted release")
		}
	}
	s.syncServices(ctx, r.project(), r.model)
	target := ""
	if rels, err := s.State.Releases(r.prod()); err == nil {
		for _, rel := range rels {
			if rel.Status == state.ReleaseOK {
				target = rel.ID
				break
			}
		}
	}
	return &RollbackResult{Reverted: r.j.Releases, Target: target, Services: r.health, Rollouts: r.rolledOut}, nil
}

// OpFailure is the data of a failed restart, start, stop or rollback:
// the failing service and Compose's last lines.
type OpFailure struct {
	Failure *FailureDetails  `json:"failure,omitempty"`
	Output  []string         `json:"output,omitempty"`
	StepsMS map[string]int64 `json:"steps_ms,omitempty"`
}

func opFailure(r *opRun) any {
	return &OpFailure{Failure: r.failure, Output: r.output, StepsMS: r.j.StepsMS}
}

func (s *Service) planRollback(ctx context.Context, p *berth.Project, raw json.RawMessage) (*plan, error) {
	var a RollbackArgs
	if err := events.DecodeArgs(raw, &a); err != nil {
		return nil, err
	}
	all, err := s.State.Releases(p.Production)
	if err != nil {
		return nil, err
	}
	var live []*state.Release // deployed and not undone, newest first
	for _, r := range all {
		if r.Status == state.ReleaseOK {
			live = append(live, r)
		}
	}
	if len(live) == 0 {
		return nil, events.Errorf(events.CodeNotFound, "project %s has no deployed release to roll back", p.Name).
			WithHint("roll back is possible after a successful deploy")
	}
	undo := live[:1]
	target := ""
	if len(live) > 1 {
		target = live[1].ID
	}
	if a.To != "" {
		i := -1
		for k, r := range live {
			if r.ID == a.To {
				i = k
			}
		}
		if i < 0 {
			ids := make([]string, 0, len(live))
			for _, r := range live {
				ids = append(ids, r.ID)
			}
			return nil, events.Errorf(events.CodeNotFound, "release %q is not a live release of %s", a.To, p.Name).
				With("releases", ids).WithHint("pick one of: " + strings.Join(ids, ", "))
		}
		if i == 0 {
			return nil, events.Errorf(events.CodeBadRequest, "release %s is the current release", a.To).
				WithHint("name an older release, or leave to out to undo the latest deploy")
		}
		undo, target = live[:i], a.To
	}
	rp := &RollbackPlan{Target: target, Images: map[string]string{}, Steps: []string{events.StepLock, events.StepRollback, events.StepUp, events.StepVerify}}
	for _, r := range live {
		if r.ID == target {
			sum := summarize(r, false)
			rp.TargetRelease = &sum
		}
	}
	if target == "" {
		rp.TargetNote = "the files and images production had before the oldest kept release"
	}
	h := sha256.New()
	for _, r := range undo {
		rp.Undo = append(rp.Undo, ReleaseInfo{ID: r.ID, User: r.User, CreatedAt: r.CreatedAt.Format("2006-01-02T15:04:05Z07:00"),
			Added: r.Files.Added, Modified: r.Files.Modified, Deleted: r.Files.Deleted})
		rp.FilesRestored += r.Files.Modified + r.Files.Deleted
		rp.FilesRemoved += r.Files.Added
		fmt.Fprintln(h, r.ID)
	}
	for svc, img := range undo[len(undo)-1].Images {
		rp.Images[svc] = img.Ref + " → " + shortImageID(img.PreviousID)
	}
	return &plan{Data: rp, Digest: hex.EncodeToString(h.Sum(nil)), state: undo}, nil
}

func shortImageID(id string) string {
	id = strings.TrimPrefix(id, "sha256:")
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
