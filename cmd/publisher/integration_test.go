package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/berth-ops/berth/auth"
	"github.com/berth-ops/berth/events"
	"github.com/berth-ops/berth/internal/testenv"
)

// setupStreams starts a nats-server, with users when given (the worker
// then connects as user "worker", password "worker-pw"), and creates the
// command and event streams as the worker would.
func setupStreams(t *testing.T, users ...*server.User) (*server.Server, *nats.Conn, jetstream.JetStream) {
	t.Helper()
	s := testenv.StartNATS(t, &server.Options{JetStream: true, Users: users})
	var opts []nats.Option
	if len(users) > 0 {
		opts = append(opts, nats.UserInfo("worker", "worker-pw"))
	}
	nc, err := nats.Connect(s.ClientURL(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for _, sc := range []jetstream.StreamConfig{
		{Name: "BERTH_CMD", Subjects: []string{"berth.cmd.>"}, Retention: jetstream.WorkQueuePolicy},
		{Name: "BERTH_EVT", Subjects: []string{"berth.evt.>"}},
	} {
		if _, err := js.CreateStream(ctx, sc); err != nil {
			t.Fatal(err)
		}
	}
	return s, nc, js
}

// received is what the fake worker saw of a command.
type received struct {
	subject string
	msgID   string
	cmd     *events.Command
	header  nats.Header
	data    []byte
}

// fakeWorker consumes one command from BERTH_CMD, checks it and publishes
// the events respond returns for it (request id, project, action and seq
// are filled in) on the request's subjects. It returns a function that
// waits for the worker and returns what it received.
func fakeWorker(t *testing.T, js jetstream.JetStream, respond func(cmd *events.Command) []events.Event) func() received {
	t.Helper()
	return fakeWorkerWith(t, js, fakeOptions{}, respond)
}

// fakeOptions change what fakeWorkerWith does.
type fakeOptions struct {
	// eventSecret, when set, signs every event (auth.Sign), as the
	// worker's --event-secret does.
	eventSecret []byte
	// filter, when set, is the only command subject the worker reads.
	filter string
}

// fakeWorkerWith is fakeWorker with options.
func fakeWorkerWith(t *testing.T, js jetstream.JetStream, opt fakeOptions, respond func(cmd *events.Command) []events.Event) func() received {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	cons, err := js.CreateOrUpdateConsumer(ctx, "BERTH_CMD", jetstream.ConsumerConfig{
		Durable: "fake-worker", AckPolicy: jetstream.AckExplicitPolicy, FilterSubject: opt.filter,
	})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	var got received
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer cancel()
		msg, err := cons.Next(jetstream.FetchContext(ctx))
		if err != nil {
			t.Errorf("fake worker: no command: %v", err)
			return
		}
		got.subject = msg.Subject()
		got.msgID = msg.Headers().Get(jetstream.MsgIDHeader)
		got.header, got.data = msg.Headers(), msg.Data()
		cmd, err := events.DecodeCommand(msg.Data())
		if err != nil {
			t.Errorf("fake worker: bad command body %s: %v", msg.Data(), err)
			msg.Term()
			return
		}
		got.cmd = cmd
		msg.Ack()
		project, action, err := events.NewSubjects("").ParseCommand(msg.Subject())
		if err != nil {
			t.Errorf("fake worker: %v", err)
			return
		}
		subj := events.NewSubjects("")
		for i, ev := range respond(cmd) {
			ev.RequestID, ev.Project, ev.Action, ev.User = cmd.ID, project, action, cmd.User
			ev.Seq = uint64(i + 1)
			ev.TS = events.Timestamp(time.Now())
			body, _ := json.Marshal(ev)
			msg := nats.NewMsg(subj.Event(project, cmd.User, cmd.ID, ev.Kind))
			msg.Data = body
			if opt.eventSecret != nil {
				ts, sig := auth.Sign(opt.eventSecret, time.Now(), msg.Subject, body)
				msg.Header.Set(auth.HeaderTimestamp, ts)
				msg.Header.Set(auth.HeaderSignature, sig)
			}
			if _, err := js.PublishMsg(ctx, msg); err != nil {
				t.Errorf("fake worker: publish %s: %v", ev.Kind, err)
				return
			}
		}
	}()
	return func() received { wg.Wait(); return got }
}

func ptrInt(n int) *int { return &n }

func statusEvents(cmd *events.Command) []events.Event {
	return []events.Event{
		{Kind: events.KindAccepted},
		{Kind: events.KindProgress, Step: "plan", Message: "inspecting containers", Done: ptrInt(1), Total: ptrInt(2)},
		{Kind: events.KindResult, OK: ptr(true), DurationMS: ptr(int64(12)), Data: json.RawMessage(
			`{"project":"po","services":[{"service":"web","container":"po-web-1","state":"running","health":"healthy",` +
				`"uptime_s":75,"restart_count":1,"exit_code":0,"image":"nginx:1.27","ports":["127.0.0.1:49153->8080/tcp"]}],` +
				`"summary":{"running":1,"total":1},"cached":false}`)},
	}
}

// runPublisher runs the command with args against s.
func runPublisher(t *testing.T, s *server.Server, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errw bytes.Buffer
	args = append([]string{"-s", s.ClientURL(), "--user", "test:1"}, args...)
	code = run(t.Context(), args, &out, &errw)
	return code, out.String(), errw.String()
}

func TestRunStatusOK(t *testing.T) {
	s, _, js := setupStreams(t)
	wait := fakeWorker(t, js, statusEvents)
	code, out, errw := runPublisher(t, s, "status", "po", "--id", "req-ok", "--arg", "refresh=true")
	got := wait()

	if code != exitOK {
		t.Fatalf("exit %d, stdout:\n%s\nstderr:\n%s", code, out, errw)
	}
	if got.subject != "berth.cmd.po.status" || !randomMsgID.MatchString(got.msgID) || got.cmd.ID != "req-ok" ||
		got.cmd.User != "test:1" || string(got.cmd.Args) != `{"refresh":true}` || got.cmd.Confirm != "" {
		t.Fatalf("the worker received %+v (cmd %+v, args %s)", got, got.cmd, got.cmd.Args)
	}
	wantOut := "project po\n" +
		"SERVICE  STATE    HEALTH   UPTIME  RESTARTS  IMAGE       PORTS\n" +
		"web      running  healthy  1m      1         nginx:1.27  127.0.0.1:49153->8080/tcp\n" +
		"summary: running=1 total=1\n"
	if out != wantOut {
		t.Fatalf("stdout:\n%s\nwant:\n%s", out, wantOut)
	}
	wantErr := "accepted req-ok\n[plan] inspecting containers (1/2)\nok in 12ms\n"
	if errw != wantErr {
		t.Fatalf("stderr:\n%q\nwant:\n%q", errw, wantErr)
	}
}

func TestRunResultError(t *testing.T) {
	s, _, js := setupStreams(t)
	wait := fakeWorker(t, js, func(cmd *events.Command) []events.Event {
		return []events.Event{
			{Kind: events.KindAccepted},
			{Kind: events.KindResult, OK: ptr(false), Error: &events.Error{
				Code: events.CodeConflict, Message: "po is locked by deploy r0", Hint: "wait for r0 to finish"}},
		}
	})
	code, out, errw := runPublisher(t, s, "restart", "po", "--confirm", "yes")
	got := wait()
	if code != exitFailed {
		t.Fatalf("exit %d, stdout:\n%s\nstderr:\n%s", code, out, errw)
	}
	if got.cmd.Confirm != "yes" || !events.ValidRequestID(got.cmd.ID) || !randomMsgID.MatchString(got.msgID) {
		t.Fatalf("the worker received %+v", got.cmd)
	}
	want := "accepted " + got.cmd.ID + "\nerror: conflict: po is locked by deploy r0\nhint: wait for r0 to finish\n"
	if errw != want || out != "" {
		t.Fatalf("stderr:\n%q\nwant:\n%q\nstdout: %q", errw, want, out)
	}
}

func TestRunTimeout(t *testing.T) {
	s, _, _ := setupStreams(t) // streams, but no worker
	start := time.Now()
	code, out, errw := runPublisher(t, s, "status", "po", "--id", "req-late", "--timeout", "300ms")
	if code != exitUnavailable {
		t.Fatalf("exit %d, stdout:\n%s\nstderr:\n%s", code, out, errw)
	}
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Fatalf("took %v with --timeout 300ms", elapsed)
	}
	want := "no result within 300ms; the worker may be down, or still working: follow with publisher --follow req-late\n" +
		"hint: a command the worker cannot trust (unsigned when it requires signatures, or a signature or key it does not accept) is refused on berth.evt.po.~refused.seq1.result\n"
	if errw != want || out != "" {
		t.Fatalf("stderr %q, want %q; stdout %q", errw, want, out)
	}
}

func TestRunNoStream(t *testing.T) {
	s := testenv.NATS(t) // no streams at all
	code, _, errw := runPublisher(t, s, "status", "po")
	if code != exitUnavailable || !strings.Contains(errw, "no Berth worker stream on this server: start the worker first") {
		t.Fatalf("exit %d, stderr %q", code, errw)
	}
}

func TestRunConnectionError(t *testing.T) {
	var out, errw bytes.Buffer
	code := run(t.Context(), []string{"status", "po", "-s", "nats://127.0.0.1:1", "--user", "test:1"}, &out, &errw)
	if code != exitUnavailable || !strings.Contains(errw.String(), "cannot connect to NATS at nats://127.0.0.1:1") {
		t.Fatalf("exit %d, stderr %q", code, errw.String())
	}
}

func TestRunUsage(t *testing.T) {
	var out, errw bytes.Buffer
	code := run(t.Context(), []string{"stauts", "po"}, &out, &errw)
	if code != exitUsage || !strings.Contains(errw.String(), `unknown action "stauts" (did you mean status?)`) ||
		!strings.Contains(errw.String(), "status, logs, restart, deploy, rollback, start, stop, history") {
		t.Fatalf("exit %d, stderr %q", code, errw.String())
	}
	out.Reset()
	if code := run(t.Context(), []string{"--help"}, &out, &errw); code != exitOK ||
		!strings.Contains(out.String(), "-follow ID") {
		t.Fatalf("--help: exit %d, stdout %q", code, out.String())
	}
}

func TestRunJSON(t *testing.T) {
	s, _, js := setupStreams(t)
	wait := fakeWorker(t, js, statusEvents)
	code, out, errw := runPublisher(t, s, "status", "po", "--json", "--id", "req-json")
	wait()
	if code != exitOK {
		t.Fatalf("exit %d, stdout:\n%s\nstderr:\n%s", code, out, errw)
	}
	if errw != "" {
		t.Fatalf("stderr in --json mode: %q", errw)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	var kinds []string
	for _, l := range lines {
		var ev map[string]any
		if err := json.Unmarshal([]byte(l), &ev); err != nil {
			t.Fatalf("line %q is not a JSON object: %v", l, err)
		}
		if ev["request_id"] != "req-json" {
			t.Fatalf("line %q: request_id", l)
		}
		kinds = append(kinds, fmt.Sprint(ev["kind"]))
	}
	if strings.Join(kinds, ",") != "accepted,progress,result" {
		t.Fatalf("kinds %v in:\n%s", kinds, out)
	}
}

func TestRunFollow(t *testing.T) {
	s, _, js := setupStreams(t)
	wait := fakeWorker(t, js, func(cmd *events.Command) []events.Event {
		return []events.Event{
			{Kind: events.KindAccepted},
			{Kind: events.KindLog, Lines: []events.LogLine{{Stream: "stdout", Line: "one"}, {Stream: "stderr", Line: "two"}}},
			{Kind: events.KindResult, OK: ptr(true), Data: json.RawMessage(`{"service":"web","lines":[],"count":2}`)},
		}
	})
	code, first, _ := runPublisher(t, s, "logs", "po", "--id", "req-f")
	got := wait()
	if code != exitOK || first != "one\nstderr | two\n" {
		t.Fatalf("first run: exit %d, stdout %q", code, first)
	}

	// Replay the finished request from BERTH_EVT, by id alone.
	code, out, errw := runPublisher(t, s, "--follow", "req-f", "--timeout", "10s")
	if code != exitOK {
		t.Fatalf("follow: exit %d, stdout:\n%s\nstderr:\n%s", code, out, errw)
	}
	if out != first || errw != "accepted req-f\nok\n" {
		t.Fatalf("follow: stdout %q stderr %q", out, errw)
	}

	// The request of another user with this id is another request.
	code, _, errw = runPublisher(t, s, "--follow", "req-f", "--user", "test:2", "--timeout", "300ms")
	if code != exitUnavailable || !strings.Contains(errw, "no events for request req-f within 300ms") {
		t.Fatalf("another user: exit %d, stderr %q", code, errw)
	}

	// Sending the same id again is a new message (its Msg-Id is not the
	// request id): it reaches the worker, which answers for the request
	// (the real worker re-publishes the stored result).
	firstMsgID := got.msgID
	wait = fakeWorker(t, js, func(cmd *events.Command) []events.Event {
		return []events.Event{{Kind: events.KindResult, OK: ptr(true), Data: json.RawMessage(`{"service":"web","lines":[{"stream":"stdout","line":"again"}]}`)}}
	})
	code, out, errw = runPublisher(t, s, "logs", "po", "--id", "req-f", "--timeout", "10s")
	again := wait()
	if code != exitOK || out != "again\n" || again.cmd.ID != "req-f" || again.msgID == firstMsgID || !randomMsgID.MatchString(again.msgID) {
		t.Fatalf("same id again: exit %d, stdout %q stderr %q, Msg-Ids %q then %q", code, out, errw, firstMsgID, again.msgID)
	}

	// An unknown id times out with exit 3.
	code, _, errw = runPublisher(t, s, "--follow", "nope", "--timeout", "300ms")
	if code != exitUnavailable || !strings.Contains(errw, "no events for request nope within 300ms") {
		t.Fatalf("unknown: exit %d, stderr %q", code, errw)
	}
}

func TestRunConfirmThenResult(t *testing.T) {
	s, _, js := setupStreams(t)
	respond := func(cmd *events.Command) []events.Event {
		return []events.Event{
			{Kind: events.KindAccepted},
			{Kind: events.KindConfirm, Token: "tok-9", ExpiresAt: events.Timestamp(time.Now().Add(5 * time.Minute)),
				Plan: json.RawMessage(`{"services":["web"],"containers":["po-web-1"],"steps":["lock","stop"]}`)},
			{Kind: events.KindResult, OK: ptr(false), Error: &events.Error{Code: events.CodeConfirmationRequired,
				Message: "stop of po needs confirmation", Hint: "send confirm: tok-9"}},
		}
	}
	code, out, errw := runPublisher(t, s, "po", "stop") // wrong order is a usage error
	if code != exitUsage || !strings.Contains(errw, "publisher stop po") {
		t.Fatalf("swapped args: exit %d, stderr %q", code, errw)
	}
	wait := fakeWorker(t, js, respond)
	code, out, errw = runPublisher(t, s, "stop", "po")
	wait()
	// A plan is not a failure: exit 0, "confirmation required" after it.
	if code != exitOK {
		t.Fatalf("exit %d, stdout:\n%s\nstderr:\n%s", code, out, errw)
	}
	for _, want := range []string{"stop po needs confirmation", "stops:     web", "containers: po-web-1", "token:     tok-9", "expires: ",
		"to confirm, run:\n  publisher stop po --confirm tok-9\n"} {
		if !strings.Contains(out, want) {
			t.Fatalf("stdout lacks %q:\n%s", want, out)
		}
	}
	if !strings.HasSuffix(errw, "confirmation required: stop of po needs confirmation\n") || strings.Contains(errw, "error") {
		t.Fatalf("stderr %q", errw)
	}

	// --strict-exit: exit 10, for scripts that tell a plan from a run.
	wait = fakeWorker(t, js, respond)
	code, _, _ = runPublisher(t, s, "stop", "po", "--strict-exit")
	wait()
	if code != exitConfirm {
		t.Fatalf("--strict-exit: exit %d, want %d", code, exitConfirm)
	}
}

// A command that gets no event while its project's host is down (a fleet
// whose worker of that host does not answer) is shown as waiting, with
// the host and when it was last seen, and the wait goes on.
func TestRunHostDown(t *testing.T) {
	s, nc, _ := setupStreams(t) // streams, no worker taking the command
	defer func(d time.Duration) { stallAfter = d }(stallAfter)
	stallAfter = 100 * time.Millisecond
	msg := "project po runs on host b, whose worker does not answer (last seen 2m5s ago, at 2026-11-27T07:03:22Z)"
	asked := make(chan string, 1)
	sub, err := nc.Subscribe("berth.q.po.config", func(m *nats.Msg) {
		asked <- string(m.Data)
		r := nats.NewMsg(m.Reply)
		r.Header.Set("Nats-Service-Error-Code", "unavailable")
		r.Header.Set("Nats-Service-Error", msg)
		r.Data, _ = json.Marshal(events.Errorf(events.CodeUnavailable, "%s", msg).With("host", "b"))
		_ = nc.PublishMsg(r)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	code, out, errw := runPublisher(t, s, "status", "po", "--id", "req-waits", "--user", "cli:ann", "--timeout", "1s")
	if code != exitUnavailable || out != "" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errw)
	}
	if q := <-asked; !strings.Contains(q, `"user":"cli:ann"`) {
		t.Fatalf("query %s", q)
	}
	want := "waiting: " + msg + "; the command waits in the stream and runs when that worker is back (Ctrl-C leaves it queued)\n"
	if !strings.HasPrefix(errw, want) || !strings.Contains(errw, "no result within 1s") {
		t.Fatalf("stderr %q, want it to begin with %q", errw, want)
	}
}
