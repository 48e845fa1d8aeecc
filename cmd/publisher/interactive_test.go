package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sys/unix"

	"github.com/berth-ops/berth/events"
)

// openPTY opens a pseudo-terminal pair through /dev/ptmx, as a terminal
// emulator does: unlock the slave (TIOCSPTLCK), ask its number
// (TIOCGPTN), open /dev/pts/<n>. The slave is the publisher's terminal
// (its stdin, stdout and stderr); the test reads what it shows and
// types on the master. Without /dev/ptmx the test is skipped.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	fd := int(m.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		m.Close()
		t.Skipf("unlockpt: %v", err)
	}
	n, err := unix.IoctlGetUint32(fd, unix.TIOCGPTN)
	if err != nil {
		m.Close()
		t.Skipf("ptsname: %v", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		m.Close()
		t.Skipf("open the pty slave: %v", err)
	}
	t.Cleanup(func() { s.Close(); m.Close() })
	return m, s
}

// screenReader collects what a pseudo-terminal shows.
type screenReader struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *screenReader) read(m *os.File) {
	b := make([]byte, 4096)
	for {
		n, err := m.Read(b)
		s.mu.Lock()
		s.buf.Write(b[:n])
		s.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// text is what was shown so far, with the terminal's CRLF as LF.
func (s *screenReader) text() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.ReplaceAll(s.buf.String(), "\r\n", "\n")
}

// waitFor waits until the screen shows want.
func (s *screenReader) waitFor(t *testing.T, want string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(s.text(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("the terminal does not show %q:\n%s", want, s.text())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// multiWorker is a fake worker for n commands, in turn: it answers each
// with respond's events, as fakeWorker does, and returns the commands.
func multiWorker(t *testing.T, js jetstream.JetStream, n int, respond func(i int, cmd *events.Command) []events.Event) func() []*events.Command {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	cons, err := js.CreateOrUpdateConsumer(ctx, "BERTH_CMD", jetstream.ConsumerConfig{Durable: "multi-worker", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	var got []*events.Command
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer cancel()
		subj := events.NewSubjects("")
		for i := range n {
			msg, err := cons.Next(jetstream.FetchContext(ctx))
			if err != nil {
				t.Errorf("multi worker: command %d: %v", i, err)
				return
			}
			msg.Ack()
			cmd, err := events.DecodeCommand(msg.Data())
			if err != nil {
				t.Errorf("multi worker: %v", err)
				return
			}
			got = append(got, cmd)
			project, action, _ := subj.ParseCommand(msg.Subject())
			for seq, ev := range respond(i, cmd) {
				ev.RequestID, ev.Project, ev.Action, ev.User, ev.Seq = cmd.ID, project, action, cmd.User, uint64(seq+1)
				ev.TS = events.Timestamp(time.Now())
				body, _ := json.Marshal(ev)
				if _, err := js.Publish(ctx, subj.Event(project, cmd.User, cmd.ID, ev.Kind), body); err != nil {
					t.Errorf("multi worker: %v", err)
					return
				}
			}
		}
	}()
	return func() []*events.Command { <-done; return got }
}

// planThenRun answers a deploy: the first command with a plan and its
// token, a command confirming the token with a release.
func planThenRun(i int, cmd *events.Command) []events.Event {
	plan := json.RawMessage(`{"strategy":"copy","files":{"added":1,"added_paths":["a.txt"]},"needs_build":false,"steps":["lock","sync","up","verify"]}`)
	exp := time.Now().Add(5 * time.Minute)
	if cmd.Confirm == "" {
		data, _ := json.Marshal(map[string]any{"plan": plan, "token": "tok-1", "expires_at": exp, "confirm_by": "the same user"})
		return []events.Event{
			{Kind: events.KindAccepted},
			{Kind: events.KindProgress, Step: "plan", Message: "planning"},
			{Kind: events.KindConfirm, Token: "tok-1", ExpiresAt: events.Timestamp(exp), Plan: plan},
			{Kind: events.KindResult, OK: ptr(false), Data: data, Error: &events.Error{Code: events.CodeConfirmationRequired,
				Message: "deploy of po needs confirmation"}},
		}
	}
	if cmd.Confirm != "tok-1" {
		return []events.Event{{Kind: events.KindResult, OK: ptr(false), Error: &events.Error{Code: events.CodeConfirmationInvalid, Message: "bad token " + cmd.Confirm}}}
	}
	return []events.Event{
		{Kind: events.KindAccepted},
		{Kind: events.KindProgress, Step: "plan", Message: "re-checking the confirmed plan"},
		{Kind: events.KindProgress, Step: "up", Message: "docker compose up"},
		{Kind: events.KindResult, OK: ptr(true), DurationMS: ptr(int64(1200)), Data: json.RawMessage(
			`{"release":"r-2","changed":true,"files":{"added":1},"services":[{"service":"web","state":"running","ready_by":"stable","ready_after_ms":900}],"steps_ms":{"sync":3,"up":800}}`)},
	}
}

// On a terminal, deploy shows the plan, asks, and on "y" confirms it with
// the plan's token as a new command, and shows that one's progress: the
// publisher's stdin, stdout and stderr are the slave of a
// pseudo-terminal the test opens itself (openPTY), reading the screen
// and typing on the master.
func TestInteractiveConfirmOnATerminal(t *testing.T) {
	for _, answer := range []string{"y", "n"} {
		t.Run(answer, func(t *testing.T) {
			s, _, js := setupStreams(t)
			master, slave := openPTY(t)
			scr := &screenReader{}
			go scr.read(master)
			n := 2
			if answer == "n" {
				n = 1
			}
			wait := multiWorker(t, js, n, planThenRun)
			codeCh := make(chan int, 1)
			getenv := env(map[string]string{"TERM": "xterm", "NO_COLOR": "1"})
			go func() {
				codeCh <- runIO(t.Context(), []string{"deploy", "po", "-s", s.ClientURL(), "--user", "test:1", "--id", "first-1"},
					stdio{in: slave, out: slave, err: slave}, getenv)
			}()
			scr.waitFor(t, "Deploy to po? [y/N] ")
			shown := scr.text()
			for _, want := range []string{"deploy po needs confirmation", "+ a.txt", "steps:     lock → sync → up → verify", "expires:   "} {
				if !strings.Contains(shown, want) {
					t.Fatalf("before the question, the terminal lacks %q:\n%s", want, shown)
				}
			}
			for _, not := range []string{"tok-1", "to confirm, run", "confirmation required"} {
				if strings.Contains(shown, not) {
					t.Fatalf("the terminal shows %q though the publisher asks:\n%s", not, shown)
				}
			}
			if _, err := master.Write([]byte(answer + "\n")); err != nil {
				t.Fatal(err)
			}
			var code int
			select {
			case code = <-codeCh:
			case <-time.After(30 * time.Second):
				t.Fatalf("no exit after the answer:\n%s", scr.text())
			}
			cmds := wait()
			if code != exitOK {
				t.Fatalf("exit %d:\n%s", code, scr.text())
			}
			if answer == "n" {
				scr.waitFor(t, "not confirmed; nothing was done")
				return
			}
			if len(cmds) != 2 || cmds[0].Confirm != "" || cmds[1].Confirm != "tok-1" || cmds[1].ID == "first-1" || cmds[1].User != "test:1" {
				t.Fatalf("commands: %+v %+v", cmds[0], cmds[1])
			}
			scr.waitFor(t, "ok in 1.2s")
			out := scr.text()
			t.Logf("the terminal:\n%s", strings.Join(screen(out), "\n"))
			for _, want := range []string{"accepted " + cmds[1].ID, "✓ up", "deployed release r-2", "web      running"} {
				if !strings.Contains(out, want) {
					t.Fatalf("after the answer, the terminal lacks %q:\n%s", want, out)
				}
			}
		})
	}
}

// --yes confirms without asking, off a terminal too; a plan only another
// user may confirm is left to them.
func TestYesConfirmsWithoutAsking(t *testing.T) {
	s, _, js := setupStreams(t)
	wait := multiWorker(t, js, 2, planThenRun)
	code, out, errw := runPublisher(t, s, "deploy", "po", "--yes")
	cmds := wait()
	if code != exitOK || len(cmds) != 2 || cmds[1].Confirm != "tok-1" {
		t.Fatalf("exit %d, commands %+v\nstdout:\n%s\nstderr:\n%s", code, cmds, out, errw)
	}
	if !strings.Contains(out, "deploy po needs confirmation") || strings.Contains(out, "to confirm, run") ||
		!strings.Contains(errw, "confirming (--yes)\naccepted ") || !strings.Contains(out, "deployed release r-2") {
		t.Fatalf("stdout:\n%s\nstderr:\n%s", out, errw)
	}

	// --json --yes: the events of both requests, JSON lines only.
	wait = multiWorker(t, js, 2, planThenRun)
	code, out, errw = runPublisher(t, s, "deploy", "po", "-y", "--json")
	wait()
	if code != exitOK || errw != "" || strings.Count(out, "\n") != 8 {
		t.Fatalf("json: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errw)
	}

	// A plan that changed before it ran: --yes does not confirm the new
	// one blindly; it shows it, with the command that confirms it: exit 1.
	wait = multiWorker(t, js, 2, func(i int, cmd *events.Command) []events.Event {
		if i == 0 {
			return planThenRun(i, cmd)
		}
		exp := time.Now().Add(5 * time.Minute)
		plan := json.RawMessage(`{"strategy":"copy","files":{"added":2,"added_paths":["a.txt","new.txt"]},"steps":["lock"]}`)
		data, _ := json.Marshal(map[string]any{"plan": plan, "token": "tok-new", "expires_at": exp, "confirm_by": "the same user"})
		return []events.Event{
			{Kind: events.KindConfirm, Token: "tok-new", ExpiresAt: events.Timestamp(exp), Plan: plan},
			{Kind: events.KindResult, OK: ptr(false), Data: data, Error: &events.Error{Code: events.CodePlanChanged,
				Message: "the plan changed since it was confirmed; nothing was done"}},
		}
	})
	code, out, errw = runPublisher(t, s, "deploy", "po", "--yes")
	if cmds := wait(); len(cmds) != 2 || code != exitFailed || !strings.Contains(out, "+ new.txt") ||
		!strings.Contains(out, "publisher deploy po --confirm tok-new") || !strings.Contains(errw, "plan changed: the plan changed since it was confirmed") {
		t.Fatalf("plan changed: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errw)
	}

	// A second approver's plan: --yes cannot confirm it.
	wait = multiWorker(t, js, 1, func(int, *events.Command) []events.Event {
		data, _ := json.Marshal(map[string]any{"plan": map[string]any{"steps": []string{"lock"}}, "token": "tok-2",
			"expires_at": time.Now().Add(time.Minute), "confirm_by": "another user"})
		return []events.Event{{Kind: events.KindResult, OK: ptr(false), Data: data,
			Error: &events.Error{Code: events.CodeConfirmationRequired, Message: "deploy of po needs confirmation"}}}
	})
	code, out, errw = runPublisher(t, s, "deploy", "po", "--yes", "--strict-exit")
	wait()
	if code != exitConfirm || !strings.Contains(errw, "--yes cannot confirm: project po needs a second approver") ||
		!strings.Contains(out, "the second approver runs:\n  publisher deploy po --confirm tok-2") {
		t.Fatalf("second approver: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errw)
	}
}

// A project the user may not see, named close to one they may: the
// publisher asks berth.q.projects, on that error path only, and suggests.
func TestSuggestProject(t *testing.T) {
	s, nc, js := setupStreams(t)
	var asked []string
	var mu sync.Mutex
	sub, err := nc.Subscribe("berth.q.projects", func(m *nats.Msg) {
		var q events.Query
		json.Unmarshal(m.Data, &q)
		mu.Lock()
		asked = append(asked, q.User)
		mu.Unlock()
		m.Respond([]byte(`{"projects":["demo","shop"],"count":2}`))
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	forbidden := func(cmd *events.Command) []events.Event {
		return []events.Event{{Kind: events.KindResult, OK: ptr(false), Error: &events.Error{Code: events.CodeForbidden,
			Message: cmd.User + " may not status on dmeo: it needs the viewer role"}}}
	}
	wait := fakeWorker(t, js, forbidden)
	code, _, errw := runPublisher(t, s, "status", "dmeo")
	wait()
	if code != exitFailed || !strings.HasSuffix(errw, "hint: did you mean demo? (publisher status demo)\n") {
		t.Fatalf("exit %d, stderr %q", code, errw)
	}
	mu.Lock()
	if len(asked) != 1 || asked[0] != "test:1" {
		t.Fatalf("asked %v", asked)
	}
	mu.Unlock()

	// Nothing close: no hint. An ok result: the question is not asked.
	wait = fakeWorker(t, js, forbidden)
	_, _, errw = runPublisher(t, s, "status", "zzzzzz")
	wait()
	if strings.Contains(errw, "did you mean") {
		t.Fatalf("stderr %q", errw)
	}
	wait = fakeWorker(t, js, statusEvents)
	runPublisher(t, s, "status", "demo")
	wait()
	mu.Lock()
	defer mu.Unlock()
	if len(asked) != 2 {
		t.Fatalf("berth.q.projects asked %d times, want 2 (the two errors)", len(asked))
	}
}

// On a terminal, a plan that changed before it ran is shown and asked
// again; "y" confirms the new plan with its own token.
func TestInteractivePlanChanged(t *testing.T) {
	s, _, js := setupStreams(t)
	master, slave := openPTY(t)
	scr := &screenReader{}
	go scr.read(master)
	wait := multiWorker(t, js, 3, func(i int, cmd *events.Command) []events.Event {
		if i != 1 {
			if cmd.Confirm == "tok-new" {
				c := *cmd
				c.Confirm = "tok-1" // the new plan's token: run it
				return planThenRun(i, &c)
			}
			return planThenRun(i, cmd)
		}
		exp := time.Now().Add(5 * time.Minute)
		plan := json.RawMessage(`{"strategy":"copy","files":{"added":2,"added_paths":["a.txt","new.txt"]},"steps":["lock"]}`)
		data, _ := json.Marshal(map[string]any{"plan": plan, "token": "tok-new", "expires_at": exp, "confirm_by": "the same user"})
		return []events.Event{
			{Kind: events.KindConfirm, Token: "tok-new", ExpiresAt: events.Timestamp(exp), Plan: plan},
			{Kind: events.KindResult, OK: ptr(false), Data: data, Error: &events.Error{Code: events.CodePlanChanged,
				Message: "the plan changed since it was confirmed; nothing was done"}},
		}
	})
	codeCh := make(chan int, 1)
	go func() {
		codeCh <- runIO(t.Context(), []string{"deploy", "po", "-s", s.ClientURL(), "--user", "test:1"},
			stdio{in: slave, out: slave, err: slave}, env(map[string]string{"TERM": "xterm", "NO_COLOR": "1"}))
	}()
	scr.waitFor(t, "Deploy to po? [y/N] ")
	master.Write([]byte("y\n"))
	scr.waitFor(t, "The plan changed. Deploy to po? [y/N] ")
	if shown := scr.text(); !strings.Contains(shown, "+ new.txt") || strings.Contains(shown, "tok-new") {
		t.Fatalf("the new plan:\n%s", shown)
	}
	master.Write([]byte("yes\n"))
	var code int
	select {
	case code = <-codeCh:
	case <-time.After(30 * time.Second):
		t.Fatalf("no exit:\n%s", scr.text())
	}
	cmds := wait()
	scr.waitFor(t, "deployed release r-2")
	if code != exitOK || len(cmds) != 3 || cmds[1].Confirm != "tok-1" || cmds[2].Confirm != "tok-new" {
		t.Fatalf("exit %d, commands %+v:\n%s", code, cmds, scr.text())
	}
}
