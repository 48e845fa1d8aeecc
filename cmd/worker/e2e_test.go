package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/berth-ops/berth"
	"github.com/berth-ops/berth/events"
	"github.com/berth-ops/berth/handlers"
	"github.com/berth-ops/berth/internal/testenv"
)

// configure brings up the sample app and configures it as project p.
func configure(t *testing.T, h *harness, p string) *testenv.Sample {
	t.Helper()
	sample := testenv.SampleApp(t)
	res, _ := h.send(p, events.ActionConfigSet, events.Command{User: "test:admin", Args: args(t, map[string]any{
		"workspace": sample.Dir, "production": sample.Dir, "compose_project": sample.Project, "strategy": "symlink",
	})})
	mustOK(t, res)
	cfg := decodeData[berth.Project](t, res)
	if strings.Join(cfg.Services, ",") != "web,worker" || cfg.PrimaryService != "web" {
		t.Fatalf("config.set detected %v (primary %s), want web,worker", cfg.Services, cfg.PrimaryService)
	}
	return sample
}

func TestConfigStatusLogsEndToEnd(t *testing.T) {
	h := newHarness(t, filepath.Clean(tempRoot(t)))
	sample := configure(t, h, "po")

	// config.get returns what config.set stored.
	res, _ := h.send("po", events.ActionConfigGet, events.Command{})
	mustOK(t, res)
	if got := decodeData[berth.Project](t, res); got.ComposeProject != sample.Project || got.UpdatedBy != "test:admin" {
		t.Fatalf("config.get %+v", got)
	}

	// status: every service with its health, from Docker first.
	res, evs := h.send("po", events.ActionStatus, events.Command{})
	mustOK(t, res)
	if evs[0].Kind != events.KindAccepted || evs[0].Seq != 1 || res.Seq != uint64(len(evs)) {
		t.Fatalf("events %+v", evs)
	}
	st := decodeData[handlers.StatusReport](t, res)
	if st.Cached || len(st.Services) != 2 {
		t.Fatalf("first status %+v", st)
	}
	web, worker := st.Services[0], st.Services[1]
	if web.Service != "web" || web.State != "running" || web.Health != "healthy" || len(web.Ports) != 1 || !strings.Contains(web.Ports[0], "->8080/tcp") {
		t.Fatalf("web %+v", web)
	}
	if worker.Service != "worker" || worker.State != "running" || worker.Health != "" || worker.Image == "" {
		t.Fatalf("worker %+v", worker)
	}
	if st.Summary.Running != 2 || st.Summary.Healthy != 1 || st.Summary.Missing != 0 {
		t.Fatalf("summary %+v", st.Summary)
	}

	// A second status is served from the cache; refresh bypasses it.
	res, _ = h.send("po", events.ActionStatus, events.Command{})
	cached := decodeData[handlers.StatusReport](t, res)
	if !cached.Cached || cached.CachedAt == nil || !cached.CachedAt.Equal(st.TakenAt) {
		t.Fatalf("second status not from the cache: cached=%v at %v", cached.Cached, cached.CachedAt)
	}
	// Stop the worker service behind the cache's back: refresh sees it.
	sample.Compose(t, "stop", "worker")
	res, _ = h.send("po", events.ActionStatus, events.Command{Args: args(t, map[string]any{"refresh": true})})
	fresh := decodeData[handlers.StatusReport](t, res)
	if fresh.Cached || fresh.Services[1].State != "exited" || fresh.Summary.Stopped != 1 {
		t.Fatalf("refreshed status %+v", fresh)
	}
	sample.Compose(t, "start", "worker")

	// logs: tail, stream marks, timestamps, grep, since.
	res, _ = h.send("po", events.ActionLogs, events.Command{Args: args(t, map[string]any{"tail": 5, "service": "worker", "timestamps": true})})
	mustOK(t, res)
	lr := decodeData[handlers.LogsResult](t, res)
	if lr.Count == 0 || lr.Count > 5 || len(lr.Lines) != lr.Count || lr.Service != "worker" {
		t.Fatalf("logs tail=5: %+v", lr)
	}
	for _, l := range lr.Lines {
		if _, err := time.Parse(time.RFC3339Nano, l.TS); err != nil {
			t.Fatalf("line without timestamp: %+v", l)
		}
	}
	res, _ = h.send("po", events.ActionLogs, events.Command{Args: args(t, map[string]any{"tail": 1000})})
	lr = decodeData[handlers.LogsResult](t, res)
	if lr.Service != "web" || !slices.ContainsFunc(lr.Lines, func(l events.LogLine) bool {
		return l.Stream == "stderr" && strings.Contains(l.Line, "this is stderr")
	}) || !slices.ContainsFunc(lr.Lines, func(l events.LogLine) bool { return l.Stream == "stdout" && strings.Contains(l.Line, "starting ") }) {
		t.Fatalf("primary service logs lack the marked stdout/stderr start lines: %+v", lr.Lines)
	}
	// The app ticks once a second: wait for the second tick.
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		res, _ = h.send("po", events.ActionLogs, events.Command{Args: args(t, map[string]any{"service": "web", "grep": `^tick \d+$`, "tail": 2})})
		if lr = decodeData[handlers.LogsResult](t, res); lr.Count >= 2 || time.Now().After(deadline) {
			break
		}
	}
	if lr.Count != 2 || !strings.HasPrefix(lr.Lines[0].Line, "tick ") {
		t.Fatalf("grep tick tail 2: %+v", lr)
	}
	res, _ = h.send("po", events.ActionLogs, events.Command{Args: args(t, map[string]any{"since": time.Now().Add(time.Hour).Format(time.RFC3339)})})
	if lr = decodeData[handlers.LogsResult](t, res); lr.Count != 0 {
		t.Fatalf("since in the future returned %d lines", lr.Count)
	}

	// follow: log events arrive while following, then the result.
	res, evs = h.send("po", events.ActionLogs, events.Command{Args: args(t, map[string]any{"service": "worker", "tail": 1, "follow_s": 3})})
	mustOK(t, res)
	lr = decodeData[handlers.LogsResult](t, res)
	var followed []events.LogLine
	for _, ev := range evs {
		if ev.Kind == events.KindLog {
			followed = append(followed, ev.Lines...)
		}
	}
	ticks := 0
	for _, l := range followed {
		if strings.HasPrefix(l.Line, "tick ") {
			ticks++
		}
	}
	if !lr.InEvents || lr.FollowedS < 2.5 || ticks < 2 || lr.Count != len(followed) {
		t.Fatalf("follow: result %+v, %d lines in events, %d ticks", lr, len(followed), ticks)
	}

	// Errors are structured and say what to do.
	res, _ = h.send("po", events.ActionLogs, events.Command{Args: args(t, map[string]any{"tail": 20000})})
	if errCode(res) != "bad_request" || res.Error.Hint == "" {
		t.Fatalf("tail 20000: %+v", res.Error)
	}
	res, _ = h.send("nope", events.ActionStatus, events.Command{})
	if errCode(res) != "not_found" || !strings.Contains(res.Error.Hint, "config.set") {
		t.Fatalf("unknown project: %+v", res.Error)
	}

	// config.delete keeps history; the history shows the config changes.
	plan(t, h, "po", events.ActionConfigDelete, "test:admin", nil)
	res, _ = confirm(t, h, "po", events.ActionConfigDelete, "test:admin", "yes")
	mustOK(t, res)
	res, _ = h.send("po", events.ActionConfigGet, events.Command{})
	if errCode(res) != "not_found" {
		t.Fatalf("config.get after delete: %+v", res)
	}
	res, _ = h.send("po", events.ActionHistory, events.Command{})
	mustOK(t, res)
	var hist struct {
		Entries []berth.HistoryEntry `json:"entries"`
	}
	if err := json.Unmarshal(res.Data, &hist); err != nil || len(hist.Entries) != 2 ||
		hist.Entries[0].Action != "config.delete" || hist.Entries[1].Action != "config.set" || hist.Entries[1].User != "test:admin" {
		t.Fatalf("history %s", res.Data)
	}
}

func TestDuplicateCommandAnsweredFromRecord(t *testing.T) {
	h := newHarness(t)
	h.configureBare("po")
	id := "dup-req-1"
	body := []byte(`{"id":"dup-req-1","user":"test:alice","args":{"limit":5}}`)
	first, _ := h.sendRaw("po", events.ActionHistory, id, body, time.Minute)
	mustOK(t, first)
	// The same command again, past JetStream's dedup (another Nats-Msg-Id),
	// as a bot retrying after the dedup window would send it.
	evs := h.subscribe("po", id)
	msg := &nats.Msg{Subject: h.subjects.Command("po", events.ActionHistory), Data: body, Header: nats.Header{}}
	msg.Header.Set(jetstream.MsgIDHeader, "another-msg-id")
	if _, err := h.js.PublishMsg(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
	second, all := evs.result(t, time.Minute)
	a, _ := json.Marshal(first)
	b, _ := json.Marshal(second)
	if string(a) != string(b) || len(all) != 1 {
		t.Fatalf("duplicate was not answered with the stored result alone:\nfirst  %s\nsecond %s\nevents %d", a, b, len(all))
	}
	if n := h.storedResults("po", id); n != 1 {
		t.Fatalf("%d result events stored for the request, want exactly 1", n)
	}
}

func TestRedeliveryAfterWorkerLostTheCommand(t *testing.T) {
	h := newHarness(t)
	h.configureBare("po")
	h.stop()
	// A command published while no worker runs is taken by a "worker" (the
	// test) that dies without acking: JetStream redelivers it after AckWait.
	id := "lost-1"
	evs := h.subscribe("po", id)
	msg := &nats.Msg{Subject: h.subjects.Command("po", events.ActionHistory), Data: []byte(`{"user":"test:alice"}`), Header: nats.Header{}}
	msg.Header.Set(jetstream.MsgIDHeader, id)
	ctx := context.Background()
	if _, err := h.js.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}
	cons, err := h.js.Consumer(ctx, "BERTH_CMD", "berth-fast")
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	taken := 0
	for range batch.Messages() {
		taken++ // and never acked
	}
	if taken != 1 {
		t.Fatalf("took %d messages, want 1", taken)
	}
	h.start()
	res, all := evs.result(t, time.Minute)
	mustOK(t, res)
	if res.RequestID != id || all[0].Kind != events.KindAccepted {
		t.Fatalf("redelivered command: %+v", all)
	}
	time.Sleep(h.cfg.AckWait + time.Second) // a second redelivery would come by now
	if n := h.storedResults("po", id); n != 1 {
		t.Fatalf("%d result events stored, want exactly 1", n)
	}
}

func TestMalformedCommandsGetBadRequestAndWorkerKeepsServing(t *testing.T) {
	h := newHarness(t)
	for name, c := range map[string]struct {
		action, body, want string
		apart              bool // undecodable: refused apart, under its stream sequence
	}{
		"not json":      {events.ActionStatus, `{"user":`, "not a valid command", true},
		"unknown field": {events.ActionStatus, `{"user":"t:1","confirmm":"yes"}`, "confirmm", true},
		"bad args":      {events.ActionLogs, `{"user":"t:1","args":{"tail":"x"}}`, "tail", false},
		"no user":       {events.ActionHistory, `{"args":{}}`, "user", true},
	} {
		t.Run(name, func(t *testing.T) {
			id := "bad-" + strings.ReplaceAll(name, " ", "-")
			res, _ := h.sendRaw("po", c.action, id, []byte(c.body), time.Minute)
			if errCode(res) != "bad_request" || !strings.Contains(res.Error.Message, c.want) {
				t.Fatalf("result %+v", res)
			}
			if c.apart && (!refusedRef.MatchString(res.RequestID) || res.User != "") || !c.apart && res.RequestID != id {
				t.Fatalf("refused apart %v, but the result is under %q for %q", c.apart, res.RequestID, res.User)
			}
		})
	}
	// An unknown action is captured by no stream, yet gets an answer.
	evs := h.subscribe("po", "unknown-1")
	if err := h.nc.Publish(h.subjects.Command("po", "explode"), []byte(`{"id":"unknown-1","user":"t:1"}`)); err != nil {
		t.Fatal(err)
	}
	res, _ := evs.result(t, time.Minute)
	if errCode(res) != "bad_request" || !strings.Contains(res.Error.Hint, "status") {
		t.Fatalf("unknown action: %+v", res.Error)
	}
	// The worker still serves (po is not configured: not_found).
	res, _ = h.send("po", events.ActionHistory, events.Command{})
	if errCode(res) != "not_found" {
		t.Fatalf("history after the malformed commands: %+v", res.Error)
	}
}

// tempRoot is a directory that holds the sample app's production dirs:
// testenv creates them under the system temporary directory.
func tempRoot(t *testing.T) string {
	t.Helper()
	d := t.TempDir()
	return filepath.Dir(filepath.Dir(d))
}

func TestDevModeServesCommands(t *testing.T) {
	testenv.Integration(t)
	_, w, logs := startDevWorker(t, t.TempDir())
	defer func() { w.Stop(); _ = w.Wait(); w.Close() }()
	if !strings.Contains(logs.String(), "DEVELOPMENT MODE") {
		t.Fatalf("dev mode did not say so: %s", logs.String())
	}
	nc, err := nats.Connect(w.NATSURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	sub, err := nc.SubscribeSync("berth.evt.dev.cli:me.dev-1.result")
	if err != nil {
		t.Fatal(err)
	}
	// A plain core publish, as `nats pub` sends it, is captured by the stream.
	if err := nc.Publish("berth.cmd.dev.history", []byte(`{"id":"dev-1","user":"cli:me"}`)); err != nil {
		t.Fatal(err)
	}
	m, err := sub.NextMsg(30 * time.Second)
	if err != nil {
		t.Fatalf("no result in dev mode: %v", err)
	}
	var ev events.Event
	if err := json.Unmarshal(m.Data, &ev); err != nil || errCode(ev) != "not_found" || ev.RequestID != "dev-1" {
		t.Fatalf("result %s, want not_found: project dev is not configured", m.Data)
	}
}

// startDevWorker starts a worker in development mode (no NATS or Redis
// URL) on the state directory, as `go run ./cmd/worker` does, with extra
// flags; its log goes to the returned writer.
func startDevWorker(t *testing.T, stateDir string, args ...string) (*Config, *Worker, *lockedWriter) {
	t.Helper()
	args = append([]string{"--dev-nats-listen", "127.0.0.1:-1", "--state-dir", stateDir}, args...)
	cfg, err := ParseConfig(args, func(k string) string {
		if k == "HOME" {
			return "/root"
		}
		return ""
	})
	if err != nil {
		t.Fatal(err)
	}
	logs := &lockedWriter{w: &strings.Builder{}}
	w, err := Start(context.Background(), cfg, newLogger(cfg, logs))
	if err != nil {
		t.Fatal(err)
	}
	return cfg, w, logs
}

type lockedWriter struct {
	mu sync.Mutex
	w  *strings.Builder
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (l *lockedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.String()
}

func TestShutdownFinishesInFlightWork(t *testing.T) {
	h := newHarness(t, filepath.Clean(tempRoot(t)))
	configure(t, h, "po")
	id := "follow-during-shutdown"
	evs := h.subscribe("po", id)
	body, _ := json.Marshal(events.Command{ID: id, User: "test:alice", Args: args(t, map[string]any{"service": "worker", "tail": 1, "follow_s": 2})})
	msg := &nats.Msg{Subject: h.subjects.Command("po", events.ActionLogs), Data: body, Header: nats.Header{}}
	msg.Header.Set(jetstream.MsgIDHeader, id)
	if _, err := h.js.PublishMsg(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
	// Wait until the work has started, then shut down in the middle of it.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		evs.mu.Lock()
		n := len(evs.evs)
		evs.mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("command never accepted")
		}
	}
	begin := time.Now()
	h.stop()
	res, _ := evs.result(t, 5*time.Second)
	mustOK(t, res)
	if lr := decodeData[handlers.LogsResult](t, res); lr.FollowedS < 1.5 {
		t.Fatalf("in-flight follow was cut short: %+v", lr)
	}
	if time.Since(begin) > h.cfg.Grace {
		t.Fatalf("shutdown took %v, more than the grace period", time.Since(begin))
	}
	// Acked: a restarted worker does not run it again.
	h.start()
	time.Sleep(h.cfg.AckWait + time.Second)
	if n := h.storedResults("po", id); n != 1 {
		t.Fatalf("%d results stored, want 1", n)
	}
}
