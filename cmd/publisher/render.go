package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/term"

	"github.com/berth-ops/berth/events"
)

// ANSI colour codes.
const (
	ansiBold   = "1"
	ansiDim    = "2"
	ansiRed    = "31"
	ansiGreen  = "32"
	ansiYellow = "33"
)

// paint wraps s in an ANSI colour when on is set.
func paint(on bool, code, s string) string {
	if !on || code == "" || s == "" {
		return s
	}
	return "\x1b[" + code + "m" + s + "\x1b[0m"
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// renderer prints the events of one request. Data (logs, tables, results)
// goes to out; chatter (accepted, progress) and errors go to errw.
type renderer struct {
	out, errw io.Writer
	color     bool // ANSI colours on out
	jsonMode  bool // every event as one JSON line on out, nothing else
	quiet     bool // only the result
	id        string
	action    string          // from the command line, when the event lacks it
	project   string          // idem
	args      json.RawMessage // the command's args, repeated in the confirm command line
	now       func() time.Time
	errColor  bool      // ANSI colours on errw
	live      *liveView // progress on a terminal; nil: plain lines

	// planToken is the token of the confirm event whose plan was printed:
	// a result carrying the same plan and token does not print it again.
	planToken string
}

// event prints one event; raw is its body as received. Every string of
// the event is sanitized (sanitize.go) before it is printed; in JSON mode
// the body stays JSON, with the characters a terminal would act on
// escaped.
func (r *renderer) event(ev *events.Event, raw []byte) {
	if r.jsonMode {
		var buf bytes.Buffer
		if err := json.Compact(&buf, raw); err != nil {
			return
		}
		line := append(terminalSafeJSON(buf.Bytes()), '\n')
		r.out.Write(line)
		return
	}
	ev = sanitizeEvent(ev)
	action, project := ev.Action, ev.Project
	if action == "" {
		action = r.action
	}
	if project == "" {
		project = r.project
	}
	if r.live != nil {
		switch ev.Kind {
		case events.KindProgress:
			if !r.quiet {
				r.live.progress(ev)
			}
			return
		case events.KindResult:
			r.live.stop(exitCodeFor(ev) == exitOK)
		default:
			// Nothing else may land in the middle of the status line.
			r.live.suspend()
			defer r.live.resume()
		}
	}
	switch ev.Kind {
	case events.KindAccepted:
		if !r.quiet {
			id := ev.RequestID
			if id == "" {
				id = r.id
			}
			fmt.Fprintf(r.errw, "%s %s\n", paint(r.errColor, ansiDim, "accepted"), id)
		}
	case events.KindProgress:
		if !r.quiet {
			fmt.Fprintln(r.errw, formatProgress(ev))
		}
	case events.KindLog:
		if !r.quiet {
			renderLogLines(r.out, ev.Lines, r.color)
		}
	case events.KindConfirm:
		cmdline := confirmCommand(action, project, ev.Token, r.args)
		if r.quiet {
			fmt.Fprintf(r.errw, "confirmation needed; to confirm, run: %s\n", cmdline)
			return
		}
		now := time.Now()
		if r.now != nil {
			now = r.now()
		}
		renderConfirm(r.out, ev, action, project, cmdline, now, r.color)
		r.planToken = ev.Token
	case events.KindResult:
		if r.planShown(ev) {
			// The data repeats the plan just printed with its token.
			c := *ev
			c.Data = nil
			ev = &c
		}
		renderResult(r.out, r.errw, ev, action, r.quiet, r.color, r.errColor)
	default:
		if !r.quiet {
			fmt.Fprintf(r.errw, "event %s: %s\n", ev.Kind, sanitize(string(bytes.TrimSpace(raw)), multiLine))
		}
	}
}

// stopLive ends the live view, if any, with the current step failed.
func (r *renderer) stopLive() {
	if r.live != nil {
		r.live.stop(false)
	}
}

// warnf prints a warning on errw, outside the live status line. The
// warning is sanitized: its arguments may come from the wire.
func (r *renderer) warnf(format string, a ...any) {
	if r.live != nil {
		r.live.suspend()
		defer r.live.resume()
	}
	io.WriteString(r.errw, sanitize(fmt.Sprintf(format, a...), multiLine))
}

// planShown reports whether ev is a result whose data is the
// confirmation already printed from a confirm event: a plan with the
// same token (confirmation_required, or plan_changed with a new plan and
// token, which the worker also sends as a confirm event).
func (r *renderer) planShown(ev *events.Event) bool {
	if r.planToken == "" || ev.Error == nil || len(ev.Data) == 0 {
		return false
	}
	var d struct {
		Token string `json:"token"`
	}
	return json.Unmarshal(ev.Data, &d) == nil && sanitize(d.Token, oneLine) == r.planToken
}

// formatProgress formats a progress event as "[step] message (done/total)".
func formatProgress(ev *events.Event) string {
	var b strings.Builder
	if ev.Step != "" {
		b.WriteString("[" + ev.Step + "]")
	}
	if ev.Message != "" {
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(ev.Message)
	}
	switch {
	case ev.Done != nil && ev.Total != nil:
		fmt.Fprintf(&b, " (%d/%d)", *ev.Done, *ev.Total)
	case ev.Done != nil:
		fmt.Fprintf(&b, " (%d)", *ev.Done)
	}
	return strings.TrimSpace(b.String())
}

// renderLogLines prints container log lines, one per line, with their
// timestamps when present. Lines from stderr are red on a terminal and
// prefixed "stderr | " otherwise. Each line is sanitized as one line: a
// carriage return or an escape sequence in it cannot rewrite what is on
// the screen.
func renderLogLines(w io.Writer, lines []events.LogLine, color bool) {
	var b strings.Builder
	for _, l := range lines {
		l = sanitizeLogLine(l)
		text := l.Line
		if l.TS != "" {
			b.WriteString(paint(color, ansiDim, l.TS))
			b.WriteByte(' ')
		}
		if l.Stream == "stderr" {
			if color {
				text = paint(true, ansiRed, text)
			} else {
				b.WriteString("stderr | ")
			}
		}
		b.WriteString(text)
		b.WriteByte('\n')
	}
	io.WriteString(w, b.String())
}

// confirmCommand is the command line that confirms a request with token.
// Every part is quoted for the shell when it needs it: the action, the
// project and the token come from the event, and the line is meant to be
// pasted.
func confirmCommand(action, project, token string, args json.RawMessage) string {
	s := progName + " " + shellQuote(action) + " " + shellQuote(project)
	if a := string(bytes.TrimSpace(args)); a != "" && a != "{}" && a != "null" {
		s += " --args " + shellQuote(a)
	}
	return s + " --confirm " + shellQuote(token)
}

// shellQuote quotes s for a POSIX shell when it needs quoting.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r == '-' || r == '_' || r == '.' || r == ':' || r == '/' || r == '=' ||
			r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9')
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// renderConfirm prints a confirm event: the plan, the token, its expiry
// and the command line that confirms.
func renderConfirm(w io.Writer, ev *events.Event, action, project, cmdline string, now time.Time, color bool) {
	fmt.Fprintf(w, "%s %s needs confirmation\n", action, project)
	if p := bytes.TrimSpace(ev.Plan); len(p) > 0 && string(p) != "null" {
		fmt.Fprintln(w, "plan:")
		var buf bytes.Buffer
		if json.Indent(&buf, p, "  ", "  ") == nil {
			fmt.Fprintf(w, "  %s\n", sanitize(buf.String(), multiLine))
		} else {
			fmt.Fprintf(w, "  %s\n", sanitize(string(p), multiLine))
		}
	}
	fmt.Fprintf(w, "token:   %s\n", paint(color, ansiBold, ev.Token))
	if ev.ExpiresAt != "" {
		exp := ev.ExpiresAt
		if t, err := time.Parse(time.RFC3339Nano, ev.ExpiresAt); err == nil {
			if d := t.Sub(now); d > 0 {
				exp += " (in " + formatDuration(d.Round(time.Second)) + ")"
			} else {
				exp += " (expired)"
			}
		}
		fmt.Fprintf(w, "expires: %s\n", exp)
	}
	fmt.Fprintf(w, "to confirm, run:\n  %s\n", paint(color, ansiBold, cmdline))
}

// renderResult prints a result event: its data, readable for status and
// logs and as indented JSON otherwise, or its error and hint on errw.
func renderResult(out, errw io.Writer, ev *events.Event, action string, quiet, color, errColor bool) {
	ok := exitCodeFor(ev) == exitOK
	data := bytes.TrimSpace(ev.Data)
	hasData := len(data) > 0 && string(data) != "null"
	if !ok {
		label := paint(errColor, ansiRed+";"+ansiBold, "error:")
		if e := ev.Error; e != nil {
			if e.Code == events.CodeConfirmationRequired {
				label = paint(errColor, ansiYellow+";"+ansiBold, "error:")
			}
			fmt.Fprintf(errw, "%s %s: %s\n", label, e.Code, e.Message)
			if e.Hint != "" {
				fmt.Fprintf(errw, "%s %s\n", paint(errColor, ansiBold, "hint:"), e.Hint)
			}
			if len(e.Data) > 0 {
				d, _ := json.Marshal(e.Data)
				fmt.Fprintf(errw, "details: %s\n", sanitize(string(d), oneLine))
			}
		} else {
			fmt.Fprintf(errw, "%s the request failed without saying why\n", label)
		}
		if hasData {
			renderJSON(out, data)
		}
		return
	}
	if hasData {
		var err error
		switch action {
		case events.ActionStatus:
			err = renderStatus(out, data, color)
		case events.ActionLogs:
			err = renderLogsResult(out, errw, data, color)
		default:
			renderJSON(out, data)
		}
		if err != nil {
			renderJSON(out, data)
		}
	}
	if !quiet {
		msg := paint(errColor, ansiGreen, "ok")
		if ev.DurationMS != nil {
			msg += " in " + formatDuration(time.Duration(*ev.DurationMS)*time.Millisecond)
		}
		fmt.Fprintln(errw, msg)
	}
}

// renderJSON prints data as indented JSON, or as it is when it is not
// JSON, sanitized: JSON may hold bidi or C1 characters as they are, and
// text that is not JSON anything.
func renderJSON(w io.Writer, data []byte) {
	var buf bytes.Buffer
	if json.Indent(&buf, data, "", "  ") != nil {
		buf.Reset()
		buf.Write(data)
	}
	io.WriteString(w, sanitize(buf.String(), multiLine)+"\n")
}

// statusReport is the data of a status result. Every field is optional.
type statusReport struct {
	Project  string          `json:"project"`
	Services []statusService `json:"services"`
	Summary  map[string]any  `json:"summary"`
	Cached   bool            `json:"cached"`
	CachedAt string          `json:"cached_at"`
}

// statusService is one container of a status report.
type statusService struct {
	Service      string
	Container    string
	State        string
	Health       string
	UptimeS      *float64
	RestartCount *int64
	ExitCode     *int64
	Image        string
	Ports        []json.RawMessage
}

// UnmarshalJSON decodes a service field by field, so a field that is
// missing or of an unexpected type is left empty instead of failing.
func (s *statusService) UnmarshalJSON(data []byte) error {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		return err
	}
	str := func(k string) string {
		var v string
		json.Unmarshal(m[k], &v)
		return v
	}
	num := func(k string) *float64 {
		var v *float64
		if json.Unmarshal(m[k], &v) != nil {
			return nil
		}
		return v
	}
	integer := func(k string) *int64 {
		if f := num(k); f != nil {
			n := int64(*f)
			return &n
		}
		return nil
	}
	*s = statusService{
		Service:      str("service"),
		Container:    str("container"),
		State:        str("state"),
		Health:       str("health"),
		UptimeS:      num("uptime_s"),
		RestartCount: integer("restart_count"),
		ExitCode:     integer("exit_code"),
		Image:        str("image"),
	}
	json.Unmarshal(m["ports"], &s.Ports)
	return nil
}

// decodeTolerant decodes data into v, ignoring fields of an unexpected type.
func decodeTolerant(data []byte, v any) error {
	err := json.Unmarshal(data, v)
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return nil
	}
	return err
}

// renderStatus prints the data of a status result as a table. It fails,
// printing nothing, when data is not a status report.
func renderStatus(w io.Writer, data []byte, color bool) error {
	var rep statusReport
	if err := decodeTolerant(data, &rep); err != nil {
		return err
	}
	var b strings.Builder
	if rep.Project != "" {
		b.WriteString("project " + sanitize(rep.Project, oneLine))
		switch {
		case rep.Cached && rep.CachedAt != "":
			b.WriteString(" (cached at " + sanitize(rep.CachedAt, oneLine) + ")")
		case rep.Cached:
			b.WriteString(" (cached)")
		}
		b.WriteByte('\n')
	}
	if len(rep.Services) == 0 {
		b.WriteString("no containers\n")
	} else {
		rows := [][]cell{{{text: "SERVICE"}, {text: "STATE"}, {text: "HEALTH"}, {text: "UPTIME"},
			{text: "RESTARTS"}, {text: "IMAGE"}, {text: "PORTS"}}}
		for _, s := range rep.Services {
			rows = append(rows, statusRow(s))
		}
		writeTable(&b, rows, color)
	}
	if len(rep.Summary) > 0 {
		b.WriteString("summary:")
		for _, k := range sortedKeys(rep.Summary) {
			b.WriteString(" " + sanitize(k, oneLine) + "=" + sanitize(scalarText(rep.Summary[k]), oneLine))
		}
		b.WriteByte('\n')
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// statusRow is the table row of one service.
func statusRow(s statusService) []cell {
	name := orDash(s.Service)
	if s.Service == "" && s.Container != "" {
		name = s.Container
	}
	state := orDash(s.State)
	if s.ExitCode != nil && (s.State == "exited" || s.State == "dead") {
		state = fmt.Sprintf("%s (%d)", s.State, *s.ExitCode)
	}
	uptime := "-"
	if s.UptimeS != nil && s.State == "running" {
		uptime = formatUptime(*s.UptimeS)
	}
	restarts := "-"
	if s.RestartCount != nil {
		restarts = strconv.FormatInt(*s.RestartCount, 10)
	}
	var ports []string
	for _, p := range s.Ports {
		if t := formatPort(p); t != "" {
			ports = append(ports, t)
		}
	}
	return []cell{
		{text: name},
		{text: state, color: stateColor(s.State)},
		{text: orDash(s.Health), color: healthColor(s.Health)},
		{text: uptime},
		{text: restarts},
		{text: orDash(s.Image)},
		{text: orDash(strings.Join(ports, ", "))},
	}
}

func stateColor(state string) string {
	switch state {
	case "running":
		return ansiGreen
	case "exited", "dead":
		return ansiRed
	case "":
		return ""
	}
	return ansiYellow
}

func healthColor(h string) string {
	switch h {
	case "healthy":
		return ansiGreen
	case "unhealthy":
		return ansiRed
	case "starting":
		return ansiYellow
	}
	return ""
}

// formatPort formats one port of a status report: a string as it is, or an
// object {host_ip, host_port, container_port, proto}.
func formatPort(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var p struct {
		HostIP        string `json:"host_ip"`
		HostPort      int    `json:"host_port"`
		ContainerPort int    `json:"container_port"`
		Proto         string `json:"proto"`
	}
	if json.Unmarshal(raw, &p) != nil || p.ContainerPort == 0 {
		return string(raw)
	}
	t := strconv.Itoa(p.ContainerPort)
	if p.Proto != "" {
		t += "/" + p.Proto
	}
	if p.HostPort != 0 {
		host := strconv.Itoa(p.HostPort)
		if p.HostIP != "" {
			host = p.HostIP + ":" + host
		}
		t = host + "->" + t
	}
	return t
}

// formatUptime formats seconds briefly: 45s, 12m, 3h12m, 2d3h.
func formatUptime(sec float64) string {
	s := int64(sec)
	switch {
	case s < 0:
		return "-"
	case s < 60:
		return fmt.Sprintf("%ds", s)
	case s < 3600:
		return fmt.Sprintf("%dm", s/60)
	case s < 86400:
		return fmt.Sprintf("%dh%dm", s/3600, s%3600/60)
	}
	return fmt.Sprintf("%dd%dh", s/86400, s%86400/3600)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// scalarText prints a decoded JSON value: strings bare, the rest as JSON.
func scalarText(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// cell is one table cell with an optional colour.
type cell struct{ text, color string }

// writeTable writes rows (the first is the header) as columns separated by
// two spaces. Widths are computed on the text without colours. Every
// cell is sanitized: its text comes from the wire.
func writeTable(b *strings.Builder, rows [][]cell, color bool) {
	var widths []int
	for _, row := range rows {
		for i := range row {
			row[i].text = sanitize(row[i].text, oneLine)
			c := row[i]
			if i >= len(widths) {
				widths = append(widths, 0)
			}
			widths[i] = max(widths[i], utf8.RuneCountInString(c.text))
		}
	}
	for r, row := range rows {
		var line strings.Builder
		for i, c := range row {
			code := c.color
			if r == 0 {
				code = ansiBold
			}
			line.WriteString(paint(color, code, c.text))
			if i < len(row)-1 {
				line.WriteString(strings.Repeat(" ", widths[i]-utf8.RuneCountInString(c.text)+2))
			}
		}
		b.WriteString(strings.TrimRight(line.String(), " "))
		b.WriteByte('\n')
	}
}

// logsResult is the data of a logs result.
type logsResult struct {
	Service   string           `json:"service"`
	Container string           `json:"container"`
	Lines     []events.LogLine `json:"lines"`
	Count     *int             `json:"count"`
	Truncated bool             `json:"truncated"`
	Note      string           `json:"note"`
}

// renderLogsResult prints the lines of a logs result on out, and a note on
// errw when they were truncated.
func renderLogsResult(out, errw io.Writer, data []byte, color bool) error {
	var res logsResult
	if err := decodeTolerant(data, &res); err != nil {
		return err
	}
	renderLogLines(out, res.Lines, color)
	if res.Truncated {
		// The worker stopped reading (its grep limits): it says why, and
		// where to go on from.
		fmt.Fprintf(errw, "(incomplete: %s)\n", sanitize(res.Note, oneLine))
	}
	return nil
}
