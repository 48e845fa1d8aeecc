package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"github.com/berth-ops/berth"
	"github.com/berth-ops/berth/events"
)

// Delivery is one delivered command message, as the intake hands it over.
type Delivery struct {
	Subject string
	Data    []byte
	// MsgID is the Nats-Msg-Id header, if any.
	MsgID string
	// StreamSeq is the message's sequence in the command stream; it
	// derives a stable request id for commands that carry none.
	StreamSeq uint64
	// NumDelivered counts deliveries from 1; MaxDeliver is the consumer's cap.
	NumDelivered uint64
	MaxDeliver   int
	// Header holds the message's headers (signature, timestamp).
	Header map[string][]string
	// InProgress tells the server the command is still being worked on,
	// so it is not redelivered during long work. May be nil.
	InProgress func()
	// Release, when set, frees the intake's slot the command holds before
	// it ends (a follow moves to a lane of its own). It may be called more
	// than once.
	Release func()
	// Refuse, when set, answers the admitted command with this error
	// instead of running it (its project's host could not be told on its
	// last delivery).
	Refuse error
}

// Last reports whether the consumer delivers the message no more.
func (d Delivery) Last() bool {
	return d.MaxDeliver > 0 && d.NumDelivered >= uint64(d.MaxDeliver)
}

// Emitter publishes events and replies.
type Emitter interface {
	// Emit publishes body on subject with the given message id. A durable
	// emit returns only once the event stream has stored the event.
	Emit(ctx context.Context, subject, msgID string, body []byte, durable bool) error
	// Reply publishes body on a core-NATS subject (a command's reply_to).
	Reply(ctx context.Context, subject string, body []byte) error
}

// Verdict says what the intake does with a delivery after Process.
type Verdict int

// The verdicts.
const (
	// Ack: the command is finished (its result is published).
	Ack Verdict = iota
	// Retry: the result could not be published; redeliver after a delay.
	Retry
	// Term: give up on the message without redelivery.
	Term
)

// Decision is a Verdict with its delay (Retry) or reason (Term).
type Decision struct {
	Verdict Verdict
	Delay   time.Duration
	Reason  string
}

// Dispatcher takes a delivered command through decoding, the idempotency
// record, its handler and its one result event.
type Dispatcher struct {
	Mux      *Mux
	Store    berth.Store
	Emitter  Emitter
	Subjects events.Subjects
	Log      zerolog.Logger
	// WorkerID names this worker in request records.
	WorkerID string
	// RecordTTL is how long request records are kept (default 24 h).
	RecordTTL time.Duration
	// Heartbeat is how often InProgress is sent during work (default 10 s).
	Heartbeat time.Duration
	// RetryDelay is the delay of a Retry (default 2 s).
	RetryDelay time.Duration
	// Admission checks a command before its handler: signature, decoding,
	// key, replay, subject, reply_to, role. Its Mux and Subjects are the
	// Dispatcher's when not set.
	Admission *Admission
	Now       func() time.Time
	// Observer, when set, is told of every answered command (metrics).
	Observer Observer
	// Limits bound each command's time, the follows and each user's share.
	Limits Limits

	usage usage
	once  sync.Once
}

// Observer receives measurements of the worker's work, for metrics. The
// handlers package only reports them; package metrics exports them.
// Implementations must be safe for concurrent use and must not block.
type Observer interface {
	// CommandDone is called once per command answered by running or
	// refusing it (not for a stored result re-published): its action,
	// its error code ("" when ok) and how long it took.
	CommandDone(action string, code events.Code, d time.Duration)
	// QueryDone is called once per read-only query answered on the
	// query service: its endpoint, error code ("" when ok) and duration.
	QueryDone(endpoint string, code events.Code, d time.Duration)
	// DeployStep is called for each measured step of a deploy.
	DeployStep(step string, d time.Duration)
	// StatusCache is called for each status answered: hit when it came
	// from the cache, miss when Docker was asked (refresh included).
	StatusCache(hit bool)
	// LockConflict is called when a mutation finds its project locked.
	LockConflict()
	// Redelivery is called when a command is delivered more than once.
	Redelivery()
	// Inflight changes the number of commands being worked on in a lane.
	Inflight(lane string, delta int)
}

// ObserveResult reports to o what a handler's result says beyond its
// outcome: whether a status came from the cache, the steps of a deploy,
// a lock conflict. A nil o is a no-op.
func ObserveResult(o Observer, action string, data any, err error) {
	if o == nil {
		return
	}
	switch v := data.(type) {
	case *StatusReport:
		if err == nil && v != nil {
			o.StatusCache(v.Cached)
		}
	case *DeployResult:
		if action == events.ActionDeploy && v != nil {
			steps := make([]string, 0, len(v.StepsMS))
			for s := range v.StepsMS {
				steps = append(steps, s)
			}
			sort.Strings(steps)
			for _, s := range steps {
				o.DeployStep(s, time.Duration(v.StepsMS[s])*time.Millisecond)
			}
		}
	}
	if err != nil {
		// A lock conflict names the holder (ConflictError); a conflict
		// without one is a full confirmation queue, not a lock.
		if e := events.AsError(err); e.Code == events.CodeConflict && (e.Data["holder"] != nil || strings.Contains(e.Message, " is locked")) {
			o.LockConflict()
		}
	}
}

// resumedSeqStep separates the event sequences of successive attempts at
// one request.
const resumedSeqStep = 1_000_000

// requestNamespace derives stable request ids from stream sequences.
var requestNamespace = uuid.MustParse("6f1d1bd4-6f8e-4b8e-9a59-6a0c4f6c2b10")

// Process executes one delivery and says whether to ack it.
func (d *Dispatcher) Process(ctx context.Context, del Delivery) Decision {
	now := d.now()
	// In progress from the start: a slow store must not let the ack wait
	// run out before the handler even begins (a redelivery would run twice).
	stop := d.heartbeat(del)
	defer stop()
	project, action, err := d.Subjects.ParseCommand(del.Subject)
	if err != nil {
		d.Log.Error().Str("subject", del.Subject).Err(err).Msg("command on a subject outside the command space")
		return Decision{Verdict: Term, Reason: err.Error()}
	}
	r := &run{d: d, ev: events.Event{Project: project, Action: action}, start: now, del: del, ctx: ctx}
	t, admitErr := d.admission().Admit(ctx, &Inbound{Subject: del.Subject, Project: project, Action: action, Body: del.Data,
		Header: del.Header, MsgID: del.MsgID, Seq: del.StreamSeq}, now)
	r.ticket = t
	if !t.Trusted {
		// Nothing the message says about its sender can be believed: its
		// refusal goes apart, never under the user and id it claims.
		r.ev.RequestID = d.refusedRef(del)
		log := d.Log.With().Str("request_id", r.ev.RequestID).Str("project", project).Str("action", action).Logger()
		r.log, r.ctx = &log, log.WithContext(ctx)
		return r.finish(r.ctx, nil, admitErr)
	}
	r.ev.RequestID, r.ev.User = t.ID, t.User
	log := d.Log.With().Str("request_id", t.ID).Str("project", project).Str("action", action).Str("user", t.User).Logger()
	ctx = log.WithContext(ctx)
	r.log, r.ctx = &log, ctx
	if admitErr != nil {
		return r.finish(ctx, nil, admitErr)
	}
	r.replyTo = t.ReplyTo
	if del.Refuse != nil {
		return r.finish(ctx, nil, del.Refuse)
	}
	req := t.Req
	req.Delivery = int(del.NumDelivered)
	h := d.Mux.Handler(action)
	// Every command has a deadline; a follow runs in a lane of its own,
	// and no user may hold more than its share of either lane.
	d.once.Do(d.Limits.setDefaults)
	follow := followOf(action, req.Args)
	free, err := d.usage.admit(&d.Limits, t.User, follow > 0, action == events.ActionLogs)
	if err != nil {
		return r.finish(ctx, nil, err)
	}
	defer free()
	if follow > 0 && del.Release != nil {
		del.Release() // the read lane's slot goes to the next command
	}
	ctx, cancel := withDeadline(ctx, d.Limits.deadline(action, follow))
	defer cancel()
	r.ctx = ctx
	// A pure read delivered for the first time is answered while its
	// record is begun; the answer is used only if the command turns out to
	// be new. A redelivery waits for its record: it is the stored result
	// that answers it.
	var early func() speculation
	if pureRead(action) && del.NumDelivered <= 1 {
		early = d.speculate(ctx, h, *req, r)
		defer early()
	}

	// Idempotency: a command already done re-publishes its result.
	resumed := false
	rec := &berth.RequestRecord{ID: t.ID, Project: project, Action: action, User: t.User, State: berth.RequestRunning,
		Worker: d.WorkerID, StartedAt: now, StreamSeq: del.StreamSeq, KeyID: t.KeyID()}
	existing, created, err := d.Store.BeginRequest(ctx, rec, d.recordTTL())
	r.rec = rec
	switch {
	case err != nil && events.IsFast(action):
		log.Warn().Err(err).Msg("no request record (store unavailable); serving the read-only command anyway")
		r.rec = nil
	case err != nil:
		r.rec = nil
		return r.finish(ctx, nil, err)
	case !created && (existing.Project != project || existing.Action != action || existing.KeyID != t.KeyID()):
		// Another command of this user's with this id: never hand out its
		// result, nor run this one under its id.
		r.rec = nil
		return r.finish(ctx, nil, events.Errorf(events.CodeConflict, "request id %q of %s is already used by another command (%s of %s)", t.ID, t.User, existing.Action, existing.Project).
			WithHint("give every command a fresh id (a UUID), or leave id out"))
	case !created && existing.State == berth.RequestDone && len(existing.Result) > 0:
		log.Info().Uint64("delivery", del.NumDelivered).Msg("command already done: re-publishing its result")
		return r.republish(ctx, existing.Result)
	case !created && del.NumDelivered > 1 && del.StreamSeq != 0 && existing.StreamSeq == del.StreamSeq:
		// The same message again: its worker stopped before finishing.
		log.Warn().Str("worker", existing.Worker).Uint64("delivery", del.NumDelivered).Msg("taking over a request whose worker stopped")
		if err := d.Store.TakeOverRequest(ctx, rec, d.recordTTL()); err != nil {
			return r.finish(ctx, nil, err)
		}
		resumed = true
		// Events of this attempt follow those of the stopped one, so seq
		// keeps increasing and no event id repeats.
		r.seq.Store((del.NumDelivered - 1) * resumedSeqStep)
	case !created:
		// Another message with this request id is being worked on: come
		// back when it is done, and re-publish its result then.
		log.Warn().Str("worker", existing.Worker).Msg("a command with this request id is already running; retrying the duplicate later")
		return d.retry(del, "duplicate of running request "+t.ID)
	}

	req.Resumed = resumed
	r.req = req
	r.accepted(action)
	if early != nil {
		sp := early()
		return r.finish(ctx, sp.data, timedOut(ctx, sp.err))
	}
	data, herr := SafeHandle(ctx, h, req, r)
	return r.finish(ctx, data, timedOut(ctx, herr))
}

// timedOut turns the error of a handler cut by its deadline into timeout.
func timedOut(ctx context.Context, err error) error {
	if err == nil || !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return err
	}
	if e := events.AsError(err); e.Code != events.CodeInternal && e.Code != events.CodeTimeout {
		return err
	}
	return events.Errorf(events.CodeTimeout, "%v", context.Cause(ctx)).
		WithHint("ask for less (a shorter tail or follow_s, a narrower grep or since), or try again when the engine is less busy")
}

// admission is the Dispatcher's admission chain.
func (d *Dispatcher) admission() *Admission {
	if d.Admission != nil {
		return d.Admission
	}
	return &Admission{Mux: d.Mux, Subjects: d.Subjects}
}

// refusedRef names a message refused before its sender could be trusted:
// its stream sequence, or a random id.
func (d *Dispatcher) refusedRef(del Delivery) string {
	if del.StreamSeq != 0 {
		return fmt.Sprintf("seq%d", del.StreamSeq)
	}
	return "r" + strings.ReplaceAll(uuid.NewString(), "-", "")
}

// pureRead reports whether an action only reads and reports nothing but
// its result (no progress, log or confirm events), so that running it
// once too often costs nothing.
func pureRead(action string) bool {
	switch action {
	case events.ActionStatus, events.ActionConfigGet, events.ActionHistory, events.ActionReleases:
		return true
	}
	return false
}

// speculation is the outcome of a pure read run before its record was
// begun.
type speculation struct {
	data any
	err  error
}

// speculate runs a pure read on its own goroutine, on a copy of the
// request; the returned function waits for its outcome.
func (d *Dispatcher) speculate(ctx context.Context, h Handler, req Request, rep Reporter) func() speculation {
	ch := make(chan speculation, 1)
	go func() {
		var sp speculation
		sp.data, sp.err = SafeHandle(ctx, h, &req, rep)
		ch <- sp
	}()
	return sync.OnceValue(func() speculation { return <-ch })
}

// accepted marks the command as executed and announces it.
func (r *run) accepted(action string) {
	r.executed = true
	_, _ = r.emit(r.ctx, events.KindAccepted, nil)
	// A read answers within milliseconds and its "command done" line
	// follows; a mutation may run for minutes, so its start is news.
	lvl := zerolog.InfoLevel
	if events.IsFast(action) {
		lvl = zerolog.DebugLevel
	}
	r.log.WithLevel(lvl).Msg("command accepted")
}

// UnknownActionError is the bad_request answer to an unknown action.
func UnknownActionError(action string, m *Mux) *events.Error {
	return events.Errorf(events.CodeBadRequest, "unknown action %q", action).
		With("actions", m.Actions()).
		WithHint("use one of: " + strings.Join(m.Actions(), ", "))
}

// SafeHandle runs a handler, turning a panic into an internal error: one
// request's bug must not take the worker down.
func SafeHandle(ctx context.Context, h Handler, req *Request, rep Reporter) (data any, err error) {
	defer func() {
		if p := recover(); p != nil {
			zerolog.Ctx(ctx).Error().Interface("panic", p).Msg("handler panicked")
			err = events.Errorf(events.CodeInternal, "the worker failed while handling this command: %v", p).
				WithHint("report this with the request id; the command did not complete")
		}
	}()
	return h.Handle(ctx, req, rep)
}

func (d *Dispatcher) heartbeat(del Delivery) func() {
	if del.InProgress == nil {
		return func() {}
	}
	every := d.Heartbeat
	if every <= 0 {
		every = 10 * time.Second
	}
	// A timer rather than a goroutine: most commands end long before the
	// first beat.
	var mu sync.Mutex
	stopped := false
	var t *time.Timer
	mu.Lock()
	defer mu.Unlock()
	t = time.AfterFunc(every, func() {
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			return
		}
		del.InProgress()
		t.Reset(every)
	})
	return func() {
		mu.Lock()
		defer mu.Unlock()
		stopped = true
		t.Stop()
	}
}

func (d *Dispatcher) now() time.Time {
	if d.Now != nil {
		return d.Now()
	}
	return time.Now()
}

func (d *Dispatcher) recordTTL() time.Duration {
	if d.RecordTTL > 0 {
		return d.RecordTTL
	}
	return 24 * time.Hour
}

func (d *Dispatcher) retry(del Delivery, why string) Decision {
	if del.Last() {
		return Decision{Verdict: Term, Reason: "last delivery: " + why}
	}
	delay := d.RetryDelay
	if delay <= 0 {
		delay = 2 * time.Second
	}
	return Decision{Verdict: Retry, Delay: delay, Reason: why}
}

// run is one request's execution: its event sequence and reporter.
type run struct {
	d  *Dispatcher
	ev events.Event
	// rec is the request's record once begun, to be finished with the
	// result; nil while (or when) nothing is to be recorded.
	rec     *berth.RequestRecord
	seq     atomic.Uint64
	start   time.Time
	del     Delivery
	replyTo string
	// executed is set once a handler runs; only such commands enter history.
	executed bool
	log      *zerolog.Logger
	// ctx is the request's context, for Reporter calls.
	ctx context.Context
	// req is the request once decoded; handlers annotate it for history.
	req *Request
	// ticket is what the admission learned of the command.
	ticket *Ticket
}

// trusted reports whether the command's user and id can be believed, so
// that its events go under them.
func (r *run) trusted() bool { return r.ticket != nil && r.ticket.Trusted }

func (r *run) emit(ctx context.Context, kind events.Kind, fill func(*events.Event)) ([]byte, error) {
	body, seq, err := r.encode(kind, fill)
	if err != nil {
		return nil, err
	}
	return body, r.publish(ctx, kind, seq, body)
}

// encode builds the next event of the request.
func (r *run) encode(kind events.Kind, fill func(*events.Event)) ([]byte, uint64, error) {
	ev := r.ev
	ev.Kind = kind
	ev.Seq = r.seq.Add(1)
	ev.TS = events.Timestamp(r.d.now())
	if fill != nil {
		fill(&ev)
	}
	body, err := json.Marshal(&ev)
	return body, ev.Seq, err
}

// publish sends an encoded event; its message id makes a re-publish of
// the same event a no-op in the event stream.
func (r *run) publish(ctx context.Context, kind events.Kind, seq uint64, body []byte) error {
	var subject, msgID string
	if r.trusted() {
		subject = r.d.Subjects.Event(r.ev.Project, r.ev.User, r.ev.RequestID, kind)
		msgID = fmt.Sprintf("%s.%s.%s.%d", events.UserToken(r.ev.User), r.ev.RequestID, kind, seq)
	} else {
		subject = r.d.Subjects.Refused(r.ev.Project, r.ev.RequestID)
		msgID = fmt.Sprintf("%s.%s.%d", events.RefusedTokenScope, r.ev.RequestID, seq)
	}
	if err := r.d.Emitter.Emit(ctx, subject, msgID, body, kind == events.KindResult); err != nil {
		r.log.Warn().Err(err).Str("kind", string(kind)).Msg("cannot publish event")
		return err
	}
	return nil
}

// Progress implements Reporter.
func (r *run) Progress(step, message string, done, total int) {
	_, _ = r.emit(r.ctx, events.KindProgress, func(e *events.Event) {
		e.Step, e.Message = step, message
		if done >= 0 {
			e.Done = &done
		}
		if total >= 0 {
			e.Total = &total
		}
	})
}

// Confirm implements Reporter.
func (r *run) Confirm(token string, expiresAt time.Time, plan any) error {
	raw, err := json.Marshal(plan)
	if err != nil {
		return err
	}
	_, err = r.emit(r.ctx, events.KindConfirm, func(e *events.Event) {
		e.Token, e.ExpiresAt, e.Plan = token, events.Timestamp(expiresAt), raw
	})
	return err
}

// Log implements Reporter: lines go out in events of at most MaxLogChunk.
func (r *run) Log(lines []events.LogLine) error {
	ctx := r.ctx
	const budget = events.MaxLogChunk - 1024 // room for the event envelope
	var chunk []events.LogLine
	size := 0
	send := func() error {
		if len(chunk) == 0 {
			return nil
		}
		c := chunk
		_, err := r.emit(ctx, events.KindLog, func(e *events.Event) { e.Lines = c })
		chunk, size = nil, 0
		return err
	}
	for _, l := range lines {
		n := encodedLen(l)
		if n > budget {
			l.Line = clip(l.Line, budget/8)
			n = encodedLen(l)
		}
		if size+n > budget {
			if err := send(); err != nil {
				return err
			}
		}
		chunk = append(chunk, l)
		size += n
	}
	return send()
}

// finish publishes the result, stores it in the request record, sends it
// to reply_to, and decides the delivery's fate.
func (r *run) finish(ctx context.Context, data any, herr error) Decision {
	// A request is answered even when its context ended (the worker is
	// stopping and its grace period is over): storing, publishing and
	// acknowledging the result get a time of their own.
	ctx, cancel := FinishContext(ctx)
	defer cancel()
	dur := r.d.now().Sub(r.start).Milliseconds()
	ok := herr == nil
	var raw json.RawMessage
	var e *events.Error
	if herr != nil {
		e = events.AsError(herr)
		if e.Code == events.CodeInternal {
			r.log.Error().Err(herr).Msg("command failed")
		} else {
			r.log.Info().Str("code", string(e.Code)).Str("error", e.Message).Msg("command refused")
		}
	}
	if data != nil {
		b, err := json.Marshal(data)
		if err != nil {
			ok, e = false, events.AsError(fmt.Errorf("encode result: %w", err))
		} else {
			raw = b
		}
	}
	body, seq, err := r.encode(events.KindResult, func(ev *events.Event) {
		ev.OK, ev.Data, ev.Error, ev.DurationMS = &ok, raw, e, &dur
	})
	if err != nil {
		return Decision{Verdict: Term, Reason: "result not encodable: " + err.Error()}
	}
	// The record of a mutation is written before the result goes out, so
	// whoever sees the result and sends the command again gets the stored
	// result. A read is harmless to run twice: its record is written while
	// the result goes out, and stored before the command is acknowledged.
	stored := func() {}
	if r.rec != nil && events.ValidRequestID(r.ev.RequestID) {
		store := func() {
			if err := r.d.Store.FinishRequest(ctx, r.rec, body, r.d.recordTTL()); err != nil {
				r.log.Warn().Err(err).Msg("cannot store the request's result; a redelivery would run it again")
			}
		}
		if events.IsFast(r.ev.Action) {
			done := make(chan struct{})
			go func() { defer close(done); store() }()
			stored = func() { <-done }
		} else {
			store()
		}
		// A plan awaiting confirmation is not an operation yet.
		if r.executed && !events.IsFast(r.ev.Action) && (e == nil || e.Code != events.CodeConfirmationRequired) {
			h := &berth.HistoryEntry{RequestID: r.ev.RequestID, Action: r.ev.Action, User: r.ev.User, OK: ok,
				StartedAt: r.start.UTC(), DurationMS: dur}
			if r.req != nil {
				h.Confirmer, h.Details = r.req.Confirmer, r.req.Details
			}
			if e != nil {
				h.ErrorCode = e.Code
			}
			if err := r.d.Store.AppendHistory(ctx, r.ev.Project, h); err != nil {
				r.log.Warn().Err(err).Msg("cannot record history")
			}
		}
	}
	err = r.publish(ctx, events.KindResult, seq, body)
	// What is not the answer comes after it.
	if ok {
		r.log.Info().Int64("duration_ms", dur).Msg("command done")
	}
	if o := r.d.Observer; o != nil {
		var code events.Code
		if e != nil {
			code = e.Code
		}
		o.CommandDone(r.ev.Action, code, r.d.now().Sub(r.start))
		ObserveResult(o, r.ev.Action, data, herr)
	}
	stored()
	if err != nil {
		return r.d.retry(r.del, "result not published: "+err.Error())
	}
	r.audit(ctx, ok, e, dur)
	r.reply(ctx, body)
	return Decision{Verdict: Ack}
}

// audit publishes the command's audit record. It is best effort: a lost
// record is logged, and the history in Redis keeps the operation too.
func (r *run) audit(ctx context.Context, ok bool, e *events.Error, dur int64) {
	rec := events.AuditRecord{RequestID: r.ev.RequestID, Project: r.ev.Project, Action: r.ev.Action, User: r.ev.User,
		TS: events.Timestamp(r.d.now()), OK: ok, DurationMS: dur, Delivery: r.del.NumDelivered}
	if t := r.ticket; t != nil {
		rec.Signed, rec.KeyID = t.Signed != nil, t.KeyID()
		if !t.Trusted {
			rec.ClaimedUser = t.User
		}
	}
	if e != nil {
		rec.ErrorCode = e.Code
	}
	if r.req != nil {
		rec.Confirmer = r.req.Confirmer
		if d, _ := r.req.Details["plan_digest"].(string); d != "" {
			rec.PlanDigest = d
		}
	}
	body, err := json.Marshal(&rec)
	if err == nil {
		err = r.d.Emitter.Emit(ctx, r.d.Subjects.Audit(r.ev.Project, r.ev.Action), r.auditID(), body, false)
	}
	if err != nil {
		r.log.Warn().Err(err).Msg("cannot publish the audit record")
	}
}

// auditID is the audit record's message id: its command message's stream
// sequence, which no client chooses (a redelivery of the same message is
// the same command, recorded once), or a random one for a message no
// stream keeps.
func (r *run) auditID() string {
	if r.del.StreamSeq != 0 {
		return fmt.Sprintf("audit.seq%d", r.del.StreamSeq)
	}
	return "audit.r" + strings.ReplaceAll(uuid.NewString(), "-", "")
}

// FinishTimeout bounds the storing, publishing and acknowledging of a
// request's result, which go on after the request's context ended.
const FinishTimeout = 15 * time.Second

// FinishContext is ctx without its cancellation, bounded by FinishTimeout.
func FinishContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), FinishTimeout)
}

func (r *run) republish(ctx context.Context, body []byte) Decision {
	ctx, cancel := FinishContext(ctx)
	defer cancel()
	var ev events.Event
	if err := json.Unmarshal(body, &ev); err != nil {
		return r.finish(ctx, nil, fmt.Errorf("stored result is unreadable: %w", err))
	}
	if err := r.publish(ctx, events.KindResult, ev.Seq, body); err != nil {
		return r.d.retry(r.del, "stored result not re-published: "+err.Error())
	}
	r.reply(ctx, body)
	return Decision{Verdict: Ack}
}

func (r *run) reply(ctx context.Context, body []byte) {
	if r.replyTo == "" {
		return
	}
	if err := r.d.Emitter.Reply(ctx, r.replyTo, body); err != nil {
		r.log.Warn().Err(err).Str("reply_to", r.replyTo).Msg("cannot send the result to reply_to")
	}
}

func encodedLen(l events.LogLine) int {
	return l.EncodedLen() + 1 // and its comma
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n] + " …[truncated]"
}
