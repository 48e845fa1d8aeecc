package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/berth-ops/berth/events"
)

// screen replays what a terminal shows for output: "\r" returns to the
// start of the line, "\x1b[K" erases to its end, "\n" starts a new line;
// other escape sequences (colours) are dropped. It returns the lines.
func screen(out string) []string {
	var lines []string
	var cur []rune
	col := 0
	for i := 0; i < len(out); {
		switch {
		case strings.HasPrefix(out[i:], "\x1b[K"):
			cur = cur[:col]
			i += 3
		case out[i] == 0x1b && i+1 < len(out) && out[i+1] == '[':
			j := i + 2
			for j < len(out) && (out[j] < 0x40 || out[j] > 0x7e) {
				j++
			}
			i = j + 1
		case out[i] == '\r':
			col = 0
			i++
		case out[i] == '\n':
			lines = append(lines, string(cur))
			cur, col = nil, 0
			i++
		default:
			r, size := utf8.DecodeRuneInString(out[i:])
			if col < len(cur) {
				cur[col] = r
			} else {
				cur = append(cur, r)
			}
			col++
			i += size
		}
	}
	if len(cur) > 0 {
		lines = append(lines, string(cur))
	}
	return lines
}

func TestRenderLiveLineFitsWidth(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := start.Add(3200 * time.Millisecond)
	long := strings.Repeat("very long build output line ", 10)
	cases := []struct {
		name  string
		st    liveState
		width int
		want  []string // substrings of the plain line
		not   []string
	}{
		{"bar", liveState{step: "verify", message: "waiting for the services to be up", done: ptr(1), total: ptr(4), stepStart: start},
			80, []string{"verify", "waiting for the services to be up", "[", "]", " 1/4 ", "3.2s"}, nil},
		{"no total", liveState{step: "build", message: "docker compose build", stepStart: start},
			80, []string{"build", "docker compose build", "3.2s"}, []string{"["}},
		{"long message cut", liveState{step: "build", message: long, stepStart: start},
			60, []string{"build", "…", "3.2s"}, nil},
		{"narrow: the bar goes, the count stays", liveState{step: "sync", message: "copying files", done: ptr(3), total: ptr(10), stepStart: start},
			30, []string{"sync", "3/10", "3.2s"}, []string{"█", "░"}},
		{"tiny", liveState{step: "rollback", message: long, done: ptr(1), total: ptr(2), stepStart: start},
			12, []string{"rollback"}, nil},
		{"done without total", liveState{step: "sync", message: "copying", done: ptr(7), stepStart: start},
			80, []string{"(7)"}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			plain := renderLiveLine(c.st, c.width, now, false)
			limit := max(c.width, 20) - 1
			if w := utf8.RuneCountInString(plain); w > limit {
				t.Fatalf("line is %d columns, wider than %d: %q", w, limit, plain)
			}
			if strings.ContainsAny(plain, "\x1b\r\n") {
				t.Fatalf("control characters in the plain line: %q", plain)
			}
			for _, s := range c.want {
				if !strings.Contains(plain, s) {
					t.Errorf("line %q lacks %q", plain, s)
				}
			}
			for _, s := range c.not {
				if strings.Contains(plain, s) {
					t.Errorf("line %q has %q", plain, s)
				}
			}
			colored := renderLiveLine(c.st, c.width, now, true)
			if !strings.Contains(colored, "\x1b[") {
				t.Errorf("no colour in %q", colored)
			}
			if got := stripEscapes(colored); got != plain {
				t.Errorf("colour changes the text:\n%q\n%q", got, plain)
			}
		})
	}
	// The bar and the elapsed time sit at the right edge, so they do not
	// move while the message changes.
	a := renderLiveLine(liveState{step: "verify", message: "a", done: ptr(1), total: ptr(2), stepStart: start}, 70, now, false)
	b := renderLiveLine(liveState{step: "verify", message: "a longer message", done: ptr(2), total: ptr(2), stepStart: start}, 70, now, false)
	if utf8.RuneCountInString(a) != 69 || utf8.RuneCountInString(b) != 69 || strings.Index(a, "[") != strings.Index(b, "[") {
		t.Fatalf("bar moved:\n%q\n%q", a, b)
	}
	if !strings.Contains(b, "["+strings.Repeat("█", strings.Count(b, "█"))+"]") || strings.Contains(b, "░") {
		t.Fatalf("2/2 is not a full bar: %q", b)
	}
}

func TestProgressBar(t *testing.T) {
	for _, c := range []struct {
		done, total int
		want        string
	}{{0, 4, "[░░░░░░░░]"}, {1, 4, "[██░░░░░░]"}, {4, 4, "[████████]"}, {9, 4, "[████████]"}, {-1, 4, "[░░░░░░░░]"}} {
		if got := progressBar(c.done, c.total, 8, false); got != c.want {
			t.Errorf("progressBar(%d, %d) = %s, want %s", c.done, c.total, got, c.want)
		}
	}
}

// fakeClock advances by step on each call.
func fakeClock(step time.Duration) func() time.Time {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	return func() time.Time { now = now.Add(step); return now }
}

func newTestLive(w *bytes.Buffer, width int) *liveView {
	return &liveView{w: w, width: func() int { return width }, now: fakeClock(100 * time.Millisecond)}
}

func TestLiveViewDeploy(t *testing.T) {
	var term bytes.Buffer // stdout and stderr on the same terminal
	r := &renderer{out: &term, errw: &term, id: "r1", action: "deploy", project: "po", live: newTestLive(&term, 72)}
	prog := func(step, msg string, done, total *int) {
		r.event(&events.Event{Kind: events.KindProgress, Step: step, Message: msg, Done: done, Total: total}, nil)
	}
	r.event(&events.Event{Kind: events.KindAccepted, RequestID: "r1"}, nil)
	prog("plan", "re-checking the confirmed plan", nil, nil)
	prog("lock", "locked", nil, nil)
	prog("sync", "copying files", ptr(1), ptr(3))
	prog("sync", "copying files", ptr(3), ptr(3))
	prog("build", "docker compose build", nil, nil)
	prog("build", "#5 [web 2/3] COPY app /app", nil, nil)
	prog("build", "#6 exporting layers\x1b]0;pwned\x07", nil, nil)
	r.event(&events.Event{Kind: events.KindLog, Lines: []events.LogLine{{Stream: "stdout", Line: "a container line"}}}, nil)
	prog("verify", "waiting for the services to be up", ptr(0), ptr(2))
	prog("verify", "web is up (healthy)", ptr(1), ptr(2))
	// While a step runs, the status line is the last thing on the screen.
	lines := screen(term.String())
	last := lines[len(lines)-1]
	if !strings.HasPrefix(last, spinnerFrames[0]+" verify") || !strings.Contains(last, "1/2") || !strings.Contains(last, "web is up (healthy)") {
		t.Fatalf("status line %q", last)
	}
	r.event(&events.Event{Kind: events.KindResult, OK: ptr(true), DurationMS: ptr(int64(4200)),
		Data: json.RawMessage(`{"release":"r-1","changed":true}`)}, nil)

	got := screen(term.String())
	want := []string{
		"accepted r1",
		"✓ plan     re-checking the confirmed plan",
		"✓ lock     locked",
		"✓ sync     copying files (3/3)",
		"  build    │ #5 [web 2/3] COPY app /app",
		`  build    │ #6 exporting layers\x1b]0;pwned\a`,
		"a container line",
		"✓ build    docker compose build",
		"  verify   │ web is up (healthy) (1/2)",
		"✓ verify   waiting for the services to be up (1/2)",
		"deployed release r-1",
	}
	if len(got) < len(want) {
		t.Fatalf("screen:\n%s", strings.Join(got, "\n"))
	}
	for i, w := range want {
		if !strings.HasPrefix(got[i], w) {
			t.Fatalf("screen line %d is %q, want it to start with %q; screen:\n%s", i, got[i], w, strings.Join(got, "\n"))
		}
		if n := utf8.RuneCountInString(got[i]); n > 71 {
			t.Fatalf("screen line %d is %d columns wide: %q", i, n, got[i])
		}
	}
	for _, l := range got {
		if strings.Contains(l, "⠋") || strings.Contains(l, "⠙") {
			t.Fatalf("a status line was left on the screen: %q\n%s", l, strings.Join(got, "\n"))
		}
	}
	if !strings.Contains(term.String(), "ok in 4.2s") {
		t.Fatalf("no ok line:\n%s", term.String())
	}
	// A finished line ends with the step's time, at the right edge.
	if !strings.HasSuffix(got[1], "0.1s") && !strings.HasSuffix(got[1], "0.2s") {
		t.Fatalf("finished line without its time: %q", got[1])
	}
}

func TestLiveViewFailedStep(t *testing.T) {
	var term bytes.Buffer
	r := &renderer{out: &term, errw: &term, id: "r1", action: "restart", project: "po", live: newTestLive(&term, 60)}
	r.event(&events.Event{Kind: events.KindProgress, Step: "verify", Message: "waiting", Done: ptr(0), Total: ptr(1)}, nil)
	r.event(&events.Event{Kind: events.KindResult, OK: ptr(false), Error: &events.Error{Code: events.CodeHealthFailed, Message: "web is unhealthy"}}, nil)
	got := screen(term.String())
	if len(got) != 2 || !strings.HasPrefix(got[0], "✗ verify   waiting (0/1)") || got[1] != "error: health_failed: web is unhealthy" {
		t.Fatalf("screen:\n%s", strings.Join(got, "\n"))
	}
}

func TestLiveViewTicker(t *testing.T) {
	var mu lockedWriter
	var buf bytes.Buffer
	mu.w = &buf
	l := &liveView{w: &mu, width: func() int { return 50 }, now: time.Now}
	l.progress(&events.Event{Step: "build", Message: "docker compose build"})
	l.start(5 * time.Millisecond)
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.mu.Lock()
		n := strings.Count(buf.String(), "\r")
		mu.mu.Unlock()
		if n >= 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the ticker does not redraw")
		}
		time.Sleep(5 * time.Millisecond)
	}
	l.stop(true)
	l.stop(true) // idempotent
	mu.mu.Lock()
	out := buf.String()
	mu.mu.Unlock()
	time.Sleep(20 * time.Millisecond)
	mu.mu.Lock()
	after := buf.String()
	mu.mu.Unlock()
	if out != after {
		t.Fatal("the ticker drew after stop")
	}
	if lines := screen(out); len(lines) != 1 || !strings.HasPrefix(lines[0], "✓ build") {
		t.Fatalf("screen after stop: %q", lines)
	}
}

func TestTruncateRunes(t *testing.T) {
	if got := truncateRunes("abcdef", 4, false); got != "abc…" {
		t.Fatalf("got %q", got)
	}
	if got := truncateRunes("abc", 4, false); got != "abc" {
		t.Fatalf("got %q", got)
	}
	c := paint(true, ansiRed, "abcdef")
	if got := truncateRunes(c, 4, true); stripEscapes(got) != "abc…" || !strings.HasSuffix(got, "\x1b[0m") {
		t.Fatalf("coloured: %q", got)
	}
}

func TestNewLiveViewOnlyOnATerminal(t *testing.T) {
	var buf bytes.Buffer
	if newLiveView(&buf, true, env(nil)) != nil {
		t.Fatal("a live view on a buffer")
	}
}
