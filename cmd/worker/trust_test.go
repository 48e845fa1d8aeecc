package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/berth-ops/berth"
	"github.com/berth-ops/berth/auth"
	"github.com/berth-ops/berth/events"
	"github.com/berth-ops/berth/handlers"
	"github.com/berth-ops/berth/internal/testenv"
)

// rawCommand is a command message as a test sends it: its body, headers
// (Nats-Msg-Id, signature) as given.
type rawCommand struct {
	project, action string
	cmd             events.Command
	msgID           string
	key             *auth.Key // signs with this key (and names it) when set
}

func (h *harness) publishRaw(c rawCommand) {
	h.t.Helper()
	body, err := json.Marshal(c.cmd)
	if err != nil {
		h.t.Fatal(err)
	}
	msg := &nats.Msg{Subject: h.subjects.Command(c.project, c.action), Data: body, Header: nats.Header{}}
	if c.msgID != "" {
		msg.Header.Set(jetstream.MsgIDHeader, c.msgID)
	}
	if c.key != nil {
		ts, sig := auth.Sign(c.key.Secret, time.Now(), msg.Subject, body)
		msg.Header.Set(auth.HeaderTimestamp, ts)
		msg.Header.Set(auth.HeaderSignature, sig)
		if c.key.ID != "" {
			msg.Header.Set(auth.HeaderKey, c.key.ID)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := h.js.PublishMsg(ctx, msg); err != nil {
		h.t.Fatalf("publish %s: %v", msg.Subject, err)
	}
}

// firstResult waits for the first result on subject, as
// `nats sub --count=1` does, and returns it.
func firstResult(t *testing.T, sub *nats.Subscription, timeout time.Duration) events.Event {
	t.Helper()
	for deadline := time.Now().Add(timeout); ; {
		m, err := sub.NextMsg(time.Until(deadline))
		if err != nil {
			t.Fatalf("no result on %s: %v", sub.Subject, err)
		}
		var ev events.Event
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			t.Fatal(err)
		}
		if ev.Kind == events.KindResult {
			return ev
		}
	}
}

// auditRecords reads every audit record of a project's action.
func (h *harness) auditRecords(project, action string) []events.AuditRecord {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	oc, err := h.js.OrderedConsumer(ctx, "BERTH_AUDIT", jetstream.OrderedConsumerConfig{FilterSubjects: []string{h.subjects.Audit(project, action)}})
	if err != nil {
		h.t.Fatal(err)
	}
	var out []events.AuditRecord
	for {
		m, err := oc.Next(jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return out
		}
		var a events.AuditRecord
		if err := json.Unmarshal(m.Data(), &a); err != nil {
			h.t.Fatal(err)
		}
		out = append(out, a)
	}
}

// TestRequestIDsCannotBeTaken: a stranger who uses another user's request
// id first neither pre-empts the real command, nor answers for it, nor
// hides its audit record; with signing, a key cannot speak for another
// user, and another key cannot reuse a signed request's id.
func TestRequestIDsCannotBeTaken(t *testing.T) {
	h := newHarnessWith(t, harnessOptions{Roots: []string{filepath.Clean(tempRoot(t))}, Admins: []string{"test:admin"}})
	d := setupDeployable(t, h, "po", map[string]any{"roles": map[string]string{"test:alice": "operator"}, "stabilize_s": 1})
	_ = d

	t.Run("unsigned", func(t *testing.T) {
		const id = "webhook-delivery-4711" // guessable: derived from an outside event
		// The real command's first result, read as `nats sub --count=1` does.
		real, err := h.nc.SubscribeSync(h.subjects.Event("po", "test:alice", id, events.KindResult))
		if err != nil {
			t.Fatal(err)
		}
		defer real.Unsubscribe()
		stranger := h.subscribeAs("po", "test:mallory", id)
		// The stranger first: its id and its Nats-Msg-Id are the real one's.
		h.publishRaw(rawCommand{project: "po", action: events.ActionStart, msgID: id,
			cmd: events.Command{ID: id, User: "test:mallory"}})
		res, _ := stranger.result(t, time.Minute)
		if errCode(res) != "forbidden" {
			t.Fatalf("the stranger's command: %+v", res.Error)
		}
		// The real one, with an unguessable dedup key (as the publisher
		// sends): it runs, once, and its result is the first on its subject.
		h.publishRaw(rawCommand{project: "po", action: events.ActionStart, msgID: "r-" + hostileRandom(t) + hostileRandom(t),
			cmd: events.Command{ID: id, User: "test:alice"}})
		first := firstResult(t, real, 2*time.Minute)
		mustOK(t, first)
		if first.User != "test:alice" {
			t.Fatalf("the first result for alice's id is %s's", first.User)
		}
		hist, _ := h.send("po", events.ActionHistory, events.Command{User: "test:admin"})
		var entries struct {
			Entries []struct {
				RequestID string `json:"request_id"`
				User      string `json:"user"`
				Action    string `json:"action"`
			} `json:"entries"`
		}
		_ = json.Unmarshal(hist.Data, &entries)
		runs := 0
		for _, e := range entries.Entries {
			if e.RequestID == id && e.Action == events.ActionStart {
				runs++
				if e.User != "test:alice" {
					t.Fatalf("history records the id for %s", e.User)
				}
			}
		}
		if runs != 1 {
			t.Fatalf("alice's start ran %d times: %+v", runs, entries.Entries)
		}
		// The audit holds both: the stranger's refusal, and the real command.
		var realAudit, strangerAudit bool
		for _, a := range h.auditRecords("po", events.ActionStart) {
			switch {
			case a.RequestID == id && a.User == "test:alice" && a.OK:
				realAudit = true
			case a.RequestID == id && a.User == "test:mallory" && a.ErrorCode == events.CodeForbidden:
				strangerAudit = true
			}
		}
		if !realAudit || !strangerAudit {
			t.Fatalf("audit: the real command recorded %v, the stranger's %v", realAudit, strangerAudit)
		}
	})

	t.Run("signed", func(t *testing.T) {
		secret := func(s string) []byte { return []byte(s + "-secret-0123456789abcdef") }
		alice := auth.Key{ID: "k-alice", Secret: secret("alice"), Users: []string{"test:alice"}, Projects: []string{"*"}}
		mallory := auth.Key{ID: "k-mallory", Secret: secret("mallory"), Users: []string{"test:mallory"}, Projects: []string{"*"}}
		bot := auth.Key{ID: "k-bot", Secret: secret("bot"), Users: []string{"test:*"}, Projects: []string{"po"}}
		h.restartWith(func(c *Config) { c.SignKeys, c.SignWindow = []auth.Key{alice, mallory, bot}, time.Minute })
		defer h.restartWith(func(c *Config) { c.SignKeys = nil })

		const id = "chat-message-42"
		real, err := h.nc.SubscribeSync(h.subjects.Event("po", "test:alice", id, events.KindResult))
		if err != nil {
			t.Fatal(err)
		}
		defer real.Unsubscribe()
		refused, err := h.nc.SubscribeSync(h.subjects.Prefix + ".evt.po." + events.RefusedTokenScope + ".>")
		if err != nil {
			t.Fatal(err)
		}
		defer refused.Unsubscribe()
		// mallory's key claiming alice, then an unsigned command claiming
		// alice: both refused apart, nothing under alice's id.
		h.publishRaw(rawCommand{project: "po", action: events.ActionStart, msgID: id, key: &mallory,
			cmd: events.Command{ID: id, User: "test:alice"}})
		h.publishRaw(rawCommand{project: "po", action: events.ActionStart, msgID: id + "-u",
			cmd: events.Command{ID: id, User: "test:alice"}})
		for range 2 {
			ev := firstResult(t, refused, time.Minute)
			if errCode(ev) != "unauthorized" || ev.User != "" || !refusedRef.MatchString(ev.RequestID) {
				t.Fatalf("a refusal apart: %+v", ev)
			}
		}
		// alice's own key: it runs, and its result is the first for her id.
		h.publishRaw(rawCommand{project: "po", action: events.ActionStart, msgID: "s-" + hostileRandom(t), key: &alice,
			cmd: events.Command{ID: id, User: "test:alice"}})
		first := firstResult(t, real, 2*time.Minute)
		mustOK(t, first)
		// Another key that may speak for alice cannot reuse the id.
		other := h.subscribeAs("po", "test:alice", id)
		h.publishRaw(rawCommand{project: "po", action: events.ActionStart, msgID: "s-" + hostileRandom(t), key: &bot,
			cmd: events.Command{ID: id, User: "test:alice"}})
		res, _ := other.result(t, time.Minute)
		if errCode(res) != "conflict" {
			t.Fatalf("another key reusing the id: %+v", res.Error)
		}
		// The audit names the claimed user of the forged command, and the
		// key of the real one.
		var forged, genuine bool
		for _, a := range h.auditRecords("po", events.ActionStart) {
			forged = forged || (a.ClaimedUser == "test:alice" && a.User == "" && a.ErrorCode == events.CodeUnauthorized)
			genuine = genuine || (a.RequestID == id && a.User == "test:alice" && a.OK && a.KeyID == "k-alice")
		}
		if !forged || !genuine {
			t.Fatalf("audit: forged %v, genuine %v", forged, genuine)
		}
	})
}

// TestRepliesOnlyToAdmittedCommands: reply_to is honoured only once a
// command passed the admission: a forged or refused one sends nothing
// there (it could be another request's result subject).
func TestRepliesOnlyToAdmittedCommands(t *testing.T) {
	h := newHarnessWith(t, harnessOptions{Roots: []string{filepath.Clean(tempRoot(t))}, Admins: []string{"test:admin"}})
	d := setupDeployable(t, h, "po", nil)
	_ = d
	inbox := nats.NewInbox()
	replies, err := h.nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]rawCommand{
		"forbidden":     {project: "po", action: events.ActionStatus, cmd: events.Command{User: "test:nobody", ReplyTo: inbox}},
		"unknown":       {project: "ghost", action: events.ActionStatus, cmd: events.Command{User: "test:nobody", ReplyTo: inbox}},
		"reserved":      {project: "po", action: events.ActionStatus, cmd: events.Command{User: "test:admin", ReplyTo: "berth.evt.po.test:admin.x.result"}},
		"not a command": {project: "po", action: events.ActionStatus, cmd: events.Command{User: "test:admin", ReplyTo: inbox, Confirm: strings.Repeat("x", 200)}},
	} {
		c.cmd.ID = "reply-" + hostileRandom(t)
		// Its result may be refused apart, under the message's reference.
		sub := h.subscribeSubject(h.subjects.Prefix + ".evt." + c.project + ".>")
		h.publishRaw(c)
		res, _ := sub.result(t, time.Minute)
		if res.OK != nil && *res.OK {
			t.Fatalf("%s: ok", name)
		}
	}
	if m, err := replies.NextMsg(2 * time.Second); err == nil {
		t.Fatalf("a refused command replied on its reply_to: %s", m.Data)
	}
	h.publishRaw(rawCommand{project: "po", action: events.ActionStatus, cmd: events.Command{ID: "reply-ok", User: "test:admin", ReplyTo: inbox}})
	if _, err := replies.NextMsg(30 * time.Second); err != nil {
		t.Fatalf("an admitted command did not reply: %v", err)
	}
}

// TestEventsAreSigned: with --event-secret every event carries the
// worker's signature, which a client checks; an event published by anyone
// else does not verify.
func TestEventsAreSigned(t *testing.T) {
	h := newHarness(t, filepath.Clean(tempRoot(t)))
	eventSecret := []byte("the-workers-event-secret-012345")
	h.restartWith(func(c *Config) { c.EventSecret = eventSecret })
	configure(t, h, "po")
	sub, err := h.nc.SubscribeSync(h.subjects.AllEvents())
	if err != nil {
		t.Fatal(err)
	}
	res, _ := h.send("po", events.ActionStatus, events.Command{ID: "signed-events"})
	mustOK(t, res)
	n := 0
	for {
		m, err := sub.NextMsg(time.Second)
		if err != nil {
			break
		}
		if err := auth.VerifyEvent([][]byte{eventSecret}, m.Subject, m.Header, m.Data); err != nil {
			t.Fatalf("the worker's event on %s does not verify: %v", m.Subject, err)
		}
		n++
	}
	if n < 2 {
		t.Fatalf("%d events", n)
	}
	forged := h.subjects.Event("po", "test:alice", "signed-events", events.KindResult)
	if err := auth.VerifyEvent([][]byte{eventSecret}, forged, nats.Header{}, []byte(`{"ok":true}`)); err == nil {
		t.Fatal("an unsigned event verifies")
	}
	ts, sig := auth.Sign([]byte("not-the-workers-secret-0123456"), time.Now(), forged, []byte(`{"ok":true}`))
	if err := auth.VerifyEvent([][]byte{eventSecret}, forged, nats.Header{auth.HeaderTimestamp: {ts}, auth.HeaderSignature: {sig}}, []byte(`{"ok":true}`)); err == nil {
		t.Fatal("an event signed with another secret verifies")
	}
}

// TestWhereAProjectLivesIsGlobalAdmins: a project admin cannot point the
// project at other directories or compose projects; a deploy's workspace
// argument is the project's or an allowed one; and a directory swapped
// for a symbolic link after config.set is refused at the next plan.
func TestWhereAProjectLivesIsGlobalAdmins(t *testing.T) {
	root := filepath.Clean(tempRoot(t))
	h := newHarnessWith(t, harnessOptions{Roots: []string{root}, Admins: []string{"test:admin"}})
	d := setupDeployable(t, h, "po", map[string]any{"roles": map[string]string{"test:carol": "admin", "test:alice": "operator"}})
	other := setupDeployable(t, h, "pb", nil)
	cfg := map[string]any{"workspace": d.ws, "production": d.sample.Dir, "compose_project": d.sample.Project, "compose_files": d.sample.Files,
		"roles": map[string]string{"test:carol": "admin", "test:alice": "operator", "test:dave": "viewer"}}
	res, _ := h.send("po", events.ActionConfigSet, events.Command{User: "test:carol", Args: args(t, cfg)})
	mustOK(t, res) // roles: the project admin's to change
	for field, value := range map[string]any{"workspace": other.ws, "compose_project": "something-else", "workspaces": []string{other.sample.Dir}} {
		changed := map[string]any{}
		for k, v := range cfg {
			changed[k] = v
		}
		changed[field] = value
		res, _ := h.send("po", events.ActionConfigSet, events.Command{User: "test:carol", Args: args(t, changed)})
		if errCode(res) != "forbidden" || !strings.Contains(res.Error.Message, field) {
			t.Errorf("a project admin changing %s: %+v", field, res.Error)
		}
	}
	// A deploy from another project's production: refused, whatever the roots.
	res, _ = h.send("po", events.ActionDeploy, events.Command{User: "test:alice", Args: args(t, map[string]any{"workspace": other.sample.Dir})})
	if errCode(res) != "forbidden" {
		t.Fatalf("deploy from another project's directory: %+v", res.Error)
	}
	// A worktree a global admin allowed is fine.
	worktree := filepath.Join(t.TempDir(), "worktree")
	copyTree(t, d.ws, worktree)
	cfg["workspaces"] = []string{worktree}
	res, _ = h.send("po", events.ActionConfigSet, events.Command{User: "test:admin", Args: args(t, cfg)})
	mustOK(t, res)
	res, _ = h.send("po", events.ActionDeploy, events.Command{User: "test:alice", Args: args(t, map[string]any{"workspace": worktree})})
	if c := errCode(res); c != "" && c != "confirmation_required" {
		t.Fatalf("deploy from an allowed worktree: %+v", res.Error)
	}
	// Production swapped for a link to a directory outside the roots.
	outside, err := os.MkdirTemp("/var/tmp", "berth-outside")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(outside)
	moved := d.sample.Dir + ".moved"
	if err := os.Rename(d.sample.Dir, moved); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = os.Remove(d.sample.Dir); _ = os.Rename(moved, d.sample.Dir) }()
	if err := os.Symlink(outside, d.sample.Dir); err != nil {
		t.Fatal(err)
	}
	res, _ = h.send("po", events.ActionDeploy, events.Command{User: "test:alice"})
	if errCode(res) != "bad_request" || !strings.Contains(res.Error.Message, "production") {
		t.Fatalf("deploy into a production swapped for a link: %+v", res.Error)
	}
	entries, _ := os.ReadDir(outside)
	if len(entries) != 0 {
		t.Fatalf("the deploy wrote outside the roots: %v", entries)
	}
}

// TestFollowsCannotStallTheReadLane: one viewer starting 40 follows gets
// its share (the rest are refused at once), and another user's status of
// another project is answered as fast as when nothing runs.
func TestFollowsCannotStallTheReadLane(t *testing.T) {
	h := newHarnessWith(t, harnessOptions{Roots: []string{filepath.Clean(tempRoot(t))}, Admins: []string{"test:admin"}})
	configure(t, h, "po")
	res, _ := h.send("po", events.ActionConfigSet, events.Command{User: "test:admin", Args: json.RawMessage(
		`{"workspace":"` + mustConfig(t, h, "po").Workspace + `","production":"` + mustConfig(t, h, "po").Production +
			`","compose_project":"` + mustConfig(t, h, "po").ComposeProject + `","strategy":"symlink","anonymous_viewers":true}`)})
	mustOK(t, res)
	configure(t, h, "pb")
	quiet := statusLatency(t, h, "pb", 5)
	var subs []*eventSub
	for i := range 40 {
		id := "follow-" + hostileRandom(t)
		subs = append(subs, h.subscribe("po", id))
		h.publishRaw(rawCommand{project: "po", action: events.ActionLogs,
			cmd: events.Command{ID: id, User: "test:viewer", Args: json.RawMessage(`{"follow_s":20,"tail":1}`)}})
		_ = i
	}
	busy := statusLatency(t, h, "pb", 5)
	refused := 0
	for _, s := range subs {
		s.mu.Lock()
		for _, ev := range s.evs {
			if ev.Kind == events.KindResult && errCode(ev) == "conflict" {
				refused++
			}
		}
		s.mu.Unlock()
	}
	t.Logf("status p100 of pb: %v quiet, %v with 40 follows of po; %d follows refused", quiet, busy, refused)
	if refused < 40-4 {
		t.Fatalf("only %d of 40 follows of one user were refused", refused)
	}
	if busy > quiet+time.Second {
		t.Fatalf("status took %v with the follows running, %v without", busy, quiet)
	}
}

// statusLatency is the slowest of n refreshed status commands.
func statusLatency(t *testing.T, h *harness, project string, n int) time.Duration {
	t.Helper()
	var worst time.Duration
	for range n {
		begin := time.Now()
		res, _ := h.send(project, events.ActionStatus, events.Command{User: "test:admin", Args: json.RawMessage(`{"refresh":true}`)})
		mustOK(t, res)
		worst = max(worst, time.Since(begin))
	}
	return worst
}

func mustConfig(t *testing.T, h *harness, project string) *berth.Project {
	t.Helper()
	res, _ := h.send(project, events.ActionConfigGet, events.Command{User: "test:admin"})
	mustOK(t, res)
	p := decodeData[berth.Project](t, res)
	return &p
}

// TestLogsGrepCannotRecoverSecrets: a line holding a URL password and a
// production .env value is shown redacted, and grep for a prefix of either
// secret matches nothing, through the command, a follow and the query; a
// grep for the visible text still finds the line.
func TestLogsGrepCannotRecoverSecrets(t *testing.T) {
	h := newHarness(t, filepath.Clean(tempRoot(t)))
	sample := testenv.SampleApp(t, testenv.SampleEnv("STARTUP_LOG", "connecting to postgres://app:s3cretpass@db/app with key Zq8pLmN4vX2"))
	if err := os.WriteFile(filepath.Join(sample.Dir, ".env"), []byte("API_KEY=Zq8pLmN4vX2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	res, _ := h.send("po", events.ActionConfigSet, events.Command{User: "test:admin", Args: args(t, map[string]any{
		"workspace": sample.Dir, "production": sample.Dir, "compose_project": sample.Project, "strategy": "symlink"})})
	mustOK(t, res)
	count := func(via string, a map[string]any) (int, string) {
		t.Helper()
		var data json.RawMessage
		if via == "query" {
			m := h.query(h.subjects.Query("po", events.EndpointLogs), string(mustJSON(t, map[string]any{"user": "test:alice", "args": a})))
			if code := queryErr(t, m); code != "" {
				t.Fatalf("query: %s", code)
			}
			data = m.Data
		} else {
			res, evs := h.send("po", events.ActionLogs, events.Command{Args: args(t, a)})
			mustOK(t, res)
			data = res.Data
			for _, e := range evs {
				for _, l := range e.Lines {
					data = append(data, []byte(l.Line)...)
				}
			}
		}
		var lr struct {
			Count int `json:"count"`
		}
		_ = json.Unmarshal(data, &lr)
		return lr.Count, string(data)
	}
	for _, via := range []string{"command", "query"} {
		n, text := count(via, map[string]any{"service": "web", "tail": 1000, "grep": "postgres"})
		if n != 1 || strings.Contains(text, "s3cretpass") || strings.Contains(text, "Zq8pLmN4vX2") {
			t.Fatalf("%s: grep for the visible text: %d lines: %s", via, n, text)
		}
		for _, guess := range []string{"s3cr", "app:s3", "Zq8", "pLmN4"} {
			if n, text := count(via, map[string]any{"service": "web", "tail": 1000, "grep": guess}); n != 0 {
				t.Fatalf("%s: grep %q for a prefix of a hidden secret matched %d lines: %s", via, guess, n, text)
			}
		}
	}
	if n, text := count("command", map[string]any{"service": "web", "tail": 1000, "grep": "s3cr", "follow_s": 2}); n != 0 || strings.Contains(text, "s3cretpass") {
		t.Fatalf("follow: grep for a prefix of a hidden secret matched %d lines: %s", n, text)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestDeployGuardsProduction: a release whose link reaches outside
// production through a link an earlier release shipped is refused in the
// plan; a .berthignore that re-includes .env does not overwrite
// production's own; a compose change that mounts the Docker socket is
// listed first in the plan, and refused with compose_policy refuse.
func TestDeployGuardsProduction(t *testing.T) {
	h := newHarness(t, filepath.Clean(tempRoot(t)))
	d := setupDeployable(t, h, "po", map[string]any{"stabilize_s": 1})

	// Release 1 ships a link that stays inside: a/b/c/up -> ../../..
	if err := os.MkdirAll(filepath.Join(d.ws, "a/b/c"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../../..", filepath.Join(d.ws, "a/b/c/up")); err != nil {
		t.Fatal(err)
	}
	mustOK(t, deployNow(t, h, "po"))
	// Release 2 leaves it alone and adds x -> a/b/c/up/../../../..: in
	// production, through a/b/c/up, that is the root of the host.
	d.write(t, ".berthignore", "a/b/c/up\n")
	if err := os.Symlink("a/b/c/up/../../../..", filepath.Join(d.ws, "x")); err != nil {
		t.Fatal(err)
	}
	res, _ := h.send("po", events.ActionDeploy, events.Command{User: "test:alice"})
	if errCode(res) != "bad_request" || !strings.Contains(res.Error.Message, "x") {
		t.Fatalf("a release with a link leaving production through a shipped link: %+v", res.Error)
	}
	if _, err := os.Lstat(filepath.Join(d.sample.Dir, "x")); !os.IsNotExist(err) {
		t.Fatalf("the link reached production: %v", err)
	}
	_ = os.Remove(filepath.Join(d.ws, "x"))

	// A .berthignore that re-includes .env, with a workspace .env that would
	// break the app: production's own .env stays.
	d.write(t, ".berthignore", "a/b/c/up\n!.env\n")
	d.write(t, ".env", "FAIL_HEALTH=1\n")
	cd, _ := plan(t, h, "po", events.ActionDeploy, "test:alice", nil)
	var dp handlers.DeployPlan
	raw, _ := json.Marshal(cd.Plan)
	_ = json.Unmarshal(raw, &dp)
	if !slices.Contains(dp.Files.Protected, ".env") {
		t.Fatalf("the plan does not list production's .env as protected: %+v", dp.Files)
	}
	res, _ = confirm(t, h, "po", events.ActionDeploy, "test:alice", cd.Token)
	mustOK(t, res)
	d.checkUntouched(t)

	// A compose change that mounts the Docker socket into worker.
	compose := d.read(t, "compose.yml")
	d.write(t, "compose.yml", strings.Replace(compose, `    command: ["worker"]`,
		"    command: [\"worker\"]\n    volumes:\n      - /var/run/docker.sock:/var/run/docker.sock:ro", 1))
	cd, _ = plan(t, h, "po", events.ActionDeploy, "test:alice", nil)
	raw, _ = json.Marshal(cd.Plan)
	_ = json.Unmarshal(raw, &dp)
	if len(dp.PrivilegeWidening) != 1 || dp.PrivilegeWidening[0].Service != "worker" || dp.PrivilegeWidening[0].Setting != "docker_socket" {
		t.Fatalf("the plan's privilege_widening: %+v", dp.PrivilegeWidening)
	}
	res, _ = h.send("po", events.ActionConfigSet, events.Command{User: "test:admin", Args: args(t, map[string]any{
		"workspace": d.ws, "production": d.sample.Dir, "compose_project": d.sample.Project, "compose_files": d.sample.Files,
		"stabilize_s": 1, "compose_policy": "refuse"})})
	mustOK(t, res)
	res, _ = h.send("po", events.ActionDeploy, events.Command{User: "test:alice"})
	if errCode(res) != "forbidden" || !strings.Contains(res.Error.Message, "docker_socket") {
		t.Fatalf("a widening under compose_policy refuse: %+v", res.Error)
	}
}

// TestPublisherShowsWireTextInert runs the publisher against a real worker
// whose container logs hold terminal escapes: what reaches the terminal
// holds no escape, no carriage return, and shows what was there.
func TestPublisherShowsWireTextInert(t *testing.T) {
	h := newHarness(t, filepath.Clean(tempRoot(t)))
	sample := testenv.SampleApp(t, testenv.SampleEnv("STARTUP_LOG", "title\x1b]0;pwned\x07 clear\x1b[2J back\roverwritten \u202eevil"))
	res, _ := h.send("po", events.ActionConfigSet, events.Command{User: "test:admin", Args: args(t, map[string]any{
		"workspace": sample.Dir, "production": sample.Dir, "compose_project": sample.Project, "strategy": "symlink"})})
	mustOK(t, res)
	bin := filepath.Join(t.TempDir(), "publisher")
	root, err := testenv.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	build := exec.Command("go", "build", "-o", bin, "./cmd/publisher")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the publisher: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "logs", "po", "--arg", "service=web", "--arg", "tail=20", "--user", "test:alice", "--server", h.cfg.NATSURL)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("publisher logs: %v\n%s", err, out)
	}
	text := string(out)
	if strings.ContainsAny(text, "\x1b\r\u202e\x07") {
		t.Fatalf("the terminal got escapes: %q", text)
	}
	if !strings.Contains(text, `\x1b]0;pwned`) || !strings.Contains(text, "overwritten") {
		t.Fatalf("the line is not shown as inert text: %q", text)
	}
}
