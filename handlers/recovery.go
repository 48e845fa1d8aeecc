package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/rs/zerolog"

	"github.com/berth-ops/berth"
	"github.com/berth-ops/berth/events"
	"github.com/berth-ops/berth/state"
)

// operations are the operations by name, as journals name them.
var operations = map[string]*operation{
	deployOp.name:   deployOp,
	rollbackOp.name: rollbackOp,
	restartOp.name:  restartOp,
	startOp.name:    startOp,
	stopOp.name:     stopOp,
}

// Recover finishes every operation a stopped worker left in a journal, as
// its operation says: a deploy is undone (production ends as it was
// before it, never mixed), a rollback, restart, start or stop is finished.
// Call it before the worker takes commands. A journal it cannot finish
// (the engine is unreachable) stays for RecoverLoop.
func (s *Service) Recover(ctx context.Context) error {
	if s.State == nil || s.Composer == nil {
		return nil
	}
	if m, ok := s.State.(interface {
		MigrateLegacy(func(string) (string, bool)) error
	}); ok {
		err := m.MigrateLegacy(func(project string) (string, bool) {
			p, err := s.Store.GetProject(ctx, project)
			if err != nil {
				return "", false
			}
			return p.Production, true
		})
		if err != nil {
			zerolog.Ctx(ctx).Warn().Err(err).Msg("cannot move the state of an earlier version to its production directory")
		}
	}
	journals, err := s.State.Journals()
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	for _, j := range journals {
		if err := s.recoverJournal(ctx, j, nopReporter{}, false); err != nil {
			errs = append(errs, fmt.Errorf("recover %s of %s: %w", j.Op, j.Project.Name, err))
		}
	}
	return errors.Join(errs...)
}

// RecoverLoop retries, until ctx ends, the journals that could not be
// finished yet (the engine or the store did not answer), with a backoff
// per production directory; meanwhile it keeps their projects locked, so
// no other mutation runs on a half-done one. It leaves alone a journal
// whose request runs in this worker.
func (s *Service) RecoverLoop(ctx context.Context) {
	if s.State == nil || s.Composer == nil {
		return
	}
	type retry struct {
		at   time.Time
		wait time.Duration
	}
	next := map[string]retry{}
	tick := max(s.Config.LockLease/3, 100*time.Millisecond)
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(tick):
		}
		journals, err := s.State.Journals()
		if err != nil {
			zerolog.Ctx(ctx).Warn().Err(err).Msg("cannot read the journals of interrupted operations")
		}
		for _, j := range journals {
			prod := j.Project.Production
			if !s.ops.claim(prod) {
				continue
			}
			log := zerolog.Ctx(ctx).With().Str("project", j.Project.Name).Str("request_id", j.RequestID).Str("op", j.Op).Logger()
			rt := next[prod]
			if s.Now().Before(rt.at) {
				if err := s.adoptLock(ctx, j); err != nil {
					log.Warn().Err(err).Msg("cannot keep the lock of a project whose operation waits to be finished")
				}
				s.ops.release(prod)
				continue
			}
			err := s.recoverClaimed(log.WithContext(ctx), j, nopReporter{})
			s.ops.release(prod)
			if err == nil {
				delete(next, prod)
				continue
			}
			rt.wait = min(max(2*rt.wait, 2*time.Second), 5*time.Minute)
			rt.at = s.Now().Add(rt.wait)
			next[prod] = rt
			log.Warn().Err(err).Dur("retry_in", rt.wait).Msg("cannot finish an interrupted operation yet")
		}
	}
}

// recoverJournal finishes the operation of j, unless a request of this
// worker runs on its production directory. answering says that the caller
// answers j's request with the outcome: when the operation cannot be
// finished now, its journal is marked answered, so that the worker that
// finishes it later records the end in history.
func (s *Service) recoverJournal(ctx context.Context, j *state.Journal, rep Reporter, answering bool) error {
	if !s.ops.claim(j.Project.Production) {
		return events.Errorf(events.CodeConflict, "an operation on %s runs in this worker", j.Project.Production).
			WithHint("wait for it to finish")
	}
	defer s.ops.release(j.Project.Production)
	log := zerolog.Ctx(ctx).With().Str("project", j.Project.Name).Str("request_id", j.RequestID).Str("op", j.Op).
		Str("step", j.Current()).Logger()
	err := s.recoverClaimed(log.WithContext(ctx), j, rep)
	if err != nil && answering && !j.Answered {
		if cur, jerr := s.State.Journal(j.Project.Production); jerr == nil && cur != nil && cur.RequestID == j.RequestID {
			cur.Answered = true
			if werr := s.State.WriteJournal(j.Project.Production, cur); werr != nil {
				log.Warn().Err(werr).Msg("cannot mark the journal answered")
			}
		}
	}
	return err
}

// recoverClaimed finishes the operation of j; the caller has claimed its
// production directory. It holds the project lock (the one the journal
// names) while it works, and releases it once the journal is gone.
func (s *Service) recoverClaimed(ctx context.Context, j *state.Journal, rep Reporter) error {
	log := zerolog.Ctx(ctx)
	upgradeJournal(j)
	op := operations[j.Op]
	if op == nil {
		return fmt.Errorf("the journal names an operation %q this worker does not know", j.Op)
	}
	log.Warn().Msg("finishing an operation a stopped worker left")
	if err := s.adoptLock(ctx, j); err != nil {
		return err
	}
	lockCtx, stop := s.holdLock(ctx, j.Project.Name, j.LockOwner)
	defer stop()
	r := &opRun{s: s, op: op, j: j, rep: rep}
	if j.StepsMS == nil {
		j.StepsMS = map[string]int64{}
	}
	if j.Release != "" {
		if rel, err := s.State.Release(j.Project.Production, j.Release); err == nil {
			r.rel = rel
		}
	}
	for _, id := range j.Releases {
		rel, err := s.State.Release(j.Project.Production, id)
		if err != nil {
			return fmt.Errorf("release %s of the interrupted rollback: %w", id, err)
		}
		r.rels = append(r.rels, rel)
	}
	answered := j.Answered
	var outcome *events.Error
	switch op.onFailure {
	case undoSteps:
		if !j.Undoing {
			j.Undoing = true
			j.Failure = events.Errorf(events.CodeInternal, "the worker stopped during step %s of this %s", j.Current(), op.name)
		}
		err := s.retryTransient(lockCtx, r, func() error { return s.undo(lockCtx, r) })
		if err != nil && !isUnhealthyAfterUndo(err) {
			return err
		}
		e := j.Failure
		if err != nil {
			e = events.Errorf(e.Code, "%s; production was rolled back, but the previous release did not come up healthy: %v", e.Message, err)
		}
		e = e.With("rolled_back", true).WithHint(fmt.Sprintf("production was rolled back to the previous release at %s; %s again",
			s.Now().UTC().Format(time.RFC3339), op.name))
		s.concludeUndo(ctx, r, e)
		outcome = e
	case finishSteps:
		if err := s.retryTransient(lockCtx, r, func() error { return s.clearLeftovers(lockCtx, j) }); err != nil {
			return err
		}
		_, err := s.runSteps(lockCtx, r, min(j.Done, len(j.Steps)), true)
		if r.handedOff {
			return err
		}
		outcome = events.AsError(err)
		if err == nil {
			outcome = nil
		}
	}
	if err := s.Locks.ReleaseLock(context.WithoutCancel(ctx), j.Project.Name, j.LockOwner); err != nil {
		log.Warn().Err(err).Msg("cannot release the project lock; it expires on its own")
	}
	if answered {
		// The request was answered while its undo was pending: history
		// learns how it ended from here.
		s.recordRecovery(ctx, j, outcome)
	}
	log.Info().Bool("ok", outcome == nil || outcome.Data["rolled_back"] == true).Msg("finished an interrupted operation")
	return nil
}

// adoptLock takes (or keeps) the project lock in the journal's name.
func (s *Service) adoptLock(ctx context.Context, j *state.Journal) error {
	info := &berth.LockInfo{Owner: j.LockOwner, RequestID: j.RequestID, User: j.User, Action: j.Op + " (finishing after a worker stop)", Since: s.Now().UTC()}
	holder, ok, err := s.Locks.AcquireLock(ctx, j.Project.Name, info, s.Config.LockLease)
	switch {
	case err != nil:
		return err
	case ok:
		return nil
	case holder != nil && holder.Owner == j.LockOwner:
		if _, err := s.Locks.ExtendLock(ctx, j.Project.Name, j.LockOwner, s.Config.LockLease); err != nil {
			return err
		}
		return nil
	}
	return ConflictError(j.Project.Name, holder)
}

// recordRecovery adds the end of an operation finished after its request
// was answered to the project's history.
func (s *Service) recordRecovery(ctx context.Context, j *state.Journal, e *events.Error) {
	h := &berth.HistoryEntry{RequestID: j.RequestID, Action: j.Op, User: j.User, Confirmer: j.Confirmer, OK: e == nil,
		StartedAt: j.StartedAt, DurationMS: s.Now().Sub(j.StartedAt).Milliseconds(),
		Details: map[string]any{"recovered": true, "finished": "the worker finished the operation after its result was sent"}}
	if e != nil {
		h.ErrorCode = e.Code
		h.Details["rolled_back"] = e.Data["rolled_back"]
	}
	if err := s.Store.AppendHistory(context.WithoutCancel(ctx), j.Project.Name, h); err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Msg("cannot record the finished operation in history")
	}
}

// resumedOutcome answers a redelivered mutation whose first attempt
// stopped with its worker: it finishes that attempt's journal if no one
// has yet, then answers with the attempt's outcome, without running
// anything again. ok is false when the attempt left nothing (it stopped
// before its first step).
func (s *Service) resumedOutcome(ctx context.Context, req *Request, rep Reporter) (data any, err error, ok bool) {
	journals, jerr := s.State.Journals()
	if jerr != nil {
		return nil, jerr, true
	}
	for _, j := range journals {
		if j.RequestID != req.ID {
			continue
		}
		if err := s.recoverJournal(ctx, j, rep, true); err != nil {
			code := events.CodeInternal
			if transient(err) {
				code = events.ErrorCode(err)
			}
			return nil, events.Errorf(code, "the %s was interrupted by a worker stop and could not be finished yet: %v", req.Action, events.AsError(err).Message).
				WithHint("the worker keeps trying and holds the project lock until it is done; follow status and history"), true
		}
	}
	o, oerr := s.State.Outcome(req.ID)
	if oerr != nil {
		return nil, oerr, true
	}
	if o == nil {
		return nil, nil, false
	}
	if len(o.Data) > 0 {
		data = json.RawMessage(o.Data)
	}
	if o.Error != nil {
		return data, o.Error, true
	}
	return data, nil, true
}

// upgradeJournal reads a journal an earlier Berth wrote (version 1: one
// phase instead of the steps) as this one's.
func upgradeJournal(j *state.Journal) {
	if j.Version >= state.JournalVersion || len(j.Steps) > 0 {
		return
	}
	switch j.Op {
	case "deploy":
		j.Steps = []string{events.StepBackup, events.StepSync, events.StepBuild, events.StepUp, events.StepVerify}
		if len(j.Releases) > 0 {
			j.Release, j.Releases = j.Releases[0], nil
		}
	case "rollback":
		j.Steps = []string{events.StepRollback, events.StepUp, events.StepVerify}
		j.Phase = events.StepRollback
	}
	if j.Phase == events.StepRollback && j.Op == "deploy" {
		j.Undoing, j.Done = true, len(j.Steps)-1
	} else if i := slices.Index(j.Steps, j.Phase); i >= 0 {
		j.Done = i
	}
	j.Version = state.JournalVersion
}

// nopReporter drops progress: recovery at start has no requester.
type nopReporter struct{}

func (nopReporter) Progress(string, string, int, int)    {}
func (nopReporter) Log([]events.LogLine) error           { return nil }
func (nopReporter) Confirm(string, time.Time, any) error { return nil }
