package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/berth-ops/berth"
	"github.com/berth-ops/berth/events"
	"github.com/berth-ops/berth/filesync"
	"github.com/berth-ops/berth/state"
)

// An operation is a mutation as a list of named steps. The one list
// drives the run (each step in order), its progress events (one per step
// as it starts), its journal (the step in progress is written down before
// it runs), what a worker does after a failure or a crash (undo the steps
// reached, newest first, or run the rest again) and the measured times.
//
// Each action's file declares its operation as a table: deploy.go,
// rollback.go, restart.go, start.go, stop.go.
type operation struct {
	name  string
	steps []step
	// onFailure is what happens to a run that fails or is found
	// interrupted.
	onFailure recovery
	// settleFrom names the first step that changes the running
	// containers; settle runs after an undo that reached it, to bring
	// the project back up as the undone steps left it, and verify it.
	settleFrom string
	settle     func(ctx context.Context, r *opRun) error
	// finish records a successful run and returns its result data.
	finish func(ctx context.Context, r *opRun) (any, error)
	// failed returns the result data of a failed run.
	failed func(r *opRun) any
}

// recovery is what a worker does with a run that failed or stopped.
type recovery int

const (
	// undoSteps undoes every step the run reached, newest first, and
	// settles: production ends as it was before (deploy).
	undoSteps recovery = iota
	// finishSteps ends a failed run as it is, and finishes a stopped one:
	// the step in progress runs again (or its resume), then the rest. Every
	// step of such an operation can run twice (rollback, restart, start,
	// stop).
	finishSteps
)

// step is one step of an operation.
type step struct {
	name string
	// title is the progress message at the step's start.
	title func(r *opRun) string
	// skip, when set, leaves the step out of a run that does not need it.
	skip func(r *opRun) bool
	do   func(ctx context.Context, r *opRun) error
	// resume, when set, replaces do for a step a stopped worker left in
	// progress (finishSteps).
	resume func(ctx context.Context, r *opRun) error
	// undo reverses what do did, even partly; it must be safe to repeat.
	// nil: the step changes nothing that needs undoing.
	undo func(ctx context.Context, r *opRun) error
}

func (op *operation) step(name string) *step {
	for i := range op.steps {
		if op.steps[i].name == name {
			return &op.steps[i]
		}
	}
	return nil
}

// opRun is one run of an operation: its journal, and what its steps hand
// on to each other.
type opRun struct {
	s   *Service
	op  *operation
	j   *state.Journal
	rep Reporter
	// request is the request the run executes; nil for a run a worker
	// recovers after a crash, which has no requester.
	request *Request

	// planData is the plan the run executes (live runs only).
	planData any
	// files is a deploy's confirmed file plan (live runs only).
	files *filesync.Plan
	// deployPlan is a deploy's plan.
	deployPlan *DeployPlan
	// rel is the release a deploy makes; rels those a rollback undoes,
	// newest first.
	rel  *state.Release
	rels []*state.Release
	// model is what the compose files declare once up ran; health and
	// failure are what verify found.
	model   *berth.ComposeModel
	health  []ServiceHealth
	failure *FailureDetails
	// output is the tail of Compose's output of a failed step.
	output []string
	// rolledOut are the start-first rollouts the run finished.
	rolledOut []RolloutResult
	// downtime is what a restart or stop measured.
	downtime time.Duration
	// handedOff is set when the run's undo could not finish and was
	// handed to the worker's recovery loop, which now holds the lock.
	handedOff bool
}

func (r *opRun) project() *berth.Project { return &r.j.Project }
func (r *opRun) prod() string            { return r.j.Project.Production }

// spec is the compose spec of the run's project; its processes carry the
// run's tag, so that the worker that takes over after a crash can stop
// what is left of them.
func (r *opRun) spec() berth.ComposeSpec {
	spec := composeSpec(r.project())
	spec.Tag = r.j.LockOwner
	return spec
}

// note adds a detail to the history record of the run's request.
func (r *opRun) note(key string, v any) {
	if r.request != nil {
		r.request.Note(key, v)
	}
}

// progress reports a step of the run.
func (r *opRun) progress(step, msg string, done, total int) { r.rep.Progress(step, msg, done, total) }

// execute runs op on a new journal: every step in order, then finish.
// The caller holds the project lock (j.LockOwner).
func (s *Service) execute(ctx context.Context, r *opRun) (any, error) {
	j := r.j
	j.Steps = j.Steps[:0]
	for _, st := range r.op.steps {
		if st.skip == nil || !st.skip(r) {
			j.Steps = append(j.Steps, st.name)
		}
	}
	if j.StepsMS == nil {
		j.StepsMS = map[string]int64{}
	}
	return s.runSteps(ctx, r, 0, false)
}

// runSteps runs the steps of r from index from on; resume uses the
// first one's resume.
func (s *Service) runSteps(ctx context.Context, r *opRun, from int, resume bool) (any, error) {
	j := r.j
	for i := from; i < len(j.Steps); i++ {
		st := r.op.step(j.Steps[i])
		if st == nil {
			return s.failed(ctx, r, fmt.Errorf("operation %s has no step %q", r.op.name, j.Steps[i]))
		}
		j.Done = i
		if err := s.State.WriteJournal(r.prod(), j); err != nil {
			return s.failed(ctx, r, fmt.Errorf("write the %s journal: %w", r.op.name, err))
		}
		if st.title != nil {
			r.progress(st.name, st.title(r), -1, -1)
		}
		s.pause(ctx, st.name)
		do := st.do
		if resume && i == from && st.resume != nil {
			do = st.resume
		}
		begin := s.Now()
		var err error
		if r.op.onFailure == finishSteps {
			// Every step can run twice: an engine away for a moment is
			// waited for.
			err = s.retryTransient(ctx, r, func() error { return do(ctx, r) })
		} else {
			err = do(ctx, r)
		}
		j.StepsMS[st.name] = s.Now().Sub(begin).Milliseconds()
		if err != nil {
			return s.failed(ctx, r, err)
		}
	}
	j.Done = len(j.Steps)
	data, err := r.op.finish(ctx, r)
	if err != nil {
		return s.failed(ctx, r, err)
	}
	s.conclude(ctx, r, data, nil)
	return data, nil
}

// failed ends a run whose step failed: it undoes the steps reached (an
// undoSteps operation) or ends the run as it is, and returns the result.
func (s *Service) failed(ctx context.Context, r *opRun, cause error) (any, error) {
	e := s.classify(ctx, r, cause)
	log := zerolog.Ctx(ctx)
	if r.op.onFailure == finishSteps {
		log.Warn().Str("code", string(e.Code)).Str("error", e.Message).Str("step", r.j.Current()).Msgf("%s failed", r.op.name)
		if transient(cause) {
			// Half done, and the engine or the store is away: the worker
			// finishes it once they answer.
			e = e.WithHint(fmt.Sprintf("the worker finishes the %s as soon as it can (every few seconds, and on its next start) and holds the project lock until then; follow status and history", r.op.name)).
				With("pending", true)
			s.handOff(ctx, r, e)
			return r.op.failed(r), e
		}
		s.conclude(ctx, r, r.op.failed(r), e)
		return r.op.failed(r), e
	}
	log.Warn().Str("code", string(e.Code)).Str("error", e.Message).Str("step", r.j.Current()).Msgf("%s failed; rolling back", r.op.name)
	r.j.Undoing, r.j.Failure = true, e
	r.progress(events.StepRollback, "rolling back: "+e.Message, -1, -1)
	// The undo must finish even when the request's context ended (the
	// worker is stopping): it has its own time.
	uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.undoBudget())
	defer cancel()
	err := s.retryTransient(uctx, r, func() error { return s.undo(uctx, r) })
	switch {
	case err == nil || isUnhealthyAfterUndo(err):
		if err != nil {
			e = events.Errorf(e.Code, "%s; production was rolled back, but the previous release did not come up healthy either: %v", e.Message, err).
				WithHint("production runs the previous release's files and images; look at status and logs, fix it, then deploy again")
		} else {
			e.Hint = joinHint(e.Hint, "production was rolled back to the previous release")
		}
		e.With("rolled_back", true)
		r.note("rolled_back", true)
		s.concludeUndo(ctx, r, e)
		return r.op.failed(r), e
	default:
		// The undo could not finish: the journal stays, the project stays
		// locked, and the worker's recovery loop retries until it does.
		code := e.Code
		if events.ErrorCode(err) == events.CodeDockerUnavailable {
			code = events.CodeDockerUnavailable
		}
		e = events.Errorf(code, "%s; the automatic rollback could not finish yet: %v", e.Message, events.AsError(err).Message).
			WithHint("the worker keeps retrying the rollback (every few seconds, and on its next start) and holds the project lock until it is done; follow status and history").
			With("rolled_back", false).With("rollback_pending", true)
		s.handOff(ctx, r, e)
		return r.op.failed(r), e
	}
}

// handOff leaves a run that could not be finished to the worker's
// recovery loop: its journal stays (marked answered when a request gets
// this answer), its lock is kept.
func (s *Service) handOff(ctx context.Context, r *opRun, e *events.Error) {
	r.handedOff = true
	r.j.Answered = r.j.Answered || r.request != nil
	if err := s.State.WriteJournal(r.prod(), r.j); err != nil {
		zerolog.Ctx(ctx).Error().Err(err).Msg("cannot write the journal of an operation left to finish")
	}
	s.saveOutcome(ctx, r, r.op.failed(r), e)
}

// classify turns a step's error into the result's error: a run cut by
// the end of its context is a timeout, and every message is redacted.
func (s *Service) classify(ctx context.Context, r *opRun, cause error) *events.Error {
	e := events.AsError(cause)
	if ctx.Err() != nil && (e.Code == events.CodeInternal || errors.Is(cause, context.Canceled) || errors.Is(cause, context.DeadlineExceeded)) {
		why := "its time ran out"
		if c := context.Cause(ctx); c != nil && !errors.Is(c, context.Canceled) && !errors.Is(c, context.DeadlineExceeded) {
			why = c.Error()
		}
		e = events.Errorf(events.CodeTimeout, "%s was interrupted during step %s: %s", r.op.name, r.j.Current(), why).
			WithHint(fmt.Sprintf("send %s again", r.op.name))
	}
	if r.failure == nil && e.Code == events.CodeHealthFailed && r.j.Reached(events.StepUp) {
		// Compose failed the up (a dependency that did not start, a one-shot
		// that failed): find which service and why, before an undo replaces
		// its container.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		r.failure = s.diagnose(dctx, r.project(), r.model)
		cancel()
	}
	if r.failure != nil {
		e.With("service", r.failure.Service)
	}
	if out, ok := e.Data["output"].([]string); ok {
		r.output = s.redactAll(r.project(), append([]string(nil), out...))
		delete(e.Data, "output") // in the result's data.output, redacted
	}
	e.Message = s.redact(r.project(), e.Message)
	return e
}

// undo undoes every step the run reached, newest first, then settles the
// project when the run reached a step that changed its containers. It
// first stops whatever a stopped worker's compose runs left behind. Every
// part is safe to repeat, so an undo that stops is run again.
func (s *Service) undo(ctx context.Context, r *opRun) error {
	j := r.j
	if err := s.State.WriteJournal(r.prod(), j); err != nil {
		return fmt.Errorf("write the %s journal: %w", r.op.name, err)
	}
	s.pause(ctx, events.StepRollback)
	if err := s.clearLeftovers(ctx, j); err != nil {
		return err
	}
	for i := min(j.Done, len(j.Steps)-1); i >= 0; i-- {
		st := r.op.step(j.Steps[i])
		if st == nil || st.undo == nil {
			continue
		}
		if err := st.undo(ctx, r); err != nil {
			return fmt.Errorf("undo %s: %w", st.name, err)
		}
	}
	if r.op.settle != nil && j.Reached(r.op.settleFrom) {
		return r.op.settle(ctx, r)
	}
	return nil
}

// clearLeftovers stops the compose processes an interrupted run of j left
// (a killed worker's children), and removes the containers a recreate cut
// short left under Compose's temporary name, before anything else runs.
func (s *Service) clearLeftovers(ctx context.Context, j *state.Journal) error {
	log := zerolog.Ctx(ctx)
	n, err := s.Composer.StopOperation(ctx, j.LockOwner)
	if err != nil {
		return fmt.Errorf("stop the compose runs of the interrupted %s: %w", j.Op, err)
	}
	if n > 0 {
		log.Warn().Int("processes", n).Msg("stopped compose processes left running by the interrupted operation")
	}
	removed, err := s.Composer.RemoveStrayContainers(ctx, j.Project.ComposeProject)
	if err != nil {
		return err
	}
	if len(removed) > 0 {
		log.Warn().Strs("containers", removed).Msg("removed containers an interrupted recreate left")
	}
	return nil
}

// unhealthyAfterUndo is a settle whose verification failed: the undone
// state runs, but not healthily. Nothing is left to undo.
type unhealthyAfterUndo struct{ f *FailureDetails }

func (u *unhealthyAfterUndo) Error() string { return u.f.Error().Message }

func isUnhealthyAfterUndo(err error) bool {
	var u *unhealthyAfterUndo
	return errors.As(err, &u)
}

// retryTransient runs fn until it succeeds, fails for a reason that
// waiting does not cure, or the worker's UndoWait has passed: an engine
// or store that does not answer may be back in a moment.
func (s *Service) retryTransient(ctx context.Context, r *opRun, fn func() error) error {
	deadline := time.Now().Add(s.Config.UndoWait)
	wait := time.Second
	for {
		err := fn()
		if err == nil || !transient(err) || !time.Now().Before(deadline) || ctx.Err() != nil {
			return err
		}
		step := events.StepRollback
		if !r.j.Undoing {
			step = r.j.Current()
		}
		r.progress(step, fmt.Sprintf("%v; retrying in %s", events.AsError(err).Message, wait), -1, -1)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait = min(wait*2, 10*time.Second)
	}
}

// transient reports an error that waiting may cure.
func transient(err error) bool {
	switch events.ErrorCode(err) {
	case events.CodeDockerUnavailable, events.CodeStoreUnavailable:
		return true
	}
	return false
}

// undoBudget bounds an undo: its retries, then a settle's up and verify.
func (s *Service) undoBudget() time.Duration {
	return s.Config.UndoWait + 2*s.Config.VerifyTimeout + 5*time.Minute
}

// conclude ends a run: its outcome recorded for a redelivered request,
// the journal removed, the status cache dropped.
func (s *Service) conclude(ctx context.Context, r *opRun, data any, e *events.Error) {
	s.saveOutcome(ctx, r, data, e)
	if err := s.State.ClearJournal(r.prod()); err != nil {
		zerolog.Ctx(ctx).Error().Err(err).Msg("cannot remove the journal of a finished operation; the next start will look at it again")
	}
	_ = s.Store.InvalidateStatus(context.WithoutCancel(ctx), r.project().Name)
}

// concludeUndo ends a run whose steps were undone.
func (s *Service) concludeUndo(ctx context.Context, r *opRun, e *events.Error) {
	if r.rel != nil {
		now := s.Now().UTC()
		r.rel.Status, r.rel.FinishedAt, r.rel.Error, r.rel.Recovered = state.ReleaseRolledBack, &now, e.Message, r.request == nil
		r.rel.Steps = r.j.StepsMS
		if err := s.State.SaveRelease(r.prod(), r.rel); err != nil {
			zerolog.Ctx(ctx).Warn().Err(err).Msg("cannot record the rolled-back release")
		}
	}
	s.conclude(ctx, r, r.op.failed(r), e)
}

func (s *Service) saveOutcome(ctx context.Context, r *opRun, data any, e *events.Error) {
	o := &state.Outcome{RequestID: r.j.RequestID, Project: r.project().Name, Op: r.op.name, OK: e == nil, Error: e,
		StartedAt: r.j.StartedAt, FinishedAt: s.Now().UTC(), Recovered: r.request == nil}
	if data != nil {
		o.Data, _ = json.Marshal(data)
	}
	if err := s.State.SaveOutcome(o); err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Msg("cannot record the operation's outcome; a redelivery would not know it")
	}
}

func joinHint(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

// activeOps are the production directories an operation runs on in this
// worker, so that its recovery loop never runs beside a request.
type activeOps struct {
	mu  sync.Mutex
	set map[string]bool
}

// claim marks prod busy, unless it is.
func (a *activeOps) claim(prod string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.set[prod] {
		return false
	}
	if a.set == nil {
		a.set = map[string]bool{}
	}
	a.set[prod] = true
	return true
}

func (a *activeOps) release(prod string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.set, prod)
}
