package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/berth-ops/berth/events"
)

// client talks to the worker as a bot does: it subscribes to a request's
// events, publishes the command with Nats-Msg-Id equal to its id, and waits
// for the result event.
type client struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	subj events.Subjects
	tag  string
	seq  atomic.Uint64
}

func newClient(tb testing.TB, ns *server.Server, prefix string) *client {
	tb.Helper()
	nc, js := newNATSConn(tb, ns, "berth-bench")
	return &client{nc: nc, js: js, subj: events.NewSubjects(prefix), tag: randomHex(tb, 4)}
}

// newID returns a request id unique to this benchmark process.
func (c *client) newID() string {
	return "b" + c.tag + "-" + strconv.FormatUint(c.seq.Add(1), 10)
}

// request sends one command and returns its result event.
func (c *client) request(project, action string, cmd events.Command, timeout time.Duration) (events.Event, error) {
	if cmd.ID == "" {
		cmd.ID = c.newID()
	}
	body, err := json.Marshal(cmd)
	if err != nil {
		return events.Event{}, err
	}
	m, err := roundTrip(c.nc, c.js, c.subj.RequestEvents(project, cmd.User, cmd.ID), c.subj.Command(project, action), cmd.ID, body, timeout)
	if err != nil {
		return events.Event{}, fmt.Errorf("%s %s: %w", project, action, err)
	}
	var ev events.Event
	if err := json.Unmarshal(m.Data, &ev); err != nil {
		return events.Event{}, fmt.Errorf("undecodable result %q: %w", m.Data, err)
	}
	return ev, nil
}

// roundTrip subscribes to events, publishes body on subject through
// JetStream with msgID as Nats-Msg-Id, and returns the first message whose
// subject ends in ".result". It is the whole client side of a request, for
// Berth and for the floor alike.
func roundTrip(nc *nats.Conn, js jetstream.JetStream, evSubj, subject, msgID string, body []byte, timeout time.Duration) (*nats.Msg, error) {
	sub, err := nc.SubscribeSync(evSubj)
	if err != nil {
		return nil, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		return nil, err
	}
	if err := nc.Flush(); err != nil {
		return nil, err
	}
	msg := &nats.Msg{Subject: subject, Data: body, Header: nats.Header{}}
	msg.Header.Set(jetstream.MsgIDHeader, msgID)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		return nil, fmt.Errorf("publish %s: %w", subject, err)
	}
	deadline := time.Now().Add(timeout)
	for {
		m, err := sub.NextMsg(time.Until(deadline))
		if err != nil {
			if errors.Is(err, nats.ErrTimeout) {
				return nil, fmt.Errorf("no result within %v", timeout)
			}
			return nil, err
		}
		if strings.HasSuffix(m.Subject, ".result") {
			return m, nil
		}
	}
}

func mustOK(tb testing.TB, res events.Event) {
	tb.Helper()
	if res.OK == nil || !*res.OK {
		tb.Fatalf("result of %s %s not ok: %+v; data %s", res.Project, res.Action, res.Error, res.Data)
	}
}

func errCode(res events.Event) string {
	if res.Error == nil {
		return ""
	}
	return string(res.Error.Code)
}

func mustJSON(tb testing.TB, v any) json.RawMessage {
	tb.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func decode[T any](tb testing.TB, raw json.RawMessage) T {
	tb.Helper()
	var v T
	if err := json.Unmarshal(raw, &v); err != nil {
		tb.Fatalf("decode %s: %v", raw, err)
	}
	return v
}

// floor is the floor of row P1: the least a JetStream command/event round
// trip costs on the same server. A work-queue stream takes commands (file
// storage, 10 min dedup window, like BERTH_CMD), a durable pull consumer
// delivers them to a tiny responder goroutine on its own connection, which
// publishes one event to a limits stream (file storage, like BERTH_EVT),
// waits for its PubAck, and acks the command. The client side is the same
// roundTrip as Berth's.
type floor struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	seq  atomic.Uint64
	tag  string
	body []byte
}

func startFloor(tb testing.TB, ns *server.Server) *floor {
	tb.Helper()
	rnc, rjs := newNATSConn(tb, ns, "bench-floor-responder")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := rjs.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "FLOOR_CMD", Subjects: []string{"floor.cmd.>"},
		Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage, Duplicates: 10 * time.Minute}); err != nil {
		tb.Fatal(err)
	}
	if _, err := rjs.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "FLOOR_EVT", Subjects: []string{"floor.evt.>"},
		Retention: jetstream.LimitsPolicy, Storage: jetstream.FileStorage, Duplicates: 10 * time.Minute}); err != nil {
		tb.Fatal(err)
	}
	cons, err := rjs.CreateOrUpdateConsumer(ctx, "FLOOR_CMD", jetstream.ConsumerConfig{Durable: "floor", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		tb.Fatal(err)
	}
	var mu sync.Mutex
	var respErr error
	cc, err := cons.Consume(func(m jetstream.Msg) {
		id := m.Subject()[strings.LastIndexByte(m.Subject(), '.')+1:]
		ev := fmt.Appendf(nil, `{"request_id":%q,"kind":"result","seq":1,"ok":true,"data":{}}`, id)
		pctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := rjs.Publish(pctx, "floor.evt."+id+".result", ev, jetstream.WithMsgID(id+".result.1"))
		if err == nil {
			err = m.Ack()
		}
		if err != nil {
			mu.Lock()
			respErr = err
			mu.Unlock()
		}
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		cc.Stop()
		mu.Lock()
		defer mu.Unlock()
		if respErr != nil {
			tb.Errorf("floor responder: %v", respErr)
		}
	})
	_ = rnc
	nc, js := newNATSConn(tb, ns, "bench-floor-client")
	return &floor{nc: nc, js: js, tag: randomHex(tb, 4),
		body: mustJSON(tb, events.Command{ID: "b00000000-0", User: admin})}
}

// request is one floor round trip.
func (f *floor) request() error {
	id := "f" + f.tag + "-" + strconv.FormatUint(f.seq.Add(1), 10)
	_, err := roundTrip(f.nc, f.js, "floor.evt."+id+".>", "floor.cmd."+id, id, f.body, 30*time.Second)
	return err
}
