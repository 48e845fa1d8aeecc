package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/berth-ops/berth/auth"
	"github.com/berth-ops/berth/events"
	"github.com/berth-ops/berth/internal/testenv"
)

// harness runs a real worker against a real nats-server, a real Redis and
// the real Docker Engine, and talks to it as a bot would.
type harness struct {
	t        *testing.T
	ns       *server.Server
	cfg      *Config
	w        *Worker
	nc       *nats.Conn
	js       jetstream.JetStream
	subjects events.Subjects
	// logs receives the in-process worker's log instead of the test log.
	logs io.Writer
}

func newHarness(t *testing.T, roots ...string) *harness {
	t.Helper()
	return newHarnessWith(t, harnessOptions{Roots: roots})
}

// harnessOptions adapts the harness; the zero value is newHarness's.
type harnessOptions struct {
	// NATSURL is a nats-server the test runs itself; empty: testenv.NATS.
	NATSURL string
	// RedisURL is a Redis the test runs itself; empty: testenv.Redis.
	RedisURL string
	// Roots default to a fresh temporary directory; Admins to everyone.
	Roots  []string
	Admins []string
	// Logs receives the in-process worker's log; nil: the test log.
	Logs io.Writer
	// Host is the in-process worker's --host (default: the machine's).
	Host string
	// Replicas of the streams and consumers (default 1).
	Replicas int
}

func newHarnessWith(t *testing.T, o harnessOptions) *harness {
	t.Helper()
	h := &harness{t: t, subjects: events.NewSubjects("berth"), logs: o.Logs}
	natsURL := o.NATSURL
	if natsURL == "" {
		h.ns = testenv.NATS(t)
		natsURL = h.ns.ClientURL()
	}
	redisURL := o.RedisURL
	if redisURL == "" {
		redisURL = testenv.Redis(t)
	}
	roots := o.Roots
	if len(roots) == 0 {
		roots = []string{filepath.Clean(t.TempDir())}
	}
	admins := o.Admins
	if len(admins) == 0 {
		admins = []string{"*"}
	}
	cfg := &Config{
		NATSURL: natsURL, RedisURL: redisURL, Prefix: "berth", StateDir: t.TempDir(), Roots: roots, Admins: admins,
		StatusTTL: 30 * time.Second, FastSlots: 8, SlowSlots: 2, Grace: 5 * time.Second, AckWait: 3 * time.Second, Replicas: 1,
		LogLevel: "debug", LogFormat: "json",
		ConfirmTTL: time.Minute, VerifyTimeout: 60 * time.Second, Stabilize: 2 * time.Second, KeepReleases: 5,
		// Tests that need signing set SignSecrets or SignKeys.
		InsecureUnsigned: true,
		Host:             o.Host,
	}
	if o.Replicas > 0 {
		cfg.Replicas = o.Replicas
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	h.cfg = cfg
	if h.ns != nil {
		h.nc = testenv.Connect(t, h.ns)
	} else {
		// The test's own server may restart: reconnect for as long as it takes.
		nc, err := nats.Connect(natsURL, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
		if err != nil {
			t.Fatalf("connect to nats at %s: %v", natsURL, err)
		}
		t.Cleanup(nc.Close)
		h.nc = nc
	}
	var err error
	if h.js, err = jetstream.New(h.nc); err != nil {
		t.Fatal(err)
	}
	h.start()
	return h
}

// configureBare configures project on a production directory holding
// only a compose file (strategy symlink): enough for the commands that do
// not touch containers (history, config), without bringing anything up.
// It returns the directory.
func (h *harness) configureBare(project string) string {
	h.t.Helper()
	dir := filepath.Join(h.cfg.Roots[0], "bare-"+project+"-"+strings.ReplaceAll(uuid.NewString(), "-", "")[:8])
	if err := os.MkdirAll(dir, 0o755); err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.WriteFile(filepath.Join(dir, "compose.yml"), []byte("services:\n  app:\n    image: "+project+"-bare:latest\n"), 0o644); err != nil {
		h.t.Fatal(err)
	}
	res, _ := h.send(project, events.ActionConfigSet, events.Command{User: "test:admin", Args: json.RawMessage(
		`{"workspace":"` + dir + `","production":"` + dir + `","compose_project":"` + project + `-bare","strategy":"symlink"}`)})
	mustOK(h.t, res)
	return dir
}

// start starts (or restarts) the worker.
func (h *harness) start() {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out io.Writer = testWriter{h.t}
	if h.logs != nil {
		out = h.logs
	}
	w, err := Start(context.WithoutCancel(ctx), h.cfg, zerolog.New(out).With().Timestamp().Logger())
	if err != nil {
		h.t.Fatalf("start worker: %v", err)
	}
	h.w = w
	h.t.Cleanup(func() { h.stop() })
}

// stop shuts the worker down gracefully.
func (h *harness) stop() {
	if h.w == nil {
		return
	}
	h.w.Stop()
	_ = h.w.Wait()
	h.w.Close()
	h.w = nil
}

// send publishes a command and returns its events up to the result.
func (h *harness) send(project, action string, cmd events.Command) (events.Event, []events.Event) {
	h.t.Helper()
	if cmd.ID == "" {
		cmd.ID = strings.ReplaceAll(uuid.NewString(), "-", "")
	}
	if cmd.User == "" {
		cmd.User = "test:alice"
	}
	body, err := json.Marshal(cmd)
	if err != nil {
		h.t.Fatal(err)
	}
	return h.sendRaw(project, action, cmd.ID, body, 2*time.Minute)
}

// sendRaw publishes body with msgID as Nats-Msg-Id and collects the events
// of request id until its result, or the result of its refusal when the
// worker refuses it apart (an undecodable or unsigned body: ~refused).
func (h *harness) sendRaw(project, action, id string, body []byte, timeout time.Duration) (events.Event, []events.Event) {
	h.t.Helper()
	evs := h.subscribeEither(project, id)
	msg := &nats.Msg{Subject: h.subjects.Command(project, action), Data: body, Header: nats.Header{}}
	msg.Header.Set(jetstream.MsgIDHeader, id)
	h.sign(msg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := h.js.PublishMsg(ctx, msg); err != nil {
		h.t.Fatalf("publish %s: %v", msg.Subject, err)
	}
	return evs.result(h.t, timeout)
}

type eventSub struct {
	mu   sync.Mutex
	evs  []events.Event
	got  chan struct{}
	sub  *nats.Subscription
	done bool
}

// subscribe collects the events of one request id, of whichever user.
func (h *harness) subscribe(project, id string) *eventSub {
	h.t.Helper()
	return h.subscribeSubject(h.subjects.Prefix + ".evt." + project + ".*." + id + ".>")
}

// subscribeAs collects the events of one user's request.
func (h *harness) subscribeAs(project, user, id string) *eventSub {
	h.t.Helper()
	return h.subscribeSubject(h.subjects.RequestEvents(project, user, id))
}

// subscribeEither collects the events of one request id, of whichever
// user, and the refusals apart of the project (only one command is in
// flight when a test uses it).
func (h *harness) subscribeEither(project, id string) *eventSub {
	h.t.Helper()
	return h.subscribeWhere(h.subjects.Prefix+".evt."+project+".>", func(subject string) bool {
		return strings.Contains(subject, "."+id+".") || strings.Contains(subject, "."+events.RefusedTokenScope+".")
	})
}

func (h *harness) subscribeSubject(subject string) *eventSub {
	h.t.Helper()
	return h.subscribeWhere(subject, nil)
}

// subscribeWhere collects the events on subject that keep accepts.
func (h *harness) subscribeWhere(subject string, keep func(subject string) bool) *eventSub {
	h.t.Helper()
	es := &eventSub{got: make(chan struct{}, 1)}
	sub, err := h.nc.Subscribe(subject, func(m *nats.Msg) {
		if keep != nil && !keep(m.Subject) {
			return
		}
		var ev events.Event
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			h.t.Errorf("undecodable event on %s: %v", m.Subject, err)
			return
		}
		if !strings.HasSuffix(m.Subject, "."+string(ev.Kind)) {
			h.t.Errorf("event of kind %s on subject %s", ev.Kind, m.Subject)
		}
		es.mu.Lock()
		es.evs = append(es.evs, ev)
		es.mu.Unlock()
		if ev.Kind == events.KindResult {
			select {
			case es.got <- struct{}{}:
			default:
			}
		}
	})
	if err != nil {
		h.t.Fatal(err)
	}
	if err := h.nc.Flush(); err != nil {
		h.t.Fatal(err)
	}
	es.sub = sub
	h.t.Cleanup(func() { _ = sub.Unsubscribe() })
	return es
}

func (es *eventSub) result(t *testing.T, timeout time.Duration) (events.Event, []events.Event) {
	t.Helper()
	select {
	case <-es.got:
	case <-time.After(timeout):
		es.mu.Lock()
		defer es.mu.Unlock()
		t.Fatalf("no result within %v; events so far: %+v", timeout, es.evs)
	}
	es.mu.Lock()
	defer es.mu.Unlock()
	for _, ev := range es.evs {
		if ev.Kind == events.KindResult {
			return ev, append([]events.Event(nil), es.evs...)
		}
	}
	panic("unreachable")
}

// storedResults counts the result events of a request id in BERTH_EVT,
// of whichever user.
func (h *harness) storedResults(project, id string) uint64 {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := h.js.Stream(ctx, "BERTH_EVT")
	if err != nil {
		h.t.Fatal(err)
	}
	subj := h.subjects.Prefix + ".evt." + project + ".*." + id + "." + string(events.KindResult)
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(subj))
	if err != nil {
		h.t.Fatal(err)
	}
	var n uint64
	for _, c := range info.State.Subjects {
		n += c
	}
	return n
}

func mustOK(t *testing.T, res events.Event) {
	t.Helper()
	if res.OK == nil || !*res.OK {
		t.Fatalf("result of %s not ok: %v; data %s", res.Action, res.Error, res.Data)
	}
}

func decodeData[T any](t *testing.T, res events.Event) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(res.Data, &v); err != nil {
		t.Fatalf("result data %s: %v", res.Data, err)
	}
	return v
}

func args(t *testing.T, v any) json.RawMessage {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// testWriter sends worker logs to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

var _ io.Writer = testWriter{}

func errCode(res events.Event) string {
	if res.Error == nil {
		return ""
	}
	return fmt.Sprint(res.Error.Code)
}

// publish sends a command without waiting for anything.
func (h *harness) publish(project, action string, cmd events.Command) {
	h.t.Helper()
	body, err := json.Marshal(cmd)
	if err != nil {
		h.t.Fatal(err)
	}
	msg := &nats.Msg{Subject: h.subjects.Command(project, action), Data: body, Header: nats.Header{}}
	msg.Header.Set(jetstream.MsgIDHeader, cmd.ID)
	h.sign(msg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := h.js.PublishMsg(ctx, msg); err != nil {
		h.t.Fatalf("publish: %v", err)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// sign signs msg as a bot holding the worker's first secret would, when
// the worker requires signatures and msg carries none.
func (h *harness) sign(msg *nats.Msg) {
	if len(h.cfg.SignSecrets) == 0 || msg.Header.Get(auth.HeaderSignature) != "" {
		return
	}
	ts, sig := auth.Sign(h.cfg.SignSecrets[0], time.Now(), msg.Subject, msg.Data)
	msg.Header.Set(auth.HeaderTimestamp, ts)
	msg.Header.Set(auth.HeaderSignature, sig)
}
