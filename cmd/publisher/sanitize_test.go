package main

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/berth-ops/berth/events"
)

// hostile is a corpus of strings that try to act on a terminal: retitle
// it, erase or overwrite what it shows, hide text, reorder it, or slip in
// a control character as a C1 code or a stray byte.
var hostile = []struct {
	name, in string
	oneLine  string // sanitize(in, oneLine)
	multi    string // sanitize(in, multiLine), when it differs
}{
	{"OSC title", "\x1b]0;pwned\x07", `\x1b]0;pwned\a`, ""},
	{"OSC 8 link", "\x1b]8;;https://evil.example\x1b\\click\x1b]8;;\x1b\\", `\x1b]8;;https://evil.example\x1b\click\x1b]8;;\x1b\`, ""},
	{"erase line", "\x1b[2Kok", `\x1b[2Kok`, ""},
	{"cursor up", "\x1b[1A\x1b[2Kdeploy ok", `\x1b[1A\x1b[2Kdeploy ok`, ""},
	{"reset terminal", "\x1bcboom", `\x1bcboom`, ""},
	{"DCS", "\x1bPq#0\x1b\\", `\x1bPq#0\x1b\`, ""},
	{"lone ESC at the end", "x\x1b", `x\x1b`, ""},
	{"unfinished CSI", "\x1b[31", `\x1b[31`, ""},
	{"carriage return overwrite", "error: disk full\rok              ", `error: disk full\rok              `, ""},
	{"backspaces", "rm -rf /\b\b\b\b\b\b\b\bls     ", `rm -rf /\b\b\b\b\b\b\b\bls     `, ""},
	{"bell and NUL", "a\x07b\x00c", `a\ab\x00c`, ""},
	{"DEL", "a\x7fb", `a\x7fb`, ""},
	{"RLO", "invoice_\u202etxt.exe", `invoice_\u202etxt.exe`, ""},
	{"bidi embeddings and pops", "\u202a\u202b\u202c\u202d", `\u202a\u202b\u202c\u202d`, ""},
	{"bidi isolates", "\u2066x\u2067y\u2068z\u2069", `\u2066x\u2067y\u2068z\u2069`, ""},
	{"bidi marks", "a\u200eb\u200fc\u061cd", `a\u200eb\u200fc\u061cd`, ""},
	{"zero-width", "ad\u200bmin\u200c\u200d\u2060\ufeff", `ad\u200bmin\u200c\u200d\u2060\ufeff`, ""},
	{"soft hyphen", "pass\u00adword", `pass\u00adword`, ""},
	{"tag characters", "hi\U000e0041\U000e007f", `hi\U000e0041\U000e007f`, ""},
	{"Hangul filler", "cli:\u3164", `cli:\u3164`, ""},
	{"line separator", "a\u2028b\u2029c", `a\u2028b\u2029c`, ""},
	{"C1 CSI as a rune", "\u009b2Jclear", `\u009b2Jclear`, ""},
	{"C1 NEL and OSC", "a\u0085b\u009d0;t\u009c", `a\u0085b\u009d0;t\u009c`, ""},
	{"C1 CSI as a byte", "\x9b2Jclear", `\x9b2Jclear`, ""},
	{"invalid UTF-8", "ok\xff\xfe\xc3", `ok\xff\xfe\xc3`, ""},
	{"colours are removed", "\x1b[32mINFO\x1b[0m started \x1b[1;31mbold red\x1b[m", "INFO started bold red", ""},
	{"conceal is removed: the text shows", "password: \x1b[8mhunter2\x1b[28m", "password: hunter2", ""},
	{"256 and true colours", "\x1b[38;5;196mx\x1b[38:2::255:0:0my", "xy", ""},
	{"newline", "line one\nline two", `line one\nline two`, "line one\nline two"},
	{"CRLF", "one\r\ntwo", `one\r\ntwo`, "one\ntwo"},
	{"tab stays", "a\tb", "a\tb", ""},
	{"plain text", "building web (2/3)", "building web (2/3)", ""},
	{"letters and emoji", "héllo wörld 世界 🚀 ñ", "héllo wörld 世界 🚀 ñ", ""},
	{"backslashes stay", `C:\path\x1b and \u202e typed`, `C:\path\x1b and \u202e typed`, ""},
}

func TestSanitizeCorpus(t *testing.T) {
	for _, c := range hostile {
		t.Run(c.name, func(t *testing.T) {
			got := sanitize(c.in, oneLine)
			if got != c.oneLine {
				t.Errorf("sanitize(%q, oneLine) = %q, want %q", c.in, got, c.oneLine)
			}
			multi := c.multi
			if multi == "" {
				multi = c.oneLine
			}
			if got := sanitize(c.in, multiLine); got != multi {
				t.Errorf("sanitize(%q, multiLine) = %q, want %q", c.in, got, multi)
			}
			for _, mode := range []lineMode{oneLine, multiLine} {
				out := sanitize(c.in, mode)
				assertTerminalSafe(t, out, mode == multiLine)
				if again := sanitize(out, mode); again != out {
					t.Errorf("not idempotent: %q then %q", out, again)
				}
			}
		})
	}
}

// assertTerminalSafe fails when s holds anything a terminal would act on
// rather than print: ESC, any other control character but tab (and
// newline when allowed), a C1 control, a bidi or other format character,
// or invalid UTF-8.
func assertTerminalSafe(t *testing.T, s string, newlines bool) {
	t.Helper()
	if !utf8.ValidString(s) {
		t.Errorf("invalid UTF-8 in %q", s)
	}
	for _, r := range s {
		switch {
		case r == '\t', r == '\n' && newlines:
		case r < 0x20, r == 0x7f, r >= 0x80 && r <= 0x9f:
			t.Errorf("control character %U in %q", r, s)
		case unicode.Is(unicode.Cf, r), r == '\u2028', r == '\u2029', invisibleLetters[r]:
			t.Errorf("format or invisible character %U in %q", r, s)
		}
	}
}

// Every invisible or reordering character that can disguise text is
// escaped, all of Unicode's category Cf included.
func TestSanitizeEveryFormatCharacter(t *testing.T) {
	for _, rt := range unicode.Cf.R16 {
		for r := rune(rt.Lo); r <= rune(rt.Hi); r += rune(rt.Stride) {
			if out := sanitize("a"+string(r)+"b", oneLine); strings.ContainsRune(out, r) {
				t.Errorf("%U is kept: %q", r, out)
			}
		}
	}
	for r := rune(0); r < 0x20; r++ {
		if out := sanitize(string(r), oneLine); r != '\t' && strings.ContainsRune(out, r) {
			t.Errorf("%U is kept", r)
		}
	}
}

// What encoding/json does with the characters sanitize escapes: the C0
// controls (ESC) are escaped by Marshal, and cannot occur raw in valid
// JSON; DEL, the C1 controls and the bidi and other format characters are
// written as they are, and json.Compact keeps them: terminalSafeJSON
// escapes them.
func TestJSONEscapesForTheTerminal(t *testing.T) {
	b, _ := json.Marshal("\x1b]0;t\x07")
	if strings.ContainsRune(string(b), 0x1b) || !strings.Contains(string(b), `\u001b`) {
		t.Fatalf("encoding/json writes ESC as %q", b)
	}
	if json.Valid([]byte("\"\x1b\"")) {
		t.Fatal("a raw ESC in a JSON string is valid JSON")
	}
	b, _ = json.Marshal("\u202e\u2066\u009b\x7f")
	if !strings.ContainsRune(string(b), '\u202e') {
		t.Logf("encoding/json now escapes U+202E: %q", b) // terminalSafeJSON is then a no-op for it
	}

	v := map[string]any{"user": "cli:\u202eevil", "msg": "\x1b[2K\u009b2J\x7f\u2066\u200b\U000e0041", "n": 1.5,
		"nested": []any{"ok", "\u2028"}, "plain": "héllo 世界 🚀", `back\slash`: `"q"`}
	raw, _ := json.Marshal(v)
	safe := terminalSafeJSON(raw)
	if !json.Valid(safe) {
		t.Fatalf("not JSON: %s", safe)
	}
	assertTerminalSafe(t, string(safe), false)
	var back map[string]any
	if err := json.Unmarshal(safe, &back); err != nil || !reflect.DeepEqual(back, v) {
		t.Fatalf("the value changed: %v, %v", back, err)
	}
	for _, want := range []string{`\u202e`, `\u009b`, `\u007f`, `\u2066`, `\u200b`, `\udb40\udc41`, "héllo 世界 🚀"} {
		if !bytes.Contains(safe, []byte(want)) {
			t.Errorf("%s lacks %s", safe, want)
		}
	}

	// Invalid UTF-8 inside a string (valid JSON for encoding/json's
	// scanner): each bad byte becomes \ufffd, as Marshal writes it.
	bad := []byte("{\"a\":\"x\xff\x9by\"}")
	if safe := terminalSafeJSON(bad); string(safe) != `{"a":"x\ufffd\ufffdy"}` {
		t.Fatalf("invalid UTF-8: %s", safe)
	}
	plain := []byte(`{"a":"b"}`)
	if got := terminalSafeJSON(plain); &got[0] != &plain[0] {
		t.Fatal("plain JSON is copied")
	}
}

// hostileEvents is a request whose every string field, and every string
// in its data, carries part of the hostile corpus.
func hostileEvents() []*events.Event {
	h := func(i int) string { return hostile[i%len(hostile)].in }
	all := ""
	for _, c := range hostile {
		all += c.in + " "
	}
	statusData, _ := json.Marshal(map[string]any{
		"project":   "po\x1b]0;status\x07",
		"cached":    true,
		"cached_at": "\u202e2026",
		"services": []any{map[string]any{
			"service": "web\x1b[2K", "container": "c\r", "state": "running\u202e", "health": "\x1b[8mhealthy",
			"image": "nginx\u009b2J", "ports": []any{"80\u2066/tcp", map[string]any{"host_ip": "0.0.0.0\x07", "host_port": 80, "container_port": 80, "proto": "tcp\b"}},
			"uptime_s": 5,
		}},
		"summary": map[string]any{"running\x1b]0;k\x07": "\u202e1"},
	})
	// Raw bytes JSON may carry as they are: C1, bidi, DEL, invalid UTF-8.
	rawData := json.RawMessage("{\"note\":\"a\u202eb\u009b2Jc\x7fd\xffe\x9bf\",\"esc\":\"\\u001b]0;x\\u0007\"}")
	logsData, _ := json.Marshal(map[string]any{"service": "web", "lines": []any{
		map[string]any{"stream": "stdout", "line": "from the result\r\x1b[2Kforged"},
		map[string]any{"stream": "stderr\x1b]0;s\x07", "ts": "\u202ets", "line": all},
	}, "count": 2, "truncated": true})
	return []*events.Event{
		{Kind: events.KindAccepted, RequestID: "r1\x1b]0;accepted\x07", User: "cli:\u202eeve"},
		{Kind: events.KindProgress, Step: "build\x1b[2K", Message: all, Done: ptr(1), Total: ptr(2)},
		{Kind: events.KindProgress, Step: "build\x1b[2K", Message: h(0) + h(8) + h(12)},
		{Kind: events.KindProgress, Step: "up\u202e", Message: "\x9b2J" + h(23)},
		{Kind: events.KindLog, Lines: []events.LogLine{
			{Stream: "stdout", Line: all},
			{Stream: "stderr", TS: "2026\x1b[8m", Line: "abc\b\b\bxyz\r\n"},
			{Stream: "std\u202eout", Line: "\x1b]0;pwned\x07multi\nline"},
		}},
		{Kind: events.KindConfirm, Action: "deploy; rm -rf ~\x1b]0;t\x07", Project: "po\u202e", Token: "tok\r\x1b[2K'$(x)",
			ExpiresAt: "2026\u202e", Plan: rawData},
		{Kind: events.KindResult, Action: "deploy; rm -rf ~\x1b]0;t\x07", Project: "po\u202e", OK: ptr(false),
			Error: &events.Error{Code: events.CodeConfirmationRequired, Message: "confirm \x1b]0;t\x07"}},
		{Kind: events.Kind("weird\x1b]0;k\x07"), Message: all},
		{Kind: events.KindResult, Action: "status", OK: ptr(true), Data: statusData, DurationMS: ptr(int64(5))},
		{Kind: events.KindResult, Action: "logs", OK: ptr(true), Data: logsData},
		{Kind: events.KindResult, Action: "config.get", OK: ptr(true), Data: rawData},
		{Kind: events.KindResult, OK: ptr(false), Data: rawData, Error: &events.Error{
			Code: events.Code("conflict\x1b[2K"), Message: all + "\nsecond line\r\n" + h(8), Hint: "\u202eyrt" + h(0),
			Data: map[string]any{"holder\u202e": "\x1b]0;d\x07\u009b", "k": "\u2066"}}},
	}
}

// rawBody is ev as the wire carries it: with the raw bytes of Data and
// Plan kept as they are.
func rawBody(ev *events.Event) []byte {
	b, _ := json.Marshal(ev)
	return b
}

// ownSequences are the escape sequences the publisher itself writes:
// colours, and erasing the live status line.
var ownSequences = []string{"\x1b[0m", "\x1b[1m", "\x1b[2m", "\x1b[31m", "\x1b[32m", "\x1b[33m", "\x1b[31;1m", "\x1b[33;1m", "\x1b[K"}

func withoutOwnSequences(s string) string {
	for _, q := range ownSequences {
		s = strings.ReplaceAll(s, q, "")
	}
	return s
}

// Hostile events rendered as text, in every mode: the terminal gets no
// escape sequence but the publisher's own colours, no carriage return but
// the live view's own, no backspace, bidi, C1 or format character, and
// only valid UTF-8; what was escaped shows.
func TestRenderHostileEvents(t *testing.T) {
	modes := []struct {
		name  string
		setup func(r *renderer, term *bytes.Buffer)
	}{
		{"plain", func(*renderer, *bytes.Buffer) {}},
		{"colour", func(r *renderer, _ *bytes.Buffer) { r.color, r.errColor = true, true }},
		{"quiet", func(r *renderer, _ *bytes.Buffer) { r.quiet = true }},
		{"live", func(r *renderer, term *bytes.Buffer) { r.live = newTestLive(term, 80) }},
		{"live colour", func(r *renderer, term *bytes.Buffer) {
			r.live, r.color, r.errColor = newTestLive(term, 80), true, true
			r.live.color = true
		}},
	}
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			var term bytes.Buffer // stdout and stderr on one terminal
			r := newTestRenderer(&term, &term)
			r.action = ""
			m.setup(r, &term)
			for _, ev := range hostileEvents() {
				r.event(ev, rawBody(ev))
			}
			r.warnf("warning: ignoring an event of request %q of project %q on the subject of request %s\n", "x\u202e", "\x1b]0;p\x07", "r1")
			r.warnf("warning: ignored an event on %s that the worker did not sign\n", "berth.evt.po.\x1b[2K.r1.result")
			r.stopLive()
			out := term.String()
			if m.name == "plain" || m.name == "quiet" {
				if strings.ContainsAny(out, "\x1b\r") {
					t.Fatalf("ESC or CR in the output:\n%q", out)
				}
			}
			rest := withoutOwnSequences(out)
			if strings.Contains(rest, "\x1b") {
				i := strings.Index(rest, "\x1b")
				t.Fatalf("an escape sequence that is not the publisher's: %q", rest[max(0, i-40):min(len(rest), i+40)])
			}
			// The live view returns to the start of the line only to
			// erase its status line or to draw it; nothing else does.
			for i, c := range []byte(out) {
				if c != '\r' {
					continue
				}
				next := out[i+1:]
				ok := r.live != nil && strings.HasPrefix(next, "\x1b[K")
				for _, f := range spinnerFrames {
					ok = ok || r.live != nil && (strings.HasPrefix(next, f) || strings.HasPrefix(next, "\x1b[33m"+f))
				}
				if !ok {
					t.Fatalf("a carriage return that is not the live view's: %q", out[max(0, i-40):min(len(out), i+40)])
				}
			}
			assertTerminalSafe(t, strings.ReplaceAll(withoutOwnSequences(out), "\r", ""), true)
			if m.name != "quiet" {
				for _, want := range []string{`\x1b]0;pwned\a`, `\u202e`, `\x1b[2K`} {
					if !strings.Contains(out, want) {
						t.Errorf("the output does not show %s", want)
					}
				}
			}
			// The confirm command line quotes what came in the event.
			if m.name == "plain" && !strings.Contains(out, `publisher 'deploy; rm -rf ~\x1b]0;t\a' 'po\u202e' --confirm 'tok\r\x1b[2K'\''$(x)'`) {
				t.Errorf("the confirm command line is not quoted:\n%s", out)
			}
		})
	}
}

// Each log line stays one line: a newline or carriage return in it shows
// as \n or \r, and a line's own line ending (CRLF included) goes.
func TestRenderLogLinesOneLineEach(t *testing.T) {
	var out bytes.Buffer
	renderLogLines(&out, []events.LogLine{
		{Stream: "stdout", Line: "one\ntwo"},
		{Stream: "stdout", Line: "windows\r\n"},
		{Stream: "stdout", Line: "progress 10%\rprogress 100%"},
		{Stream: "stderr", Line: "\x1b[31mred\x1b[0m"},
	}, false)
	want := "one\\ntwo\nwindows\nprogress 10%\\rprogress 100%\nstderr | red\n"
	if out.String() != want {
		t.Fatalf("got %q, want %q", out.String(), want)
	}
}

// An error message may be several lines (a command's output); its lines
// stay lines, without carriage returns.
func TestRenderErrorKeepsLines(t *testing.T) {
	var out, errw bytes.Buffer
	r := newTestRenderer(&out, &errw)
	r.event(&events.Event{Kind: events.KindResult, OK: ptr(false), Error: &events.Error{
		Code: events.CodeBuildFailed, Message: "docker compose build failed:\r\nstep 3\x1b[2K\nstep 4", Hint: "see\u202e the log"}}, nil)
	want := "error: build_failed: docker compose build failed:\nstep 3\\x1b[2K\nstep 4\nhint: see\\u202e the log\n"
	if errw.String() != want {
		t.Fatalf("got %q, want %q", errw.String(), want)
	}
}

// --json prints JSON lines that decode to the events as sent, with the
// characters a terminal acts on escaped.
func TestRenderHostileEventsJSON(t *testing.T) {
	var out, errw bytes.Buffer
	r := newTestRenderer(&out, &errw)
	r.jsonMode = true
	evs := hostileEvents()
	for _, ev := range evs {
		r.event(ev, rawBody(ev))
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != len(evs) || errw.Len() != 0 {
		t.Fatalf("%d lines for %d events; stderr %q", len(lines), len(evs), errw.String())
	}
	for i, l := range lines {
		assertTerminalSafe(t, l, false)
		if !json.Valid([]byte(l)) {
			t.Fatalf("line %d is not JSON: %s", i, l)
		}
		var got, want events.Event
		if err := json.Unmarshal([]byte(l), &got); err != nil {
			t.Fatal(err)
		}
		json.Unmarshal(rawBody(evs[i]), &want)
		if got.Message != want.Message || got.RequestID != want.RequestID || got.Token != want.Token || !reflect.DeepEqual(got.Lines, want.Lines) {
			t.Fatalf("line %d changed the event:\n%+v\n%+v", i, got, want)
		}
	}
}
