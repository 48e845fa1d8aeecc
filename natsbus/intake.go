package natsbus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/berth-ops/berth/events"
	"github.com/berth-ops/berth/handlers"
)

// IntakeConfig configures an Intake.
type IntakeConfig struct {
	Topology Topology
	// FastSlots and SlowSlots cap the commands worked on at once per lane.
	FastSlots int
	SlowSlots int
	// Grace is how long in-flight work may finish after shutdown begins;
	// after it, the work's context is cancelled.
	Grace time.Duration
	// FetchWait bounds one pull request.
	FetchWait time.Duration
	// Host, when set, makes the worker a member of a fleet: besides the
	// shared consumers it pulls the commands routed to Host, and Router
	// says which host runs each command it takes (route.go).
	Host   string
	Router Router
	// Alone, when set, reports that no other worker of the fleet is
	// alive: a command whose host cannot be looked up then runs here
	// rather than waiting.
	Alone func() bool
}

func (c *IntakeConfig) setDefaults() {
	if c.FastSlots <= 0 {
		c.FastSlots = 32
	}
	if c.SlowSlots <= 0 {
		c.SlowSlots = 4
	}
	if c.Grace <= 0 {
		c.Grace = 30 * time.Second
	}
	if c.FetchWait <= 0 {
		c.FetchWait = 5 * time.Second
	}
}

// Intake pulls commands from the two consumers into a Dispatcher and
// answers commands for unknown actions from a core subscription.
type Intake struct {
	cfg  IntakeConfig
	nc   *nats.Conn
	js   jetstream.JetStream
	disp *handlers.Dispatcher
	log  zerolog.Logger

	ready chan struct{}
	// reconnected fires when the connection to NATS is back after a loss.
	reconnected signal
}

// NewIntake returns an Intake; Run starts it.
func NewIntake(cfg IntakeConfig, nc *nats.Conn, js jetstream.JetStream, disp *handlers.Dispatcher, log zerolog.Logger) *Intake {
	cfg.setDefaults()
	return &Intake{cfg: cfg, nc: nc, js: js, disp: disp, log: log, ready: make(chan struct{})}
}

// Ready is closed once the streams and consumers are declared and the
// lanes are pulling.
func (in *Intake) Ready() <-chan struct{} { return in.ready }

// Run declares the topology and serves commands until ctx ends. Then it
// stops pulling, lets in-flight work finish within the grace period
// (cancelling it after), and returns.
func (in *Intake) Run(ctx context.Context) error {
	fast, slow, err := in.cfg.Topology.Declare(ctx, in.js)
	if err != nil {
		return err
	}
	// Work outlives ctx by the grace period, so a shutdown lets a
	// running deploy finish instead of cutting it.
	workCtx, cancelWork := context.WithCancelCause(context.WithoutCancel(ctx))
	defer cancelWork(nil)

	sub, err := in.nc.QueueSubscribe(in.cfg.Topology.Subjects.AllCommands(), "berth-unknown-actions", func(m *nats.Msg) {
		in.unknownAction(workCtx, m)
	})
	if err != nil {
		return err
	}
	defer func() { _ = sub.Unsubscribe() }()

	// A pull request sent before the connection broke died with it: the
	// lanes pull anew as soon as it is back instead of waiting out the
	// dead request (FetchWait) or their backoff.
	status := in.nc.StatusChanged(nats.CONNECTED)
	defer in.nc.RemoveStatusListener(status)
	go func() {
		for range status {
			in.reconnected.fire()
		}
	}()

	topo := in.cfg.Topology
	all := []laneSpec{
		{name: "fast", stream: topo.CommandStream, durable: topo.FastConsumer, c: fast, slots: in.cfg.FastSlots, batch: true},
		{name: "slow", stream: topo.CommandStream, durable: topo.SlowConsumer, c: slow, slots: in.cfg.SlowSlots},
	}
	if in.cfg.Host != "" {
		hfast, hslow, err := topo.DeclareHost(ctx, in.js, in.cfg.Host)
		if err != nil {
			return err
		}
		fn, sn := topo.HostConsumers(in.cfg.Host)
		all = append(all,
			laneSpec{name: "host-fast", stream: topo.RouteStream, durable: fn, c: hfast, slots: in.cfg.FastSlots, batch: true, routed: true},
			laneSpec{name: "host-slow", stream: topo.RouteStream, durable: sn, c: hslow, slots: in.cfg.SlowSlots, routed: true})
	}
	var work sync.WaitGroup
	var lanes sync.WaitGroup
	for _, l := range all {
		lanes.Add(1)
		go func() {
			defer lanes.Done()
			in.lane(ctx, workCtx, l, &work)
		}()
	}
	close(in.ready)
	in.log.Info().Str("commands", in.cfg.Topology.Subjects.AllCommands()).Msg("intake pulling commands")
	<-ctx.Done()
	lanes.Wait()
	_ = sub.Drain()

	done := make(chan struct{})
	go func() { work.Wait(); close(done) }()
	select {
	case <-done:
		in.log.Info().Msg("intake stopped; in-flight work finished")
	case <-time.After(in.cfg.Grace):
		in.log.Warn().Dur("grace", in.cfg.Grace).Msg("grace period over: cancelling in-flight work")
		cancelWork(fmt.Errorf("the worker is stopping and its grace period (%s) ran out", in.cfg.Grace))
		<-done
	}
	return nil
}

// laneSpec is one lane: a durable consumer and the slots it may fill.
type laneSpec struct {
	name, stream, durable string
	c                     jetstream.Consumer
	slots                 int
	// batch pulls as many messages as there are free slots.
	batch bool
	// routed: the consumer is this host's, on the route stream.
	routed bool
}

// lane pulls from one consumer while it has a free slot. The slow lanes
// pull one message at a time, so a command never waits in the client's
// buffer (where its ack timer would already run) behind a long deploy.
func (in *Intake) lane(ctx, workCtx context.Context, l laneSpec, work *sync.WaitGroup) {
	name, c, slots, batch := l.name, l.c, l.slots, l.batch
	sem := make(chan struct{}, slots)
	log := in.log.With().Str("lane", name).Logger()
	backoff := 100 * time.Millisecond
	for {
		select {
		case <-ctx.Done():
			return
		case sem <- struct{}{}:
		}
		n := 1
		for batch && n < slots {
			select {
			case sem <- struct{}{}:
				n++
				continue
			default:
			}
			break
		}
		wake := in.reconnected.wait()
		fctx, cancel := context.WithTimeout(ctx, in.cfg.FetchWait)
		go func() {
			select {
			case <-wake:
				cancel()
			case <-fctx.Done():
			}
		}()
		msgs, err := c.Fetch(n, jetstream.FetchContext(fctx))
		if err != nil {
			cancel()
			release(sem, n)
			if ctx.Err() != nil {
				return
			}
			log.Warn().Err(err).Dur("retry_in", backoff).Msg("cannot pull commands")
			c = in.reattach(ctx, l, c, err, wake, &log)
			backoff = in.backoff(ctx, backoff, wake)
			continue
		}
		got := 0
		for m := range msgs.Messages() {
			got++
			work.Add(1)
			if o := in.disp.Observer; o != nil {
				o.Inflight(name, 1)
			}
			go func() {
				defer work.Done()
				free := sync.OnceFunc(func() { release(sem, 1) })
				defer free()
				if o := in.disp.Observer; o != nil {
					defer o.Inflight(name, -1)
				}
				in.take(workCtx, m, free, l.routed)
			}()
		}
		cancel()
		release(sem, n-got)
		if err := msgs.Error(); err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) && !errors.Is(err, nats.ErrTimeout) {
			if ctx.Err() != nil {
				return
			}
			log.Warn().Err(err).Msg("pull ended with an error")
			c = in.reattach(ctx, l, c, err, wake, &log)
			backoff = in.backoff(ctx, backoff, wake)
			continue
		}
		backoff = 100 * time.Millisecond
	}
}

// backoff waits d after a failed pull, or less when the connection comes
// back meanwhile, and returns the next wait.
func (in *Intake) backoff(ctx context.Context, d time.Duration, wake <-chan struct{}) time.Duration {
	select {
	case <-ctx.Done():
	case <-wake:
		return 100 * time.Millisecond
	case <-time.After(d):
	}
	return min(d*2, 5*time.Second)
}

// reattach looks a lane's consumer up again after a pull failed in a way
// that may mean the server lost it: nobody answers pulls for a consumer the
// server does not have. A nats-server that comes back without its
// JetStream store has neither the streams nor the consumers, and pulls
// would fail forever; they are declared again. It returns the consumer
// to pull from next (c when nothing is known yet, such as while
// JetStream is still starting).
func (in *Intake) reattach(ctx context.Context, l laneSpec, c jetstream.Consumer, err error, wake <-chan struct{}, log *zerolog.Logger) jetstream.Consumer {
	if !errors.Is(err, nats.ErrNoResponders) && !errors.Is(err, jetstream.ErrConsumerNotFound) &&
		!errors.Is(err, jetstream.ErrConsumerDeleted) && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return c
	}
	topo := in.cfg.Topology
	durable := l.durable
	// A stopping server answers pulls with no responders too: a lookup
	// sent to it is never answered, so a reconnection ends the wait.
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	go func() {
		select {
		case <-wake:
			cancel()
		case <-lctx.Done():
		}
	}()
	fresh, lerr := in.js.Consumer(lctx, l.stream, durable)
	switch {
	case lerr == nil:
		return fresh
	case errors.Is(lerr, jetstream.ErrConsumerNotFound) || errors.Is(lerr, jetstream.ErrStreamNotFound):
		declare := topo.Declare
		if l.routed {
			declare = func(ctx context.Context, js jetstream.JetStream) (jetstream.Consumer, jetstream.Consumer, error) {
				return topo.DeclareHost(ctx, js, in.cfg.Host)
			}
		}
		fast, slow, derr := declare(lctx, in.js)
		if derr != nil {
			log.Warn().Err(derr).Msg("the server lost the command consumer, and declaring it again failed; retrying")
			return c
		}
		log.Warn().Str("consumer", durable).Msg("the server had lost the streams or the command consumer: declared them again")
		if l.batch {
			return fast
		}
		return slow
	default:
		return c
	}
}

func (in *Intake) handle(ctx context.Context, m jetstream.Msg, free func(), del handlers.Delivery) {
	del.Release = free
	del.InProgress = func() { _ = m.InProgress() }
	if o := in.disp.Observer; o != nil && del.NumDelivered > 1 {
		o.Redelivery()
	}
	dec := in.disp.Process(ctx, del)
	// The answer is out: settle the message even when the work's context
	// ended meanwhile.
	ctx, cancel := handlers.FinishContext(ctx)
	defer cancel()
	var err error
	switch dec.Verdict {
	case handlers.Ack:
		err = in.ack(ctx, m)
	case handlers.Retry:
		in.log.Warn().Str("subject", del.Subject).Str("reason", dec.Reason).Dur("delay", dec.Delay).Msg("command will be redelivered")
		err = m.NakWithDelay(dec.Delay)
	case handlers.Term:
		in.log.Error().Str("subject", del.Subject).Str("reason", dec.Reason).Msg("command given up")
		err = m.TermWithReason(dec.Reason)
	}
	if err != nil {
		in.log.Warn().Err(err).Str("subject", del.Subject).Msg("cannot settle command message; it may be redelivered and will then be answered from its record")
	}
}

// ack acknowledges m and waits for the server to confirm it. An ack sent
// just before the connection broke gets no answer, and a stopping server
// answers that nobody is there: either way the ack is sent again on the
// next connection, rather than waited out (the request's timeout) while
// the command holds its slot, or left to a redelivery. On a cluster the
// consumer's leader may die with the ack on its way, or not be elected
// yet: the ack is sent again, shortly, until the new leader confirms it
// (an ack is idempotent) or ctx ends.
func (in *Intake) ack(ctx context.Context, m jetstream.Msg) error {
	deadline := time.Now().Add(leaderChangeBudget)
	for attempt := 1; ; attempt++ {
		wake := in.reconnected.wait()
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		go func() {
			select {
			case <-wake:
				cancel()
			case <-actx.Done():
			}
		}()
		err := m.DoubleAck(actx)
		cancel()
		if err == nil || ctx.Err() != nil {
			return err
		}
		select {
		case <-wake:
			continue
		default:
		}
		if !transient(err) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-wake:
		case <-time.After(min(time.Duration(attempt)*250*time.Millisecond, 2*time.Second)):
		case <-ctx.Done():
			return err
		}
	}
}

// unknownAction answers a command whose action no stream captures.
func (in *Intake) unknownAction(ctx context.Context, m *nats.Msg) {
	_, action, err := in.cfg.Topology.Subjects.ParseCommand(m.Subject)
	if err != nil {
		in.log.Warn().Str("subject", m.Subject).Msg("ignoring a message on a malformed command subject")
		return
	}
	if events.IsKnownAction(action) {
		return // the command stream has it
	}
	if m.Reply != "" {
		// No stream captures the subject, so a JetStream publish would wait
		// for a PubAck that never comes: answer it as the server would.
		ack, _ := json.Marshal(map[string]any{"error": map[string]any{"code": 400, "err_code": 10000,
			"description": "unknown action " + action + ": no stream takes it; see the result event"}})
		_ = m.Respond(ack)
	}
	in.disp.Process(ctx, handlers.Delivery{Subject: m.Subject, Data: m.Data, MsgID: m.Header.Get(jetstream.MsgIDHeader), Header: m.Header, NumDelivered: 1})
}

// signal is a broadcast that can fire many times: wait returns a channel
// closed by the next fire.
type signal struct {
	mu sync.Mutex
	ch chan struct{}
}

func (s *signal) wait() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch == nil {
		s.ch = make(chan struct{})
	}
	return s.ch
}

func (s *signal) fire() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch != nil {
		close(s.ch)
	}
	s.ch = make(chan struct{})
}

func release(sem chan struct{}, n int) {
	for range n {
		<-sem
	}
}
