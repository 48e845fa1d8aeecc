package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/berth-ops/berth/events"
)

const statusData = `{
  "project": "po",
  "services": [
    {"service": "web", "container": "po-web-1", "state": "running", "health": "healthy",
     "uptime_s": 11520, "started_at": "2026-01-01T00:00:00Z", "restart_count": 0, "exit_code": 0,
     "image": "ghcr.io/acme/web:1.2", "ports": ["127.0.0.1:49153->8080/tcp", "9090/tcp"]},
    {"service": "db", "container": "po-db-1", "state": "exited", "exit_code": 137,
     "restart_count": 3, "image": "postgres:16", "uptime_s": 5},
    {"container": "po-worker-1", "state": "running", "uptime_s": 42, "health": "starting",
     "ports": [{"host_ip": "0.0.0.0", "host_port": 8081, "container_port": 80, "proto": "tcp"}]}
  ],
  "summary": {"running": 2, "total": 3, "healthy": false},
  "cached": true,
  "cached_at": "2026-01-01T03:12:00Z"
}`

func TestRenderStatus(t *testing.T) {
	var buf bytes.Buffer
	if err := renderStatus(&buf, []byte(statusData), false); err != nil {
		t.Fatal(err)
	}
	want := `project po (cached at 2026-01-01T03:12:00Z)
SERVICE      STATE         HEALTH    UPTIME  RESTARTS  IMAGE                 PORTS
web          running       healthy   3h12m   0         ghcr.io/acme/web:1.2  127.0.0.1:49153->8080/tcp, 9090/tcp
db           exited (137)  -         -       3         postgres:16           -
po-worker-1  running       starting  42s     -         -                     0.0.0.0:8081->80/tcp
summary: healthy=false running=2 total=3
`
	if got := buf.String(); got != want {
		t.Fatalf("status table:\n%s\nwant:\n%s", got, want)
	}
}

func TestRenderStatusTolerant(t *testing.T) {
	// Unexpected types and missing fields still give a table.
	var buf bytes.Buffer
	data := `{"services":[{"service":"web","state":"running","uptime_s":"soon","restart_count":"x"}],"extra":1}`
	if err := renderStatus(&buf, []byte(data), false); err != nil {
		t.Fatal(err)
	}
	want := "SERVICE  STATE    HEALTH  UPTIME  RESTARTS  IMAGE  PORTS\nweb      running  -       -       -         -      -\n"
	if buf.String() != want {
		t.Fatalf("got:\n%q\nwant:\n%q", buf.String(), want)
	}

	buf.Reset()
	if err := renderStatus(&buf, []byte(`{"project":"po","services":[]}`), false); err != nil {
		t.Fatal(err)
	}
	if buf.String() != "project po\nno containers\n" {
		t.Fatalf("empty: %q", buf.String())
	}

	// Not a status report at all: an error, and nothing printed.
	buf.Reset()
	if err := renderStatus(&buf, []byte(`["web"]`), false); err == nil || buf.Len() != 0 {
		t.Fatalf("array data: err %v, printed %q", err, buf.String())
	}
}

func TestRenderStatusColourKeepsAlignment(t *testing.T) {
	var buf bytes.Buffer
	if err := renderStatus(&buf, []byte(statusData), true); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if !strings.Contains(out, "\x1b[32mrunning\x1b[0m") || !strings.Contains(out, "\x1b[31mexited (137)\x1b[0m") {
		t.Fatalf("no colours in:\n%q", out)
	}
	var plain bytes.Buffer
	renderStatus(&plain, []byte(statusData), false)
	if stripANSI(out) != plain.String() {
		t.Fatalf("coloured table differs from the plain one once colours are removed:\n%s\n%s", stripANSI(out), plain.String())
	}
}

func stripANSI(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == 0x1b {
			for i < len(s) && s[i] != 'm' {
				i++
			}
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func TestRenderLogLines(t *testing.T) {
	lines := []events.LogLine{
		{Stream: "stdout", Line: "listening on :8080"},
		{Stream: "stderr", Line: "warning: slow\n"},
		{Stream: "stdout", TS: "2026-01-01T00:00:01.5Z", Line: "GET /"},
		{Stream: "stderr", TS: "2026-01-01T00:00:02Z", Line: "panic: boom"},
	}
	var buf bytes.Buffer
	renderLogLines(&buf, lines, false)
	want := `listening on :8080
stderr | warning: slow
2026-01-01T00:00:01.5Z GET /
2026-01-01T00:00:02Z stderr | panic: boom
`
	if buf.String() != want {
		t.Fatalf("got:\n%s\nwant:\n%s", buf.String(), want)
	}

	buf.Reset()
	renderLogLines(&buf, lines[:2], true)
	if buf.String() != "listening on :8080\n\x1b[31mwarning: slow\x1b[0m\n" {
		t.Fatalf("colour: %q", buf.String())
	}
}

func TestRenderLogsResult(t *testing.T) {
	data := `{"service":"web","container":"po-web-1","lines":[{"stream":"stdout","ts":"","line":"a"},{"stream":"stderr","line":"b"}],"count":2,"truncated":true,"note":"grep stopped after 64 MiB\u001b[2J; ask with since=2026-12-04T10:00:00Z"}`
	var out, errw bytes.Buffer
	if err := renderLogsResult(&out, &errw, []byte(data), false); err != nil {
		t.Fatal(err)
	}
	if out.String() != "a\nstderr | b\n" {
		t.Fatalf("out %q", out.String())
	}
	if !strings.Contains(errw.String(), "incomplete: grep stopped after 64 MiB") || strings.Contains(errw.String(), "\x1b") {
		t.Fatalf("errw %q", errw.String())
	}
}

func ptr[T any](v T) *T { return &v }

func newTestRenderer(out, errw *bytes.Buffer) *renderer {
	return &renderer{out: out, errw: errw, id: "r1", action: "status", project: "po",
		now: func() time.Time { return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) }}
}

func TestRendererEvents(t *testing.T) {
	var out, errw bytes.Buffer
	r := newTestRenderer(&out, &errw)
	r.event(&events.Event{Kind: events.KindAccepted, RequestID: "r1"}, nil)
	r.event(&events.Event{Kind: events.KindProgress, Step: "build", Message: "building web", Done: ptr(1), Total: ptr(3)}, nil)
	r.event(&events.Event{Kind: events.KindProgress, Step: "lock", Message: "locked"}, nil)
	r.event(&events.Event{Kind: events.KindLog, Lines: []events.LogLine{{Stream: "stdout", Line: "hi"}}}, nil)
	r.event(&events.Event{Kind: events.KindResult, Action: "config.get", OK: ptr(true),
		Data: json.RawMessage(`{"name":"po","services":["web"]}`), DurationMS: ptr(int64(1500))}, nil)
	wantErr := "accepted r1\n[build] building web (1/3)\n[lock] locked\nok in 1.5s\n"
	if errw.String() != wantErr {
		t.Fatalf("stderr:\n%q\nwant\n%q", errw.String(), wantErr)
	}
	wantOut := "hi\nname:     po\nservices: web\n"
	if out.String() != wantOut {
		t.Fatalf("stdout:\n%q\nwant\n%q", out.String(), wantOut)
	}
}

func TestRendererError(t *testing.T) {
	var out, errw bytes.Buffer
	r := newTestRenderer(&out, &errw)
	r.event(&events.Event{Kind: events.KindResult, OK: ptr(false), Error: &events.Error{
		Code: events.CodeConflict, Message: "po is locked by deploy r0", Hint: "wait for it to finish",
		Data: map[string]any{"holder": "r0"}}}, nil)
	want := "error: conflict: po is locked by deploy r0\nhint: wait for it to finish\ndetails: {\"holder\":\"r0\"}\n"
	if errw.String() != want || out.Len() != 0 {
		t.Fatalf("stderr %q stdout %q", errw.String(), out.String())
	}
}

func TestRendererQuiet(t *testing.T) {
	var out, errw bytes.Buffer
	r := newTestRenderer(&out, &errw)
	r.quiet = true
	r.event(&events.Event{Kind: events.KindAccepted}, nil)
	r.event(&events.Event{Kind: events.KindProgress, Step: "up"}, nil)
	r.event(&events.Event{Kind: events.KindLog, Lines: []events.LogLine{{Line: "x"}}}, nil)
	r.event(&events.Event{Kind: events.KindResult, Action: "history", OK: ptr(true), Data: json.RawMessage(`[1]`)}, nil)
	if errw.Len() != 0 || out.String() != "[\n  1\n]\n" {
		t.Fatalf("quiet: stderr %q stdout %q", errw.String(), out.String())
	}
}

func TestRenderConfirm(t *testing.T) {
	var out, errw bytes.Buffer
	r := newTestRenderer(&out, &errw)
	r.action, r.args = "deploy", json.RawMessage(`{"services":["web"]}`)
	plan := json.RawMessage(`{"files":{"added":1,"added_paths":["a.txt"]},"needs_build":true,"steps":["lock","up"]}`)
	r.event(&events.Event{Kind: events.KindConfirm, Action: "deploy", Project: "po", Token: "tok123",
		ExpiresAt: "2026-01-01T00:05:00Z", Plan: plan}, nil)
	if out.Len() != 0 {
		t.Fatalf("the plan is printed before its result: %q", out.String())
	}
	data, _ := json.Marshal(map[string]any{"plan": plan, "token": "tok123", "expires_at": "2026-01-01T00:05:00Z", "confirm_by": "the same user"})
	r.event(&events.Event{Kind: events.KindResult, Action: "deploy", Project: "po", OK: ptr(false), Data: data,
		Error: &events.Error{Code: events.CodeConfirmationRequired, Message: "deploy of po needs confirmation", Hint: "send it again"}}, nil)
	want := `deploy po needs confirmation
files:     1 added, 0 modified, 0 deleted
  + a.txt
build:     yes, the images are built
steps:     lock → up
token:     tok123
expires:   2026-01-01 00:05:00Z (in 5m)
confirm:   the same user
to confirm, run:
  publisher deploy po --args '{"services":["web"]}' --confirm tok123
`
	if out.String() != want {
		t.Fatalf("got:\n%s\nwant:\n%s", out.String(), want)
	}
	if errw.String() != "confirmation required: deploy of po needs confirmation\n" {
		t.Fatalf("stderr %q", errw.String())
	}
	if c := r.confirmation; c == nil || c.token != "tok123" || c.byOther || c.changed {
		t.Fatalf("confirmation %+v", c)
	}
	if got := confirmCommand("restart", "po", "a'b", nil); got != `publisher restart po --confirm 'a'\''b'` {
		t.Fatalf("quoting: %s", got)
	}

	// A second approver confirms: said so, and the command is theirs.
	out.Reset()
	errw.Reset()
	r.reset("r2")
	r.autoConfirm = true
	data, _ = json.Marshal(map[string]any{"plan": plan, "token": "tok456", "expires_at": "2026-01-01T00:05:00Z", "confirm_by": "another user"})
	r.event(&events.Event{Kind: events.KindResult, Action: "deploy", Project: "po", OK: ptr(false), Data: data,
		Error: &events.Error{Code: events.CodeConfirmationRequired, Message: "deploy of po needs confirmation"}}, nil)
	if !strings.Contains(out.String(), "confirm:   another user (a second approver), with the token; not you\nthe second approver runs:\n  publisher deploy po") ||
		!r.confirmation.byOther {
		t.Fatalf("second approver:\n%s", out.String())
	}

	// Confirmed by the publisher itself: no token, no command line.
	out.Reset()
	errw.Reset()
	r.reset("r3")
	data, _ = json.Marshal(map[string]any{"plan": plan, "token": "tok789", "expires_at": "2026-01-01T00:05:00Z", "confirm_by": "the same user"})
	r.event(&events.Event{Kind: events.KindResult, Action: "deploy", Project: "po", OK: ptr(false), Data: data,
		Error: &events.Error{Code: events.CodeConfirmationRequired, Message: "deploy of po needs confirmation"}}, nil)
	if strings.Contains(out.String(), "tok789") || strings.Contains(out.String(), "to confirm") || errw.Len() != 0 {
		t.Fatalf("auto-confirmed plan:\n%s\n%s", out.String(), errw.String())
	}
}

func TestRendererJSON(t *testing.T) {
	var out, errw bytes.Buffer
	r := newTestRenderer(&out, &errw)
	r.jsonMode = true
	r.event(&events.Event{Kind: events.KindAccepted}, []byte("{\n \"kind\": \"accepted\"\n}"))
	r.event(&events.Event{Kind: events.KindResult}, []byte(`{"kind":"result","ok":false}`))
	if out.String() != "{\"kind\":\"accepted\"}\n{\"kind\":\"result\",\"ok\":false}\n" || errw.Len() != 0 {
		t.Fatalf("stdout %q stderr %q", out.String(), errw.String())
	}
}

func TestExitCodeFor(t *testing.T) {
	cases := []struct {
		ev   events.Event
		want int
	}{
		{events.Event{OK: ptr(true)}, 0},
		{events.Event{OK: ptr(false)}, 1},
		{events.Event{OK: ptr(false), Error: &events.Error{Code: events.CodeTimeout}}, 1},
		{events.Event{}, 1}, // a result that does not say ok is not ok
	}
	for _, c := range cases {
		if got := exitCodeFor(&c.ev); got != c.want {
			t.Errorf("exitCodeFor(%+v) = %d, want %d", c.ev, got, c.want)
		}
	}
}

func TestFormatUptime(t *testing.T) {
	cases := map[float64]string{0: "0s", 59.9: "59s", 60: "1m", 3599: "59m", 3600: "1h0m",
		11520: "3h12m", 86400: "1d0h", 183600: "2d3h", -1: "-"}
	for in, want := range cases {
		if got := formatUptime(in); got != want {
			t.Errorf("formatUptime(%v) = %q, want %q", in, got, want)
		}
	}
}

func TestRenderStatusResourceUse(t *testing.T) {
	// CPU and MEM columns appear when the worker sampled any service, with
	// a dash for one it has not.
	var buf bytes.Buffer
	data := `{"services":[{"service":"web","state":"running","cpu_percent":12.345,"mem_bytes":31200000,"mem_limit_bytes":512000000},` +
		`{"service":"worker","state":"running","mem_bytes":2048},{"service":"migrate","state":"exited"}]}`
	if err := renderStatus(&buf, []byte(data), false); err != nil {
		t.Fatal(err)
	}
	want := "SERVICE  STATE    HEALTH  UPTIME  RESTARTS  IMAGE  PORTS  CPU    MEM\n" +
		"web      running  -       -       -         -      -      12.3%  31.2 MB / 512.0 MB\n" +
		"worker   running  -       -       -         -      -      -      2.0 kB\n" +
		"migrate  exited   -       -       -         -      -      -      -\n"
	if buf.String() != want {
		t.Fatalf("got:\n%s\nwant:\n%s", buf.String(), want)
	}
}
