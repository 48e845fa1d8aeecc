package handlers

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/rs/zerolog"

	"github.com/berth-ops/berth"
	"github.com/berth-ops/berth/events"
	"github.com/berth-ops/berth/state"
)

// plan is what a destructive action shows before it runs: data for the
// user and a digest that changes whenever what would run changes.
type plan struct {
	Data   any
	Digest string
	// state is what the run needs beyond the shown data (the full file
	// plan of a deploy).
	state any
	// rolling are the services a restart rolls out start-first.
	rolling []string
}

// mutation is one mutating action: how to plan it, and the operation
// that runs the plan under the project lock.
type mutation struct {
	op *operation
	// confirm makes the action two-phase: a command without confirm gets
	// the plan and a token. Every mutation but start is confirmed.
	confirm bool
	// plan computes the plan from the (confirmed) args.
	plan func(s *Service, ctx context.Context, p *berth.Project, args json.RawMessage) (*plan, error)
	// skip, when it returns data, answers without running anything (a
	// deploy with nothing to deploy).
	skip func(s *Service, ctx context.Context, p *berth.Project, pl *plan) (any, bool)
	// begin prepares the run from the plan: the journal's release or
	// services, and what the steps need.
	begin func(r *opRun, pl *plan) error
	// apply replaces op for a mutation that is one write to the store
	// (config.delete): nothing to journal or recover.
	apply func(s *Service, ctx context.Context, p *berth.Project, pl *plan) (any, error)
	// anywhere: the mutation changes only the store, so any worker of the
	// fleet may run it, and the project's directories need not be here
	// (move).
	anywhere bool
}

// ConfirmationData is the data of a confirmation_required or plan_changed
// result: the plan, and the token that confirms it.
type ConfirmationData struct {
	Plan      any       `json:"plan"`
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
	// ConfirmBy says who may confirm: "the same user" or "another user".
	ConfirmBy string `json:"confirm_by"`
}

// mutate runs a mutation. A confirmed one is two-phase: a command without
// confirm gets the plan and a token; a command confirming it (with "yes"
// for the user's latest plan, or the token) runs it. The run holds the
// project lock, re-plans under it (a different plan is plan_changed) and
// executes the operation's steps.
func (s *Service) mutate(ctx context.Context, req *Request, rep Reporter, m *mutation) (any, error) {
	if req.Resumed {
		if data, err, ok := s.resumedOutcome(ctx, req, rep); ok {
			return data, err
		}
	}
	p, err := s.project(ctx, req.Project)
	if err != nil {
		return nil, err
	}
	if !m.anywhere {
		if err := s.checkPlacement(p); err != nil {
			return nil, err
		}
	}
	args := req.Args
	var c *berth.Confirmation
	switch {
	case m.confirm && req.Confirm == "":
		rep.Progress(events.StepPlan, "planning", -1, -1)
		s.pause(ctx, events.StepPlan)
		pl, err := m.plan(s, ctx, p, req.Args)
		if err != nil {
			return nil, err
		}
		if m.skip != nil {
			if data, ok := m.skip(s, ctx, p, pl); ok {
				return data, nil
			}
		}
		return s.askConfirmation(ctx, req, rep, p, req.Args, pl)
	case m.confirm:
		if c, err = s.checkConfirmation(ctx, req, p); err != nil {
			if req.Resumed && events.ErrorCode(err) == events.CodeConfirmationInvalid {
				return nil, events.Errorf(events.CodeConfirmationInvalid,
					"the worker stopped while starting this %s, before it changed anything; its confirmation is spent", req.Action).
					WithHint(fmt.Sprintf("send %s without confirm to get a new plan and token", req.Action))
			}
			return nil, err
		}
		args = c.Args
	case req.Confirm != "":
		return nil, events.Errorf(events.CodeBadRequest, "%s needs no confirmation", req.Action).
			WithHint(fmt.Sprintf("send %s without confirm", req.Action))
	}

	owner := req.ID + "/" + randomHex(8)
	unlock, err := s.lock(ctx, req, p.Name, owner)
	if err != nil {
		return nil, err // the confirmation stays: confirm again once the holder is done
	}
	handedOff := false
	defer func() {
		if !handedOff {
			unlock()
		}
	}()
	if !s.ops.claim(p.Production) {
		return nil, events.Errorf(events.CodeConflict, "project %s is being recovered after an interrupted operation", p.Name).
			WithHint("wait until the recovery is done (see status and history), then try again")
	}
	defer s.ops.release(p.Production)
	lockCtx, stop := s.holdLock(ctx, p.Name, owner)
	defer stop()
	if !m.anywhere {
		if err := s.stillOwned(lockCtx, p.Name); err != nil {
			return nil, err
		}
	}
	if c != nil {
		taken, err := s.Confirms.TakeConfirmation(ctx, c)
		if err != nil {
			return nil, err
		}
		if !taken {
			return nil, events.Errorf(events.CodeConfirmationInvalid, "the confirmation token was already used").
				WithHint(fmt.Sprintf("send %s without confirm to get a new plan and token", req.Action))
		}
		req.Confirmer = req.User
		req.Note("requested_by", c.User)
		req.Note("plan_digest", c.Digest)
		rep.Progress(events.StepPlan, "re-checking the confirmed plan", -1, -1)
	} else {
		req.Note("requested_by", req.User)
		rep.Progress(events.StepPlan, "planning", -1, -1)
	}
	pl, err := m.plan(s, lockCtx, p, args)
	if err != nil {
		return nil, err
	}
	if c != nil && pl.Digest != c.Digest {
		// Ask again, so the user can confirm the new plan directly.
		data, _ := s.askConfirmation(ctx, &Request{ID: req.ID, Project: req.Project, Action: req.Action, User: c.User}, rep, p, c.Args, pl)
		return data, events.Errorf(events.CodePlanChanged, "the plan changed since it was confirmed; nothing was done").
			WithHint("review the new plan in data and confirm it with its token")
	}
	if c == nil && m.skip != nil {
		if data, ok := m.skip(s, ctx, p, pl); ok {
			return data, nil
		}
	}
	if m.apply != nil {
		return m.apply(s, lockCtx, p, pl)
	}
	user := req.User
	if c != nil {
		user = c.User
	}
	r := &opRun{s: s, op: m.op, rep: rep, request: req, planData: pl.Data, j: &state.Journal{
		Op: m.op.name, RequestID: req.ID, User: user, Confirmer: req.Confirmer, Project: *p,
		LockOwner: owner, StartedAt: s.Now().UTC(),
	}}
	if m.begin != nil {
		if err := m.begin(r, pl); err != nil {
			return nil, err
		}
	}
	data, err := s.execute(lockCtx, r)
	handedOff = r.handedOff
	return data, err
}

func (s *Service) askConfirmation(ctx context.Context, req *Request, rep Reporter, p *berth.Project, args json.RawMessage, pl *plan) (any, error) {
	n, err := s.Confirms.PendingConfirmations(ctx, req.User)
	if err != nil {
		return nil, err
	}
	if n >= s.Config.MaxPendingConfirmations {
		return nil, events.Errorf(events.CodeConflict, "%s has %d pending confirmations, the most allowed", req.User, n).
			WithHint("confirm or let the earlier plans expire before asking for more")
	}
	now := s.Now().UTC()
	c := &berth.Confirmation{
		Token: randomHex(24), Project: p.Name, Action: req.Action, User: req.User, RequestID: req.ID,
		Args: canonicalArgs(args), Digest: pl.Digest, CreatedAt: now, ExpiresAt: now.Add(s.Config.ConfirmTTL),
	}
	if c.Plan, err = json.Marshal(pl.Data); err != nil {
		return nil, err
	}
	// Kept past expiry, so a late confirmation hears "expired", not "unknown".
	if err := s.Confirms.PutConfirmation(ctx, c, s.Config.ConfirmTTL+time.Hour); err != nil {
		return nil, err
	}
	if err := rep.Confirm(c.Token, c.ExpiresAt, pl.Data); err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Msg("cannot publish the confirm event")
	}
	by := "the same user"
	if p.RequireSecondApprover {
		by = "another user"
	}
	data := &ConfirmationData{Plan: pl.Data, Token: c.Token, ExpiresAt: c.ExpiresAt, ConfirmBy: by}
	hint := fmt.Sprintf(`to run it, send %s again with "confirm": "yes" or the token, before %s`, req.Action, c.ExpiresAt.Format(time.RFC3339))
	if p.RequireSecondApprover {
		hint = fmt.Sprintf(`project %s needs a second approver: another user sends %s with "confirm": "<token>" before %s`, p.Name, req.Action, c.ExpiresAt.Format(time.RFC3339))
	}
	return data, events.Errorf(events.CodeConfirmationRequired, "%s of %s needs confirmation", req.Action, p.Name).WithHint(hint)
}

// checkConfirmation finds and checks the confirmation a command refers
// to; the caller takes it once it holds the project lock, so a command
// refused for a conflict leaves it for a later one.
func (s *Service) checkConfirmation(ctx context.Context, req *Request, p *berth.Project) (*berth.Confirmation, error) {
	token := req.Confirm
	ask := fmt.Sprintf("send %s without confirm to get a new plan and token", req.Action)
	if token == "yes" {
		if p.RequireSecondApprover {
			return nil, events.Errorf(events.CodeConfirmationInvalid, `project %s needs a second approver, who confirms with the token, not "yes"`, p.Name).
				WithHint("pass the token from the confirm event to the second approver")
		}
		t, err := s.Confirms.LatestConfirmation(ctx, p.Name, req.Action, req.User)
		if events.ErrorCode(err) == events.CodeNotFound {
			return nil, events.Errorf(events.CodeConfirmationInvalid, "%s has no pending %s of %s to confirm", req.User, req.Action, p.Name).WithHint(ask)
		}
		if err != nil {
			return nil, err
		}
		token = t
	}
	c, err := s.Confirms.PeekConfirmation(ctx, token)
	if events.ErrorCode(err) == events.CodeNotFound {
		return nil, events.Errorf(events.CodeConfirmationInvalid, "the confirmation token is unknown or was already used").WithHint(ask)
	}
	if err != nil {
		return nil, err
	}
	if c.Project != p.Name || c.Action != req.Action {
		return nil, events.Errorf(events.CodeConfirmationInvalid, "the token confirms %s of %s, not %s of %s", c.Action, c.Project, req.Action, p.Name).WithHint(ask)
	}
	switch {
	case p.RequireSecondApprover && c.User == req.User:
		return nil, events.Errorf(events.CodeConfirmationInvalid, "project %s needs a second approver: %s cannot confirm their own %s", p.Name, req.User, req.Action).
			WithHint("ask another operator to confirm with the token")
	case !p.RequireSecondApprover && c.User != req.User:
		return nil, events.Errorf(events.CodeConfirmationInvalid, "the token was issued to another user").WithHint(ask)
	}
	if len(bytes.TrimSpace(req.Args)) > 0 && !bytes.Equal(canonicalArgs(req.Args), c.Args) {
		return nil, events.Errorf(events.CodeBadRequest, "the args differ from the plan being confirmed").
			WithHint("confirm without args (the plan's args are used), or ask for a new plan with the new args")
	}
	if !s.Now().Before(c.ExpiresAt) {
		_, _ = s.Confirms.TakeConfirmation(ctx, c)
		return nil, events.Errorf(events.CodeConfirmationExpired, "the confirmation expired at %s", c.ExpiresAt.Format(time.RFC3339)).WithHint(ask)
	}
	return c, nil
}

// lock takes the project's mutation lock or says who holds it.
func (s *Service) lock(ctx context.Context, req *Request, project, owner string) (func(), error) {
	info := &berth.LockInfo{Owner: owner, RequestID: req.ID, User: req.User, Action: req.Action, Since: s.Now().UTC()}
	holder, ok, err := s.Locks.AcquireLock(ctx, project, info, s.Config.LockLease)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, ConflictError(project, holder)
	}
	return func() {
		if err := s.Locks.ReleaseLock(context.WithoutCancel(ctx), project, owner); err != nil {
			zerolog.Ctx(ctx).Warn().Err(err).Msg("cannot release the project lock; it expires on its own")
		}
	}, nil
}

// ConflictError says who holds a project's lock, doing what, since when.
func ConflictError(project string, h *berth.LockInfo) *events.Error {
	if h == nil {
		return events.Errorf(events.CodeConflict, "project %s is locked by another operation", project).
			WithHint("wait for it to finish, then try again")
	}
	return events.Errorf(events.CodeConflict, "project %s is locked: %s is running %s (request %s) since %s",
		project, h.User, h.Action, h.RequestID, h.Since.Format(time.RFC3339)).
		With("holder", h).
		WithHint("wait for that operation to finish (follow its events), then try again")
}

// holdLock extends the lease while the work runs; losing the lock cancels
// the returned context, so work never continues unprotected.
func (s *Service) holdLock(ctx context.Context, project, owner string) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(s.Config.LockLease / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				ok, err := s.Locks.ExtendLock(ctx, project, owner, s.Config.LockLease)
				if err == nil && !ok {
					zerolog.Ctx(ctx).Error().Msg("project lock lost; stopping the operation")
					cancel(errors.New("the project lock was lost"))
					return
				}
				if err != nil {
					zerolog.Ctx(ctx).Warn().Err(err).Msg("cannot extend the project lock; retrying")
				}
			}
		}
	}()
	return ctx, func() { close(done); cancel(nil) }
}

// pause is the crash-test hook: it stops at the start of step when the
// worker was started with a pause for it.
func (s *Service) pause(ctx context.Context, step string) {
	if s.Config.PauseAt != step || s.Config.PauseFor <= 0 {
		return
	}
	zerolog.Ctx(ctx).Warn().Str("step", step).Dur("for", s.Config.PauseFor).Msg("pausing (test hook)")
	select {
	case <-ctx.Done():
	case <-time.After(s.Config.PauseFor):
	}
}

// canonicalArgs re-encodes args so equal objects compare equal.
func canonicalArgs(args json.RawMessage) json.RawMessage {
	if len(bytes.TrimSpace(args)) == 0 || string(bytes.TrimSpace(args)) == "null" {
		return json.RawMessage("{}")
	}
	var v any
	if json.Unmarshal(args, &v) != nil {
		return args
	}
	b, _ := json.Marshal(v)
	return b
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
