package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

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
			// The server's text, and a subject the server named: sanitized.
			if sub != nil {
				fmt.Fprintf(errw, "%s (subscription %s)\n", sanitize(msg, oneLine), sanitize(sub.Subject, oneLine))
				return
			}
			fmt.Fprintf(errw, "%s\n", sanitize(msg, oneLine))
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
	// signKeyID, when set, names the key signSecret is (auth.HeaderKey).
	signKeyID string
	// now is the signing clock; time.Now when nil.
	now func() time.Time
	// publishAttempts is how many times a command whose PubAck does not
	// come is published (the same message: its Nats-Msg-Id makes the
	// stream keep one); defaultPublishAttempts when zero.
	publishAttempts int
}

// defaultPublishAttempts is how many times a command is published when its
// PubAck does not come in time.
const defaultPublishAttempts = 3

func newClient(nc *nats.Conn, subj events.Subjects) *client {
	js, _ := jetstream.New(nc) // fails only for a nil connection
	return &client{nc: nc, js: js, subj: subj}
}

// eventMsg is one event as received: its subject, headers and body.
type eventMsg struct {
	subject string
	header  nats.Header
	data    []byte
}

// eventSource yields the events of one request, in order.
type eventSource interface {
	// Next returns the next event, or an error when ctx ends first.
	Next(ctx context.Context) (eventMsg, error)
	// Close stops reading.
	Close()
}

// send subscribes to the events of cmd's request (scoped by its user:
// events.Subjects.RequestEvents), then publishes cmd on the command
// subject of project and action with JetStream, with a Nats-Msg-Id that
// nobody else can reproduce (msgID). A publication whose PubAck does not
// come is repeated, the same message with the same Msg-Id, so the stream
// keeps it once. When the stream reports the first publication as a
// duplicate (the very same signed command, within the same second, was
// sent before), it replays the request's events instead. It also returns
// the command's sequence in the command stream (0 when replaying).
func (c *client) send(ctx context.Context, project, action string, cmd *events.Command, errw io.Writer) (eventSource, uint64, error) {
	// Subscribe first, so no event can be published before we listen.
	sub, err := c.nc.SubscribeSync(c.subj.RequestEvents(project, cmd.User, cmd.ID))
	if err != nil {
		return nil, 0, fmt.Errorf("subscribe to events: %w", err)
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		sub.Unsubscribe()
		return nil, 0, fmt.Errorf("subscribe to events: %w", err)
	}
	fctx, cancel := context.WithTimeout(ctx, requestTimeout)
	err = c.nc.FlushWithContext(fctx)
	cancel()
	if err != nil {
		sub.Unsubscribe()
		return nil, 0, fmt.Errorf("subscribe to events: %w", err)
	}
	// A subscription the server refused is reported before the PONG of
	// the flush: do not send a command whose events cannot be seen.
	if err := c.nc.LastError(); errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), `"`+sub.Subject+`"`) {
		sub.Unsubscribe()
		return nil, 0, &deniedError{err: err}
	}

	msg, err := c.commandMsg(project, action, cmd)
	if err != nil {
		sub.Unsubscribe()
		return nil, 0, err
	}
	ack, retried, err := c.publish(ctx, msg)
	switch {
	case errors.Is(err, jetstream.ErrNoStreamResponse):
		sub.Unsubscribe()
		return nil, 0, errors.New(noCommandStream)
	case err != nil:
		sub.Unsubscribe()
		return nil, 0, fmt.Errorf("publish the command on %s: %w", msg.Subject, err)
	case ack.Duplicate && !retried:
		sub.Unsubscribe()
		fmt.Fprintf(errw, "request %s was sent before; replaying its events\n", cmd.ID)
		src, err := c.follow(ctx, project, cmd.User, cmd.ID)
		return src, 0, err
	}
	// A duplicate of a repeated publication: the first one reached the
	// stream after all, and its events come on sub.
	return &subSource{sub: sub}, ack.Sequence, nil
}

// commandMsg is the message of cmd: its body, its signature headers
// (sign), and its Nats-Msg-Id (msgID), computed once, so that a repeated
// publication of the message is the same message.
func (c *client) commandMsg(project, action string, cmd *events.Command) (*nats.Msg, error) {
	body, err := json.Marshal(cmd)
	if err != nil {
		return nil, fmt.Errorf("encode the command: %w", err)
	}
	msg := nats.NewMsg(c.subj.Command(project, action))
	msg.Data = body
	c.sign(msg)
	msg.Header.Set(jetstream.MsgIDHeader, msgID(msg.Header))
	return msg, nil
}

// msgID is the Nats-Msg-Id of a command with header, by which the command
// stream drops a second copy of a message within its duplicate window.
//
// It is not the request id: the request id is in the body, and may be
// known to, or guessed by, others (--id sets it). A stranger who published
// first with the request id as Msg-Id would make the stream drop the real
// command without a word. So the Msg-Id is a value nobody else can
// reproduce before the command is sent:
//
//   - signed: "s-" and the first 32 hex digits of SHA-256 of the
//     Berth-Signature header value. Only the holder of the secret can
//     compute the signature, and an identical signed message (a replay,
//     or the same command signed in the same second) is the same command.
//   - unsigned: "r-" and 32 random hex digits.
func msgID(header nats.Header) string {
	if sig := header.Get(auth.HeaderSignature); sig != "" {
		sum := sha256.Sum256([]byte(sig))
		return "s-" + hex.EncodeToString(sum[:16])
	}
	var b [16]byte
	rand.Read(b[:]) // never fails (crypto/rand)
	return "r-" + hex.EncodeToString(b[:])
}

// publish publishes msg with JetStream, again (the same message) when
// its PubAck does not come within requestTimeout, up to c.publishAttempts
// times in all while ctx lasts. retried says whether the PubAck is that
// of a repeated publication.
func (c *client) publish(ctx context.Context, msg *nats.Msg) (ack *jetstream.PubAck, retried bool, err error) {
	attempts := c.publishAttempts
	if attempts <= 0 {
		attempts = defaultPublishAttempts
	}
	for i := range attempts {
		pctx, cancel := context.WithTimeout(ctx, requestTimeout)
		ack, err = c.js.PublishMsg(pctx, msg)
		cancel()
		lost := errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout)
		if !lost || ctx.Err() != nil || i == attempts-1 {
			return ack, i > 0, err
		}
	}
	return nil, false, err // not reached
}

// sign sets the signature headers of msg when the client has a secret:
// HMAC-SHA256 over the timestamp, the subject and the body, as the worker
// verifies them, and the id of the key when it has one.
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
	if c.signKeyID != "" {
		msg.Header.Set(auth.HeaderKey, c.signKeyID)
	}
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

// follow replays the events of request id of user from the event
// stream, from the first, and goes on with new ones. project narrows the
// filter when known.
func (c *client) follow(ctx context.Context, project, user, id string) (eventSource, error) {
	filter := c.subj.Prefix + ".evt.*." + events.UserToken(user) + "." + id + ".>"
	if project != "" {
		filter = c.subj.RequestEvents(project, user, id)
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

func (s *subSource) Next(ctx context.Context) (eventMsg, error) {
	m, err := s.sub.NextMsgWithContext(ctx)
	if err != nil {
		return eventMsg{}, err
	}
	return eventMsg{subject: m.Subject, header: m.Header, data: m.Data}, nil
}

func (s *subSource) Close() { s.sub.Unsubscribe() }

// consumerSource reads events from an ordered JetStream consumer.
type consumerSource struct{ it jetstream.MessagesContext }

func (s *consumerSource) Next(ctx context.Context) (eventMsg, error) {
	m, err := s.it.Next(jetstream.NextContext(ctx))
	if err != nil {
		return eventMsg{}, err
	}
	return eventMsg{subject: m.Subject(), header: m.Headers(), data: m.Data()}, nil
}

func (s *consumerSource) Close() { s.it.Stop() }

// signedSource passes on only the events of src that the worker signed
// with one of secrets (auth.VerifyEvent): anyone who may publish on the
// event subjects could otherwise forge a result, and end the wait with
// it. Each other event is dropped, with one warning.
type signedSource struct {
	src     eventSource
	secrets [][]byte
	warnf   func(format string, a ...any)
}

func (s *signedSource) Next(ctx context.Context) (eventMsg, error) {
	for {
		m, err := s.src.Next(ctx)
		if err != nil {
			return m, err
		}
		if auth.VerifyEvent(s.secrets, m.subject, m.header, m.data) == nil {
			return m, nil
		}
		s.warnf("warning: ignored an event on %s that the worker did not sign\n", m.subject)
	}
}

func (s *signedSource) Close() { s.src.Close() }

// hostDown asks for project's config, as a query, and returns what to
// show when the answer is that the worker of the project's host does not
// answer (a fleet whose host is down): its message says which host and
// when it was last seen. It returns "" otherwise.
func (c *client) hostDown(project, user string) string {
	body, err := json.Marshal(events.Query{ID: strings.ReplaceAll(uuid.NewString(), "-", ""), User: user})
	if err != nil {
		return ""
	}
	msg := nats.NewMsg(c.subj.Prefix + ".q." + project + ".config")
	msg.Data = body
	c.sign(msg)
	m, err := c.nc.RequestMsg(msg, 3*time.Second)
	if err != nil || m.Header.Get(micro.ErrorCodeHeader) != string(events.CodeUnavailable) {
		return ""
	}
	var e events.Error
	if json.Unmarshal(m.Data, &e) != nil || e.Message == "" {
		return ""
	}
	return sanitize(e.Message, oneLine) + "; the command waits in the stream and runs when that worker is back (Ctrl-C leaves it queued)"
}
