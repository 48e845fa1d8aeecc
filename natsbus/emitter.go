package natsbus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/berth-ops/berth/auth"
	"github.com/berth-ops/berth/handlers"
)

// Emitter publishes events to the event stream and replies on core NATS.
type Emitter struct {
	nc *nats.Conn
	js jetstream.JetStream
	// secret, when set, signs every event and reply (auth.Sign), so that
	// a client holding it can tell the worker's events from forged ones.
	secret []byte
	// reconnected fires when the connection to NATS is back after a loss.
	reconnected signal
}

var _ handlers.Emitter = (*Emitter)(nil)

// asyncRepublishes bounds how often an event whose publish a lost
// connection voided is published again.
const asyncRepublishes = 8

// leaderChangeBudget bounds how long a publish or an ack is retried while
// JetStream does not answer: a killed stream or consumer leader is
// replaced after the Raft election timeout (4 to 9 s on nats-server).
const leaderChangeBudget = 30 * time.Second

// transient reports whether err may go away by itself: no answer, nobody
// to answer (a stopping server, a stream or consumer without a leader
// yet), or JetStream saying it is briefly unavailable.
func transient(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, nats.ErrDisconnected) || errors.Is(err, nats.ErrConnectionReconnecting) ||
		isAPIError(err, errCodeClusterUnavailable)
}

// NewEmitter returns an Emitter on nc; a non-empty eventSecret signs every
// event and reply it publishes.
func NewEmitter(nc *nats.Conn, js jetstream.JetStream, eventSecret []byte) *Emitter {
	e := &Emitter{nc: nc, js: js, secret: eventSecret}
	status := nc.StatusChanged(nats.CONNECTED, nats.CLOSED)
	go func() {
		for st := range status {
			if st == nats.CLOSED {
				nc.RemoveStatusListener(status)
				return
			}
			e.reconnected.fire()
		}
	}()
	return e
}

// Emit publishes one event. Durable events wait for the stream's ack;
// others are published asynchronously, in order on the same connection.
func (e *Emitter) Emit(ctx context.Context, subject, msgID string, body []byte, durable bool) error {
	msg := e.message(subject, body)
	if durable {
		// A publish retried after a lost ack is deduplicated by its id.
		// One sent just before the connection broke is never answered:
		// it is sent again as soon as the connection is back, without
		// counting as a failure. On a cluster, a stream whose leader died
		// answers nobody until its followers elect another (seconds):
		// the publish is retried, with the same id, for as long as that
		// may take.
		var err error
		deadline := time.Now().Add(leaderChangeBudget)
		for failures := 0; ; {
			wake := e.reconnected.wait()
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			go func() {
				select {
				case <-wake:
					cancel()
				case <-pctx.Done():
				}
			}()
			_, err = e.js.PublishMsg(pctx, msg, jetstream.WithMsgID(msgID))
			cancel()
			if err == nil || ctx.Err() != nil {
				break
			}
			select {
			case <-wake:
				continue
			default:
			}
			failures++
			if time.Now().After(deadline) || (!transient(err) && failures >= 3) {
				break
			}
			select {
			case <-wake:
			case <-time.After(min(time.Duration(failures)*250*time.Millisecond, 2*time.Second)):
			case <-ctx.Done():
			}
		}
		if err != nil {
			return fmt.Errorf("publish %s: %w", subject, err)
		}
		return nil
	}
	paf, err := e.js.PublishMsgAsync(msg, jetstream.WithMsgID(msgID))
	if err != nil {
		if errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
			// The server is slow to ack: wait for the backlog, then retry once.
			select {
			case <-e.js.PublishAsyncComplete():
			case <-time.After(5 * time.Second):
			case <-ctx.Done():
				return ctx.Err()
			}
			paf, err = e.js.PublishMsgAsync(msg, jetstream.WithMsgID(msgID))
		}
		if err != nil {
			return fmt.Errorf("publish %s: %w", subject, err)
		}
	}
	go e.republishIfVoided(msg, paf)
	return nil
}

// message is a message to publish, signed when the emitter has a secret.
func (e *Emitter) message(subject string, body []byte) *nats.Msg {
	msg := &nats.Msg{Subject: subject, Data: body, Header: nats.Header{}}
	if len(e.secret) > 0 {
		ts, sig := auth.Sign(e.secret, time.Now(), subject, body)
		msg.Header.Set(auth.HeaderTimestamp, ts)
		msg.Header.Set(auth.HeaderSignature, sig)
	}
	return msg
}

// republishIfVoided publishes an event again when its publish was not
// acknowledged: the client drops the pending acks when its connection
// breaks, and a stopping server answers that no stream is there, while
// the event may or may not have reached the stream. Without this an
// accepted or progress event could be lost in a server restart. Its
// message id makes a copy the stream already holds a no-op.
func (e *Emitter) republishIfVoided(msg *nats.Msg, paf jetstream.PubAckFuture) {
	for attempt := 1; ; attempt++ {
		var err error
		select {
		case <-paf.Ok():
			return
		case err = <-paf.Err():
		case <-time.After(time.Minute):
			return
		}
		if attempt > asyncRepublishes || e.nc.IsClosed() {
			return
		}
		if !errors.Is(err, nats.ErrDisconnected) {
			// The server answered without storing: try again once the
			// connection is back, or a moment later.
			select {
			case <-e.reconnected.wait():
			case <-time.After(time.Duration(attempt) * time.Second):
			}
		}
		if paf, err = e.js.PublishMsgAsync(msg); err != nil { // msg carries its Nats-Msg-Id
			return
		}
	}
}

// Reply publishes body on a core-NATS subject.
func (e *Emitter) Reply(_ context.Context, subject string, body []byte) error {
	return e.nc.PublishMsg(e.message(subject, body))
}
