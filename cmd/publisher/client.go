package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/berth-ops/berth/auth"
	"github.com/berth-ops/berth/events"
)

// requestTimeout bounds each request to the server (flush, publish, stream
// lookup, consumer creation).
const requestTimeout = 10 * time.Second

// noCommandStream is reported when nothing stores commands: the worker has
// never run against this server (it creates the streams).
const noCommandStream = "no Berth worker stream on this server: start the worker first"

// connect connects to NATS with the authentication and TLS options of o.
// Asynchronous errors, such as permission violations, go to errw and, when
// it is not nil, to onErr.
func connect(o *options, errw io.Writer, onErr func(error)) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.Name("berth-publisher"),
		nats.Timeout(5 * time.Second),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			if onErr != nil {
				onErr(err)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "nats: ") {
				msg = "nats: " + msg
			}
			if sub != nil {
				fmt.Fprintf(errw, "%s (subscription %s)\n", msg, sub.Subject)
				return
			}
			fmt.Fprintf(errw, "%s\n", msg)
		}),
	}
	if o.creds != "" {
		opts = append(opts, nats.UserCredentials(o.creds))
	}
	if o.nkey != "" {
		opt, err := nats.NkeyOptionFromSeed(o.nkey)
		if err != nil {
			return nil, fmt.Errorf("nkey seed %s: %w", o.nkey, err)
		}
		opts = append(opts, opt)
	}
	if o.natsUser != "" {
		opts = append(opts, nats.UserInfo(o.natsUser, o.natsPassword))
	}
	if o.token != "" {
		opts = append(opts, nats.Token(o.token))
	}
	if o.tlsFirst {
		opts = append(opts, nats.TLSHandshakeFirst())
	}
	if o.tlsCA != "" {
		opts = append(opts, nats.RootCAs(o.tlsCA))
	}
	if o.inboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(o.inboxPrefix))
	}
	if o.tlsCert != "" {
		opts = append(opts, nats.ClientCert(o.tlsCert, o.tlsKey))
	}
	return nats.Connect(o.server, opts...)
}

// client sends commands and reads events over one connection.
type client struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	subj events.Subjects
	// signSecret, when set, signs every command (auth.Sign).
	signSecret []byte
	// now is the signing clock; time.Now when nil.
	now func() time.Time
}

func newClient(nc *nats.Conn, subj events.Subjects) *client {
	js, _ := jetstream.New(nc) // fails only for a nil connection
	return &client{nc: nc, js: js, subj: subj}
}

// eventSource yields the raw bodies of the events of one request, in order.
type eventSource interface {
	// Next returns the next event body, or an error when ctx ends first.
	Next(ctx context.Context) ([]byte, error)
	// Close stops reading.
	Close()
}

// send subscribes to the events of cmd's request, then publishes cmd on the
// command subject of project and action with JetStream, with the request id
// as Nats-Msg-Id. When the stream reports the id as a duplicate (the
// command was sent before), it replays the request's events instead.
func (c *client) send(ctx context.Context, project, action string, cmd *events.Command, errw io.Writer) (eventSource, error) {
	// Subscribe first, so no event can be published before we listen.
	sub, err := c.nc.SubscribeSync(c.subj.RequestEvents(project, cmd.ID))
	if err != nil {
		return nil, fmt.Errorf("subscribe to events: %w", err)
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		sub.Unsubscribe()
		return nil, fmt.Errorf("subscribe to events: %w", err)
	}
	fctx, cancel := context.WithTimeout(ctx, requestTimeout)
	err = c.nc.FlushWithContext(fctx)
	cancel()
	if err != nil {
		sub.Unsubscribe()
		return nil, fmt.Errorf("subscribe to events: %w", err)
	}
	// A subscription the server refused is reported before the PONG of
	// the flush: do not send a command whose events cannot be seen.
	if err := c.nc.LastError(); errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), `"`+sub.Subject+`"`) {
		sub.Unsubscribe()
		return nil, &deniedError{err: err}
	}

	body, err := json.Marshal(cmd)
	if err != nil {
		sub.Unsubscribe()
		return nil, fmt.Errorf("encode the command: %w", err)
	}
	subject := c.subj.Command(project, action)
	msg := nats.NewMsg(subject)
	msg.Header.Set(jetstream.MsgIDHeader, cmd.ID)
	msg.Data = body
	c.sign(msg)
	pctx, cancel := context.WithTimeout(ctx, requestTimeout)
	ack, err := c.js.PublishMsg(pctx, msg)
	cancel()
	switch {
	case errors.Is(err, jetstream.ErrNoStreamResponse):
		sub.Unsubscribe()
		return nil, errors.New(noCommandStream)
	case err != nil:
		sub.Unsubscribe()
		return nil, fmt.Errorf("publish the command on %s: %w", subject, err)
	case ack.Duplicate:
		sub.Unsubscribe()
		fmt.Fprintf(errw, "request %s was sent before; replaying its events\n", cmd.ID)
		return c.follow(ctx, project, cmd.ID)
	}
	return &subSource{sub: sub}, nil
}

// sign sets the signature headers of msg when the client has a secret:
// HMAC-SHA256 over the timestamp, the subject and the body, as the worker
// verifies them.
func (c *client) sign(msg *nats.Msg) {
	if len(c.signSecret) == 0 {
		return
	}
	now := time.Now
	if c.now != nil {
		now = c.now
	}
	ts, sig := auth.Sign(c.signSecret, now(), msg.Subject, msg.Data)
	msg.Header.Set(auth.HeaderTimestamp, ts)
	msg.Header.Set(auth.HeaderSignature, sig)
}

// deniedError is a permission violation reported by the server: the NATS
// user lacks a permission the publisher needs.
type deniedError struct{ err error }

func (e *deniedError) Error() string {
	return e.err.Error() + "; this NATS user lacks a permission the publisher needs (see docs/security.md)"
}

func (e *deniedError) Unwrap() error { return e.err }

// cancelOnDenied cancels ctx with a *deniedError when a permission
// violation arrives on errs, until ctx ends.
func cancelOnDenied(ctx context.Context, errs <-chan error, cancel context.CancelCauseFunc) {
	for {
		select {
		case err := <-errs:
			if errors.Is(err, nats.ErrPermissionViolation) {
				cancel(&deniedError{err: err})
				return
			}
		case <-ctx.Done():
			return
		}
	}
}

// deniedCause returns the *deniedError ctx was cancelled with, or nil.
func deniedCause(ctx context.Context) error {
	var d *deniedError
	if errors.As(context.Cause(ctx), &d) {
		return d
	}
	return nil
}

// follow replays the events of request id from the event stream, from the
// first, and goes on with new ones. project narrows the filter when known.
func (c *client) follow(ctx context.Context, project, id string) (eventSource, error) {
	filter := c.subj.Prefix + ".evt.*." + id + ".>"
	if project != "" {
		filter = c.subj.RequestEvents(project, id)
	}
	lctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	stream, err := c.js.StreamNameBySubject(lctx, c.subj.AllEvents())
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("no Berth event stream for %s on this server: start the worker first", c.subj.AllEvents())
	}
	if err != nil {
		return nil, fmt.Errorf("find the event stream: %w", err)
	}
	cons, err := c.js.OrderedConsumer(lctx, stream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{filter},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("read the event stream %s: %w", stream, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return nil, fmt.Errorf("read the event stream %s: %w", stream, err)
	}
	return &consumerSource{it: it}, nil
}

// subSource reads events from a core NATS subscription.
type subSource struct{ sub *nats.Subscription }

func (s *subSource) Next(ctx context.Context) ([]byte, error) {
	m, err := s.sub.NextMsgWithContext(ctx)
	if err != nil {
		return nil, err
	}
	return m.Data, nil
}

func (s *subSource) Close() { s.sub.Unsubscribe() }

// consumerSource reads events from an ordered JetStream consumer.
type consumerSource struct{ it jetstream.MessagesContext }

func (s *consumerSource) Next(ctx context.Context) ([]byte, error) {
	m, err := s.it.Next(jetstream.NextContext(ctx))
	if err != nil {
		return nil, err
	}
	return m.Data(), nil
}

func (s *consumerSource) Close() { s.it.Stop() }
