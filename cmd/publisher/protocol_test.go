package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/berth-ops/berth/auth"
	"github.com/berth-ops/berth/events"
	"github.com/berth-ops/berth/internal/testenv"
)

// randomMsgID is the Nats-Msg-Id of an unsigned command.
var randomMsgID = regexp.MustCompile(`^r-[0-9a-f]{32}$`)

const testEventSecret = "the-worker-event-secret-0123456789"

func TestMsgID(t *testing.T) {
	a, b := msgID(nats.Header{}), msgID(nats.Header{})
	if !randomMsgID.MatchString(a) || !randomMsgID.MatchString(b) || a == b {
		t.Fatalf("unsigned Msg-Ids %q, %q", a, b)
	}
	h := nats.Header{}
	h.Set(auth.HeaderSignature, "v1=00ff")
	sum := sha256.Sum256([]byte("v1=00ff"))
	want := "s-" + hex.EncodeToString(sum[:])[:32]
	if got := msgID(h); got != want || msgID(h) != got {
		t.Fatalf("signed Msg-Id %q, want %q", got, want)
	}
}

// The command's message: its request id in the body, never as its
// Msg-Id; signed, the Msg-Id follows from the signature, and the key id
// goes with it.
func TestCommandMsg(t *testing.T) {
	cmd := &events.Command{ID: "guessable", User: "cli:ann"}
	c := &client{subj: events.NewSubjects("")}
	m, err := c.commandMsg("po", "status", cmd)
	if err != nil {
		t.Fatal(err)
	}
	if m.Subject != "berth.cmd.po.status" || !randomMsgID.MatchString(m.Header.Get(jetstream.MsgIDHeader)) ||
		m.Header.Get(auth.HeaderSignature) != "" || !strings.Contains(string(m.Data), `"id":"guessable"`) {
		t.Fatalf("unsigned: %s %v %s", m.Subject, m.Header, m.Data)
	}

	now := time.Unix(1_800_000_000, 0)
	c = &client{subj: events.NewSubjects(""), signSecret: []byte(testSignSecret), signKeyID: "alice-laptop", now: func() time.Time { return now }}
	m, err = c.commandMsg("po", "deploy", cmd)
	if err != nil {
		t.Fatal(err)
	}
	sig := m.Header.Get(auth.HeaderSignature)
	sum := sha256.Sum256([]byte(sig))
	if got := m.Header.Get(jetstream.MsgIDHeader); got != "s-"+hex.EncodeToString(sum[:16]) {
		t.Fatalf("signed Msg-Id %q for signature %q", got, sig)
	}
	if m.Header.Get(auth.HeaderKey) != "alice-laptop" {
		t.Fatalf("no Berth-Key: %v", m.Header)
	}
	// The worker's verifier takes it with the key of that id, and only
	// for the users and projects of the key.
	v := &auth.Verifier{Keys: []auth.Key{
		{ID: "bob", Secret: []byte("bobs-secret-0123456789"), Users: []string{"*"}},
		{ID: "alice-laptop", Secret: []byte(testSignSecret), Users: []string{"cli:ann"}, Projects: []string{"po"}},
	}, Now: func() time.Time { return now }}
	signed, err := v.Verify(m.Subject, m.Header, m.Data)
	if err != nil || signed.Key.ID != "alice-laptop" || signed.Key.Allows(cmd.User, "po") != nil {
		t.Fatalf("the worker refuses the key: %+v, %v", signed, err)
	}
}

// flakyJS is a JetStream whose PublishMsg gives the results of results
// in turn, and records what it was given.
type flakyJS struct {
	jetstream.JetStream
	results []func() (*jetstream.PubAck, error)
	got     []nats.Header
}

func (f *flakyJS) PublishMsg(_ context.Context, m *nats.Msg, _ ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	h := nats.Header{}
	for k, v := range m.Header {
		h[k] = append([]string(nil), v...)
	}
	f.got = append(f.got, h)
	r := f.results[0]
	f.results = f.results[1:]
	return r()
}

// A publication whose PubAck is lost is repeated as the same message:
// the same Msg-Id and signature, so the stream keeps one. Its duplicate
// PubAck means the first one landed: the events are awaited live.
func TestPublishRetriesTheSameMessage(t *testing.T) {
	s := testenv.NATS(t)
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	lost := func() (*jetstream.PubAck, error) { return nil, context.DeadlineExceeded }
	for _, signed := range []bool{false, true} {
		js := &flakyJS{results: []func() (*jetstream.PubAck, error){lost, func() (*jetstream.PubAck, error) {
			return &jetstream.PubAck{Stream: "BERTH_CMD", Sequence: 7, Duplicate: true}, nil
		}}}
		c := &client{nc: nc, js: js, subj: events.NewSubjects("")}
		if signed {
			c.signSecret = []byte(testSignSecret)
		}
		var errw bytes.Buffer
		src, seq, err := c.send(t.Context(), "po", "status", &events.Command{ID: "r1", User: "cli:ann"}, &errw)
		if err != nil {
			t.Fatal(err)
		}
		if _, live := src.(*subSource); !live || seq != 7 || errw.Len() != 0 {
			t.Fatalf("signed %v: source %T, seq %d, stderr %q", signed, src, seq, errw.String())
		}
		if got := src.(*subSource).sub.Subject; got != "berth.evt.po.cli:ann.r1.>" {
			t.Fatalf("subscribed to %s", got)
		}
		src.Close()
		if len(js.got) != 2 || !equalHeader(js.got[0], js.got[1]) {
			t.Fatalf("signed %v: the two publications differ: %v", signed, js.got)
		}
	}

	// No PubAck at all: as many attempts as allowed, then the error.
	js := &flakyJS{results: []func() (*jetstream.PubAck, error){lost, lost}}
	c := &client{nc: nc, js: js, subj: events.NewSubjects(""), publishAttempts: 2}
	_, _, err = c.send(t.Context(), "po", "status", &events.Command{ID: "r2", User: "cli:ann"}, &bytes.Buffer{})
	if !errors.Is(err, context.DeadlineExceeded) || len(js.got) != 2 {
		t.Fatalf("err %v after %d attempts", err, len(js.got))
	}
}

func equalHeader(a, b nats.Header) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return bytes.Equal(ja, jb)
}

// readUntilResult reads events from src until a result, and returns
// their kinds.
func readUntilResult(t *testing.T, src eventSource) []string {
	t.Helper()
	var kinds []string
	for {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		m, err := src.Next(ctx)
		cancel()
		if err != nil {
			t.Fatalf("after %v: %v", kinds, err)
		}
		var ev events.Event
		if err := json.Unmarshal(m.data, &ev); err != nil {
			t.Fatal(err)
		}
		kinds = append(kinds, string(ev.Kind))
		if ev.Kind == events.KindResult {
			return kinds
		}
	}
}

// The very same signed command (same body, same second) is the same
// message: the stream drops it, and its events are replayed.
func TestSendSameSignedCommandReplays(t *testing.T) {
	s, _, js := setupStreams(t)
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	c := newClient(nc, events.NewSubjects(""))
	c.signSecret = []byte(testSignSecret)
	now := time.Now()
	c.now = func() time.Time { return now }
	cmd := &events.Command{ID: "same-1", User: "test:1"}

	wait := fakeWorker(t, js, statusEvents)
	var errw bytes.Buffer
	src, seq, err := c.send(t.Context(), "po", "status", cmd, &errw)
	if err != nil || seq == 0 {
		t.Fatalf("seq %d, %v", seq, err)
	}
	first := readUntilResult(t, src)
	src.Close()
	wait()

	src, seq, err = c.send(t.Context(), "po", "status", cmd, &errw)
	if err != nil || seq != 0 || !strings.Contains(errw.String(), "request same-1 was sent before; replaying its events") {
		t.Fatalf("again: seq %d, %v, stderr %q", seq, err, errw.String())
	}
	defer src.Close()
	if again := readUntilResult(t, src); strings.Join(again, ",") != strings.Join(first, ",") {
		t.Fatalf("replayed %v, first %v", again, first)
	}
}

// A stranger who publishes first with the request id as Nats-Msg-Id (on
// any subject of the command stream) no longer makes the stream drop the
// real command.
func TestStrangerCannotPreemptTheRequestID(t *testing.T) {
	s, _, js := setupStreams(t)
	stranger := nats.NewMsg("berth.cmd.other.status")
	stranger.Header.Set(jetstream.MsgIDHeader, "req-x")
	stranger.Data = []byte(`{"id":"req-x","user":"evil:1"}`)
	if _, err := js.PublishMsg(t.Context(), stranger); err != nil {
		t.Fatal(err)
	}
	wait := fakeWorkerWith(t, js, fakeOptions{filter: "berth.cmd.po.>"}, statusEvents)
	code, out, errw := runPublisher(t, s, "status", "po", "--id", "req-x", "--timeout", "10s")
	got := wait()
	if code != exitOK || got.cmd.User != "test:1" || !randomMsgID.MatchString(got.msgID) {
		t.Fatalf("exit %d, the worker received %+v\nstdout:\n%s\nstderr:\n%s", code, got, out, errw)
	}
}

func TestParseArgsSignKeyIDAndEventSecret(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "evt")
	if err := os.WriteFile(file, []byte(testEventSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	o, err := parseArgs([]string{"status", "po", "--sign-secret", testSignSecret, "--sign-key-id", "alice-laptop"}, env(nil))
	if err != nil || o.signKeyID != "alice-laptop" || string(o.signSecret) != testSignSecret || o.eventSecrets != nil {
		t.Fatalf("flag: %+v, %v", o, err)
	}
	o, err = parseArgs([]string{"status", "po"}, env(map[string]string{"BERTH_SIGN_SECRET": testSignSecret, "BERTH_SIGN_KEY_ID": "bot:1"}))
	if err != nil || o.signKeyID != "bot:1" {
		t.Fatalf("env: %+v, %v", o, err)
	}
	for _, c := range []struct {
		args []string
		env  map[string]string
		want []string
	}{
		{[]string{"--event-secret", testEventSecret}, nil, []string{testEventSecret}},
		{nil, map[string]string{"BERTH_EVENT_SECRET": testEventSecret + ",another-event-secret-0123"}, []string{testEventSecret, "another-event-secret-0123"}},
		{[]string{"--event-secret-file", file}, nil, []string{testEventSecret}},
		{nil, map[string]string{"BERTH_EVENT_SECRET_FILE": file}, []string{testEventSecret}},
	} {
		o, err := parseArgs(append([]string{"status", "po"}, c.args...), env(c.env))
		if err != nil || len(o.eventSecrets) != len(c.want) {
			t.Fatalf("%v %v: %+v, %v", c.args, c.env, o, err)
		}
		for i, w := range c.want {
			if string(o.eventSecrets[i]) != w {
				t.Fatalf("%v %v: secret %d is %q", c.args, c.env, i, o.eventSecrets[i])
			}
		}
	}

	for name, c := range map[string]struct {
		args []string
		env  map[string]string
		want string
	}{
		"key id without a secret": {[]string{"--sign-key-id", "alice"}, nil, "give the secret too"},
		"key id from env alone":   {nil, map[string]string{"BERTH_SIGN_KEY_ID": "alice"}, "give the secret too"},
		"bad key id":              {[]string{"--sign-secret", testSignSecret, "--sign-key-id", "a b"}, nil, "must be 1 to 64 characters"},
		"short event secret":      {[]string{"--event-secret", "hunter2"}, nil, "event secret from --event-secret"},
		"both event flags":        {[]string{"--event-secret", testEventSecret, "--event-secret-file", file}, nil, "not both"},
		"missing event file":      {[]string{"--event-secret-file", filepath.Join(dir, "nope")}, nil, "event secret"},
	} {
		_, err := parseArgs(append([]string{"status", "po"}, c.args...), env(c.env))
		var ue *usageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%s: err %v, want a usage error with %q", name, err, c.want)
		}
	}
}

func TestUsageProtocolAndNewFlags(t *testing.T) {
	var out bytes.Buffer
	printUsage(&out, env(map[string]string{"BERTH_EVENT_SECRET": "event-secret-do-not-print", "BERTH_SIGN_KEY_ID": "alice-laptop"}))
	text := out.String()
	if strings.Contains(text, "do-not-print") {
		t.Fatalf("the usage text shows the event secret:\n%s", text)
	}
	for _, want := range []string{"-sign-key-id", "alice-laptop", "-event-secret", "-event-secret-file",
		"<prefix>.evt.<project>.<user-token>.<id>.<kind>", `"s-" and the first 32 hex digits of SHA-256`, `"r-" and 32 random hex`,
		"~refused.seq<N>.result"} {
		if !strings.Contains(text, want) {
			t.Errorf("the usage text lacks %q", want)
		}
	}
}

// sliceSource yields msgs, then waits for ctx.
type sliceSource struct{ msgs []eventMsg }

func (s *sliceSource) Next(ctx context.Context) (eventMsg, error) {
	if len(s.msgs) == 0 {
		<-ctx.Done()
		return eventMsg{}, ctx.Err()
	}
	m := s.msgs[0]
	s.msgs = s.msgs[1:]
	return m, nil
}

func (s *sliceSource) Close() {}

// signedEvent is an event message signed with secret (nil: unsigned).
func signedEvent(secret []byte, subject string, ev events.Event) eventMsg {
	body, _ := json.Marshal(ev)
	h := nats.Header{}
	if secret != nil {
		ts, sig := auth.Sign(secret, time.Now().Add(-time.Hour), subject, body)
		h.Set(auth.HeaderTimestamp, ts)
		h.Set(auth.HeaderSignature, sig)
	}
	return eventMsg{subject: subject, header: h, data: body}
}

func TestSignedSourceDropsForgedEvents(t *testing.T) {
	subj := "berth.evt.po.cli:ann.r1.result"
	real := events.Event{RequestID: "r1", Project: "po", Kind: events.KindResult, OK: ptr(true)}
	forged := events.Event{RequestID: "r1", Project: "po", Kind: events.KindResult, OK: ptr(false)}
	secret := []byte(testEventSecret)
	var warnings []string
	src := &signedSource{secrets: [][]byte{[]byte("an-older-event-secret-0123"), secret}, warnf: func(f string, a ...any) {
		warnings = append(warnings, strings.TrimSpace(strings.ReplaceAll(f, "%s", a[0].(string))))
	}, src: &sliceSource{msgs: []eventMsg{
		signedEvent(nil, subj, forged),                                    // unsigned
		signedEvent([]byte("not-the-event-secret-0123456"), subj, forged), // another secret
		signedEvent(secret, "berth.evt.po.cli:ann.r0.result", forged),     // signed for another subject
		func() eventMsg { // a signed event whose body was changed
			m := signedEvent(secret, subj, real)
			m.data = bytes.Replace(m.data, []byte(`"ok":true`), []byte(`"ok":false`), 1)
			return m
		}(),
		signedEvent(secret, subj, real), // an hour old: events are checked whatever their age
	}}}
	src.src.(*sliceSource).msgs[2].subject = subj // replayed onto this request's subject
	m, err := src.Next(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var ev events.Event
	json.Unmarshal(m.data, &ev)
	if ev.OK == nil || !*ev.OK {
		t.Fatalf("got a forged event: %s", m.data)
	}
	want := "warning: ignored an event on " + subj + " that the worker did not sign"
	if len(warnings) != 4 {
		t.Fatalf("warnings %q", warnings)
	}
	for _, w := range warnings {
		if w != want {
			t.Fatalf("warning %q, want %q", w, want)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if _, err := src.Next(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("after the last event: %v", err)
	}
}

// forger publishes, before the worker's events, forged events of the
// request: a result unsigned, one signed with another secret, and one
// the worker signed for another request, replayed.
func forger(t *testing.T, nc *nats.Conn) func(cmd *events.Command) {
	return func(cmd *events.Command) {
		subj := events.NewSubjects("")
		forged := events.Event{RequestID: cmd.ID, Project: "po", Action: "status", User: cmd.User, Kind: events.KindResult, Seq: 99,
			OK: ptr(false), Error: &events.Error{Code: events.CodeForbidden, Message: "forged result"}}
		target := subj.Event("po", cmd.User, cmd.ID, events.KindResult)
		for _, m := range []eventMsg{
			signedEvent(nil, target, forged),
			signedEvent([]byte("not-the-event-secret-0123456"), target, forged),
			signedEvent([]byte(testEventSecret), subj.Event("po", cmd.User, "another-request", events.KindResult), forged),
		} {
			msg := nats.NewMsg(target)
			msg.Header, msg.Data = m.header, m.data
			if err := nc.PublishMsg(msg); err != nil {
				t.Error(err)
			}
		}
		if err := nc.Flush(); err != nil {
			t.Error(err)
		}
	}
}

// With --event-secret, forged events are neither shown nor used: a
// forged result does not end the wait, the worker's does. Without it,
// nothing changes: the first result counts.
func TestRunEventSignatures(t *testing.T) {
	s, nc, js := setupStreams(t)
	forge := forger(t, nc)
	respond := func(cmd *events.Command) []events.Event { forge(cmd); return statusEvents(cmd) }

	wait := fakeWorkerWith(t, js, fakeOptions{eventSecret: []byte(testEventSecret)}, respond)
	code, out, errw := runPublisher(t, s, "status", "po", "--id", "evt-1", "--event-secret", testEventSecret)
	wait()
	warning := "warning: ignored an event on berth.evt.po.test:1.evt-1.result that the worker did not sign\n"
	if code != exitOK || strings.Contains(out+errw, "forged") || strings.Count(errw, warning) != 3 || !strings.Contains(out, "nginx:1.27") {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errw)
	}
	if want := strings.Repeat(warning, 3) + "accepted evt-1\n" + "[plan] inspecting containers (1/2)\nok in 12ms\n"; errw != want {
		t.Fatalf("stderr:\n%s\nwant:\n%s", errw, want)
	}

	// Replayed from the stream: the same.
	code, out2, errw := runPublisher(t, s, "--follow", "evt-1", "--event-secret", testEventSecret, "--timeout", "10s")
	if code != exitOK || out2 != out || strings.Count(errw, warning) != 3 || strings.Contains(errw, "forged") {
		t.Fatalf("follow: exit %d\nstdout:\n%s\nstderr:\n%s", code, out2, errw)
	}
	// Without the event secret the forged result is taken.
	code, _, errw = runPublisher(t, s, "--follow", "evt-1", "--timeout", "10s")
	if code != exitFailed || !strings.Contains(errw, "forged result") {
		t.Fatalf("follow without the secret: exit %d, stderr %q", code, errw)
	}
	// --json: the forged events are not printed either.
	code, out, errw = runPublisher(t, s, "--follow", "evt-1", "--json", "--event-secret", testEventSecret, "--timeout", "10s")
	if code != exitOK || strings.Contains(out, "forged") || strings.Count(out, "\n") != 3 || strings.Count(errw, warning) != 3 {
		t.Fatalf("json: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errw)
	}

	// Only forged results: the wait goes on to the timeout.
	wait = fakeWorkerWith(t, js, fakeOptions{eventSecret: []byte(testEventSecret)}, func(cmd *events.Command) []events.Event {
		forge(cmd)
		return []events.Event{{Kind: events.KindAccepted}}
	})
	code, out, errw = runPublisher(t, s, "status", "po", "--id", "evt-2", "--event-secret", testEventSecret, "--timeout", "1s")
	wait()
	if code != exitUnavailable || out != "" || !strings.Contains(errw, "no result within 1s") || strings.Count(errw, "that the worker did not sign") != 3 {
		t.Fatalf("forged only: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errw)
	}
}

// --sign-key-id sends Berth-Key with the signature.
func TestRunSignedWithKey(t *testing.T) {
	s, _, js := setupStreams(t)
	wait := fakeWorker(t, js, statusEvents)
	code, out, errw := runPublisher(t, s, "status", "po", "--sign-secret", testSignSecret, "--sign-key-id", "test-bot")
	got := wait()
	if code != exitOK || got.header.Get(auth.HeaderKey) != "test-bot" {
		t.Fatalf("exit %d, headers %v\nstdout:\n%s\nstderr:\n%s", code, got.header, out, errw)
	}
	v := &auth.Verifier{Keys: []auth.Key{{ID: "test-bot", Secret: []byte(testSignSecret), Users: []string{"test:*"}}}}
	if signed, err := v.Verify(got.subject, got.header, got.data); err != nil || signed.Key.Allows(got.cmd.User, "po") != nil {
		t.Fatalf("the worker refuses it: %v", err)
	}
}
