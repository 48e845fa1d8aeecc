package handlers

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/berth-ops/berth/auth"
	"github.com/berth-ops/berth/events"
)

// Admission is the one chain every command (Dispatcher) and every query
// (package micro) passes before its handler runs. Its steps, in order:
//
//	signature   a valid signature, when signatures are required
//	decode      a strictly decoded body; the request's user and id
//	key         the signing key may speak for the user and the project
//	replay      the signature was not used before
//	subject     a valid project name and a known action
//	reply_to    a reply_to that is not one of the worker's own subjects
//	role        the user's role allows the action
//
// Until decode and key have passed, nothing the message says about its
// sender can be believed: its refusal is published apart (Ticket.Trusted
// is false), never under the user and id it claims, so that a stranger's
// message can neither take another user's request id nor answer for it.
type Admission struct {
	Mux      *Mux
	Subjects events.Subjects
	// Verifier checks signatures; nil (or one without secrets and keys)
	// when signatures are not required.
	Verifier *auth.Verifier
	// ClaimSignature records a signature as used, and returns false when
	// another message used it within ttl (a replay).
	ClaimSignature  func(ctx context.Context, sig string, seq uint64, ttl time.Duration) (bool, error)
	SignatureWindow time.Duration
	// Authorize checks the user's role; nil allows everything.
	Authorize func(ctx context.Context, req *Request) error
}

// Inbound is a command or a query as it arrived.
type Inbound struct {
	Subject string
	// Project and Action come from the subject (a query's action is its
	// endpoint's; the projects query has neither).
	Project, Action string
	Body            []byte
	Header          map[string][]string
	// MsgID is the Nats-Msg-Id header; Seq the message's sequence in the
	// command stream (0 for a query or a message no stream keeps).
	MsgID string
	Seq   uint64
	Query bool
}

// Ticket is what the admission learned of an inbound message. When Admit
// refuses it, the ticket says whether the refusal may be published under
// the request's user and id (Trusted).
type Ticket struct {
	// Cmd is the decoded body (a query's user and args).
	Cmd *events.Command
	// User and ID identify the request: a request is its user's.
	User, ID string
	// Trusted is set once the user and id can be believed: the body
	// decoded, and signed by a key that may speak for the user (or
	// signatures are not required).
	Trusted bool
	// Signed is the accepted signature, nil when unsigned.
	Signed *auth.Signed
	// ReplyTo is the body's reply_to, once checked.
	ReplyTo string
	// Req is the request the handler gets, once admitted.
	Req *Request
}

// KeyID is the id of the key the request was signed with ("" for a shared
// secret, or unsigned).
func (t *Ticket) KeyID() string {
	if t.Signed == nil || t.Signed.Key == nil {
		return ""
	}
	return t.Signed.Key.ID
}

// admissionStep is one link of the chain.
type admissionStep struct {
	name string
	run  func(a *Admission, ctx context.Context, in *Inbound, t *Ticket) error
}

// admissionSteps is the chain, in order.
var admissionSteps = []admissionStep{
	{"signature", checkSignature},
	{"decode", decodeBody},
	{"key", checkKey},
	{"replay", checkReplay},
	{"subject", checkSubject},
	{"reply_to", checkReplyTo},
	{"role", checkRole},
}

// Admit runs the chain. It returns the ticket (with Req set) when the
// message may run, else the ticket as far as it got and the refusal.
func (a *Admission) Admit(ctx context.Context, in *Inbound, received time.Time) (*Ticket, error) {
	t := &Ticket{}
	for _, step := range admissionSteps {
		if err := step.run(a, ctx, in, t); err != nil {
			return t, err
		}
		if step.name == "replay" {
			t.Trusted = true
		}
		if step.name == "reply_to" {
			t.Req = &Request{ID: t.ID, Project: in.Project, Action: in.Action, User: t.User, Args: t.Cmd.Args,
				Confirm: t.Cmd.Confirm, Received: received}
		}
	}
	return t, nil
}

func (a *Admission) signing() bool { return a.Verifier.Enabled() }

// checkSignature verifies the signature over the raw message.
func checkSignature(a *Admission, _ context.Context, in *Inbound, t *Ticket) error {
	if !a.signing() {
		return nil
	}
	signed, err := a.Verifier.Verify(in.Subject, in.Header, in.Body)
	if err != nil {
		return err
	}
	t.Signed = signed
	return nil
}

// decodeBody decodes the body strictly and settles the request's id: the
// body's id; else, unsigned, a valid Nats-Msg-Id; else one derived from
// the stream sequence, the signature, or a random one. When signatures
// are required the id is always part of what is signed.
func decodeBody(a *Admission, _ context.Context, in *Inbound, t *Ticket) error {
	if in.Query {
		q, err := events.DecodeQuery(in.Body)
		if err != nil {
			return err
		}
		t.Cmd = &events.Command{User: q.User, Args: q.Args}
	} else {
		cmd, err := events.DecodeCommand(in.Body)
		if err != nil {
			return err
		}
		t.Cmd = cmd
	}
	t.User = t.Cmd.User
	switch {
	case in.Query:
		t.ID = "q-" + strings.ReplaceAll(uuid.NewString(), "-", "")
	case t.Cmd.ID != "":
		t.ID = t.Cmd.ID
	case !a.signing() && events.ValidRequestID(in.MsgID):
		t.ID = in.MsgID
	case in.Seq != 0:
		t.ID = uuid.NewSHA1(requestNamespace, fmt.Appendf(nil, "%s:%d", a.Subjects.Prefix, in.Seq)).String()
	case t.Signed != nil:
		t.ID = uuid.NewSHA1(requestNamespace, []byte(t.Signed.Sig)).String()
	default:
		t.ID = uuid.NewString()
	}
	return nil
}

// checkKey makes sure the key that signed the message may speak for its
// user and act on its project.
func checkKey(_ *Admission, _ context.Context, in *Inbound, t *Ticket) error {
	if t.Signed == nil || t.Signed.Key == nil {
		return nil
	}
	return t.Signed.Key.Allows(t.User, in.Project)
}

// checkReplay refuses a signature another message used before.
func checkReplay(a *Admission, ctx context.Context, in *Inbound, t *Ticket) error {
	if t.Signed == nil || a.ClaimSignature == nil {
		return nil
	}
	fresh, err := a.ClaimSignature(ctx, t.Signed.Sig, in.Seq, 2*a.SignatureWindow+time.Minute)
	if err != nil {
		return err
	}
	if !fresh {
		return events.Errorf(events.CodeUnauthorized, "this signed message was already used").
			WithHint("sign every command and query anew, with a fresh timestamp")
	}
	return nil
}

// checkSubject checks the project name and the action.
func checkSubject(a *Admission, _ context.Context, in *Inbound, _ *Ticket) error {
	if in.Query && in.Action == "" {
		return nil // the projects query names no project
	}
	if !events.ValidProject(in.Project) {
		return events.Errorf(events.CodeBadRequest, "project name %q is not valid", in.Project).
			WithHint("use lower-case letters, digits, '_' and '-', starting with a letter or digit, at most 63 characters")
	}
	if a.Mux.Handler(in.Action) == nil {
		return UnknownActionError(in.Action, a.Mux)
	}
	return nil
}

// checkReplyTo refuses a reply_to on the worker's own subjects or the
// server's API: the worker may publish where a client may not.
func checkReplyTo(a *Admission, _ context.Context, _ *Inbound, t *Ticket) error {
	rt := t.Cmd.ReplyTo
	if rt == "" {
		return nil
	}
	if a.reservedSubject(rt) {
		return events.Errorf(events.CodeBadRequest, "reply_to %q is not allowed", rt).
			WithHint("use an inbox subject of your own, such as _INBOX.<id>, or leave reply_to out")
	}
	t.ReplyTo = rt
	return nil
}

// checkRole authorizes the request. The projects query has no project:
// it lists those the user may view.
func checkRole(a *Admission, ctx context.Context, in *Inbound, t *Ticket) error {
	if a.Authorize == nil || in.Query && in.Action == "" {
		return nil
	}
	return a.Authorize(ctx, t.Req)
}

// reservedSubject reports whether a reply_to names the server's API or one
// of the worker's own subject spaces (commands, events, audit, queries,
// the routed commands and forwarded queries of a fleet).
func (a *Admission) reservedSubject(s string) bool {
	if strings.HasPrefix(s, "$") || strings.HasPrefix(s, "_") && !strings.HasPrefix(s, "_INBOX.") {
		return true
	}
	for _, space := range []string{"cmd", "evt", "audit", "q", "host", "hq"} {
		if strings.HasPrefix(s, a.Subjects.Prefix+"."+space+".") || s == a.Subjects.Prefix+"."+space {
			return true
		}
	}
	return false
}
