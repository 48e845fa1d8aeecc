package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-ops/berth/events"
)

// A step followed by the rollback step failed: it is marked ✗, never ✓;
// the rollback step is the rollback's, done when it rolled back. In a
// rollback action, whose first step is named rollback, nothing of that.
func TestLiveViewMarksTheStepThatFailed(t *testing.T) {
	run := func(action string, steps []string, result *events.Event) []string {
		var term bytes.Buffer
		r := &renderer{out: &term, errw: &term, id: "r1", action: action, project: "po", live: newTestLive(&term, 72)}
		r.live.action = action
		for _, s := range steps {
			r.event(&events.Event{Kind: events.KindProgress, Step: s, Message: s + " starts"}, nil)
		}
		r.event(result, nil)
		return screen(term.String())
	}
	failed := func(data string) *events.Event {
		return &events.Event{Kind: events.KindResult, OK: ptr(false), Data: json.RawMessage(data),
			Error: &events.Error{Code: events.CodeHealthFailed, Message: "web is unhealthy"}}
	}
	mark := func(lines []string, step string) string {
		for _, l := range lines {
			if f := strings.Fields(l); len(f) > 1 && f[1] == step && (f[0] == "✓" || f[0] == "✗") {
				return f[0]
			}
		}
		return "?"
	}
	got := run("deploy", []string{"build", "up", "rollback"}, failed(`{"rolled_back":true}`))
	if mark(got, "build") != "✓" || mark(got, "up") != "✗" || mark(got, "rollback") != "✓" {
		t.Fatalf("rolled back:\n%s", strings.Join(got, "\n"))
	}
	got = run("deploy", []string{"up", "rollback"}, failed(`{"rollback_pending":true}`))
	if mark(got, "up") != "✗" || mark(got, "rollback") != "✗" {
		t.Fatalf("rollback pending:\n%s", strings.Join(got, "\n"))
	}
	got = run("deploy", []string{"up", "verify"}, failed(`{}`))
	if mark(got, "up") != "✓" || mark(got, "verify") != "✗" {
		t.Fatalf("failed verify:\n%s", strings.Join(got, "\n"))
	}
	got = run("rollback", []string{"plan", "rollback", "up", "verify"}, &events.Event{Kind: events.KindResult, OK: ptr(true)})
	if mark(got, "plan") != "✓" || mark(got, "rollback") != "✓" || mark(got, "verify") != "✓" {
		t.Fatalf("rollback action:\n%s", strings.Join(got, "\n"))
	}
	// A plan to confirm is no failure of the plan step.
	data, _ := json.Marshal(map[string]any{"plan": map[string]any{}, "token": "t"})
	got = run("deploy", []string{"plan"}, &events.Event{Kind: events.KindResult, OK: ptr(false), Data: data,
		Error: &events.Error{Code: events.CodeConfirmationRequired, Message: "deploy of po needs confirmation"}})
	if mark(got, "plan") != "✓" {
		t.Fatalf("plan:\n%s", strings.Join(got, "\n"))
	}
}

// Compose's lines (log events of stream compose) show only with
// --verbose, under their step; the few a second progress repeats of them
// are then not printed again.
func TestVerboseComposeLines(t *testing.T) {
	evs := []*events.Event{
		{Kind: events.KindProgress, Step: "build", Message: "docker compose build"},
		{Kind: events.KindProgress, Step: "build", Message: "#1 load build definition"},
		{Kind: events.KindLog, Lines: []events.LogLine{{Stream: "compose", Line: "#1 load build definition"}, {Stream: "compose", Line: "#2 COPY app /app\x1b[2K"}}},
		{Kind: events.KindProgress, Step: "verify", Message: "web is up", Done: ptr(1), Total: ptr(1)},
		{Kind: events.KindLog, Lines: []events.LogLine{{Stream: "stdout", Line: "a container line"}}},
	}
	render := func(verbose, live bool) string {
		var term bytes.Buffer
		r := newTestRenderer(&term, &term)
		r.action, r.verbose = "deploy", verbose
		if live {
			r.live = newTestLive(&term, 72)
			r.live.verbose = verbose
		}
		for _, ev := range evs {
			r.event(ev, nil)
		}
		r.stopLive()
		if live {
			return strings.Join(screen(term.String()), "\n") + "\n"
		}
		return term.String()
	}
	if got, want := render(false, false), "[build] docker compose build\n[build] #1 load build definition\n[verify] web is up (1/1)\na container line\n"; got != want {
		t.Errorf("plain:\n%s\nwant:\n%s", got, want)
	}
	if got, want := render(true, false), "[build] docker compose build\n[build] | #1 load build definition\n[build] | #2 COPY app /app\\x1b[2K\n[verify] web is up (1/1)\na container line\n"; got != want {
		t.Errorf("plain, verbose:\n%s\nwant:\n%s", got, want)
	}
	live := render(false, true)
	if strings.Contains(live, "#2 COPY") || !strings.Contains(live, "  build    │ #1 load build definition\n") {
		t.Errorf("live:\n%s", live)
	}
	live = render(true, true)
	if strings.Count(live, "#1 load build definition") != 1 || !strings.Contains(live, "  build    │ #2 COPY app /app\\x1b[2K\n") {
		t.Errorf("live, verbose:\n%s", live)
	}
}

// Compose's last lines end a failed run's error message and come in its
// data: printed once, in the data's place.
func TestWithoutOutput(t *testing.T) {
	out := []string{"#1 load", "#2 ERROR: not found", "failed to solve: not found"}
	for _, c := range []struct{ msg, want string }{
		{"docker compose build failed (exit code 17): #1 load\n#2 ERROR: not found\nfailed to solve: not found",
			"docker compose build failed (exit code 17) (its output above)"},
		{"docker compose up failed (exit code 1): …ERROR: not found\nfailed to solve: not found",
			"docker compose up failed (exit code 1) (its output above)"},
		{"docker compose up failed (exit code 1): #1 load\n#2 ERROR: not found\nfailed to solve: not found; production was rolled back, but the previous release did not come up healthy either: x",
			"docker compose up failed (exit code 1) (its output above); production was rolled back, but the previous release did not come up healthy either: x"},
		{"service web failed: unhealthy", "service web failed: unhealthy"},
		{"something: else entirely", "something: else entirely"},
	} {
		if got := withoutOutput(c.msg, out); got != c.want {
			t.Errorf("withoutOutput(%q) = %q, want %q", c.msg, got, c.want)
		}
	}
	if got := withoutOutput("a: b", nil); got != "a: b" {
		t.Errorf("no output: %q", got)
	}
}

// Plans as text: what widens reach first, the compose diff with risky
// lines marked, the files with their counts and first paths, protected
// and kept ones; a rollback to the state before every kept release.
func TestPlanText(t *testing.T) {
	deploy := `{"privilege_widening":[{"service":"web","setting":"privileged","value":"true","new":true},
	  {"service":"web","setting":"docker_socket","value":"/var/run/docker.sock:/var/run/docker.sock"}],
	  "compose_diff":[{"file":"compose.yml","lines":["   web:","+    privileged: true","+    network_mode: host","-    image: a","+    image: b","+    devices:","+      - /dev/kvm","+    volumes:","+      - ./data:/data","+      - /var/run/docker.sock:/var/run/docker.sock"],"truncated":true}],
	  "strategy":"copy","workspace":"/ws","production":"/prod",
	  "files":{"added":8,"modified":0,"deleted":1,"added_paths":["a","b","c","d","e","f"],"deleted_paths":["old"],
	    "kept":[".env","data/"],"kept_count":2,"protected":[".env.prod"],"protected_count":3,"bytes":2048},
	  "needs_build":false,"steps":["lock","backup","sync","up","verify"]}`
	var b strings.Builder
	renderPlan(&b, "deploy", []byte(deploy), style{loc: time.UTC})
	want := `! widens reach: service web: privileged true (a new service)
! widens reach: service web: docker_socket /var/run/docker.sock:/var/run/docker.sock
from /ws
  to /prod
compose.yml:
     web:
! +    privileged: true
! +    network_mode: host
  -    image: a
  +    image: b
! +    devices:
! +      - /dev/kvm
  +    volumes:
  +      - ./data:/data
! +      - /var/run/docker.sock:/var/run/docker.sock
  (cut: the diff is longer)
files:     8 added, 0 modified, 1 deleted, 2 kept, 3 protected (2.0 kB to copy)
  + a
  + b
  + c
  + d
  + e
    and 3 more added
  - old
  kept (production's own, left alone): .env, data/
  protected (production's secrets, never deployed over): .env.prod and 2 more
build:     no
steps:     lock → backup → sync → up → verify
`
	if b.String() != want {
		t.Errorf("deploy plan:\n%s\nwant:\n%s", b.String(), want)
	}

	// How each service is replaced.
	b.Reset()
	renderPlan(&b, "deploy", []byte(`{"strategy":"copy","files":{"modified":1,"modified_paths":["version.txt"]},"needs_build":true,
	  "rollout":{"start_first":["web"],"recreate":["proxy"],"refused":[{"service":"db","reason":"publishes the fixed host port 5432"}],"one_shots":["migrate"]},
	  "steps":["lock","backup","sync","build","up","verify"]}`), style{loc: time.UTC})
	want = `files:     0 added, 1 modified, 0 deleted
  ~ version.txt
build:     yes, the images are built
start-first: web (new containers start beside the old; no downtime)
recreate:  proxy (stopped, then started, when changed)
! db is recreated, not start-first: publishes the fixed host port 5432
one-shots: migrate run once, before the switch; a rollback does not undo them
steps:     lock → backup → sync → build → up → verify
`
	if b.String() != want {
		t.Errorf("deploy plan with a rollout:\n%s\nwant:\n%s", b.String(), want)
	}

	b.Reset()
	renderPlan(&b, "rollback", []byte(`{"undo":[{"id":"r2","user":"cli:bob","created_at":"2026-01-02T10:00:00Z","added":1}],
	  "target":"","target_note":"the files and images production had before the oldest kept release",
	  "files_restored":1,"files_removed":1,"images":{},"steps":["lock","rollback","up","verify"]}`), style{loc: time.UTC})
	want = `returns to the files and images production had before the oldest kept release
undoes 1 release:
  r2  2026-01-02 10:00:00Z  cli:bob  +1 ~0 -0
files:     1 restored, 1 removed
steps:     lock → rollback → up → verify
`
	if b.String() != want {
		t.Errorf("rollback plan:\n%s\nwant:\n%s", b.String(), want)
	}

	// A plan of another shape stays JSON.
	b.Reset()
	renderPlan(&b, "deploy", []byte(`{"something":"else"}`), style{})
	if !strings.HasPrefix(b.String(), "plan:\n  {\n    \"something\"") {
		t.Errorf("unknown plan:\n%s", b.String())
	}
}

// poison appends hostile characters to every string of a JSON value but
// the fields that choose how an event is rendered.
func poison(v any) any {
	const bad = "\x1b]0;pwned\x07\u202e\r\n\u009b2J\x7f"
	switch x := v.(type) {
	case string:
		return x + bad
	case []any:
		for i := range x {
			x[i] = poison(x[i])
		}
	case map[string]any:
		for k, e := range x {
			switch k {
			case "kind", "code", "stream", "confirm_by":
				continue
			}
			x[k] = poison(e)
		}
	}
	return v
}

// The golden events with hostile characters in every string: whatever
// the text renderers make of them, the terminal gets no character it
// would act on.
func TestGoldenHostile(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(goldenDir, "*.json"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var evs []any
		if err := json.Unmarshal(b, &evs); err != nil {
			t.Fatal(err)
		}
		var raw []json.RawMessage
		for _, ev := range evs {
			p, _ := json.Marshal(poison(ev))
			raw = append(raw, p)
		}
		for _, v := range goldenVariants {
			for _, color := range []bool{false, true} {
				out := renderGolden(t, raw, func(r *renderer, term *bytes.Buffer, clock func() time.Time) {
					v.setup(r, term, clock)
					r.color, r.errColor, r.verbose = color, color, true
				})
				if !strings.Contains(out, `\x1b]0;pwned\a`) {
					t.Errorf("%s%s: the hostile text does not show:\n%s", f, v.suffix, out)
				}
				assertTerminalSafe(t, withoutOwnSequences(out), true)
			}
		}
	}
}

// TestRolloutResultText: results name the start-first rollouts, and a
// restart that rolled out every service says nothing was down.
func TestRolloutResultText(t *testing.T) {
	var b strings.Builder
	if err := resultText(&b, "restart", []byte(`{"services":[{"service":"web","state":"running","health":"healthy","ready_by":"healthy","ready_after_ms":2000}],
	  "downtime_s":0,"rollouts":[{"service":"web","replaced":1,"ready_after_ms":2267,"total_ms":3473}]}`), style{}); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if strings.Contains(out, "down for") || !strings.Contains(out, "start-first: web, 1 replaced, new ready after 2.3s, old removed after 3.5s") {
		t.Errorf("restart result:\n%s", out)
	}
	b.Reset()
	if err := resultText(&b, "deploy", []byte(`{"release":"r1","changed":true,"files":{"modified":1},"rollouts":[{"service":"web","replaced":2,"ready_after_ms":900,"total_ms":1900}]}`), style{}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "start-first: web, 2 replaced") {
		t.Errorf("deploy result:\n%s", b.String())
	}
}
