package natsbus_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/berth-ops/berth/events"
	"github.com/berth-ops/berth/internal/testenv"
	"github.com/berth-ops/berth/natsbus"
)

// The permission sets of docs/security.md, for project alpha.
var (
	// botAPerms is the minimal bot: send commands of project alpha and
	// watch their events live.
	botAPerms = &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: []string{"berth.cmd.alpha.>"}},
		Subscribe: &server.SubjectPermission{Allow: []string{"berth.evt.alpha.>", "_INBOX.>"}},
	}
	// botFollowPerms adds what --follow needs (replay from BERTH_EVT),
	// and a private inbox prefix instead of _INBOX.>.
	botFollowPerms = &server.Permissions{
		Publish: &server.SubjectPermission{Allow: []string{
			"berth.cmd.alpha.>",
			"$JS.API.STREAM.NAMES",
			"$JS.API.CONSUMER.CREATE.BERTH_EVT.*.berth.evt.alpha.>",
			"$JS.API.CONSUMER.MSG.NEXT.BERTH_EVT.*",
			"$JS.API.CONSUMER.INFO.BERTH_EVT.*",
			"$JS.API.CONSUMER.DELETE.BERTH_EVT.*",
		}},
		Subscribe: &server.SubjectPermission{Allow: []string{"berth.evt.alpha.>", "_INBOX_bot_f.>"}},
	}
	// workerPerms is the worker's documented set: the deny list keeps a
	// command's reply_to from making the worker delete or purge.
	workerPerms = &server.Permissions{
		Publish: &server.SubjectPermission{
			Allow: []string{"berth.evt.>", "berth.audit.>", "$JS.API.>", "$JS.ACK.>"},
			Deny: []string{"$JS.API.STREAM.DELETE.>", "$JS.API.STREAM.PURGE.>", "$JS.API.STREAM.MSG.DELETE.>",
				"$JS.API.CONSUMER.DELETE.>"},
		},
		Subscribe: &server.SubjectPermission{Allow: []string{"berth.cmd.>", "_INBOX.>"}},
	}
)

// securedNATS starts an in-process nats-server with JetStream and these
// users (password = user name + "-pw"): "worker" may do everything,
// "worker-limited" has the documented worker permissions, "bot-a" the
// minimal bot's, "bot-f" those of a bot that also follows.
func securedNATS(t *testing.T) *server.Server {
	t.Helper()
	users := []*server.User{
		{Username: "worker", Password: "worker-pw"},
		{Username: "worker-limited", Password: "worker-limited-pw", Permissions: workerPerms},
		{Username: "bot-a", Password: "bot-a-pw", Permissions: botAPerms},
		{Username: "bot-f", Password: "bot-f-pw", Permissions: botFollowPerms},
	}
	return testenv.StartNATS(t, &server.Options{JetStream: true, Users: users})
}

// conn is a connection whose asynchronous errors are collected.
type conn struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	errs chan error
}

func connectAs(t *testing.T, s *server.Server, user string, opts ...nats.Option) *conn {
	t.Helper()
	c := &conn{errs: make(chan error, 64)}
	opts = append([]nats.Option{
		nats.UserInfo(user, user+"-pw"),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case c.errs <- err:
			default:
			}
		}),
	}, opts...)
	nc, err := nats.Connect(s.ClientURL(), opts...)
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	t.Cleanup(nc.Close)
	c.nc = nc
	if c.js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	return c
}

// wantViolation waits a few seconds for a permissions violation naming
// what (such as `Publish to "berth.cmd.beta.status"`).
func (c *conn) wantViolation(t *testing.T, what string) {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case err := <-c.errs:
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), what) {
				return
			}
			t.Logf("other asynchronous error: %v", err)
		case <-timeout:
			t.Fatalf("no permissions violation for %s within 5s", what)
		}
	}
}

// noErrors fails when an asynchronous error arrived.
func (c *conn) noErrors(t *testing.T, who string) {
	t.Helper()
	if err := c.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-c.errs:
		t.Fatalf("%s: asynchronous error: %v", who, err)
	case <-time.After(200 * time.Millisecond):
	}
}

func streamMsgs(t *testing.T, js jetstream.JetStream, stream string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func TestPermissionsConfineBot(t *testing.T) {
	s := securedNATS(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	worker := connectAs(t, s, "worker")
	if _, err := worker.js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "BERTH_CMD", Subjects: []string{"berth.cmd.>"}, Retention: jetstream.WorkQueuePolicy,
	}); err != nil {
		t.Fatal(err)
	}
	bot := connectAs(t, s, "bot-a")

	// Its own project: stored, and acknowledged (the PubAck comes back on
	// the bot's _INBOX).
	if _, err := bot.js.Publish(ctx, "berth.cmd.alpha.status", []byte(`{"user":"bot:a"}`)); err != nil {
		t.Fatalf("bot-a publish on berth.cmd.alpha.status: %v", err)
	}
	if n := streamMsgs(t, worker.js, "BERTH_CMD"); n != 1 {
		t.Fatalf("BERTH_CMD holds %d messages after bot-a's command for alpha, want 1", n)
	}
	bot.noErrors(t, "bot-a on its own project")

	// Another project: dropped by the server, with a violation.
	pctx, pcancel := context.WithTimeout(ctx, time.Second)
	_, err := bot.js.Publish(pctx, "berth.cmd.beta.status", []byte(`{"user":"bot:a"}`))
	pcancel()
	if err == nil {
		t.Fatal("bot-a's publish on berth.cmd.beta.status was acknowledged")
	}
	bot.wantViolation(t, `Publish to "berth.cmd.beta.status"`)
	if err := bot.nc.Publish("berth.cmd.beta.deploy", []byte(`{"user":"bot:a","confirm":"yes"}`)); err != nil {
		t.Fatal(err) // a core publish fails only asynchronously
	}
	bot.wantViolation(t, `Publish to "berth.cmd.beta.deploy"`)
	if n := streamMsgs(t, worker.js, "BERTH_CMD"); n != 1 {
		t.Fatalf("BERTH_CMD holds %d messages after bot-a's commands for beta, want still 1", n)
	}

	// Events: its own project's arrive, another's cannot be subscribed to.
	own, err := bot.nc.SubscribeSync("berth.evt.alpha.>")
	if err != nil {
		t.Fatal(err)
	}
	other, err := bot.nc.SubscribeSync("berth.evt.beta.>")
	if err != nil {
		t.Fatal(err) // refused asynchronously
	}
	bot.wantViolation(t, `Subscription to "berth.evt.beta.>"`)
	for _, subj := range []string{"berth.evt.beta.r1.result", "berth.evt.alpha.r1.result"} {
		if err := worker.nc.Publish(subj, []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	if err := worker.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if m, err := own.NextMsg(5 * time.Second); err != nil || m.Subject != "berth.evt.alpha.r1.result" {
		t.Fatalf("bot-a's own events: %v, %v", m, err)
	}
	if m, err := other.NextMsg(300 * time.Millisecond); err == nil {
		t.Fatalf("bot-a received %s", m.Subject)
	}
	// Nor can it reach the audit records or the JetStream API.
	if _, err := bot.nc.SubscribeSync("berth.audit.>"); err != nil {
		t.Fatal(err)
	}
	bot.wantViolation(t, `Subscription to "berth.audit.>"`)
	sctx, scancel := context.WithTimeout(ctx, time.Second)
	_, err = bot.js.Stream(sctx, "BERTH_CMD")
	scancel()
	if err == nil {
		t.Fatal("bot-a read the stream info of BERTH_CMD")
	}
	bot.wantViolation(t, `Publish to "$JS.API.STREAM.INFO.BERTH_CMD"`)
}

// TestPermissionsFollowAndPrivateInbox checks the permissions of a bot
// that replays events (--follow): it may create an ordered consumer on
// BERTH_EVT filtered to its projects, and no other; with a private inbox
// prefix, it needs no _INBOX.> at all.
func TestPermissionsFollowAndPrivateInbox(t *testing.T) {
	s := securedNATS(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	worker := connectAs(t, s, "worker")
	for _, sc := range []jetstream.StreamConfig{
		{Name: "BERTH_CMD", Subjects: []string{"berth.cmd.>"}, Retention: jetstream.WorkQueuePolicy},
		{Name: "BERTH_EVT", Subjects: []string{"berth.evt.>"}},
	} {
		if _, err := worker.js.CreateStream(ctx, sc); err != nil {
			t.Fatal(err)
		}
	}
	for _, subj := range []string{"berth.evt.alpha.r1.accepted", "berth.evt.beta.r2.accepted", "berth.evt.alpha.r1.result"} {
		if _, err := worker.js.Publish(ctx, subj, []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}

	bot := connectAs(t, s, "bot-f", nats.CustomInboxPrefix("_INBOX_bot_f"))
	if _, err := bot.js.Publish(ctx, "berth.cmd.alpha.status", []byte(`{"user":"bot:f"}`)); err != nil {
		t.Fatalf("publish with a private inbox: %v", err)
	}
	name, err := bot.js.StreamNameBySubject(ctx, "berth.evt.>")
	if err != nil || name != "BERTH_EVT" {
		t.Fatalf("stream by subject: %q, %v", name, err)
	}
	oc, err := bot.js.OrderedConsumer(ctx, "BERTH_EVT", jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{"berth.evt.alpha.r1.>"}, DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		t.Fatalf("ordered consumer on alpha: %v", err)
	}
	for _, want := range []string{"berth.evt.alpha.r1.accepted", "berth.evt.alpha.r1.result"} {
		m, err := oc.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil || m.Subject() != want {
			t.Fatalf("replay: %v, %v; want %s", m, err, want)
		}
	}
	bot.noErrors(t, "bot-f following alpha")

	// A consumer on another project's events is refused by permissions...
	cctx, ccancel := context.WithTimeout(ctx, time.Second)
	_, err = bot.js.OrderedConsumer(cctx, "BERTH_EVT", jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{"berth.evt.beta.>"},
	})
	ccancel()
	if err == nil {
		t.Fatal("bot-f created a consumer on beta's events")
	}
	bot.wantViolation(t, `Publish to "$JS.API.CONSUMER.CREATE.BERTH_EVT.`)
	// ...and one whose body asks for other events than its subject names
	// is refused by the server.
	_, err = bot.nc.Request("$JS.API.CONSUMER.CREATE.BERTH_EVT.sneaky.berth.evt.alpha.>",
		[]byte(`{"stream_name":"BERTH_EVT","config":{"name":"sneaky","filter_subject":"berth.evt.beta.>","ack_policy":"none"}}`), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := worker.js.Consumer(ctx, "BERTH_EVT", "sneaky"); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Fatalf("a consumer with a mismatched filter: %v", err)
	}
	// Several filters in the body (which the subject cannot name) too.
	_, err = bot.nc.Request("$JS.API.CONSUMER.CREATE.BERTH_EVT.sneaky2.berth.evt.alpha.>",
		[]byte(`{"stream_name":"BERTH_EVT","config":{"name":"sneaky2","filter_subjects":["berth.evt.alpha.>","berth.evt.beta.>"],"ack_policy":"none"}}`), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := worker.js.Consumer(ctx, "BERTH_EVT", "sneaky2"); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Fatalf("a consumer with two filters: %v", err)
	}

	// The shared inbox namespace is not open to it.
	if _, err := bot.nc.SubscribeSync("_INBOX.>"); err != nil {
		t.Fatal(err)
	}
	bot.wantViolation(t, `Subscription to "_INBOX.>"`)
}

// TestPermissionsWorker runs the worker's side of the bus (declare the
// topology, take a command, acknowledge it, publish an event and an audit
// record) with the worker's documented permissions, and expects no
// violation.
func TestPermissionsWorker(t *testing.T) {
	s := securedNATS(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	w := connectAs(t, s, "worker-limited")
	subjects := events.NewSubjects("")
	fast, _, err := natsbus.DefaultTopology(subjects).Declare(ctx, w.js)
	if err != nil {
		t.Fatalf("declare the topology with the worker's permissions: %v", err)
	}
	unknown, err := w.nc.QueueSubscribeSync(subjects.AllCommands(), "berth-unknown-actions")
	if err != nil {
		t.Fatal(err)
	}
	// The subscription must reach the server before the bot publishes.
	if err := w.nc.Flush(); err != nil {
		t.Fatal(err)
	}

	bot := connectAs(t, s, "bot-a")
	if _, err := bot.js.Publish(ctx, "berth.cmd.alpha.status", []byte(`{"user":"bot:a","id":"r1"}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := unknown.NextMsg(5 * time.Second); err != nil {
		t.Fatalf("core subscription on %s: %v", subjects.AllCommands(), err)
	}
	msg, err := fast.Next(jetstream.FetchMaxWait(5 * time.Second))
	if err != nil {
		t.Fatalf("fetch the command: %v", err)
	}
	if err := msg.InProgress(); err != nil {
		t.Fatal(err)
	}
	if err := msg.DoubleAck(ctx); err != nil {
		t.Fatalf("ack the command: %v", err)
	}
	em := natsbus.NewEmitter(w.nc, w.js, nil)
	if err := em.Emit(ctx, subjects.Event("alpha", "worker:test", "r1", events.KindResult), "r1.result.1", []byte(`{}`), true); err != nil {
		t.Fatalf("emit an event: %v", err)
	}
	if err := em.Emit(ctx, subjects.Event("alpha", "worker:test", "r1", events.KindProgress), "r1.progress.2", []byte(`{}`), false); err != nil {
		t.Fatalf("emit an event asynchronously: %v", err)
	}
	select {
	case <-w.js.PublishAsyncComplete():
	case <-time.After(5 * time.Second):
		t.Fatal("asynchronous event not acknowledged")
	}
	if _, err := w.js.Publish(ctx, subjects.Audit("alpha", "status"), []byte(`{}`)); err != nil {
		t.Fatalf("publish an audit record: %v", err)
	}
	w.noErrors(t, "worker-limited")

	// A reply_to outside its publish permissions is dropped and logged.
	if err := em.Reply(ctx, "berth.cmd.beta.deploy", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	w.wantViolation(t, `Publish to "berth.cmd.beta.deploy"`)
	if err := em.Reply(ctx, "$JS.API.STREAM.PURGE.BERTH_EVT", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	w.wantViolation(t, `Publish to "$JS.API.STREAM.PURGE.BERTH_EVT"`)
	if n := streamMsgs(t, w.js, "BERTH_EVT"); n != 2 {
		t.Fatalf("BERTH_EVT holds %d events, want 2", n)
	}
}

// TestPermissionsDocumentedConfig starts a nats-server from the
// configuration in docs/security.md and checks what it promises.
func TestPermissionsDocumentedConfig(t *testing.T) {
	testenv.Integration(t)
	doc, err := os.ReadFile(filepath.Join("..", "docs", "security.md"))
	if err != nil {
		t.Fatal(err)
	}
	const marker = "<!-- nats-server.conf:"
	_, rest, ok := strings.Cut(string(doc), marker)
	if !ok {
		t.Fatalf("docs/security.md has no %q block", marker)
	}
	_, rest, ok = strings.Cut(rest, "```conf\n")
	conf, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		t.Fatal("no ```conf block after the marker in docs/security.md")
	}
	conf = strings.Replace(conf, "store_dir: /var/lib/nats", "store_dir: "+strconv.Quote(t.TempDir()), 1)
	path := filepath.Join(t.TempDir(), "nats-server.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"BERTH_WORKER_PASSWORD", "TELEGRAM_BOT_PASSWORD", "DASHBOARD_PASSWORD", "OPS_PASSWORD", "SYS_PASSWORD"} {
		t.Setenv(v, strings.ToLower(v))
	}
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("the documented configuration does not load: %v", err)
	}
	s := testenv.StartNATS(t, opts)
	login := func(user string, opts ...nats.Option) *conn {
		pw := map[string]string{"berth-worker": "berth_worker_password", "telegram-bot": "telegram_bot_password",
			"dashboard": "dashboard_password", "ops": "ops_password"}[user]
		return connectAs(t, s, user, append([]nats.Option{nats.UserInfo(user, pw)}, opts...)...)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	// The worker declares everything and serves, without a violation.
	w := login("berth-worker")
	subjects := events.NewSubjects("")
	fast, _, err := natsbus.DefaultTopology(subjects).Declare(ctx, w.js)
	if err != nil {
		t.Fatalf("the worker cannot declare its topology: %v", err)
	}
	if _, err := w.nc.QueueSubscribeSync(subjects.AllCommands(), "berth-unknown-actions"); err != nil {
		t.Fatal(err)
	}
	w.noErrors(t, "berth-worker")

	// The telegram bot: alpha and beta, with its inbox prefix.
	bot := login("telegram-bot", nats.CustomInboxPrefix("_INBOX_telegram"))
	for _, p := range []string{"alpha", "beta"} {
		if _, err := bot.js.Publish(ctx, "berth.cmd."+p+".status", []byte(`{"user":"telegram:1"}`)); err != nil {
			t.Fatalf("telegram-bot, %s: %v", p, err)
		}
	}
	bot.noErrors(t, "telegram-bot on its projects")
	if err := bot.nc.Publish("berth.cmd.gamma.deploy", []byte(`{"user":"telegram:1"}`)); err != nil {
		t.Fatal(err)
	}
	bot.wantViolation(t, `Publish to "berth.cmd.gamma.deploy"`)
	// Events are the worker's to publish: a bot cannot forge a result, even
	// of its own project's requests.
	if err := bot.nc.Publish("berth.evt.alpha.telegram:1.r1.result", []byte(`{"ok":true}`)); err != nil {
		t.Fatal(err)
	}
	bot.wantViolation(t, `Publish to "berth.evt.alpha.telegram:1.r1.result"`)
	for range 2 {
		msg, err := fast.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatalf("the worker's fast lane: %v", err)
		}
		if err := msg.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := w.js.Publish(ctx, "berth.evt."+strings.Split(msg.Subject(), ".")[2]+".r1.result", []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	w.noErrors(t, "berth-worker serving")
	oc, err := bot.js.OrderedConsumer(ctx, "BERTH_EVT", jetstream.OrderedConsumerConfig{FilterSubjects: []string{"berth.evt.beta.r1.>"}})
	if err != nil {
		t.Fatalf("telegram-bot, follow beta: %v", err)
	}
	if m, err := oc.Next(jetstream.FetchMaxWait(5 * time.Second)); err != nil || m.Subject() != "berth.evt.beta.r1.result" {
		t.Fatalf("telegram-bot, replay beta: %v, %v", m, err)
	}
	bot.noErrors(t, "telegram-bot following beta")
	if _, err := bot.nc.SubscribeSync("berth.audit.>"); err != nil {
		t.Fatal(err)
	}
	bot.wantViolation(t, `Subscription to "berth.audit.>"`)

	// The dashboard reads status, and cannot deploy.
	dash := login("dashboard", nats.CustomInboxPrefix("_INBOX_dashboard"))
	if _, err := dash.js.Publish(ctx, "berth.cmd.alpha.status", []byte(`{"user":"dash:1"}`)); err != nil {
		t.Fatalf("dashboard status: %v", err)
	}
	if err := dash.nc.Publish("berth.cmd.alpha.deploy", []byte(`{"user":"dash:1","confirm":"yes"}`)); err != nil {
		t.Fatal(err)
	}
	dash.wantViolation(t, `Publish to "berth.cmd.alpha.deploy"`)

	// ops may look at anything in the account.
	ops := login("ops")
	if _, err := ops.js.Stream(ctx, "BERTH_AUDIT"); err != nil {
		t.Fatalf("ops: %v", err)
	}
}
