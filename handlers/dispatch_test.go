package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/berth-ops/berth"
	"github.com/berth-ops/berth/events"
)

type fixture struct {
	store  *memStore
	engine *fakeEngine
	em     *fakeEmitter
	disp   *Dispatcher
	svc    *Service
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	st, en, em := newMemStore(), &fakeEngine{}, &fakeEmitter{}
	st.projects["po"] = &berth.Project{Name: "po", ComposeProject: "po"}
	svc, err := NewService(st, en, Config{Roots: []string{t.TempDir()}})
	if err != nil {
		t.Fatal(err)
	}
	mux := NewMux()
	svc.Register(mux)
	d := &Dispatcher{Mux: mux, Store: st, Emitter: em, Subjects: events.NewSubjects(""), Log: zerolog.Nop(), WorkerID: "test",
		Admission: &Admission{Mux: mux, Subjects: events.NewSubjects("")}}
	return &fixture{st, en, em, d, svc}
}

func (f *fixture) deliver(t *testing.T, subject, body string) (Decision, events.Event) {
	t.Helper()
	dec := f.disp.Process(context.Background(), Delivery{Subject: subject, Data: []byte(body), StreamSeq: 7, NumDelivered: 1, MaxDeliver: 5})
	res := f.em.results()
	if len(res) == 0 {
		t.Fatalf("no result event for %s %s", subject, body)
	}
	return dec, res[len(res)-1]
}

func TestDispatchBadInputGetsBadRequest(t *testing.T) {
	cases := map[string]struct{ subject, body, want string }{
		"unknown field":   {"berth.cmd.po.status", `{"user":"t:1","usr":"x"}`, "usr"},
		"not json":        {"berth.cmd.po.status", `{user`, "not a valid command"},
		"trailing data":   {"berth.cmd.po.status", `{"user":"t:1"} {}`, "after the JSON"},
		"missing user":    {"berth.cmd.po.status", `{}`, "user is missing"},
		"empty body":      {"berth.cmd.po.status", ``, "empty"},
		"bad project":     {"berth.cmd.Po!.status", `{"user":"t:1"}`, "project name"},
		"unknown action":  {"berth.cmd.po.explode", `{"user":"t:1"}`, "unknown action"},
		"bad arg type":    {"berth.cmd.po.logs", `{"user":"t:1","args":{"tail":"many"}}`, `tail must be an integer, got "many"`},
		"unknown arg":     {"berth.cmd.po.status", `{"user":"t:1","args":{"refersh":true}}`, "refersh"},
		"bad request id":  {"berth.cmd.po.status", `{"id":"a.b","user":"t:1"}`, "request id"},
		"invalid utf8":    {"berth.cmd.po.status", "{\"user\":\"t:\xff\"}", "UTF-8"},
		"wildcard reply":  {"berth.cmd.po.status", `{"user":"t:1","reply_to":"a.*"}`, "reply_to"},
		"user too long":   {"berth.cmd.po.status", `{"user":"` + strings.Repeat("u", 129) + `"}`, "at most 128"},
		"control in user": {"berth.cmd.po.status", `{"user":"t:\u0007"}`, "printable"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			dec, res := f.deliver(t, c.subject, c.body)
			if dec.Verdict != Ack {
				t.Fatalf("verdict %v, want Ack", dec.Verdict)
			}
			if *res.OK || res.Error == nil || res.Error.Code != events.CodeBadRequest {
				t.Fatalf("result %+v, want bad_request", res)
			}
			if !strings.Contains(res.Error.Message, c.want) {
				t.Fatalf("message %q does not mention %q", res.Error.Message, c.want)
			}
			if res.Error.Hint == "" {
				t.Fatalf("bad_request without a hint: %+v", res.Error)
			}
			if f.engine.calls != 0 {
				t.Fatalf("engine called %d times for a bad command", f.engine.calls)
			}
		})
	}
}

func TestDispatchUnknownActionListsActions(t *testing.T) {
	f := newFixture(t)
	_, res := f.deliver(t, "berth.cmd.po.reboot", `{"user":"t:1","id":"r1"}`)
	acts, _ := res.Error.Data["actions"].([]any)
	if len(acts) == 0 || res.RequestID != "r1" {
		t.Fatalf("unknown action result lists no actions or lost the id: %+v", res)
	}
}

func TestDispatchRequestIDSources(t *testing.T) {
	f := newFixture(t)
	// Header id when the body has none.
	f.disp.Process(context.Background(), Delivery{Subject: "berth.cmd.po.history", Data: []byte(`{"user":"t:1"}`), MsgID: "hdr-1", NumDelivered: 1})
	if got := f.em.results()[0].RequestID; got != "hdr-1" {
		t.Fatalf("request id %q, want the Nats-Msg-Id", got)
	}
	// Derived from the stream sequence, stable across deliveries.
	id := func() string {
		f := newFixture(t)
		f.disp.Process(context.Background(), Delivery{Subject: "berth.cmd.po.history", Data: []byte(`{"user":"t:1"}`), StreamSeq: 42, NumDelivered: 1})
		return f.em.results()[0].RequestID
	}
	if a, b := id(), id(); a != b || !events.ValidRequestID(a) {
		t.Fatalf("derived ids %q and %q differ or are invalid", a, b)
	}
}

func TestDispatchRedeliveryRepublishesStoredResult(t *testing.T) {
	f := newFixture(t)
	f.st().projects["po"] = &berth.Project{Name: "po", ComposeProject: "po", Services: []string{"web"}}
	f.engine.containers = []berth.Container{{Service: "web", Name: "po-web-1", State: "running", StartedAt: time.Now()}}
	body := `{"id":"req-1","user":"t:1","args":{"refresh":true}}`
	f.deliver(t, "berth.cmd.po.status", body)
	first := f.em.results()[0]
	del := Delivery{Subject: "berth.cmd.po.status", Data: []byte(body), NumDelivered: 2, MaxDeliver: 5}
	if dec := f.disp.Process(context.Background(), del); dec.Verdict != Ack {
		t.Fatalf("redelivery verdict %v", dec.Verdict)
	}
	res := f.em.results()
	if len(res) != 2 {
		t.Fatalf("%d results, want the stored one re-published", len(res))
	}
	if f.engine.calls != 1 {
		t.Fatalf("engine called %d times; the redelivery ran the command again", f.engine.calls)
	}
	a, _ := json.Marshal(first)
	b, _ := json.Marshal(res[1])
	if string(a) != string(b) {
		t.Fatalf("re-published result differs:\n%s\n%s", a, b)
	}
}

func TestDispatchEventsAreSequencedAndResultIsDurable(t *testing.T) {
	f := newFixture(t)
	f.deliver(t, "berth.cmd.po.history", `{"id":"h1","user":"t:1","reply_to":"_INBOX.x"}`)
	var kinds []string
	for i, e := range f.em.events {
		if e.ev.Seq != uint64(i+1) {
			t.Fatalf("event %d has seq %d", i, e.ev.Seq)
		}
		if e.subject != "berth.evt.po.t:1.h1."+string(e.ev.Kind) {
			t.Fatalf("subject %q", e.subject)
		}
		if e.durable != (e.ev.Kind == events.KindResult) {
			t.Fatalf("%s durable=%v", e.ev.Kind, e.durable)
		}
		kinds = append(kinds, string(e.ev.Kind))
	}
	if strings.Join(kinds, ",") != "accepted,result" {
		t.Fatalf("kinds %v", kinds)
	}
	if len(f.em.replies["_INBOX.x"]) != 1 {
		t.Fatalf("reply_to got %d messages", len(f.em.replies["_INBOX.x"]))
	}
}

func TestDispatchRetriesWhenResultCannotBePublished(t *testing.T) {
	f := newFixture(t)
	f.em.fail = errors.New("nats down")
	del := Delivery{Subject: "berth.cmd.po.history", Data: []byte(`{"user":"t:1"}`), StreamSeq: 1, NumDelivered: 1, MaxDeliver: 3}
	if dec := f.disp.Process(context.Background(), del); dec.Verdict != Retry || dec.Delay <= 0 {
		t.Fatalf("decision %+v, want Retry with a delay", dec)
	}
	del.NumDelivered = 3
	if dec := f.disp.Process(context.Background(), del); dec.Verdict != Term {
		t.Fatalf("decision on the last delivery %+v, want Term", dec)
	}
}

func TestDispatchMutationRefusedWhenStoreDown(t *testing.T) {
	f := newFixture(t)
	f.st().down = true
	_, res := f.deliver(t, "berth.cmd.po.config.set", `{"user":"t:1","args":{}}`)
	if res.Error == nil || res.Error.Code != events.CodeStoreUnavailable {
		t.Fatalf("mutation with store down: %+v", res.Error)
	}
}

func TestDispatchPanicBecomesInternal(t *testing.T) {
	f := newFixture(t)
	mux := NewMux()
	mux.Handle(events.ActionHistory, HandlerFunc(func(context.Context, *Request, Reporter) (any, error) { panic("boom") }))
	f.disp.Mux = mux
	_, res := f.deliver(t, "berth.cmd.po.history", `{"user":"t:1"}`)
	if res.Error == nil || res.Error.Code != events.CodeInternal || !strings.Contains(res.Error.Message, "boom") {
		t.Fatalf("panic result %+v", res.Error)
	}
}

func TestMuxPanicsOnDuplicateAndUnknown(t *testing.T) {
	for name, fn := range map[string]func(m *Mux){
		"duplicate": func(m *Mux) { m.Handle("status", HandlerFunc(nil)); m.Handle("status", HandlerFunc(nil)) },
		"unknown":   func(m *Mux) { m.Handle("explode", HandlerFunc(nil)) },
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Fatal("no panic")
				}
			}()
			fn(NewMux())
		})
	}
}

func TestLogChunksStayUnderLimit(t *testing.T) {
	f := newFixture(t)
	r := &run{d: f.disp, ev: events.Event{RequestID: "x", Project: "po", Action: "logs"}, ctx: context.Background()}
	l := zerolog.Nop()
	r.log = &l
	var lines []events.LogLine
	for range 5000 {
		lines = append(lines, events.LogLine{Stream: "stdout", Line: strings.Repeat("x", 100) + "\"\\"})
	}
	lines = append(lines, events.LogLine{Stream: "stderr", Line: strings.Repeat("\x01", 70000)})
	if err := r.Log(lines); err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, e := range f.em.events {
		b, _ := json.Marshal(e.ev)
		if len(b) > events.MaxLogChunk {
			t.Fatalf("log event of %d bytes", len(b))
		}
		total += len(e.ev.Lines)
	}
	if total != len(lines) || len(f.em.events) < 2 {
		t.Fatalf("%d lines in %d events, want %d lines in several", total, len(f.em.events), len(lines))
	}
}

func (f *fixture) st() *memStore { return f.store }

func TestDispatchRunningRequest(t *testing.T) {
	f := newFixture(t)
	f.store.reqs[reqKey("t:1", "r9")] = &berth.RequestRecord{ID: "r9", User: "t:1", Project: "po", Action: "history", State: berth.RequestRunning, StreamSeq: 5, StartedAt: time.Now()}
	body := []byte(`{"id":"r9","user":"t:1"}`)
	// Another message with the same id while the first runs: retried later.
	dec := f.disp.Process(context.Background(), Delivery{Subject: "berth.cmd.po.history", Data: body, StreamSeq: 6, NumDelivered: 1, MaxDeliver: 5})
	if dec.Verdict != Retry || len(f.em.events) != 0 {
		t.Fatalf("duplicate of a running request: %+v, %d events", dec, len(f.em.events))
	}
	// The same message redelivered: its worker died, this one takes over.
	dec = f.disp.Process(context.Background(), Delivery{Subject: "berth.cmd.po.history", Data: body, StreamSeq: 5, NumDelivered: 2, MaxDeliver: 5})
	if dec.Verdict != Ack || len(f.em.results()) != 1 || f.store.reqs[reqKey("t:1", "r9")].State != berth.RequestDone {
		t.Fatalf("redelivery of a running request: %+v, results %d", dec, len(f.em.results()))
	}
}

func TestDispatchAuditsEveryCommandRefusedOnesToo(t *testing.T) {
	f := newFixture(t)
	f.deliver(t, "berth.cmd.po.history", `{"id":"a1","user":"t:1"}`)
	f.deliver(t, "berth.cmd.po.status", `{"id":"a2","user":"t:2","bogus":1}`)
	f.disp.Admission.Authorize = func(context.Context, *Request) error { return events.Errorf(events.CodeForbidden, "no") }
	f.deliver(t, "berth.cmd.po.status", `{"id":"a3","user":"t:3"}`)
	if len(f.em.audits) != 3 {
		t.Fatalf("%d audit records, want 3", len(f.em.audits))
	}
	for i, want := range []struct {
		id   string
		ok   bool
		code events.Code
	}{{"a1", true, ""}, {"a2", false, events.CodeBadRequest}, {"a3", false, events.CodeForbidden}} {
		a := f.em.audits[i]
		undecodable := want.code == events.CodeBadRequest // its id and user are unknown
		if (!undecodable && (a.RequestID != want.id || a.User == "")) || a.OK != want.ok || a.ErrorCode != want.code || a.TS == "" {
			t.Fatalf("audit %d: %+v", i, a)
		}
	}
	// A forbidden command never reached its handler: no accepted event.
	for _, e := range f.em.events {
		if e.ev.RequestID == "a3" && e.ev.Kind == events.KindAccepted {
			t.Fatal("forbidden command was accepted")
		}
	}
}

// A request is its user's: another command of the same user with the id
// is refused (conflict), without touching the first one's record; another
// user's command with the same id is a request of its own, with its own
// record and events.
func TestDispatchRequestIDIsPerUser(t *testing.T) {
	f := newFixture(t)
	f.deliver(t, "berth.cmd.po.history", `{"id":"same","user":"t:alice"}`)
	for _, c := range []struct{ subject, body string }{
		{"berth.cmd.po.status", `{"id":"same","user":"t:alice"}`},     // other action
		{"berth.cmd.other.history", `{"id":"same","user":"t:alice"}`}, // other project
	} {
		_, res := f.deliver(t, c.subject, c.body)
		if res.Error == nil || res.Error.Code != events.CodeConflict || res.Data != nil {
			t.Fatalf("%s %s: %+v (data %s)", c.subject, c.body, res.Error, res.Data)
		}
	}
	if rec := f.store.reqs[reqKey("t:alice", "same")]; rec.Action != "history" || rec.User != "t:alice" || rec.State != berth.RequestDone {
		t.Fatalf("the first request's record was overwritten: %+v", rec)
	}
	_, res := f.deliver(t, "berth.cmd.po.history", `{"id":"same","user":"t:mallory"}`)
	if res.Error != nil || res.User != "t:mallory" {
		t.Fatalf("another user's request with the same id: %+v", res)
	}
	last := f.em.events[len(f.em.events)-1]
	if last.subject != "berth.evt.po.t:mallory.same.result" {
		t.Fatalf("another user's result on %s", last.subject)
	}
}

func TestDecodeRejectsCaseVariantsAndDuplicates(t *testing.T) {
	f := newFixture(t)
	for _, body := range []string{
		`{"user":"t:vera","USER":"t:ada"}`,
		`{"user":"t:vera","user":"t:ada"}`,
		`{"User":"t:ada"}`,
		`{"user":"t:1","args":{"Limit":5}}`,
		`{"user":"   "}`,
		`{"user":" t:1"}`,
	} {
		_, res := f.deliver(t, "berth.cmd.po.history", body)
		if res.Error == nil || res.Error.Code != events.CodeBadRequest {
			t.Errorf("%s: %+v", body, res.Error)
		}
	}
}

func TestDispatchRefusesReplyToOnWorkerSubjects(t *testing.T) {
	for _, rt := range []string{"$JS.API.STREAM.PURGE.BERTH_EVT", "berth.evt.other.x.result", "berth.cmd.po.deploy", "berth.audit.po.x", "berth.q.po.status", "berth.host.h2.cmd.po.deploy", "berth.hq.h2.po.status"} {
		f := newFixture(t)
		_, res := f.deliver(t, "berth.cmd.po.history", `{"user":"t:1","reply_to":"`+rt+`"}`)
		if res.Error == nil || res.Error.Code != events.CodeBadRequest || len(f.em.replies) != 0 {
			t.Fatalf("reply_to %s: %+v, replies %v", rt, res.Error, f.em.replies)
		}
	}
}

func TestDispatchAllowsReplyNamespace(t *testing.T) {
	f := newFixture(t)
	_, res := f.deliver(t, "berth.cmd.po.history", `{"user":"t:1","reply_to":"berth.reply.telegram.42"}`)
	if res.Error != nil || len(f.em.replies["berth.reply.telegram.42"]) != 1 {
		t.Fatalf("reply_to in berth.reply: %+v, replies %v", res.Error, f.em.replies)
	}
}

// A pure read runs while its record is begun, but only a new command's
// answer goes out: a first delivery of an id already done gets the stored
// result, and a refused user never reaches the handler.
func TestDispatchPureReadAnsweredAlongsideItsRecord(t *testing.T) {
	f := newFixture(t)
	f.st().projects["po"] = &berth.Project{Name: "po", ComposeProject: "po", Services: []string{"web"}}
	f.engine.containers = []berth.Container{{Service: "web", Name: "po-web-1", State: "running", StartedAt: time.Now()}}
	body := `{"id":"s-1","user":"t:1","args":{"refresh":true}}`
	_, first := f.deliver(t, "berth.cmd.po.status", body)
	if !*first.OK || f.engine.calls != 1 {
		t.Fatalf("first status %+v, engine calls %d", first, f.engine.calls)
	}
	if rec := f.st().reqs[reqKey("t:1", "s-1")]; rec == nil || rec.State != berth.RequestDone {
		t.Fatalf("record after the answer: %+v", rec)
	}
	var kinds []events.Kind
	for _, e := range f.em.events {
		kinds = append(kinds, e.ev.Kind)
	}
	if !slices.Equal(kinds, []events.Kind{events.KindAccepted, events.KindResult}) {
		t.Fatalf("events %v, want accepted then result", kinds)
	}

	// The same id in another message: the containers changed meanwhile,
	// but the stored answer is the one given.
	f.engine.containers = nil
	dec := f.disp.Process(context.Background(), Delivery{Subject: "berth.cmd.po.status", Data: []byte(body), StreamSeq: 8, NumDelivered: 1, MaxDeliver: 5})
	res := f.em.results()
	if dec.Verdict != Ack || len(res) != 2 {
		t.Fatalf("verdict %v, %d results", dec.Verdict, len(res))
	}
	a, _ := json.Marshal(first)
	b, _ := json.Marshal(res[1])
	if string(a) != string(b) {
		t.Fatalf("re-published %s, want the stored %s", b, a)
	}

	// Refused: the handler never runs, and the refusal is the answer.
	f.disp.Admission.Authorize = func(context.Context, *Request) error { return events.Errorf(events.CodeForbidden, "no") }
	calls := f.engine.calls
	_, refused := f.deliver(t, "berth.cmd.po.status", `{"id":"s-2","user":"t:2","args":{"refresh":true}}`)
	if *refused.OK || refused.Error.Code != events.CodeForbidden || f.engine.calls != calls {
		t.Fatalf("refused status %+v, engine calls %d → %d", refused, calls, f.engine.calls)
	}
}
