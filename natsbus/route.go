package natsbus

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/berth-ops/berth/events"
	"github.com/berth-ops/berth/handlers"
)

// Router says which host's worker runs a command: "" when the worker that
// took it may run it (no fleet, a project without host, or an action that
// runs anywhere).
type Router interface {
	Route(ctx context.Context, project, action string, body []byte) (host string, err error)
}

// The headers of a routed command. Clients cannot set them: only workers
// may publish on <prefix>.host.> (docs/security.md), and the route stream
// keeps nothing else.
const (
	// HeaderSeq is the command's sequence in the command stream, which
	// names it (request id of a command without id, audit record) wherever
	// it runs.
	HeaderSeq = "Berth-Seq"
	// HeaderMsgID is the Nats-Msg-Id the client sent.
	HeaderMsgID = "Berth-Msg-Id"
	// HeaderHops counts the routings (a project moved meanwhile is routed
	// again); HeaderRoutedBy names the host that routed it last.
	HeaderHops     = "Berth-Hops"
	HeaderRoutedBy = "Berth-Routed-By"
)

// maxHops bounds the routings of one command: a command moved back and
// forth more often than that runs where it is.
const maxHops = 4

// take hands a delivered command to the dispatcher, or routes it to its
// project's host. A command taken from the shared consumers whose project
// lives on another host is published to that host's subject (stored
// before the original is acknowledged, with a message id derived from its
// sequence, so a redelivery is routed once); a routed command whose
// project has moved since is routed on.
func (in *Intake) take(ctx context.Context, m jetstream.Msg, free func(), routed bool) {
	subjects := in.cfg.Topology.Subjects
	h := m.Headers()
	del := handlers.Delivery{Subject: m.Subject(), Data: m.Data(), MsgID: h.Get(jetstream.MsgIDHeader), Header: h,
		MaxDeliver: in.cfg.Topology.MaxDeliver}
	md, mdErr := m.Metadata()
	if mdErr == nil {
		del.StreamSeq = md.Sequence.Stream
		del.NumDelivered = md.NumDelivered
	}
	hops := 0
	project, action := "", ""
	if routed {
		_, p, a, err := subjects.ParseHostCommand(m.Subject())
		seq, serr := strconv.ParseUint(h.Get(HeaderSeq), 10, 64)
		if err != nil || serr != nil {
			in.log.Error().Str("subject", m.Subject()).Msg("a routed command without its routing headers: dropped (only workers may publish on the host subjects)")
			_ = m.TermWithReason("not a routed command")
			return
		}
		project, action = p, a
		hops, _ = strconv.Atoi(h.Get(HeaderHops))
		del.Subject = subjects.Command(project, action)
		del.StreamSeq = seq
		del.MsgID = h.Get(HeaderMsgID)
	} else if p, a, err := subjects.ParseCommand(m.Subject()); err == nil {
		project, action = p, a
	}
	if in.cfg.Router != nil && project != "" && hops < maxHops {
		host, err := in.cfg.Router.Route(ctx, project, action, m.Data())
		switch {
		case err != nil && (in.cfg.Alone == nil || !in.cfg.Alone()):
			// Another host may own it: wait rather than guess, and answer
			// rather than drop it on its last delivery.
			if del.Last() {
				in.log.Warn().Err(err).Str("subject", del.Subject).Msg("cannot look up the project's host on the command's last delivery; it is answered with the error")
				del.Refuse = events.AsError(err)
				in.handle(ctx, m, free, del)
				return
			}
			in.log.Warn().Err(err).Str("subject", del.Subject).Msg("cannot look up the project's host; the command waits")
			_ = m.NakWithDelay(2 * time.Second)
			return
		case err == nil && host != "" && host != in.cfg.Host:
			in.forward(ctx, m, free, del, host, project, action, hops+1)
			return
		}
	}
	in.handle(ctx, m, free, del)
}

// forward publishes a command on host's subject and acknowledges the
// original once the route stream has stored it.
func (in *Intake) forward(ctx context.Context, m jetstream.Msg, free func(), del handlers.Delivery, host, project, action string, hops int) {
	hdr := nats.Header{}
	for k, v := range m.Headers() {
		switch k {
		case jetstream.MsgIDHeader, HeaderSeq, HeaderMsgID, HeaderHops, HeaderRoutedBy:
		default:
			hdr[k] = v
		}
	}
	hdr.Set(HeaderSeq, strconv.FormatUint(del.StreamSeq, 10))
	if del.MsgID != "" {
		hdr.Set(HeaderMsgID, del.MsgID)
	}
	hdr.Set(HeaderHops, strconv.Itoa(hops))
	hdr.Set(HeaderRoutedBy, in.cfg.Host)
	msg := &nats.Msg{Subject: in.cfg.Topology.Subjects.HostCommand(host, project, action), Header: hdr, Data: m.Data()}
	ctx, cancel := handlers.FinishContext(ctx)
	defer cancel()
	id := fmt.Sprintf("route.%d.%s.%d", del.StreamSeq, host, hops)
	if _, err := in.js.PublishMsg(ctx, msg, jetstream.WithMsgID(id)); err != nil {
		if del.Last() {
			in.log.Warn().Err(err).Str("subject", del.Subject).Str("host", host).Msg("cannot route the command to its host on its last delivery; it is answered with the error")
			del.Refuse = events.Errorf(events.CodeUnavailable, "cannot hand the command to host %s, which runs project %s: %v", host, project, err).
				With("host", host).WithHint("send it again (NATS could not store it for that host)")
			in.handle(ctx, m, free, del)
			return
		}
		in.log.Warn().Err(err).Str("subject", del.Subject).Str("host", host).Msg("cannot route the command to its host; it will be redelivered")
		_ = m.NakWithDelay(time.Second)
		return
	}
	in.log.Debug().Str("subject", del.Subject).Str("host", host).Int("hops", hops).Msg("command routed to its host")
	if err := in.ack(ctx, m); err != nil {
		in.log.Warn().Err(err).Str("subject", del.Subject).Msg("cannot acknowledge a routed command; its redelivery is routed again and dropped as a duplicate")
	}
}
