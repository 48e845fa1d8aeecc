package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"golang.org/x/term"

	"github.com/berth-ops/berth/events"
)

// liveView shows the progress of a request on a terminal: one status line
// at the bottom, rewritten in place (spinner, step, message, a progress
// bar when done/total is known, elapsed time), above it a line for each
// finished step and each output line of a step (build output, services
// coming up). It is used only when stderr is a terminal; elsewhere
// progress events are printed as plain lines (formatProgress).
//
// Other output (log lines, the plan, the result) must call suspend before
// writing and resume after, so it never lands in the middle of the
// status line. All methods are safe for concurrent use: a ticker redraws
// the line (spinner, elapsed time) from another goroutine.
type liveView struct {
	mu    sync.Mutex
	w     io.Writer
	width func() int // terminal columns
	color bool
	now   func() time.Time
	// action is the request's action: in any but rollback, a step
	// followed by the rollback step failed.
	action string
	// verbose: Compose's lines come whole (composeLines); the few a
	// second that progress repeats of them are not printed again.
	verbose bool

	st      liveState
	shown   bool // the status line is on the screen
	hidden  bool // suspended: other output is being written
	stopped bool
	tick    *time.Ticker
	quit    chan struct{}
}

// liveState is what the status line shows.
type liveState struct {
	step      string
	message   string // the step's latest message
	first     string // the step's first message, kept for its finished line
	done      *int
	total     *int
	stepStart time.Time
	frame     int // spinner frame
}

var spinnerFrames = []string{"⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"}

// newLiveView returns a view writing to w, or nil when w is not a terminal
// (or TERM is dumb): the caller then prints plain lines.
func newLiveView(w io.Writer, color bool, getenv func(string) string) *liveView {
	f, ok := w.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) || getenv("TERM") == "dumb" {
		return nil
	}
	fd := int(f.Fd())
	return &liveView{w: w, color: color, now: time.Now, width: func() int {
		if cols, _, err := term.GetSize(fd); err == nil && cols > 0 {
			return cols
		}
		return 80
	}}
}

// start redraws the status line every interval (spinner, elapsed time)
// until stop.
func (l *liveView) start(interval time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.tick != nil || l.stopped {
		return
	}
	l.tick = time.NewTicker(interval)
	l.quit = make(chan struct{})
	go func(t *time.Ticker, quit chan struct{}) {
		for {
			select {
			case <-t.C:
				l.mu.Lock()
				if !l.stopped && !l.hidden && l.st.step != "" {
					l.st.frame++
					l.drawLocked()
				}
				l.mu.Unlock()
			case <-quit:
				return
			}
		}
	}(l.tick, l.quit)
}

// progress takes a progress event.
func (l *liveView) progress(ev *events.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped {
		return
	}
	now := l.now()
	ev = sanitizedProgress(ev)
	switch {
	case ev.Step != l.st.step:
		if l.st.step != "" {
			// The step before a rollback (of anything but a rollback
			// action, whose first step is named so) is the one that failed.
			ok := ev.Step != events.StepRollback || l.action == events.ActionRollback
			l.printLocked(l.finishedLine(ok, now))
		}
		l.st = liveState{step: ev.Step, message: ev.Message, first: ev.Message, done: ev.Done, total: ev.Total,
			stepStart: now, frame: l.st.frame}
	default:
		// Another message of the same step: an output line (a build
		// line, a service that is up) stays on the screen above.
		repeat := l.verbose && ev.Done == nil && ev.Total == nil
		if ev.Message != "" && ev.Message != l.st.message && !repeat {
			l.printLocked(l.outputLine(ev))
		}
		if ev.Message != "" {
			l.st.message = ev.Message
		}
		if ev.Done != nil || ev.Total != nil {
			l.st.done, l.st.total = ev.Done, ev.Total
		}
	}
	l.drawLocked()
}

// composeLines prints lines of Compose's output as output lines of the
// step in progress.
func (l *liveView) composeLines(lines []events.LogLine) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped {
		return
	}
	for _, ln := range lines {
		ln = sanitizeLogLine(ln)
		l.printLocked(l.outputLine(&events.Event{Step: l.st.step, Message: strings.ReplaceAll(ln.Line, "\t", " ")}))
	}
	l.drawLocked()
}

// currentStep is the step in progress ("" before the first).
func (l *liveView) currentStep() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.st.step
}

// suspend clears the status line before other output.
func (l *liveView) suspend() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.hidden = true
	l.clearLocked()
}

// resume redraws the status line after other output.
func (l *liveView) resume() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.hidden = false
	if !l.stopped {
		l.drawLocked()
	}
}

// stop ends the view: the current step gets its finished line (ok or
// failed) and the status line goes away. It is idempotent.
func (l *liveView) stop(ok bool) {
	l.mu.Lock()
	if l.stopped {
		l.mu.Unlock()
		return
	}
	l.clearLocked()
	if l.st.step != "" {
		fmt.Fprintln(l.w, l.finishedLine(ok, l.now()))
	}
	l.stopped = true
	quit := l.quit
	if l.tick != nil {
		l.tick.Stop()
	}
	l.mu.Unlock()
	if quit != nil {
		close(quit)
	}
}

// printLocked writes a permanent line above the status line.
func (l *liveView) printLocked(line string) {
	l.clearLocked()
	fmt.Fprintln(l.w, line)
}

func (l *liveView) clearLocked() {
	if l.shown {
		io.WriteString(l.w, "\r\x1b[K")
		l.shown = false
	}
}

func (l *liveView) drawLocked() {
	if l.hidden || l.st.step == "" {
		return
	}
	io.WriteString(l.w, "\r"+renderLiveLine(l.st, l.width(), l.now(), l.color)+"\x1b[K")
	l.shown = true
}

// finishedLine is the permanent line of a step that ended.
func (l *liveView) finishedLine(ok bool, now time.Time) string {
	mark, code := "✓", ansiGreen
	if !ok {
		mark, code = "✗", ansiRed
	}
	msg := l.st.first
	if l.st.done != nil && l.st.total != nil {
		msg += fmt.Sprintf(" (%d/%d)", *l.st.done, *l.st.total)
	}
	line := paint(l.color, code, mark) + " " + padRight(l.st.step, stepWidth) + " " + msg
	el := formatElapsed(now.Sub(l.st.stepStart))
	return fitLine(line, el, l.width(), l.color)
}

// outputLine is the permanent line of an output message of a step.
func (l *liveView) outputLine(ev *events.Event) string {
	// The bar lines up under the messages of the finished steps' lines.
	prefix := "  " + padRight(ev.Step, stepWidth+1) + "│ "
	line := paint(l.color, ansiDim, prefix) + ev.Message
	if ev.Done != nil && ev.Total != nil {
		line += fmt.Sprintf(" (%d/%d)", *ev.Done, *ev.Total)
	}
	return truncateRunes(line, l.width()-1, l.color)
}

// stepWidth is the column width of the step name: the longest step
// ("rollback") fits.
const stepWidth = 8

// renderLiveLine renders the status line for a terminal width columns
// wide: spinner, step, message, a bar with done/total when the total is
// known, and the time the step has taken. It never uses the last column
// (a terminal would wrap), and shortens the message first when the line
// is too long. Colours add no width.
func renderLiveLine(st liveState, width int, now time.Time, color bool) string {
	if width < 20 {
		width = 20
	}
	spin := spinnerFrames[st.frame%len(spinnerFrames)]
	head := paint(color, ansiYellow, spin) + " " + paint(color, ansiBold, padRight(st.step, stepWidth))
	headW := 2 + max(stepWidth, utf8.RuneCountInString(st.step))
	tail := " " + formatElapsed(now.Sub(st.stepStart))
	if st.total != nil && *st.total > 0 {
		done := 0
		if st.done != nil {
			done = *st.done
		}
		count := fmt.Sprintf(" %d/%d", done, *st.total)
		barW := min(20, (width-1-headW-len(tail)-len(count)-2)/3)
		if barW >= 5 {
			tail = " " + progressBar(done, *st.total, barW, color) + count + tail
		} else {
			tail = count + tail
		}
	} else if st.done != nil {
		tail = fmt.Sprintf(" (%d)", *st.done) + tail
	}
	tailW := visibleWidth(tail)
	room := width - 1 - headW - tailW
	msg := ""
	if room > 2 && st.message != "" {
		msg = " " + truncateRunes(st.message, room-1, false)
	}
	pad := width - 1 - headW - utf8.RuneCountInString(msg) - tailW
	if pad < 0 {
		pad = 0
	}
	// The tail goes to the right edge, so the bar and time stay put.
	line := head + msg + strings.Repeat(" ", pad) + tail
	if visibleWidth(line) > width-1 {
		line = truncateRunes(line, width-1, color)
	}
	return line
}

// progressBar draws done/total as a bar of width cells.
func progressBar(done, total, width int, color bool) string {
	if done < 0 {
		done = 0
	}
	if done > total {
		done = total
	}
	full := done * width / total
	bar := strings.Repeat("█", full) + strings.Repeat("░", width-full)
	if color {
		bar = paint(true, ansiGreen, strings.Repeat("█", full)) + paint(true, ansiDim, strings.Repeat("░", width-full))
	}
	return "[" + bar + "]"
}

// formatElapsed prints a step's time: 0.4s, 12s, 3m05s.
func formatElapsed(d time.Duration) string {
	switch {
	case d < 0:
		d = 0
		fallthrough
	case d < 10*time.Second:
		return fmt.Sprintf("%.1fs", d.Seconds())
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	}
	s := int(d.Seconds())
	return fmt.Sprintf("%dm%02ds", s/60, s%60)
}

// fitLine puts right at the right edge of a line width columns wide,
// after left, shortening left when needed.
func fitLine(left, right string, width int, color bool) string {
	room := width - 1 - visibleWidth(right) - 1
	if room < 1 {
		return truncateRunes(left+" "+right, width-1, color)
	}
	left = truncateRunes(left, room, color)
	return left + strings.Repeat(" ", room-visibleWidth(left)) + " " + right
}

func padRight(s string, n int) string {
	if w := utf8.RuneCountInString(s); w < n {
		return s + strings.Repeat(" ", n-w)
	}
	return s
}

// visibleWidth is the number of runes of s without ANSI escapes (every
// rune the view prints is one column wide).
func visibleWidth(s string) int {
	return utf8.RuneCountInString(stripEscapes(s))
}

// stripEscapes removes ANSI SGR sequences.
func stripEscapes(s string) string {
	if !strings.Contains(s, "\x1b[") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == 0x1b && i+1 < len(s) && s[i+1] == '[' {
			j := i + 2
			for j < len(s) && (s[j] < 0x40 || s[j] > 0x7e) {
				j++
			}
			i = j
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// truncateRunes shortens s to n visible columns, ending with "…" when it
// cut something. With colour, escapes are kept and a reset is added.
func truncateRunes(s string, n int, color bool) string {
	if n <= 0 {
		return ""
	}
	if visibleWidth(s) <= n {
		return s
	}
	var b strings.Builder
	w := 0
	for i := 0; i < len(s); {
		if s[i] == 0x1b && i+1 < len(s) && s[i+1] == '[' {
			j := i + 2
			for j < len(s) && (s[j] < 0x40 || s[j] > 0x7e) {
				j++
			}
			if j < len(s) {
				j++
			}
			b.WriteString(s[i:j])
			i = j
			continue
		}
		if w == n-1 {
			b.WriteString("…")
			break
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		b.WriteRune(r)
		w++
		i += size
	}
	if color && strings.Contains(s, "\x1b[") {
		b.WriteString("\x1b[0m")
	}
	return b.String()
}

// sanitizedProgress is ev with its step and message safe to print on a
// terminal (sanitize), as one line, tabs as spaces: the status line is
// rewritten in place, and a stray tab or escape would break its layout.
func sanitizedProgress(ev *events.Event) *events.Event {
	step := strings.ReplaceAll(sanitize(ev.Step, oneLine), "\t", " ")
	msg := strings.ReplaceAll(sanitize(ev.Message, oneLine), "\t", " ")
	if msg == ev.Message && step == ev.Step {
		return ev
	}
	c := *ev
	c.Step, c.Message = step, msg
	return &c
}
