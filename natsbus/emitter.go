package natsbus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/berth-ops/berth/handlers"
)

// Emitter publishes events to the event stream and replies on core NATS.
type Emitter struct {
	nc *nats.Conn
	js jetstream.JetStream
}

var _ handlers.Emitter = (*Emitter)(nil)

// NewEmitter returns an Emitter on nc.
func NewEmitter(nc *nats.Conn, js jetstream.JetStream) *Emitter { return &Emitter{nc: nc, js: js} }

// Emit publishes one event. Durable events wait for the stream's ack;
// others are published asynchronously, in order on the same connection.
func (e *Emitter) Emit(ctx context.Context, subject, msgID string, body []byte, durable bool) error {
	msg := &nats.Msg{Subject: subject, Data: body, Header: nats.Header{}}
	if durable {
		// A publish retried after a lost ack is deduplicated by its id.
		var err error
		for attempt := 0; attempt < 3; attempt++ {
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err = e.js.PublishMsg(pctx, msg, jetstream.WithMsgID(msgID))
			cancel()
			if err == nil || ctx.Err() != nil {
				break
			}
			time.Sleep(time.Duration(attempt+1) * 200 * time.Millisecond)
		}
		if err != nil {
			return fmt.Errorf("publish %s: %w", subject, err)
		}
		return nil
	}
	if _, err := e.js.PublishMsgAsync(msg, jetstream.WithMsgID(msgID)); err != nil {
		if errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
			// The server is slow to ack: wait for the backlog, then retry once.
			select {
			case <-e.js.PublishAsyncComplete():
			case <-time.After(5 * time.Second):
			case <-ctx.Done():
				return ctx.Err()
			}
			_, err = e.js.PublishMsgAsync(msg, jetstream.WithMsgID(msgID))
		}
		if err != nil {
			return fmt.Errorf("publish %s: %w", subject, err)
		}
	}
	return nil
}

// Reply publishes body on a core-NATS subject.
func (e *Emitter) Reply(_ context.Context, subject string, body []byte) error {
	return e.nc.Publish(subject, body)
}
