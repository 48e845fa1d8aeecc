// Command echo is the floor of benchmark row P7: a worker that does only
// what Berth's worker does on the wire for a read-only command, and
// nothing else. It declares the same topology under its own names
// (natsbus.Topology: the ECHO_CMD work queue, the ECHO_EVT event stream,
// the echo-fast pull consumer), pulls from the fast consumer the way the
// intake's fast lane does (up to --slots messages at once, one batch
// request, a goroutine each), and for every command publishes an accepted
// event asynchronously and a result event waiting for its PubAck, both
// through natsbus.Emitter with their Nats-Msg-Id, then acknowledges the
// command with DoubleAck. It reads neither Redis nor the command's body:
// the request id is the message's Nats-Msg-Id, the user is --user.
//
// The benchmark builds it and runs it as a process of its own, like the
// worker; it prints "echo ready" once it pulls.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/berth-ops/berth/events"
	"github.com/berth-ops/berth/natsbus"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "echo:", err)
		os.Exit(1)
	}
}

type config struct {
	url, prefix, user          string
	slots                      int
	acceptedBytes, resultBytes int
}

func run() error {
	var c config
	flag.StringVar(&c.url, "nats-url", nats.DefaultURL, "NATS server")
	flag.StringVar(&c.prefix, "prefix", "echo", "subject prefix (commands on <prefix>.cmd.>, events on <prefix>.evt.>)")
	flag.StringVar(&c.user, "user", "bench:admin", "the user of every event")
	flag.IntVar(&c.slots, "slots", 32, "commands worked on at once (the worker's fast slots)")
	flag.IntVar(&c.acceptedBytes, "accepted-bytes", 200, "size of an accepted event")
	flag.IntVar(&c.resultBytes, "result-bytes", 1000, "size of a result event")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	nc, err := nats.Connect(c.url, nats.Name("berth-bench-echo"))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	topo := natsbus.DefaultTopology(events.NewSubjects(c.prefix))
	topo.CommandStream, topo.EventStream, topo.AuditStream = "ECHO_CMD", "ECHO_EVT", "ECHO_AUDIT"
	topo.FastConsumer, topo.SlowConsumer = "echo-fast", "echo-slow"
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	fast, _, err := topo.Declare(dctx, js)
	cancel()
	if err != nil {
		return err
	}
	e := &echo{cfg: c, subj: topo.Subjects, em: natsbus.NewEmitter(nc, js, nil)}
	fmt.Println("echo ready")
	return e.lane(ctx, fast)
}

type echo struct {
	cfg  config
	subj events.Subjects
	em   *natsbus.Emitter
}

// lane is the intake's fast lane: take as many free slots as there are,
// pull that many messages in one request, work on each in a goroutine.
func (e *echo) lane(ctx context.Context, c jetstream.Consumer) error {
	sem := make(chan struct{}, e.cfg.slots)
	var work sync.WaitGroup
	defer work.Wait()
	for {
		select {
		case <-ctx.Done():
			return nil
		case sem <- struct{}{}:
		}
		n := 1
	more:
		for n < e.cfg.slots {
			select {
			case sem <- struct{}{}:
				n++
			default:
				break more
			}
		}
		fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		msgs, err := c.Fetch(n, jetstream.FetchContext(fctx))
		if err != nil {
			cancel()
			release(sem, n)
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		got := 0
		for m := range msgs.Messages() {
			got++
			work.Go(func() {
				defer release(sem, 1)
				if err := e.handle(ctx, m); err != nil {
					fmt.Fprintln(os.Stderr, "echo:", err)
				}
			})
		}
		cancel()
		release(sem, n-got)
	}
}

// handle answers one command: accepted (asynchronous), result (stored
// before it returns), ack (confirmed by the server).
func (e *echo) handle(ctx context.Context, m jetstream.Msg) error {
	project, action, err := e.subj.ParseCommand(m.Subject())
	if err != nil {
		return err
	}
	id := m.Headers().Get(jetstream.MsgIDHeader)
	user := events.UserToken(e.cfg.user)
	for _, ev := range []struct {
		kind  events.Kind
		seq   int
		size  int
		await bool
	}{{events.KindAccepted, 1, e.cfg.acceptedBytes, false}, {events.KindResult, 2, e.cfg.resultBytes, true}} {
		body := eventBody(id, project, action, e.cfg.user, ev.kind, ev.seq, ev.size)
		msgID := user + "." + id + "." + string(ev.kind) + "." + strconv.Itoa(ev.seq)
		if err := e.em.Emit(ctx, e.subj.Event(project, e.cfg.user, id, ev.kind), msgID, body, ev.await); err != nil {
			return err
		}
	}
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return m.DoubleAck(actx)
}

// eventBody is a JSON event of size bytes (or its envelope, when that is
// longer): the envelope, and padding in a result's data or in an other
// event's message.
func eventBody(id, project, action, user string, kind events.Kind, seq, size int) []byte {
	b := fmt.Appendf(make([]byte, 0, size+32), `{"request_id":%q,"project":%q,"action":%q,"kind":%q,"seq":%d,"ts":%q,"user":%q`,
		id, project, action, kind, seq, time.Now().UTC().Format(time.RFC3339Nano), user)
	if kind == events.KindResult {
		b = append(b, `,"ok":true,"data":{"pad":"`...)
		b = append(b, bytes.Repeat([]byte{'x'}, max(0, size-len(b)-3))...)
		return append(b, `"}}`...)
	}
	b = append(b, `,"message":"`...)
	b = append(b, bytes.Repeat([]byte{'x'}, max(0, size-len(b)-2))...)
	return append(b, `"}`...)
}

func release(sem chan struct{}, n int) {
	for range n {
		<-sem
	}
}
