package handlers

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/rs/zerolog"

	"github.com/berth-ops/berth/events"
)

// Recover finishes every mutation a stopped worker left in a journal: a
// deploy stopped during its backup is dropped (production was not touched
// yet); one stopped later, and any rollback, is rolled back to the release
// before it. Production ends fully old, never mixed. Call it before the
// worker takes commands.
func (s *Service) Recover(ctx context.Context, rep Reporter) error {
	if s.Config.StateDir == "" || s.Composer == nil {
		return nil
	}
	if rep == nil {
		rep = nopReporter{}
	}
	dirs, err := os.ReadDir(filepath.Join(s.Config.StateDir, "projects"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, d := range dirs {
		ps := s.state(d.Name())
		j, err := ps.journal()
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		log := zerolog.Ctx(ctx).With().Str("project", d.Name()).Str("request_id", j.RequestID).Str("op", j.Op).Str("phase", j.Phase).Logger()
		log.Warn().Msg("recovering an operation interrupted by a worker stop")
		if err := s.recoverOne(log.WithContext(ctx), ps, j, rep); err != nil {
			log.Error().Err(err).Msg("recovery failed")
			errs = append(errs, fmt.Errorf("recover %s: %w", d.Name(), err))
			continue
		}
		log.Info().Msg("recovered")
	}
	return errors.Join(errs...)
}

func (s *Service) recoverOne(ctx context.Context, ps projectState, j *Journal, rep Reporter) error {
	var rels []*Release
	for _, id := range j.Releases {
		r, err := ps.release(id)
		if err != nil {
			if j.Op == "deploy" {
				// The backup never completed: production is untouched.
				_ = os.RemoveAll(ps.releaseDir(id))
				return ps.clearJournal()
			}
			return fmt.Errorf("release %s: %w", id, err)
		}
		rels = append(rels, r)
	}
	if j.Op == "deploy" && j.Phase == events.StepBackup {
		_ = os.RemoveAll(ps.releaseDir(j.Releases[0]))
		return ps.clearJournal()
	}
	// Whatever holds the lock is the stopped worker's request: take it over.
	if h, err := s.Locks.LockHolder(ctx, j.Project.Name); err == nil && h.RequestID == j.RequestID {
		defer func() { _ = s.Locks.ReleaseLock(context.WithoutCancel(ctx), j.Project.Name, h.Owner) }()
	}
	phase := j.Phase // undo records its own phase
	if err := s.undo(ctx, ps, j, rels, rep); err != nil {
		return err
	}
	now := s.Now().UTC()
	for _, r := range rels {
		r.Recovered, r.FinishedAt = true, &now
		if j.Op == "deploy" {
			r.Status = ReleaseRolledBack
			r.Error = fmt.Sprintf("the worker stopped during the deploy (step %s)", phase)
		} else {
			r.Status, r.RevertedBy = ReleaseReverted, j.RequestID
		}
		if err := ps.saveRelease(r); err != nil {
			return err
		}
	}
	return nil
}

// resumedOutcome answers a redelivered mutation whose first attempt
// stopped with the worker: from the release it left, the honest result of
// that attempt, without running anything again.
func (s *Service) resumedOutcome(ctx context.Context, req *Request) (any, error, bool) {
	ps := s.state(req.Project)
	if j, err := ps.journal(); err == nil && j.RequestID == req.ID {
		// Not recovered yet (recovery failed at start): try now.
		if err := s.recoverOne(ctx, ps, j, nopReporter{}); err != nil {
			return nil, events.Errorf(events.CodeInternal, "the operation was interrupted and could not be rolled back yet: %v", err).
				WithHint("check the worker log and the project's status; roll back by hand if needed"), true
		}
	}
	rel, err := ps.releaseByRequest(req.ID)
	if err != nil || rel == nil {
		return nil, nil, false
	}
	switch rel.Status {
	case ReleaseOK:
		return &DeployResult{Release: rel.ID, Changed: true, Files: rel.Files, StepsMS: rel.Steps}, nil, true
	case ReleaseReverted:
		if rel.RevertedBy == req.ID {
			return map[string]any{"reverted": []string{rel.ID}}, nil, true
		}
	}
	at := time.Time{}
	if rel.FinishedAt != nil {
		at = *rel.FinishedAt
	}
	return &DeployResult{Release: rel.ID, Files: rel.Files, RolledBack: true},
		events.Errorf(events.CodeInternal, "%s; production was rolled back to the previous release at %s", rel.Error, at.Format(time.RFC3339)).
			With("rolled_back", true).
			WithHint("deploy again"), true
}

// nopReporter drops progress: recovery at start has no requester.
type nopReporter struct{}

func (nopReporter) Progress(string, string, int, int)    {}
func (nopReporter) Log([]events.LogLine) error           { return nil }
func (nopReporter) Confirm(string, time.Time, any) error { return nil }
